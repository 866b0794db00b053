"""Distribution distances to the training set (docs/evaluation.md §6).

- atom-type total variation: ½ Σ |p − q| over element frequencies;
- bond-length Wasserstein-1 per bond type (elements + order of the distance-inferred bond, e.g.
  "C-H", "C=O", "C#N"), in Å;
- bond-angle Wasserstein-1 per central element (the angle between two bonds at that atom), in
  degrees.
Each per-type W1 is also averaged with the reference's type frequencies as weights (over the types
that both sides have), which gives one number per family.

The reference side is kept as fine histograms (0.0005 Å, 0.1°) computed once from the training
split and cached as an .npz in the data cache. W1 between two distributions on the same bin grid
is Σ |CDF₁ − CDF₂| × bin width; binning moves each value by at most half a bin, so the result is
within one bin width (0.0005 Å, 0.1°) of the exact sample W1.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from functools import lru_cache
from hashlib import sha256
from pathlib import Path

import numpy as np

from ..data.batch import MoleculeSet
from ..data.bonds import BOND_TABLE
from ..data.elements import symbol
from ..errors import EADError
from .stability import BondGraph, infer_bonds

LENGTH_BIN, LENGTH_MAX = 0.0005, 4.0  # Å; the longest tabulated single bond + margin is 2.76 Å
ANGLE_BIN, ANGLE_MAX = 0.1, 180.0  # degrees
GEOMETRY_CACHE_FORMAT = 1
_BOND_SYMBOL = {1: "-", 2: "=", 3: "#"}


def _element_order(z: np.ndarray) -> np.ndarray:
    # hydrogen last, others by atomic number: "C-H", "O-H", "C=O" read as chemists write them
    return np.where(z == 1, 1000, z)


def _bond_type_names(za: np.ndarray, zb: np.ndarray, order: np.ndarray) -> np.ndarray:
    swap = _element_order(za) > _element_order(zb)
    first, second = np.where(swap, zb, za), np.where(swap, za, zb)
    codes = first.astype(np.int64) * 10_000 + second * 10 + order
    names = np.empty(len(codes), dtype=object)
    for c in np.unique(codes):  # a few distinct types: loop over types, not bonds
        names[codes == c] = f"{symbol(c // 10_000)}{_BOND_SYMBOL[c % 10]}{symbol(c // 10 % 1000)}"
    return names.astype(str)


@dataclass
class Geometry:
    """Samples of one molecule set: element counts, bond lengths by type, angles by centre."""

    element_counts: dict[str, int]
    bond_lengths: dict[str, np.ndarray]
    angles: dict[str, np.ndarray]


def _group(values: np.ndarray, keys: np.ndarray) -> dict[str, np.ndarray]:
    if len(values) == 0:
        return {}
    order = np.argsort(keys, kind="stable")
    keys, values = keys[order], values[order]
    uniq, start = np.unique(keys, return_index=True)
    bounds = list(start) + [len(keys)]
    return {str(k): values[bounds[i]:bounds[i + 1]] for i, k in enumerate(uniq)}


def angle_triplets(graph: BondGraph) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(outer_a, centre, outer_b) global atom indices of every pair of bonds sharing an atom,
    enumerated with array operations: bonds are listed in both directions, sorted by centre, and
    each directed bond is paired with the later ones of its centre's group."""
    centre = np.concatenate([graph.begin, graph.end])
    other = np.concatenate([graph.end, graph.begin])
    order = np.argsort(centre, kind="stable")
    centre, other = centre[order], other[order]
    if len(centre) == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty
    starts = np.flatnonzero(np.r_[True, centre[1:] != centre[:-1]])
    sizes = np.diff(np.r_[starts, len(centre)])
    group_start = np.repeat(starts, sizes)
    rank = np.arange(len(centre)) - group_start
    later = np.repeat(sizes, sizes) - rank - 1
    first = np.repeat(np.arange(len(centre)), later)
    block = np.repeat(np.cumsum(later) - later, later)
    second = first + 1 + (np.arange(len(first)) - block)
    return other[first], centre[first], other[second]


def geometry(mols: MoleculeSet, graph: BondGraph | None = None) -> Geometry:
    if graph is None:
        graph = infer_bonds(mols)
    pos = np.asarray(mols.positions, dtype=np.float64)
    z = np.asarray(mols.atomic_numbers, dtype=np.int64)
    elements, counts = np.unique(z, return_counts=True)
    element_counts = {symbol(int(e)): int(c) for e, c in zip(elements, counts)}

    lengths = np.linalg.norm(pos[graph.begin] - pos[graph.end], axis=1)
    bond_lengths = _group(lengths, _bond_type_names(z[graph.begin], z[graph.end],
                                                    graph.order.astype(np.int64)))

    a, c, b = angle_triplets(graph)
    u, v = pos[a] - pos[c], pos[b] - pos[c]
    norm = np.linalg.norm(u, axis=1) * np.linalg.norm(v, axis=1)
    ok = norm > 0  # coincident atoms have no angle
    cos = np.clip((u[ok] * v[ok]).sum(1) / norm[ok], -1.0, 1.0)
    centre_names = np.array([symbol(int(e)) for e in range(int(z.max()) + 1)])[z[c[ok]]]
    angles = _group(np.degrees(np.arccos(cos)), centre_names)
    return Geometry(element_counts, bond_lengths, angles)


def _histogram(values: np.ndarray, width: float, top: float) -> np.ndarray:
    bins = int(round(top / width))
    idx = np.clip((np.asarray(values) / width).astype(np.int64), 0, bins - 1)
    return np.bincount(idx, minlength=bins)


