"""Property predictors: train one on QM9 and score conditional generation with it (method.md §9).

EDM's protocol: a predictor of one property is trained on the *first* half of QM9's training
split (the conditional generator trains on the second), so it never saw the generator's
molecules; a conditional model is then asked for molecules with given property values and scored
by the MAE between the values asked for and the predictor's values for what it made. The
predictor's own MAE on QM9's test split is the protocol's lower bound.

    ead predictor --property alpha --run-dir runs/predictor-alpha      # train (resumable)
    ead sample --model runs/cond-alpha/model -n 1000 -o cond.sdf         # targets in each record
    ead evaluate cond.sdf --predictor runs/predictor-alpha/model         # property MAE
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import EADError, __version__
from .data.batch import FeatureEncoder, MoleculeSet, SizeBucketBatches, collate
from .data.elements import QM9_TYPES
from .data.properties import QM9_UNITS, context_stats, nearest_index, property_columns
from .model.predictor import PropertyPredictor
from .pipeline import write_atomic
from .train import Checkpointer, RunClock, _load_optimizer_tensors, _optimizer_tensors

CONFIG_NAME, WEIGHTS_NAME = "config.json", "model.safetensors"


@dataclass
class PredictorConfig:
    """What a trained predictor needs to run (saved as JSON beside its safetensors weights)."""
    property: str = "alpha"
    unit: str = ""
    mean: float = 0.0
    mad: float = 1.0
    atom_types: tuple[int, ...] = QM9_TYPES
    include_charges: bool = True
    hidden: int = 128
    layers: int = 7
    attention: bool = True

    def __post_init__(self):
        self.atom_types = tuple(int(z) for z in self.atom_types)
        if not self.mad > 0:
            raise EADError("predictor MAD must be positive")


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


def build_predictor(cfg: PredictorConfig) -> PropertyPredictor:
    return PropertyPredictor(len(cfg.atom_types) + int(cfg.include_charges), cfg.hidden, cfg.layers,
                             attention=cfg.attention)


class Predictor:
    """A trained property predictor: `predict(molecules)` in the property's units."""

    def __init__(self, config: PredictorConfig, network: PropertyPredictor | None = None, info: dict | None = None):
        self.config = config
        self.network = (network or build_predictor(config)).eval()
        self.encoder = FeatureEncoder(config.atom_types, config.include_charges)
        self.info = info or {}

    @classmethod
    def from_pretrained(cls, path) -> "Predictor":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        path = Path(path)
        try:
            meta = json.loads((path / CONFIG_NAME).read_text())
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
            raise EADError(f"no readable predictor config in {path} ({e.__class__.__name__})") from None
        if not isinstance(meta, dict) or meta.get("format") != "ead-predictor":
            raise EADError(f"{path} is not an EAD property predictor")
        try:
            config = PredictorConfig(**meta["predictor"])
        except TypeError as e:
            raise EADError(f"corrupt predictor config in {path}: {e}") from None
        net = build_predictor(config)
        try:
            state = load_file(str(path / WEIGHTS_NAME))
            net.load_state_dict(state)
        except FileNotFoundError:
            raise EADError(f"missing {WEIGHTS_NAME} in {path}") from None
        except (SafetensorError, OSError, ValueError, RuntimeError) as e:
            raise EADError(f"weights in {path} do not fit its config: {str(e).splitlines()[0]}") from None
        return cls(config, net, meta.get("info"))

    def save_pretrained(self, path) -> Path:
        from safetensors.torch import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.network.state_dict().items()}
        meta = {"format": "ead-predictor", "ead_version": __version__,
                "predictor": dataclasses.asdict(self.config), "info": self.info}
        write_atomic(path / WEIGHTS_NAME, lambda p: save_file(state, str(p)))
        write_atomic(path / CONFIG_NAME, lambda p: p.write_text(json.dumps(meta, indent=2)))
        return path

    @torch.no_grad()
    def predict(self, molecules, batch_size: int = 256) -> np.ndarray:
        """Property values [M] (raw units) of a MoleculeSet or (positions, atomic numbers) pairs."""
        from .metrics.stability import as_molecule_set

        mols = as_molecule_set(molecules)
        mols.validate(self.config.atom_types)
        out = []
        for start in range(0, len(mols), batch_size):
            b = collate(mols, np.arange(start, min(start + batch_size, len(mols))), self.encoder)
            out.append(self.network(b.x, b.h, b.mol, b.num_molecules, b.edge_index).double().numpy())
        pred = np.concatenate(out) if out else np.zeros(0)
        return pred * self.config.mad + self.config.mean


def property_mae(predictor: Predictor, molecules, targets, seed: int = 0) -> dict:
    """EDM's conditional score: mean |target − predicted| over all molecules, in the property's
    units, with two references read the way EDM reads its baselines: `shuffled_mae` (the same
    predictions against the targets permuted: what ignoring the condition scores) and
    `size_only_mae` (|target − the QM9 mean for the molecule's atom count|: what getting only the
    size right scores). Beating the first shows the condition is used; beating the second, that it
    shapes more than the atom count."""
    from .metrics.stability import as_molecule_set

    mols = as_molecule_set(molecules)
    targets = np.asarray(targets, dtype=np.float64)
    pred = predictor.predict(mols)
    if len(pred) != len(targets):
        raise EADError(f"{len(pred)} molecules but {len(targets)} targets")
    n = len(targets)
    out = {"property": predictor.config.property, "unit": predictor.config.unit,
           "mae": float(np.abs(pred - targets).mean()) if n else None, "num_molecules": int(n),
           "target_mean": float(targets.mean()) if n else None, "predicted_mean": float(pred.mean()) if n else None,
           "shuffled_mae": None, "size_only_mae": None, "predictor_test_mae": predictor.info.get("test_mae")}
    if n:
        perm = np.random.default_rng(seed).permutation(n)
        out["shuffled_mae"] = float(np.abs(pred - targets[perm]).mean())
        out["size_only_mae"] = float(np.abs(targets - size_means(predictor.config.property, mols.num_atoms)).mean())
    return out


