"""The finished batches of a stopped `ead sample`, kept so that the same command continues it.

A sampling run writes its output file only at the end (whole or not at all), so without this a
run killed after hours would keep nothing. Beside the output `NAME` it keeps a folder
`.NAME.partial` holding:

- `run.json`: what the run is (every setting that changes its molecules, and a digest of the
  model's weights); a later command continues the folder only when it is the same run;
- `batch-00000.npz`, … : one file per finished batch, each written whole or not at all: the
  molecules (positions, atomic numbers, offsets), their records' properties (JSON text), the
  counters the summary needs and the random generator's state after the batch. No pickled objects.
- `owner`: the pid of the process writing it, so that two commands cannot fill one folder.

The folder goes once the output file is in place.
"""

from __future__ import annotations

import json
import os
import shutil
import zipfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from ..errors import EADError
from ..io import process_alive, read_json, write_atomic

COUNTERS = ("network_calls", "empty", "diverged")


class PartialSample:
    """`folder_for(output)` of one run: `open()` claims it (resuming or starting), `save()` keeps a
    batch, `batches()` reads them back in order, `summary()` totals them without the molecules,
    `count()` says how many, `remove()` drops the folder."""

    def __init__(self, output: Path, identity: dict):
        self.folder = folder_for(output)
        self.identity = json.loads(json.dumps(identity))   # as run.json will read back
        self.claimed = False

    def open(self) -> int:
        """Claim the folder; the number of finished batches in it (0 for a new run). A folder of
        another run, or one another live process is writing, is refused with one line."""
        if self.folder.exists() and not self.folder.is_dir():
            raise EADError(f"{self.folder} exists and is not a folder")
        fresh = not (self.folder / "run.json").exists()
        if not fresh:
            recorded = read_json(self.folder / "run.json", "stopped sampling run")
            if recorded != self.identity:
                changed = sorted(k for k in set(recorded) | set(self.identity) if recorded.get(k) != self.identity.get(k))
                raise EADError(f"{self.folder} holds a stopped run with other settings ({', '.join(changed)}): "
                               "run that command again to finish it, or delete the folder")
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise EADError(f"cannot write {self.folder}: {e.strerror or e}") from None
        self._claim()
        if fresh:
            write_atomic(self.folder / "run.json",
                         lambda tmp: Path(tmp).write_text(json.dumps(self.identity, indent=1, sort_keys=True)))
        return self.count()

    def count(self) -> int:
        """How many batches are finished."""
        return len(self._files())

    def _claim(self) -> None:
        owner = self.folder / "owner"
        try:
            pid = int(owner.read_text().strip())
        except (FileNotFoundError, ValueError):
            pid = None
        if pid is not None and process_alive(pid):
            raise EADError(f"{self.folder} is being written by another ead sample (pid {pid})")
        write_atomic(owner, lambda tmp: Path(tmp).write_text(str(os.getpid())))
        self.claimed = True

    def _files(self) -> list[Path]:
        """The finished batches: batch-00000.npz, batch-00001.npz, … up to the first gap."""
        files = []
        while (path := self.folder / f"batch-{len(files):05d}.npz").exists():
            files.append(path)
        return files

    def save(self, index: int, molecules: list, properties: list[dict], counters: dict, rng_state) -> None:
        """Keep finished batch `index`: molecules as (positions [m, 3], atomic numbers [m]) pairs,
        one properties dict per molecule, the COUNTERS of this batch, the generator state after it."""
        counts = np.array([len(z) for _, z in molecules], dtype=np.int64)
        arrays = {
            "positions": (np.concatenate([p for p, _ in molecules]) if molecules else np.zeros((0, 3))).astype(np.float64),
            "atomic_numbers": (np.concatenate([z for _, z in molecules]) if molecules else np.zeros(0)).astype(np.int64),
            "offsets": np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
            "properties": np.array(json.dumps(properties)),
            "counters": np.array([int(counters[k]) for k in COUNTERS], dtype=np.int64),
            "rng_state": np.asarray(rng_state, dtype=np.uint8),
        }

        def write(tmp):
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)

        write_atomic(self.folder / f"batch-{index:05d}.npz", write)

    def batches(self):
        """Yield (molecules, properties, counters, rng_state) per finished batch, in order."""
        for path in self._files():
            with self._read(path) as f:
                pos, z, off = f["positions"], f["atomic_numbers"], f["offsets"]
                props = json.loads(str(f["properties"]))
                counters = dict(zip(COUNTERS, (int(c) for c in f["counters"])))
                state = f["rng_state"].copy()
            yield [(pos[a:b], z[a:b]) for a, b in zip(off[:-1], off[1:])], props, counters, state

    def summary(self) -> tuple[int, dict, np.ndarray | None]:
        """(molecules kept, the COUNTERS summed over the finished batches, the generator state after
        the last one or None): what a continuing run needs, read without loading the molecules, so
        that resuming a long run holds no more memory than running it."""
        molecules, totals, state = 0, dict.fromkeys(COUNTERS, 0), None
        for path in self._files():
            with self._read(path) as f:
                molecules += len(f["offsets"]) - 1
                totals = {k: totals[k] + int(c) for k, c in zip(COUNTERS, f["counters"])}
                state = f["rng_state"].copy()
        return molecules, totals, state

    @contextmanager
    def _read(self, path: Path):
        """One kept batch, opened lazily (an npz reads an array when it is asked for); a damaged
        one is one error line."""
        try:
            with np.load(path, allow_pickle=False) as f:
                yield f
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as e:
            raise EADError(f"corrupt batch {path} of a stopped run: {e}; delete {self.folder} "
                           "to sample again from the start") from None

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def folder_for(output: Path) -> Path:
    output = Path(output)
    return output.with_name(f".{output.name}.partial")
