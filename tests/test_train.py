"""Training: a tiny model overfits a few QM9 molecules; a stopped run resumes exactly."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from ead import EADError
from ead.pipeline import EAD
from ead.train import Checkpointer, TrainConfig, train, validation_loss


def _cfg(tmp_path, **kw):
    base = dict(run_dir=str(tmp_path / "run"), preset="tiny", limit_molecules=8, batch_size=8,
                lr=2e-3, ema_decay=0.9, max_steps=300, val_every=0, ckpt_every=300, log_every=50,
                quiet=True, threads=1)
    base.update(kw)
    return TrainConfig(**base)


def test_tiny_model_overfits_a_handful_of_qm9_molecules(tmp_path, qm9_train):
    """Fixed-noise loss on the 8 training molecules falls by ≥ 4× in 300 steps (measured: ~6×,
    1.03 → 0.16)."""
    eight = qm9_train.subset(np.arange(8))
    cfg = _cfg(tmp_path)
    torch.manual_seed(cfg.seed)
    from ead.config import ModelConfig
    from ead.pipeline import build_denoiser

    fresh = EAD(ModelConfig.from_preset("tiny", size_histogram=eight.size_histogram()),
                build_denoiser(ModelConfig.from_preset("tiny")))
    before = validation_loss(fresh, eight, 8, 0, 8)
    summary = train(cfg)
    after = validation_loss(EAD.from_pretrained(tmp_path / "run" / "model"), eight, 8, 0, 8)
    assert summary["step"] == 300
    assert before / after >= 4.0, (before, after)
    log = (tmp_path / "run" / "log.csv").read_text().splitlines()
    assert log[0].startswith("step,epoch,loss") and len(log) == 1 + 300 // 50


def test_resume_is_exact(tmp_path):
    straight = _cfg(tmp_path / "a", max_steps=6, ckpt_every=3, window=9)
    train(straight)
    first = _cfg(tmp_path / "b", max_steps=3, ckpt_every=3, window=9)
    train(first)
    # resume the same run with a larger budget (as after a kill); training config may change
    second = _cfg(tmp_path / "b", max_steps=6, ckpt_every=3, window=9)
    s = train(second)
    assert s["start_step"] == 3 and s["step"] == 6
    a = load_file(str(Checkpointer(tmp_path / "a" / "run").latest() / "state.safetensors"))
    b = load_file(str(Checkpointer(tmp_path / "b" / "run").latest() / "state.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_resume_refuses_another_model(tmp_path):
    train(_cfg(tmp_path, max_steps=2, ckpt_every=2))
    with pytest.raises(EADError, match="another model"):
        train(_cfg(tmp_path, max_steps=4, window=3))


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    train(_cfg(tmp_path, max_steps=2, ckpt_every=2))
    latest = Checkpointer(tmp_path / "run").latest()
    (latest / "state.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(EADError, match="corrupt checkpoint"):
        train(_cfg(tmp_path, max_steps=4))


def test_exported_model_loads_and_records_training(tmp_path):
    train(_cfg(tmp_path, max_steps=2, ckpt_every=2))
    meta = json.loads((tmp_path / "run" / "model" / "config.json").read_text())
    assert meta["format"] == "ead-model" and meta["card"]["training_steps"] == 2
    m = EAD.from_pretrained(tmp_path / "run" / "model")
    assert m.config.window == 9 and m.config.size_histogram


def test_periodic_sample_metrics_are_logged(tmp_path):
    train(_cfg(tmp_path, max_steps=2, ckpt_every=2, sample_every=2, sample_molecules=3, sample_steps=4,
               log_every=1))
    rows = (tmp_path / "run" / "log.csv").read_text().splitlines()
    header = rows[0].split(",")
    logged = [dict(zip(header, r.split(","))) for r in rows[1:]]
    stab = [r for r in logged if r["molecule_stability"] != ""]
    assert len(stab) == 1 and stab[0]["step"] == "2"
    assert 0.0 <= float(stab[0]["atom_stability"]) <= 1.0
