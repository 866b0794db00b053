"""One entry point for all metrics, from Python and the CLI (`ead evaluate`, in cli/evaluate.py).

The protocol metrics (docs/evaluation.md §2–4, plus connectivity) always run and are cheap: the distance
work is one flat array computation for all molecules, then one RDKit pass per molecule. The modern
checks (PoseBusters, distribution distances, xTB energy) are opt-in and import their packages only
when asked for.
"""

from __future__ import annotations

import numpy as np

from ..data.qm9 import MissingQM9
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
                       posebusters_workers: int = 0, verbose: bool = False, progress=False) -> dict:
    """Metrics of generated molecules: a MoleculeSet or a list of (positions [n,3] Å, atomic
    numbers [n]).

    reference: "qm9" (novelty against the QM9 training split, and the reference of the
    distribution distances), the path of your training molecules (SDF/XYZ file or folder, or EDM's
    GEOM .npy), or None / "none" (novelty is None). checks: any of CHECKS; the
    protocol metrics are always included. Rates are fractions in [0, 1]; novelty and uniqueness
    are None / 0 when no molecule is valid. The novelty reference is computed once (about ten
    seconds) and then read from the data cache. Without QM9 (no cache, no `ead[qm9]` extra),
    novelty against "qm9" is None and result["warnings"] says why; the warnings also flag a
    degenerate sample (`degenerate_warnings`). `progress`: as ead.progress.Progress's `show`,
    for PoseBusters and xTB.
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
    notes, novelty_reference = [], None
    if ref is not None:
        try:
            novelty_reference = reference_smiles(ref, verbose)
        except MissingQM9 as e:   # a light install samples and scores without QM9
            notes.append(f"novelty not computed: {e}")
    result.update(chem_metrics(smiles, fragments, novelty_reference))
    notes += degenerate_warnings(result)
    if "posebusters" in checks:
        from .posebusters_check import posebusters_metrics

        result["posebusters"] = posebusters_metrics(mols, graph, workers=posebusters_workers,
                                                    progress=progress)
    if "distribution" in checks:
        from .distribution import distribution_metrics, reference_geometry

        reference_geometry(ref, verbose)  # builds the cache once, with a note when verbose
        result["distribution"] = distribution_metrics(mols, graph, ref)
    if "energy" in checks and energy_samples > 0:
        from .energy import energy_metrics

        # xTB on molecules that do not even sanitise says little; draw from the valid ones
        valid = np.flatnonzero([s is not None for s in smiles])
        result["energy"] = energy_metrics(mols, energy_samples, seed=seed, candidates=valid,
                                          progress=progress)
    result["warnings"] = notes
    return result


# A sample this far apart in the two measures is mostly lone atoms or loose fragments: RDKit
# sanitises those (an isolated O becomes water through implicit hydrogens), so validity is high
# while almost no atom has its valence. The tutorial's few-step toy model: 100 % valid, 0 % stable.
DEGENERATE_VALIDITY, DEGENERATE_STABILITY = 0.5, 0.2


def degenerate_warnings(result: dict) -> list[str]:
    """A warning when validity is high but atom stability or connectivity is near zero."""
    valid, stable, connected = result["validity"], result["atom_stability"], result["connectivity"]
    if valid < DEGENERATE_VALIDITY or min(stable, connected) >= DEGENERATE_STABILITY:
        return []
    return [f"validity is {100 * valid:.0f} % but atom stability {100 * stable:.0f} % and "
            f"connectivity {100 * connected:.0f} %: these are mostly lone atoms or loose fragments, "
            "which RDKit sanitises (implicit hydrogens make a lone O water), so validity says "
            "little here; read atom stability and connectivity (docs/evaluation.md)"]
