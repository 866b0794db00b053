"""Training (Algorithm 1) on Lightning Fabric: one process per device, DDP across GPUs and nodes,
plain loop below (nanoGPT-style), resumable exactly.

Exact resume: the batch order is a function of (seed, epoch) and the noise of (seed, step, rank),
so a run restored from a checkpoint at step k continues with the very batches and noise it would
have seen. Checkpoints are safetensors (model, EMA, AdamW moments) + JSON (counters, gradient-norm
history, configs), written into a fresh folder and then published by atomically rewriting a
pointer file: a run killed at any moment resumes from its last complete checkpoint.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import shutil
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import EADError
from .config import PRESETS, SIZE_MODES, ModelConfig
from .data.batch import FeatureEncoder, MoleculeSet, SizeBucketBatches, collate
from .data.elements import ABSENT
from .data.properties import context_stats, normalise, property_columns, record_values, size_quantiles
from .diffusion.noise import NoiseSchedule
from .diffusion.schedules import TrainingWindow
from .pipeline import EAD, build_denoiser, has_fast_bf16, write_atomic


@dataclass
class TrainConfig:
    run_dir: str = "runs/ead"
    data: str = "qm9"                 # "qm9", a path to an SDF / XYZ file or folder, or EDM's GEOM .npy
    remove_h: bool = False
    preset: str = "small"
    layers: int | None = None
    hidden: int | None = None
    window: int = 9                   # EAD's C; 0 = EDM
    noise_schedule: str = "polynomial_2"
    timesteps: int = 1000
    batch_size: int = 64
    lr: float = 1e-4
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
    precision: str = "32-true"
    threads: int | None = None        # CPU threads (torch.set_num_threads)
    quiet: bool = False
    limit_molecules: int | None = None  # train on the first N training molecules (tests, overfitting)
    init_from: str | None = None      # start from another run's last checkpoint (or a checkpoint folder)
    keep_checkpoints: int = 2         # checkpoints kept on disk; 0 = all (studies at equal steps)
    condition: tuple[str, ...] = ()   # properties the model is conditioned on (method.md §9), e.g. ("alpha",)
    condition_split: str = "second"   # QM9 molecules a conditional model trains on: EDM's "second" half
                                      # of the training split (the "first" trains the property
                                      # predictor), or "all"
    include_charges: bool | None = None  # the atomic-number feature Z/10; None = the dataset's EDM choice
                                      # (QM9 and user files: on; GEOM-Drugs: off, as EDM trains it)
    size_mode: str = "prior"          # "prior": sizes from p(M) (EDM); "dummy": absent-atom slots (method.md §8)
    filter_size: int | None = None    # train and validate only on molecules of ≤ N atoms (EDM's --filter_molecule_size)
    tensorboard: bool = False         # also write log.csv's rows as TensorBoard scalars to run_dir/tensorboard
    max_atoms: int | None = None      # dummy mode: slots per molecule (default: the largest molecule in the data)
    absent_bias: int | None = None    # dummy mode: absent atoms' time shift in training (default: the window C)

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
                           window=self.window, **context, **self._size_options(data, largest))

    def _size_options(self, data: MoleculeSet, largest: int) -> dict:
        if self.size_mode != "dummy":
            return {}
        slots = self.max_atoms or max(int(data.num_atoms.max()), largest)
        bias = self.window if self.absent_bias is None else self.absent_bias
        return dict(size_mode="dummy", max_atoms=slots, absent_bias=bias)


# ------------------------------------------------------------------------------------ data
def load_data(cfg: TrainConfig):
    """(train, valid, atom_types, dataset name) for QM9 or a user's molecule file/folder."""
    from .data.elements import QM9_NO_H_TYPES, QM9_TYPES

    if cfg.data == "qm9":
        from .data.qm9 import qm9_half, qm9_split

        train = qm9_half(cfg.condition_split if cfg.condition else "all", cfg.remove_h, verbose=not cfg.quiet)
        valid = qm9_split("valid", cfg.remove_h)
        types = QM9_NO_H_TYPES if cfg.remove_h else QM9_TYPES
        name = "qm9"
    elif is_geom_file(cfg.data):
        from .data.elements import GEOM_TYPES
        from .data.geom import load_geom_splits

        if cfg.condition:
            raise EADError("conditioning on GEOM-Drugs is not supported (EDM's GEOM files carry no properties)")
        sets, split = load_geom_splits(cfg.data, ("train", "valid"), verbose=not cfg.quiet)
        train, valid = sets["train"], sets["valid"]
        types = GEOM_TYPES
        if cfg.remove_h:
            train, valid = train.without_hydrogens(), valid.without_hydrogens()
            types = tuple(z for z in GEOM_TYPES if z != 1)
        train.validate(types)
        valid.validate(types)
        name = "geom-drugs" if split == "edm" else f"geom-drugs-{split}"
    else:
        from .data.files import read_molecules

        read = read_molecules(cfg.data, strict=True)
        mols = MoleculeSet.from_list(read.molecules)
        if cfg.condition:   # a user's properties: numeric SD data fields of every record
            mols.properties = record_values(read.properties, cfg.condition, "property to condition on")
            mols.property_names = tuple(cfg.condition)
        if cfg.remove_h:
            mols = mols.without_hydrogens()
        types = tuple(sorted(int(z) for z in np.unique(mols.atomic_numbers)))
        mols.validate(types)
        perm = np.random.default_rng(cfg.seed).permutation(len(mols))
        n_val = max(1, len(mols) // 20) if len(mols) > 1 else 0
        valid = mols.subset(perm[:n_val]) if n_val else mols
        train = mols.subset(perm[n_val:]) if n_val else mols
        name = Path(cfg.data).name
    if cfg.filter_size:   # counted as trained: after --remove-h
        train, valid = (m.subset(np.flatnonzero(m.num_atoms <= cfg.filter_size)) for m in (train, valid))
        if len(train) == 0 or len(valid) == 0:
            raise EADError(f"no {'training' if len(train) == 0 else 'validation'} molecule of {cfg.data} "
                           f"has ≤ {cfg.filter_size} atoms (--filter-size)")
    if cfg.limit_molecules:
        train = train.subset(np.arange(min(cfg.limit_molecules, len(train))))
    if len(train) < cfg.batch_size:
        cfg.batch_size = len(train)
    return train, valid, types, name


def is_geom_file(data: str) -> bool:
    """EDM's processed GEOM-Drugs array (data/geom.py) rather than an SDF/XYZ file or folder."""
    return str(data).lower().endswith(".npy")


CONTEXT_FIELDS = ("context", "context_mean", "context_mad", "context_quantiles")
SIZE_FIELDS = ("size_mode", "max_atoms", "absent_bias")


def _init_widening(saved: ModelConfig, new: ModelConfig) -> list[tuple[int, int]] | None:
    """How an --init-from checkpoint of config `saved` becomes a network of config `new` by new
    zero input columns: [(position, count), …] in the order to insert them, or None when the two
    differ in anything else. Two conversions (and both at once): an unconditional model made
    conditional (context columns appended), and a p(M) model made a dummy-atom one (an absent
    one-hot column after the real types). p(M) may differ: it comes from the new run's molecules."""
    keep = ("size_histogram",)
    if not saved.context and new.context:
        keep += CONTEXT_FIELDS
    if not saved.dummy and new.dummy:
        keep += SIZE_FIELDS
    if len(keep) == 1 or dataclasses.replace(new, **{f: getattr(saved, f) for f in keep}) != saved:
        return None
    widen = []
    if not saved.dummy and new.dummy:
        widen.append((len(saved.atom_types), 1))
    if not saved.context and new.context:
        widen.append((saved.num_features + 1, len(new.context)))   # after the features and the time
    return widen


def _widen_inputs(tensors: dict, at: int, count: int) -> dict:
    """Checkpoint tensors with `count` zero input columns inserted at input position `at`: in the
    input embedding's columns and the output projection's rows (it mirrors the inputs), in the
    weights, the EMA and AdamW's moments. The widened network computes what the old one did as long
    as the new inputs are zero, and learns to use them."""
    out = dict(tensors)
    for key, v in tensors.items():
        name = key.split(".", 1)[1]
        if name.startswith("egnn.embedding.weight") and v.dim() == 2:
            out[key] = torch.cat([v[:, :at], v.new_zeros(v.shape[0], count), v[:, at:]], 1)
        elif name.startswith(("egnn.embedding_out.weight", "egnn.embedding_out.bias")) and v.dim() >= 1:
            out[key] = torch.cat([v[:at], v.new_zeros((count,) + v.shape[1:]), v[at:]], 0)
    return out


def context_array(molecules: MoleculeSet, config: ModelConfig) -> np.ndarray | None:
    """The network's context per molecule, [M, C] normalised, for a conditional model (else None)."""
    if not config.context:
        return None
    return normalise(config, property_columns(molecules, config.context))


# ------------------------------------------------------------------------------------ state
class GradNormHistory:
    """EDM's adaptive gradient clipping: threshold = 1.5·mean + 2·std of the last 50 norms
    (seeded with 3000, as EDM); a clipped step records the threshold, not its own norm.

    The history lives on the training device as a ring buffer, so that a step never waits for the
    GPU to hand a norm back (the count of values is known on the host); `values` (oldest first)
    reads it back for checkpoints."""

    def __init__(self, values=(3000.0,), maxlen: int = 50, device="cpu"):
        vals = [float(v) for v in values][-maxlen:]
        self.maxlen = maxlen
        self.buf = torch.zeros(maxlen, dtype=torch.float64, device=device)
        self.buf[: len(vals)] = torch.tensor(vals, dtype=torch.float64)
        self.n = len(vals)      # values held
        self.head = 0           # once full: the slot of the oldest value

    def to(self, device) -> "GradNormHistory":
        self.buf = self.buf.to(device)
        return self

    def threshold(self) -> torch.Tensor:
        v = self.buf[: self.n]
        return 1.5 * v.mean() + 2 * v.std(correction=0)

    def record(self, norm: torch.Tensor, threshold: torch.Tensor) -> None:
        value = torch.minimum(norm.to(torch.float64), threshold)
        if self.n < self.maxlen:
            self.buf[self.n] = value
            self.n += 1
        else:
            self.buf[self.head] = value
            self.head = (self.head + 1) % self.maxlen

    @property
    def values(self) -> list[float]:
        v = self.buf[: self.n].tolist()
        return v[self.head:] + v[: self.head]


def clip_grad_norm_(params, max_norm: torch.Tensor) -> torch.Tensor:
    """torch.nn.utils.clip_grad_norm_ with the limit as a tensor (no host round trip): scale the
    gradients by min(1, max_norm / (‖g‖ + 1e-6)); returns ‖g‖ (as a 0-d tensor)."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros((), device=max_norm.device)
    total = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
    coef = torch.clamp(max_norm.to(total.dtype) / (total + 1e-6), max=1.0)
    torch._foreach_mul_(grads, coef)
    return total


def _ema_update(ema: dict[str, torch.Tensor], model: torch.nn.Module, decay: float) -> None:
    with torch.no_grad():
        params = dict(model.named_parameters())
        names = list(ema)
        torch._foreach_lerp_([ema[k] for k in names], [params[k].detach() for k in names], 1.0 - decay)


def _step_generator(device, seed: int, step: int, rank: int) -> torch.Generator:
    g = torch.Generator(device)
    g.manual_seed((seed * 1_000_003 + step) * 64 + rank)
    return g


def diffusion_loss(model, noise: NoiseSchedule, window: TrainingWindow, batch, gen) -> torch.Tensor:
    """Algorithm 1: per-atom times, ε-prediction, mean over atoms and channels (EDM's l2)."""
    B = batch.num_molecules
    absent = None
    if window.absent_bias and batch.atomic_numbers is not None:
        absent = batch.atomic_numbers == ABSENT
    t = window.sample(batch.mol, B, gen, absent)
    z_x, z_h, eps_x, eps_h = noise.add_noise(batch.x, batch.h, t, batch.mol, B, gen)
    pred_x, pred_h = model(z_x, z_h, t.to(z_x.dtype) / noise.timesteps, batch.mol, B,
                           batch.edge_index, batch.context)
    sq = (pred_x - eps_x).pow(2).sum() + (pred_h - eps_h).pow(2).sum()
    return sq / (batch.x.shape[0] * (3 + batch.h.shape[1]))


def _optimizer_tensors(opt: torch.optim.Optimizer, model: torch.nn.Module) -> dict[str, torch.Tensor]:
    out = {}
    names = {id(p): n for n, p in model.named_parameters()}
    for group in opt.param_groups:
        for p in group["params"]:
            for k, v in opt.state.get(p, {}).items():
                if torch.is_tensor(v):
                    out[f"optim.{names[id(p)]}.{k}"] = v.detach().cpu().contiguous()
    return out


def _load_optimizer_tensors(opt, model, tensors: dict[str, torch.Tensor]) -> None:
    """Restore AdamW's state; each moment goes to its parameter's device (call it after the model
    has been placed: restoring on the CPU before a move to the GPU left them behind once), Adam's
    step counter stays on the CPU where Adam keeps it."""
    for name, p in model.named_parameters():
        prefix = f"optim.{name}."
        for key, v in tensors.items():
            if key.startswith(prefix):   # step, exp_avg, exp_avg_sq, max_exp_avg_sq (amsgrad)
                k = key[len(prefix):]
                opt.state[p][k] = v if k == "step" else v.to(p.device)


class RunClock:
    """A run's training time across resumes (`elapsed` seconds: the checkpoint's plus this
    process's), its --max-hours, and the stop request of SIGTERM / SIGINT: the handlers set
    `stopped`, the loop finishes its step and checkpoints. `restore()` puts the old handlers back."""

    def __init__(self, elapsed: float = 0.0, max_hours: float | None = None):
        self._base, self._t0, self.max_hours = float(elapsed), time.time(), max_hours
        self.stopped = False
        self._old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}

    def _on_signal(self, signum, frame):
        self.stopped = True

    @property
    def elapsed(self) -> float:
        return self._base + (time.time() - self._t0)

    def out_of_time(self) -> bool:
        return self.max_hours is not None and self.elapsed > self.max_hours * 3600

    def keep_going(self) -> bool:
        return not self.stopped and not self.out_of_time()

    def restore(self) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)


