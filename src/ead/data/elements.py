"""Element facts used everywhere: symbols, atomic numbers, allowed valences, and the node features.

One source for each fact (docs/design.md): the model's atom-type vocabulary is a tuple of atomic numbers
stored in the model config; everything else is looked up here.
"""

from __future__ import annotations

from ..errors import EADError

SYMBOLS = (
    "X H He Li Be B C N O F Ne Na Mg Al Si P S Cl Ar K Ca Sc Ti V Cr Mn Fe Co Ni Cu Zn Ga Ge As Se Br "
    "Kr Rb Sr Y Zr Nb Mo Tc Ru Rh Pd Ag Cd In Sn Sb Te I Xe Cs Ba La Ce Pr Nd Pm Sm Eu Gd Tb Dy Ho Er "
    "Tm Yb Lu Hf Ta W Re Os Ir Pt Au Hg Tl Pb Bi"
).split()
ATOMIC_NUMBER = {s: z for z, s in enumerate(SYMBOLS) if z > 0}

# Allowed valences for the stability metric (docs/evaluation.md §3), by atomic number.
ALLOWED_VALENCES: dict[int, tuple[int, ...]] = {
    1: (1,), 5: (3,), 6: (4,), 7: (3,), 8: (2,), 9: (1,), 13: (3,), 14: (4,), 15: (3, 5),
    16: (4,), 17: (1,), 33: (3,), 35: (1,), 53: (1,), 80: (1, 2), 83: (3, 5),
}

QM9_TYPES = (1, 6, 7, 8, 9)  # H C N O F
QM9_NO_H_TYPES = (6, 7, 8, 9)
# The "absent" atom type of dummy-atom models (docs/method.md §8): a slot with no atom. Its one-hot slot
# follows the real types; its charge feature is 0.
ABSENT = 0
GEOM_TYPES = (1, 5, 6, 7, 8, 9, 13, 14, 15, 16, 17, 33, 35, 53, 80, 83)

# EDM's normalize_factors = [1, 4, 10]: coordinates unscaled, one-hot / 4, atomic number / 10.
ONE_HOT_SCALE = 0.25
CHARGE_SCALE = 0.1


def symbol(z: int) -> str:
    """Element symbol; "*" for ABSENT (RDKit's dummy atom), "Z<n>" outside the table."""
    if z == ABSENT:
        return "*"
    return SYMBOLS[z] if 0 < z < len(SYMBOLS) else f"Z{z}"


def atomic_number(sym: str) -> int:
    """Atomic number of an element symbol, case-insensitive; EADError for an unknown one."""
    key = sym.strip().capitalize()
    if key not in ATOMIC_NUMBER:
        raise EADError(f"unknown element {sym.strip()!r}")
    return ATOMIC_NUMBER[key]
