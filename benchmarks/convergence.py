"""Does asynchronous diffusion beat EDM when both are trained to the end? (docs/async-vs-sync.md)

Nine runs of one preset: window C = 0 (EDM), 9 and 18, three seeds each, with the same recipe, data
order (per seed), learning-rate schedule, precision and number of steps. The recipe holds the learning rate
constant after its warm-up, so a flat validation loss over the last 20 % of training means the
model has stopped improving at that rate, not that a decay has frozen it; `check` measures it.
Each model is then sampled with every sampler that applies to it, at the paper's 1000 ancestral
steps and at the 100-step few-step setting, and the report gives mean ± sd over the training seeds
and the paired differences (per seed, then a t interval over seeds).

    python benchmarks/convergence.py train  [--windows 0,9,18] [--seeds 0,1,2] [--steps N]
    python benchmarks/convergence.py check                     # is every run's validation loss flat?
    python benchmarks/convergence.py cells [--sweep] > cells.json
    python benchmarks/sample_grid.py sample cells.json --out DIR --threads 1
    python benchmarks/convergence.py report DIR [--posebusters 1000] [--json F] [--update-doc docs/async-vs-sync.md]

`train` runs seed-major (seed 0 at every C first, so a partial study already pairs the windows)
and can be stopped at any moment: `ead train` resumes each run from its one checkpoint. Since the
learning rate does not depend on --steps, a run can be continued to a larger budget with the same
command and a larger --steps (then every run must reach it). Run folders: training/convergence/
(logs and train_config.json committed; the unfinished runs' one checkpoint each while the study
runs; exported models are ignored and left out once the numbers are measured).
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import shutil
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from recipe_screen import ARMS, ead  # noqa: E402
from sample_grid import evaluate_cells, markers, replace_between  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RUNS = ROOT / "training" / "convergence"
RECIPE = ARMS["lr-3e-4"]   # the recipe screen's leader on this preset; constant after the warm-up
DEFAULT_STEPS = 100_000    # 6.4 M molecules at batch 64 (64 epochs; 62,500 was not flat); `check` projects the rest
VAL_EVERY = 2_500
FLAT = 0.005               # "flat": the validation loss fell by < 0.5 % over the last 20 % of steps
BLOCK, SWEEP_BLOCK, TRAIN_BLOCK = "convergence-table", "convergence-sweep", "convergence-training"
# sampling settings: the paper's (1000 ancestral steps) and the few-step one (100 steps, sde-dpm2m)
SETTINGS = {"1000": {"steps": 1000, "update": "ancestral", "corrector_steps": 0},
            "100": {"steps": 100, "update": "sde-dpm2m", "corrector_steps": 0}}
# the paper's ablation around its default λ = 0.8, w = 2 (one setting changed at a time)
SWEEP = {"l0.6": {"async_ratio": 0.6}, "l1.0": {"async_ratio": 1.0}, "w1": {"history": 1}, "w5": {"history": 5}}
LABEL = re.compile(r"^c(?P<window>\d+)-s(?P<seed>\d+)-(?P<sampler>[a-z]+)-(?P<setting>\w+?)(?:-(?P<sweep>[\w.]+))?$")


def run_name(preset: str, window: int, seed: int) -> str:
    return f"{preset}-c{window}-s{seed}"


def samplers_for(window: int) -> list[str]:
    """Synchronous for every model; the adaptive sampler where C > 0 (at C = 0 it is the synchronous
    one by construction); the manual one for C = 9, as the paper compares them there."""
    return ["synchronous"] + (["adaptive"] if window else []) + (["manual"] if window == 9 else [])


# ------------------------------------------------------------------------------------ training

def cmd_train(a) -> int:
    for seed in a.seeds:
        for window in a.windows:
            name = run_name(a.preset, window, seed)
            run_dir = a.runs / name
            print(f"{time.strftime('%H:%M:%S')} {name} …", flush=True)
            r = ead("train", "--data", "qm9", "--preset", a.preset, "--window", str(window), "--seed", str(seed),
                    "--batch-size", "64", "--max-steps", str(a.steps), "--threads", "1",
                    "--val-every", str(a.val_every), "--ckpt-every", "500", "--keep-checkpoints", "1", "--quiet",
                    "--precision", a.precision, "--run-dir", str(run_dir), *RECIPE)
            if r.returncode != 0:
                raise SystemExit(f"{name}: training failed: {r.stderr.strip().splitlines()[-1:]}")
            if trained_steps(run_dir) != a.steps:
                raise SystemExit(f"{name}: stopped at step {trained_steps(run_dir)} of {a.steps}; run again to continue")
            keep_budget(run_dir, a.steps)
            print(f"{time.strftime('%H:%M:%S')} {name}: {flatness(run_dir / 'log.csv')['text']}", flush=True)
    return 0


def keep_budget(run_dir: Path, steps: int) -> None:
    """Keep the model exported at this budget as model-STEPS (not in git): when the budget is extended,
    the shorter one can still be sampled, so the table shows how quality moves with training."""
    kept = run_dir / f"model-{steps}"
    if kept.exists():
        return
    tmp = run_dir / f".model-{steps}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(run_dir / "model", tmp)
    tmp.rename(kept)


def trained_steps(run_dir: Path) -> int | None:
    cfg = run_dir / "model" / "config.json"
    return json.loads(cfg.read_text()).get("card", {}).get("training_steps") if cfg.exists() else None


def val_losses(log: Path) -> list[tuple[int, float]]:
    """(step, validation loss) of the rows of a run's log.csv that have one."""
    with open(log) as f:
        return [(int(r["step"]), float(r["val_loss"])) for r in csv.DictReader(f) if r.get("val_loss")]


