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
                lr=2e-3, warmup_steps=0, ema_decay=0.9, max_steps=300, val_every=0, ckpt_every=300,
                log_every=50, quiet=True, threads=1, precision="32-true")   # fixed whatever the defaults
    base.update(kw)
    return TrainConfig(**base)


def test_tiny_model_overfits_a_handful_of_qm9_molecules(tmp_path, qm9_train):
    """Fixed-noise loss on the 8 training molecules falls by ≥ 4× in 300 steps (measured: ~6×,
    1.03 → 0.16)."""
    eight = qm9_train.subset(np.arange(8))
    cfg = _cfg(tmp_path)
    torch.manual_seed(cfg.seed)
    from ead.model.config import ModelConfig
    from ead.model.build import build_denoiser

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


def test_init_from_continues_another_run_with_its_lineage(tmp_path):
    """--init-from starts a new run (here with another batch size) from a run's last checkpoint:
    weights, EMA and optimizer moments carry over, and the exported card records both stretches."""
    train(_cfg(tmp_path / "a", max_steps=4, ckpt_every=2, window=3))
    src = load_file(str(Checkpointer(tmp_path / "a" / "run").latest() / "state.safetensors"))
    cont = _cfg(tmp_path / "b", max_steps=3, ckpt_every=3, window=3, batch_size=4,
                init_from=str(tmp_path / "a" / "run"), precision="bf16-mixed")
    s = train(cont)
    assert s["start_step"] == 0 and s["step"] == 3
    card = json.loads((tmp_path / "b" / "run" / "model" / "config.json").read_text())["card"]
    assert card["continues"][0]["steps"] == 4 and card["continues"][0]["batch_size"] == 8
    assert card["total_training_steps"] == 7 and card["total_molecules_seen"] == 4 * 8 + 3 * 4
    assert card["precision"] == "bf16-mixed" and card["continues"][0]["precision"] == "32-true"
    # the first step really started from the source's weights: one more step of the source with
    # the continuation's data moves the weights by the same small amount, not a re-initialisation
    out = load_file(str(Checkpointer(tmp_path / "b" / "run").latest() / "state.safetensors"))
    drift = max(float((out[k] - src[k]).abs().max()) for k in src if k.startswith("model."))
    fresh = max(float(v.abs().max()) for k, v in src.items() if k.startswith("model."))
    assert drift < 0.1 * fresh
    # a restarted continuation resumes itself, not the source again (with its own settings: a
    # changed one, e.g. the precision, would be refused without --allow-changes)
    s2 = train(_cfg(tmp_path / "b", max_steps=5, ckpt_every=5, window=3, batch_size=4,
                    init_from=str(tmp_path / "a" / "run"), precision="bf16-mixed"))
    assert s2["start_step"] == 3 and s2["step"] == 5
    card = json.loads((tmp_path / "b" / "run" / "model" / "config.json").read_text())["card"]
    assert len(card["continues"]) == 1 and card["total_training_steps"] == 9
    # a branch from one of the source's step folders: the lineage names the run folder (whose log
    # the training plot reads) and the step it branched at
    step2 = Checkpointer(tmp_path / "a" / "run").root / "step-00000002"
    train(_cfg(tmp_path / "d", max_steps=1, ckpt_every=1, window=3, init_from=str(step2)))
    seg = json.loads((tmp_path / "d" / "run" / "model" / "config.json").read_text())["card"]["continues"][0]
    assert seg["run"] == str(tmp_path / "a" / "run") and seg["steps"] == 2


def test_init_from_refuses_another_model_and_missing_runs(tmp_path):
    train(_cfg(tmp_path / "a", max_steps=2, ckpt_every=2, window=3))
    with pytest.raises(EADError, match="another model"):
        train(_cfg(tmp_path / "b", max_steps=2, window=9, init_from=str(tmp_path / "a" / "run")))
    with pytest.raises(EADError, match="no checkpoint"):
        train(_cfg(tmp_path / "c", max_steps=2, init_from=str(tmp_path / "nowhere")))


