"""Screen training recipes at a fixed budget of molecules, scored by sampled quality.

Every arm trains from scratch on the same number of molecules (same preset, batch size, data
order and seeds); only the recipe options differ. Each arm runs at C = 0 (EDM) and C = 9 (EAD)
with several seeds, so the asynchronous-vs-synchronous question is measured along the way. Each
trained model is scored by the molecules it samples (`--molecules` at 100 steps, `sde-dpm2m`; the
C = 0 models synchronously, the C = 9 ones with the adaptive sampler at its default λ, w), not by
its loss: losses under different weightings are not comparable.

    python benchmarks/recipe_screen.py run    [--arms edm,cosine] [--seeds 0,1] [--windows 0,9]
    python benchmarks/recipe_screen.py report [--update-doc docs/recipe.md]

`run` works through the cells in order (seed-major, so a partial screen already compares every arm
on seed 0) and can be stopped and restarted at any moment: `ead train` resumes its run from the
last checkpoint, and a cell whose numbers are in the results file is skipped. Training uses one
thread (the machine is shared). Run folders go to `training/recipe-screen/` (logs committed, and
each unfinished cell's one resumable checkpoint); the numbers go to
`benchmarks/results/recipe-screen/results.json` (committed).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from sample_grid import difference  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "recipe-screen" / "results.json"
# cells train here: a finished cell keeps its log.csv and train_config.json (its numbers are in the
# results file); an unfinished one also its one resumable checkpoint, so the screen continues in a
# fresh clone; exported models, samples and other checkpoints are ignored (.gitignore)
RUNS = ROOT / "training" / "recipe-screen"

# arm -> extra `ead train` options (the baseline is EDM's recipe: every option at its default)
# EDM's recipe, given in full so that each arm changes it alone whatever `ead train`'s defaults are
EDM_RECIPE = ["--lr", "1e-4", "--warmup-steps", "0"]
ARMS = {   # what each arm changes of EDM_RECIPE (a later flag wins)
    "edm": [],
    "cosine": ["--lr", "3e-4", "--warmup-steps", "250", "--lr-schedule", "cosine"],
    "lr-3e-4": ["--lr", "3e-4", "--warmup-steps", "250"],   # the cosine arm's peak, held: which half helps?
    "min-snr": ["--loss-weight", "min-snr"],
    "low-noise-t": ["--time-sampling", "low-noise"],
    "x0": ["--target", "x0"],
    "v": ["--target", "v"],
    "x0-types": ["--target", "x0-types"],
    "rbf": ["--rbf", "16"],
    "self-cond": ["--self-condition"],
    "x0-self-cond": ["--target", "x0", "--self-condition"],   # a bounded estimate to condition on
}
ARMS["x0-cosine"] = ARMS["x0"] + ARMS["cosine"]   # the two leaders at seed 0 together
ARMS["x0-lr-3e-4"] = ARMS["x0"] + ARMS["lr-3e-4"]   # the targets that raised validity, at the rate that won
ARMS["v-lr-3e-4"] = ARMS["v"] + ARMS["lr-3e-4"]


def cell_name(arm: str, window: int, seed: int, preset: str, molecules: int, tag: str = "") -> str:
    return f"{preset}-{molecules // 1000}k-{arm}-c{window}-s{seed}" + (f"-{tag}" if tag else "")


def ead(*args: str, threads: int = 1) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    return subprocess.run([sys.executable, "-m", "ead", *args], env=env, capture_output=True, text=True)


def load_results() -> dict:
    return json.loads(RESULTS.read_text()) if RESULTS.exists() else {}


def write_json(path: Path, data: dict) -> None:
    """Write a results file whole or not at all."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)


def save_results(res: dict) -> None:
    write_json(RESULTS, res)


def replace_block(doc: Path, block: str, text: str) -> None:
    """Put `text` between the `<!-- block:begin -->` and `<!-- block:end -->` markers of `doc`."""
    begin, end = f"<!-- {block}:begin -->", f"<!-- {block}:end -->"
    body = doc.read_text()
    if begin not in body or end not in body:
        raise SystemExit(f"{doc} has no {begin} … {end} block")
    head, rest = body.split(begin, 1)
    doc.write_text(head + begin + "\n" + text + "\n" + end + rest.split(end, 1)[1])


