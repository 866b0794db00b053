"""Molecule files: round trips, RDKit interoperability, bad inputs, atomic writes."""

from __future__ import annotations

import json

import numpy as np
import pytest
from rdkit import Chem
from rdkit.Chem import AllChem

from ead import EADError
from ead.data.files import MoleculeWriter, read_molecules, to_rdkit, write_sdf, write_xyz

METADATA = {"ead_sampler": {"steps": 500, "schedule": "async"}, "ead_seed": 7, "ead_model": "qm9 h"}


def random_molecules(count=4, seed=0):
    rng = np.random.default_rng(seed)
    return [(rng.normal(scale=1.5, size=(n, 3)), rng.choice([1, 6, 7, 8, 9], n))
            for n in rng.integers(1, 20, count)]


def ethanol():
    mol = Chem.AddHs(Chem.MolFromSmiles("CCO"))
    assert AllChem.EmbedMolecule(mol, randomSeed=42) == 0
    pos = mol.GetConformer().GetPositions()
    z = np.array([a.GetAtomicNum() for a in mol.GetAtoms()])
    return mol, pos, z


def bond_set(mol):
    return {(min(b.GetBeginAtomIdx(), b.GetEndAtomIdx()), max(b.GetBeginAtomIdx(), b.GetEndAtomIdx()))
            for b in mol.GetBonds()}


def only_files(folder):
    return sorted(p.name for p in folder.iterdir())


# ---------------------------------------------------------------------------------------------
# Round trips


def test_sdf_round_trip_with_names_properties_and_metadata(tmp_path):
    mols = random_molecules()
    names = [f"sample {i}" for i in range(len(mols))]
    props = [{"energy": -1.5 * i, "valid": i % 2 == 0} for i in range(len(mols))]
    path = tmp_path / "out.sdf"
    write_sdf(path, mols, names=names, properties=props, metadata=METADATA)

    result = read_molecules(path)
    assert result.errors == [] and len(result) == len(mols)
    assert result.names == names
    for (pos, z), (rpos, rz) in zip(mols, result.molecules):
        assert rpos.dtype == np.float64 and rz.dtype == np.int64
        np.testing.assert_array_equal(rz, z)
        np.testing.assert_allclose(rpos, pos, atol=1e-4)
    for i, p in enumerate(result.properties):
        assert json.loads(p["energy"]) == pytest.approx(-1.5 * i)
        assert json.loads(p["ead_sampler"]) == METADATA["ead_sampler"]
        assert p["ead_seed"] == "7" and p["ead_model"] == "qm9 h"

    # Any other SDF reader sees the same: here RDKit's own supplier, without sanitisation.
    supplier = Chem.SDMolSupplier(str(path), sanitize=False, removeHs=False)
    records = list(supplier)
    assert len(records) == len(mols) and all(m is not None for m in records)
    for m, name in zip(records, names):
        assert m.GetProp("_Name") == name
        assert {"ead_sampler", "ead_seed", "ead_model", "energy", "valid"} <= set(m.GetPropNames())


def test_xyz_round_trip_and_fallback_names(tmp_path):
    mols = random_molecules(seed=1)
    comments = ["first", "", "third molecule", "fourth"]
    path = tmp_path / "out.xyz"
    write_xyz(path, mols, comments=comments)
    result = read_molecules(path)
    assert result.names == ["first", "out.xyz:1", "third molecule", "fourth"]
    assert result.properties == [{}] * len(mols)
    for (pos, z), (rpos, rz) in zip(mols, result.molecules):
        np.testing.assert_array_equal(rz, z)
        np.testing.assert_allclose(rpos, pos, atol=1e-6)


def test_gzipped_round_trips_and_streamed_chunks(tmp_path):
    mols = random_molecules(count=6, seed=2)
    for name in ("s.sdf.gz", "s.xyz.gz"):
        with MoleculeWriter(tmp_path / name, metadata={"ead_seed": 3}) as out:
            out.write(mols[:2], names=["a", "b"])
            out.write(mols[2:], names=list("cdef"))
        result = read_molecules(tmp_path / name)
        assert [n.split()[0] for n in result.names] == list("abcdef")
        for (pos, z), (rpos, rz) in zip(mols, result.molecules):
            np.testing.assert_array_equal(rz, z)
            np.testing.assert_allclose(rpos, pos, atol=1e-4)
    # XYZ has no data fields: metadata rides on the comment line.
    assert read_molecules(tmp_path / "s.xyz.gz").names[0] == "a ead_seed=3"
    assert read_molecules(tmp_path / "s.sdf.gz").properties[5] == {"ead_seed": "3"}