class Checkpointer:
    """run_dir/checkpoints/step-N/{state.safetensors,state.json} + run_dir/checkpoints/latest;
    keeps the newest `keep` checkpoints (0 = all)."""

    def __init__(self, run_dir: Path, keep: int = 2):
        self.root = Path(run_dir) / "checkpoints"
        self.keep = keep

    def latest(self) -> Path | None:
        ptr = self.root / "latest"
        if not ptr.exists():
            return None
        path = self.root / ptr.read_text().strip()
        if not (path / "state.json").exists():
            raise EADError(f"checkpoint pointer {ptr} names a missing checkpoint {path}")
        return path

    def save(self, step: int, tensors: dict, meta: dict) -> Path:
        from safetensors.torch import save_file

        self.root.mkdir(parents=True, exist_ok=True)
        final = self.root / f"step-{step:08d}"
        tmp = self.root / f".step-{step:08d}.tmp{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        save_file(tensors, str(tmp / "state.safetensors"), metadata={"step": str(step)})
        (tmp / "state.json").write_text(json.dumps(meta, indent=1))
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        write_atomic(self.root / "latest", lambda p: p.write_text(final.name))
        olds = sorted(p for p in self.root.glob("step-*") if p.is_dir() and p != final)
        for p in olds[: max(0, len(olds) - (self.keep - 1))] if self.keep else []:
            shutil.rmtree(p, ignore_errors=True)
        return final

    @staticmethod
    def load(path: Path) -> tuple[dict, dict]:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            meta = json.loads((path / "state.json").read_text())
            tensors = load_file(str(path / "state.safetensors"))
        except (OSError, json.JSONDecodeError, SafetensorError, ValueError) as e:
            raise EADError(f"corrupt checkpoint {path}: {e}") from None
        if meta.get("format") != "ead-train-state":
            raise EADError(f"{path} is not an EAD training checkpoint")
        return tensors, meta


