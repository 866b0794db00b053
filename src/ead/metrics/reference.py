"""The training set that novelty and the distribution distances compare against.

A reference is "qm9" (EDM's QM9 training split, the protocol's), None ("none": no novelty), or the
path of your own training molecules: an SDF/XYZ file or folder, or EDM's GEOM-Drugs array (its
training split, data/geom.py). What is derived from a reference (protocol SMILES, geometry
histograms) is computed once and cached under a key that changes when the files do.
"""

from __future__ import annotations

from hashlib import sha256
from pathlib import Path

from ..data.batch import MoleculeSet
from ..errors import EADError


def resolve_reference(reference) -> str | None:
    """None, "qm9", or the absolute path of a reference file/folder; EADError if it is none of them."""
    if reference is None or reference == "none":
        return None
    if reference == "qm9":
        return "qm9"
    path = Path(str(reference)).expanduser()
    if not path.exists():
        raise EADError(f"unknown reference {reference!r}: use 'qm9', 'none' or the path of your "
                       "training molecules (SDF/XYZ file or folder, or EDM's GEOM .npy)")
    return str(path.resolve())


def _files(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]


def reference_key(reference: str) -> str:
    """The cache name of a resolved reference: "qm9", or a hash of its files' paths, sizes and times."""
    if reference == "qm9":
        return "qm9"
    h = sha256()
    for p in _files(Path(reference)):
        st = p.stat()
        h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return f"ref-{h.hexdigest()[:16]}"


def describe(reference: str | None) -> str:
    if reference is None:
        return "no reference"
    if reference == "qm9":
        return "QM9 train split"
    if reference.lower().endswith(".npy"):
        return f"GEOM train split of {reference}"
    return f"molecules of {reference}"


def reference_molecules(reference: str, verbose: bool = False) -> MoleculeSet:
    """The reference's molecules (the training split for QM9 and GEOM)."""
    if reference == "qm9":
        from ..data.qm9 import qm9_split

        return qm9_split("train", verbose=verbose)
    if reference.lower().endswith(".npy"):
        from ..data.geom import load_geom

        return load_geom(reference, "train", verbose=verbose)[0]
    from ..data.files import read_molecules

    read = read_molecules(reference, strict=True)
    return MoleculeSet.from_list(read.molecules)
