"""`ead evaluate` end to end, and the opt-in checks (PoseBusters, distribution, xTB energy)."""

import builtins
import json

import numpy as np
import pytest
from rdkit import Chem
from rdkit.Geometry import Point3D

from ead import EADError
from ead.cli import main
from ead.data.files import write_sdf, write_xyz
from ead.metrics.evaluate import evaluate_molecules


@pytest.fixture(scope="module")
def files(tmp_path_factory, qm9_train):
    root = tmp_path_factory.mktemp("evaluate")
    mols = list(qm9_train.subset(np.arange(60)))
    write_sdf(root / "a.sdf", mols[:40])
    write_xyz(root / "b.xyz", mols[40:])
    return root, mols


def _json(capsys, argv):
    rc = main(["evaluate", *argv, "--json"])
    out = capsys.readouterr().out
    assert rc == 0
    return json.loads(out)


def test_cli_json_equals_python_api(files, capsys):
    root, mols = files
    r = _json(capsys, [str(root / "a.sdf"), str(root / "b.xyz"), "--reference", "none"])
    expected = evaluate_molecules(mols, reference=None)
    for key in ("num_molecules", "num_atoms", "atom_stability", "molecule_stability", "validity",
                "uniqueness", "valid_and_unique", "connectivity"):
        assert r[key] == pytest.approx(expected[key]), key
    assert r["novelty"] is None and r["bad_records"] == []


