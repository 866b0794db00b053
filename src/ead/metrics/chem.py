"""RDKit side of the protocol (docs/evaluation.md §4): molecules built from distance-inferred bonds.

Validity, uniqueness, V×U, novelty and connectivity. The novelty reference (canonical SMILES of the
QM9 training split, built by the same steps from its coordinates) is computed once, kept as a JSON
file in the data cache and held in memory as a frozenset.
"""

from __future__ import annotations

import json
import os
import sys
from functools import lru_cache
from hashlib import sha256
from pathlib import Path

import numpy as np
import rdkit
from rdkit import Chem, rdBase

from ..data.batch import MoleculeSet
from ..data.bonds import BOND_TABLE
from ..errors import EADError
from ..data.molecule import _add_conformer, _mol_from_bonds, protocol_mol  # noqa: F401 (re-exported)
from .stability import BondGraph, infer_bonds

SMILES_CACHE_FORMAT = 1




def graph_mols(mols: MoleculeSet, graph: BondGraph | None = None, conformer: bool = False):
    """Yield the unsanitised protocol molecule of each molecule of a MoleculeSet, reusing the
    flat bond graph (so no distance work is repeated)."""
    if graph is None:
        graph = infer_bonds(mols)
    for m in range(len(mols)):
        a, b = int(mols.offsets[m]), int(mols.offsets[m + 1])
        mol = _mol_from_bonds(mols.atomic_numbers[a:b], *graph.molecule_bonds(m, a))
        if conformer:
            _add_conformer(mol, mols.positions[a:b])
        yield mol.GetMol()


def smiles_of(mol: Chem.Mol) -> str | None:
    """Protocol steps 2: sanitise (in place); None if that fails; else the canonical SMILES of the
    largest fragment by atom count (the first one on a tie, as EDM's max() picks)."""
    try:
        Chem.SanitizeMol(mol)
    except Exception:  # any RDKit complaint (valence, kekulisation, ...) means invalid
        return None
    frags = Chem.GetMolFrags(mol, asMols=True, sanitizeFrags=False)
    if len(frags) == 1:
        return Chem.MolToSmiles(mol)
    largest = max(frags, key=lambda f: f.GetNumAtoms())
    try:
        # as EDM does: the fragment is sanitised again before writing its SMILES
        Chem.SanitizeMol(largest)
    except Exception:
        return None
    return Chem.MolToSmiles(largest)


def record_fields(positions, atomic_numbers) -> dict[str, str]:
    """The SD fields every written record carries: its protocol SMILES (largest fragment; empty
    when invalid) and whether it is valid (docs/evaluation.md §4)."""
    with rdBase.BlockLogs():
        smiles = smiles_of(protocol_mol(positions, atomic_numbers))
        if smiles is not None:   # hydrogens implicit, as chemists write it
            smiles = Chem.MolToSmiles(Chem.MolFromSmiles(smiles))
    return {"ead_smiles": smiles or "", "ead_valid": "1" if smiles is not None else "0"}


def protocol_smiles(mols: MoleculeSet, graph: BondGraph | None = None
                    ) -> tuple[list[str | None], np.ndarray]:
    """(SMILES or None for each molecule, number of bond-graph fragments of each molecule)."""
    smiles, fragments = [], np.zeros(len(mols), dtype=np.int64)
    with rdBase.BlockLogs():  # invalid molecules are expected; RDKit's warnings are noise here
        for m, mol in enumerate(graph_mols(mols, graph)):
            fragments[m] = len(Chem.GetMolFrags(mol))
            smiles.append(smiles_of(mol))
    return smiles, fragments


def chem_metrics(smiles: list[str | None], fragments: np.ndarray,
                 reference: frozenset[str] | None) -> dict:
    """Validity, uniqueness, V×U, novelty (None without a reference or without valid molecules),
    connectivity (one fragment) and valid-and-connected, as fractions, with the counts."""
    n = len(smiles)
    valid = [s for s in smiles if s is not None]
    unique = set(valid)
    out = {
        "num_valid": len(valid),
        "num_unique": len(unique),
        "validity": len(valid) / n,
        "uniqueness": len(unique) / len(valid) if valid else 0.0,
        "valid_and_unique": len(unique) / n,
        "novelty": None,
        "num_novel": None,
        "connectivity": float(np.mean(fragments == 1)),
        "valid_and_connected": float(np.mean([(s is not None and f == 1)
                                              for s, f in zip(smiles, fragments)])),
    }
    if reference is not None and unique:
        novel = sum(1 for s in unique if s not in reference)
        out["novelty"] = novel / len(unique)
        out["num_novel"] = novel
    return out


def _protocol_fingerprint() -> str:
    """What the reference SMILES depend on: the bond tables and RDKit's canonicalisation (which
    can change between RDKit releases). A cache made under other ones is rebuilt."""
    tables = BOND_TABLE.read_bytes()
    return sha256(tables).hexdigest()[:16] + "/rdkit-" + rdkit.__version__


def _write_json_atomic(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    try:
        tmp.write_text(json.dumps(payload))
        os.replace(tmp, path)  # readers never see a half-written file
    finally:
        if tmp.exists():
            tmp.unlink()


def reference_smiles_path(reference: str = "qm9") -> Path:
    from ..data.qm9 import cache_dir
    from .reference import reference_key

    return cache_dir() / f"{reference_key(reference)}_train_smiles_v{SMILES_CACHE_FORMAT}.json"


def reference_smiles(reference: str = "qm9", verbose: bool = False) -> frozenset[str]:
    """Canonical SMILES of the training molecules' valid ones (docs/evaluation.md §4.4): "qm9" or the
    path of a user's training molecules (`metrics.reference`)."""
    from .reference import reference_key, resolve_reference

    reference = resolve_reference(reference)
    if reference is None:
        raise EADError("novelty needs a reference: 'qm9' or a path")
    return _reference_smiles(reference, reference_key(reference), verbose)


@lru_cache(maxsize=2)
def _reference_smiles(reference: str, key: str, verbose: bool) -> frozenset[str]:
    # `key` changes with the reference's files: a rewritten file is not served from memory
    from .reference import describe, reference_molecules

    path = reference_smiles_path(reference)
    fingerprint = _protocol_fingerprint()
    if path.exists():
        try:
            payload = json.loads(path.read_text())
            if payload.get("fingerprint") == fingerprint:
                return frozenset(payload["smiles"])
        except (OSError, ValueError, KeyError):
            pass  # unreadable or foreign: rebuilt below and replaced atomically
    if verbose:
        print(f"computing the SMILES of the {describe(reference)} once into {path}"
              + (" (about 20 s)" if reference == "qm9" else ""), file=sys.stderr)
    smiles, _ = protocol_smiles(reference_molecules(reference, verbose))
    unique = sorted({s for s in smiles if s is not None})
    _write_json_atomic(path, {"format": SMILES_CACHE_FORMAT, "fingerprint": fingerprint,
                              "reference": f"{describe(reference)}, protocol SMILES",
                              "smiles": unique})
    return frozenset(unique)


reference_smiles.cache_clear = _reference_smiles.cache_clear
