"""Autoguidance on the shipped QM9 model: is a step guided by a weaker model of the same lineage
worth its second network call?

Each cell samples `--molecules` molecules with the shipped model's default sampler (adaptive,
`sde-dpm2m`, float32, one thread, seed 0) and scores them with `ead evaluate`. Guided cells run at
half the steps of the unguided default, so both spend about the same number of network calls.

The guides are earlier exported models of the shipped lineage; they are not in the package but in
the repository's history, and the script takes them from there (`git show`) into runs/guides/.

    python benchmarks/autoguidance.py run [--cells all] [--seeds 0]
    python benchmarks/autoguidance.py report [--update-doc docs/autoguidance.md]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from recipe_screen import ROOT, ead, replace_block, write_json  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "autoguidance" / "results.json"
GUIDES_DIR = ROOT / "runs" / "guides"
BLOCK = "autoguidance-table"
# guide name -> (commit, exported model folder at that commit, what it is)
GUIDES = {
    "ep8": ("f3a8b31^", "training/qm9-small-c9/model", "same network after 8 epochs (val. loss 0.1499)"),
    "ep51": ("800a383", "training/qm9-small-c9-gpu/model", "same network after 51 epochs (val. loss 0.1384)"),
    "ep122": ("800a383", "training/qm9-small-c9-gpu2/model", "same network after 122 epochs (val. loss 0.1344)"),
    "ep227": ("800a383", "training/qm9-small-c9-gpu4/model", "same network after 227 epochs (val. loss 0.1314)"),
}
# cell -> (steps, guide or None, weight)
CELLS = {   # in the order they run: the most telling comparisons first
    "plain-100": (100, None, 1.0),
    "ep51-w2-50": (50, "ep51", 2.0),
    "plain-50": (50, None, 1.0),
    "ep227-w2-50": (50, "ep227", 2.0),
    "ep8-w2-50": (50, "ep8", 2.0),
    "ep51-w3-50": (50, "ep51", 3.0),
    "ep122-w2-50": (50, "ep122", 2.0),
    "ep51-w1.5-50": (50, "ep51", 1.5),
    "ep8-w1.5-50": (50, "ep8", 1.5),
    "ep51-w2-100": (100, "ep51", 2.0),
}


def guide_folder(name: str) -> Path:
    commit, folder, _ = GUIDES[name]
    out = GUIDES_DIR / name
    if not (out / "model.safetensors").exists():
        out.mkdir(parents=True, exist_ok=True)
        for f in ("config.json", "model.safetensors"):
            blob = subprocess.run(["git", "-C", str(ROOT), "show", f"{commit}:{folder}/{f}"], capture_output=True)
            if blob.returncode != 0:
                raise SystemExit(f"cannot read {commit}:{folder}/{f} from git history (a full clone is needed)")
            (out / f).write_bytes(blob.stdout)
    return out


def run_cell(name: str, seed: int, molecules: int) -> dict:
    steps, guide, weight = CELLS[name]
    sdf = ROOT / "runs" / "autoguidance" / f"{name}-s{seed}.sdf"
    sdf.parent.mkdir(parents=True, exist_ok=True)
    extra = ["--guide", str(guide_folder(guide)), "--guidance", str(weight)] if guide else []
    t0 = time.time()
    s = ead("sample", "-n", str(molecules), "--steps", str(steps), "--seed", str(seed), "--precision", "fp32",
            "-o", str(sdf), *extra)
    if s.returncode != 0:
        raise SystemExit(f"{name}: sampling failed: {s.stderr.strip().splitlines()[-1:]}")
    seconds = time.time() - t0
    summary = next(line for line in (s.stdout + s.stderr).splitlines() if " network calls" in line)
    calls = int(summary.split(" network calls")[0].rsplit(" ", 1)[-1])
    e = ead("evaluate", str(sdf), "--json")
    if e.returncode != 0:
        raise SystemExit(f"{name}: evaluation failed: {e.stderr.strip().splitlines()[-1:]}")
    m = json.loads(e.stdout)
    return {"cell": name, "seed": seed, "steps": steps, "guide": guide, "guidance": weight,
            "network_calls": calls, "seconds": round(seconds, 1), "n": m["num_molecules"],
            **{k: m[k] for k in ("atom_stability", "molecule_stability", "validity", "valid_and_unique",
                                 "novelty", "connectivity")}}


def cmd_run(a) -> int:
    names = list(CELLS) if a.cells == "all" else a.cells.split(",")
    for seed in map(int, a.seeds.split(",")):
        for name in names:
            key = f"{name}-s{seed}"
            res = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
            if key in res:
                continue
            print(f"{time.strftime('%H:%M:%S')} {key} …", flush=True)
            row = run_cell(name, seed, a.molecules)
            res = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
            res[key] = row
            write_json(RESULTS, res)
            print(f"  atom {100 * row['atom_stability']:.1f} mol {100 * row['molecule_stability']:.1f} "
                  f"valid {100 * row['validity']:.1f} calls {row['network_calls']}", flush=True)
    return 0


def table(res: dict) -> str:
    lines = ["| guide | w | steps | network calls | seeds | molecules | atom stab. | mol. stab. | valid | V×U | novelty |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    by_cell: dict = {}
    for row in res.values():
        by_cell.setdefault(row["cell"], []).append(row)
    for name in [c for c in CELLS if c in by_cell]:
        rows = by_cell[name]
        n = sum(r["n"] for r in rows)
        pooled = {k: sum(r[k] * r["n"] for r in rows) / n for k in
                  ("atom_stability", "molecule_stability", "validity", "valid_and_unique", "novelty")}
        r0 = rows[0]
        guide = f"{r0['guide']}: {GUIDES[r0['guide']][2]}" if r0["guide"] else "none"
        lines.append(f"| {guide} | {r0['guidance']:g} | {r0['steps']} | {r0['network_calls']} | "
                     f"{','.join(str(r['seed']) for r in rows)} | {n} | " +
                     " | ".join(f"{100 * pooled[k]:.1f}" for k in
                                ("atom_stability", "molecule_stability", "validity", "valid_and_unique", "novelty")) + " |")
    return "\n".join(lines)


def cmd_report(a) -> int:
    text = table(json.loads(RESULTS.read_text()) if RESULTS.exists() else {})
    if a.update_doc:
        replace_block(Path(a.update_doc), BLOCK, text)
    print(text)
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="sample and evaluate the cells not yet in the results file")
    r.add_argument("--cells", default="all", help=f"comma-separated, of: {', '.join(CELLS)}")
    r.add_argument("--seeds", default="0")
    r.add_argument("--molecules", type=int, default=1000)
    r.set_defaults(fn=cmd_run)
    q = sub.add_parser("report", help="print the table (pooled over seeds)")
    q.add_argument("--update-doc", default=None)
    q.set_defaults(fn=cmd_report)
    a = p.parse_args(argv)
    return a.fn(a)


if __name__ == "__main__":
    sys.exit(main())
