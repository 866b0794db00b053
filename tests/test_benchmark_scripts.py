"""The scripts that produce the card, the study and the sweeps (benchmarks/): sample cells to files,
evaluate them elsewhere, render the tables into the docs. Small models, few steps: they check the
plumbing and the arithmetic, not the quality."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import sample_grid  # noqa: E402


@pytest.fixture(scope="module")
def micro_model(tmp_path_factory, tiny_config):
    import torch

    from ead.pipeline import EAD

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "micro"
    EAD(tiny_config, device="cpu").save_pretrained(path)
    return str(path)


def _cells(model, labels, seeds=(0,), n=4, steps=3):
    return [{"label": lab, "model": model, "sampler": sampler, "n": n, "seeds": list(seeds),
             "options": {"steps": steps}} for lab, sampler in labels]


def test_cells_round_trip_and_evaluate(tmp_path, micro_model):
    cells = _cells(micro_model, [("card-synchronous", "synchronous"), ("card-adaptive", "adaptive")], seeds=(0, 1))
    assert sample_grid.sample_cells(cells, tmp_path, device="cpu", log=lambda m: None) == 4
    assert sample_grid.sample_cells(cells, tmp_path, device="cpu", log=lambda m: None) == 0  # done already
    mols, meta = sample_grid.load_cell(tmp_path / "card-adaptive-s1.npz")
    assert len(mols) == 4 and meta["seed"] == 1 and meta["settings"]["sampler"] == "adaptive"
    assert all(p.shape == (len(z), 3) and np.isfinite(p).all() for p, z in mols)
    res = sample_grid.evaluate_cells(tmp_path, reference=None, log=lambda m: None)
    assert set(res) == {"card-synchronous", "card-adaptive"}
    entry = res["card-adaptive"]
    assert entry["molecules"] == 8 and len(entry["runs"]) == 2
    runs = [r["validity"] for r in entry["runs"]]
    assert entry["mean"]["validity"] == pytest.approx(np.mean(runs))
    assert entry["sd"]["validity"] == pytest.approx(np.std(runs, ddof=1))


def test_deadline_and_workers_split_the_jobs(tmp_path, micro_model):
    cells = _cells(micro_model, [("a", "synchronous"), ("b", "synchronous"), ("c", "synchronous")])
    assert sample_grid.sample_cells(cells, tmp_path, device="cpu", deadline=0.0, log=lambda m: None) == 0
    assert sample_grid.sample_cells(cells, tmp_path, device="cpu", worker=1, workers=2, log=lambda m: None) == 1
    assert [p.name for p in sample_grid.cell_files(tmp_path)] == ["b-s0.npz"]


def test_study_table_and_doc_update(tmp_path, micro_model):
    import async_vs_sync

    cells = _cells(micro_model, [(f"study-{c}-{s}", s) for c in ("c0", "c9") for s in ("synchronous", "adaptive")],
                   seeds=(0, 1))
    sample_grid.sample_cells(cells, tmp_path / "cells", device="cpu", log=lambda m: None)
    doc = tmp_path / "doc.md"
    doc.write_text(f"before\n{async_vs_sync.BEGIN}\nold\n{async_vs_sync.END}\nafter\n")
    assert async_vs_sync.main([str(tmp_path / "cells"), "--update-doc", str(doc)]) == 0
    text = doc.read_text()
    assert "old" not in text and text.startswith("before") and text.endswith("after\n")
    assert text.count("| EDM (C = 0) |") == 2 and text.count("| EAD (C = 9) |") == 2
    assert "Seeds [0, 1], 4 molecules per seed" in text


def test_card_and_steps_tables_from_cells(tmp_path, micro_model):
    import model_card
    import steps_sweep

    cells = _cells(micro_model, [("card-synchronous", "synchronous")], steps=4) + \
        _cells(micro_model, [("steps-synchronous-2", "synchronous")], steps=2)
    sample_grid.sample_cells(cells, tmp_path / "cells", device="cpu", log=lambda m: None)
    res = sample_grid.evaluate_cells(tmp_path / "cells", reference=None, log=lambda m: None)
    (tmp_path / "m.json").write_text(json.dumps(res, default=str))
    rows, n = model_card.rows_from_grid(str(tmp_path / "m.json"))
    table = model_card.render(rows, n)
    assert table.splitlines()[2].startswith("| synchronous | 4 | 5 |")   # 4 steps + the decode call
    rows = steps_sweep.rows_from_cells([str(tmp_path / "cells")], ["synchronous"])
    assert [r["steps"] for r in rows] == [4, 2] and all(r["device"] == "cpu" for r in rows)


def test_training_plot_follows_the_lineage(tmp_path):
    from ead.train import TrainConfig, train

    base = dict(preset="micro", limit_molecules=8, batch_size=8, val_every=0, log_every=1, quiet=True,
                threads=1)
    train(TrainConfig(run_dir=str(tmp_path / "a"), max_steps=3, ckpt_every=3, **base))
    train(TrainConfig(run_dir=str(tmp_path / "b"), max_steps=2, ckpt_every=2, init_from=str(tmp_path / "a"),
                      **{**base, "batch_size": 4}))
    import plot_training

    segs = plot_training.segments(tmp_path / "b")
    assert [(s[1], s[2], s[3]) for s in segs] == [(8, 0, 3), (4, 24, None)]
    out = tmp_path / "plot.png"
    plot_training.main([str(tmp_path / "b"), str(out)])
    assert out.stat().st_size > 10_000


@pytest.mark.slow
def test_gpu_session_runs_end_to_end_on_cpu(tmp_path, micro_model):
    """The one-command GPU session, shrunk to a micro model on the CPU (≈ 1–2 minutes)."""
    from ead.train import TrainConfig, train

    src = tmp_path / "ship"
    train(TrainConfig(run_dir=str(src), preset="micro", limit_molecules=16, batch_size=8, max_steps=2,
                      ckpt_every=2, val_every=0, quiet=True, threads=1))
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_session.py"), "--out", str(out),
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


def test_compare_cells_of_the_same_seed(tmp_path, micro_model):
    cells = _cells(micro_model, [("x", "synchronous")]) + [
        {**_cells(micro_model, [("y", "synchronous")])[0], "precision": "bf16"}]
    sample_grid.sample_cells(cells, tmp_path, device="cpu", log=lambda m: None)
    same = sample_grid.compare_cells(tmp_path / "x-s0.npz", tmp_path / "x-s0.npz")
    assert same == {"molecules": 4, "same_elements": 1.0, "median_rmsd": 0.0}
    low = sample_grid.compare_cells(tmp_path / "y-s0.npz", tmp_path / "x-s0.npz")
    assert low["molecules"] == 4 and low["median_rmsd"] > 0.0
