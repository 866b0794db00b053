"""RDKit molecules from coordinates, with the protocol's bonds (docs/evaluation.md §2): what files
are written with and what the RDKit side of the metrics reads."""

from __future__ import annotations

import numpy as np
from rdkit import Chem
from rdkit.Geometry import Point3D

from .bonds import bond_matrix

_BOND_TYPES = {1: Chem.BondType.SINGLE, 2: Chem.BondType.DOUBLE, 3: Chem.BondType.TRIPLE}


def _mol_from_bonds(z: np.ndarray, begin, end, order) -> Chem.RWMol:
    mol = Chem.RWMol()
    for a in np.asarray(z).tolist():
        mol.AddAtom(Chem.Atom(a))
    for a, b, o in zip(np.asarray(begin).tolist(), np.asarray(end).tolist(), np.asarray(order).tolist()):
        mol.AddBond(a, b, _BOND_TYPES[o])
    return mol


def _add_conformer(mol: Chem.RWMol, positions: np.ndarray) -> None:
    conf = Chem.Conformer(mol.GetNumAtoms())
    for k, (x, y, w) in enumerate(np.asarray(positions, dtype=np.float64).tolist()):
        conf.SetAtomPosition(k, Point3D(x, y, w))
    conf.Set3D(True)
    mol.AddConformer(conf, assignId=True)


def protocol_mol(positions: np.ndarray, atomic_numbers: np.ndarray, orders: np.ndarray | None = None,
                 conformer: bool = True) -> Chem.Mol:
    """Unsanitised RDKit molecule: neutral atoms, a bond for every pair of order > 0 (from the
    distance rule unless `orders` is given), and the coordinates as a 3D conformer."""
    z = np.asarray(atomic_numbers, dtype=np.int64)
    if orders is None:
        orders = bond_matrix(positions, z)
    i, j = np.nonzero(np.triu(orders, 1))
    mol = _mol_from_bonds(z, i, j, orders[i, j])
    if conformer:
        _add_conformer(mol, positions)
    return mol.GetMol()
