"""What docs/reliability.md promises about bad input, resources, crashes and resumes."""

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from ead.cli import main
from ead.errors import EADError

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import adversarial  # noqa: E402


def _data(tmp_path, n=12):
    path = tmp_path / "mols.xyz"
    path.write_text(adversarial.xyz_text(adversarial.molecules(n)))
    return path


def _train(tmp_path, data, *extra):
    return main(adversarial.train_argv(data, tmp_path / "run", *extra))


def test_resume_with_changed_settings_is_refused_unless_allowed_and_then_recorded(tmp_path, capsys):
    data = _data(tmp_path)
    assert _train(tmp_path, data, "--max-steps", "2") == 0
    # when and how long a run goes may change
    assert _train(tmp_path, data, "--max-steps", "3", "--ckpt-every", "5", "--log-every", "2") == 0
    capsys.readouterr()
    assert _train(tmp_path, data, "--max-steps", "4", "--lr", "0.01", "--no-clip-grad") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "lr 0.0003 → 0.01" in err[0] and "clip-grad True → False" in err[0]
    assert _train(tmp_path, data, "--max-steps", "4", "--lr", "0.01", "--no-clip-grad", "--allow-changes") == 0
    card = json.loads((tmp_path / "run" / "model" / "config.json").read_text())["card"]
    assert card["setting_changes"] == [{"step": 3, "lr": [0.0003, 0.01], "clip_grad": [True, False]}]
    # the new settings are now the run's: resuming with them again is no change
    assert _train(tmp_path, data, "--max-steps", "5", "--lr", "0.01", "--no-clip-grad") == 0


