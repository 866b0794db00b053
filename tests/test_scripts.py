"""The operator scripts in scripts/ (moving a training run to and from a rented GPU, packing the
QM9 cache for it). Small models, few steps: they check the plumbing, not the quality."""

import json
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "benchmarks"))


def test_gpu_session_gives_a_resumed_run_its_earlier_time_back(tmp_path):
    """ead train's --max-hours counts a resumed run's earlier time; the session adds it back."""
    import gpu_session

    from ead.train import TrainConfig, train

    assert gpu_session.resumed_hours(tmp_path / "none") == 0.0
    train(TrainConfig(run_dir=str(tmp_path / "r"), preset="micro", limit_molecules=8, batch_size=8, max_steps=2,
                      ckpt_every=2, val_every=0, quiet=True, threads=1))
    state = json.loads((gpu_session.latest_step_dir(tmp_path / "r") / "state.json").read_text())
    assert state["elapsed_s"] > 0
    assert gpu_session.resumed_hours(tmp_path / "r") == state["elapsed_s"] / 3600


def test_qm9_pack_round_trip_is_bit_exact(tmp_path):
    import qm9_pack

    rng = np.random.default_rng(0)
    src = tmp_path / "c.npz"
    arrays = {"version": np.array(1), "positions": rng.normal(size=(500, 3)).astype(np.float32),
              "atomic_numbers": rng.integers(1, 10, 500).astype(np.uint8),
              "names": np.array(["mu", "alpha"]), "properties": rng.normal(size=(20, 6)).astype(np.float32)}
    np.savez(src, **arrays)
    qm9_pack.pack(src, tmp_path / "c.pack")
    qm9_pack.unpack(tmp_path / "c.pack", tmp_path / "out" / "c.npz")
    back = np.load(tmp_path / "out" / "c.npz", allow_pickle=False)
    assert sorted(back.files) == sorted(arrays)
    for k, v in arrays.items():
        assert back[k].dtype == v.dtype and back[k].shape == v.shape and np.array_equal(back[k], v), k


@pytest.mark.slow
def test_gpu_session_runs_end_to_end_on_cpu(tmp_path):
    """The one-command GPU session, shrunk to a micro model on the CPU (≈ 1–2 minutes)."""
    from ead.train import TrainConfig, train

    src = tmp_path / "ship"   # on all of QM9, as the session's own training (or it refuses to resume it)
    train(TrainConfig(run_dir=str(src), preset="micro", batch_size=8, max_steps=2, ckpt_every=2, val_every=0,
                      quiet=True, threads=1))
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_session.py"), "--out", str(out),
                        "--work", str(tmp_path / "work"), "--budget", "80", "--train-until", "30",
                        "--sample-until", "55", "--accelerator", "cpu", "--preset", "micro",
                        "--batch-size", "8", "--ship-from", str(src), "--study-ckpt-every", "2",
                        "--n-card", "2", "--n-study", "2", "--n-sweep", "2", "--steps", "3",
                        "--step-grid", "3", "--workers", "1", "--val-every", "0"],
                       capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    names = sorted(p.name for p in out.iterdir())
    assert {"log.txt", "misc.tar", "samples.tar", "ship.tar", "study.tar"} <= set(names), names
    assert len(names) <= 8
    import gpu_session

    first = gpu_session.latest_step_dir(tmp_path / "work" / "runs" / "ship")
    assert int(first.name.rsplit("-", 1)[1]) > 2   # the shipped run trained on

    # a warm second call resumes the run the first left in --work, with nothing carried
    out2 = tmp_path / "out2"
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_session.py"), "--out", str(out2),
                        "--work", str(tmp_path / "work"), "--budget", "60", "--train-until", "30",
                        "--sample-until", "0", "--accelerator", "cpu", "--preset", "micro",
                        "--batch-size", "8", "--continue-here", "--runs", "ship", "--no-bench",
                        "--val-every", "0"], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    log2 = (out2 / "log.txt").read_text()
    assert f"continuing the run left here at {first.name}" in log2
    assert "no sampling" in log2 and not (out2 / "samples.tar").exists()   # --sample-until 0: no workers
    with tarfile.open(out2 / "ship.tar") as tar:
        steps = [int(n.rsplit("-", 1)[1]) for n in tar.getnames() if n.startswith("ship/checkpoints/step-")
                 and n.count("/") == 2]
    assert steps and steps[0] > int(first.name.rsplit("-", 1)[1])


def test_gpu_session_continue_here_on_a_fresh_machine_exits_at_once(tmp_path, capsys):
    import gpu_session

    rc = gpu_session.main(["--out", str(tmp_path / "out"), "--work", str(tmp_path / "work"), "--continue-here",
                           "--ship-from", str(tmp_path)])
    assert rc == 3 and not (tmp_path / "out").exists()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--ship-from" in err[0]


