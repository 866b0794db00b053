"""Measure a model for its card: every sampler at the model's default steps, protocol metrics +
connectivity (+ PoseBusters on a subsample when the package is installed).

    .venv/bin/python benchmarks/model_card.py --model qm9 -n 1000 --out docs/figures/model_card.json
    # or render the table from cells sampled elsewhere (benchmarks/sample_grid.py evaluate --json):
    .venv/bin/python benchmarks/model_card.py --from-grid metrics.json --update-doc docs/model-card.md \
        --history docs/figures/model_card_history.json
    (scripts/refresh_card.sh runs the whole CPU measurement: sampling, evaluation, table, history)

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


def _stretch(steps: int, batch: int, device: str, precision: str) -> str:
    where = "CPU" if device.startswith("cpu") else device.removeprefix("NVIDIA ")
    return f"{steps:,} x {batch} ({where}{', ' + precision if precision.startswith('bf16') else ''})"


def history_rows(card: dict, rows: list[dict]) -> list[dict]:
    """docs/figures/model_card_history.json entries (the training plot's stability points) for a
    card measurement: the model's lineage as "steps x batch (device)" stretches, molecules seen,
    and each sampler's protocol numbers."""
    segs = card.get("continues", []) + [{**card, "steps": card["training_steps"]}]
    # the oldest stretches recorded no precision (float32 then) and some no device
    stretches = [_stretch(s["steps"], s["batch_size"], s.get("device", "cpu"), s.get("precision", "32-true"))
                 for s in segs]
    seen = card.get("total_molecules_seen", card["training_steps"] * card["batch_size"])
    out = []
    for row in rows:
        m, st = row["metrics"], row["settings"]
        out.append({"molecules_seen": seen, "training_steps": " + ".join(stretches), "sampler": row["sampler"],
                    "n": m["n"], "steps": st["steps"], "update": st.get("update"),
                    **{k: round(m[k], 4) for k in ("molecule_stability", "atom_stability", "validity")}})
    return out


def append_history(path: str, entries: list[dict]) -> None:
    """Add the entries to the history file (one per line), replacing earlier ones of the same
    model (molecules seen) and sampler, so a re-measured card does not count twice."""
    p = Path(path)
    old = json.loads(p.read_text()) if p.exists() else []
    keys = {(e["molecules_seen"], e["sampler"]) for e in entries}
    kept = [e for e in old if (e["molecules_seen"], e["sampler"]) not in keys] + entries
    text = "[\n" + ",\n".join(" " + json.dumps(e, ensure_ascii=False) for e in kept) + "\n]\n"
    tmp = p.with_name(p.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(p)


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
    p.add_argument("--history", default=None, metavar="JSON",
                   help="with --from-grid: add the measurement to this history file (the training plot's "
                        "points), labelled with --model's training lineage")
    a = p.parse_args(argv)
    if a.from_grid:
        rows, n = rows_from_grid(a.from_grid)
        table = render(rows, n)
        print(table)
        if a.update_doc:
            replace_between(a.update_doc, BEGIN, END, table)
        if a.history:
            append_history(a.history, history_rows(EAD.from_pretrained(a.model).card, rows))
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