def test_keep_zero_keeps_every_checkpoint(tmp_path):
    train(_cfg(tmp_path, max_steps=6, ckpt_every=2, keep_checkpoints=0))
    steps = sorted(p.name for p in (tmp_path / "run" / "checkpoints").glob("step-*"))
    assert steps == ["step-00000002", "step-00000004", "step-00000006"]


def test_export_checkpoint_at_a_given_step(tmp_path):
    from ead.train import export_checkpoint

    train(_cfg(tmp_path, max_steps=4, ckpt_every=2, keep_checkpoints=0))
    out = export_checkpoint(tmp_path / "run" / "checkpoints" / "step-00000002", tmp_path / "m2")
    m = EAD.from_pretrained(out)
    assert m.card["training_steps"] == 2
    state = load_file(str(tmp_path / "run" / "checkpoints" / "step-00000002" / "state.safetensors"))
    for k, v in m.denoiser.state_dict().items():
        if f"ema.{k}" in state:
            assert torch.equal(v, state[f"ema.{k}"]), k


def test_restored_optimizer_moments_follow_the_model_to_its_device():
    """A checkpoint is restored after the model has been placed on its device: the AdamW moments go
    to each parameter's device (a resumed CUDA run once failed with them left on the CPU). The
    'meta' device stands in for the GPU here."""
    from ead.train.checkpoint import load_optimizer_tensors as _load_optimizer_tensors

    model = torch.nn.Linear(3, 1, bias=False, device="meta")
    w = model.weight
    opt = torch.optim.AdamW([w], amsgrad=True)
    _load_optimizer_tensors(opt, model, {"optim.weight.step": torch.tensor(5.0),
                                         "optim.weight.exp_avg": torch.ones(1, 3),
                                         "optim.weight.exp_avg_sq": torch.ones(1, 3),
                                         "optim.weight.max_exp_avg_sq": torch.ones(1, 3)})
    state = opt.state[w]
    assert state["exp_avg"].device.type == "meta" and state["max_exp_avg_sq"].device.type == "meta"
    assert state["step"].device.type == "cpu"


def test_gradnorm_history_and_clipping_match_edm_on_host():
    """The device-side history (ring buffer) gives EDM's threshold 1.5·mean + 2·std over the last 50
    recorded norms, and the tensor-limit clipping scales exactly as torch's clip_grad_norm_ —
    over 120 steps with spikes that do get clipped."""
    from collections import deque

    from ead.train import GradNormHistory, clip_grad_norm_

    rng = np.random.default_rng(0)
    ref, hist = deque([3000.0], maxlen=50), GradNormHistory()
    clipped = 0
    for k in range(120):
        grads = [torch.tensor(rng.normal(size=(4, 3)) * (50.0 if k % 17 == 5 else 1.0), dtype=torch.float32)
                 for _ in range(3)]
        a = [torch.nn.Parameter(torch.zeros(4, 3)) for _ in grads]
        b = [torch.nn.Parameter(torch.zeros(4, 3)) for _ in grads]
        for p, q, g in zip(a, b, grads):
            p.grad, q.grad = g.clone(), g.clone()
        limit = float(1.5 * np.mean(ref) + 2 * np.std(ref))
        t = hist.threshold()
        assert abs(float(t) - limit) <= 1e-9 * limit, k
        norm_ref = float(torch.nn.utils.clip_grad_norm_(a, max_norm=limit))
        norm = clip_grad_norm_(b, t)
        assert abs(float(norm) - norm_ref) <= 1e-6 * norm_ref
        for p, q in zip(a, b):
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-6, atol=0)
        clipped += norm_ref > limit
        ref.append(min(norm_ref, limit))
        hist.record(norm, t)
        np.testing.assert_allclose(hist.values, list(ref), rtol=1e-6)
    assert clipped >= 3     # the spikes after the first 50 steps were clipped


