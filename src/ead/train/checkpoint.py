"""Training checkpoints: safetensors (weights, EMA, AdamW moments) + JSON (counters, configs),
written into a fresh folder and published by atomically rewriting a pointer file, so a run killed
at any moment resumes from its last complete checkpoint; and how an --init-from checkpoint is
widened into a network with more inputs.

Fabric's save/load are not used: they would write one torch pickle per checkpoint (or a folder
per rank), while these are safetensors + JSON that load without unpickling and that
`export_checkpoint` and --init-from read without a Fabric.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path

import torch

from ..errors import EADError
from ..io import write_atomic
from ..model.config import ModelConfig


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


def checkpoint_path(path: str) -> Path:
    """A run folder (its latest checkpoint) or a checkpoint folder itself."""
    p = Path(path)
    if (p / "state.json").exists():
        return p
    latest = Checkpointer(p).latest()
    if latest is None:
        raise EADError(f"--init-from {path}: no checkpoint there (want a run folder or a step-N folder)")
    return latest


def optimizer_tensors(opt: torch.optim.Optimizer, model: torch.nn.Module) -> dict[str, torch.Tensor]:
    out = {}
    names = {id(p): n for n, p in model.named_parameters()}
    for group in opt.param_groups:
        for p in group["params"]:
            for k, v in opt.state.get(p, {}).items():
                if torch.is_tensor(v):
                    out[f"optim.{names[id(p)]}.{k}"] = v.detach().cpu().contiguous()
    return out


def load_optimizer_tensors(opt, model, tensors: dict[str, torch.Tensor]) -> None:
    """Restore AdamW's state; each moment goes to its parameter's device (call it after the model
    has been placed: restoring on the CPU before a move to the GPU left them behind once), Adam's
    step counter stays on the CPU where Adam keeps it."""
    for name, p in model.named_parameters():
        prefix = f"optim.{name}."
        for key, v in tensors.items():
            if key.startswith(prefix):   # step, exp_avg, exp_avg_sq, max_exp_avg_sq (amsgrad)
                k = key[len(prefix):]
                opt.state[p][k] = v if k == "step" else v.to(p.device)


CONTEXT_FIELDS = ("context", "context_mean", "context_mad", "context_quantiles")
SIZE_FIELDS = ("size_mode", "max_atoms", "absent_bias")


def init_widening(saved: ModelConfig, new: ModelConfig) -> list[tuple[int, int]] | None:
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


def widen_inputs(tensors: dict, at: int, count: int) -> dict:
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
