"""Measure a model for its card: every sampler at the model's default steps, protocol metrics +
connectivity (+ PoseBusters on a subsample when the package is installed).

    .venv/bin/python benchmarks/model_card.py --model qm9 -n 1000 --out docs/figures/model_card.json

Prints a markdown table; the JSON keeps every number (and the command) for the card."""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch

from ead.metrics.evaluate import evaluate_molecules
from ead.pipeline import EAD


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
    a = p.parse_args(argv)
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
            r["posebusters"] = pb.get("posebusters")
        rows.append({"sampler": name, "settings": settings, "seconds": dt, "metrics": r})
        print(f"{name}: {dt:.0f} s", file=sys.stderr)
    print("| sampler | steps | calls | atom stab. | mol stab. | valid | V×U | novelty | connected | s/mol |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        m, s = row["metrics"], row["settings"]
        pct = lambda v: "–" if v is None else f"{100 * v:.1f}"  # noqa: E731
        print(f"| {row['sampler']} | {s['steps']} | {s['network_calls'] / max(1, -(-a.n // 256)):.0f} | "
              f"{pct(m['atom_stability'])} | {pct(m['molecule_stability'])} | {pct(m['validity'])} | "
              f"{pct(m['valid_and_unique'])} | {pct(m.get('novelty'))} | {pct(m.get('connectivity'))} | "
              f"{row['seconds'] / a.n:.2f} |")
    if a.out:
        with open(a.out, "w") as f:
            json.dump({"command": " ".join(sys.argv), "n": a.n, "rows": rows}, f, indent=1, default=str)


if __name__ == "__main__":
    main()