def test_real_molecule_rereads_with_expected_bonds(tmp_path):
    mol, pos, z = ethanol()
    path = tmp_path / "ethanol.sdf"
    write_sdf(path, [(pos, z)], names=["ethanol"])
    back = next(iter(Chem.SDMolSupplier(str(path), sanitize=False, removeHs=False)))
    assert back.GetNumAtoms() == 9
    assert bond_set(back) == bond_set(mol)
    assert all(b.GetBondType() == Chem.BondType.SINGLE for b in back.GetBonds())
    Chem.SanitizeMol(back)  # a real molecule also comes back chemically valid
    assert Chem.MolToSmiles(Chem.RemoveHs(back)) == "CCO"


def test_invalid_molecules_still_write_and_reread(tmp_path):
    # A pentavalent carbon (five H at bonding distance) and a lone carbon pair (a C#C with no
    # hydrogens): neither survives sanitisation, both must survive writing.
    penta = (np.array([[0, 0, 0], [1.09, 0, 0], [-1.09, 0, 0], [0, 1.09, 0], [0, -1.09, 0], [0, 0, 1.09]]),
             np.array([6, 1, 1, 1, 1, 1]))
    pair = (np.array([[0.0, 0.0, 0.0], [1.2, 0.0, 0.0]]), np.array([6, 6]))
    path = tmp_path / "bad.sdf"
    write_sdf(path, [penta, pair], names=["penta", "pair"])
    back = list(Chem.SDMolSupplier(str(path), sanitize=False, removeHs=False))
    assert [m.GetNumBonds() for m in back] == [5, 1]
    assert back[1].GetBondWithIdx(0).GetBondType() == Chem.BondType.TRIPLE
    with pytest.raises(Exception):
        Chem.SanitizeMol(back[0])
    result = read_molecules(path)
    assert result.names == ["penta", "pair"]
    np.testing.assert_allclose(result.molecules[0][0], penta[0], atol=1e-4)


def test_to_rdkit_sets_name_properties_and_bonds():
    mol, pos, z = ethanol()
    m = to_rdkit(pos, z, properties={"score": 0.5, "tag": "x"}, name="ethanol")
    assert m.GetProp("_Name") == "ethanol"
    assert m.GetProp("score") == "0.5" and m.GetProp("tag") == "x"
    assert bond_set(m) == bond_set(mol)
    np.testing.assert_allclose(m.GetConformer().GetPositions(), pos)


# ---------------------------------------------------------------------------------------------
# Bad inputs: record 1 of 3 is bad; strict raises naming it, tolerant skips it and lists it.

GOOD_XYZ = "3\ngood\nO 0.0 0.0 0.0\nH 0.96 0.0 0.0\nH -0.24 0.93 0.0\n"


def _sdf_block(name="good", symbol="C", x="0.0000"):
    return (f"{name}\n     RDKit          3D\n\n  2  1  0  0  0  0  0  0  0  0999 V2000\n"
            f"{x:>10}    0.0000    0.0000 {symbol:<3} 0  0  0  0  0  0  0  0  0  0  0  0\n"
            "    1.0900    0.0000    0.0000 H   0  0  0  0  0  0  0  0  0  0  0  0\n"
            "  1  2  1  0\nM  END\n$$$$\n")


