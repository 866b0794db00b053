"""Molecular properties as conditioning context (docs/method.md §9, as EDM).

A conditional model sees each requested property as one extra invariant node feature, the
molecule's value normalised as (value − mean) / MAD with the training set's mean and mean
absolute deviation. To sample without a requested value, targets are drawn as EDM does: for each
molecule size M, from the training distribution of the property among molecules with M atoms
(stored in the model config as quantiles, so no data is needed at sampling time).
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import EADError

# QM9's properties in the units of EDM's tables (the cache converts Hartree to meV)
QM9_UNITS = {"alpha": "Bohr^3", "gap": "meV", "homo": "meV", "lumo": "meV", "mu": "D", "Cv": "cal/(mol K)"}
NUM_QUANTILES = 65   # per size and property: the inverse CDF at 0, 1/64, …, 1


def property_columns(molecules, names) -> np.ndarray:
    """[M, C] float64 values of the properties `names` of a MoleculeSet; EADError if one is missing."""
    have = tuple(molecules.property_names)
    missing = [n for n in names if n not in have]
    if missing or molecules.properties is None:
        raise EADError(f"no property {', '.join(missing or names)} in the training data "
                       f"(it has: {', '.join(have) or 'none'})")
    values = np.asarray(molecules.properties, dtype=np.float64)[:, [have.index(n) for n in names]]
    if not np.isfinite(values).all():
        m = int(np.argmin(np.isfinite(values).all(1)))
        raise EADError(f"molecule {m}: property value is not a finite number")
    return values


def context_stats(values: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Mean and mean absolute deviation per column (EDM's normalisation)."""
    mean = values.mean(0)
    mad = np.abs(values - mean).mean(0)
    if (mad <= 0).any():
        raise EADError("a conditioning property is constant over the training set")
    return tuple(float(v) for v in mean), tuple(float(v) for v in mad)


def size_quantiles(sizes: np.ndarray, values: np.ndarray, k: int = NUM_QUANTILES) -> dict[int, list]:
    """{M: [[k quantiles of property c among molecules with M atoms] for c]}."""
    q = np.linspace(0, 1, k)
    out = {}
    for m in np.unique(sizes):
        sel = values[sizes == m]
        out[int(m)] = [[float(v) for v in np.quantile(sel[:, c], q)] for c in range(values.shape[1])]
    return out


def draw_targets(quantiles: dict[int, list], sizes: torch.Tensor, generator: torch.Generator) -> np.ndarray:
    """Property values [n, C] drawn per molecule from its size's training distribution (inverse
    CDF, linear between quantiles). A size absent from training uses the nearest size present."""
    if not quantiles:
        raise EADError("the model stores no property distribution; give every property's value")
    known = np.array(sorted(quantiles))
    sizes = sizes.cpu().numpy()
    num = len(next(iter(quantiles.values())))
    u = torch.rand(len(sizes), num, generator=generator, dtype=torch.float64).numpy()
    out = np.empty((len(sizes), num))
    for i, k in enumerate(nearest_index(known, sizes)):
        table = quantiles[int(known[k])]
        for c in range(num):
            qs = np.asarray(table[c])
            out[i, c] = np.interp(u[i, c], np.linspace(0, 1, len(qs)), qs)
    return out


def nearest_index(known: np.ndarray, sizes) -> np.ndarray:
    """For each size, the index of the nearest value in `known` (a size never seen in training
    borrows its nearest neighbour's statistics)."""
    sizes = np.asarray(sizes).reshape(-1)
    return np.abs(np.asarray(known)[None, :] - sizes[:, None]).argmin(1)


def record_values(records: list[dict], names, what: str = "property", hint: str = "") -> np.ndarray:
    """[M, C] float64 from the text fields `names` of every record (SD data fields, XYZ comment
    keys, as read_molecules returns them); EADError naming the first record without a number."""
    out = np.empty((len(records), len(names)))
    for m, props in enumerate(records):
        for c, name in enumerate(names):
            try:
                out[m, c] = float(props[name])
            except KeyError:
                raise EADError(f"molecule {m} has no {name!r} {what}{hint}") from None
            except (TypeError, ValueError):
                raise EADError(f"molecule {m}: property {name!r} is not a number ({props[name]!r})") from None
    return out