# ------------------------------------------------------------------------------------ loop
def train(cfg: TrainConfig) -> dict:
    """Train (or resume) the run in cfg.run_dir. Returns a summary dict."""
    from lightning.fabric import Fabric

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    _check(cfg)
    run_dir = Path(cfg.run_dir)
    ckpt = Checkpointer(run_dir, keep=cfg.keep_checkpoints)
    latest = ckpt.latest()
    resumed_meta, init_meta = None, None
    if latest is not None:   # our own checkpoint wins: a restarted --init-from run resumes itself
        tensors, resumed_meta = Checkpointer.load(latest)
    elif cfg.init_from:
        tensors, init_meta = Checkpointer.load(_checkpoint_path(cfg.init_from))

    fabric = Fabric(accelerator=cfg.accelerator, devices=cfg.devices, num_nodes=cfg.num_nodes,
                    precision=cfg.precision)
    fabric.launch()
    rank, world = fabric.global_rank, fabric.world_size
    slow = precision_warning(cfg.precision, fabric.device)
    if slow and rank == 0:
        print(slow, file=sys.stderr)
    train_set, valid_set, types, dataset = load_data(cfg)
    model_cfg = cfg.model_config(train_set, types, dataset, largest=int(valid_set.num_atoms.max()))
    if model_cfg.dummy:   # every molecule becomes max_atoms slots; p(M) stays the real sizes'
        train_set = train_set.with_absent(model_cfg.max_atoms)
        valid_set = valid_set.with_absent(model_cfg.max_atoms)
    for meta, where, hint in ((resumed_meta, run_dir, "use a new --run-dir"),
                              (init_meta, cfg.init_from, "give the same preset, window and data")):
        if meta is None:
            continue
        saved = ModelConfig.from_dict(meta["model_config"])
        widen = _init_widening(saved, model_cfg) if meta is init_meta else None
        if widen is not None:
            for at, count in widen:
                tensors = _widen_inputs(tensors, at, count)
            continue
        if saved != model_cfg:
            diff = [f.name for f in dataclasses.fields(ModelConfig)
                    if getattr(saved, f.name) != getattr(model_cfg, f.name)]
            raise EADError(f"{where} holds a run with another model/data config ({', '.join(diff)}); {hint}")

    torch.manual_seed(cfg.seed)  # initial weights
    model = build_denoiser(model_cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, amsgrad=True)
    ema = {k: v.detach().clone() for k, v in model.named_parameters()}
    gradnorms = GradNormHistory()
    step, elapsed = 0, 0.0
    lineage: list[dict] = []   # earlier runs this one continues (init_from), oldest first
    source = resumed_meta or init_meta
    if source is not None:
        model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        ema = {k[4:]: v for k, v in tensors.items() if k.startswith("ema.")}
        gradnorms = GradNormHistory(source["gradnorms"])
        lineage = list(source.get("lineage", []))
        for g in opt.param_groups:
            g["lr"] = cfg.lr
    if resumed_meta is not None:
        step, elapsed = resumed_meta["step"], resumed_meta["elapsed_s"]
    elif init_meta is not None:
        lineage.append(_segment(init_meta, str(cfg.init_from)))
    model, opt = fabric.setup(model, opt)
    raw_model = model.module if hasattr(model, "module") else model   # Fabric's wrappers unwrapped
    raw_opt = opt.optimizer if hasattr(opt, "optimizer") else opt
    if source is not None:
        _load_optimizer_tensors(opt, raw_model, tensors)
    device = fabric.device
    ema = {k: v.to(device) for k, v in ema.items()}
    gradnorms.to(device)

    encoder = FeatureEncoder(model_cfg.feature_types, model_cfg.include_charges)
    train_context = context_array(train_set, model_cfg)
    noise = NoiseSchedule(model_cfg.noise_schedule, model_cfg.timesteps, model_cfg.noise_precision)
    window = TrainingWindow(model_cfg.timesteps, model_cfg.window, model_cfg.absent_bias)
    order = SizeBucketBatches(train_set.num_atoms, cfg.batch_size, cfg.seed, cfg.bucket, rank, world)
    steps_per_epoch = len(order)
    if steps_per_epoch == 0:
        raise EADError("not enough training molecules for one batch per device")

    log_path = run_dir / "log.csv"
    if rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        _truncate_log(log_path, step)
        (run_dir / "train_config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=2))
    logger = _CsvLog(log_path, run_dir / "tensorboard" if cfg.tensorboard else None, step) if rank == 0 else None

    def save():
        check_finite()   # never write a checkpoint of weights a NaN has reached
        if rank != 0:
            return
        tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in raw_model.state_dict().items()}
        tensors.update({f"ema.{k}": v.detach().cpu().contiguous() for k, v in ema.items()})
        tensors.update(_optimizer_tensors(opt, raw_model))
        meta = {"format": "ead-train-state", "step": step, "elapsed_s": clock.elapsed,
                "gradnorms": list(gradnorms.values), "model_config": model_cfg.to_dict(),
                "train_config": dataclasses.asdict(cfg), "device": _device_name(device),
                "lineage": lineage}
        ckpt.save(step, tensors, meta)
        export(run_dir / "model")

    def ema_model() -> EAD:
        meta = {"step": step, "elapsed_s": clock.elapsed, "train_config": dataclasses.asdict(cfg),
                "device": _device_name(device), "lineage": lineage}
        return _ema_pipeline(model_cfg, ema, meta)

    def export(path: Path):
        ema_model().save_pretrained(path)

    from tqdm import tqdm

    bar = tqdm(total=cfg.max_steps, initial=step, disable=cfg.quiet or rank != 0, dynamic_ncols=True,
               desc="train")
    clock = RunClock(elapsed, cfg.max_hours)
    # nothing in a step reads a value back from the device (a GPU runs ahead of the host):
    # the loss is summed and checked for NaN/inf on the device, and read at log and save time
    def zero():
        return torch.zeros((), dtype=torch.float64, device=device)

    run_loss, run_n, last_log = zero(), 0, time.time()
    finite, norm, first_unchecked = torch.ones((), dtype=torch.bool, device=device), None, step + 1

    def check_finite():   # every rank calls it at the same steps (log rows, checkpoints)
        nonlocal first_unchecked
        ok = finite if world == 1 else fabric.all_reduce(finite.float(), reduce_op="min") > 0
        if not bool(ok):
            raise EADError(f"loss became NaN or infinite between steps {first_unchecked} and {step}; "
                           "lower --lr (the last checkpoint is untouched)")
        first_unchecked = step + 1
    summary = {"start_step": step}
    try:
        while step < cfg.max_steps and clock.keep_going():
            batch = collate(train_set, order.at_step(step), encoder, train_context)
            batch = (batch.pin() if device.type == "cuda" else batch).to(device)
            gen = _step_generator(device, cfg.seed, step, rank)
            model.train()
            loss = diffusion_loss(model, noise, window, batch, gen)
            finite &= torch.isfinite(loss)
            fabric.backward(loss)
            if cfg.clip_grad:
                limit = gradnorms.threshold()
                fabric.strategy.precision.unscale_gradients(raw_opt)   # fp16 loss scaling, else no-op
                norm = clip_grad_norm_(fabric.strategy.precision.main_params(raw_opt), limit)
                gradnorms.record(norm, limit)
            opt.step()
            opt.zero_grad(set_to_none=True)
            _ema_update(ema, raw_model, cfg.ema_decay)
            step += 1
            run_loss += loss.detach()
            run_n += 1
            bar.update(1)
            if step % cfg.log_every == 0 or step == cfg.max_steps:
                check_finite()
                now = time.time()
                mean_loss = float(run_loss) / run_n
                if world > 1:  # the logged loss is the mean over all ranks' batches
                    mean_loss = float(fabric.all_reduce(torch.tensor(mean_loss, device=device),
                                                        reduce_op="mean"))
                row = {"step": step, "epoch": round(step / steps_per_epoch, 4),
                       "loss": mean_loss, "grad_norm": float(norm) if norm is not None else float("nan"),
                       "s_per_step": (now - last_log) / run_n}
                bar.set_postfix(loss=f"{row['loss']:.4f}")
                if logger:
                    logger.write(row)
                summary["last_loss"] = row["loss"]
                summary.setdefault("first_loss", row["loss"])
                run_loss, run_n, last_log = zero(), 0, now
            if cfg.val_every and step % cfg.val_every == 0 and rank == 0:
                vl = validation_loss(ema_model(), valid_set, cfg.val_molecules, cfg.seed)
                logger.write({"step": step, "val_loss": vl})
                summary["val_loss"] = vl
            if cfg.sample_every and step % cfg.sample_every == 0 and rank == 0:
                m = sample_metrics(ema_model(), cfg.sample_molecules, cfg.sample_steps, cfg.seed)
                logger.write({"step": step, **m})
                summary.update(m)
            if step % cfg.ckpt_every == 0:
                save()
        save()
    finally:
        bar.close()
        clock.restore()
        if logger:
            logger.close()
    summary.update({"step": step, "elapsed_s": clock.elapsed, "model_dir": str(run_dir / "model"),
                    "interrupted": clock.stopped, "rank": rank, "world_size": world})
    return summary