def flatness(log: Path, tail: float = 0.2) -> dict:
    """The validation loss over the last `tail` of the logged steps: its first and last value there
    and the relative fall between them; flat when the fall is below FLAT."""
    vals = val_losses(log)
    if len(vals) < 2:
        return {"flat": None, "text": "fewer than two validation losses"}
    last_step = vals[-1][0]
    window = [v for v in vals if v[0] >= (1 - tail) * last_step]
    if len(window) < 2:
        window = vals[-2:]
    (s0, v0), (s1, v1) = window[0], window[-1]
    fall = (v0 - v1) / v1
    return {"flat": fall < FLAT, "from_step": s0, "to_step": s1, "first": v0, "last": v1, "fall": fall,
            "text": f"validation loss {v0:.5f} (step {s0:,}) → {v1:.5f} (step {s1:,}): "
                    f"{100 * fall:+.2f} % fall, {'flat' if fall < FLAT else 'still falling'}"}


def training_table(runs: Path) -> str:
    lines = ["| run | steps | molecules | train h | last 20 % of steps: validation loss | fall | flat |",
             "|---|---|---|---|---|---|---|"]
    for run_dir in sorted(p for p in runs.glob("*") if (p / "log.csv").exists()):
        f = flatness(run_dir / "log.csv")
        cfg = run_dir / "model" / "config.json"
        card = json.loads(cfg.read_text()).get("card", {}) if cfg.exists() else {}
        steps = card.get("training_steps")
        hours = card.get("training_hours")
        measured = "fall" in f
        span = f"{f['first']:.5f} → {f['last']:.5f} (steps {f['from_step']:,}–{f['to_step']:,})" if measured else "–"
        fall = f"{100 * f['fall']:+.2f} %" if measured else "–"
        flat = {True: "yes", False: "no", None: "–"}[f["flat"]]
        lines.append(f"| {run_dir.name} | {steps or 'unfinished'} | {f'{steps * 64:,}' if steps else '–'} | "
                     f"{f'{hours:.2f}' if hours else '–'} | {span} | {fall} | {flat} |")
    return "\n".join(lines)


