"""PoseBusters "mol" checks (docs/evaluation.md §6) on the protocol molecules.

Each molecule is handed to PoseBusters as the protocol builds it (distance-inferred bonds, no
charges, unsanitised, with its 3D coordinates), so "Sanitization" fails exactly where the protocol's
validity does. A check that PoseBusters could not run for a molecule (it skips the geometry checks
of one that does not sanitise) counts as failed for that molecule; "overall" is the fraction of
molecules that pass every check.

Cost: the "Internal energy" check generates 50 ETKDG conformers per molecule, about a second per
QM9-sized molecule on one core; the other checks are cheap.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from rdkit import rdBase

from ..data.batch import MoleculeSet
from ..errors import EADError
from ..progress import Progress
from .chem import graph_mols
from .stability import BondGraph

INSTALL_HINT = "PoseBusters checks need the package posebusters: pip install posebusters"


def _mol_config() -> dict:
    import posebusters
    import yaml  # a dependency of posebusters

    path = Path(posebusters.__file__).parent / "config" / "mol.yml"
    config = yaml.safe_load(path.read_text())
    # posebusters' mol.yml (0.6) lists the energy-ratio module twice, once without a reported
    # output; that copy only doubles the most expensive check, so modules that report nothing
    # are dropped. Every reported check of the "mol" config stays.
    config["modules"] = [m for m in config["modules"] if m.get("chosen_binary_test_output")]
    return config


# molecules per PoseBusters call: the progress moves every few seconds, and a call's fixed cost
# stays small beside ~1 s per molecule
PROGRESS_CHUNK = 8


def posebusters_metrics(mols: MoleculeSet, graph: BondGraph | None = None,
                        workers: int = 0, progress=False) -> dict:
    """{'overall': fraction passing all checks, 'checks': {check: pass fraction}, 'num_molecules'}.

    workers: PoseBusters' process count (0 = in this process). progress: as
    ead.progress.Progress's `show`, per molecule checked."""
    try:
        import pandas as pd   # a dependency of posebusters
        from posebusters import PoseBusters
    except ImportError:
        raise EADError(INSTALL_HINT) from None
    rd_mols = list(graph_mols(mols, graph, conformer=True))
    # PoseBusters logs a warning for every molecule it cannot fully check, and routes RDKit's own
    # messages (one per check of an invalid molecule) to the Python logger "rdkit": here both are
    # expected outcomes (counted as failed checks), not news for the user.
    loggers = [logging.getLogger("posebusters"), logging.getLogger("rdkit")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    try:
        with rdBase.BlockLogs(), Progress(len(rd_mols), "PoseBusters", "mol", progress) as bar:
            buster = PoseBusters(config=_mol_config(), max_workers=workers)
            step = PROGRESS_CHUNK if progress else max(1, len(rd_mols))
            tables = []
            for a in range(0, len(rd_mols), step):
                tables.append(buster.bust(rd_mols[a : a + step]))
                bar.update(len(rd_mols[a : a + step]))
            table = pd.concat(tables, ignore_index=True)
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
    checks = [c for c in table.columns if c not in ("file", "molecule", "position")]
    # NaN (not run) -> False; booleans and 0/1 floats both compare as intended
    passed = np.stack([table[c].map(lambda v: v is True or v == 1).to_numpy(dtype=bool)
                       for c in checks], axis=1)
    return {
        "num_molecules": len(rd_mols),
        "overall": float(passed.all(1).mean()),
        "checks": {c: float(passed[:, k].mean()) for k, c in enumerate(checks)},
    }
