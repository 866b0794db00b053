"""Configuration as plain dataclasses, saved as JSON beside the weights (docs/design.md).

Every choice the paper leaves open is a field here, so it can be changed and measured.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from ..data.batch import MAX_MOLECULE_ATOMS
from ..data.elements import ABSENT, QM9_TYPES
from ..errors import EADError
from ..io import read_json

SIZE_MODES = ("prior", "dummy")
TARGETS = ("eps", "x0", "v", "x0-types")
# EAD's training window C (docs/method.md §4), the one default for training and the asynchronous
# samplers: per-atom times within ±C of a shared baseline; 0 = EDM.
DEFAULT_WINDOW = 9


def check_network_options(target: str, rbf: int) -> None:
    """The recipe options that change the network (docs/recipe.md): checked here for the model
    config and, before any data loads, for a training run."""
    if target not in TARGETS:
        raise EADError(f"unknown target {target!r}; choose from {', '.join(TARGETS)}")
    if not 0 <= rbf <= 256:
        raise EADError(f"rbf must be in [0, 256], got {rbf}")


def check_window(window: int, timesteps: int) -> None:
    """The window C must leave room for the baseline: 0 ≤ C ≤ T/2."""
    if window < 0 or 2 * window > timesteps:
        raise EADError(f"window C must be in [0, T/2], got {window}")

# ----------------------------------------------------------------------------------------------
# The schema of every JSON the package reads (docs/reliability.md): each field's type comes from its
# dataclass annotation (or a plain {name: annotation} mapping), its range from a `ranges` entry;
# a value is checked here once, before anything is built from it. Resource limits are checked on
# estimates, before any allocation, with the numbers in the message.
MAX_PARAMETERS = 250_000_000      # weights of one network (1 GB in float32)
MAX_TIMESTEPS = 100_000           # T: the noise process holds a few arrays of T + 1 values
MAX_SAMPLING_EDGES = 2**26        # atom pairs in one sampling batch (its edge index alone is 1 GiB)
MAX_LIST = 100_000                # entries of any list or mapping in a config


def check_json(d, schema: dict[str, str], where: str, ranges: dict | None = None,
               unknown: str = "error") -> dict:
    """`d` (a JSON object) with each field of `schema` (name -> annotation: "int", "float | None",
    "tuple[int, ...]", "dict[int, int]", …) type-checked and converted, and in its `ranges` entry
    ((low, high), either None for open). Unknown fields are an error, or dropped (unknown="ignore")."""
    if not isinstance(d, dict):
        raise EADError(f"{where} must be a JSON object, got {_kind(d)}")
    extra = sorted(set(d) - set(schema))
    if extra and unknown == "error":
        raise EADError(f"unknown {where} fields {extra}")
    ranges = ranges or {}
    return {k: _value(v, schema[k], ranges.get(k), f"{where}: {k}") for k, v in d.items() if k in schema}


def dataclass_schema(cls) -> dict[str, str]:
    return {f.name: str(f.type) for f in dataclasses.fields(cls)}


def _kind(v) -> str:
    return {bool: "a bool", int: "an integer", float: "a number", str: "a string", list: "a list",
            dict: "an object", type(None): "null"}.get(type(v), type(v).__name__)


def _value(v, kind: str, rng, what: str):
    kind = kind.replace(" ", "")
    if kind.endswith("|None"):
        return None if v is None else _value(v, kind[:-5], rng, what)
    if kind.startswith(("tuple[", "list[")):
        inner = kind[kind.index("[") + 1 : -1].split(",")[0]
        if not isinstance(v, (list, tuple)) or len(v) > MAX_LIST:
            raise EADError(f"{what} must be a list (of at most {MAX_LIST:,} entries), got {_kind(v)}")
        items = [_value(x, inner, rng, what) for x in v]
        return tuple(items) if kind.startswith("tuple") else items
    if kind.startswith("dict[int,"):
        if not isinstance(v, dict) or len(v) > MAX_LIST:
            raise EADError(f"{what} must be an object {{size: value}}, got {_kind(v)}")
        out = {}
        for key, value in v.items():
            key = _value(int(key) if str(key).isdigit() else key, "int", rng, f"{what} key")
            out[key] = _value(value, kind[9:-1], (0, None) if kind == "dict[int,int]" else None,
                              f"{what}[{key}]")
        return out
    if kind == "list" or kind == "dict":
        if not isinstance(v, {"list": list, "dict": dict}[kind]):
            raise EADError(f"{what} must be {'a list' if kind == 'list' else 'an object'}, got {_kind(v)}")
        return v
    if kind == "bool":
        if not isinstance(v, bool):
            raise EADError(f"{what} must be true or false, got {json.dumps(v)[:40]}")
        return v
    if kind == "str":
        if not isinstance(v, str) or len(v) > 10_000:
            raise EADError(f"{what} must be a string, got {_kind(v)}")
        return v
    if kind == "int":
        if isinstance(v, bool) or not isinstance(v, int):
            raise EADError(f"{what} must be an integer, got {json.dumps(v)[:40]}")
    elif kind == "float":
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise EADError(f"{what} must be a finite number, got {json.dumps(v)[:40]}")
        v = float(v)
    else:
        raise AssertionError(f"no schema rule for {kind}")
    if rng is not None:
        low, high = rng
        if (low is not None and v < low) or (high is not None and v > high):
            span = f"≥ {low}" if high is None else f"≤ {high}" if low is None else f"in [{low}, {high}]"
            raise EADError(f"{what} must be {span}, got {v}")
    return v


def parameter_estimate(layers: int, hidden: int) -> int:
    """About how many weights an EGNN of this size holds (9·L·h²: edge, node, coordinate and
    attention MLPs; the shipped 9 × 256 network has 5.3 M)."""
    return 9 * int(layers) * int(hidden) ** 2


def check_parameters(layers: int, hidden: int, where: str) -> None:
    n = parameter_estimate(layers, hidden)
    if n > MAX_PARAMETERS:
        raise EADError(f"{where}: {layers} layers × {hidden} hidden ≈ {n:.3g} parameters "
                       f"({4 * n / 2**30:.3g} GiB in float32), over the limit of {MAX_PARAMETERS:.3g}")


def training_atoms_limit(hidden: int) -> int:
    """The largest molecule a network of this width trains on by default: one layer's edge
    activations of that molecule, n² × hidden float32 values, stay within 256 MiB (paper/geom
    presets: 512 atoms; GEOM-Drugs' largest has 181)."""
    return min(MAX_MOLECULE_ATOMS, math.isqrt(2**26 // max(1, int(hidden))))


def check_weights(state: dict, where: str) -> None:
    """Weights must be floating point and finite: integer ones would load, be cast, and sample
    nonsense; NaN or infinite ones make every molecule diverge."""
    import torch

    bad = [k for k, v in state.items() if not v.dtype.is_floating_point]
    if bad:
        raise EADError(f"{where}: weight {bad[0]} is {str(state[bad[0]].dtype).replace('torch.', '')}; "
                       f"weights must be floating point ({len(bad)} tensors are not)")
    bad = [k for k, v in state.items() if not bool(torch.isfinite(v).all())]
    if bad:
        raise EADError(f"{where}: weight {bad[0]} holds NaN or infinite values ({len(bad)} tensors do): "
                       "the file is damaged or was saved from a diverged run")


def check_sampling_batch(sizes, batch_size: int) -> None:
    """Refuse molecule sizes, or a batch of them, whose atom pairs would not fit (before any
    allocation): one molecule of at most MAX_MOLECULE_ATOMS atoms, a batch of at most
    MAX_SAMPLING_EDGES pairs."""
    import torch

    sizes = torch.as_tensor(sizes, dtype=torch.int64).reshape(-1)
    largest = int(sizes.max())
    if largest > MAX_MOLECULE_ATOMS:
        raise EADError(f"molecules of {largest:,} atoms are over the limit of {MAX_MOLECULE_ATOMS:,} "
                       f"(a molecule's {largest * (largest - 1):,} atom pairs are all edges)")
    pairs = torch.cumsum(sizes * (sizes - 1), 0)
    ends = torch.arange(batch_size, len(sizes) + batch_size, batch_size).clamp_max(len(sizes)) - 1
    per_batch = torch.diff(pairs[ends], prepend=torch.zeros(1, dtype=torch.int64))
    worst = int(per_batch.max())
    if worst > MAX_SAMPLING_EDGES:
        fits = max(1, MAX_SAMPLING_EDGES // max(1, largest * (largest - 1)))
        raise EADError(f"a batch of {min(batch_size, len(sizes))} molecules has {worst:,} atom pairs, over "
                       f"the limit of {MAX_SAMPLING_EDGES:,}; use a batch size of at most {fits}")


# name -> (layers, hidden). `paper` is the paper's (and EDM's) QM9 network, 5.3 M parameters;
# `geom` is EDM's GEOM-Drugs network (4 layers × 256).
PRESETS = {
    "paper": (9, 256),
    "geom": (4, 256),
    "medium": (6, 192),
    "small": (6, 128),
    "tiny": (3, 64),
    "micro": (2, 32),
}


@dataclass
class ModelConfig:
    # data
    dataset: str = "qm9"
    atom_types: tuple[int, ...] = QM9_TYPES
    include_charges: bool = True
    remove_h: bool = False
    size_histogram: dict[int, int] = field(default_factory=dict)   # p(M) for sampling
    context: tuple[str, ...] = ()                                   # conditioning properties
    context_mean: tuple[float, ...] = ()
    context_mad: tuple[float, ...] = ()
    # per molecule size, the training quantiles of each property: targets drawn when none is given
    context_quantiles: dict[int, list[list[float]]] = field(default_factory=dict)
    # denoiser (docs/method.md §5)
    preset: str = "small"
    layers: int = 6
    hidden: int = 128
    attention: bool = True
    tanh: bool = True
    coords_range: float = 15.0
    norm_constant: float = 1.0
    normalization_factor: float = 1.0
    # recipe options that change the network (docs/recipe.md); each default is EDM's
    target: str = "eps"             # what the network predicts: "eps" (EDM), "x0", "v" or "x0-types"
    rbf: int = 0                    # > 0: that many radial-basis features of each distance beside d²
    self_condition: bool = False    # the network also reads its previous clean estimate
    # noise process (docs/method.md §2)
    noise_schedule: str = "polynomial_2"
    timesteps: int = 1000
    noise_precision: float = 1e-5
    window: int = DEFAULT_WINDOW
    # molecule size (docs/method.md §8): "prior" draws M from p(M) and generates M atoms (EDM, default);
    # "dummy" generates max_atoms slots, an extra "absent" type (Z = 0) marks the empty ones, and
    # absent atoms are dropped after decoding. In training their times are shifted up by absent_bias.
    size_mode: str = "prior"
    max_atoms: int = 0
    absent_bias: int = 0

    def __post_init__(self):
        check_parameters(self.layers, self.hidden, "model")
        self.atom_types = tuple(int(z) for z in self.atom_types)
        self.context = tuple(self.context)
        self.context_mean = tuple(float(v) for v in self.context_mean)
        self.context_mad = tuple(float(v) for v in self.context_mad)
        self.size_histogram = {int(k): int(v) for k, v in self.size_histogram.items()}
        if any(v < 0 for v in self.size_histogram.values()) or (
                self.size_histogram and sum(self.size_histogram.values()) <= 0):
            raise EADError("size_histogram needs counts ≥ 0 and at least one positive count")
        if not 1 <= self.timesteps <= MAX_TIMESTEPS:
            raise EADError(f"timesteps T must be in [1, {MAX_TIMESTEPS:,}], got {self.timesteps:,}")
        self.context_quantiles = {int(k): [list(map(float, q)) for q in v] for k, v in self.context_quantiles.items()}
        if not len(self.context) == len(self.context_mean) == len(self.context_mad):
            raise EADError("context, context_mean and context_mad must have one entry per property")
        if any(not m > 0 for m in self.context_mad):
            raise EADError("context_mad must be positive")
        check_window(self.window, self.timesteps)
        if self.layers < 1 or self.hidden < 1:
            raise EADError("layers and hidden must be positive")
        check_network_options(self.target, self.rbf)
        if self.size_mode not in SIZE_MODES:
            raise EADError(f"unknown size mode {self.size_mode!r}; choose from {', '.join(SIZE_MODES)}")
        if ABSENT in self.atom_types:
            raise EADError("atom_types lists real elements; the absent type of size_mode 'dummy' is implied")
        if self.size_mode == "dummy" and self.max_atoms < 1:
            raise EADError("size_mode 'dummy' needs max_atoms ≥ 1 (the slots per molecule)")
        if not 0 <= self.absent_bias <= self.timesteps:
            raise EADError(f"absent_bias must be in [0, T], got {self.absent_bias}")

    @classmethod
    def from_preset(cls, preset: str, **overrides) -> "ModelConfig":
        if preset not in PRESETS:
            raise EADError(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
        layers, hidden = PRESETS[preset]
        return cls(preset=preset, layers=layers, hidden=hidden, **overrides)

    @property
    def dummy(self) -> bool:
        return self.size_mode == "dummy"

    @property
    def feature_types(self) -> tuple[int, ...]:
        """The types the network's one-hot encodes: atom_types, then ABSENT in dummy mode."""
        return self.atom_types + ((ABSENT,) if self.dummy else ())

    @property
    def num_features(self) -> int:
        return len(self.feature_types) + int(self.include_charges)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["size_histogram"] = {str(k): v for k, v in self.size_histogram.items()}
        d["context_quantiles"] = {str(k): v for k, v in self.context_quantiles.items()}
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        """A config from its JSON, each field's type and range checked (MODEL_RANGES)."""
        return cls(**check_json(d, dataclass_schema(cls), "model config", MODEL_RANGES))

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2))

    @classmethod
    def load(cls, path: Path) -> "ModelConfig":
        return cls.from_dict(read_model_meta(path)["model"])


# ranges of ModelConfig's fields as read from JSON (types come from the annotations)
MODEL_RANGES = {
    "atom_types": (1, 118), "size_histogram": (1, MAX_MOLECULE_ATOMS), "layers": (1, 1000),
    "hidden": (1, 2**20), "coords_range": (1e-6, 1e6), "norm_constant": (0.0, 1e6),
    "normalization_factor": (1e-6, 1e6), "timesteps": (1, MAX_TIMESTEPS), "noise_precision": (1e-12, 0.1),
    "window": (0, MAX_TIMESTEPS), "max_atoms": (0, MAX_MOLECULE_ATOMS), "absent_bias": (0, MAX_TIMESTEPS),
    "rbf": (0, 256),
    "context_quantiles": (1, MAX_MOLECULE_ATOMS),
}
# config.json around the model config
MODEL_META = {"format": "str", "version": "int", "ead_version": "str", "model": "dict",
              "sampler_defaults": "dict | None", "card": "dict | None"}


def read_model_meta(path: Path) -> dict:
    """The JSON of a model folder's config.json (format, model config, sampler defaults, card),
    checked to be one: the single reader for every place that opens a model."""
    d = read_json(path, "model config")
    if not isinstance(d, dict) or d.get("format") != "ead-model" or not isinstance(d.get("model"), dict):
        raise EADError(f"{path} is not an EAD model config")
    return check_json(d, MODEL_META, f"{path}", unknown="ignore")


def trained_with_fragments(card: dict | None) -> bool:
    """Whether a model card says training held fragments at t = 0 (`ead train --fragment-share`,
    recorded as card["recipe"]["fragment_share"]): growing a fragment is then in the model's
    distribution (docs/fragments.md)."""
    recipe = (card or {}).get("recipe")
    return isinstance(recipe, dict) and bool(recipe.get("fragment_share"))