@torch.no_grad()
def validation_loss(model: EAD, valid: MoleculeSet, n: int, seed: int, batch_size: int = 128) -> float:
    """Loss of Algorithm 1 on a fixed subset with fixed times and noise (comparable across steps)."""
    noise, net = model.noise, model.denoiser
    window = TrainingWindow(model.config.timesteps, model.config.window, model.config.absent_bias)
    idx = np.arange(min(n, len(valid)))
    context = context_array(valid, model.config)
    total, count = 0.0, 0
    for k, start in enumerate(range(0, len(idx), batch_size)):
        batch = collate(valid, idx[start : start + batch_size], model.encoder, context).to(model.device)
        loss = diffusion_loss(net, noise, window, batch, _step_generator(model.device, seed, k, 999))
        total += float(loss) * batch.x.shape[0]
        count += batch.x.shape[0]
    return total / max(count, 1)


def sample_metrics(model: EAD, n: int, steps: int, seed: int) -> dict:
    from .metrics.evaluate import evaluate_molecules

    mols, _ = model.sample_arrays(n, sampler="synchronous", steps=steps, seed=seed)
    m = evaluate_molecules(mols, reference=None)
    return {k: m[k] for k in ("atom_stability", "molecule_stability", "validity") if k in m}


def _card(meta: dict) -> dict:
    """What the exported model says about its training (from a checkpoint's meta)."""
    tc = meta["train_config"]
    world = tc.get("devices", 1) * tc.get("num_nodes", 1)
    step, lineage = meta["step"], meta.get("lineage", [])
    card = {"training_steps": step, "training_hours": round(meta["elapsed_s"] / 3600, 3),
            "batch_size": tc["batch_size"] * world, "lr": tc["lr"], "ema_decay": tc["ema_decay"],
            "device": meta.get("device", "cpu"), "precision": tc.get("precision", "32-true")}
    if lineage:   # this run continues others: say so, and give the totals
        card["continues"] = lineage
        card["total_training_steps"] = step + sum(seg["steps"] for seg in lineage)
        card["total_training_hours"] = round(card["training_hours"] + sum(seg["hours"] for seg in lineage), 3)
        card["total_molecules_seen"] = step * card["batch_size"] + sum(
            seg["steps"] * seg["batch_size"] for seg in lineage)
    return card


