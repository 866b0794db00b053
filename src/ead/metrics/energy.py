"""GFN2-xTB relaxation energy drop and RMSD (docs/evaluation.md §6), through the `tblite` package.

For each molecule of a random subsample: the GFN2-xTB energy at the generated coordinates, a
relaxation (L-BFGS on the xTB energy and gradient, neutral molecule, unpaired electrons = parity
of the electron count), and then
  ΔE = E(generated) − E(relaxed) in kcal/mol (≥ 0 up to convergence noise), and
  RMSD between generated and relaxed coordinates after optimal superposition (Kabsch), in Å.
Median and mean are reported over the molecules whose calculation succeeded; failures (SCF not
converging, relaxation not converging in the step budget) are counted.
"""

from __future__ import annotations

import numpy as np

from ..data.batch import MoleculeSet
from ..errors import EADError
from ..progress import tracked

INSTALL_HINT = "energy checks need the packages tblite and scipy: pip install tblite scipy"
HARTREE_TO_KCAL = 627.509474
BOHR_PER_ANGSTROM = 1.0 / 0.529177210903
# xTB's own "normal" optimisation level stops at a gradient of about 1e-3 Eh/bohr; L-BFGS's
# criterion is on the largest component, so a slightly tighter value gives comparable minima.
GRADIENT_TOL = 5e-4
MAX_STEPS = 500


def _imports():
    try:
        from scipy.optimize import minimize
        from tblite.interface import Calculator
    except ImportError:
        raise EADError(INSTALL_HINT) from None
    return Calculator, minimize


def kabsch_rmsd(a: np.ndarray, b: np.ndarray) -> float:
    """RMSD of two [n, 3] coordinate sets after the best rotation and translation of one onto
    the other (atoms in the same order; no symmetry matching, the atoms are the same ones)."""
    a = a - a.mean(0)
    b = b - b.mean(0)
    u, _, vt = np.linalg.svd(a.T @ b)
    d = np.sign(np.linalg.det(u @ vt))  # a proper rotation, not a reflection
    rot = u @ np.diag([1.0, 1.0, d]) @ vt
    return float(np.sqrt(((a @ rot - b) ** 2).sum(1).mean()))


def relax(positions: np.ndarray, atomic_numbers: np.ndarray) -> tuple[float, float, np.ndarray]:
    """(E at the given coordinates, E relaxed) in Hartree and the relaxed coordinates in Å.
    Raises RuntimeError when xTB or the relaxation fails."""
    Calculator, minimize = _imports()
    z = np.asarray(atomic_numbers, dtype=np.int64)
    x0 = np.asarray(positions, dtype=np.float64) * BOHR_PER_ANGSTROM
    calc = Calculator("GFN2-xTB", z, x0, charge=0.0, uhf=int(z.sum() % 2))
    calc.set("verbosity", 0)

    def energy_and_gradient(flat):
        calc.update(flat.reshape(-1, 3))
        res = calc.singlepoint()
        return float(res.get("energy")), np.asarray(res.get("gradient")).ravel()

    try:
        e0, _ = energy_and_gradient(x0.ravel())
        opt = minimize(energy_and_gradient, x0.ravel(), jac=True, method="L-BFGS-B",
                       options={"gtol": GRADIENT_TOL, "maxiter": MAX_STEPS})
    except Exception as e:  # tblite reports SCF failures as plain exceptions
        raise RuntimeError(f"xTB failed: {e}") from None
    if not opt.success and opt.nit >= MAX_STEPS:
        raise RuntimeError("relaxation did not converge")
    return e0, float(opt.fun), opt.x.reshape(-1, 3) / BOHR_PER_ANGSTROM


def _summary(values: list[float]) -> dict:
    if not values:
        return {"median": None, "mean": None}
    return {"median": float(np.median(values)), "mean": float(np.mean(values))}


def energy_metrics(mols: MoleculeSet, n: int, seed: int = 0,
                   candidates: np.ndarray | None = None, progress=False) -> dict:
    """Energy drop and RMSD on n molecules drawn without replacement (seeded) from `candidates`
    (indices; default all molecules, typically the valid ones). progress: as
    ead.progress.Progress's `show`, per molecule relaxed."""
    _imports()  # fail before any work if the packages are missing
    pool = np.arange(len(mols)) if candidates is None else np.asarray(candidates, dtype=np.int64)
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(pool, size=min(n, len(pool)), replace=False)) if len(pool) else pool
    drops, rmsds, failures = [], [], []
    for m in tracked(chosen.tolist(), len(chosen), "xTB relaxation", "mol", progress):
        pos, z = mols.molecule(m)
        try:
            e0, e1, relaxed = relax(pos, z)
        except RuntimeError as e:
            failures.append((m, str(e)))
            continue
        drops.append((e0 - e1) * HARTREE_TO_KCAL)
        rmsds.append(kabsch_rmsd(np.asarray(pos, dtype=np.float64), relaxed))
    return {
        "num_molecules": int(len(chosen)),
        "num_relaxed": len(drops),
        "failures": [{"molecule": m, "error": msg} for m, msg in failures],
        "energy_drop_kcal_mol": _summary(drops),
        "rmsd_angstrom": _summary(rmsds),
    }
