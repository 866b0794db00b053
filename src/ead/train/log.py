"""A run's log: log.csv (rows of the columns a run declares) and, optionally, TensorBoard scalars.

Lightning Fabric's CSVLogger / TensorBoardLogger are not used: log.csv is one file in the run folder
with a fixed header that resumes truncate at the checkpoint's step (rows past it are dropped, and
TensorBoard's events purged), which those loggers' versioned folders and metrics.csv do not do.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

from ..errors import EADError
from ..io import write_atomic


def summary_writer():
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise EADError("--tensorboard needs the tensorboard package: pip install tensorboard "
                       "(or pip install 'ead[tensorboard]')") from None
    return SummaryWriter


class CsvLog:
    """The run's log.csv (one row per log interval; validation and sampling rows carry only their
    columns) and, with --tensorboard, the same numbers as TensorBoard scalars in `tb_dir`, grouped
    as train/, val/ and sample/. A resumed run purges TensorBoard events past its checkpoint, as
    log.csv is truncated there."""

    FIELDS = ("step", "epoch", "loss", "grad_norm", "s_per_step", "val_loss",
              "atom_stability", "molecule_stability", "validity")   # the generator's columns
    GROUPS = {"val_loss": "val/loss", "atom_stability": "sample/atom_stability",
              "molecule_stability": "sample/molecule_stability", "validity": "sample/validity"}

    def __init__(self, path: Path, tb_dir: Path | None = None, start_step: int = 0,
                 fields: tuple[str, ...] | None = None):
        self.path = path
        self.FIELDS = list(fields or self.FIELDS)
        truncate_log(path, start_step)
        if not path.exists():
            with open(path, "w", newline="") as f:
                csv.writer(f, lineterminator="\n").writerow(self.FIELDS)
        self.tb = None
        if tb_dir is not None:
            self.tb = summary_writer()(log_dir=str(tb_dir), purge_step=start_step or None)

    def write(self, row: dict) -> None:
        with open(self.path, "a", newline="") as f:
            csv.writer(f, lineterminator="\n").writerow([_fmt(row.get(k)) for k in self.FIELDS])
        if self.tb is not None:
            for k in self.FIELDS[1:]:
                v = row.get(k)
                if v is not None and math.isfinite(float(v)):
                    self.tb.add_scalar(self.GROUPS.get(k, f"train/{k}"), float(v), row["step"])
            self.tb.flush()

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def _fmt(v):
    return "" if v is None else (f"{v:.6g}" if isinstance(v, float) else v)


def truncate_log(path: Path, step: int) -> None:
    """On resume, drop log rows written after the checkpoint we restart from."""
    if not path.exists():
        return
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        return
    kept = [rows[0]] + [r for r in rows[1:] if r and r[0].isdigit() and int(r[0]) <= step]
    write_atomic(path, lambda p: p.write_text("".join(",".join(r) + "\n" for r in kept)))
