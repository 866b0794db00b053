"""Relaxed geometries (--relax mmff|xtb) and the files chemists open (.pdb, SMILES and validity in
every SDF record)."""

import json

import numpy as np
import pytest
from rdkit import Chem

from ead import EADError
from ead.cli import main
from ead.data.files import MoleculeWriter, read_molecules, write_sdf
from ead.metrics.relax import relax_molecules, relaxed_comparison


@pytest.fixture(scope="module")
def qm9_few():
    from ead.data.qm9 import qm9_split

    test = qm9_split("test")
    return [tuple(np.asarray(a, dtype=np.float64) if k == 0 else np.asarray(a) for k, a in enumerate(test.molecule(i)))
            for i in range(4)]


# a carbon with five hydrogens: not a valid molecule, so MMFF has nothing to relax
PENTAVALENT = (np.array([[0.0, 0, 0], [1.09, 0, 0], [-1.09, 0, 0], [0, 1.09, 0], [0, -1.09, 0], [0, 0, 1.09]]),
               np.array([6, 1, 1, 1, 1, 1]))


def _distorted(mols, seed=0):
    rng = np.random.default_rng(seed)
    return [(p + rng.normal(0, 0.02, p.shape), z) for p, z in mols]


def test_mmff_relaxation_lowers_the_energy_and_reports_failures(qm9_few):
    mols = _distorted(qm9_few) + [PENTAVALENT]
    out = relax_molecules(mols, "mmff")
    for r, (p, z) in zip(out[:4], mols):
        assert r["energy_drop_kcal_mol"] > 0 and 0 < r["rmsd_angstrom"] < 1
        assert r["positions"].shape == p.shape
    assert "error" in out[4]                     # not a valid molecule: reported, not raised
    again = relax_molecules([(out[0]["positions"], mols[0][1])], "mmff")[0]
    assert abs(again["energy_drop_kcal_mol"]) < 1e-2   # a minimum stays one
    assert relax_molecules(mols[:2], "mmff", workers=2) [1]["rmsd_angstrom"] == pytest.approx(out[1]["rmsd_angstrom"])
    with pytest.raises(EADError, match="unknown relaxation"):
        relax_molecules(mols, "uff")


def test_relaxed_comparison_keeps_raw_and_relaxed_apart(qm9_few):
    mols = _distorted(qm9_few) + [PENTAVALENT]
    r = relaxed_comparison(mols, "mmff", reference=None)
    assert r["num_molecules"] == 5 and r["num_relaxed"] == 4 and r["failures"][0]["molecule"] == 4
    assert r["raw"]["num_molecules"] == r["relaxed"]["num_molecules"] == 4
    assert r["energy_drop_kcal_mol"]["median"] > 0


def test_sample_relax_writes_fields_and_evaluate_reports_side_by_side(tmp_path, qm9_few, capsys):
    from ead.model.config import ModelConfig
    from ead.pipeline import EAD

    model = str(EAD(ModelConfig.from_preset("micro", size_histogram={9: 1}), device="cpu")
                .save_pretrained(tmp_path / "m"))
    out = tmp_path / "s.sdf"
    assert main(["sample", "--model", model, "-n", "3", "--steps", "5", "-o", str(out), "--quiet",
                 "--relax", "mmff"]) == 0
    res = read_molecules(out)
    for props in res.properties:
        assert props["ead_relax"] == "mmff"
        assert "ead_relax_error" in props or float(props["ead_relax_rmsd_angstrom"]) >= 0
        assert props["ead_valid"] in ("0", "1") and "ead_smiles" in props
    write_sdf(tmp_path / "d.sdf", _distorted(qm9_few))
    capsys.readouterr()
    assert main(["evaluate", str(tmp_path / "d.sdf"), "--relax", "mmff", "--reference", "none",
                 "--json", "--quiet"]) == 0
    r = json.loads(capsys.readouterr().out)["relaxation"]
    assert r["num_relaxed"] == 4 and r["raw"]["validity"] == 1.0 and r["relaxed"]["validity"] == 1.0
    assert main(["evaluate", str(tmp_path / "d.sdf"), "--relax", "mmff", "--reference", "none", "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "MMFF relaxation: 4 of 4 molecules relaxed" in text and "raw, relaxed" in text


def test_sdf_records_carry_smiles_and_validity(tmp_path, qm9_few):
    from ead.model.config import ModelConfig
    from ead.pipeline import EAD

    model = str(EAD(ModelConfig.from_preset("micro", size_histogram={9: 1}), device="cpu")
                .save_pretrained(tmp_path / "m"))
    assert main(["sample", "--model", model, "-n", "2", "--steps", "3", "-o", str(tmp_path / "s.sdf"), "--quiet"]) == 0
    for m in Chem.SDMolSupplier(str(tmp_path / "s.sdf"), sanitize=False, removeHs=False):
        assert m.GetProp("ead_valid") in ("0", "1") and m.HasProp("ead_smiles")
    from ead.metrics.chem import record_fields

    assert record_fields(*qm9_few[0]) == {"ead_smiles": Chem.MolToSmiles(Chem.MolFromSmiles(
        record_fields(*qm9_few[0])["ead_smiles"])), "ead_valid": "1"}


def test_pdb_output(tmp_path, qm9_few):
    path = tmp_path / "m.pdb"
    with MoleculeWriter(path, metadata={"ead_seed": 0}) as w:
        w.write(qm9_few[:2], names=["first", "second"], properties=[{"ead_smiles": "CC"}, None])
    text = path.read_text()
    assert text.count("MODEL") == 2 and text.count("ENDMDL") == 2 and text.rstrip().endswith("END")
    assert "COMPND    first" in text and "REMARK   1 ead_seed: 0" in text and "CONECT" in text
    mol = Chem.MolFromPDBFile(str(path), sanitize=False, removeHs=False)   # the first model
    assert mol.GetNumAtoms() == len(qm9_few[0][1])
    assert np.abs(mol.GetConformer().GetPositions() - qm9_few[0][0]).max() < 1e-3
    with MoleculeWriter(tmp_path / "m.pdb.gz") as w:
        w.write(qm9_few[:1])
    import gzip

    assert gzip.open(tmp_path / "m.pdb.gz", "rt").read().count("HETATM") == len(qm9_few[0][1])
