"""Few-step sampling (issue 4, item 3): molecule stability against the number of network steps.

Samples N molecules with each sampler at each step budget (strided grids, docs/method.md §6–7: no
retraining), scores them with the EDM protocol and writes a Markdown table and a PNG plot.

    .venv/bin/python benchmarks/steps_sweep.py --model qm9 -n 1000            # the real run
    .venv/bin/python benchmarks/steps_sweep.py --model runs/x/model -n 8 --steps 50,25 \\
        --out-md /tmp/sweep.md --out-png /tmp/sweep.png                          # a smoke test

The same seed is used for every cell, so every cell samples the same molecule sizes from the same
initial noise: differences between cells are the sampler's, not the draw's. Target (issue 4): at 100
steps, within 2 points of the 1000-step molecule stability.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import shlex
import sys
import time
from pathlib import Path

from ead.io import write_atomic


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="qm9", help="model folder or shipped name (default qm9)")
    ap.add_argument("-n", "--num", type=int, default=1000, help="molecules per cell (default 1000)")
    ap.add_argument("--steps", default="1000,500,200,100,50,25", help="step budgets")
    ap.add_argument("--samplers", default="synchronous,adaptive")
    ap.add_argument("--spacing", default="uniform", help="uniform, snr, or both: uniform,snr")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--threads", type=int, default=None, help="CPU threads (1 on a shared CPU)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast for the network (speed trick)")
    ap.add_argument("--out-md", default="docs/steps_sweep.md")
    ap.add_argument("--out-png", default="docs/figures/steps_sweep.png")
    ap.add_argument("--json", default=None, help="also write the raw results here")
    ap.add_argument("--update", default="ancestral",
                    help="update rule(s), e.g. ancestral,sde-dpm2m (ead.diffusion.updates)")
    ap.add_argument("--from-cells", nargs="+", metavar="DIR",
                    help="no sampling: score cells drawn by benchmarks/sample_grid.py (sampler, steps, "
                         "spacing and update rule come from each cell's recorded settings)")
    ap.add_argument("--match", default=None, metavar="REGEX",
                    help="with --from-cells: only cells whose label matches (re.search)")
    return ap.parse_args(argv)


def score(arrays) -> dict:
    """EDM-protocol metrics; the full evaluator when it is installed, else stability alone."""
    try:
        from ead.metrics.evaluate import evaluate_molecules
    except ImportError:
        evaluate_molecules = None
    if evaluate_molecules is not None:
        m = evaluate_molecules(arrays, reference=None)
        return {k: m.get(k) for k in ("molecule_stability", "atom_stability", "validity")}
    from ead.metrics.stability import stability_metrics

    m = stability_metrics(arrays)
    return {"molecule_stability": m["mol_stability"], "atom_stability": m["atom_stability"],
            "validity": None}


def run(args) -> list[dict]:
    import torch

    from ead.pipeline import EAD

    if args.threads:
        torch.set_num_threads(args.threads)
    model = EAD.from_pretrained(args.model, device=args.device)
    if args.bf16:
        model.autocast = "bf16"
    rows = []
    for update in args.update.split(","):
        for spacing in args.spacing.split(","):
            for sampler in args.samplers.split(","):
                for steps in (int(s) for s in args.steps.split(",")):
                    t0 = time.perf_counter()
                    arrays, settings = model.sample_arrays(args.num, sampler=sampler, steps=steps,
                                                           spacing=spacing, seed=args.seed, update=update,
                                                           batch_size=args.batch_size)
                    seconds = time.perf_counter() - t0
                    row = {"sampler": sampler, "spacing": spacing, "update": update, "steps": steps,
                           "precision": "bf16" if args.bf16 else "fp32", "n": len(arrays),
                           "atoms": int(sum(len(z) for _, z in arrays)),
                           "network_calls": settings.get("network_calls"), "seconds": seconds,
                           **score(arrays)}
                    rows.append(row)
                    print(f"{sampler:12} {spacing:8} {update:10} {steps:5d} steps: mol. stability "
                          f"{100 * row['molecule_stability']:.1f}%  ({seconds:.1f} s)", flush=True)
    return rows


def update_name(settings: dict) -> str:
    """The update rule as a table shows it: ancestral, ddim (eta 0), ancestral eta=0.5, dpm2m…"""
    name, eta = settings.get("update", "ancestral"), settings.get("eta", 1.0)
    if name == "ancestral" and eta != 1.0:
        return "ddim" if eta == 0.0 else f"ancestral eta={eta:g}"
    return name


def rows_from_cells(folders: list[str], samplers: list[str], match: str | None = None) -> list[dict]:
    """One row per cell label, its seeds pooled; what was sampled comes from the recorded settings."""
    import re

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from sample_grid import cell_files, load_cell

    groups: dict[str, dict] = {}
    for folder in folders:
        for path in cell_files(Path(folder)):
            arrays, meta = load_cell(path)
            label = meta["cell"]["label"]
            if meta["settings"]["sampler"] not in samplers or (match and not re.search(match, label)):
                continue
            g = groups.setdefault(label, {"arrays": [], "seconds": 0.0, "seeds": [], "meta": meta, "devices": set()})
            g["arrays"] += arrays
            g["seconds"] += meta["seconds"]
            g["seeds"].append(meta["seed"])
            g["devices"].add(meta.get("device", "cpu"))
    rows = []
    for label, g in groups.items():
        settings = g["meta"]["settings"]
        rows.append({"sampler": settings["sampler"], "spacing": settings.get("spacing", "uniform"),
                     "update": update_name(settings), "precision": settings.get("precision", "fp32"),
                     # adaptive cells drawn before the option existed used the paper's stop (0)
                     "stall_lag": settings.get("stall_lag", 0) if settings["sampler"] == "adaptive" else None,
                     "steps": settings["steps"], "n": len(g["arrays"]), "seeds": sorted(g["seeds"]),
                     "atoms": int(sum(len(z) for _, z in g["arrays"])), "network_calls": settings["network_calls"],
                     "seconds": g["seconds"], "device": ", ".join(sorted(g["devices"])), **score(g["arrays"])})
        print(f"{label}: {rows[-1]['n']} molecules, mol. stability {100 * rows[-1]['molecule_stability']:.1f}%",
              flush=True)
    return sorted(rows, key=lambda r: (r["sampler"], r.get("stall_lag") or 0, r["spacing"],
                                       r["update"] != "ancestral", r["update"], r["precision"], -r["steps"]))


def series(r: dict) -> tuple:
    """What a row is a point of: one line of the plot, one group of the table."""
    return (sampler_name(r), r["spacing"], r.get("update", "ancestral"), r.get("precision", "fp32"))


def sampler_name(r: dict) -> str:
    """The sampler as the table shows it; the adaptive one with its stall lag when it is not the
    paper's stop (at 1000 steps every lag is the same rule, so it is left out there)."""
    lag = r.get("stall_lag")
    return f"{r['sampler']}, stall lag {lag}" if lag and r["steps"] < 1000 else r["sampler"]


