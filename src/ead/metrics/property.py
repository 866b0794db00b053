"""Conditional generation's score (docs/method.md §9, EDM's protocol): how far the property values a
property predictor finds in the generated molecules are from the values that were asked for."""

from __future__ import annotations

import numpy as np

from ..data.batch import as_molecule_set
from ..data.properties import nearest_index, property_columns
from ..errors import EADError


def property_mae(predictor, molecules, targets, seed: int = 0) -> dict:
    """EDM's conditional score: mean |target − predicted| over all molecules, in the property's
    units, with two references read the way EDM reads its baselines: `shuffled_mae` (the same
    predictions against the targets permuted: what ignoring the condition scores) and
    `size_only_mae` (|target − the QM9 mean for the molecule's atom count|: what getting only the
    size right scores). Beating the first shows the condition is used; beating the second, that it
    shapes more than the atom count. `mae_interval` is the MAE's 95 % interval (normal, over the
    molecules) and `vs_size_only` the paired difference MAE − size_only_mae with its 95 % interval:
    below zero with the interval, the molecules beat the size-only reference beyond sampling noise.
    `predictor`: anything with `predict(molecules)`, `config` (property, unit) and `info`
    (test_mae), as model.predictor.Predictor."""
    mols = as_molecule_set(molecules)
    targets = np.asarray(targets, dtype=np.float64)
    pred = predictor.predict(mols)
    if len(pred) != len(targets):
        raise EADError(f"{len(pred)} molecules but {len(targets)} targets")
    n = len(targets)
    out = {"property": predictor.config.property, "unit": predictor.config.unit,
           "mae": None, "num_molecules": int(n),
           "target_mean": float(targets.mean()) if n else None, "predicted_mean": float(pred.mean()) if n else None,
           "shuffled_mae": None, "size_only_mae": None, "predictor_test_mae": predictor.info.get("test_mae"),
           "mae_interval": None, "vs_size_only": None}
    if n:
        err = np.abs(pred - targets)
        size_err = np.abs(targets - size_means(predictor.config.property, mols.num_atoms))
        perm = np.random.default_rng(seed).permutation(n)
        out["shuffled_mae"] = float(np.abs(pred - targets[perm]).mean())
        out["mae"] = float(err.mean())
        out["size_only_mae"] = float(size_err.mean())
        out["mae_interval"] = _interval(err)
        gap = err - size_err
        out["vs_size_only"] = [float(gap.mean()), *_interval(gap)]
    return out


def _interval(values: np.ndarray) -> list[float]:
    """95 % interval of the mean (normal approximation; one value: the value itself)."""
    half = 1.96 * values.std(ddof=1) / np.sqrt(len(values)) if len(values) > 1 else 0.0
    return [float(values.mean() - half), float(values.mean() + half)]


def size_means(prop: str, sizes) -> np.ndarray:
    """The mean of a QM9 property among the generator half's molecules with each given atom count
    (the nearest count present for one never seen)."""
    from ..data.qm9 import qm9_half

    half = qm9_half("second")
    values = property_columns(half, (prop,))[:, 0]
    known = np.unique(half.num_atoms)
    means = np.array([values[half.num_atoms == m].mean() for m in known])
    return means[nearest_index(known, sizes)]
