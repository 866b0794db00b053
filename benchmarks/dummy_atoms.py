"""Measure a dummy-atom model (docs/method.md §8, docs/dummy-atoms.md): how the sizes it chooses compare
with the training data's p(M), and the protocol metrics of its molecules.

    python benchmarks/dummy_atoms.py MODEL_DIR --out DIR [-n 500] [--steps 100] [--seed 0]

Samples in float32 with the model's default sampler (or --sampler), writes DIR/samples.sdf and
DIR/metrics.json, and prints a Markdown table. Molecules whose every slot came out absent are not
molecules: they are left out of the file and count as failures in the `…_of_requested` rates.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np


def size_stats(sizes: np.ndarray, histogram: dict[int, int]) -> dict:
    """Generated sizes against p(M): total variation distance, means and standard deviations."""
    ref_sizes = np.array(sorted(histogram))
    ref_p = np.array([histogram[m] for m in ref_sizes], dtype=np.float64)
    ref_p /= ref_p.sum()
    top = int(max(ref_sizes.max(), sizes.max() if len(sizes) else 0))
    gen = np.bincount(sizes, minlength=top + 1)[: top + 1].astype(np.float64)
    gen /= max(gen.sum(), 1)
    ref = np.zeros(top + 1)
    ref[ref_sizes] = ref_p
    mean_ref = float((ref_sizes * ref_p).sum())
    return {"tv_distance": float(0.5 * np.abs(gen - ref).sum()),
            "mean": float(sizes.mean()), "sd": float(sizes.std()),
            "reference_mean": mean_ref,
            "reference_sd": float(np.sqrt(((ref_sizes - mean_ref) ** 2 * ref_p).sum())),
            "histogram": {int(m): int(c) for m, c in zip(*np.unique(sizes, return_counts=True))}}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model")
    p.add_argument("--out", required=True)
    p.add_argument("-n", type=int, default=500)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--sampler", default=None)
    p.add_argument("--update", default="sde-dpm2m")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)

    import torch

    from ead.data.files import write_sdf
    from ead.metrics.evaluate import evaluate_molecules
    from ead.pipeline import EAD

    torch.set_num_threads(args.threads)
    model = EAD.from_pretrained(args.model)
    if not model.config.dummy:
        print(f"{args.model} is not a dummy-atom model (size_mode {model.config.size_mode!r})", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    mols, settings = model.sample_arrays(args.n, sampler=args.sampler, steps=args.steps, update=args.update,
                                         seed=args.seed)
    seconds = time.time() - t0
    write_sdf(out / "samples.sdf", mols)
    metrics = evaluate_molecules(mols)
    sizes = np.array([len(z) for _, z in mols], dtype=np.int64)
    n_stable = round(metrics["molecule_stability"] * len(mols))
    n_valid = round(metrics["validity"] * len(mols))
    result = {"model": str(args.model), "requested": args.n, "molecules": len(mols),
              "empty_dropped": settings["empty_dropped"], "slots": model.config.max_atoms,
              "absent_bias": model.config.absent_bias, "settings": settings, "seconds": round(seconds, 1),
              "sizes": size_stats(sizes, model.config.size_histogram),
              "molecule_stability_of_requested": n_stable / args.n, "validity_of_requested": n_valid / args.n,
              "metrics": metrics}
    (out / "metrics.json").write_text(json.dumps(result, indent=2, default=str))
    s = result["sizes"]
    print("| requested | molecules | all-absent | mean size (data) | sd (data) | TV to p(M) | atom stab. "
          "| mol. stab. | valid | V×U | s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    print(f"| {args.n} | {len(mols)} | {settings['empty_dropped']} | {s['mean']:.2f} ({s['reference_mean']:.2f}) "
          f"| {s['sd']:.2f} ({s['reference_sd']:.2f}) | {s['tv_distance']:.3f} "
          f"| {100 * metrics['atom_stability']:.1f} | {100 * metrics['molecule_stability']:.1f} "
          f"| {100 * metrics['validity']:.1f} | {100 * metrics['validity'] * metrics['uniqueness']:.1f} "
          f"| {seconds:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