def test_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    """The NaN check runs on the device and is read at log/save time: a NaN at step 6 stops the run
    at the next save (step 8) with one clear error, and the latest checkpoint stays step 4."""
    import ead.train.generator as tr   # where the loop looks the loss up

    real, calls = tr.diffusion_loss, {"n": 0}

    def poisoned(*args):
        calls["n"] += 1
        loss = real(*args)
        return loss * float("nan") if calls["n"] == 6 else loss

    monkeypatch.setattr(tr, "diffusion_loss", poisoned)
    with pytest.raises(EADError, match="NaN or infinite between steps 5 and 8"):
        train(_cfg(tmp_path, max_steps=12, ckpt_every=4, log_every=100))
    assert Checkpointer(tmp_path / "run").latest().name == "step-00000004"


def test_run_clock_turns_sigterm_into_a_stop_request_and_counts_earlier_time():
    import os
    import signal

    from ead.train import RunClock

    before = signal.getsignal(signal.SIGTERM)
    clock = RunClock(elapsed=7200.0, max_hours=2.0)
    try:
        assert clock.elapsed >= 7200.0 and clock.out_of_time() and not clock.keep_going()   # earlier hours count
        other = RunClock(0.0, None)
        assert not other.out_of_time()
        other.restore()                                           # clock's handler is back
        os.kill(os.getpid(), signal.SIGTERM)                      # would kill the process without it
        assert clock.stopped
    finally:
        clock.restore()
    assert signal.getsignal(signal.SIGTERM) == before


def test_bf16_training_warns_only_on_a_cpu_without_bf16_units(monkeypatch):
    import torch

    from ead import device as device_mod
    from ead.train import generator as train_mod

    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    for flags, fast in (({"avx2", "amx_bf16"}, True), ({"avx2", "avx512f", "avx512_bf16"}, True),
                        ({"avx2", "avx512f"}, False), ({"avx2"}, False)):
        monkeypatch.setattr(device_mod, "cpu_flags", lambda flags=flags: frozenset(flags))
        assert device_mod.has_bf16_units(cpu) == fast
        warned = train_mod.precision_warning("bf16-mixed", cpu)
        assert (warned is None) == fast
        assert train_mod.precision_warning("32-true", cpu) is None
        assert train_mod.precision_warning("bf16-mixed", gpu) is None
    assert "32-true" in warned and "AVX-512 BF16" in warned


