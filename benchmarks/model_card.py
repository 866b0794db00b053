"""Measure a model for its card: every sampler at the model's default steps, protocol metrics +
connectivity (+ PoseBusters on a subsample when the package is installed).

    .venv/bin/python benchmarks/model_card.py --model qm9 -n 1000 --out docs/figures/model_card.json
    # or render the table from cells sampled elsewhere (benchmarks/sample_grid.py evaluate --json):
    .venv/bin/python benchmarks/model_card.py --from-grid metrics.json --update-doc docs/model-card.md

Prints a markdown table; the JSON keeps every number (and the command) for the card."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from ead.metrics.evaluate import evaluate_molecules
from ead.pipeline import EAD

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sample_grid import markers, replace_between  # noqa: E402


BEGIN, END = markers("card-table")


def render(rows: list[dict], n: int) -> str:
    """Markdown table; rows: {"sampler", "settings", "seconds", "metrics"}."""
    pct = lambda v: "–" if v is None else f"{100 * v:.1f}"  # noqa: E731
    lines = ["| sampler | steps | calls | atom stab. | mol stab. | valid | V×U | novelty | connected | PoseBusters |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        m, s = row["metrics"], row["settings"]
        pb = m.get("posebusters")
        pb = pb.get("overall") if isinstance(pb, dict) else pb
        lines.append(f"| {row['sampler']} | {s['steps']} | {s['network_calls']} | {pct(m['atom_stability'])} | "
                     f"{pct(m['molecule_stability'])} | {pct(m['validity'])} | {pct(m['valid_and_unique'])} | "
                     f"{pct(m.get('novelty'))} | {pct(m.get('connectivity'))} | {pct(pb)} |")
    return "\n".join(lines)


def rows_from_grid(path: str) -> tuple[list[dict], int]:
    """Rows from `benchmarks/sample_grid.py evaluate --json` (cells labelled card-SAMPLER)."""
    res = json.loads(open(path).read())
    rows = []
    for label in ("card-synchronous", "card-manual", "card-adaptive"):
        if label in res:
            run = res[label]["runs"][0]
            rows.append({"sampler": label[5:], "settings": run["settings"], "seconds": run["seconds"],
                         "metrics": run})
    return rows, res[next(iter(res))]["molecules"]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", default="qm9")
    p.add_argument("-n", type=int, default=1000)
    p.add_argument("--steps", type=int, default=None, help="default: the model's")
    p.add_argument("--samplers", default="synchronous,manual,adaptive")
    p.add_argument("--posebusters", type=int, default=0, help="subsample size for PoseBusters")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None)
    p.add_argument("--from-grid", default=None, help="render the table from sample_grid.py evaluate --json")
    p.add_argument("--update-doc", default=None, help="write the table between the card-table markers")
    a = p.parse_args(argv)
    if a.from_grid:
        rows, n = rows_from_grid(a.from_grid)
        table = render(rows, n)
        print(table)
        if a.update_doc:
            replace_between(a.update_doc, BEGIN, END, table)
        return
    if a.threads:
        torch.set_num_threads(a.threads)
    model = EAD.from_pretrained(a.model)
    rows = []
    for name in a.samplers.split(","):
        t0 = time.time()
        mols, settings = model.sample_arrays(a.n, sampler=name, steps=a.steps, seed=a.seed)
        dt = time.time() - t0
        checks = ("protocol",)
        r = evaluate_molecules(mols, reference="qm9", checks=checks)
        if a.posebusters:
            pb = evaluate_molecules(mols[: a.posebusters], reference=None, checks=("protocol", "posebusters"))
            r["posebusters"] = (pb.get("posebusters") or {}).get("overall")
        rows.append({"sampler": name, "settings": settings, "seconds": dt, "metrics": r})
        print(f"{name}: {dt:.0f} s", file=sys.stderr)
    table = render(rows, a.n)
    print(table)
    if a.update_doc:
        replace_between(a.update_doc, BEGIN, END, table)
    if a.out:
        with open(a.out, "w") as f:
            json.dump({"command": " ".join(sys.argv), "n": a.n, "rows": rows}, f, indent=1, default=str)


if __name__ == "__main__":
    main()