BAD_RECORDS = {
    "xyz unknown element": ("xyz", "2\nbad\nQq 0 0 0\nH 1 0 0\n", "unknown element 'Qq'"),
    "xyz NaN coordinate": ("xyz", "2\nbad\nC 0 nan 0\nH 1 0 0\n", "(line 9): coordinates of atom 1"),
    "xyz inf coordinate": ("xyz", "2\nbad\nC 0 0 0\nH inf 0 0\n", "(line 10): coordinates of atom 2"),
    "xyz non-number coordinate": ("xyz", "2\nbad\nC 0 zero 0\nH 1 0 0\n", "not numbers"),
    "xyz missing coordinate": ("xyz", "2\nbad\nC 0 0\nH 1 0 0\n", "3 coordinates"),
    "xyz count line not a number": ("xyz", "two\nbad\nC 0 0 0\nH 1 0 0\n", "count line"),
    "xyz count too large": ("xyz", "4\nbad\nC 0 0 0\nH 1 0 0\n", "count line says 4"),
    "xyz count too small": ("xyz", "1\nbad\nC 0 0 0\nH 1 0 0\n", "more atom lines follow"),
    "xyz zero atoms": ("xyz", "0\nempty\n", "no atoms"),
    "sdf garbage": ("sdf", "this is\nnot a\nmol block\n$$$$\n", "RDKit"),
    "sdf unknown element": ("sdf", _sdf_block("bad", "Qq"), "unknown element 'Qq'"),
    "sdf NaN coordinate": ("sdf", _sdf_block("bad", x="nan"), "coordinates"),
    "sdf zero atoms": ("sdf", Chem.MolToMolBlock(Chem.Mol()) + "$$$$\n", "no atoms"),
    "sdf query atom": ("sdf", _sdf_block("bad", "*"), "dummy"),
}


@pytest.mark.parametrize("case", list(BAD_RECORDS))
def test_bad_record_strict_and_tolerant(tmp_path, case):
    fmt, bad, fragment = BAD_RECORDS[case]
    good = GOOD_XYZ if fmt == "xyz" else _sdf_block()
    path = tmp_path / f"x.{fmt}"
    path.write_text(good + ("\n" if fmt == "xyz" else "") + bad + good)

    with pytest.raises(EADError, match="record 1") as info:
        read_molecules(path)
    assert str(path) in str(info.value) and fragment in str(info.value)
    assert "\n" not in str(info.value)

    result = read_molecules(path, strict=False)
    assert len(result) == 2
    assert [i for i, _ in result.errors] == [1]
    assert fragment in result.errors[0][1]
    assert result.names == ["good", "good"]


def test_truncated_xyz_block_at_end_of_file(tmp_path):
    path = tmp_path / "t.xyz"
    path.write_text(GOOD_XYZ + GOOD_XYZ + "3\ncut short\nO 0 0 0\nH 1 0 0\n")
    with pytest.raises(EADError, match=r"t\.xyz record 2 \(line 11\): file ends after 2 of the 3"):
        read_molecules(path)
    result = read_molecules(path, strict=False)
    assert len(result) == 2 and [i for i, _ in result.errors] == [2]


def test_xyz_tolerates_atomic_numbers_extra_columns_and_blank_lines(tmp_path):
    path = tmp_path / "loose.xyz"
    path.write_text("\n2\n  \n8 0 0 0 -0.8 extra\n1 0.96 0 0 0.4\n\n\n\n1\nlone\nc 0 0 0\n\n")
    result = read_molecules(path)
    assert [z.tolist() for _, z in result.molecules] == [[8, 1], [6]]
    assert result.names == ["loose.xyz:0", "lone"]


@pytest.mark.parametrize("content", ["", "\n\n  \n"])
@pytest.mark.parametrize("ext", ["xyz", "sdf"])
def test_empty_file_is_an_error(tmp_path, ext, content):
    path = tmp_path / f"empty.{ext}"
    path.write_text(content)
    for strict in (True, False):
        with pytest.raises(EADError, match="no molecules"):
            read_molecules(path, strict=strict)


def test_all_records_bad_is_an_error_even_when_tolerant(tmp_path):
    path = tmp_path / "bad.xyz"
    path.write_text("1\nx\nQq 0 0 0\n")
    with pytest.raises(EADError, match="no molecules read .* unknown element 'Qq'"):
        read_molecules(path, strict=False)


def test_missing_path_and_unsupported_extension(tmp_path):
    with pytest.raises(EADError, match="no such file"):
        read_molecules(tmp_path / "nope.sdf")
    pdb = tmp_path / "x.pdb"
    pdb.write_text("ATOM\n")
    with pytest.raises(EADError, match="unsupported file type: x.pdb"):
        read_molecules(pdb, strict=False)
    with pytest.raises(EADError, match="unsupported"):
        MoleculeWriter(tmp_path / "out.mol2")
    with pytest.raises(EADError, match="extension"):
        write_sdf(tmp_path / "out.xyz", random_molecules(1))
    assert only_files(tmp_path) == ["x.pdb"]