def cmd_check(a) -> int:
    if not any((p / "log.csv").exists() for p in a.runs.glob("*")):
        print(f"no study runs in {a.runs} yet: `convergence.py train` starts them", file=sys.stderr)
        return 2
    print(training_table(a.runs))
    for run_dir in sorted(p for p in a.runs.glob("*") if (p / "log.csv").exists()):
        print(f"{run_dir.name}: {projection(run_dir / 'log.csv')}")
    return 0


def projection(log: Path, after: int = 15_000) -> str:
    """Where the flatness rule would be met if the validation loss went on as it has: a power law
    L = a + b·step^(-c) fitted to the losses after `after` steps (the warm-up's fast fall left out).
    An extrapolation, said as one: it tells how far a budget is from flat, not what the loss will do."""
    import numpy as np
    from scipy.optimize import curve_fit

    pts = np.array([v for v in val_losses(log) if v[0] >= after], dtype=float)
    if len(pts) < 6:
        return "too few validation losses for a projection"

    def law(x, a_, b_, c_):
        return a_ + b_ * x ** (-c_)
    try:
        p, _ = curve_fit(law, pts[:, 0], pts[:, 1], p0=(pts[-1, 1] * 0.9, 1.0, 0.5), maxfev=20_000)
    except RuntimeError:
        return "the power law did not fit"
    fall = lambda t: (law(0.8 * t, *p) - law(t, *p)) / law(t, *p)   # noqa: E731
    budget = next((t for t in np.geomspace(pts[-1, 0], 1e7, 200) if fall(t) < FLAT), None)
    where = f"at about step {budget:,.0f}" if budget else "not before step 10,000,000"
    return (f"power-law fit L = {p[0]:.4f} + {p[1]:.3g}·step^-{p[2]:.3f} (steps ≥ {after:,}, max residual "
            f"{np.abs(law(pts[:, 0], *p) - pts[:, 1]).max():.5f}): fall over the last 20 % "
            f"{100 * fall(pts[-1, 0]):.2f} % now; the {100 * FLAT:.1f} % rule would be met {where}")


# ------------------------------------------------------------------------------------ sampling cells

def model_at(run_dir: Path, steps: int) -> Path | None:
    """The run's model after `steps` training steps: the one kept at that budget, or the current
    export when the run stands there; None when it has neither."""
    if (run_dir / f"model-{steps}" / "config.json").exists():
        return run_dir / f"model-{steps}"
    return run_dir / "model" if trained_steps(run_dir) == steps else None


def model_path(runs: Path, preset: str, window: int, seed: int, steps: int) -> str:
    """A run's model at `steps`, relative to the repository when it lies inside it (cells travel)."""
    path = model_at(runs / run_name(preset, window, seed), steps).resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def cells(runs: Path, preset: str, windows, seeds, steps: int, n: int, sweep: bool) -> list[dict]:
    """The sampling cells of every finished run, cheapest first: the 100-step cells, then the
    1000-step ones, then (with `sweep`) the λ / w ablation of the C = 9 models at 1000 steps."""
    out = []
    finished = [(w, s) for s in seeds for w in windows if model_at(runs / run_name(preset, w, s), steps)]
    for setting in ("100", "1000"):
        for window, seed in finished:
            model = model_path(runs, preset, window, seed, steps)
            for sampler in samplers_for(window):
                out.append({"label": f"c{window}-s{seed}-{sampler}-{setting}", "model": model, "sampler": sampler,
                            "n": n, "seeds": [0], "options": SETTINGS[setting]})
    if sweep:
        for window, seed in finished:
            if window != 9:
                continue
            model = model_path(runs, preset, window, seed, steps)
            for key, opts in SWEEP.items():
                out.append({"label": f"c{window}-s{seed}-adaptive-1000-{key}", "model": model, "sampler": "adaptive",
                            "n": n, "seeds": [0], "options": {**SETTINGS["1000"], **opts}})
    return out