def sizes_given_targets(config, condition: dict, n: int, generator: torch.Generator) -> torch.Tensor:
    """Molecule sizes drawn from p(M | requested values) ∝ p(M) · Π p(value | M), the densities read
    off the stored per-size quantiles (so that a fixed target gets the sizes that carry it, as EDM's
    joint p(c, M) does). A value outside every size's training range falls back to p(M) weighted by
    exp(−(how much farther than the nearest range it is, in MADs))."""
    sizes = np.array(sorted(config.size_histogram))
    prior = np.array([config.size_histogram[int(m)] for m in sizes], dtype=np.float64)
    names = tuple(config.context)
    values = {k: np.broadcast_to(np.asarray(v, dtype=np.float64).reshape(-1), (n,)) for k, v in condition.items()}
    weights = np.tile(prior, (n, 1))
    for c, name in enumerate(names):
        if name not in values:
            continue
        dens, dist = np.zeros((n, len(sizes))), np.zeros((n, len(sizes)))
        for j, m in enumerate(sizes):
            q = np.asarray(config.context_quantiles.get(int(m), [[np.nan]] * len(names))[c])
            v = values[name]
            k = np.clip(np.searchsorted(q, v, side="right") - 1, 0, len(q) - 2) if len(q) > 1 else np.zeros(n, int)
            width = (q[k + 1] - q[k]) if len(q) > 1 else np.full(n, np.inf)
            inside = (v >= q[0]) & (v <= q[-1])
            dens[:, j] = np.where(inside, 1.0 / ((len(q) - 1) * np.maximum(width, 1e-12)), 0.0)
            dist[:, j] = np.maximum(q[0] - v, 0) + np.maximum(v - q[-1], 0)
        near = np.exp(-(dist - dist.min(1, keepdims=True)) / config.context_mad[c])   # never all zero
        dens = np.where(dens.sum(1, keepdims=True) > 0, dens, near)
        weights *= dens
    weights /= weights.sum(1, keepdims=True)
    u = torch.rand(n, generator=generator, dtype=torch.float64).numpy()[:, None]
    pick = (weights.cumsum(1) < u).sum(1).clip(max=len(sizes) - 1)
    return torch.as_tensor(sizes[pick], dtype=torch.long)


def resolve_targets(config, sizes: torch.Tensor, condition: dict | None,
                    generator: torch.Generator) -> np.ndarray | None:
    """Per-molecule property values [n, C] (raw units) for a model's context, or None for an
    unconditional model. `condition` maps a property to one value or one per molecule; properties
    left out are drawn from the training distribution given the size."""
    names = tuple(config.context)
    condition = dict(condition or {})
    n = len(sizes)
    check_condition(config, condition, n)
    if not names:
        return None
    drawn = draw_targets(config.context_quantiles, sizes, generator) if len(condition) < len(names) else None
    out = np.empty((n, len(names)))
    for c, name in enumerate(names):
        out[:, c] = drawn[:, c] if name not in condition else np.asarray(condition[name], dtype=np.float64).reshape(-1)
    return out


def check_condition(config, condition: dict | None, n: int) -> None:
    """EADError unless `condition` fits the model: known properties, one finite value or n."""
    names = tuple(config.context)
    condition = dict(condition or {})
    if not names and condition:
        raise EADError(f"this model is unconditional; it takes no property ({', '.join(condition)})")
    unknown = [k for k in condition if k not in names]
    if unknown:
        raise EADError(f"the model is conditioned on {', '.join(names)}, not {', '.join(unknown)}")
    for name, value in condition.items():
        v = np.asarray(value, dtype=np.float64).reshape(-1)
        if v.size not in (1, n):
            raise EADError(f"property {name}: give one value or one per molecule ({n}), not {v.size}")
        if not np.isfinite(v).all():
            raise EADError(f"property {name}: value is not a finite number")


def normalise(config, values: np.ndarray) -> np.ndarray:
    """(value − mean) / MAD, the network's input, float32 [n, C]."""
    return ((values - np.asarray(config.context_mean)) / np.asarray(config.context_mad)).astype(np.float32)


def parse_conditions(items) -> dict[str, float]:
    """['alpha=80', 'gap=6000'] (the command line) -> {'alpha': 80.0, 'gap': 6000.0}."""
    out = {}
    for item in items or ():
        name, sep, value = str(item).partition("=")
        try:
            v = float(value)
        except ValueError:
            v = float("nan")
        if not sep or not name or not np.isfinite(v):
            raise EADError(f"--condition wants NAME=VALUE with a finite number, got {item!r}")
        out[name.strip()] = v
    return out