def run_cell(arm: str, window: int, seed: int, a) -> dict:
    name = cell_name(arm, window, seed, a.preset, a.molecules, a.tag)
    run_dir = RUNS / name
    steps = a.molecules // a.batch_size
    t0 = time.time()
    train = ead("train", "--data", "qm9", "--preset", a.preset, "--window", str(window), "--seed", str(seed),
                "--batch-size", str(a.batch_size), "--max-steps", str(steps), "--threads", "1",
                "--val-every", "0", "--ckpt-every", "500", "--keep-checkpoints", "1", "--quiet",
                "--precision", a.precision, "--run-dir", str(run_dir), *(["--compile"] if a.compile else []),
                *EDM_RECIPE, *ARMS[arm])
    if train.returncode != 0:
        raise SystemExit(f"{name}: training failed: {train.stderr.strip().splitlines()[-1:]}")
    log = (run_dir / "log.csv").read_text().splitlines()
    trained = json.loads((run_dir / "model" / "config.json").read_text()).get("card", {}).get("training_steps")
    if trained != steps:   # stopped early (a signal, --max-hours): resume it on the next run, score nothing
        raise SystemExit(f"{name}: training stopped at step {trained} of {steps}; run again to continue it")
    train_s = time.time() - t0
    sampler = "synchronous" if window == 0 else "adaptive"
    sdf = run_dir / "samples.sdf"
    t1 = time.time()
    s = ead("sample", "--model", str(run_dir / "model"), "-n", str(a.molecules_sampled), "--steps", "100",
            "--update", "sde-dpm2m", "--sampler", sampler, "--seed", "0", "--precision", "fp32",
            "-o", str(sdf), "--quiet")
    if s.returncode != 0:
        raise SystemExit(f"{name}: sampling failed: {s.stderr.strip().splitlines()[-1:]}")
    sample_s = time.time() - t1
    e = ead("evaluate", str(sdf), "--json")
    if e.returncode != 0:
        raise SystemExit(f"{name}: evaluation failed: {e.stderr.strip().splitlines()[-1:]}")
    m = json.loads(e.stdout)
    card = json.loads((run_dir / "model" / "config.json").read_text()).get("card", {})
    return {"arm": arm, "window": window, "seed": seed, "preset": a.preset, "molecules": steps * a.batch_size,
            "batch_size": a.batch_size, "steps": steps, "options": ARMS[arm], "sampler": sampler,
            "compiled": a.compile, "precision": a.precision,
            "n": m["num_molecules"], "atom_stability": m["atom_stability"],
            "molecule_stability": m["molecule_stability"], "validity": m["validity"],
            "valid_and_unique": m["valid_and_unique"], "connectivity": m.get("connectivity"),
            "last_loss": float(log[-1].split(",")[2]) if len(log) > 1 else None,
            "train_hours": card.get("training_hours"), "sample_seconds": round(sample_s, 1),
            "wall_seconds_this_call": round(train_s + sample_s, 1)}


def cmd_run(a) -> int:
    arms = a.arms.split(",")
    unknown = [x for x in arms if x not in ARMS]
    if unknown:
        raise SystemExit(f"unknown arm(s) {unknown}; choose from {', '.join(ARMS)}")
    if a.plan:
        return plan(arms, a)
    for seed in map(int, a.seeds.split(",")):
        for arm in arms:
            for window in map(int, a.windows.split(",")):
                name = cell_name(arm, window, seed, a.preset, a.molecules, a.tag)
                if name in load_results():
                    continue
                print(f"{time.strftime('%H:%M:%S')} {name} …", flush=True)
                row = run_cell(arm, window, seed, a)
                res = load_results()
                res[name] = row
                save_results(res)
                print(f"{time.strftime('%H:%M:%S')} {name}: atom {100 * row['atom_stability']:.1f} "
                      f"mol {100 * row['molecule_stability']:.1f} valid {100 * row['validity']:.1f}", flush=True)
    return 0