def test_cli_table_and_limit(files, capsys):
    root, mols = files
    assert main(["evaluate", str(root / "a.sdf"), "--limit", "7", "--reference", "none"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("7 molecules")
    for label in ("atom stability", "molecule stability", "validity", "uniqueness", "V×U",
                  "novelty", "connectivity"):
        assert label in out


def test_novelty_against_training_split(files, capsys):
    root, _ = files
    r = _json(capsys, [str(root / "a.sdf")])
    assert r["reference"] == "qm9" and r["novelty"] == 0.0  # these are training molecules


def test_your_own_training_molecules_as_the_reference(files, tmp_path, monkeypatch, capsys):
    """--reference PATH: novelty and distribution distances against a user's training file,
    computed once and cached under a key that changes with the file."""
    monkeypatch.setenv("EAD_CACHE", str(tmp_path / "cache"))
    root, mols = files
    ref = tmp_path / "train.xyz"
    write_xyz(ref, mols[40:])                          # the XYZ file's molecules are "training"
    r = _json(capsys, [str(root / "b.xyz"), "--reference", str(ref), "--distribution"])
    assert r["novelty"] == 0.0 and r["reference"] == str(ref.resolve())
    assert r["distribution"]["atom_type_tv"] == pytest.approx(0.0, abs=1e-12)
    r = _json(capsys, [str(root / "a.sdf"), "--reference", str(ref)])
    assert r["novelty"] > 0.9                          # other QM9 molecules: nearly all new to it
    assert len(list((tmp_path / "cache").glob("ref-*_train_smiles_v*.json"))) == 1
    write_xyz(ref, mols[:40])                          # the file changes: a new cache entry
    r = _json(capsys, [str(root / "a.sdf"), "--reference", str(ref)])
    assert r["novelty"] == 0.0
    assert len(list((tmp_path / "cache").glob("ref-*_train_smiles_v*.json"))) == 2
    assert main(["evaluate", str(root / "a.sdf"), "--limit", "3", "--reference", str(ref)]) == 0
    assert f"molecules of {ref.resolve()}" in capsys.readouterr().out
    assert main(["evaluate", str(root / "a.sdf"), "--reference", str(tmp_path / "nothing.sdf")]) == 2
    assert "unknown reference" in capsys.readouterr().err


def test_sdf_bonds_are_ignored(tmp_path, capsys):
    # methane written with no bonds at all and ethane with a bogus triple bond: the protocol infers
    # its own bonds from the coordinates, so both come out stable and valid
    tetra = np.array([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]]) / np.sqrt(3)
    path = tmp_path / "bonds.sdf"
    with Chem.SDWriter(str(path)) as w:
        for bonds in ([], [(0, 1, Chem.BondType.TRIPLE)]):
            mol = Chem.RWMol()
            for _ in range(5):
                mol.AddAtom(Chem.Atom(1))
            mol.GetAtomWithIdx(0).SetAtomicNum(6)
            for a, b, t in bonds:
                mol.AddBond(a, b, t)
            conf = Chem.Conformer(5)
            for k, p in enumerate(np.vstack([[0, 0, 0], 1.09 * tetra])):
                conf.SetAtomPosition(k, Point3D(*p))
            mol.AddConformer(conf)
            w.SetKekulize(False)
            w.write(mol)
    r = _json(capsys, [str(path), "--reference", "none"])
    assert r["num_molecules"] == 2
    assert r["molecule_stability"] == 1.0 and r["validity"] == 1.0


def test_bad_records_are_counted_and_named(files, tmp_path, capsys):
    root, mols = files
    text = (root / "b.xyz").read_text().splitlines()
    n0 = int(text[0])
    second = n0 + 2  # first line of record 1
    n1 = int(text[second])
    text[second + 2] = "Qq 0.0 0.0 0.0"  # unknown element in record 1
    text[second + n1 + 2 + 3] = "C 1.0 abc 2.0"  # malformed line in record 2
    bad = tmp_path / "bad.xyz"
    bad.write_text("\n".join(text) + "\n")

    r = _json(capsys, [str(bad), "--reference", "none"])
    assert r["num_molecules"] == len(mols) - 40 - 2
    assert [b["record"] for b in r["bad_records"]] == [1, 2]
    assert "Qq" in r["bad_records"][0]["error"]

    assert main(["evaluate", str(bad), "--reference", "none"]) == 0
    out = capsys.readouterr().out
    assert "2 bad records skipped" in out and "record 1" in out and "record 2" in out


@pytest.mark.parametrize("content", [None, ""])
def test_missing_or_empty_file_is_one_line_error(tmp_path, capsys, content, busy_machine):
    path = tmp_path / "x.sdf"
    if content is not None:
        path.write_text(content)
    assert main(["evaluate", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ead: error:") and "\n" not in err


# ------------------------------------------------------------------- opt-in checks
def _hide_module(monkeypatch, *names):
    real_import = builtins.__import__

    def fake(name, *args, **kwargs):
        if name.split(".")[0] in names:
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake)


def test_missing_posebusters_is_a_clear_error(qm9_train, monkeypatch):
    _hide_module(monkeypatch, "posebusters")
    with pytest.raises(EADError, match="pip install posebusters"):
        evaluate_molecules(qm9_train.subset(np.arange(2)), reference=None, checks=["posebusters"])


def test_missing_tblite_is_a_clear_error(qm9_train, monkeypatch):
    _hide_module(monkeypatch, "tblite")
    with pytest.raises(EADError, match="pip install tblite"):
        evaluate_molecules(qm9_train.subset(np.arange(2)), reference=None, checks=["energy"],
                           energy_samples=1)


def test_posebusters_pass_rates(qm9_train, capfd):
    pytest.importorskip("posebusters")
    from ead.metrics.posebusters_check import posebusters_metrics
    from ead.metrics.stability import as_molecule_set

    mols = list(qm9_train.subset(np.arange(3)))
    pos, z = mols[0]
    mols.append((pos * 0.7, z))  # squeezed: extra bonds, does not sanitise
    r = posebusters_metrics(as_molecule_set(mols))
    assert r["num_molecules"] == 4
    assert r["checks"]["sanitization"] == 0.75
    assert r["overall"] <= 0.75
    assert set(r["checks"]) >= {"bond_lengths", "bond_angles", "internal_steric_clash",
                                "aromatic_ring_flatness", "double_bond_flatness", "internal_energy"}
    # the invalid molecule is a counted failure, not six RDKit valence messages on the terminal
    assert "valence" not in capfd.readouterr().err


def test_distribution_distances(qm9_train):
    from ead.data.batch import MoleculeSet

    sub = qm9_train.subset(np.arange(300))
    same = evaluate_molecules(sub, checks=["distribution"])["distribution"]
    rng = np.random.default_rng(0)
    noisy = MoleculeSet(sub.positions + rng.normal(0, 0.05, sub.positions.shape), sub.atomic_numbers,
                        sub.offsets)
    worse = evaluate_molecules(noisy, checks=["distribution"])["distribution"]
    assert same["atom_type_tv"] < 0.02
    assert same["bond_length_w1"] < 0.005 and same["bond_angle_w1"] < 1.0
    assert worse["bond_length_w1"] > 3 * same["bond_length_w1"]
    assert worse["bond_angle_w1"] > 3 * same["bond_angle_w1"]
    assert "C-H" in same["bond_length_w1_per_type"] and "C" in same["bond_angle_w1_per_centre"]
    with pytest.raises(EADError, match="need a reference"):
        evaluate_molecules(sub, reference="none", checks=["distribution"])


def test_w1_histograms_matches_sample_w1():
    from ead.metrics.distribution import LENGTH_BIN, LENGTH_MAX, _histogram, w1_histograms

    rng = np.random.default_rng(0)
    a, b = rng.normal(1.5, 0.02, 4000), rng.normal(1.52, 0.03, 4000)
    exact = np.abs(np.sort(a) - np.sort(b)).mean()  # equal sizes: W1 pairs sorted samples
    approx = w1_histograms(_histogram(a, LENGTH_BIN, LENGTH_MAX), _histogram(b, LENGTH_BIN, LENGTH_MAX),
                           LENGTH_BIN)
    assert abs(approx - exact) <= LENGTH_BIN


def test_angle_triplets_enumerate_every_pair_of_bonds():
    from ead.metrics.distribution import angle_triplets
    from ead.metrics.stability import as_molecule_set, infer_bonds

    tetra = np.array([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]]) / np.sqrt(3)
    methane = (np.vstack([[0, 0, 0], 1.09 * tetra]), np.array([6, 1, 1, 1, 1]))
    water = (np.array([[0, 0, 0], [0.76, 0.59, 0], [-0.76, 0.59, 0]]), np.array([8, 1, 1]))
    ms = as_molecule_set([methane, water])
    a, c, b = angle_triplets(infer_bonds(ms))
    assert len(a) == 6 + 1 and (c[:6] == 0).all() and c[6] == 5
    pairs = {tuple(sorted(p)) for p in zip(a[:6].tolist(), b[:6].tolist())}
    assert pairs == {(i, j) for i in range(1, 5) for j in range(i + 1, 5)}


def test_energy_drop_on_a_small_molecule():
    pytest.importorskip("tblite")
    pytest.importorskip("scipy")
    from ead.metrics.energy import energy_metrics, kabsch_rmsd
    from ead.metrics.stability import as_molecule_set

    a = np.radians(104.5) / 2
    relaxedish = np.array([[0, 0, 0], [0.96 * np.sin(a), 0.96 * np.cos(a), 0],
                           [-0.96 * np.sin(a), 0.96 * np.cos(a), 0]])
    stretched = relaxedish * 1.15
    r = energy_metrics(as_molecule_set([(relaxedish, [8, 1, 1]), (stretched, [8, 1, 1])]), n=2)
    assert r["num_relaxed"] == 2 and r["failures"] == []
    drop = r["energy_drop_kcal_mol"]
    assert 0 <= drop["median"] and drop["mean"] > 1.0  # the stretched one relaxes noticeably
    assert 0 < r["rmsd_angstrom"]["mean"] < 0.3
    rot = np.array([[0, -1, 0], [1, 0, 0], [0, 0, 1.0]])
    assert kabsch_rmsd(stretched, stretched @ rot.T + 3.0) < 1e-9