def _pct(p, n) -> str:
    if p is None:
        return "–"
    se = math.sqrt(max(p * (1 - p), 1e-12) / max(n, 1))
    return f"{100 * p:.1f} ± {100 * se:.1f}"


def _machine() -> str:
    from ead.speed import machine_info

    m = machine_info()
    return f"{m['cpu']} ({m['cores']} cores, {m['threads']} threads)"


def markdown(rows: list[dict], args, argv) -> str:
    L = ["# Molecule stability against sampling steps", "",
         f"Model `{args.model}`, {'/'.join(str(v) for v in sorted({r['n'] for r in rows}))} molecules per cell, "
         f"seeds {sorted({x for r in rows for x in r.get('seeds', [args.seed])})}"
         f"{', bf16 autocast' if args.bf16 else ''}; sampled on "
         f"{', '.join(sorted({r.get('device') or _machine() for r in rows})) if args.from_cells else _machine()}, "
         f"{datetime.date.today()}. Made by",
         "", "```", "python benchmarks/steps_sweep.py " + " ".join(shlex.quote(a) for a in argv),
         "```", "",
         "Stability in % ± one binomial standard error. Δ = difference from the same sampler's "
         "1000-step molecule stability with the default update (ancestral, float32, uniform grid; "
         "target: |Δ| ≤ 2 points at 100 steps). Update = how atoms move from t to s "
         "(`ead.diffusion.updates`). Calls = network evaluations per molecule batch, time = "
         "wall-clock for all molecules of the cell.", ""]
    L.append("| sampler | spacing | update | precision | steps | molecules | molecule stab. % | Δ vs 1000 "
             "| atom stab. % | validity % | calls | time s | sampled on |")
    L.append("|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        base = next((b for b in rows if b["sampler"] == r["sampler"] and b["spacing"] == "uniform"
                     and b.get("update", "ancestral") == "ancestral" and b.get("precision", "fp32") == "fp32"
                     and b["steps"] == 1000), None)
        delta = (f"{100 * (r['molecule_stability'] - base['molecule_stability']):+.1f}"
                 if base is not None else "–")
        L.append(f"| {sampler_name(r)} | {r['spacing']} | {r.get('update', 'ancestral')} | "
                 f"{r.get('precision', 'fp32')} | {r['steps']} | {r['n']} | "
                 f"{_pct(r['molecule_stability'], r['n'])} | {delta} | "
                 f"{_pct(r['atom_stability'], r['atoms'])} | {_pct(r['validity'], r['n'])} | "
                 f"{r['network_calls']} | {r['seconds']:.1f} | {r.get('device', 'this machine')} |")
    return "\n".join(L) + "\n"


