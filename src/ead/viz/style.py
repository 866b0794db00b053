"""How atoms look in every picture of this package (GIF, 3D viewer): one table, so that the
animation, the HTML viewer and the plots agree on what "nitrogen" looks like.

Colours are the Jmol CPK scheme; ball radii are scaled covalent radii (Cordero et al. 2008) so
that hydrogens read as small next to heavy atoms without hiding the bonds."""

from __future__ import annotations

from ..data.elements import symbol

# Jmol's CPK colours for the elements a molecule generator here can emit (QM9 and GEOM types).
CPK = {
    1: "#FFFFFF", 5: "#FFB5B5", 6: "#909090", 7: "#3050F8", 8: "#FF0D0D", 9: "#90E050",
    13: "#BFA6A6", 14: "#F0C8A0", 15: "#FF8000", 16: "#FFFF30", 17: "#1FF01F", 33: "#BD80E3",
    35: "#A62929", 53: "#940094", 80: "#B8B8D0", 83: "#9E4FB5",
    0: "#E6E6FA",   # ABSENT: a dummy-atom model's empty slot, faint on purpose (trajectories)
}
UNKNOWN_COLOR = "#FF1493"  # loud on purpose: an element outside the table should be noticed

COVALENT_RADIUS = {
    1: 0.31, 5: 0.84, 6: 0.76, 7: 0.71, 8: 0.66, 9: 0.57, 13: 1.21, 14: 1.11, 15: 1.07,
    16: 1.05, 17: 1.02, 33: 1.19, 35: 1.20, 53: 1.39, 80: 1.32, 83: 1.48,
    0: 0.25,        # ABSENT
}


def color_hex(z: int) -> str:
    return CPK.get(int(z), UNKNOWN_COLOR)


def color_rgb(z: int) -> tuple[int, int, int]:
    h = color_hex(z)
    return int(h[1:3], 16), int(h[3:5], 16), int(h[5:7], 16)


def ball_radius(z: int) -> float:
    """Drawn sphere radius in Å for ball-and-stick pictures (well below the bond length, so
    bonds stay visible)."""
    return 0.18 + 0.3 * COVALENT_RADIUS.get(int(z), 0.8)


def formula(atomic_numbers) -> str:
    """Hill formula (C, then H, then the rest alphabetically), e.g. C3H8O."""
    counts: dict[str, int] = {}
    for z in atomic_numbers:
        s = symbol(int(z))
        counts[s] = counts.get(s, 0) + 1
    first = [s for s in ("C", "H") if s in counts] if "C" in counts else []
    rest = sorted(s for s in counts if s not in first)
    return "".join(f"{s}{counts[s] if counts[s] > 1 else ''}" for s in first + rest)
