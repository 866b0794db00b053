"""QM9 from the `qm9pack` package, parsed once into a compact cache; EDM's split (docs/evaluation.md §1).

The cache is an .npz (no pickled objects) under `cache_dir()`: $EAD_CACHE, else
$XDG_CACHE_HOME/ead, else ~/.cache/ead. Parsing the CSVs takes about a minute, loading the cache
well under a second.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import sys
from pathlib import Path

import numpy as np

from ..errors import EADError
from .batch import MoleculeSet
from .elements import atomic_number

NUM_MOLECULES = 130_831
SPLIT_SIZES = {"train": 100_000, "valid": 17_748, "test": 13_083}
CACHE_VERSION = 1

HARTREE_TO_MEV = 27211.386
# name in our cache -> (CSV column, factor to EDM's units)
PROPERTIES = {
    "alpha": ("Polarizability_bohr3", 1.0),          # Bohr^3
    "gap": ("HOMO_LUMO_gap_au", HARTREE_TO_MEV),      # meV
    "homo": ("HOMO_au", HARTREE_TO_MEV),              # meV
    "lumo": ("LUMO_au", HARTREE_TO_MEV),              # meV
    "mu": ("Dipole_debye", 1.0),                       # Debye
    "Cv": ("Heatcapacity_Cv_cal_mol_K", 1.0),         # cal/(mol K)
}


def cache_dir() -> Path:
    if os.environ.get("EAD_CACHE"):
        return Path(os.environ["EAD_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "ead"


class MissingQM9(EADError):
    """QM9 is needed (training on it, novelty against it) and neither its cache nor the optional
    qm9pack package (224 MB, the `ead[qm9]` extra) is there: sampling does not need it."""

    def __init__(self):
        super().__init__("QM9 needs the optional package qm9pack (224 MB): pip install 'ead[qm9]'")


def qm9pack_data_dir() -> Path:
    # qm9pack's own loader imports pkg_resources (gone from recent setuptools): find its data
    # folder without importing the package.
    spec = importlib.util.find_spec("qm9pack")
    if spec is None or not spec.submodule_search_locations:
        raise MissingQM9()
    return Path(list(spec.submodule_search_locations)[0]) / "data"


def _floats(text: str) -> np.ndarray:
    # nested Python-style lists ("1." and Mathematica's "*^" exponent both occur)
    flat = text.replace("[", " ").replace("]", " ").replace("*^", "e").split(",")
    return np.array([float(v) for v in flat], dtype=np.float64)


def _parse_csvs(data_dir: Path) -> dict[str, np.ndarray]:
    files = sorted(data_dir.glob("qm9_part*.csv"))
    if not files:
        raise EADError(f"no qm9_part*.csv in {data_dir}")
    csv.field_size_limit(sys.maxsize)
    rows = []
    for f in files:
        with open(f, newline="") as fh:
            for r in csv.DictReader(fh):
                elements = [atomic_number(s) for s in json.loads(r["Elements"].replace("'", '"'))]
                xyz = _floats(r["XYZ_Ang"]).reshape(-1, 3)
                props = [float(r[col]) * k for col, k in PROPERTIES.values()]
                rows.append((int(r["Index"]), elements, xyz, props))
    rows.sort(key=lambda r: r[0])  # EDM's split indexes the molecules sorted by QM9 index
    counts = np.array([len(r[1]) for r in rows], dtype=np.int64)
    offsets = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    return {
        "version": np.array(CACHE_VERSION),
        "ids": np.array([r[0] for r in rows], dtype=np.int64),
        "positions": np.concatenate([r[2] for r in rows]).astype(np.float32),
        "atomic_numbers": np.concatenate([r[1] for r in rows]).astype(np.uint8),
        "offsets": offsets,
        "properties": np.array([r[3] for r in rows], dtype=np.float32),
        "property_names": np.array(list(PROPERTIES)),
    }


def _write_atomic(path: Path, arrays: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


def load_qm9(cache: Path | None = None, verbose: bool = False) -> MoleculeSet:
    """All 130,831 QM9 molecules, sorted by QM9 index (the order EDM's split refers to)."""
    path = Path(cache or cache_dir()) / f"qm9_v{CACHE_VERSION}.npz"
    if not path.exists():
        if verbose:
            print(f"parsing QM9 from qm9pack into {path} (once, about a minute)", file=sys.stderr)
        _write_atomic(path, _parse_csvs(qm9pack_data_dir()))
    try:
        with np.load(path, allow_pickle=False) as f:
            d = {k: f[k] for k in f.files}
    except Exception as e:  # a truncated or foreign file: say so, do not guess
        raise EADError(f"corrupt QM9 cache {path} ({e}); delete it to rebuild") from None
    if int(d["version"]) != CACHE_VERSION or len(d["ids"]) != NUM_MOLECULES:
        raise EADError(f"unexpected QM9 cache {path}; delete it to rebuild")
    return MoleculeSet(d["positions"], d["atomic_numbers"].astype(np.int64), d["offsets"],
                       d["properties"], tuple(str(s) for s in d["property_names"]), d["ids"])


def split_indices() -> dict[str, np.ndarray]:
    """EDM's split: numpy.random.seed(0); permutation(130831); 100,000 / 17,748 / 13,083."""
    state = np.random.get_state()
    try:
        np.random.seed(0)
        perm = np.random.permutation(NUM_MOLECULES)
    finally:
        np.random.set_state(state)
    a = SPLIT_SIZES["train"]
    b = a + SPLIT_SIZES["valid"]
    return {"train": perm[:a], "valid": perm[a:b], "test": perm[b:]}


def conditional_halves() -> dict[str, np.ndarray]:
    """Positions in the train split: first half (property predictor), second half (generator)."""
    state = np.random.get_state()
    try:
        np.random.seed(42)
        perm = np.random.permutation(SPLIT_SIZES["train"])
    finally:
        np.random.set_state(state)
    half = SPLIT_SIZES["train"] // 2
    return {"first": perm[:half], "second": perm[half:]}


def qm9_half(half: str, remove_h: bool = False, verbose: bool = False) -> MoleculeSet:
    """EDM's half of the training split: "first" (the property predictor's), "second" (the
    conditional generator's), in QM9 order; "all" is the whole training split."""
    train = qm9_split("train", remove_h, verbose=verbose)
    if half == "all":
        return train
    if half not in ("first", "second"):
        raise EADError(f"unknown half {half!r}; choose first, second or all")
    return train.subset(np.sort(conditional_halves()[half]))


def qm9_split(split: str = "train", remove_h: bool = False, cache: Path | None = None,
              verbose: bool = False) -> MoleculeSet:
    if split not in SPLIT_SIZES:
        raise EADError(f"unknown QM9 split {split!r}; choose from {sorted(SPLIT_SIZES)}")
    mols = load_qm9(cache, verbose).subset(split_indices()[split])
    return mols.without_hydrogens() if remove_h else mols
