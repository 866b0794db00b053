"""What a trained model says about its training (the card in its config.json): steps, hours,
batch, device, and the lineage of earlier runs it continues; and the export of a checkpoint's EMA
weights as a model folder."""

from __future__ import annotations

import os
from pathlib import Path

from ..model.build import build_denoiser
from ..model.config import ModelConfig
from ..pipeline import EAD
from .checkpoint import Checkpointer, checkpoint_path
from .config import TrainConfig

# training settings that shape what the model learns but are not part of the network's config:
# the card names those a run changed from EDM's recipe (e.g. fragment_share: the model has seen
# held fragments, so growing one is in its distribution)
RECIPE = ("lr_schedule", "warmup_steps", "loss_weight", "min_snr_gamma", "time_sampling", "fragment_share")


def card(meta: dict) -> dict:
    """What the exported model says about its training (from a checkpoint's meta)."""
    tc = meta["train_config"]
    world = tc.get("devices", 1) * tc.get("num_nodes", 1)
    step, lineage = meta["step"], meta.get("lineage", [])
    out = {"training_steps": step, "training_hours": round(meta["elapsed_s"] / 3600, 3),
            "batch_size": tc["batch_size"] * world, "lr": tc["lr"], "ema_decay": tc["ema_decay"],
            "device": meta.get("device", "cpu"), "precision": tc.get("precision", "32-true"),
            "data": tc.get("data")}
    recipe = {k: tc[k] for k in RECIPE if k in tc and tc[k] != getattr(TrainConfig, k)}
    if recipe:
        out["recipe"] = recipe
    if meta.get("changes"):   # settings changed on resumes (--allow-changes), each at its step
        out["setting_changes"] = meta["changes"]
    if lineage:   # this run continues others: say so, and give the totals
        out["continues"] = lineage
        out["total_training_steps"] = step + sum(seg["steps"] for seg in lineage)
        out["total_training_hours"] = round(out["training_hours"] + sum(seg["hours"] for seg in lineage), 3)
        out["total_molecules_seen"] = step * out["batch_size"] + sum(
            seg["steps"] * seg["batch_size"] for seg in lineage)
    return out


def ema_pipeline(model_cfg: ModelConfig, ema: dict, meta: dict) -> EAD:
    raw = build_denoiser(model_cfg)
    raw.load_state_dict({k: v.cpu() for k, v in ema.items()}, strict=False)
    return EAD(model_cfg, raw, device="cpu", card=card(meta))


def export_checkpoint(checkpoint: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Write the EMA weights of a training checkpoint (a run folder = its latest, or a step-N
    folder) as a model folder that EAD.from_pretrained loads."""
    tensors, meta = Checkpointer.load(checkpoint_path(str(checkpoint)))
    ema = {k[4:]: v for k, v in tensors.items() if k.startswith("ema.")}
    model = ema_pipeline(ModelConfig.from_dict(meta["model_config"]), ema, meta)
    return model.save_pretrained(out)


def segment(meta: dict, path: str) -> dict:
    """One finished stretch of training, as recorded in the lineage of a run that continues it.
    `run` is the run folder even when --init-from named one of its step folders (its log.csv is
    there; `steps` says where this lineage left it)."""
    c = card(meta)
    p = Path(path)
    if (p / "state.json").exists() and p.parent.name == "checkpoints":
        path = str(p.parent.parent)
    return {"run": path, "steps": c["training_steps"], "hours": c["training_hours"],
            "batch_size": c["batch_size"], "lr": c["lr"], "device": c["device"],
            "precision": c["precision"], **({"recipe": c["recipe"]} if "recipe" in c else {})}
