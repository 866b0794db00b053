"""Time the protocol metrics on 10,000 QM9-sized molecules (issue 3's target: under 60 s on 2 cores).

The molecules are QM9 test-split molecules (13,083 available, sizes as in QM9) with Gaussian
noise on the coordinates, so that, as with generated samples, a share of them is unstable or
invalid and every code path (failed sanitisation, fragments) is exercised.

    nice .venv/bin/python benchmarks/bench_metrics.py [--n 10000] [--noise 0.05] [--reference qm9]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from ead.data.batch import MoleculeSet
from ead.data.qm9 import qm9_split
from ead.metrics.chem import protocol_smiles, reference_smiles
from ead.metrics.evaluate import evaluate_molecules
from ead.metrics.stability import infer_bonds, stability


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--noise", type=float, default=0.05, help="Å, per coordinate")
    ap.add_argument("--reference", default="qm9", choices=["qm9", "none"])
    args = ap.parse_args()

    test = qm9_split("test")
    base = test.subset(np.arange(min(args.n, len(test))))
    rng = np.random.default_rng(0)
    mols = MoleculeSet(base.positions + rng.normal(0, args.noise, base.positions.shape).astype(np.float32),
                       base.atomic_numbers, base.offsets)
    # as a generator hands them over: a list of (positions, atomic numbers) pairs
    as_list = [(p, z) for p, z in mols]

    t = time.perf_counter()
    if args.reference == "qm9":
        reference_smiles("qm9")  # from the cache after the first run
    t_ref = time.perf_counter() - t

    t = time.perf_counter()
    graph = infer_bonds(mols)
    stability(mols, graph)
    t_bonds = time.perf_counter() - t
    t = time.perf_counter()
    protocol_smiles(mols, graph)
    t_rdkit = time.perf_counter() - t

    t = time.perf_counter()
    r = evaluate_molecules(as_list, reference=args.reference)
    t_total = time.perf_counter() - t

    print(f"{len(as_list)} molecules, {r['num_atoms']} atoms, noise {args.noise} Å")
    print(f"  reference SMILES load      {t_ref:7.2f} s")
    print(f"  bonds + stability (flat)   {t_bonds:7.2f} s")
    print(f"  RDKit validity/SMILES      {t_rdkit:7.2f} s")
    print(f"  evaluate_molecules total   {t_total:7.2f} s  (list input, reference {args.reference})")
    novelty = "-" if r["novelty"] is None else f"{100 * r['novelty']:.2f}"
    print(f"  atom stab {100 * r['atom_stability']:.2f}  mol stab {100 * r['molecule_stability']:.2f}  "
          f"valid {100 * r['validity']:.2f}  V×U {100 * r['valid_and_unique']:.2f}  "
          f"novel {novelty}")


if __name__ == "__main__":
    main()