def plan(arms: list[str], a) -> int:
    """Print the cells `run` would train, in its order, with each one's CPU-hours estimated from the
    finished cells of the same preset and budget (training plus sampling: both depend on the arm)."""
    res = load_results()
    todo = [(arm, w, seed) for seed in map(int, a.seeds.split(",")) for arm in arms
            for w in map(int, a.windows.split(",")) if cell_name(arm, w, seed, a.preset, a.molecules, a.tag) not in res]
    done = [r for r in res.values() if r["preset"] == a.preset and r["molecules"] == a.molecules // a.batch_size * a.batch_size]

    def hours(arm: str) -> float | None:
        rows = [r for r in done if r["arm"] == arm and r.get("train_hours")] or [r for r in done if r.get("train_hours")]
        if not rows:
            return None
        return sum(r["train_hours"] + r["sample_seconds"] / 3600 for r in rows) / len(rows)

    total = 0.0
    for arm, w, seed in todo:
        h = hours(arm)
        total += h or 0.0
        print(f"{cell_name(arm, w, seed, a.preset, a.molecules, a.tag)}\t{'?' if h is None else f'{h:.2f}'} h")
    print(f"{len(todo)} cells to run, about {total:.1f} CPU-hours (one thread each); "
          f"{len(res)} cells finished", file=sys.stderr)
    return 0


def _mean_sd(vals: list[float]) -> str:
    m = sum(vals) / len(vals)
    if len(vals) < 2:
        return f"{100 * m:.1f}"
    sd = (sum((v - m) ** 2 for v in vals) / (len(vals) - 1)) ** 0.5
    return f"{100 * m:.1f} ± {100 * sd:.1f}"


def against_edm(rows: list[dict], groups: dict, key: tuple, metric: str) -> str:
    """The arm's pooled `metric` minus EDM's recipe's at the same preset, budget, C and training, over the
    seeds both ran, with the 95 % interval of sampling alone (two proportions); '–' without them."""
    base = groups.get((key[0], key[1], "edm", *key[3:]), [])   # trained the same way
    seeds = {r["seed"] for r in rows} & {r["seed"] for r in base}
    if key[2] == "edm" or not seeds:
        return "–"
    return difference({"runs": base}, {"runs": rows}, metric, seeds=seeds)


def trained_in(row: dict) -> str:
    """The training precision, and whether the network was compiled (rows from before these were
    recorded trained in float32, eagerly)."""
    return f"{row.get('precision') or '32-true'}{', compiled' if row.get('compiled') else ''}"


def table(res: dict) -> str:
    groups: dict = {}
    for row in res.values():
        key = (row["preset"], row["molecules"], row["arm"], row["window"], trained_in(row))
        groups.setdefault(key, []).append(row)
    lines = ["| preset | molecules | arm | options | C | sampler | seeds | atom stab. | mol. stab. | validity | V×U | "
             "Δ mol. stab. vs edm [95 %] | Δ valid vs edm [95 %] | trained in | train h / seed |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    order = {arm: k for k, arm in enumerate(ARMS)}
    for key in sorted(groups, key=lambda k: (k[0], k[1], order.get(k[2], 99), k[3], k[4])):
        rows = sorted(groups[key], key=lambda r: r["seed"])
        preset, molecules, arm, window, _ = key
        hours = [r["train_hours"] for r in rows if r.get("train_hours") is not None]
        hours_text = f"{sum(hours) / len(hours):.2f}" if hours else "–"
        lines.append(
            f"| {preset} | {molecules:,} | {arm} | {' '.join(rows[0]['options']) or '(defaults)'} | {window} | "
            f"{rows[0]['sampler']} | {','.join(str(r['seed']) for r in rows)} | "
            f"{_mean_sd([r['atom_stability'] for r in rows])} | {_mean_sd([r['molecule_stability'] for r in rows])} | "
            f"{_mean_sd([r['validity'] for r in rows])} | {_mean_sd([r['valid_and_unique'] for r in rows])} | "
            f"{against_edm(rows, groups, key, 'molecule_stability')} | {against_edm(rows, groups, key, 'validity')} | "
            f"{trained_in(rows[0])} | {hours_text} |")
    return "\n".join(lines)


def cmd_report(a) -> int:
    text = table(load_results())
    if a.update_doc:
        replace_block(Path(a.update_doc), "recipe-table", text)
    print(text)
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="train, sample and evaluate the cells not yet in the results file")
    r.add_argument("--arms", default=",".join(ARMS))
    r.add_argument("--seeds", default="0,1")
    r.add_argument("--windows", default="9,0")
    r.add_argument("--preset", default="tiny")
    r.add_argument("--molecules", type=int, default=1_000_000,
                   help="training molecules per cell (default 1,000,000: at 320,000 every arm of the "
                        "tiny preset sat at ~20 %% atom stability and 0 %% molecule stability)")
    r.add_argument("--batch-size", type=int, default=64)
    r.add_argument("--tag", default="", help="appended to the cells' names: the same arm, seed and C trained "
                                             "another way (e.g. --tag bf16 with --precision bf16-mixed)")
    r.add_argument("--no-compile", dest="compile", action="store_false",
                   help="train eagerly (default: --compile, 1.21x faster per tiny step, the same model)")
    r.add_argument("--molecules-sampled", type=int, default=1000)
    r.add_argument("--precision", default="32-true",
                   help="training precision (Fabric's): bf16-mixed where the CPU has bf16 units (docs/speed.md)")
    r.add_argument("--plan", action="store_true",
                   help="print the cells still to run and their estimated CPU-hours; train nothing")
    r.set_defaults(fn=cmd_run)
    q = sub.add_parser("report", help="print the table (mean ± sd over seeds)")
    q.add_argument("--update-doc", default=None, help="write the table between the recipe-table markers")
    q.set_defaults(fn=cmd_report)
    a = p.parse_args(argv)
    return a.fn(a)


if __name__ == "__main__":
    sys.exit(main())
