"""One entry point for all metrics, from Python and the CLI (`ead evaluate`, in cli/evaluate.py).

The protocol metrics (docs/evaluation.md §2–4, plus connectivity) always run and are cheap: the distance
work is one flat array computation for all molecules, then one RDKit pass per molecule. The modern
checks (PoseBusters, distribution distances, xTB energy) are opt-in and import their packages only
when asked for.
"""

from __future__ import annotations

import numpy as np

from ..errors import EADError
from .chem import chem_metrics, protocol_smiles, reference_smiles
from .stability import as_molecule_set, infer_bonds, stability

CHECKS = ("protocol", "posebusters", "distribution", "energy")
DEFAULT_ENERGY_SAMPLES = 100


def _reference_name(reference) -> str | None:
    from .reference import resolve_reference

    return resolve_reference(reference)


def evaluate_molecules(molecules, reference: str | None = "qm9", checks=("protocol",),
                       energy_samples: int = DEFAULT_ENERGY_SAMPLES, seed: int = 0,
                       posebusters_workers: int = 0, verbose: bool = False) -> dict:
    """Metrics of generated molecules: a MoleculeSet or a list of (positions [n,3] Å, atomic
    numbers [n]).

    reference: "qm9" (novelty against the QM9 training split, and the reference of the
    distribution distances), the path of your training molecules (SDF/XYZ file or folder, or EDM's
    GEOM .npy), or None / "none" (novelty is None). checks: any of CHECKS; the
    protocol metrics are always included. Rates are fractions in [0, 1]; novelty and uniqueness
    are None / 0 when no molecule is valid. The novelty reference is computed once (about ten
    seconds) and then read from the data cache.
    """
    ref = _reference_name(reference)
    checks = (checks,) if isinstance(checks, str) else tuple(checks)
    unknown = [c for c in checks if c not in CHECKS]
    if unknown:
        raise EADError(f"unknown check {unknown[0]!r}; choose from {list(CHECKS)}")
    if "distribution" in checks and ref is None:
        raise EADError("distribution distances need a reference (reference='qm9' or a path)")
    mols = as_molecule_set(molecules)
    graph = infer_bonds(mols)
    stab = stability(mols, graph)
    smiles, fragments = protocol_smiles(mols, graph)
    result = {
        "num_molecules": len(mols),
        "num_atoms": int(len(mols.atomic_numbers)),
        "reference": ref or "none",
        "atom_stability": stab.atom_stability,
        "molecule_stability": stab.mol_stability,
    }
    result.update(chem_metrics(smiles, fragments,
                               reference_smiles(ref, verbose) if ref is not None else None))
    if "posebusters" in checks:
        from .posebusters_check import posebusters_metrics

        result["posebusters"] = posebusters_metrics(mols, graph, workers=posebusters_workers)
    if "distribution" in checks:
        from .distribution import distribution_metrics, reference_geometry

        reference_geometry(ref, verbose)  # builds the cache once, with a note when verbose
        result["distribution"] = distribution_metrics(mols, graph, ref)
    if "energy" in checks and energy_samples > 0:
        from .energy import energy_metrics

        # xTB on molecules that do not even sanitise says little; draw from the valid ones
        valid = np.flatnonzero([s is not None for s in smiles])
        result["energy"] = energy_metrics(mols, energy_samples, seed=seed, candidates=valid)
    return result