# ------------------------------------------------------------------------------------ report

METRICS = (("atom_stability", "atom stab."), ("molecule_stability", "mol. stab."), ("validity", "valid"),
           ("valid_and_unique", "V×U"), ("posebusters", "PoseBusters"))
# (name, (C, sampler), (C, sampler)): the first minus the second, per training seed
COMPARISONS = (("EAD (C = 9, adaptive) − EDM (C = 0)", (9, "adaptive"), (0, "synchronous")),
               ("C = 9 − C = 0, both synchronous", (9, "synchronous"), (0, "synchronous")),
               ("C = 18 (adaptive) − EDM (C = 0)", (18, "adaptive"), (0, "synchronous")),
               ("C = 9: manual − adaptive", (9, "manual"), (9, "adaptive")))


def by_model(res: dict) -> dict:
    """{(C, sampler, setting, sweep): {training seed: metrics}} from evaluated cells."""
    out: dict = {}
    for label, entry in res.items():
        m = LABEL.match(label)
        if not m:
            continue
        key = (int(m["window"]), m["sampler"], m["setting"], m["sweep"])
        out.setdefault(key, {})[int(m["seed"])] = entry["mean"]
    return out


def mean_sd(vals: list[float]) -> str:
    if not vals:
        return "–"
    if len(vals) < 2:
        return f"{100 * vals[0]:.1f}"
    return f"{100 * statistics.mean(vals):.1f} ± {100 * statistics.stdev(vals):.1f}"


def values(runs: dict, key: str) -> list[float]:
    """One metric of a setting's runs, by training seed, where measured."""
    return [runs[s][key] for s in sorted(runs) if runs[s].get(key) is not None]


def paired(a: dict, b: dict, key: str) -> str:
    """Mean of the per-seed differences a − b (points) over the training seeds both have, with the
    95 % t interval over seeds (it holds the sampling noise and the training seeds' spread)."""
    seeds = sorted(s for s in set(a) & set(b) if a[s].get(key) is not None and b[s].get(key) is not None)
    d = [100 * (a[s][key] - b[s][key]) for s in seeds]
    if not d:
        return "–"
    if len(d) == 1:
        return f"{d[0]:+.1f} (1 seed)"
    from scipy.stats import t

    half = t.ppf(0.975, len(d) - 1) * statistics.stdev(d) / len(d) ** 0.5
    m = statistics.mean(d)
    return f"{m:+.1f} [{m - half:+.1f}, {m + half:+.1f}] ({len(d)} seeds)"


def render(res: dict) -> tuple[str, str]:
    """The main table (with the paired differences under it) and the λ / w sweep table."""
    groups = by_model(res)
    keys = [k for k in groups if k[3] is None]
    metrics = [(k, name) for k, name in METRICS if any(k in m for g in groups.values() for m in g.values())]
    head = "| C | sampler | steps | seeds | calls | " + " | ".join(n for _, n in metrics) + " |"
    sizes = sorted({e.get("molecules") for e in res.values()})
    lines = [f"Mean ± sd over training seeds (one sampling seed, {'/'.join(f'{n:,}' for n in sizes if n)} "
             "molecules per model and setting), in %.", "",
             head, "|" + "---|" * (5 + len(metrics))]
    for key in sorted(keys, key=lambda k: (-int(k[2]), k[0], k[1])):
        runs = groups[key]
        seeds = sorted(runs)
        calls = statistics.mean(runs[s].get("network_calls", 0) for s in seeds)
        lines.append(f"| {key[0]} | {key[1]} | {key[2]} | {','.join(map(str, seeds))} | {calls:.0f} | "
                     + " | ".join(mean_sd(values(runs, k)) for k, _ in metrics) + " |")
    lines += ["", "Paired differences in points: mean over training seeds [95 % t interval over seeds].", "",
              "| comparison | steps | " + " | ".join(n for _, n in metrics) + " |",
              "|---|---|" + "---|" * len(metrics)]
    for name, x, y in COMPARISONS:
        for setting in ("1000", "100"):
            a, b = groups.get((*x, setting, None)), groups.get((*y, setting, None))
            if a and b:
                lines.append(f"| {name} | {setting} | " + " | ".join(paired(a, b, k) for k, _ in metrics) + " |")
    sweep = ["| λ | w | seeds | " + " | ".join(n for _, n in metrics) + " | Δ mol. stab. vs λ 0.8, w 2 |",
             "|---|---|---|" + "---|" * (len(metrics) + 1)]
    base = groups.get((9, "adaptive", "1000", None), {})
    for tag in (None, *SWEEP):
        runs = groups.get((9, "adaptive", "1000", tag))
        if not runs:
            continue
        opts = SWEEP.get(tag, {})
        seeds = sorted(runs)
        sweep.append(f"| {opts.get('async_ratio', 0.8)} | {opts.get('history', 2)} | {','.join(map(str, seeds))} | "
                     + " | ".join(mean_sd(values(runs, k)) for k, _ in metrics)
                     + f" | {paired(runs, base, 'molecule_stability') if tag else '–'} |")
    varied = any(groups.get((9, "adaptive", "1000", tag)) for tag in SWEEP)   # the base row alone is no ablation
    return "\n".join(lines), "\n".join(sweep) if varied else ""


