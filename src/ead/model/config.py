"""Configuration as plain dataclasses, saved as JSON beside the weights (docs/design.md).

Every choice the paper leaves open is a field here, so it can be changed and measured.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from ..data.elements import ABSENT, QM9_TYPES
from ..errors import EADError

SIZE_MODES = ("prior", "dummy")
# EAD's training window C (docs/method.md §4), the one default for training and the asynchronous
# samplers: per-atom times within ±C of a shared baseline; 0 = EDM.
DEFAULT_WINDOW = 9


def check_window(window: int, timesteps: int) -> None:
    """The window C must leave room for the baseline: 0 ≤ C ≤ T/2."""
    if window < 0 or 2 * window > timesteps:
        raise EADError(f"window C must be in [0, T/2], got {window}")

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
    context_quantiles: dict[int, list] = field(default_factory=dict)
    # denoiser (docs/method.md §5)
    preset: str = "small"
    layers: int = 6
    hidden: int = 128
    attention: bool = True
    tanh: bool = True
    coords_range: float = 15.0
    norm_constant: float = 1.0
    normalization_factor: float = 1.0
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
        self.atom_types = tuple(int(z) for z in self.atom_types)
        self.context = tuple(self.context)
        self.context_mean = tuple(float(v) for v in self.context_mean)
        self.context_mad = tuple(float(v) for v in self.context_mad)
        self.size_histogram = {int(k): int(v) for k, v in self.size_histogram.items()}
        self.context_quantiles = {int(k): [list(map(float, q)) for q in v] for k, v in self.context_quantiles.items()}
        if not len(self.context) == len(self.context_mean) == len(self.context_mad):
            raise EADError("context, context_mean and context_mad must have one entry per property")
        if any(not m > 0 for m in self.context_mad):
            raise EADError("context_mad must be positive")
        check_window(self.window, self.timesteps)
        if self.layers < 1 or self.hidden < 1:
            raise EADError("layers and hidden must be positive")
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
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise EADError(f"unknown model config fields {sorted(unknown)}")
        return cls(**d)

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2))

    @classmethod
    def load(cls, path: Path) -> "ModelConfig":
        return cls.from_dict(read_model_meta(path)["model"])


def read_model_meta(path: Path) -> dict:
    """The JSON of a model folder's config.json (format, model config, sampler defaults, card),
    checked to be one: the single reader for every place that opens a model."""
    try:
        d = json.loads(Path(path).read_text())
    except (FileNotFoundError, IsADirectoryError):
        raise EADError(f"missing model config {path}") from None
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise EADError(f"corrupt model config {path}: {e}") from None
    if not isinstance(d, dict) or d.get("format") != "ead-model" or not isinstance(d.get("model"), dict):
        raise EADError(f"{path} is not an EAD model config")
    return d
