"""A fragment to grow a molecule from (docs/fragments.md): its atoms, read from an RDKit molecule
with a conformer, an SDF/MOL/XYZ file, or (positions, atomic numbers); checked against a model's
atom types and the size asked for; and laid out as the held atoms of a flat batch."""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import EADError
from .elements import symbol


@dataclass(frozen=True)
class Fragment:
    """positions [k, 3] Å in the frame they were given in, atomic numbers [k], and a name."""

    positions: np.ndarray
    atomic_numbers: np.ndarray
    name: str = "fragment"

    def __len__(self) -> int:
        return len(self.atomic_numbers)

    def check(self, atom_types, sizes) -> None:
        """EADError when the model cannot hold these atoms, or a size leaves nothing to generate."""
        known = np.isin(self.atomic_numbers, np.asarray(atom_types))
        if not known.all():
            z = int(self.atomic_numbers[int(np.argmin(known))])
            raise EADError(f"{self.name}: element {symbol(z)} is not one of the model's atom types "
                           f"({' '.join(symbol(int(t)) for t in atom_types)})")
        smallest = int(torch.as_tensor(sizes).min())
        if smallest <= len(self):
            raise EADError(f"{self.name} has {len(self)} atoms: the molecules must have more "
                           f"(asked for {smallest})")

    def held_atoms(self, sizes: torch.Tensor, encode) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(mask [N], positions [N, 3], clean features [N, F]) of a flat batch of molecules of
        `sizes` whose first k atoms are the fragment's; `encode` maps atomic numbers to features."""
        k = len(self)
        start = torch.cumsum(sizes, 0) - sizes
        local = torch.arange(int(sizes.sum())) - torch.repeat_interleave(start, sizes)
        mask = local < k
        rows = local.clamp(max=k - 1)
        x = torch.from_numpy(self.positions).to(torch.float64)[rows]
        h = encode(torch.from_numpy(self.atomic_numbers))[rows]
        return mask, x, h


def load_fragment(source) -> Fragment:
    """A Fragment from an RDKit Mol (its first conformer, 3D), a path (.sdf/.mol/.xyz, optionally
    .gz: the first record), a Fragment, or a (positions [k, 3], atomic numbers [k]) pair."""
    if isinstance(source, Fragment):
        return _checked(source)
    if isinstance(source, (str, os.PathLike)):
        return _from_path(Path(source))
    if hasattr(source, "GetConformers"):
        return _from_rdkit(source, "fragment")
    try:
        pos, z = source
    except (TypeError, ValueError):
        raise EADError("a fragment is an RDKit molecule with a 3D conformer, a file path, or a "
                       "(positions, atomic numbers) pair") from None
    return _checked(Fragment(np.asarray(pos, dtype=np.float64).reshape(-1, 3),
                             np.asarray(z, dtype=np.int64).reshape(-1)))


def _checked(frag: Fragment) -> Fragment:
    if len(frag) == 0:
        raise EADError(f"{frag.name} has no atoms")
    if frag.positions.shape != (len(frag), 3):
        raise EADError(f"{frag.name}: {len(frag)} atoms but positions of shape {frag.positions.shape}")
    if not np.isfinite(frag.positions).all():
        raise EADError(f"{frag.name}: coordinates are not finite (NaN or inf)")
    if len(frag) > 1 and not np.abs(frag.positions).any():
        raise EADError(f"{frag.name} has no 3D coordinates (every atom at the origin)")
    return frag


def _from_rdkit(mol, name: str) -> Fragment:
    if mol.GetNumAtoms() == 0:
        raise EADError(f"{name} has no atoms")
    if mol.GetNumConformers() == 0:
        raise EADError(f"{name} has no coordinates (no conformer); embed it in 3D first")
    conf = mol.GetConformer()
    pos = np.asarray(conf.GetPositions(), dtype=np.float64).reshape(-1, 3)
    if not conf.Is3D() and mol.GetNumAtoms() > 1 and not np.abs(pos[:, 2]).any():
        raise EADError(f"{name} has 2D coordinates only; the fragment needs 3D ones")
    z = np.array([a.GetAtomicNum() for a in mol.GetAtoms()], dtype=np.int64)
    if (z == 0).any():
        raise EADError(f"{name}: atom {int(np.argmin(z)) + 1} is a dummy or query atom, not an element")
    return _checked(Fragment(pos, z, name))


def _from_path(path: Path) -> Fragment:
    from .files import read_molecules

    read = read_molecules(path)   # EADError for a missing, unreadable or empty file
    name = f"fragment {path.name}"
    stem = path.name.lower().removesuffix(".gz")
    if stem.endswith((".sdf", ".sd", ".mol")):   # RDKit knows whether the record is 2D or 3D
        from rdkit import Chem, rdBase

        opener = gzip.open if path.name.lower().endswith(".gz") else open
        with opener(path, "rb") as f, rdBase.BlockLogs():
            mol = next(Chem.ForwardSDMolSupplier(f, sanitize=False, removeHs=False), None)
        if mol is not None:
            return _from_rdkit(mol, name)
    pos, z = read.molecules[0]
    return _checked(Fragment(pos, z, name))