def test_full_disk_during_a_checkpoint_is_one_error_and_the_last_checkpoint_stays_usable(tmp_path, capsys, monkeypatch):
    import safetensors.torch

    from ead.train import Checkpointer

    data = _data(tmp_path)
    assert _train(tmp_path, data, "--max-steps", "2") == 0
    real, calls = safetensors.torch.save_file, {"n": 0}

    def full(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:   # the checkpoint of step 4 (step 3's and its model went through)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(*args, **kwargs)

    monkeypatch.setattr(safetensors.torch, "save_file", full)
    capsys.readouterr()
    assert _train(tmp_path, data, "--max-steps", "5") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ead: error:") and "No space left" in err[0]
    ckpts = tmp_path / "run" / "checkpoints"
    assert not [p for p in ckpts.iterdir() if p.name.startswith(".")]   # no temporary left
    latest = Checkpointer(tmp_path / "run").latest()
    assert latest.name == "step-00000003"
    Checkpointer.load(latest)
    monkeypatch.setattr(safetensors.torch, "save_file", real)
    assert _train(tmp_path, data, "--max-steps", "5") == 0   # and the run resumes from it


def _dead_pid() -> int:
    pid = 999_999
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return pid
        except PermissionError:
            pass
        pid -= 1


def test_stale_temporaries_of_dead_processes_are_removed_at_start_and_a_bad_pointer_falls_back(tmp_path, capsys):
    data = _data(tmp_path)
    assert _train(tmp_path, data, "--max-steps", "2", "--keep-checkpoints", "0") == 0
    ckpts, pid = tmp_path / "run" / "checkpoints", _dead_pid()
    (ckpts / f".step-00000009.tmp{pid}").mkdir()
    (ckpts / f".latest.tmp{pid}").write_text("x")
    (tmp_path / "run" / "model" / f".config.json.tmp{pid}").write_text("x")
    live = ckpts / f".step-00000010.tmp{os.getppid()}"   # a live process's: left alone
    live.mkdir()
    (ckpts / "latest").write_text("step-00000007")      # a kill between delete and rename
    assert _train(tmp_path, data, "--max-steps", "3") == 0
    assert "resuming from step-00000002" in capsys.readouterr().err   # the newest complete one
    left = sorted(p.name for p in ckpts.iterdir() if p.name.startswith("."))
    assert left == [live.name] and not list((tmp_path / "run" / "model").glob(".*"))


def _sample_argv(model, out, *extra):
    return [sys.executable, "-m", "ead", "sample", "--model", str(model), "-n", "60", "--batch-size", "2",
            "--steps", "50", "--precision", "fp32", "-o", str(out), *extra]


def test_sigterm_during_sample_keeps_its_finished_batches_and_the_same_command_continues_them(tmp_path):
    model = adversarial.base_model(tmp_path / "model")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    (tmp_path / "whole").mkdir()
    whole = tmp_path / "whole" / "out.sdf"   # the run never stopped
    subprocess.run(_sample_argv(model, whole, "--quiet"), env=env, check=True)
    out, partial = tmp_path / "out.sdf", tmp_path / ".out.sdf.partial"
    proc = subprocess.Popen(_sample_argv(model, out, "--quiet"), env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while not (partial / "batch-00002.npz").exists() and time.time() < deadline:
        time.sleep(0.02)
    assert (partial / "batch-00002.npz").exists(), "the sampler never finished a batch"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM and err.strip() == "ead: terminated"
    # no half-written output; the finished batches stay, each file whole
    assert not out.exists() and [p.name for p in tmp_path.glob(".out.sdf*")] == [partial.name]
    kept = sorted(p.name for p in partial.glob("batch-*.npz"))
    assert 3 <= len(kept) < 30 and kept[-1] == f"batch-{len(kept) - 1:05d}.npz"
    assert not [p for p in partial.iterdir() if ".tmp" in p.name]
    # another seed is another run: refused in one line, the folder left as it was
    other = subprocess.run(_sample_argv(model, out, "--seed", "1"), env=env, capture_output=True, text=True)
    assert other.returncode == 2 and "holds a stopped run with other settings (seed)" in other.stderr
    assert len(other.stderr.strip().splitlines()) == 1 and len(list(partial.glob("batch-*.npz"))) == len(kept)
    # the same command continues and writes exactly what the run that never stopped wrote
    again = subprocess.run(_sample_argv(model, out), env=env, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert f"continuing a stopped run: {2 * len(kept)} molecules in {len(kept)} batches" in again.stderr
    assert f"{2 * len(kept)} of them from the stopped run" in again.stderr
    assert out.read_bytes() == whole.read_bytes() and not partial.exists()


@pytest.mark.parametrize("damage", ["nan", "int"])
def test_a_model_with_nan_or_integer_weights_is_refused_in_one_line(tmp_path, capsys, damage):
    import torch
    from safetensors.torch import load_file, save_file

    model = adversarial.base_model(tmp_path / "model")
    state = load_file(str(model / "model.safetensors"))
    name = sorted(state)[0]
    state[name] = state[name].fill_(float("nan")) if damage == "nan" else state[name].to(torch.int64)
    save_file(state, str(model / "model.safetensors"))
    assert main(["sample", "--model", str(model), "-n", "2", "--quiet", "-o", str(tmp_path / "out.sdf")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and name in err[0]
    assert ("NaN or infinite" if damage == "nan" else "must be floating point") in err[0]
    assert not (tmp_path / "out.sdf").exists()


def test_a_sample_refused_before_its_first_batch_leaves_no_folder_behind(tmp_path, capsys):
    model = adversarial.base_model(tmp_path / "model")
    out = tmp_path / "out.sdf"
    # 100 molecules of 900 atoms: 81 M atom pairs in one batch, over the limit
    assert main(["sample", "--model", str(model), "-n", "100", "--batch-size", "100", "--num-atoms", "900",
                 "--quiet", "-o", str(out)]) == 2
    assert "atom pairs" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_a_stopped_samples_folder_is_refused_while_another_process_writes_it_and_when_corrupt(tmp_path):
    from ead.data.partial import PartialSample

    out = tmp_path / "out.sdf"
    store = PartialSample(out, {"seed": 0})
    assert store.open() == 0
    store.save(0, [(np.zeros((2, 3)), np.array([6, 8]))], [{"a": "1"}],
               {"network_calls": 5, "empty": 0, "diverged": 0}, np.arange(4, dtype=np.uint8))
    (store.folder / "owner").write_text(str(os.getppid()))   # a live process
    with pytest.raises(EADError, match="being written by another ead sample"):
        PartialSample(out, {"seed": 0}).open()
    (store.folder / "owner").write_text(str(_dead_pid()))
    again = PartialSample(out, {"seed": 0})
    assert again.open() == 1
    [(mols, props, counters, state)] = list(again.batches())
    assert [z.tolist() for _, z in mols] == [[6, 8]] and props == [{"a": "1"}]
    assert counters["network_calls"] == 5 and state.tolist() == [0, 1, 2, 3]
    again.save(1, [(np.zeros((1, 3)), np.array([6])), (np.zeros((3, 3)), np.array([6, 7, 8]))], [{}, {}],
               {"network_calls": 7, "empty": 1, "diverged": 2}, np.arange(3, 7, dtype=np.uint8))
    molecules, totals, last = again.summary()   # what a continuing run reads instead of the molecules
    assert molecules == 3 and totals == {"network_calls": 12, "empty": 1, "diverged": 2}
    assert last.tolist() == [3, 4, 5, 6]
    (store.folder / "batch-00000.npz").write_bytes(b"not an npz")
    with pytest.raises(EADError, match="corrupt batch"):
        list(again.batches())
    with pytest.raises(EADError, match="corrupt batch"):
        again.summary()
    blocked = tmp_path / "other.sdf"
    (tmp_path / ".other.sdf.partial").write_text("a file, not a folder")
    with pytest.raises(EADError, match="is not a folder"):
        PartialSample(blocked, {"seed": 0}).open()


def test_readers_are_bounded(tmp_path):
    import gzip

    from ead.data.files import read_molecules

    text = adversarial.xyz_text(adversarial.molecules(3))
    (tmp_path / "a.sdf").write_bytes(gzip.compress(adversarial.sdf_text(adversarial.molecules(3)).encode()))
    assert len(read_molecules(tmp_path / "a.sdf")) == 3   # gzip by its magic bytes, whatever the name
    (tmp_path / "b.xyz").write_text("1000000000000\n\nC 0 0 0\n")
    with pytest.raises(EADError, match="file ends after 1 of the 1,000,000,000,000 atoms"):
        read_molecules(tmp_path / "b.xyz")
    os.mkfifo(tmp_path / "c.sdf")
    with pytest.raises(EADError, match="not a regular file"):
        read_molecules(tmp_path / "c.sdf")
    (tmp_path / "d.xyz").write_text(text + "2\n\nC 1e20 0 0\nC 0 0 0\n")
    with pytest.raises(EADError, match=r"record 3 \(line 21\): coordinate 1e\+20 Å of atom 1 is beyond ±10000 Å"):
        read_molecules(tmp_path / "d.xyz")


def test_training_skips_charged_and_oversized_molecules_with_a_count_and_warns_on_coincident_atoms(tmp_path, capsys):
    mols = adversarial.molecules(12)
    mols[0] = (np.random.default_rng(0).normal(size=(40, 3)) * 5, np.full(40, 6))
    mols[1] = (np.zeros_like(mols[1][0]), mols[1][1])
    sdf = adversarial.sdf_text(mols).replace("M  END", "M  CHG  1   1   1\nM  END", 3)   # records 0-2
    (tmp_path / "m.sdf").write_text(sdf)
    assert _train(tmp_path, tmp_path / "m.sdf", "--max-molecule-atoms", "30") == 0
    err = capsys.readouterr().err
    assert "skipped 3 of 12 molecules with formal charges" in err
    assert "coincident" not in err   # the molecule at one point was charged, and skipped first
    mols[2] = (np.zeros_like(mols[2][0]), mols[2][1])
    (tmp_path / "n.xyz").write_text(adversarial.xyz_text(mols))
    assert main(adversarial.train_argv(tmp_path / "n.xyz", tmp_path / "run2", "--max-molecule-atoms", "30")) == 0
    err = capsys.readouterr().err
    assert "2 of 12 molecules" in err and "coincident" in err
    assert "skipped 1 molecules of more than 30 atoms" in err
