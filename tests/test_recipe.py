"""Recipe options of `ead train` (docs/recipe.md): learning-rate schedule, loss weighting over t,
time sampling, and the compiled training step. Every default is EDM's recipe."""

import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from ead import EADError
from ead.diffusion.loss import TrainingWindow, loss_weights
from ead.diffusion.noise import NoiseSchedule
from ead.train import Checkpointer, TrainConfig, train


def test_lr_schedule_warmup_then_cosine_to_zero():
    cfg = TrainConfig(lr=3e-4, warmup_steps=10, lr_schedule="cosine", max_steps=110)
    assert cfg.lr_at(0) == pytest.approx(3e-5)          # (step + 1) / warm-up
    assert cfg.lr_at(9) == pytest.approx(3e-4)
    assert cfg.lr_at(10) == pytest.approx(3e-4)
    assert cfg.lr_at(60) == pytest.approx(1.5e-4)       # half way down the cosine
    assert cfg.lr_at(110) == pytest.approx(0.0, abs=1e-12)
    lrs = [cfg.lr_at(s) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))
    assert TrainConfig(lr=1e-4).lr_at(12345) == 1e-4     # EDM: constant


def test_min_snr_weights_cap_the_low_noise_end():
    noise = NoiseSchedule("polynomial_2", 1000)
    t = torch.arange(0, 1001)
    w = loss_weights(noise, t, "min-snr", 5.0)
    snr = torch.exp(noise.log_snr(t))
    assert loss_weights(noise, t, "uniform") is None
    assert torch.all(w <= 1.0) and torch.all(w > 0)
    assert torch.all(w[snr <= 5.0] == 1.0)                      # noisy end untouched
    low = snr > 5.0
    assert torch.allclose(w[low], 5.0 / snr[low])               # clean end: γ / SNR
    assert w[0] < 1e-3                                          # t = 0 nearly ignored


def test_low_noise_time_sampling_favours_small_t():
    g = torch.Generator().manual_seed(0)
    mol = torch.arange(20000)
    uniform = TrainingWindow(1000, 0).sample(mol, 20000, g)
    low = TrainingWindow(1000, 0, time_sampling="low-noise").sample(mol, 20000, g)
    assert int(low.min()) >= 0 and int(low.max()) <= 1000
    assert abs(float(uniform.float().median()) - 500) < 20
    assert abs(float(low.float().median()) - 250) < 20          # ⌊(T+1)·u²⌋: median (T+1)/4
    with pytest.raises(EADError):
        TrainingWindow(1000, 0, time_sampling="edm")


@pytest.mark.parametrize("bad", [dict(lr_schedule="linear"), dict(loss_weight="snr"),
                                 dict(time_sampling="high"), dict(warmup_steps=-1),
                                 dict(min_snr_gamma=0.0)])
def test_bad_recipe_options_fail_before_training(bad, tmp_path):
    with pytest.raises(EADError):
        TrainConfig(run_dir=str(tmp_path / "r"), **bad).check()


def test_cli_rejects_an_unknown_recipe_option_in_one_line(tmp_path):
    r = subprocess.run([sys.executable, "-m", "ead", "train", "--loss-weight", "vlb",
                        "--run-dir", str(tmp_path / "r")], capture_output=True, text=True)
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1 and "--loss-weight" in r.stderr


def _cfg(tmp_path, **kw):
    base = dict(run_dir=str(tmp_path / "run"), preset="micro", limit_molecules=16, batch_size=8,
                lr=1e-3, max_steps=6, val_every=0, ckpt_every=3, log_every=3, quiet=True, threads=1,
                window=9, lr_schedule="cosine", warmup_steps=2, loss_weight="min-snr",
                time_sampling="low-noise")
    base.update(kw)
    return TrainConfig(**base)


def test_recipe_run_resumes_exactly(tmp_path, monkeypatch):
    """A stopped run with every recipe option on continues the same lr curve, times and noise."""
    from ead.train.loop import RunClock

    train(_cfg(tmp_path / "a"))
    keep_going, calls = RunClock.keep_going, []
    monkeypatch.setattr(RunClock, "keep_going", lambda self: len(calls.append(1) or calls) <= 3 and keep_going(self))
    assert train(_cfg(tmp_path / "b"))["step"] == 3      # stopped after 3 of 6 steps, as by a signal
    monkeypatch.undo()
    s = train(_cfg(tmp_path / "b"))
    assert s["start_step"] == 3 and s["step"] == 6 and math.isfinite(s["last_loss"])
    a = load_file(str(Checkpointer(tmp_path / "a" / "run").latest() / "state.safetensors"))
    b = load_file(str(Checkpointer(tmp_path / "b" / "run").latest() / "state.safetensors"))
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_recipe_options_change_the_training(tmp_path):
    """Each option reaches the step: the weights after 6 steps differ from EDM's recipe."""
    base = dict(lr_schedule="constant", warmup_steps=0, loss_weight="uniform", time_sampling="uniform")
    train(_cfg(tmp_path / "edm", **base))
    ref = load_file(str(Checkpointer(tmp_path / "edm" / "run").latest() / "state.safetensors"))
    for name, option in [("cos", dict(lr_schedule="cosine")), ("snr", dict(loss_weight="min-snr")),
                         ("low", dict(time_sampling="low-noise"))]:
        train(_cfg(tmp_path / name, **{**base, **option}))
        got = load_file(str(Checkpointer(tmp_path / name / "run").latest() / "state.safetensors"))
        assert any(not torch.equal(ref[k], got[k]) for k in ref if k.startswith("model.")), name


@pytest.mark.slow
def test_compiled_training_matches_eager(tmp_path):
    """--compile trains the same model: weights after 6 steps agree with eager to float rounding."""
    eager = _cfg(tmp_path / "eager")
    compiled = _cfg(tmp_path / "compiled", compile=True)
    train(eager)
    train(compiled)
    a = load_file(str(Checkpointer(tmp_path / "eager" / "run").latest() / "state.safetensors"))
    b = load_file(str(Checkpointer(tmp_path / "compiled" / "run").latest() / "state.safetensors"))
    for k in a:
        if k.startswith("model."):
            np.testing.assert_allclose(a[k].numpy(), b[k].numpy(), rtol=1e-4, atol=1e-6, err_msg=k)


def test_a_cosine_run_refuses_another_length_on_resume(tmp_path):
    """max_steps is free to change on resume, except where it shapes the cosine learning rate."""
    train(_cfg(tmp_path, max_steps=3))
    with pytest.raises(EADError, match="max-steps 3 → 9"):
        train(_cfg(tmp_path, max_steps=9))
    train(_cfg(tmp_path, max_steps=9, lr_schedule="constant", allow_changes=True))   # allowed, recorded


def test_a_miscompiled_network_is_refused_before_training(tmp_path, monkeypatch):
    """--compile first compares the compiled network's loss with the eager one's on the run's next
    batch (torch 2.13's inductor computed a different loss for 6-layer EGNNs); a mismatch stops the
    run with one line and writes nothing."""
    import ead.train.generator as gen

    def miscompile(model):   # what a wrong kernel does to the loss: the outputs move
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(1.01)

    monkeypatch.setattr(gen, "compile_for_training", miscompile)
    with pytest.raises(EADError, match="--compile changes this network's loss"):
        train(_cfg(tmp_path / "bad", compile=True))
    assert not (tmp_path / "bad" / "run" / "log.csv").exists()
    monkeypatch.setattr(gen, "compile_for_training", lambda model: None)   # a faithful compilation
    train(_cfg(tmp_path / "good", compile=True))
    assert Checkpointer(tmp_path / "good" / "run").latest() is not None
