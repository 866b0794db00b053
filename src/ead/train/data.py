"""The molecules a generator run trains and validates on: QM9, GEOM-Drugs or a user's files."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..data.batch import MoleculeSet
from ..data.properties import normalise, property_columns, record_values
from ..errors import EADError
from ..model.config import ModelConfig
from .config import TrainConfig, is_geom_file


def load_data(cfg: TrainConfig):
    """(train, valid, atom_types, dataset name) for QM9 or a user's molecule file/folder."""
    from ..data.elements import QM9_NO_H_TYPES, QM9_TYPES

    if cfg.data == "qm9":
        from ..data.qm9 import qm9_half, qm9_split

        train = qm9_half(cfg.condition_split if cfg.condition else "all", cfg.remove_h, verbose=not cfg.quiet)
        valid = qm9_split("valid", cfg.remove_h)
        types = QM9_NO_H_TYPES if cfg.remove_h else QM9_TYPES
        name = "qm9"
    elif is_geom_file(cfg.data):
        from ..data.elements import GEOM_TYPES
        from ..data.geom import load_geom_splits

        if cfg.condition:
            raise EADError("conditioning on GEOM-Drugs is not supported (EDM's GEOM files carry no properties)")
        sets, split = load_geom_splits(cfg.data, ("train", "valid"), verbose=not cfg.quiet)
        train, valid = sets["train"], sets["valid"]
        types = GEOM_TYPES
        if cfg.remove_h:
            train, valid = train.without_hydrogens(), valid.without_hydrogens()
            types = tuple(z for z in GEOM_TYPES if z != 1)
        train.validate(types)
        valid.validate(types)
        name = "geom-drugs" if split == "edm" else f"geom-drugs-{split}"
    else:
        from ..data.files import read_molecules

        read = read_molecules(cfg.data, strict=True)
        mols = MoleculeSet.from_list(read.molecules)
        if cfg.condition:   # a user's properties: numeric SD data fields of every record
            mols.properties = record_values(read.properties, cfg.condition, "property to condition on")
            mols.property_names = tuple(cfg.condition)
        if cfg.remove_h:
            mols = mols.without_hydrogens()
        types = tuple(sorted(int(z) for z in np.unique(mols.atomic_numbers)))
        mols.validate(types)
        perm = np.random.default_rng(cfg.seed).permutation(len(mols))
        n_val = max(1, len(mols) // 20) if len(mols) > 1 else 0
        valid = mols.subset(perm[:n_val]) if n_val else mols
        train = mols.subset(perm[n_val:]) if n_val else mols
        name = Path(cfg.data).name
    if cfg.filter_size:   # counted as trained: after --remove-h
        train, valid = (m.subset(np.flatnonzero(m.num_atoms <= cfg.filter_size)) for m in (train, valid))
        if len(train) == 0 or len(valid) == 0:
            raise EADError(f"no {'training' if len(train) == 0 else 'validation'} molecule of {cfg.data} "
                           f"has ≤ {cfg.filter_size} atoms (--filter-size)")
    if cfg.limit_molecules:
        train = train.subset(np.arange(min(cfg.limit_molecules, len(train))))
    if len(train) < cfg.batch_size:
        cfg.batch_size = len(train)
    return train, valid, types, name


def context_array(molecules: MoleculeSet, config: ModelConfig) -> np.ndarray | None:
    """The network's context per molecule, [M, C] normalised, for a conditional model (else None)."""
    if not config.context:
        return None
    return normalise(config, property_columns(molecules, config.context))