def plot(rows: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for key in sorted({series(r) for r in rows}):
        pts = sorted((r["steps"], r["molecule_stability"], r["n"]) for r in rows if series(r) == key)
        if len(pts) < 2:
            continue   # a lone cell (a precision or solver check at one budget): in the table only
        x = [p[0] for p in pts]
        y = [100 * p[1] for p in pts]
        err = [100 * math.sqrt(max(p[1] * (1 - p[1]), 1e-12) / p[2]) for p in pts]
        extra = ", ".join(v for v in key[1:] if v not in ("uniform", "ancestral", "fp32"))
        ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label=key[0] + (f" ({extra})" if extra else ""))
    ax.set_xscale("log")
    steps = sorted({r["steps"] for r in rows})
    ax.set_xticks(steps, [str(v) for v in steps])
    ys = [100 * r["molecule_stability"] for r in rows]
    lo, hi = max(0.0, min(ys) - 5), min(100.0, max(ys) + 5)
    ax.set_ylim(lo, max(hi, lo + 10))
    ax.set_xlabel("network steps")
    ax.set_ylabel("molecule stability (%)")
    ax.set_title("Stability vs sampling steps")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


KEEP = "<!-- kept below: written by hand -->"


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    rows = (rows_from_cells(args.from_cells, args.samplers.split(","), args.match) if args.from_cells
            else run(args))
    md = markdown(rows, args, argv)
    Path(args.out_md).parent.mkdir(parents=True, exist_ok=True)
    rel = os.path.relpath(args.out_png, Path(args.out_md).parent)
    out = Path(args.out_md)
    # hand-written reading and history below the KEEP marker survive a regeneration
    kept = out.read_text().split(KEEP, 1)[1] if out.exists() and KEEP in out.read_text() else ""
    text = md + f"\n![stability vs steps]({rel})\n" + (f"\n{KEEP}{kept}" if kept else "")
    write_atomic(out, lambda p: p.write_text(text))
    plot(rows, args.out_png)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
