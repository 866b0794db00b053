"""The molecules a generator run trains and validates on: QM9, GEOM-Drugs or a user's files."""

from __future__ import annotations

import sys
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
        from ..data.files import COINCIDENT, has_coincident_atoms, read_molecules

        read = read_molecules(cfg.data, strict=True)
        keep = [i for i, c in enumerate(read.charged) if not c]
        if len(keep) < len(read.molecules):   # the features hold elements only: say so, never drop in silence
            if not keep:
                raise EADError(f"every molecule of {cfg.data} has formal charges (M  CHG); the model has no "
                               "charge feature, so they would be trained as neutral atoms")
            print(f"warning: skipped {len(read.molecules) - len(keep)} of {len(read.molecules)} molecules with "
                  "formal charges (M  CHG): the model has no charge feature", file=sys.stderr)
            read.molecules = [read.molecules[i] for i in keep]
            read.properties = [read.properties[i] for i in keep]
        coincident = sum(has_coincident_atoms(pos) for pos, _ in read.molecules)
        if coincident:
            print(f"warning: {coincident} of {len(read.molecules)} molecules of {cfg.data} have coincident "
                  f"atoms (closer than {COINCIDENT} Å)", file=sys.stderr)
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
    limit = cfg.molecule_atoms_limit()
    big = int((train.num_atoms > limit).sum() + (valid.num_atoms > limit).sum())
    if big:   # before any batch is built: one molecule's edges grow as the square of its atoms
        train, valid = (m.subset(np.flatnonzero(m.num_atoms <= limit)) for m in (train, valid))
        print(f"warning: skipped {big} molecules of more than {limit} atoms (--max-molecule-atoms)",
              file=sys.stderr)
        if len(train) == 0 or len(valid) == 0:
            raise EADError(f"no {'training' if len(train) == 0 else 'validation'} molecule of {cfg.data} "
                           f"has ≤ {limit} atoms (--max-molecule-atoms)")
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
