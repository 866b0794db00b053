"""Bond orders inferred from interatomic distances (EDM protocol, docs/evaluation.md §2).

The length tables live in `bond_lengths.json` (data, not code); here they become dense
[Z, Z] lookup arrays so that a whole molecule, or a flat batch of molecules, is classified with
array operations and no Python loop over atom pairs.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import numpy as np

from .elements import ATOMIC_NUMBER

MAX_Z = 119
BOND_TABLE = Path(__file__).with_name("bond_lengths.json")


@lru_cache(maxsize=1)
def tables() -> tuple[np.ndarray, np.ndarray]:
    """(limits [3, MAX_Z, MAX_Z] in pm, already including each order's margin; inf-free: a missing
    pair has limit -1 so that no distance is below it), and the raw table for reference."""
    spec = json.loads(BOND_TABLE.read_text())
    raw = np.full((3, MAX_Z, MAX_Z), -1.0)
    for k, name in enumerate(("single", "double", "triple")):
        for a, row in spec[name].items():
            for b, length in row.items():
                za, zb = ATOMIC_NUMBER[a], ATOMIC_NUMBER[b]
                raw[k, za, zb] = raw[k, zb, za] = float(length)
    margins = np.asarray(spec["margins_pm"], dtype=float)[:, None, None]
    limits = np.where(raw > 0, raw + margins, -1.0)
    return limits, raw


def bond_order_pairs(distance_angstrom: np.ndarray, za: np.ndarray, zb: np.ndarray) -> np.ndarray:
    """Bond order (0-3) for each pair, from its distance in Å and the two atomic numbers.

    Rule (strict <): order 1 if d < single + m1; 2 if also d < double + m2; 3 if also
    d < triple + m3; a missing table entry blocks that order and every higher one.
    """
    limits, _ = tables()
    d = np.asarray(distance_angstrom, dtype=np.float64) * 100.0  # pm
    za = np.asarray(za, dtype=np.int64)
    zb = np.asarray(zb, dtype=np.int64)
    single = d < limits[0, za, zb]
    double = single & (d < limits[1, za, zb])
    triple = double & (d < limits[2, za, zb])
    return single.astype(np.int8) + double + triple


def bond_matrix(positions: np.ndarray, atomic_numbers: np.ndarray) -> np.ndarray:
    """[n, n] bond-order matrix of one molecule (zero diagonal)."""
    pos = np.asarray(positions, dtype=np.float64)
    z = np.asarray(atomic_numbers, dtype=np.int64)
    d = np.sqrt(((pos[:, None, :] - pos[None, :, :]) ** 2).sum(-1))
    orders = bond_order_pairs(d, z[:, None], z[None, :])
    np.fill_diagonal(orders, 0)
    return orders


def bond_list(positions: np.ndarray, atomic_numbers: np.ndarray) -> list[tuple[int, int, int]]:
    """Bonds (i, j, order) with i < j and order > 0."""
    orders = bond_matrix(positions, atomic_numbers)
    i, j = np.nonzero(np.triu(orders, 1))
    return [(int(a), int(b), int(orders[a, b])) for a, b in zip(i, j)]