def test_tensorboard_scalars_follow_the_log_and_a_resume_purges_the_lost_steps(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = _cfg(tmp_path, max_steps=6, ckpt_every=3, log_every=2, keep_checkpoints=0, tensorboard=True)
    train(cfg)
    # a crash after step 6's log row but before its checkpoint: the run resumes at step 3
    ckpts = tmp_path / "run" / "checkpoints"
    (ckpts / "latest").write_text("step-00000003")
    import shutil

    shutil.rmtree(ckpts / "step-00000006")
    assert train(cfg)["start_step"] == 3

    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    events.Reload()
    assert {"train/loss", "train/grad_norm", "train/epoch", "train/s_per_step"} <= set(events.Tags()["scalars"])
    loss = events.Scalars("train/loss")
    assert [e.step for e in loss] == [2, 4, 6]   # steps 4 and 6 of the lost stretch are purged
    rows = [r.split(",") for r in (tmp_path / "run" / "log.csv").read_text().splitlines()[1:]]
    assert [int(r[0]) for r in rows] == [2, 4, 6]
    for event, row in zip(loss, rows):
        assert event.value == pytest.approx(float(row[2]), rel=1e-5)


def test_tensorboard_without_the_package_and_a_bad_filter_size_are_clear_errors(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_tensorboard(name, *args, **kw):
        if name.startswith("torch.utils.tensorboard"):
            raise ImportError(name)
        return real_import(name, *args, **kw)

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    with pytest.raises(EADError, match="pip install tensorboard"):
        train(_cfg(tmp_path, max_steps=1, tensorboard=True))
    monkeypatch.undo()
    with pytest.raises(EADError, match="filter-size"):
        train(_cfg(tmp_path, max_steps=1, filter_size=0))
    with pytest.raises(EADError, match="≤ 2 atoms"):
        train(_cfg(tmp_path, max_steps=1, filter_size=2))


def test_filter_size_keeps_only_small_molecules(tmp_path):
    s = train(_cfg(tmp_path, max_steps=2, ckpt_every=2, limit_molecules=None, filter_size=9))
    card = EAD.from_pretrained(tmp_path / "run" / "model").config
    sizes = [int(m) for m in card.size_histogram]
    assert s["step"] == 2 and max(sizes) <= 9 and min(sizes) >= 1


def test_float32_training_on_a_cpu_with_bf16_units_points_to_bf16_mixed(tmp_path, monkeypatch, capsys):
    from ead.train import TrainConfig, train
    from ead.train import generator as train_mod

    def cfg(units, steps, precision, **kw):
        return TrainConfig(run_dir=str(tmp_path / str(units)), preset="micro", limit_molecules=16, batch_size=8,
                           max_steps=steps, val_every=0, ckpt_every=1, threads=1, accelerator="cpu",
                           precision=precision, **kw)

    for units in (True, False):
        monkeypatch.setattr(train_mod, "has_bf16_units", lambda device, units=units: units)
        train(cfg(units, 1, "32-true"))   # asked for explicitly: "auto" would pick bf16 there
        err = capsys.readouterr().err
        assert ("note: this CPU multiplies bfloat16 in hardware: --precision bf16-mixed trains" in err) == units
    # a resumed float32 run: the advice must be one that works (precision is a recorded change)
    monkeypatch.setattr(train_mod, "has_bf16_units", lambda device: True)
    train(cfg(True, 2, "auto"))
    assert "--precision bf16-mixed --allow-changes (recorded in the card) trains" in capsys.readouterr().err
    assert train(cfg(True, 3, "bf16-mixed", allow_changes=True))["step"] == 3


def test_auto_precision_picks_bf16_only_on_cpus_with_bf16_units_and_keeps_a_resumed_runs(monkeypatch):
    from ead import device as device_mod

    for units, expect in ((True, "bf16-mixed"), (False, "32-true")):
        monkeypatch.setattr(device_mod, "has_bf16_units", lambda device, units=units: units)
        assert device_mod.training_precision("auto", "cpu") == expect
        assert device_mod.training_precision("auto", "cpu", saved="32-true") == "32-true"   # a resumed run's own
        assert device_mod.training_precision("16-mixed", "cpu") == "16-mixed"               # asked for: kept
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert device_mod.training_precision("auto", "auto") == "32-true"   # a GPU: float32 until bf16 is checked there


def test_a_float32_run_resumed_with_auto_precision_stays_float32(tmp_path, monkeypatch):
    from ead import device as device_mod
    from ead.train import TrainConfig, train

    def cfg(steps, precision):
        return TrainConfig(run_dir=str(tmp_path / "run"), preset="micro", limit_molecules=16, batch_size=8,
                           max_steps=steps, val_every=0, ckpt_every=1, threads=1, accelerator="cpu",
                           precision=precision, quiet=True)

    train(cfg(1, "32-true"))
    monkeypatch.setattr(device_mod, "has_bf16_units", lambda device: True)   # as on an AMX or Zen 4 CPU
    assert train(cfg(2, "auto"))["step"] == 2     # resumes: no refused "precision change"
    saved = json.loads((tmp_path / "run" / "train_config.json").read_text())
    assert saved["precision"] == "32-true"


def test_a_run_resumed_at_its_last_step_writes_its_missing_model_folder(tmp_path):
    import shutil

    from ead.train import train

    train(_cfg(tmp_path, max_steps=2, ckpt_every=2))
    model = tmp_path / "run" / "model"
    before = (model / "model.safetensors").read_bytes()
    shutil.rmtree(model)   # as in a clone: the checkpoint is committed, the exported model is not
    assert train(_cfg(tmp_path, max_steps=2, ckpt_every=2))["step"] == 2
    assert (model / "model.safetensors").read_bytes() == before
