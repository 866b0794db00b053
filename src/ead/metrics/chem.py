"""RDKit side of the protocol (evaluation.md §4): molecules built from distance-inferred bonds."""

from __future__ import annotations

import numpy as np
from rdkit import Chem
from rdkit.Geometry import Point3D

from .bonds import bond_matrix

_BOND_TYPES = {1: Chem.BondType.SINGLE, 2: Chem.BondType.DOUBLE, 3: Chem.BondType.TRIPLE}


def protocol_mol(positions: np.ndarray, atomic_numbers: np.ndarray, orders: np.ndarray | None = None,
                 conformer: bool = True) -> Chem.Mol:
    """Unsanitised RDKit molecule: neutral atoms, a bond for every pair of order > 0 (from the
    distance rule unless `orders` is given), and the coordinates as a 3D conformer."""
    z = np.asarray(atomic_numbers, dtype=np.int64)
    if orders is None:
        orders = bond_matrix(positions, z)
    mol = Chem.RWMol()
    for a in z:
        mol.AddAtom(Chem.Atom(int(a)))
    i, j = np.nonzero(np.triu(orders, 1))
    for a, b in zip(i.tolist(), j.tolist()):
        mol.AddBond(a, b, _BOND_TYPES[int(orders[a, b])])
    if conformer:
        conf = Chem.Conformer(len(z))
        for k, (x, y, w) in enumerate(np.asarray(positions, dtype=np.float64).tolist()):
            conf.SetAtomPosition(k, Point3D(x, y, w))
        conf.Set3D(True)
        mol.AddConformer(conf, assignId=True)
    return mol.GetMol()