def test_corrupt_gzip_is_an_error(tmp_path):
    path = tmp_path / "x.sdf.gz"
    path.write_bytes(b"not gzip at all")
    with pytest.raises(EADError, match="cannot read"):
        read_molecules(path)


# ---------------------------------------------------------------------------------------------
# Folders


def test_folder_input_recursive_and_sorted(tmp_path):
    mols = random_molecules(count=3, seed=4)
    (tmp_path / "sub").mkdir()
    write_xyz(tmp_path / "b.xyz", mols[1:2], comments=["b0"])
    write_sdf(tmp_path / "sub" / "c.sdf", mols[2:], names=["c0"])
    write_sdf(tmp_path / "a.sdf", mols[:1])
    (tmp_path / "notes.txt").write_text("ignored")
    (tmp_path / ".hidden.xyz").write_text("garbage")
    result = read_molecules(tmp_path)
    assert result.names == ["a.sdf:0", "b0", "c0"]
    assert result.sources == [str(tmp_path / "a.sdf"), str(tmp_path / "b.xyz"),
                              str(tmp_path / "sub" / "c.sdf")]
    for (pos, z), (rpos, rz) in zip(mols, result.molecules):
        np.testing.assert_array_equal(rz, z)

    # A bad record in one file: strict names file and record, tolerant keeps the rest.
    (tmp_path / "sub" / "d.xyz").write_text(GOOD_XYZ + "1\nx\nQq 0 0 0\n")
    with pytest.raises(EADError, match=r"d\.xyz record 1"):
        read_molecules(tmp_path)
    result = read_molecules(tmp_path, strict=False)
    assert len(result) == 4 and result.errors[0][0] == 1 and "d.xyz" in result.errors[0][1]


def test_folder_without_molecule_files(tmp_path):
    (tmp_path / "notes.txt").write_text("nothing here")
    with pytest.raises(EADError, match="no molecule files"):
        read_molecules(tmp_path)


# ---------------------------------------------------------------------------------------------
# Atomic writes


def test_exception_inside_writer_leaves_nothing(tmp_path):
    mols = random_molecules(seed=5)
    with pytest.raises(RuntimeError):
        with MoleculeWriter(tmp_path / "out.sdf", metadata=METADATA) as out:
            out.write(mols[:2])
            raise RuntimeError("sampler crashed")
    assert only_files(tmp_path) == []


def test_failed_write_keeps_the_previous_file(tmp_path):
    path = tmp_path / "out.xyz"
    write_xyz(path, random_molecules(count=1), comments=["old"])
    before = path.read_bytes()
    bad = (np.array([[0.0, np.nan, 0.0]]), np.array([6]))
    with pytest.raises(EADError, match="molecule 1: coordinates of atom 1 are not finite"):
        with MoleculeWriter(path) as out:
            out.write(random_molecules(count=1))
            out.write([bad])
    assert path.read_bytes() == before
    assert only_files(tmp_path) == ["out.xyz"]


def test_writer_rejects_bad_input_before_writing(tmp_path):
    path = tmp_path / "out.sdf"
    with pytest.raises(EADError, match="names"):
        write_sdf(path, random_molecules(count=2), names=["only one"])
    with pytest.raises(EADError, match="shape"):
        write_sdf(path, [(np.zeros((2, 2)), np.array([6, 6]))])
    with pytest.raises(EADError, match="also metadata"):
        write_sdf(path, random_molecules(count=1), properties=[{"ead_seed": 1}], metadata=METADATA)
    with pytest.raises(EADError, match="may not start"):
        write_sdf(path, random_molecules(count=1), metadata={"_private": 1})
    assert only_files(tmp_path) == []


def test_writer_without_with_block(tmp_path):
    path = tmp_path / "out.sdf"
    out = MoleculeWriter(path)
    out.write(random_molecules(count=2))
    assert not path.exists()  # nothing visible before close
    out.close()
    assert len(read_molecules(path)) == 2 and only_files(tmp_path) == ["out.sdf"]

    dropped = MoleculeWriter(tmp_path / "dropped.xyz")
    dropped.write(random_molecules(count=1))
    dropped.abort()
    assert only_files(tmp_path) == ["out.sdf"]
