"""The adaptive sampler's sweep (issue 5), like the paper's ablation: λ ∈ {0.6 … 1.0} × w ∈ {1, 2, 5},
and the length of the synchronous warm-up (t_async), on one model.

    # the cells (then sample them: here, or on a GPU through scripts/gpu_session.py)
    python benchmarks/sampler_sweep.py cells --model qm9 --steps 100 -n 500 > sweep.json
    python benchmarks/sample_grid.py sample sweep.json --out sweep/ --threads 1
    # the table, into the doc
    python benchmarks/sampler_sweep.py report sweep/ --update-doc docs/sampler-sweep.md
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sample_grid import add_report_options, evaluated_report  # noqa: E402

RATIOS = (0.6, 0.7, 0.8, 0.9, 1.0)
HISTORIES = (1, 2, 5)
WARMUPS = (1000, 750, 250)        # t_async; 500 (the default) is the λ = 0.8, w = 2 cell


def sweep_cells(model: str, n: int, steps: int | None = None, seed: int = 0) -> list[dict]:
    base = {"steps": steps} if steps else {}
    out = [{"label": f"sweep-l{lam}-w{w}", "model": model, "sampler": "adaptive", "n": n, "seeds": [seed],
            "options": {**base, "async_ratio": lam, "history": w}}
           for lam in RATIOS for w in HISTORIES if lam < 1 or w == HISTORIES[0]]   # λ = 1 ignores w
    out += [{"label": f"warmup-{ta}", "model": model, "sampler": "adaptive", "n": n, "seeds": [seed],
             "options": {**base, "async_ratio": 0.8, "history": 2, "t_async": ta}} for ta in WARMUPS]
    return out


def report(res: dict) -> str:
    def cell(label, key="molecule_stability"):
        e = res.get(label)
        if e is None:
            return "–"
        p, n = e["mean"][key], e["molecules"]
        return f"{100 * p:.1f} ± {100 * math.sqrt(max(p * (1 - p), 1e-12) / n):.1f}"

    any_entry = next(iter(res.values()))
    st = any_entry["runs"][0]["settings"]
    lines = [f"{any_entry['molecules']} molecules per cell, {st['steps']} steps, {st.get('update', 'ancestral')} update, "
             f"seed {any_entry['runs'][0]['seed']}, "
             f"window {st['window']}; % ± one binomial standard error.", "",
             "Molecule stability, λ (rows) × w (columns), warm-up to t = 500:", "",
             "| λ \\ w | " + " | ".join(str(w) for w in HISTORIES) + " |", "|---|" + "---:|" * len(HISTORIES)]
    for lam in RATIOS:
        lines.append(f"| {lam} | " + " | ".join(cell(f"sweep-l{lam}-w{w}") for w in HISTORIES) + " |")
    lines += ["", "Validity, same cells:", "",
              "| λ \\ w | " + " | ".join(str(w) for w in HISTORIES) + " |", "|---|" + "---:|" * len(HISTORIES)]
    for lam in RATIOS:
        lines.append(f"| {lam} | " + " | ".join(cell(f"sweep-l{lam}-w{w}", "validity") for w in HISTORIES) + " |")
    lines += ["", "Warm-up (λ = 0.8, w = 2): synchronous steps down to t_async, then adaptive:", "",
              "| t_async | molecule stab. | validity | atom stab. | network calls |", "|---|---:|---:|---:|---:|"]
    for ta, label in ((1000, "warmup-1000"), (750, "warmup-750"), (500, "sweep-l0.8-w2"), (250, "warmup-250")):
        e = res.get(label)
        calls = f"{e['runs'][0]['network_calls']}" if e else "–"
        atom = f"{100 * e['mean']['atom_stability']:.1f}" if e else "–"
        lines.append(f"| {ta}{' (none)' if ta == 1000 else ' (default)' if ta == 500 else ''} | {cell(label)} | "
                     f"{cell(label, 'validity')} | {atom} | {calls} |")
    best = max((e["mean"]["molecule_stability"], k) for k, e in res.items() if k.startswith(("sweep", "warmup")))
    lines += ["", f"Highest molecule stability: `{best[1]}` ({100 * best[0]:.1f} %)."]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("cells")
    c.add_argument("--model", default="qm9")
    c.add_argument("-n", type=int, default=500)
    c.add_argument("--steps", type=int, default=None)
    c.add_argument("--seed", type=int, default=0)
    r = sub.add_parser("report")
    r.add_argument("folder")
    add_report_options(r, "sweep")
    a = p.parse_args(argv)
    if a.cmd == "cells":
        print(json.dumps(sweep_cells(a.model, a.n, a.steps, a.seed), indent=1))
        return 0
    return evaluated_report(a.folder, ("sweep-", "warmup-"), report, a.json, a.update_doc, a.block)


if __name__ == "__main__":
    sys.exit(main())
