"""The equal-compute study (issue 5): C = 0 (EDM) against C = 9 (EAD), the same preset, seed, batches
and number of steps, each sampled synchronously and adaptively.

Reproduce (a GPU makes it minutes; on 2 CPU cores it is days):
    # train both to the same step (every checkpoint kept), here 8,000 steps at batch 256
    ead train --preset small --window 0 --lr 3e-4 --batch-size 256 --keep-checkpoints 0 --run-dir runs/c0
    ead train --preset small --window 9 --lr 3e-4 --batch-size 256 --keep-checkpoints 0 --run-dir runs/c9
    # sample ≥ 500 molecules per cell and seed (scripts/gpu_session.py does all of this in one go)
    python benchmarks/sample_grid.py sample cells.json --out cells/ --device cuda
    # evaluate here and write the table into the doc
    python benchmarks/async_vs_sync.py CELLS_DIR --logs training/logs --update-doc docs/async-vs-sync.md
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sample_grid import add_report_options, evaluated_report, markers  # noqa: E402

BEGIN, END = markers("study-table")   # the default block
SAMPLERS = ("synchronous", "adaptive")


def ci95(p: float, n: int) -> float:
    """Half-width of the normal-approximation 95 % interval of a proportion over n molecules."""
    return 1.96 * math.sqrt(max(p * (1 - p), 1e-12) / n)


def common_seeds(entry_by_label: dict) -> set:
    seeds = None
    for entry in entry_by_label.values():
        s = {r["seed"] for r in entry["runs"]}
        seeds = s if seeds is None else seeds & s
    return seeds or set()


def summarise(runs: list[dict]) -> dict:
    out = {"n": sum(r["n"] for r in runs), "seeds": sorted(r["seed"] for r in runs)}
    for k in ("atom_stability", "molecule_stability", "validity", "valid_and_unique", "connectivity",
              "network_calls", "seconds"):
        vals = [r[k] for r in runs]
        mean = sum(v * r["n"] for v, r in zip(vals, runs)) / out["n"] if k not in ("network_calls", "seconds") \
            else sum(vals) / len(vals)
        sd = (sum((v - sum(vals) / len(vals)) ** 2 for v in vals) / (len(vals) - 1)) ** 0.5 if len(vals) > 1 else None
        out[k] = (mean, sd)
    return out


def training_summary(logs: Path, name: str) -> dict:
    """The study run's log (LOGS/study-cN.csv) and configuration (its entry in LOGS/../runs.json)."""
    rows = list(csv.DictReader(open(logs / f"study-{name}.csv")))
    losses = [(int(r["step"]), float(r["loss"])) for r in rows if r.get("loss")]
    vals = [(int(r["step"]), float(r["val_loss"])) for r in rows if r.get("val_loss")]
    runs = json.loads((logs.parent / "runs.json").read_text())
    cfg = next(e["config"] for e in runs if e["run"] == f"study-{name}")
    per_step = [float(r["s_per_step"]) for r in rows if r.get("s_per_step")]
    return {"last_loss": losses[-1] if losses else None, "val": vals, "batch_size": cfg["batch_size"],
            "lr": cfg["lr"], "window": cfg["window"], "preset": cfg["preset"],
            "s_per_step": sorted(per_step)[len(per_step) // 2] if per_step else None}


def table(res: dict, logs: Path | None, step: int | None) -> str:
    seeds = common_seeds(res)
    cells = {}
    for label, entry in res.items():
        _, c, sampler = label.split("-", 2)
        cells[(c, sampler)] = summarise([r for r in entry["runs"] if r["seed"] in seeds])
    f = lambda ms, pct=True: "–" if ms[0] is None else (  # noqa: E731
        f"{100 * ms[0]:.1f}" + (f" ± {100 * ms[1]:.1f}" if ms[1] is not None else "")
        if pct else f"{ms[0]:.0f}")
    lines = [f"Seeds {sorted(seeds)}, {next(iter(cells.values()))['n'] // max(1, len(seeds))} molecules "
             f"per seed and cell; mean ± sd over seeds (%), 95 % interval of the pooled proportion in brackets.", "",
             "| training | sampler | atom stab. | mol. stab. [95 %] | validity [95 %] | V×U | connected | calls | s per cell |",
             "|---|---|---|---|---|---|---|---|---|"]
    for c in ("c0", "c9"):
        for sampler in SAMPLERS:
            if (c, sampler) not in cells:
                continue
            s = cells[(c, sampler)]
            lines.append(
                f"| {'EDM (C = 0)' if c == 'c0' else 'EAD (C = 9)'} | {sampler} | {f(s['atom_stability'])} | "
                f"{f(s['molecule_stability'])} [±{100 * ci95(s['molecule_stability'][0], s['n']):.1f}] | "
                f"{f(s['validity'])} [±{100 * ci95(s['validity'][0], s['n']):.1f}] | {f(s['valid_and_unique'])} | "
                f"{f(s['connectivity'])} | {s['network_calls'][0]:.0f} | {s['seconds'][0]:.0f} |")
    lines += ["", "Difference EAD − EDM (points), same sampler:", "",
              "| sampler | atom stab. | mol. stab. | validity | V×U |", "|---|---|---|---|---|"]
    for sampler in SAMPLERS:
        if ("c0", sampler) in cells and ("c9", sampler) in cells:
            a, b = cells[("c0", sampler)], cells[("c9", sampler)]
            d = lambda k: f"{100 * (b[k][0] - a[k][0]):+.1f}"  # noqa: E731
            lines.append(f"| {sampler} | {d('atom_stability')} | {d('molecule_stability')} | "
                         f"{d('validity')} | {d('valid_and_unique')} |")
    if logs is not None:
        lines += ["", "Training (both runs: same preset, seed, batch order, learning rate; only C differs):", "",
                  "| run | preset | batch | lr | steps compared | last training loss | validation loss by step |",
                  "|---|---|---|---|---|---|---|"]
        for c in ("c0", "c9"):
            t = training_summary(logs, c)
            vals = ", ".join(f"{s}: {v:.4f}" for s, v in t["val"])
            last = f"{t['last_loss'][1]:.4f} @ {t['last_loss'][0]}" if t["last_loss"] else "–"
            lines.append(f"| C = {t['window']} | {t['preset']} | {t['batch_size']} | {t['lr']} | {step or '–'} | "
                         f"{last} | {vals} |")
        lines += ["", "(The two validation losses are not strictly comparable: each is the loss of its own "
                  "training objective, and C = 9 also draws per-atom time offsets.)"]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("cells", help="folder of study-cN-SAMPLER-sSEED.npz files")
    p.add_argument("--logs", default=None,
                   help="folder with study-c0.csv and study-c9.csv (training/logs; configs from training/runs.json)")
    p.add_argument("--step", type=int, default=None, help="the training step compared (for the table)")
    add_report_options(p, "study-table")
    a = p.parse_args(argv)
    return evaluated_report(a.cells, ("study-",), lambda res: table(res, Path(a.logs) if a.logs else None, a.step),
                            a.json, a.update_doc, a.block)


if __name__ == "__main__":
    sys.exit(main())