def _ema_pipeline(model_cfg: ModelConfig, ema: dict, meta: dict) -> EAD:
    raw = build_denoiser(model_cfg)
    raw.load_state_dict({k: v.cpu() for k, v in ema.items()}, strict=False)
    return EAD(model_cfg, raw, device="cpu", card=_card(meta))


def export_checkpoint(checkpoint: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Write the EMA weights of a training checkpoint (a run folder = its latest, or a step-N
    folder) as a model folder that EAD.from_pretrained loads."""
    tensors, meta = Checkpointer.load(_checkpoint_path(str(checkpoint)))
    ema = {k[4:]: v for k, v in tensors.items() if k.startswith("ema.")}
    model = _ema_pipeline(ModelConfig.from_dict(meta["model_config"]), ema, meta)
    return model.save_pretrained(out)


def _checkpoint_path(path: str) -> Path:
    """A run folder (its latest checkpoint) or a checkpoint folder itself."""
    p = Path(path)
    if (p / "state.json").exists():
        return p
    latest = Checkpointer(p).latest()
    if latest is None:
        raise EADError(f"--init-from {path}: no checkpoint there (want a run folder or a step-N folder)")
    return latest


def _segment(meta: dict, path: str) -> dict:
    """One finished stretch of training, as recorded in the lineage of a run that continues it.
    `run` is the run folder even when --init-from named one of its step folders (its log.csv is
    there; `steps` says where this lineage left it)."""
    card = _card(meta)
    p = Path(path)
    if (p / "state.json").exists() and p.parent.name == "checkpoints":
        path = str(p.parent.parent)
    return {"run": path, "steps": card["training_steps"], "hours": card["training_hours"],
            "batch_size": card["batch_size"], "lr": card["lr"], "device": card["device"],
            "precision": card["precision"]}


def _device_name(device) -> str:
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform

    return f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"


def _check(cfg: TrainConfig) -> None:
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
    if cfg.window < 0 or 2 * cfg.window > cfg.timesteps:
        raise EADError(f"window C must be in [0, T/2], got {cfg.window}")
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
    if cfg.tensorboard:
        _summary_writer()   # fail before the data loads, not at the first log row


def precision_warning(precision: str, device: torch.device) -> str | None:
    """A warning when bfloat16 training is asked for on a CPU that only emulates it: without AMX
    tiles (e.g. AMD EPYC, Intel before Sapphire Rapids) a small-preset step took ~8 s in bf16-mixed
    against ~1.1 s in 32-true on one thread (docs/speed.md), so the user should know at once."""
    if device.type != "cpu" or "bf16" not in str(precision) or has_fast_bf16(device):
        return None
    return (f"warning: --precision {precision} on a CPU without AMX runs bfloat16 in emulation, "
            "several times slower than --precision 32-true")


def _summary_writer():
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise EADError("--tensorboard needs the tensorboard package: pip install tensorboard "
                       "(or pip install 'ead[tensorboard]')") from None
    return SummaryWriter


class _CsvLog:
    """The run's log.csv (one row per log interval; validation and sampling rows carry only their
    columns) and, with --tensorboard, the same numbers as TensorBoard scalars in `tb_dir`, grouped
    as train/, val/ and sample/. A resumed run purges TensorBoard events past its checkpoint, as
    log.csv is truncated there."""

    FIELDS = ["step", "epoch", "loss", "grad_norm", "s_per_step", "val_loss",
              "atom_stability", "molecule_stability", "validity"]
    GROUPS = {"val_loss": "val/loss", "atom_stability": "sample/atom_stability",
              "molecule_stability": "sample/molecule_stability", "validity": "sample/validity"}

    def __init__(self, path: Path, tb_dir: Path | None = None, start_step: int = 0):
        self.path = path
        if not path.exists():
            with open(path, "w", newline="") as f:
                csv.writer(f).writerow(self.FIELDS)
        self.tb = None
        if tb_dir is not None:
            self.tb = _summary_writer()(log_dir=str(tb_dir), purge_step=start_step or None)

    def write(self, row: dict) -> None:
        with open(self.path, "a", newline="") as f:
            csv.writer(f).writerow([_fmt(row.get(k)) for k in self.FIELDS])
        if self.tb is not None:
            for k in self.FIELDS[1:]:
                v = row.get(k)
                if v is not None and math.isfinite(float(v)):
                    self.tb.add_scalar(self.GROUPS.get(k, f"train/{k}"), float(v), row["step"])
            self.tb.flush()

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def _fmt(v):
    return "" if v is None else (f"{v:.6g}" if isinstance(v, float) else v)


def _truncate_log(path: Path, step: int) -> None:
    """On resume, drop log rows written after the checkpoint we restart from."""
    if not path.exists():
        return
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        return
    kept = [rows[0]] + [r for r in rows[1:] if r and r[0].isdigit() and int(r[0]) <= step]
    write_atomic(path, lambda p: p.write_text("".join(",".join(r) + "\n" for r in kept)))