def w1_histograms(h1: np.ndarray, h2: np.ndarray, width: float) -> float:
    """Wasserstein-1 between two histograms on the same grid (each normalised here): scipy's, with
    the bin centres as values and the counts as weights (only bins either histogram uses)."""
    from scipy.stats import wasserstein_distance

    used = np.flatnonzero((np.asarray(h1) > 0) | (np.asarray(h2) > 0))
    centres = (used + 0.5) * width
    return float(wasserstein_distance(centres, centres, np.asarray(h1)[used], np.asarray(h2)[used]))


@dataclass
class ReferenceGeometry:
    element_counts: dict[str, int]
    bond_hist: dict[str, np.ndarray]
    angle_hist: dict[str, np.ndarray]


def _fingerprint() -> str:
    tables = BOND_TABLE.read_bytes()
    return f"{sha256(tables).hexdigest()[:16]}/{LENGTH_BIN}/{LENGTH_MAX}/{ANGLE_BIN}"


def reference_geometry_path(reference: str = "qm9") -> Path:
    from ..data.qm9 import cache_dir
    from .reference import reference_key

    return cache_dir() / f"{reference_key(reference)}_train_geometry_v{GEOMETRY_CACHE_FORMAT}.npz"


def _save_reference(path: Path, ref: ReferenceGeometry) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}.npz")
    try:
        np.savez(tmp, fingerprint=np.array(_fingerprint()),
                 elements=np.array(list(ref.element_counts)),
                 element_counts=np.array(list(ref.element_counts.values()), dtype=np.int64),
                 bond_types=np.array(list(ref.bond_hist)),
                 bond_hist=np.stack(list(ref.bond_hist.values())),
                 angle_types=np.array(list(ref.angle_hist)),
                 angle_hist=np.stack(list(ref.angle_hist.values())))
        os.replace(tmp, path)  # readers never see a half-written file
    finally:
        if tmp.exists():
            tmp.unlink()


def _load_reference(path: Path) -> ReferenceGeometry | None:
    try:
        with np.load(path, allow_pickle=False) as f:
            if str(f["fingerprint"]) != _fingerprint():
                return None
            return ReferenceGeometry(
                {str(e): int(c) for e, c in zip(f["elements"], f["element_counts"])},
                {str(k): h for k, h in zip(f["bond_types"], f["bond_hist"])},
                {str(k): h for k, h in zip(f["angle_types"], f["angle_hist"])})
    except (OSError, ValueError, KeyError):
        return None  # missing, truncated or foreign: rebuilt by the caller


def reference_geometry(reference: str = "qm9", verbose: bool = False) -> ReferenceGeometry:
    """Histograms of the training molecules' geometry (QM9's training split, or the molecules of a
    user's reference path), from the cache or computed once."""
    from .reference import reference_key, resolve_reference

    reference = resolve_reference(reference)
    if reference is None:
        raise EADError("distribution distances need a reference: 'qm9' or a path")
    return _reference_geometry(reference, reference_key(reference), verbose)


@lru_cache(maxsize=2)
def _reference_geometry(reference: str, key: str, verbose: bool) -> ReferenceGeometry:
    from .reference import describe, reference_molecules

    path = reference_geometry_path(reference)
    ref = _load_reference(path) if path.exists() else None
    if ref is not None:
        return ref
    if verbose:
        print(f"computing the geometry of the {describe(reference)} once into {path}", file=sys.stderr)
    geo = geometry(reference_molecules(reference, verbose))
    ref = ReferenceGeometry(
        geo.element_counts,
        {k: _histogram(v, LENGTH_BIN, LENGTH_MAX) for k, v in geo.bond_lengths.items()},
        {k: _histogram(v, ANGLE_BIN, ANGLE_MAX) for k, v in geo.angles.items()})
    _save_reference(path, ref)
    return ref


def _per_type_w1(samples: dict[str, np.ndarray], ref_hist: dict[str, np.ndarray],
                 width: float, top: float) -> dict:
    per_type, weights = {}, {}
    for key, values in samples.items():
        if key in ref_hist and len(values):
            per_type[key] = w1_histograms(_histogram(values, width, top), ref_hist[key], width)
            weights[key] = float(ref_hist[key].sum())
    total = sum(len(v) for v in samples.values())
    unmatched = sum(len(v) for k, v in samples.items() if k not in ref_hist)
    mean = (sum(per_type[k] * weights[k] for k in per_type) / sum(weights.values())
            if per_type else None)
    return {"mean": mean, "per_type": per_type,
            "fraction_without_reference": unmatched / total if total else 0.0}


def distribution_metrics(mols: MoleculeSet, graph: BondGraph | None = None,
                         reference: str = "qm9") -> dict:
    """{'atom_type_tv', 'bond_length_w1' (Å), 'bond_angle_w1' (degrees), with per-type values}."""
    ref = reference_geometry(reference)
    geo = geometry(mols, graph)
    elements = set(ref.element_counts) | set(geo.element_counts)
    n_ref, n_gen = sum(ref.element_counts.values()), sum(geo.element_counts.values())
    tv = 0.5 * sum(abs(geo.element_counts.get(e, 0) / n_gen - ref.element_counts.get(e, 0) / n_ref)
                   for e in elements)
    lengths = _per_type_w1(geo.bond_lengths, ref.bond_hist, LENGTH_BIN, LENGTH_MAX)
    angles = _per_type_w1(geo.angles, ref.angle_hist, ANGLE_BIN, ANGLE_MAX)
    return {
        "atom_type_tv": tv,
        "bond_length_w1": lengths["mean"],
        "bond_angle_w1": angles["mean"],
        "bond_length_w1_per_type": lengths["per_type"],
        "bond_angle_w1_per_centre": angles["per_type"],
        "bonds_of_types_not_in_reference": lengths["fraction_without_reference"],
        "angles_at_centres_not_in_reference": angles["fraction_without_reference"],
    }
