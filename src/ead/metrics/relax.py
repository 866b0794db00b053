"""Geometry relaxation of generated molecules: GFN2-xTB (tblite, as `energy.py`) or MMFF94 (RDKit),
one molecule per task in a process pool. A molecule that fails (invalid for MMFF, no MMFF
parameters, SCF or optimisation not converging) is reported with its reason, never fatal.

`ead sample --relax` writes the relaxed coordinates with the energy drop and RMSD as SD fields;
`ead evaluate --relax` scores raw and relaxed molecules side by side (`relaxed_comparison`).
"""

from __future__ import annotations

import numpy as np

from ..data.molecule import protocol_mol
from ..errors import EADError
from .energy import HARTREE_TO_KCAL, _summary, kabsch_rmsd

METHODS = ("mmff", "xtb")
MMFF_MAX_STEPS = 2000


def relax_one(task) -> dict:
    """(positions, atomic numbers, method) → {"positions", "energy_drop_kcal_mol", "rmsd_angstrom"}
    or {"error": why}. Runs in a worker process: every failure is caught and described."""
    pos, z, method = task
    pos = np.asarray(pos, dtype=np.float64)
    try:
        if method == "mmff":
            e0, e1, relaxed = _mmff(pos, np.asarray(z))
        else:
            from .energy import relax

            h0, h1, relaxed = relax(pos, z)
            e0, e1 = h0 * HARTREE_TO_KCAL, h1 * HARTREE_TO_KCAL
    except (RuntimeError, ValueError) as e:
        return {"error": str(e)}
    except Exception as e:   # a library's own failure (RDKit, tblite): reported, not fatal
        return {"error": f"{type(e).__name__}: {e}"}
    return {"positions": relaxed, "energy_drop_kcal_mol": float(e0 - e1),
            "rmsd_angstrom": kabsch_rmsd(pos, relaxed)}


def _mmff(pos: np.ndarray, z: np.ndarray):
    from rdkit import Chem, rdBase
    from rdkit.Chem import AllChem

    mol = protocol_mol(pos, z)
    with rdBase.BlockLogs():
        try:
            Chem.SanitizeMol(mol)
        except Exception:
            raise ValueError("not a valid molecule (RDKit sanitisation fails), MMFF needs one") from None
        props = AllChem.MMFFGetMoleculeProperties(mol)
        if props is None:
            raise ValueError("MMFF94 has no parameters for this molecule")
        ff = AllChem.MMFFGetMoleculeForceField(mol, props)
        e0 = ff.CalcEnergy()
        if ff.Minimize(maxIts=MMFF_MAX_STEPS) != 0:
            raise RuntimeError(f"MMFF relaxation did not converge in {MMFF_MAX_STEPS} steps")
        e1 = ff.CalcEnergy()
    return e0, e1, np.asarray(ff.Positions(), dtype=np.float64).reshape(-1, 3)


def relax_molecules(molecules, method: str, workers: int = 1, progress=False) -> list[dict]:
    """`relax_one` for each (positions, atomic numbers) pair, in order; `workers` > 1 spreads them
    over a process pool. progress: as ead.progress.Progress's `show`."""
    from ..progress import Progress

    if method not in METHODS:
        raise EADError(f"unknown relaxation {method!r}; choose from {', '.join(METHODS)}")
    if method == "xtb":
        from .energy import _imports

        _imports()   # fail before any work if tblite is missing
    tasks = [(p, z, method) for p, z in molecules]
    with Progress(len(tasks), f"relax ({method})", "mol", progress) as bar:
        if workers <= 1 or len(tasks) <= 1:
            out = []
            for t in tasks:
                out.append(relax_one(t))
                bar.update()
            return out
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(max_workers=workers) as pool:
            out = []
            for r in pool.map(relax_one, tasks, chunksize=max(1, len(tasks) // (8 * workers))):
                out.append(r)
                bar.update()
            return out


def relaxed_records(molecules, method: str, workers: int = 1, progress=False):
    """(molecules with relaxed coordinates where relaxation worked, the raw ones where not; and per
    molecule the SD fields saying which: ead_relax, the energy drop and RMSD, or ead_relax_error)."""
    out, fields = [], []
    for (pos, z), r in zip(molecules, relax_molecules(molecules, method, workers, progress)):
        if "error" in r:
            out.append((pos, z))
            fields.append({"ead_relax": method, "ead_relax_error": r["error"]})
        else:
            out.append((r["positions"], z))
            fields.append({"ead_relax": method,
                           "ead_relax_energy_drop_kcal_mol": f"{r['energy_drop_kcal_mol']:.4f}",
                           "ead_relax_rmsd_angstrom": f"{r['rmsd_angstrom']:.4f}"})
    return out, fields


def relaxed_comparison(molecules, method: str, reference="qm9", workers: int = 1,
                       progress=False) -> dict:
    """The protocol metrics of the raw molecules that relaxed and of their relaxed geometries, side
    by side (never one set mixed into the other), with the energy drops, RMSDs and failures."""
    from .evaluate import evaluate_molecules

    molecules = list(molecules)
    results = relax_molecules(molecules, method, workers, progress)
    ok = [k for k, r in enumerate(results) if "error" not in r]
    out = {"method": method, "num_molecules": len(molecules), "num_relaxed": len(ok),
           "failures": [{"molecule": k, "error": r["error"]} for k, r in enumerate(results) if "error" in r]}
    drops = [results[k]["energy_drop_kcal_mol"] for k in ok]
    rmsds = [results[k]["rmsd_angstrom"] for k in ok]
    out["energy_drop_kcal_mol"] = _summary(drops)
    out["rmsd_angstrom"] = _summary(rmsds)
    if ok:
        out["raw"] = evaluate_molecules([molecules[k] for k in ok], reference=reference)
        out["relaxed"] = evaluate_molecules([(results[k]["positions"], molecules[k][1]) for k in ok],
                                            reference=reference)
    return out