def size_means(prop: str, sizes) -> np.ndarray:
    """The mean of a QM9 property among the generator half's molecules with each given atom count
    (the nearest count present for one never seen)."""
    from .data.qm9 import qm9_half

    half = qm9_half("second")
    values = property_columns(half, (prop,))[:, 0]
    known = np.unique(half.num_atoms)
    means = np.array([values[half.num_atoms == m].mean() for m in known])
    return means[nearest_index(known, sizes)]


# ------------------------------------------------------------------------------------ training
def _qm9_sets(cfg: PredictorTrainConfig) -> tuple[MoleculeSet, MoleculeSet, MoleculeSet]:
    from .data.qm9 import qm9_half, qm9_split

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
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    run = Path(cfg.run_dir)
    train_set, valid_set, test_set = _qm9_sets(cfg)
    values = property_columns(train_set, (cfg.property,))
    mean, mad = context_stats(values)
    pcfg = PredictorConfig(property=cfg.property, unit=QM9_UNITS[cfg.property], mean=mean[0], mad=mad[0],
                           hidden=cfg.hidden, layers=cfg.layers)
    target = torch.from_numpy(((values[:, 0] - mean[0]) / mad[0]).astype(np.float32))
    torch.manual_seed(cfg.seed)
    net = build_predictor(pcfg)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    ckpt = Checkpointer(run, keep=1)
    step, elapsed = 0, 0.0
    latest = ckpt.latest()
    if latest is not None:
        tensors, meta = Checkpointer.load(latest)
        if meta.get("kind") != "predictor" or meta.get("predictor") != dataclasses.asdict(pcfg) | {
                "atom_types": list(pcfg.atom_types)}:
            raise EADError(f"{run} holds another run (not this property/size/data); use a new --run-dir")
        net.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("net.")})
        _load_optimizer_tensors(opt, net, tensors)
        step, elapsed = meta["step"], meta["elapsed_s"]
    encoder = FeatureEncoder(pcfg.atom_types, pcfg.include_charges)
    order = SizeBucketBatches(train_set.num_atoms, min(cfg.batch_size, len(train_set)), cfg.seed)
    per_epoch = len(order)
    run.mkdir(parents=True, exist_ok=True)
    (run / "train_config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=2))
    log = run / "log.csv"
    if not log.exists():
        log.write_text("step,epoch,train_mae,val_mae\n")
    def save():
        tensors = {f"net.{k}": v.detach().contiguous() for k, v in net.state_dict().items()}
        tensors.update(_optimizer_tensors(opt, net))
        meta = {"format": "ead-train-state", "kind": "predictor", "step": step, "elapsed_s": clock.elapsed,
                "predictor": dataclasses.asdict(pcfg) | {"atom_types": list(pcfg.atom_types)}}
        ckpt.save(step, tensors, meta)

    def lr_at(s: int) -> float:
        return cfg.lr * 0.5 * (1 + math.cos(math.pi * min(s, cfg.max_steps) / max(cfg.max_steps, 1)))

    run_err, run_n = 0.0, 0
    net.train()
    clock = RunClock(elapsed, cfg.max_hours)
    try:
        while step < cfg.max_steps and clock.keep_going():
            idx = order.at_step(step)
            b = collate(train_set, idx, encoder)
            for g in opt.param_groups:
                g["lr"] = lr_at(step)
            loss = (net(b.x, b.h, b.mol, b.num_molecules, b.edge_index) - target[idx]).abs().mean()
            if not torch.isfinite(loss):
                raise EADError(f"non-finite predictor loss at step {step}; lower --lr")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            run_err += float(loss.detach()) * pcfg.mad
            run_n += 1
            val = ""
            if cfg.val_every and step % cfg.val_every == 0:
                val = f"{_mae(net, pcfg, valid_set, cfg.val_molecules):.6g}"
            if step % cfg.log_every == 0 or val:
                with open(log, "a") as f:
                    f.write(f"{step},{step / per_epoch:.4f},{run_err / max(run_n, 1):.6g},{val}\n")
                if not cfg.quiet:
                    print(f"step {step}: train MAE {run_err / max(run_n, 1):.4g} {pcfg.unit}"
                          + (f", valid MAE {val}" if val else ""), flush=True)
                run_err, run_n = 0.0, 0
            if step % cfg.ckpt_every == 0:
                save()
        save()
    finally:
        clock.restore()
    test_mae = _mae(net, pcfg, test_set)
    info = {"test_mae": test_mae, "valid_mae": _mae(net, pcfg, valid_set), "steps": step,
            "hours": round(clock.elapsed / 3600, 4), "train_molecules": len(train_set), "split": cfg.split}
    Predictor(pcfg, net, info).save_pretrained(run / "model")
    return {"step": step, "test_mae": test_mae, "unit": pcfg.unit, "model_dir": str(run / "model"),
            "interrupted": clock.stopped}
