"""Atom and molecule stability (docs/evaluation.md §3), computed for many molecules at once.

All molecules are handled as one flat set of atoms: the candidate pairs of every molecule are
enumerated with array arithmetic (no Python loop over molecules or pairs), classified by the
distance rule of `bonds.py`, and the bond orders are summed per atom. The resulting `BondGraph`
is shared with the RDKit side (`chem.py`) and the distribution distances, so the distance work is
done once per evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ..data.batch import MoleculeSet, as_molecule_set  # noqa: F401 (re-exported)
from ..data.elements import ALLOWED_VALENCES
from ..data.bonds import MAX_Z, bond_order_pairs

# Pairs classified per step: bounds the temporary arrays (~100 bytes a pair) to a few hundred MB
# even for 100,000 molecules or GEOM-sized ones.
CHUNK_PAIRS = 2_000_000
# Valences at or above this are never allowed; clipping keeps the lookup table small.
MAX_VALENCE = 16


@dataclass
class BondGraph:
    """Distance-inferred bonds of a MoleculeSet. Atom indices are global (into the flat arrays);
    each bond is listed once with begin < end, sorted by (begin, end), so the bonds of molecule m
    are begin-sorted and contiguous: bonds[bond_offsets[m]:bond_offsets[m+1]]."""

    begin: np.ndarray  # [B] int64
    end: np.ndarray  # [B] int64
    order: np.ndarray  # [B] int8, 1-3
    bond_offsets: np.ndarray  # [M + 1] int64
    valence: np.ndarray  # [A] int64, sum of bond orders per atom

    def molecule_bonds(self, m: int, atom_offset: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Bonds of molecule m with atom indices local to the molecule."""
        s = slice(self.bond_offsets[m], self.bond_offsets[m + 1])
        return self.begin[s] - atom_offset, self.end[s] - atom_offset, self.order[s]


def _pairs_of(offsets: np.ndarray, first: int, last: int) -> tuple[np.ndarray, np.ndarray]:
    """All pairs (i, j), i < j, inside each of molecules first..last-1 (global atom indices),
    sorted by (i, j). Atom a pairs with every later atom of its own molecule."""
    a0, a1 = offsets[first], offsets[last]
    atoms = np.arange(a0, a1)
    counts = np.repeat(offsets[first + 1:last + 1], np.diff(offsets[first:last + 1])) - atoms - 1
    total = int(counts.sum())
    i = np.repeat(atoms, counts)
    block_start = np.repeat(np.cumsum(counts) - counts, counts)
    j = i + 1 + (np.arange(total) - block_start)
    return i, j


def infer_bonds(mols: MoleculeSet, chunk_pairs: int = CHUNK_PAIRS) -> BondGraph:
    """Bond orders of every intra-molecular pair from its distance (docs/evaluation.md §2)."""
    offsets = np.asarray(mols.offsets, dtype=np.int64)
    n = np.diff(offsets)
    pair_end = np.cumsum(n * (n - 1) // 2)
    pos = np.asarray(mols.positions, dtype=np.float64)
    z = np.asarray(mols.atomic_numbers, dtype=np.int64)
    begins, ends, orders = [], [], []
    first, m_total = 0, len(n)
    while first < m_total:
        done = pair_end[first - 1] if first else 0
        # at least one molecule per chunk, however large
        last = max(first + 1, int(np.searchsorted(pair_end, done + chunk_pairs, side="right")))
        last = min(last, m_total)
        i, j = _pairs_of(offsets, first, last)
        d = np.sqrt(((pos[i] - pos[j]) ** 2).sum(1))
        o = bond_order_pairs(d, z[i], z[j])
        keep = o > 0
        begins.append(i[keep])
        ends.append(j[keep])
        orders.append(o[keep].astype(np.int8))
        first = last
    begin = np.concatenate(begins) if begins else np.zeros(0, np.int64)
    end = np.concatenate(ends) if ends else np.zeros(0, np.int64)
    order = np.concatenate(orders) if orders else np.zeros(0, np.int8)
    valence = (np.bincount(begin, weights=order, minlength=len(z))
               + np.bincount(end, weights=order, minlength=len(z))).astype(np.int64)
    bond_offsets = np.searchsorted(begin, offsets, side="left").astype(np.int64)
    return BondGraph(begin, end, order, bond_offsets, valence)


@lru_cache(maxsize=1)
def allowed_valence_table() -> np.ndarray:
    """[MAX_Z, MAX_VALENCE] bool: allowed[z, v] is True iff valence v is allowed for element z.
    Elements without an entry have no allowed valence, so their atoms are never stable."""
    table = np.zeros((MAX_Z, MAX_VALENCE), dtype=bool)
    for z, valences in ALLOWED_VALENCES.items():
        table[z, list(valences)] = True
    return table


@dataclass
class Stability:
    atom_stable: np.ndarray  # [A] bool
    mol_stable: np.ndarray  # [M] bool

    @property
    def atom_stability(self) -> float:
        return float(self.atom_stable.mean())

    @property
    def mol_stability(self) -> float:
        return float(self.mol_stable.mean())


def stability(mols: MoleculeSet, graph: BondGraph | None = None) -> Stability:
    """An atom is stable iff its valence is one of its element's allowed values exactly; a
    molecule iff all its atoms are. Fractions pool atoms over all molecules."""
    if graph is None:
        graph = infer_bonds(mols)
    z = np.asarray(mols.atomic_numbers, dtype=np.int64)
    v = np.minimum(graph.valence, MAX_VALENCE - 1)
    atom_stable = allowed_valence_table()[z, v]
    mol_of_atom = np.repeat(np.arange(len(mols)), mols.num_atoms)
    unstable = np.bincount(mol_of_atom[~atom_stable], minlength=len(mols))
    return Stability(atom_stable, unstable == 0)


def stability_metrics(molecules) -> dict[str, float]:
    """{'atom_stability', 'mol_stability'} as fractions for a MoleculeSet or a list of (pos, z)."""
    s = stability(as_molecule_set(molecules))
    return {"atom_stability": s.atom_stability, "mol_stability": s.mol_stability}
