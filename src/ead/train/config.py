"""A training run's settings (`ead train`'s flags take their defaults from here)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..data.batch import MoleculeSet
from ..data.properties import context_stats, property_columns, size_quantiles
from ..diffusion.loss import LOSS_WEIGHTS, TIME_SAMPLINGS
from ..errors import EADError
from ..model.config import (DEFAULT_WINDOW, MAX_MOLECULE_ATOMS, PRESETS, SIZE_MODES, ModelConfig,
                            check_network_options, check_window, training_atoms_limit)
from .log import summary_writer


LR_SCHEDULES = ("constant", "cosine")


@dataclass
class TrainConfig:
    run_dir: str = "runs/ead"
    data: str = "qm9"                 # "qm9", a path to an SDF / XYZ file or folder, or EDM's GEOM .npy
    remove_h: bool = False
    preset: str = "small"
    layers: int | None = None
    hidden: int | None = None
    window: int = DEFAULT_WINDOW      # EAD's C; 0 = EDM
    noise_schedule: str = "polynomial_2"
    timesteps: int = 1000
    batch_size: int = 64
    lr: float = 3e-4                  # with warmup_steps 250: the recipe screen's winner (docs/recipe.md); EDM: 1e-4, 0
    weight_decay: float = 1e-12
    ema_decay: float = 0.999
    clip_grad: bool = True            # EDM's adaptive clipping: 1.5·mean + 2·std of the last 50 norms
    max_steps: int = 100_000
    max_hours: float | None = None    # stop (with a checkpoint) at this much training time in all (resumes count)
    ckpt_every: int = 500
    log_every: int = 50
    val_every: int = 2000
    val_molecules: int = 1000
    sample_every: int = 0             # >0: sample and measure stability every N steps
    sample_molecules: int = 100
    sample_steps: int = 100
    seed: int = 0
    bucket: bool = False              # batches of similar-sized molecules
    accelerator: str = "auto"
    devices: int = 1
    num_nodes: int = 1
    precision: str = "auto"           # bf16-mixed on CPUs with bfloat16 units, else 32-true (device.training_precision)
    threads: int | None = None        # CPU threads (torch.set_num_threads)
    quiet: bool = False
    limit_molecules: int | None = None  # train on the first N training molecules (tests, overfitting)
    init_from: str | None = None      # start from another run's last checkpoint (or a checkpoint folder)
    keep_checkpoints: int = 2         # checkpoints kept on disk; 0 = all (studies at equal steps)
    condition: tuple[str, ...] = ()   # properties the model is conditioned on (docs/method.md §9), e.g. ("alpha",)
    condition_split: str = "second"   # QM9 molecules a conditional model trains on: EDM's "second" half
                                      # of the training split (the "first" trains the property
                                      # predictor), or "all"
    include_charges: bool | None = None  # the atomic-number feature Z/10; None = the dataset's EDM choice
                                      # (QM9 and user files: on; GEOM-Drugs: off, as EDM trains it)
    size_mode: str = "prior"          # "prior": sizes from p(M) (EDM); "dummy": absent-atom slots (docs/method.md §8)
    filter_size: int | None = None    # train and validate only on molecules of ≤ N atoms (EDM's --filter_molecule_size)
    tensorboard: bool = False         # also write log.csv's rows as TensorBoard scalars to run_dir/tensorboard
    max_atoms: int | None = None      # dummy mode: slots per molecule (default: the largest molecule in the data)
    absent_bias: int | None = None    # dummy mode: absent atoms' time shift in training (default: the window C)
    # the recipe (docs/recipe.md); every default is EDM's but lr and warmup_steps, which won the screen
    lr_schedule: str = "constant"     # "constant" | "cosine": from lr down to 0 at max_steps
    warmup_steps: int = 250           # linear warm-up from 0 to lr over the first N steps
    loss_weight: str = "uniform"      # "uniform" (EDM's ε-loss) | "min-snr": min(SNR, γ)/SNR per atom
    min_snr_gamma: float = 5.0        # γ of "min-snr"
    time_sampling: str = "uniform"    # "uniform": t* ~ U{0..T} | "low-noise": t* = ⌊(T+1)·u²⌋
    target: str = "eps"               # what the network predicts: "eps" (EDM) | "x0" | "v" | "x0-types"
    rbf: int = 0                      # > 0: radial-basis features of each distance beside d² (e.g. 16)
    self_condition: bool = False      # the network reads its previous clean estimate (Chen et al. 2022)
    compile: bool = False             # torch.compile the denoiser for training (checked against eager first)
    max_molecule_atoms: int | None = None  # skip training molecules of more atoms (counted on stderr);
                                      # None = the preset's limit (model/config.py training_atoms_limit)
    allow_changes: bool = False       # resume with changed training settings (each logged at its step)
    fragment_share: float = 0.0       # share of molecules with a connected set of atoms held at t = 0 as
                                      # context, out of the loss (docs/fragments.md); 0 = off

    def lr_at(self, step: int) -> float:
        """The learning rate of step `step` (0-based): linear warm-up, then constant or a cosine
        decay to 0 at max_steps. A function of the step only, so a resumed run keeps the curve."""
        if self.warmup_steps and step < self.warmup_steps:
            return self.lr * (step + 1) / self.warmup_steps
        if self.lr_schedule == "cosine":
            done = min(1.0, (step - self.warmup_steps) / max(1, self.max_steps - self.warmup_steps))
            return self.lr * 0.5 * (1.0 + math.cos(math.pi * done))
        return self.lr

    def molecule_atoms_limit(self) -> int:
        """The largest training molecule: --max-molecule-atoms, else what the network's width allows."""
        if self.max_molecule_atoms is not None:
            return self.max_molecule_atoms
        hidden = self.hidden or PRESETS.get(self.preset, (0, 128))[1]
        return training_atoms_limit(hidden)

    def model_config(self, data: MoleculeSet, atom_types, dataset: str, largest: int = 0) -> ModelConfig:
        """The model's config for training data `data`; `largest` = the largest molecule of every
        split (the default number of slots of a dummy-atom model)."""
        if self.preset not in PRESETS:
            raise EADError(f"unknown preset {self.preset!r}; choose from {', '.join(PRESETS)}")
        layers, hidden = PRESETS[self.preset]
        context = {}
        if self.condition:
            values = property_columns(data, self.condition)
            mean, mad = context_stats(values)
            context = dict(context=tuple(self.condition), context_mean=mean, context_mad=mad,
                           context_quantiles=size_quantiles(data.num_atoms, values))
        charges = self.include_charges if self.include_charges is not None else not is_geom_file(self.data)
        return ModelConfig(dataset=dataset, atom_types=tuple(atom_types), remove_h=self.remove_h,
                           include_charges=charges,
                           size_histogram=data.size_histogram(), preset=self.preset,
                           layers=self.layers or layers, hidden=self.hidden or hidden,
                           noise_schedule=self.noise_schedule, timesteps=self.timesteps,
                           window=self.window, target=self.target, rbf=self.rbf,
                           self_condition=self.self_condition, **context, **self._size_options(data, largest))

    def _size_options(self, data: MoleculeSet, largest: int) -> dict:
        if self.size_mode != "dummy":
            return {}
        slots = self.max_atoms or max(int(data.num_atoms.max()), largest)
        bias = self.window if self.absent_bias is None else self.absent_bias
        return dict(size_mode="dummy", max_atoms=slots, absent_bias=bias)

    def check(self) -> None:
        """Fail on a bad setting before any data loads (the model's own fields are ModelConfig's to check)."""
        cfg = self
        if cfg.batch_size < 1:
            raise EADError("batch size must be ≥ 1")
        if not cfg.lr > 0 or not math.isfinite(cfg.lr):
            raise EADError("learning rate must be a positive number")
        if not 0.0 <= cfg.ema_decay < 1.0:
            raise EADError("EMA decay must be in [0, 1)")
        if cfg.keep_checkpoints < 0:
            raise EADError("keep-checkpoints must be ≥ 0 (0 keeps all)")
        if cfg.max_steps < 0 or cfg.ckpt_every < 1 or cfg.log_every < 1:
            raise EADError("max-steps ≥ 0, ckpt-every ≥ 1 and log-every ≥ 1 are required")
        check_window(cfg.window, cfg.timesteps)
        if cfg.condition_split not in ("first", "second", "all"):
            raise EADError(f"condition split must be first, second or all, got {cfg.condition_split!r}")
        if len(set(cfg.condition)) != len(cfg.condition):
            raise EADError("a property is named twice in --condition")
        if cfg.size_mode not in SIZE_MODES:
            raise EADError(f"unknown size mode {cfg.size_mode!r}; choose from {', '.join(SIZE_MODES)}")
        if cfg.size_mode != "dummy" and (cfg.max_atoms is not None or cfg.absent_bias is not None):
            raise EADError("--max-atoms and --absent-bias belong to --size-mode dummy")
        if cfg.max_atoms is not None and cfg.max_atoms < 1:
            raise EADError("--max-atoms must be ≥ 1")
        if cfg.absent_bias is not None and not 0 <= cfg.absent_bias <= cfg.timesteps:
            raise EADError(f"--absent-bias must be in [0, T = {cfg.timesteps}]")
        if cfg.filter_size is not None and cfg.filter_size < 1:
            raise EADError("--filter-size must be ≥ 1")
        for name, value, choices in (("lr schedule", cfg.lr_schedule, LR_SCHEDULES),
                                     ("loss weight", cfg.loss_weight, LOSS_WEIGHTS),
                                     ("time sampling", cfg.time_sampling, TIME_SAMPLINGS)):
            if value not in choices:
                raise EADError(f"unknown {name} {value!r}; choose from {', '.join(choices)}")
        if not 0.0 <= cfg.fragment_share <= 1.0:
            raise EADError(f"--fragment-share must be in [0, 1], got {cfg.fragment_share}")
        if cfg.max_molecule_atoms is not None and not 1 <= cfg.max_molecule_atoms <= MAX_MOLECULE_ATOMS:
            raise EADError(f"--max-molecule-atoms must be in [1, {MAX_MOLECULE_ATOMS}]")
        check_network_options(cfg.target, cfg.rbf)
        if cfg.warmup_steps < 0:
            raise EADError("--warmup-steps must be ≥ 0")
        if not cfg.min_snr_gamma > 0 or not math.isfinite(cfg.min_snr_gamma):
            raise EADError("--min-snr-gamma must be a positive number")
        if cfg.tensorboard:
            summary_writer()   # fail before the data loads, not at the first log row


def is_geom_file(data: str) -> bool:
    """EDM's processed GEOM-Drugs array (data/geom.py) rather than an SDF/XYZ file or folder."""
    return str(data).lower().endswith(".npy")