def cmd_cells(a) -> int:
    print(json.dumps(cells(a.runs, a.preset, a.windows, a.seeds, a.steps, a.n, a.sweep), indent=1))
    return 0


def cmd_report(a) -> int:
    res = evaluate_cells(Path(a.folder), posebusters=a.posebusters, log=lambda m: print(m, file=sys.stderr))
    res = {k: v for k, v in res.items() if LABEL.match(k)}
    if not res:
        print(f"no study cells in {a.folder}", file=sys.stderr)
        return 2
    main_table, sweep_table = render(res)
    print(main_table + ("\n\n" + sweep_table if sweep_table else ""))
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=1, default=str))
    if a.update_doc:
        replace_between(a.update_doc, *markers(a.block), main_table)
        replace_between(a.update_doc, *markers(TRAIN_BLOCK), training_table(a.runs))
        if sweep_table:
            replace_between(a.update_doc, *markers(SWEEP_BLOCK), sweep_table)
    return 0


def ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",")]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("train", "check", "cells", "report"):
        s = sub.add_parser(name)
        s.add_argument("--runs", type=Path, default=RUNS, help="the study's run folders")
        s.add_argument("--preset", default="tiny")
        s.add_argument("--windows", type=ints, default=[0, 9, 18])
        s.add_argument("--seeds", type=ints, default=[0, 1, 2])
        s.add_argument("--steps", type=int, default=DEFAULT_STEPS, help="training steps at batch 64 (every run)")
        if name == "train":
            s.add_argument("--precision", default="bf16-mixed",
                           help="the same for every run: bf16-mixed (eager) is the fastest tiny step on CPUs with "
                                "bf16 units (docs/speed.md); 32-true elsewhere")
            s.add_argument("--val-every", type=int, default=VAL_EVERY)
        if name == "cells":
            s.add_argument("-n", type=int, default=1000, help="molecules per cell")
            s.add_argument("--sweep", action="store_true", help="add the λ / w ablation of the C = 9 models")
        if name == "report":
            s.add_argument("folder")
            s.add_argument("--posebusters", type=int, default=0, metavar="N", help="PoseBusters on N molecules per cell")
            s.add_argument("--json", default=None)
            s.add_argument("--update-doc", default=None, metavar="MD")
            s.add_argument("--block", default=BLOCK,
                           help="the doc's marker block for the table (another budget's models: e.g. convergence-table-62500)")
    a = p.parse_args(argv)
    return {"train": cmd_train, "check": cmd_check, "cells": cmd_cells, "report": cmd_report}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
