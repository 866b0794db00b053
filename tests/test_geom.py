"""GEOM-Drugs in EDM's processed layout (data/geom.py). GEOM itself cannot be downloaded here, so
the files are real QM9 molecules written in EDM's exact layout: conformer id, Z, x, y, z rows,
and a geom_permutation.npy beside them."""

import numpy as np
import pytest

from ead import EADError
from ead.cli import main
from ead.data.geom import PERMUTATION_FILE, conformer_offsets, load_geom, split_conformers
from ead.pipeline import EAD
from ead.train import TrainConfig, train


def _write_edm_geom(folder, mols, permutation=True, seed=3):
    rows = []
    for i, (pos, z) in enumerate(mols):
        rows.append(np.column_stack([np.full(len(z), i, dtype=float), z.astype(float), pos.astype(float)]))
    path = folder / "geom_drugs_30.npy"
    np.save(path, np.vstack(rows))
    perm = np.random.default_rng(seed).permutation(len(mols)).astype(np.int32)
    if permutation:
        np.save(folder / PERMUTATION_FILE, perm)
    return path, perm


def test_edm_split_is_reproduced_and_molecules_round_trip(tmp_path, qm9_train):
    mols = [qm9_train.molecule(i) for i in range(50)]
    path, perm = _write_edm_geom(tmp_path, mols)
    # EDM: data_list permuted, then np.split at int(0.1 n) and int(0.1 n) + int(0.1 n)
    expect = {"valid": perm[:5], "test": perm[5:10], "train": perm[10:]}
    for split, want in expect.items():
        got, name = load_geom(path, split)
        assert name == "edm" and sorted(got.ids.tolist()) == sorted(want.tolist())
        for k, cid in enumerate(got.ids):
            pos, z = got.molecule(k)
            assert np.array_equal(z, mols[cid][1]) and np.allclose(pos, mols[cid][0], atol=1e-6)
    # EDM filters by size before permuting: its permutation file then covers the kept conformers
    with pytest.raises(EADError, match="not a permutation of the file's"):
        load_geom(path, "train", filter_size=12)
    (tmp_path / "f").mkdir()
    path, _ = _write_edm_geom(tmp_path / "f", mols, permutation=False)
    small, _ = load_geom(path, "train", filter_size=12)
    assert (small.num_atoms <= 12).all() and 0 < len(small) < 40


def test_without_permutation_file_a_seeded_split_is_used_and_said(tmp_path, qm9_train, capsys):
    path, _ = _write_edm_geom(tmp_path, [qm9_train.molecule(i) for i in range(20)], permutation=False)
    train_set, name = load_geom(path, "train", verbose=True)
    assert name == "seed0" and len(train_set) == 16
    assert "not EDM's split" in capsys.readouterr().err
    a = split_conformers(20, None)
    assert all(np.array_equal(a[k], split_conformers(20, None)[k]) for k in a)   # deterministic


def test_bad_geom_files_fail_with_one_line(tmp_path):
    bad = tmp_path / "a.npy"
    np.save(bad, np.zeros((4, 3)))
    with pytest.raises(EADError, match=r"expected EDM's GEOM array \[atoms, 5\]"):
        load_geom(bad)
    np.save(bad, np.array([{"x": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(EADError, match="not a numeric .npy"):   # never unpickled
        load_geom(bad)
    (tmp_path / "b.npy").write_bytes(b"garbage")
    with pytest.raises(EADError, match="not a numeric .npy"):
        load_geom(tmp_path / "b.npy")
    rows = np.array([[0, 6, 0, 0, 0], [0, 1.5, 1, 0, 0], [1, 8, 0, 0, 0]], dtype=float)
    np.save(tmp_path / "c.npy", rows)
    with pytest.raises(EADError, match="atomic numbers"):
        load_geom(tmp_path / "c.npy", "train")
    np.save(tmp_path / PERMUTATION_FILE, np.array([0, 0]))
    with pytest.raises(EADError, match="not a permutation"):
        load_geom(tmp_path / "c.npy")
    assert conformer_offsets(np.array([4, 4, 7, 7, 7, 2])).tolist() == [0, 2, 5, 6]


def test_training_on_a_geom_file_uses_edm_geom_settings(tmp_path, qm9_train, capsys):
    path, _ = _write_edm_geom(tmp_path, [qm9_train.molecule(i) for i in range(40)])
    s = train(TrainConfig(run_dir=str(tmp_path / "run"), data=str(path), preset="micro", batch_size=8,
                          max_steps=2, val_every=2, val_molecules=4, ckpt_every=2, quiet=True, threads=1,
                          accelerator="cpu"))
    model = EAD.from_pretrained(tmp_path / "run" / "model")
    cfg = model.config
    assert s["step"] == 2 and cfg.dataset == "geom-drugs" and not cfg.include_charges
    assert len(cfg.atom_types) == 16 and cfg.num_features == 16
    assert sum(cfg.size_histogram.values()) == 32                # the training split: 80 %
    mols, _ = model.sample_arrays(3, steps=4, seed=0)
    assert len(mols) == 3
    assert main(["train", "--data", str(path), "--run-dir", str(tmp_path / "r2"), "--preset", "micro",
                 "--batch-size", "8", "--max-steps", "1", "--val-every", "0", "--charges", "on",
                 "--threads", "1", "--accelerator", "cpu", "--quiet"]) == 0
    assert EAD.from_pretrained(tmp_path / "r2" / "model").config.include_charges
    assert main(["train", "--data", str(tmp_path / "missing.npy"), "--run-dir", str(tmp_path / "r3")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_a_geom_file_is_a_novelty_reference(tmp_path, qm9_train, monkeypatch):
    from ead.metrics.evaluate import evaluate_molecules

    monkeypatch.setenv("EAD_CACHE", str(tmp_path / "cache"))
    path, _ = _write_edm_geom(tmp_path, [qm9_train.molecule(i) for i in range(30)])
    train_set, _ = load_geom(path, "train")
    valid_set, _ = load_geom(path, "valid")
    assert evaluate_molecules(train_set, reference=str(path))["novelty"] == 0.0
    r = evaluate_molecules(valid_set, reference=str(path))
    assert r["novelty"] == 1.0 and r["reference"] == str(path.resolve())
