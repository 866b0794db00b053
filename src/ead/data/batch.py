"""Molecule containers and flat batches.

A batch is one flat set of atoms: every atom of every molecule concatenated, with a per-atom
molecule index (`mol`) and edges only between distinct atoms of the same molecule. No padding.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import EADError
from .bonds import MAX_Z
from .elements import CHARGE_SCALE, ONE_HOT_SCALE, symbol

# The largest molecule a model may describe or generate: every atom pair is an edge, so one
# molecule of M atoms costs M(M − 1) edges (GEOM-Drugs' largest has 181 atoms; docs/reliability.md).
MAX_MOLECULE_ATOMS = 1000


@dataclass
class MoleculeSet:
    """Many molecules in three flat arrays (the layout of the on-disk cache too).

    positions: [A, 3] float32 Å; atomic_numbers: [A] int; offsets: [M + 1] int64, molecule m is
    atoms offsets[m]:offsets[m+1]. properties: optional [M, P] float32 with `property_names`.
    """

    positions: np.ndarray
    atomic_numbers: np.ndarray
    offsets: np.ndarray
    properties: np.ndarray | None = None
    property_names: tuple[str, ...] = ()
    ids: np.ndarray | None = None  # e.g. the QM9 index of each molecule

    def __post_init__(self):
        assert self.offsets[0] == 0 and self.offsets[-1] == len(self.atomic_numbers)
        assert self.positions.shape == (len(self.atomic_numbers), 3)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def num_atoms(self) -> np.ndarray:
        return np.diff(self.offsets)

    def molecule(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        a, b = self.offsets[i], self.offsets[i + 1]
        return self.positions[a:b], self.atomic_numbers[a:b]

    def __iter__(self):
        for i in range(len(self)):
            yield self.molecule(i)

    def subset(self, index) -> "MoleculeSet":
        index = np.asarray(index, dtype=np.int64)
        counts = self.num_atoms[index]
        offsets = np.zeros(len(index) + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        atom_idx = _ranges(self.offsets[index], counts)
        return MoleculeSet(
            self.positions[atom_idx],
            self.atomic_numbers[atom_idx],
            offsets,
            None if self.properties is None else self.properties[index],
            self.property_names,
            None if self.ids is None else self.ids[index],
        )

    def without_hydrogens(self) -> "MoleculeSet":
        keep = self.atomic_numbers != 1
        mol = np.repeat(np.arange(len(self)), self.num_atoms)
        counts = np.bincount(mol[keep], minlength=len(self))
        offsets = np.zeros(len(self) + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        return MoleculeSet(self.positions[keep], self.atomic_numbers[keep], offsets,
                           self.properties, self.property_names, self.ids)

    def with_absent(self, max_atoms: int) -> "MoleculeSet":
        """Every molecule padded to `max_atoms` atoms with absent atoms (Z = ABSENT) placed at its
        centroid, so that centring the padded molecule leaves the real atoms where centring them
        alone would (docs/method.md §8, dummy-atom mode). Real atoms keep their order, absent ones follow."""
        from .elements import ABSENT

        sizes = self.num_atoms
        if len(sizes) and int(sizes.max()) > max_atoms:
            m = int(np.argmax(sizes))
            raise EADError(f"molecule {m} has {int(sizes[m])} atoms, more than the model's {max_atoms} slots")
        mol = np.repeat(np.arange(len(self)), sizes)
        centroid = np.zeros((len(self), 3), dtype=np.float64)
        np.add.at(centroid, mol, self.positions.astype(np.float64))
        centroid /= np.maximum(sizes, 1)[:, None]
        offsets = np.arange(len(self) + 1, dtype=np.int64) * max_atoms
        slot = offsets[mol] + (np.arange(len(mol)) - self.offsets[mol])     # real atom → its slot
        positions = np.repeat(centroid.astype(np.float32), max_atoms, axis=0)
        positions[slot] = self.positions
        numbers = np.full(len(self) * max_atoms, ABSENT, dtype=self.atomic_numbers.dtype)
        numbers[slot] = self.atomic_numbers
        return MoleculeSet(positions, numbers, offsets, self.properties, self.property_names, self.ids)

    @classmethod
    def from_list(cls, molecules, ids=None) -> "MoleculeSet":
        """From a list of (positions [n,3], atomic_numbers [n]) pairs."""
        molecules = list(molecules)
        if not molecules:
            raise EADError("no molecules")
        counts = [len(z) for _, z in molecules]
        offsets = np.zeros(len(molecules) + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        pos = np.concatenate([np.asarray(p, dtype=np.float32).reshape(-1, 3) for p, _ in molecules])
        z = np.concatenate([np.asarray(z, dtype=np.int64) for _, z in molecules])
        return cls(pos, z, offsets, ids=None if ids is None else np.asarray(ids))

    def size_histogram(self) -> dict[int, int]:
        sizes, counts = np.unique(self.num_atoms, return_counts=True)
        return {int(s): int(c) for s, c in zip(sizes, counts)}

    def validate(self, atom_types: tuple[int, ...]) -> None:
        """EADError naming the first molecule that the model cannot take."""
        known = np.isin(self.atomic_numbers, np.asarray(atom_types))
        if not known.all():
            a = int(np.argmin(known))
            m = int(np.searchsorted(self.offsets, a, side="right") - 1)
            raise EADError(f"molecule {m}: element {symbol(int(self.atomic_numbers[a]))} "
                           f"is not in the model's atom types {[symbol(z) for z in atom_types]}")
        if not np.isfinite(self.positions).all():
            a = int(np.argmin(np.isfinite(self.positions).all(1)))
            m = int(np.searchsorted(self.offsets, a, side="right") - 1)
            raise EADError(f"molecule {m}: coordinates are not finite (NaN or inf)")
        if (self.num_atoms < 1).any():
            raise EADError(f"molecule {int(np.argmin(self.num_atoms))}: no atoms")


def _ranges(starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Concatenation of arange(s, s + c) for each (s, c), without a Python loop."""
    total = int(counts.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    block_start = np.repeat(np.cumsum(counts) - counts, counts)
    return np.repeat(starts, counts) + (np.arange(total) - block_start)


@dataclass
class Batch:
    """A flat batch. x: [N,3]; h: [N,F] scaled features; mol: [N]; num_atoms: [B];
    edge_index: [2,E] (source row i, neighbour col j, i != j, same molecule); context: [N,C] or None."""

    x: torch.Tensor
    h: torch.Tensor
    mol: torch.Tensor
    num_atoms: torch.Tensor
    edge_index: torch.Tensor
    context: torch.Tensor | None = None
    atomic_numbers: torch.Tensor | None = field(default=None, repr=False)

    @property
    def num_molecules(self) -> int:
        return int(self.num_atoms.shape[0])

    def _map(self, fn) -> "Batch":
        return Batch(*(None if t is None else fn(t) for t in (self.x, self.h, self.mol, self.num_atoms,
                                                               self.edge_index, self.context, self.atomic_numbers)))

    def pin(self) -> "Batch":
        """The same batch in page-locked memory, so that `to(cuda)` copies without the host waiting."""
        return self._map(lambda t: t.pin_memory())

    def to(self, device) -> "Batch":
        return self._map(lambda t: t.to(device, non_blocking=True))


def molecule_index(num_atoms: torch.Tensor) -> torch.Tensor:
    return torch.repeat_interleave(torch.arange(len(num_atoms), device=num_atoms.device), num_atoms)


def full_edges(num_atoms: torch.Tensor) -> torch.Tensor:
    """All ordered pairs (i, j), i != j, inside each molecule: [2, sum n(n-1)], sorted by i."""
    device = num_atoms.device
    mol = molecule_index(num_atoms)
    start = torch.cumsum(num_atoms, 0) - num_atoms
    per_atom = num_atoms[mol]                                   # neighbours incl. self
    rows = torch.repeat_interleave(torch.arange(len(mol), device=device), per_atom)
    block = torch.cumsum(per_atom, 0) - per_atom
    local = torch.arange(len(rows), device=device) - block[rows]
    cols = start[mol[rows]] + local
    keep = rows != cols
    return torch.stack([rows[keep], cols[keep]])


class FeatureEncoder:
    """Atomic numbers -> EDM node features [one-hot / 4, Z / 10] and back (docs/method.md §1)."""

    def __init__(self, atom_types: tuple[int, ...], include_charges: bool = True):
        self.atom_types = tuple(int(z) for z in atom_types)
        self.include_charges = include_charges
        lut = torch.full((128,), -1, dtype=torch.long)
        lut[torch.tensor(self.atom_types)] = torch.arange(len(self.atom_types))
        self._lut = lut
        self._types = torch.tensor(self.atom_types, dtype=torch.long)

    @property
    def num_features(self) -> int:
        return len(self.atom_types) + int(self.include_charges)

    def encode(self, atomic_numbers: torch.Tensor) -> torch.Tensor:
        idx = self._lut.to(atomic_numbers.device)[atomic_numbers.long()]
        if (idx < 0).any():
            raise EADError("atom type outside the model's vocabulary")
        onehot = torch.nn.functional.one_hot(idx, len(self.atom_types)).float() * ONE_HOT_SCALE
        if not self.include_charges:
            return onehot
        return torch.cat([onehot, atomic_numbers.float().unsqueeze(-1) * CHARGE_SCALE], -1)

    def decode(self, h: torch.Tensor) -> torch.Tensor:
        """Atomic numbers from (denoised) features: argmax of the one-hot slice (as EDM)."""
        idx = h[:, : len(self.atom_types)].argmax(-1)
        return self._types.to(h.device)[idx]


def collate(molecules: MoleculeSet, index, encoder: FeatureEncoder,
            context: np.ndarray | None = None) -> Batch:
    """Molecules `index` of `molecules` as one flat batch, coordinates centred per molecule."""
    sub = molecules.subset(index)
    num_atoms = torch.from_numpy(sub.num_atoms.astype(np.int64))
    mol = molecule_index(num_atoms)
    x = torch.from_numpy(sub.positions.astype(np.float32))
    x = remove_mean(x, mol, len(num_atoms))
    z = torch.from_numpy(sub.atomic_numbers.astype(np.int64))
    ctx = None
    if context is not None:
        ctx = torch.from_numpy(np.asarray(context, dtype=np.float32)[np.asarray(index)])
        ctx = ctx.reshape(len(num_atoms), -1)[mol]
    return Batch(x, encoder.encode(z), mol, num_atoms, full_edges(num_atoms), ctx, z)


def remove_mean(x: torch.Tensor, mol: torch.Tensor, num_molecules: int) -> torch.Tensor:
    """Project coordinates to the zero centre-of-mass subspace of each molecule."""
    total = torch.zeros(num_molecules, x.shape[-1], dtype=x.dtype, device=x.device).index_add_(0, mol, x)
    count = torch.bincount(mol, minlength=num_molecules).clamp_min(1).to(x.dtype).unsqueeze(-1)
    return x - (total / count)[mol]


# Speed flag: centre coordinates with counts from index_add instead of bincount. The result is
# bit-identical, but bincount on CUDA reads its input's maximum back to the host, a sync at every
# sampling step (and it cannot be captured in a CUDA graph). False = the plain `remove_mean`.
SYNC_FREE_MEAN = True


def center(x: torch.Tensor, mol: torch.Tensor, num_molecules: int) -> torch.Tensor:
    """Zero centre of mass per molecule, like `remove_mean`, without a host sync."""
    if not SYNC_FREE_MEAN:
        return remove_mean(x, mol, num_molecules)
    total = x.new_zeros((num_molecules, x.shape[-1])).index_add_(0, mol, x)
    count = x.new_zeros(num_molecules).index_add_(0, mol, x.new_ones(mol.shape[0]))
    return x - (total / count.clamp_min(1).unsqueeze(-1))[mol]


def as_molecule_set(molecules) -> MoleculeSet:
    """A MoleculeSet from a MoleculeSet or an iterable of (positions [n,3], atomic numbers [n]).

    Positions keep their precision (float64 for a list), unlike MoleculeSet.from_list, so that a
    distance sitting exactly on a table boundary is judged on the caller's numbers. Empty input,
    a molecule without atoms, or non-finite coordinates are EADErrors naming the molecule.
    """
    if isinstance(molecules, MoleculeSet):
        mols = molecules
    else:
        items = list(molecules)
        if not items:
            raise EADError("no molecules to evaluate")
        pos, zs = [], []
        for k, (p, z) in enumerate(items):
            p = np.asarray(p, dtype=np.float64)
            z = np.asarray(z).reshape(-1)
            if p.ndim != 2 or p.shape != (len(z), 3):
                raise EADError(f"molecule {k}: positions of shape {p.shape} do not match "
                               f"{len(z)} atoms (expected [{len(z)}, 3])")
            pos.append(p)
            zs.append(z.astype(np.int64))
        offsets = np.zeros(len(items) + 1, dtype=np.int64)
        np.cumsum([len(z) for z in zs], out=offsets[1:])
        mols = MoleculeSet(np.concatenate(pos), np.concatenate(zs), offsets)
    if len(mols) == 0:
        raise EADError("no molecules to evaluate")
    if (mols.num_atoms < 1).any():
        raise EADError(f"molecule {int(np.argmin(mols.num_atoms))}: no atoms")
    bad_z = (mols.atomic_numbers < 1) | (mols.atomic_numbers >= MAX_Z)
    if bad_z.any():
        a = int(np.argmax(bad_z))
        raise EADError(f"molecule {_molecule_of(mols, a)}: atomic number "
                       f"{int(mols.atomic_numbers[a])} is not an element")
    finite = np.isfinite(mols.positions).all(1)
    if not finite.all():
        raise EADError(f"molecule {_molecule_of(mols, int(np.argmin(finite)))}: "
                       "coordinates are not finite (NaN or inf)")
    return mols


def _molecule_of(mols: MoleculeSet, atom: int) -> int:
    return int(np.searchsorted(mols.offsets, atom, side="right") - 1)


class SizeBucketBatches:
    """Deterministic, resumable batch order: shuffled each epoch from (seed, epoch), batches drawn
    from size-sorted chunks so that molecules of similar size share a batch (less work per batch on
    padded back-ends, steadier step time on flat ones). `bucket=False` gives plain shuffled batches.
    Rank r of w takes every w-th batch, so data-parallel ranks see disjoint data."""

    def __init__(self, sizes: np.ndarray, batch_size: int, seed: int = 0, bucket: bool = False,
                 rank: int = 0, world_size: int = 1, drop_last: bool = True):
        self.sizes = np.asarray(sizes)
        self.batch_size = batch_size
        self.seed = seed
        self.bucket = bucket
        self.rank, self.world_size = rank, world_size
        self.drop_last = drop_last
        self._cached: tuple[int, list] | None = None

    def epoch(self, epoch: int) -> list[np.ndarray]:
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(len(self.sizes))
        if self.bucket:
            chunk = self.batch_size * 50
            for s in range(0, len(order), chunk):
                part = order[s : s + chunk]
                order[s : s + chunk] = part[np.argsort(self.sizes[part], kind="stable")]
        n = len(order) // self.batch_size if self.drop_last else -(-len(order) // self.batch_size)
        batches = [order[i * self.batch_size : (i + 1) * self.batch_size] for i in range(n)]
        if self.bucket:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        usable = len(batches) - len(batches) % self.world_size
        return batches[self.rank : usable : self.world_size]

    def at_step(self, step: int) -> np.ndarray:
        """The molecules of global step `step` (epoch step // len(self)); the epoch's order is cached."""
        epoch, pos = divmod(step, len(self))
        if self._cached is None or self._cached[0] != epoch:
            self._cached = (epoch, self.epoch(epoch))
        return self._cached[1][pos]

    def __len__(self) -> int:
        n = len(self.sizes) // self.batch_size if self.drop_last else -(-len(self.sizes) // self.batch_size)
        return n // self.world_size
