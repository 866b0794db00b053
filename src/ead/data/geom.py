"""GEOM-Drugs in EDM's processed layout, read without unpickling anything.

EDM's `build_geom_dataset.py` turns GEOM's msgpack into files in one folder:

- `geom_drugs_30.npy` (`geom_drugs_no_h_30.npy` without hydrogens): float64 [atoms, 5], rows
  (conformer id, atomic number, x, y, z in Å) for the 30 lowest-energy conformers of every
  molecule; each conformer is one training "molecule" with its own consecutive id;
- `geom_drugs_n_30.npy` (atoms per conformer) and `geom_drugs_smiles.txt` (one SMILES per molecule);
- `geom_permutation.npy`: the permutation of the conformers that EDM's first run saved once and
  every later run loads. Validation = its first 10 %, test = the next 10 %, training = the rest
  (EDM's `load_split_data`, val_proportion = test_proportion = 0.1).

`ead train --data PATH/geom_drugs_30.npy` reads it with this module. The array is memory-mapped and
each split read in file order, so the 12 GB file is read once, sequentially, per split. Without a
permutation file the split comes from a seeded permutation instead (said on stderr, and recorded in
the dataset name), which is *not* EDM's split.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from ..errors import EADError
from .batch import MoleculeSet, _ranges
from .files import MAX_ABS_COORD

PERMUTATION_FILE = "geom_permutation.npy"
VAL_PROPORTION = TEST_PROPORTION = 0.1
SPLITS = ("train", "valid", "test")


def _open(path: Path) -> np.ndarray:
    try:
        data = np.load(path, mmap_mode="r", allow_pickle=False)
    except FileNotFoundError:
        raise EADError(f"no such file: {path}") from None
    except (ValueError, OSError, EOFError) as e:   # pickled object arrays land here too
        raise EADError(f"{path} is not a numeric .npy array (EDM's GEOM layout): {e}") from None
    if data.ndim != 2 or data.shape[1] != 5 or data.dtype.kind not in "fiu" or len(data) == 0:
        raise EADError(f"{path}: expected EDM's GEOM array [atoms, 5] of numbers (conformer id, "
                       f"atomic number, x, y, z), got shape {data.shape} dtype {data.dtype}")
    return data


def conformer_offsets(ids: np.ndarray) -> np.ndarray:
    """Offsets [C + 1] of the runs of equal conformer ids (EDM splits where the id changes)."""
    change = np.flatnonzero(ids[1:] != ids[:-1]) + 1
    return np.concatenate([[0], change, [len(ids)]]).astype(np.int64)


def split_conformers(num_conformers: int, permutation: np.ndarray | None, seed: int = 0) -> dict[str, np.ndarray]:
    """Conformer indices of each split, EDM's way: permute, then 10 % validation, 10 % test."""
    if permutation is None:
        permutation = np.random.default_rng(seed).permutation(num_conformers)
    perm = np.asarray(permutation).astype(np.int64, copy=False).reshape(-1)
    if len(perm) != num_conformers or not np.array_equal(np.sort(perm), np.arange(num_conformers)):
        raise EADError(f"{PERMUTATION_FILE} is not a permutation of the file's {num_conformers} conformers "
                       f"(it has {len(perm)} entries)")
    val_end = int(num_conformers * VAL_PROPORTION)
    test_end = val_end + int(num_conformers * TEST_PROPORTION)
    return {"valid": perm[:val_end], "test": perm[val_end:test_end], "train": perm[test_end:]}


def load_geom(path: str | Path, split: str = "train", filter_size: int | None = None,
              verbose: bool = False) -> tuple[MoleculeSet, str]:
    """One split of EDM's processed GEOM-Drugs as a MoleculeSet (ids = conformer ids), and the
    name of the split used: "edm" (its permutation file) or "seed0" (none found)."""
    sets, split_name = load_geom_splits(path, (split,), filter_size, verbose)
    return sets[split], split_name


def load_geom_splits(path: str | Path, splits=("train", "valid"), filter_size: int | None = None,
                     verbose: bool = False) -> tuple[dict[str, MoleculeSet], str]:
    """Several splits at once: the id column, the offsets and the permutation are read once."""
    bad = [s for s in splits if s not in SPLITS]
    if bad:
        raise EADError(f"unknown GEOM split {bad[0]!r}; choose from {', '.join(SPLITS)}")
    path = Path(path)
    data = _open(path)
    ids = np.asarray(data[:, 0]).astype(np.int64)
    offsets = conformer_offsets(ids)
    sizes = np.diff(offsets)
    kept = np.arange(len(sizes)) if filter_size is None else np.flatnonzero(sizes <= filter_size)
    if len(kept) == 0:
        raise EADError(f"no conformer of {path} has ≤ {filter_size} atoms")
    perm_path = path.parent / PERMUTATION_FILE
    if perm_path.exists():
        try:
            perm = np.load(perm_path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:
            raise EADError(f"{perm_path} is not a numeric .npy array: {e}") from None
        split_name = "edm"
    else:
        perm, split_name = None, "seed0"
        if verbose:
            print(f"warning: no {PERMUTATION_FILE} beside {path.name}: splitting with a seeded permutation, "
                  "which is not EDM's split", file=sys.stderr)
    parts = split_conformers(len(kept), perm)
    out = {}
    for split in splits:
        chosen = np.sort(kept[parts[split]])   # file order: one sequential pass
        out[split] = _read_conformers(path, data, offsets, sizes, chosen)
        out[split].ids = ids[offsets[chosen]]
        if verbose:
            print(f"GEOM {split}: {len(chosen):,} conformers, {len(out[split].atomic_numbers):,} atoms "
                  f"({split_name} split)", file=sys.stderr)
    return out, split_name


def _read_conformers(path, data, offsets, sizes, chosen) -> MoleculeSet:
    counts = sizes[chosen]
    mol_offsets = np.zeros(len(chosen) + 1, dtype=np.int64)
    np.cumsum(counts, out=mol_offsets[1:])
    positions = np.empty((int(mol_offsets[-1]), 3), dtype=np.float32)
    numbers = np.empty(int(mol_offsets[-1]), dtype=np.int16)
    step = 200_000   # conformers per read: bounded memory for the atom index
    for a in range(0, len(chosen), step):
        rows = _ranges(offsets[chosen[a:a + step]], counts[a:a + step])
        block = np.asarray(data[rows])
        lo, hi = mol_offsets[a], mol_offsets[min(a + step, len(chosen))]
        xyz = block[:, 2:5]
        if not np.isfinite(xyz).all() or np.abs(xyz).max(initial=0) > MAX_ABS_COORD:
            raise EADError(f"{path}: coordinates must be finite and within ±{MAX_ABS_COORD:g} Å")
        positions[lo:hi] = xyz
        z = block[:, 1]
        if not np.array_equal(z, np.round(z)) or z.min() < 1 or z.max() > 118:
            raise EADError(f"{path}: column 1 must hold atomic numbers (1–118)")
        numbers[lo:hi] = z.astype(np.int16)
    return MoleculeSet(positions, numbers, mol_offsets)
