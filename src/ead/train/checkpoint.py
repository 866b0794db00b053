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
import re
import shutil
import sys
from pathlib import Path

import torch

from ..errors import EADError
from ..io import read_json, remove_stale_temporaries, tmp_name, write_atomic
from ..model.config import ModelConfig, check_json, check_weights, dataclass_schema
from .config import TrainConfig


# state.json around the tensors: each field's type (model_config is ModelConfig's to check, when read)
STATE_SCHEMA = {"format": "str", "step": "int", "elapsed_s": "float", "gradnorms": "list[float]",
                "model_config": "dict", "train_config": "dict", "device": "str", "lineage": "list[dict]",
                "changes": "list[dict]", "kind": "str", "predictor": "dict"}
STATE_RANGES = {"step": (0, None), "elapsed_s": (0.0, None)}
SEGMENT_SCHEMA = {"run": "str", "steps": "int", "hours": "float", "batch_size": "int", "lr": "float",
                  "device": "str", "precision": "str"}
_NAME = re.compile(r"^step-(\d{8})(?:\.(\d+))?$")


def _order(p: Path) -> tuple[int, int]:
    m = _NAME.match(p.name)
    return int(m.group(1)), int(m.group(2) or 0)


class Checkpointer:
    """run_dir/checkpoints/step-N/{state.safetensors,state.json} + run_dir/checkpoints/latest;
    keeps the newest `keep` checkpoints (0 = all).

    Crash consistency (docs/reliability.md): a checkpoint is written complete into a hidden
    temporary folder, renamed to a name no other checkpoint has, the pointer is switched to it, and
    only then are older ones deleted; so at every moment the pointer names a complete checkpoint.
    A failed write (a full disk) removes its temporary folder and leaves the last good checkpoint
    and the pointer as they were."""

    def __init__(self, run_dir: Path, keep: int = 2):
        self.root = Path(run_dir) / "checkpoints"
        self.keep = keep

    def checkpoints(self) -> list[Path]:
        """The complete checkpoint folders, oldest first."""
        if not self.root.is_dir():
            return []
        found = [p for p in self.root.iterdir() if _NAME.match(p.name) and p.is_dir()
                 and (p / "state.json").is_file() and (p / "state.safetensors").is_file()]
        return sorted(found, key=_order)

    def latest(self) -> Path | None:
        ptr = self.root / "latest"
        if not ptr.exists():
            return None
        path = self.root / ptr.read_text().strip()
        if (path / "state.json").is_file() and (path / "state.safetensors").is_file():
            return path
        complete = self.checkpoints()
        if not complete:
            raise EADError(f"checkpoint pointer {ptr} names a missing checkpoint {path}, and no other "
                           "complete checkpoint is there")
        print(f"warning: {ptr} names a missing checkpoint {path.name}; resuming from {complete[-1].name}, "
              "the newest complete one", file=sys.stderr)
        return complete[-1]

    def remove_stale(self) -> list[Path]:
        """Temporary folders and files that dead processes left in the checkpoint folder."""
        return remove_stale_temporaries(self.root)

    def save(self, step: int, tensors: dict, meta: dict) -> Path:
        from safetensors import SafetensorError
        from safetensors.torch import save_file

        self.root.mkdir(parents=True, exist_ok=True)
        final = self.root / f"step-{step:08d}"
        version = 0
        while final.exists():   # a second checkpoint at one step never replaces the first in place
            version += 1
            final = self.root / f"step-{step:08d}.{version}"
        tmp = tmp_name(final)
        try:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
            save_file(tensors, str(tmp / "state.safetensors"), metadata={"step": str(step)})
            (tmp / "state.json").write_text(json.dumps(meta, indent=1))
            os.replace(tmp, final)
            write_atomic(self.root / "latest", lambda p: p.write_text(final.name))
        except (OSError, SafetensorError, EADError) as e:
            shutil.rmtree(tmp, ignore_errors=True)
            if final.exists() and (self.root / "latest").read_text().strip() != final.name:
                shutil.rmtree(final, ignore_errors=True)
            last = self.latest()
            reason = getattr(e, "strerror", None) or (str(e).splitlines() or [type(e).__name__])[0]
            raise EADError(f"cannot write the checkpoint of step {step} in {self.root}: {reason}; "
                           + (f"the last good checkpoint {last.name} is untouched" if last else
                              "no checkpoint was written")) from None
        olds = [p for p in self.checkpoints() if p != final]
        superseded = [p for p in olds if _order(p)[0] == step]   # earlier versions of this step
        olds = [p for p in olds if _order(p)[0] != step]
        for p in superseded + (olds[: max(0, len(olds) - (self.keep - 1))] if self.keep else []):
            shutil.rmtree(p, ignore_errors=True)
        return final

    @staticmethod
    def load(path: Path) -> tuple[dict, dict]:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        meta = read_json(path / "state.json", "checkpoint metadata")
        if not isinstance(meta, dict) or meta.get("format") != "ead-train-state":
            raise EADError(f"{path} is not an EAD training checkpoint")
        where = f"checkpoint {path}"
        meta = check_json(meta, STATE_SCHEMA, where, STATE_RANGES, unknown="ignore")
        generator = meta.get("kind", "generator") == "generator"   # else the property predictor's
        required = ("step", "elapsed_s") + (("gradnorms", "model_config", "train_config") if generator else ())
        missing = [k for k in required if k not in meta]
        if missing:
            raise EADError(f"{where}: missing fields {missing}")
        if generator:
            meta["train_config"] = check_json(meta["train_config"], dataclass_schema(TrainConfig),
                                              f"{where}: train_config", unknown="ignore")
            if "batch_size" not in meta["train_config"] or "lr" not in meta["train_config"]:
                raise EADError(f"{where}: train_config lacks batch_size or lr")
        meta["lineage"] = [check_json(seg, SEGMENT_SCHEMA, f"{where}: lineage", unknown="ignore")
                           for seg in meta.get("lineage", [])]
        if any(k not in seg for seg in meta["lineage"] for k in ("steps", "hours", "batch_size")):
            raise EADError(f"{where}: a lineage entry lacks steps, hours or batch_size")
        if len(meta.get("gradnorms", ())) > 1000:
            raise EADError(f"{where}: {len(meta['gradnorms'])} gradient norms (the history holds 50)")
        try:
            tensors = load_file(str(path / "state.safetensors"))
        except (OSError, SafetensorError, ValueError) as e:
            raise EADError(f"corrupt checkpoint {path}: {e}") from None
        check_weights(tensors, f"{where}/state.safetensors")
        return tensors, meta


def checkpoint_path(path: str) -> Path:
    """A run folder (its latest checkpoint) or a checkpoint folder itself."""
    p = Path(path)
    if (p / "state.json").is_file():
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
