"""Training the generator (Algorithm 1) on Lightning Fabric: one process per device, DDP across GPUs
and nodes, driven by the shared loop (loop.py). `train(cfg)` sets a run up (data, model, resume or
--init-from), `GeneratorRun` is what one step, one log row and one checkpoint do.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch

from ..data.batch import FeatureEncoder, MoleculeSet, SizeBucketBatches, collate
from ..device import device_name, has_bf16_units, set_threads, training_precision
from ..diffusion.loss import TrainingWindow, diffusion_loss, step_generator
from ..diffusion.noise import NoiseSchedule
from ..errors import EADError
from ..io import remove_stale_temporaries
from ..model.build import build_denoiser, compile_for_training
from ..model.config import ModelConfig
from ..pipeline import EAD
from .card import ema_pipeline, segment
from .checkpoint import (Checkpointer, checkpoint_path, init_widening, load_optimizer_tensors,
                         optimizer_tensors, widen_inputs)
from .config import TrainConfig
from .data import context_array, load_data
from .log import CsvLog
from .loop import RunClock, run_loop


def train(cfg: TrainConfig) -> dict:
    """Train (or resume) the run in cfg.run_dir. Returns a summary dict."""
    from lightning.fabric import Fabric

    cfg.check()
    ckpt = Checkpointer(Path(cfg.run_dir), keep=cfg.keep_checkpoints)
    for folder in (ckpt.root, Path(cfg.run_dir), Path(cfg.run_dir) / "model"):
        remove_stale_temporaries(folder)   # what a killed run left: never another live process's
    latest = ckpt.latest()
    tensors, resumed_meta, init_meta = {}, None, None
    if latest is not None:   # our own checkpoint wins: a restarted --init-from run resumes itself
        tensors, resumed_meta = Checkpointer.load(latest)
    elif cfg.init_from:
        tensors, init_meta = Checkpointer.load(checkpoint_path(cfg.init_from))

    # "auto": what a resumed run trained in, else bf16-mixed on a CPU with bfloat16 units
    saved_precision = resumed_meta["train_config"].get("precision") if resumed_meta is not None else None
    cfg = dataclasses.replace(cfg, precision=training_precision(cfg.precision, cfg.accelerator, saved_precision))
    # Lightning announces its precision at INFO, through a handler that depends on which of its
    # packages was imported first; --quiet leaves ead's summary line alone
    loggers = [logging.getLogger(name) for name in ("lightning.fabric", "lightning.pytorch")] if cfg.quiet else []
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        fabric = Fabric(accelerator=cfg.accelerator, devices=cfg.devices, num_nodes=cfg.num_nodes,
                        precision=cfg.precision)
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
    fabric.launch()
    slow = precision_warning(cfg.precision, fabric.device)
    if slow and fabric.global_rank == 0:
        print(slow, file=sys.stderr)
    train_set, valid_set, types, dataset = load_data(cfg)
    model_cfg = cfg.model_config(train_set, types, dataset, largest=int(valid_set.num_atoms.max()))
    if model_cfg.dummy:   # every molecule becomes max_atoms slots; p(M) stays the real sizes'
        train_set = train_set.with_absent(model_cfg.max_atoms)
        valid_set = valid_set.with_absent(model_cfg.max_atoms)
    tensors = _check_saved_config(cfg, model_cfg, tensors, resumed_meta, init_meta)
    changes = setting_changes(cfg, resumed_meta) if resumed_meta is not None else {}
    # after the data and the saved settings are checked: bad input gets its one error line alone
    set_threads(cfg.threads, cfg.quiet)
    if (not cfg.quiet and fabric.global_rank == 0 and str(cfg.precision) in ("32-true", "32")
            and has_bf16_units(fabric.device)):
        how = ("--precision bf16-mixed --allow-changes (recorded in the card)" if resumed_meta is not None
               else "--precision bf16-mixed")
        print(f"note: this CPU multiplies bfloat16 in hardware: {how} trains 2.0-2.4x faster per step here, "
              "with the float32 loss curve (docs/speed.md)", file=sys.stderr)
    run = GeneratorRun(cfg, model_cfg, fabric, ckpt, train_set, valid_set, tensors, resumed_meta, init_meta)
    if changes:
        run.changes.append({"step": run.step, **changes})
    return run.fit()


# settings a resumed run may change freely: when and how long it runs, what it logs and keeps
FREE_SETTINGS = {"max_steps", "max_hours", "threads", "quiet", "ckpt_every", "log_every", "val_every",
                 "val_molecules", "sample_every", "sample_molecules", "sample_steps", "keep_checkpoints",
                 "run_dir", "init_from", "tensorboard", "allow_changes", "compile"}


def setting_changes(cfg: TrainConfig, meta: dict) -> dict:
    """{setting: [before, now]} of the training settings a resume changes (FREE_SETTINGS aside; a
    setting the checkpoint predates counts as its default). Refused unless --allow-changes."""
    now = json.loads(json.dumps(dataclasses.asdict(cfg)))
    default = json.loads(json.dumps(dataclasses.asdict(TrainConfig())))
    saved = json.loads(json.dumps(meta["train_config"]))   # tuples as the JSON lists they were
    # a cosine schedule ends at max_steps: there the run's length is part of its learning-rate curve
    free = FREE_SETTINGS - ({"max_steps"} if cfg.lr_schedule == "cosine" else set())
    changes = {k: [saved.get(k, default[k]), v] for k, v in now.items()
               if k not in free and saved.get(k, default[k]) != v}
    if changes and not cfg.allow_changes:
        listed = ", ".join(f"{k.replace('_', '-')} {a} → {b}" for k, (a, b) in changes.items())
        raise EADError(f"{cfg.run_dir} resumes at step {meta['step']} with changed training settings "
                       f"({listed}); resume with the run's settings, or give --allow-changes to continue "
                       "with the new ones (each change is recorded at its step in the model card)")
    return changes


def _check_saved_config(cfg: TrainConfig, model_cfg: ModelConfig, tensors: dict, resumed_meta, init_meta) -> dict:
    """The checkpoint's tensors, widened when --init-from makes a model conditional or dummy-atom;
    an EADError when the checkpoint holds another model or data."""
    for meta, where, hint in ((resumed_meta, cfg.run_dir, "use a new --run-dir"),
                              (init_meta, cfg.init_from, "give the same preset, window and data")):
        if meta is None:
            continue
        saved = ModelConfig.from_dict(meta["model_config"])
        widen = init_widening(saved, model_cfg) if meta is init_meta else None
        if widen is not None:
            for at, count in widen:
                tensors = widen_inputs(tensors, at, count)
            continue
        if saved != model_cfg:
            diff = [f.name for f in dataclasses.fields(ModelConfig)
                    if getattr(saved, f.name) != getattr(model_cfg, f.name)]
            raise EADError(f"{where} holds a run with another model/data config ({', '.join(diff)}); {hint}")
    return tensors


class GeneratorRun:
    """One generator run on one rank: the network (Fabric-wrapped), AdamW, the EMA weights and
    EDM's gradient-norm history, restored from a checkpoint when there is one.

    Nothing in a step reads a value back from the device (a GPU runs ahead of the host): the loss
    is summed and checked for NaN/inf on the device, and read at log and save time."""

    def __init__(self, cfg: TrainConfig, model_cfg: ModelConfig, fabric, ckpt: Checkpointer,
                 train_set: MoleculeSet, valid_set: MoleculeSet, tensors: dict, resumed_meta, init_meta):
        self.cfg, self.model_cfg, self.fabric, self.ckpt = cfg, model_cfg, fabric, ckpt
        self.train_set, self.valid_set = train_set, valid_set
        self.run_dir = Path(cfg.run_dir)
        self.rank, self.world = fabric.global_rank, fabric.world_size
        torch.manual_seed(cfg.seed)  # initial weights
        model = build_denoiser(model_cfg)
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, amsgrad=True)
        ema = {k: v.detach().clone() for k, v in model.named_parameters()}
        gradnorms = GradNormHistory()
        self.step, elapsed = 0, 0.0
        self.lineage: list[dict] = []   # earlier runs this one continues (init_from), oldest first
        # settings changed on a resume (--allow-changes): [{"step": k, setting: [before, after]}, …]
        self.changes: list[dict] = list((resumed_meta or {}).get("changes", []))
        source = resumed_meta or init_meta
        if source is not None:
            model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
            ema = {k[4:]: v for k, v in tensors.items() if k.startswith("ema.")}
            gradnorms = GradNormHistory(source["gradnorms"])
            self.lineage = list(source.get("lineage", []))
            for g in opt.param_groups:
                g["lr"] = cfg.lr
        if resumed_meta is not None:
            self.step, elapsed = resumed_meta["step"], resumed_meta["elapsed_s"]
        elif init_meta is not None:
            self.lineage.append(segment(init_meta, str(cfg.init_from)))
        eager = None
        if cfg.compile:
            eager = copy.deepcopy(model)   # the same weights, run without compilation, for the check below
            compile_for_training(model)
        self.model, self.opt = fabric.setup(model, opt)
        self.raw_model = self.model.module if hasattr(self.model, "module") else self.model   # unwrapped
        self.raw_opt = self.opt.optimizer if hasattr(self.opt, "optimizer") else self.opt
        if source is not None:
            load_optimizer_tensors(self.opt, self.raw_model, tensors)
        self.device = device = fabric.device
        self.ema = {k: v.to(device) for k, v in ema.items()}
        self.gradnorms = gradnorms.to(device)
        self.elapsed = elapsed

        self.encoder = FeatureEncoder(model_cfg.feature_types, model_cfg.include_charges)
        self.train_context = context_array(train_set, model_cfg)
        self.noise = NoiseSchedule(model_cfg.noise_schedule, model_cfg.timesteps, model_cfg.noise_precision)
        self.window = TrainingWindow(model_cfg.timesteps, model_cfg.window, model_cfg.absent_bias,
                                     cfg.time_sampling)
        self.order = SizeBucketBatches(train_set.num_atoms, cfg.batch_size, cfg.seed, cfg.bucket,
                                       self.rank, self.world)
        if len(self.order) == 0:
            raise EADError("not enough training molecules for one batch per device")
        self.run_loss, self.run_n, self.last_log = self._zero(), 0, time.time()
        self.finite = torch.ones((), dtype=torch.bool, device=device)
        self.norm, self.first_unchecked = None, self.step + 1
        self.summary = {"start_step": self.step}
        if eager is not None:
            self.check_compiled(eager.to(device))

    def check_compiled(self, eager: torch.nn.Module) -> None:
        """Refuse a compiled network whose loss on the next batch differs from the eager one's:
        torch 2.13's inductor, with dynamic shapes and autograd on, computed a different loss for
        EGNNs of 6 layers (the small and paper presets; 3 layers matched to float rounding)."""
        batch = collate(self.train_set, self.order.at_step(self.step), self.encoder, self.train_context).to(self.device)
        losses = []
        for net in (eager, self.raw_model):
            net.train()
            with torch.enable_grad():
                losses.append(float(diffusion_loss(
                    net, self.noise, self.window, batch, step_generator(self.device, self.cfg.seed, self.step, self.rank),
                    self.cfg.loss_weight, self.cfg.min_snr_gamma, self.cfg.fragment_share, self.model_cfg.target,
                    self.model_cfg.self_condition).detach()))
        if not abs(losses[1] - losses[0]) <= 1e-4 * abs(losses[0]):
            raise EADError(f"--compile changes this network's loss (eager {losses[0]:.6g}, compiled {losses[1]:.6g} "
                           "on the same batch): torch.compile miscompiles it here; train without --compile")

    def fit(self) -> dict:
        cfg, run_dir = self.cfg, self.run_dir
        logger = None
        if self.rank == 0:
            run_dir.mkdir(parents=True, exist_ok=True)
            (run_dir / "train_config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=2))
            logger = CsvLog(run_dir / "log.csv", run_dir / "tensorboard" if cfg.tensorboard else None, self.step)
        from tqdm import tqdm

        from ..progress import showing

        # the one progress rule: a bar on a terminal's stderr only (a log file gets log.csv's rows)
        self.bar = tqdm(total=cfg.max_steps, initial=self.step, disable=not showing(cfg.quiet) or self.rank != 0,
                        dynamic_ncols=True, desc="train", file=sys.stderr)
        self.clock = RunClock(self.elapsed, cfg.max_hours)
        self.step = run_loop(self, self.step, cfg.max_steps, cfg.ckpt_every, self.clock, logger, self.bar)
        if self.rank == 0 and not (run_dir / "model" / "config.json").exists():
            # a run resumed at its last step trains nothing and saves nothing: its model folder (deleted,
            # or never cloned: it is not in git) is written from the restored weights, as the summary says
            self.ema_model().save_pretrained(run_dir / "model")
        self.summary.update({"step": self.step, "elapsed_s": self.clock.elapsed,
                             "model_dir": str(run_dir / "model"), "interrupted": self.clock.stopped,
                             "rank": self.rank, "world_size": self.world})
        return self.summary

    def _zero(self) -> torch.Tensor:
        return torch.zeros((), dtype=torch.float64, device=self.device)

    # ---------------------------------------------------------------- the loop's hooks
    def train_step(self, step: int) -> None:
        cfg, fabric = self.cfg, self.fabric
        batch = collate(self.train_set, self.order.at_step(step), self.encoder, self.train_context)
        batch = (batch.pin() if self.device.type == "cuda" else batch).to(self.device)
        gen = step_generator(self.device, cfg.seed, step, self.rank)
        self.model.train()
        for g in self.raw_opt.param_groups:
            g["lr"] = cfg.lr_at(step)
        loss = diffusion_loss(self.model, self.noise, self.window, batch, gen, cfg.loss_weight, cfg.min_snr_gamma,
                              cfg.fragment_share, self.model_cfg.target, self.model_cfg.self_condition)
        self.finite &= torch.isfinite(loss)
        fabric.backward(loss)
        if cfg.clip_grad:
            limit = self.gradnorms.threshold()
            fabric.strategy.precision.unscale_gradients(self.raw_opt)   # fp16 loss scaling, else no-op
            self.norm = clip_grad_norm_(fabric.strategy.precision.main_params(self.raw_opt), limit)
            self.gradnorms.record(self.norm, limit)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        ema_update(self.ema, self.raw_model, cfg.ema_decay)
        self.step = step + 1
        self.run_loss += loss.detach()
        self.run_n += 1

    def rows(self, step: int):
        cfg, summary = self.cfg, self.summary
        if step % cfg.log_every == 0 or step == cfg.max_steps:
            self.check_finite()
            now = time.time()
            mean_loss = float(self.run_loss) / self.run_n
            if self.world > 1:  # the logged loss is the mean over all ranks' batches
                mean_loss = float(self.fabric.all_reduce(torch.tensor(mean_loss, device=self.device),
                                                         reduce_op="mean"))
            norm = self.norm
            row = {"step": step, "epoch": round(step / len(self.order), 4), "loss": mean_loss,
                   "grad_norm": float(norm) if norm is not None else float("nan"),
                   "s_per_step": (now - self.last_log) / self.run_n}
            self.bar.set_postfix(loss=f"{row['loss']:.4f}")
            yield row
            summary["last_loss"] = row["loss"]
            summary.setdefault("first_loss", row["loss"])
            self.run_loss, self.run_n, self.last_log = self._zero(), 0, now
        if cfg.val_every and step % cfg.val_every == 0 and self.rank == 0:
            vl = validation_loss(self.ema_model(), self.valid_set, cfg.val_molecules, cfg.seed)
            yield {"step": step, "val_loss": vl}
            summary["val_loss"] = vl
        if cfg.sample_every and step % cfg.sample_every == 0 and self.rank == 0:
            m = sample_metrics(self.ema_model(), cfg.sample_molecules, cfg.sample_steps, cfg.seed)
            yield {"step": step, **m}
            summary.update(m)

    def save(self, step: int) -> None:
        self.check_finite()   # never write a checkpoint of weights a NaN has reached
        if self.rank != 0:
            return
        tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in self.raw_model.state_dict().items()}
        tensors.update({f"ema.{k}": v.detach().cpu().contiguous() for k, v in self.ema.items()})
        tensors.update(optimizer_tensors(self.opt, self.raw_model))
        meta = {"format": "ead-train-state", "step": step, "elapsed_s": self.clock.elapsed,
                "gradnorms": list(self.gradnorms.values), "model_config": self.model_cfg.to_dict(),
                "train_config": dataclasses.asdict(self.cfg), "device": device_name(self.device),
                "lineage": self.lineage, "changes": self.changes}
        self.ckpt.save(step, tensors, meta)
        self.ema_model().save_pretrained(self.run_dir / "model")

    # ---------------------------------------------------------------- helpers
    def check_finite(self) -> None:
        """Every rank calls it at the same steps (log rows, checkpoints)."""
        ok = self.finite if self.world == 1 else self.fabric.all_reduce(self.finite.float(), reduce_op="min") > 0
        if not bool(ok):
            raise EADError(f"loss became NaN or infinite between steps {self.first_unchecked} and "
                           f"{self.step}; lower --lr (the last checkpoint is untouched)")
        self.first_unchecked = self.step + 1

    def ema_model(self) -> EAD:
        meta = {"step": self.step, "elapsed_s": self.clock.elapsed, "train_config": dataclasses.asdict(self.cfg),
                "device": device_name(self.device), "lineage": self.lineage,
                "changes": self.changes}
        return ema_pipeline(self.model_cfg, self.ema, meta)


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


def ema_update(ema: dict[str, torch.Tensor], model: torch.nn.Module, decay: float) -> None:
    with torch.no_grad():
        params = dict(model.named_parameters())
        names = list(ema)
        torch._foreach_lerp_([ema[k] for k in names], [params[k].detach() for k in names], 1.0 - decay)


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
        loss = diffusion_loss(net, noise, window, batch, step_generator(model.device, seed, k, 999),
                              target=model.config.target, self_condition=model.config.self_condition)
        total += float(loss) * batch.x.shape[0]
        count += batch.x.shape[0]
    return total / max(count, 1)


def sample_metrics(model: EAD, n: int, steps: int, seed: int) -> dict:
    from ..metrics.evaluate import evaluate_molecules

    mols, _ = model.sample_arrays(n, sampler="synchronous", steps=steps, seed=seed)
    m = evaluate_molecules(mols, reference=None)
    return {k: m[k] for k in ("atom_stability", "molecule_stability", "validity") if k in m}


def precision_warning(precision: str, device: torch.device) -> str | None:
    """A warning when bfloat16 training is asked for on a CPU that only emulates it: without AMX
    tiles or AVX-512 BF16 (e.g. an AVX2-only AMD EPYC) a small-preset step took ~8 s in bf16-mixed
    against ~1.1 s in 32-true on one thread (docs/speed.md), so the user should know at once."""
    if device.type != "cpu" or "bf16" not in str(precision) or has_bf16_units(device):
        return None
    return (f"warning: --precision {precision} on a CPU without bfloat16 units (AMX or AVX-512 BF16) "
            "runs bfloat16 in emulation, several times slower than --precision 32-true")