def test_gpu_bring_back_joins_the_parts_and_points_current_run_at_the_run(tmp_path):
    import gpu_bring_back

    from ead.train import TrainConfig, train

    dev = tmp_path / "device" / "runs"
    train(TrainConfig(run_dir=str(dev / "ship"), preset="micro", limit_molecules=8, batch_size=8, max_steps=2,
                      ckpt_every=2, val_every=0, quiet=True, threads=1))
    with tarfile.open(tmp_path / "ship.tar", "w") as tar:   # as gpu_session.py packs it
        for m in ("ship/checkpoints/step-00000002", "ship/checkpoints/latest", "ship/model", "ship/log.csv",
                  "ship/train_config.json"):
            tar.add(dev / m, arcname=m)
    blob = (tmp_path / "ship.tar").read_bytes()
    files_at = tmp_path / "files"
    files_at.mkdir()
    (files_at / "ship.tar.part00").write_bytes(blob[: len(blob) // 2])
    root = tmp_path / "repo"
    (root / "training" / "qm9-small-c9-gpu4").mkdir(parents=True)
    run = gpu_bring_back.next_gpu_run(root / "training")
    assert run.name == "qm9-small-c9-gpu5"
    with pytest.raises(SystemExit, match="incomplete or corrupt"):   # a part is missing
        gpu_bring_back.bring_back(files_at, run, root)
    assert not run.exists() and not (root / "training" / "current_run").exists()
    (files_at / "ship.tar.part01").write_bytes(blob[len(blob) // 2 :])
    got = gpu_bring_back.bring_back(files_at, run, root)
    assert got["step"] == 2 and got["batch_size"] == 8
    assert json.loads((run / "train_config.json").read_text())["run_dir"] == "training/qm9-small-c9-gpu5"
    assert (root / "training" / "current_run").read_text().strip() == "training/qm9-small-c9-gpu5"
    assert (run / "checkpoints" / "step-00000002" / "state.safetensors").exists()
    assert sorted(p.name for p in (root / "training").iterdir()) == ["current_run", "qm9-small-c9-gpu4",
                                                                     "qm9-small-c9-gpu5"]   # no temp left
    with pytest.raises(SystemExit, match="exists already"):
        gpu_bring_back.bring_back(files_at, run, root)


def test_finish_run_records_a_run_and_takes_a_finished_one_out_of_the_tree(tmp_path):
    """scripts/finish_run.py: the row comes from the run's own files; a finished run keeps only its log."""
    import finish_run

    from ead.train import TrainConfig, train

    root = tmp_path / "repo"
    (root / "training").mkdir(parents=True)
    (root / "training" / "runs.json").write_text(json.dumps([{"run": "older", "role": "x"}]))
    first, second = root / "training" / "a", root / "training" / "b"
    train(TrainConfig(run_dir=str(first), preset="micro", limit_molecules=8, batch_size=8, max_steps=4,
                      ckpt_every=2, val_every=2, val_molecules=8, quiet=True, threads=1))
    train(TrainConfig(run_dir=str(second), preset="micro", limit_molecules=8, batch_size=8, max_steps=2,
                      ckpt_every=2, val_every=0, quiet=True, threads=1, init_from=str(first)))
    finish_run.record(second, "head of the lineage", head=True, root=root)
    finish_run.record(first, "earlier stretch", head=False, root=root)
    table = {e["run"]: e for e in json.loads((root / "training" / "runs.json").read_text())}
    assert list(table) == ["older", "b", "a"]
    a, b = table["a"], table["b"]
    assert (a["steps"], a["batch_size"], a["epochs"], a["final_val_step"]) == (4, 8, 0.0, 4)
    assert a["final_val_loss"] > 0 and a["status"] == "finished" and a["log"] == "training/logs/a.csv"
    assert not first.exists() and (root / "training" / "logs" / "a.csv").read_text().startswith("step,")
    assert b["init_from"] == {"run": "a", "step": 4} and b["final_val_loss"] is None
    assert second.is_dir() and "training/b/checkpoints/" in b["status"] and b["log"] == "training/b/log.csv"
    assert b["config"]["init_from"] == str(first)
    # recording again replaces the row in place
    finish_run.record(second, "head, again", head=True, root=root)
    table = json.loads((root / "training" / "runs.json").read_text())
    assert [e["run"] for e in table] == ["older", "b", "a"] and table[1]["role"] == "head, again"
    with pytest.raises(SystemExit):
        finish_run.record(tmp_path / "nothing", "x", head=False, root=root)
