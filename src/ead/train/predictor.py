"""Training a property predictor (docs/method.md §9, EDM's protocol) with the shared loop
(loop.py): L1 loss on the normalised property, AdamW with a cosine learning rate to 0 at max_steps;
the exported RUN_DIR/model records its MAE on QM9's test split (the protocol's lower bound).

    ead predictor --property alpha --run-dir runs/predictor-alpha      # train (resumable)
    ead evaluate cond.sdf --predictor runs/predictor-alpha/model         # score conditional samples
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..data.batch import FeatureEncoder, MoleculeSet, SizeBucketBatches, collate
from ..data.properties import QM9_UNITS, context_stats, property_columns
from ..device import set_threads
from ..errors import EADError
from ..model.predictor import Predictor, PredictorConfig, PropertyPredictor, build_predictor
from .checkpoint import Checkpointer, load_optimizer_tensors, optimizer_tensors
from .log import CsvLog
from .loop import RunClock, run_loop


@dataclass
class PredictorTrainConfig:
    run_dir: str = "runs/predictor"
    property: str = "alpha"
    split: str = "first"        # QM9 molecules trained on: EDM's first half of the training split, or "all"
    hidden: int = 128           # EDM's classifier: 7 layers × 128
    layers: int = 7
    batch_size: int = 96        # EDM's
    lr: float = 5e-4            # EDM's, annealed by a cosine to 0 at max_steps
    weight_decay: float = 1e-16
    max_steps: int = 100_000
    max_hours: float | None = None
    ckpt_every: int = 1000
    log_every: int = 100
    val_every: int = 2000
    val_molecules: int = 2000
    seed: int = 0
    threads: int | None = None
    limit_molecules: int | None = None
    quiet: bool = False


def _qm9_sets(cfg: PredictorTrainConfig) -> tuple[MoleculeSet, MoleculeSet, MoleculeSet]:
    from ..data.qm9 import qm9_half, qm9_split

    train = qm9_half(cfg.split, verbose=not cfg.quiet)
    if cfg.limit_molecules:
        train = train.subset(np.arange(min(cfg.limit_molecules, len(train))))
    return train, qm9_split("valid"), qm9_split("test")


@torch.no_grad()
def _mae(net: PropertyPredictor, pcfg: PredictorConfig, mols: MoleculeSet, n: int | None = None) -> float:
    pred = Predictor(pcfg, net)
    sub = mols if n is None or n >= len(mols) else mols.subset(np.arange(n))
    truth = property_columns(sub, (pcfg.property,))[:, 0]
    was = net.training
    net.eval()
    err = float(np.abs(pred.predict(sub) - truth).mean())
    net.train(was)
    return err


def train_predictor(cfg: PredictorTrainConfig) -> dict:
    """Train (or resume) a predictor in cfg.run_dir; exports run_dir/model with its test MAE."""
    if cfg.split not in ("first", "second", "all"):
        raise EADError(f"split must be first, second or all, got {cfg.split!r}")
    if cfg.property not in QM9_UNITS:
        raise EADError(f"unknown QM9 property {cfg.property!r}; choose from {', '.join(QM9_UNITS)}")
    if cfg.batch_size < 1 or not cfg.lr > 0:
        raise EADError("batch size ≥ 1 and a positive learning rate are required")
    set_threads(cfg.threads, cfg.quiet)
    run = PredictorRun(cfg)
    run.dir.mkdir(parents=True, exist_ok=True)
    (run.dir / "train_config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=2))
    clock = RunClock(run.elapsed, cfg.max_hours)
    run.clock = clock
    log = CsvLog(run.dir / "log.csv", start_step=run.step, fields=PredictorRun.FIELDS)
    step = run_loop(run, run.step, cfg.max_steps, cfg.ckpt_every, clock, log)
    net, pcfg = run.net, run.pcfg
    test_mae = _mae(net, pcfg, run.test_set)
    info = {"test_mae": test_mae, "valid_mae": _mae(net, pcfg, run.valid_set), "steps": step,
            "hours": round(clock.elapsed / 3600, 4), "train_molecules": len(run.train_set), "split": cfg.split}
    Predictor(pcfg, net, info).save_pretrained(run.dir / "model")
    return {"step": step, "test_mae": test_mae, "unit": pcfg.unit, "model_dir": str(run.dir / "model"),
            "interrupted": clock.stopped}


class PredictorRun:
    """The predictor's network, optimizer and data, restored from the run's checkpoint if any; the
    hooks of the shared loop."""

    FIELDS = ("step", "epoch", "train_mae", "val_mae")

    def __init__(self, cfg: PredictorTrainConfig):
        self.cfg, self.dir = cfg, Path(cfg.run_dir)
        self.train_set, self.valid_set, self.test_set = _qm9_sets(cfg)
        values = property_columns(self.train_set, (cfg.property,))
        mean, mad = context_stats(values)
        self.pcfg = pcfg = PredictorConfig(property=cfg.property, unit=QM9_UNITS[cfg.property], mean=mean[0],
                                           mad=mad[0], hidden=cfg.hidden, layers=cfg.layers)
        self.target = torch.from_numpy(((values[:, 0] - mean[0]) / mad[0]).astype(np.float32))
        torch.manual_seed(cfg.seed)
        self.net = build_predictor(pcfg)
        self.opt = torch.optim.AdamW(self.net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.ckpt = Checkpointer(self.dir, keep=1)
        self.step, self.elapsed = 0, 0.0
        latest = self.ckpt.latest()
        if latest is not None:
            tensors, meta = Checkpointer.load(latest)
            if meta.get("kind") != "predictor" or meta.get("predictor") != self._saved_config():
                raise EADError(f"{self.dir} holds another run (not this property/size/data); use a new --run-dir")
            self.net.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("net.")})
            load_optimizer_tensors(self.opt, self.net, tensors)
            self.step, self.elapsed = meta["step"], meta["elapsed_s"]
        self.encoder = FeatureEncoder(pcfg.atom_types, pcfg.include_charges)
        self.order = SizeBucketBatches(self.train_set.num_atoms, min(cfg.batch_size, len(self.train_set)), cfg.seed)
        self.run_err, self.run_n = 0.0, 0
        self.clock: RunClock | None = None
        self.net.train()

    def _saved_config(self) -> dict:
        return dataclasses.asdict(self.pcfg) | {"atom_types": list(self.pcfg.atom_types)}

    def lr_at(self, s: int) -> float:
        cfg = self.cfg
        return cfg.lr * 0.5 * (1 + math.cos(math.pi * min(s, cfg.max_steps) / max(cfg.max_steps, 1)))

    # ---------------------------------------------------------------- the loop's hooks
    def train_step(self, step: int) -> None:
        idx = self.order.at_step(step)
        b = collate(self.train_set, idx, self.encoder)
        for g in self.opt.param_groups:
            g["lr"] = self.lr_at(step)
        loss = (self.net(b.x, b.h, b.mol, b.num_molecules, b.edge_index) - self.target[idx]).abs().mean()
        if not torch.isfinite(loss):
            raise EADError(f"non-finite predictor loss at step {step}; lower --lr")
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.run_err += float(loss.detach()) * self.pcfg.mad
        self.run_n += 1

    def rows(self, step: int):
        cfg = self.cfg
        val = None
        if cfg.val_every and step % cfg.val_every == 0:
            val = _mae(self.net, self.pcfg, self.valid_set, cfg.val_molecules)
        if step % cfg.log_every == 0 or val is not None:
            train_mae = self.run_err / max(self.run_n, 1)
            yield {"step": step, "epoch": round(step / len(self.order), 4), "train_mae": train_mae, "val_mae": val}
            if not cfg.quiet:
                print(f"step {step}: train MAE {train_mae:.4g} {self.pcfg.unit}"
                      + (f", valid MAE {val:.6g}" if val is not None else ""), flush=True)
            self.run_err, self.run_n = 0.0, 0

    def save(self, step: int) -> None:
        tensors = {f"net.{k}": v.detach().contiguous() for k, v in self.net.state_dict().items()}
        tensors.update(optimizer_tensors(self.opt, self.net))
        meta = {"format": "ead-train-state", "kind": "predictor", "step": step, "elapsed_s": self.clock.elapsed,
                "predictor": self._saved_config()}
        self.ckpt.save(step, tensors, meta)
