"""Denoising trajectories: what every atom's time and position was at every iterate.

`TrajectoryRecorder` is an `on_step` callback for `EAD.sample_batches` (and `run_sampler`): it
keeps only the first K molecules' atoms, so memory stays small however many molecules are drawn.
Atom types are only known once sampling ends (they are decoded from the final features), so
`end_batch(result)` labels the recorded atoms with the decoded elements.

Trajectories are saved as a compressed .npz of plain arrays plus one JSON string: loading
never unpickles anything (`np.load(..., allow_pickle=False)`).
"""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import EADError

NPZ_FORMAT = "ead-trajectory"
NPZ_VERSION = 1


@dataclass
class MoleculeTrajectory:
    """One molecule's denoising run. S iterates (the initial noise, then one per network call),
    m atoms."""

    iterations: np.ndarray        # [S] int32: network calls made before this iterate
    times: np.ndarray             # [S, m] per-atom diffusion time t_i at each iterate
    positions: np.ndarray | None  # [S, m, 3] float32 noisy coordinates z^x (None: times only)
    atomic_numbers: np.ndarray    # [m] int64, decoded at the end
    final_positions: np.ndarray   # [m, 3] float32, the decoded molecule (Å)
    timesteps: int                # T
    settings: dict = field(default_factory=dict)

    @property
    def num_atoms(self) -> int:
        return len(self.atomic_numbers)

    def finish_index(self) -> np.ndarray:
        """[m] index of the first iterate at which each atom is at t = 0 (times never go up, so
        it stays there)."""
        done = self.times == 0
        if not done[-1].all():
            raise EADError("trajectory ends with atoms still noisy")
        return np.argmax(done, axis=0)

    def lag(self) -> np.ndarray:
        """[S, m] how far each atom is behind its molecule's leading atom: t_i − min_j t_j
        (0 for all atoms while the sampler is synchronous; at most 2C for EAD's samplers)."""
        t = self.times.astype(np.int64)
        return t - t.min(axis=1, keepdims=True)

    def finish_order(self) -> np.ndarray:
        """Atom indices from the first to reach t = 0 to the last; ties (atoms that arrive at
        the same iterate) are broken by who was further ahead on average, then by index."""
        lead = self.lag().sum(axis=0)
        return np.lexsort((np.arange(self.num_atoms), lead, self.finish_index()))


class TrajectoryRecorder:
    """Collects `MoleculeTrajectory`s of the first `molecules` molecules of a sampling run.

    Call it as `on_step(iteration, t, z_x, z_h)`; after each batch call `end_batch(result)`.
    Before a batch ends its molecule sizes are unknown to the callback, so it keeps the first
    `molecules_left × max_atoms` atoms of each iterate and trims them at `end_batch`."""

    def __init__(self, molecules: int, atom_types, timesteps: int, max_atoms: int | None = None,
                 positions: bool = True, settings: dict | None = None):
        if molecules < 1:
            raise EADError("number of molecules to record must be ≥ 1")
        self.molecules = int(molecules)
        self.atom_types = np.asarray(atom_types, dtype=np.int64)
        self.timesteps = int(timesteps)
        self.max_atoms = max_atoms
        self.positions = positions
        self.settings = dict(settings or {})
        # int16 halves the memory of the times; only a T beyond its range needs int32
        self._time_dtype = torch.int16 if self.timesteps < 2**15 else torch.int32
        self.trajectories: list[MoleculeTrajectory] = []
        self._reset()

    @classmethod
    def for_model(cls, model, molecules: int, num_atoms: int | None = None, positions: bool = True,
                  settings: dict | None = None) -> "TrajectoryRecorder":
        """A recorder sized for `model`: at most the largest molecule its size prior can draw
        (or `num_atoms` when the size is fixed) is kept per molecule."""
        cfg = model.config
        hist = cfg.size_histogram
        largest = cfg.max_atoms if cfg.dummy else (max(hist) if hist else None)   # dummy: every slot
        cap = int(num_atoms) if num_atoms else largest
        return cls(molecules, cfg.feature_types, cfg.timesteps, cap, positions, settings)

    @property
    def done(self) -> bool:
        return len(self.trajectories) >= self.molecules

    @property
    def buffered_atoms(self) -> int:
        """Atoms kept per iterate of the batch in progress (the memory bound in practice)."""
        return int(self._t[0].shape[0]) if self._t else 0

    def _reset(self) -> None:
        self._iters: list[int] = []
        self._t: list[torch.Tensor] = []
        self._x: list[torch.Tensor] = []

    def __call__(self, iteration: int, t: torch.Tensor, z_x: torch.Tensor, z_h: torch.Tensor) -> None:
        if self.done:
            return
        if iteration == 0:  # a new batch starts with its initial noise
            self._reset()
        keep = len(t)
        if self.max_atoms is not None:
            keep = min(keep, (self.molecules - len(self.trajectories)) * self.max_atoms)
        self._iters.append(int(iteration))
        self._t.append(t[:keep].detach().to("cpu", self._time_dtype))
        if self.positions:
            self._x.append(z_x[:keep].detach().to("cpu", torch.float32))

    def end_batch(self, result) -> None:
        """Cut the kept atoms of the batch that just ended into molecules, labelled with the
        elements decoded in `result` (a SampleResult)."""
        if self.done or not self._t:
            self._reset()
            return
        sizes = result.num_atoms.cpu().numpy()
        take = min(len(sizes), self.molecules - len(self.trajectories))
        bounds = np.concatenate([[0], np.cumsum(sizes[:take])])
        kept = self._t[0].shape[0]
        if bounds[-1] > kept:
            raise EADError(f"the recorder kept {kept} atoms per iterate but the first {take} "
                           f"molecules have {bounds[-1]} (max_atoms too small)")
        times = torch.stack(self._t).numpy()
        pos = torch.stack(self._x).numpy() if self.positions else None
        iters = np.asarray(self._iters, dtype=np.int32)
        z = self.atom_types[result.atom_index[: bounds[-1]].cpu().numpy()]
        final = result.positions[: bounds[-1]].detach().to("cpu", torch.float32).numpy()
        for a, b in zip(bounds[:-1], bounds[1:]):
            self.trajectories.append(MoleculeTrajectory(
                iterations=iters, times=times[:, a:b].copy(),
                positions=None if pos is None else pos[:, a:b].copy(),
                atomic_numbers=z[a:b].copy(), final_positions=final[a:b].copy(),
                timesteps=self.timesteps, settings=dict(self.settings)))
        self._reset()


def record_trajectories(model, n: int, molecules: int | None = None, positions: bool = True,
                        sampler: str | None = "adaptive", seed: int = 0, batch_size: int = 256,
                        num_atoms: int | None = None, **options) -> list[MoleculeTrajectory]:
    """Sample n molecules with `model` (an `EAD`) and return the trajectories of the first
    `molecules` of them (all n by default). `positions=False` keeps only the times, which is
    all the asynchrony analysis needs (about 30× less memory)."""
    recorder = TrajectoryRecorder.for_model(model, molecules or n, num_atoms, positions)
    for res, settings in model.sample_batches(n, sampler=sampler, seed=seed, batch_size=batch_size,
                                              num_atoms=num_atoms, on_step=recorder, **options):
        recorder.settings = settings  # the schedule's own settings, read by the plots
        recorder.end_batch(res)
    return recorder.trajectories


# ------------------------------------------------------------------------------ files
def save_trajectories(path, trajectories: list[MoleculeTrajectory], metadata: dict | None = None) -> Path:
    """Write trajectories to a compressed .npz (plain arrays only), atomically."""
    path = Path(path)
    if not trajectories:
        raise EADError("no trajectories to save")
    arrays: dict[str, np.ndarray] = {}
    for k, tr in enumerate(trajectories):
        arrays[f"m{k}_iterations"] = tr.iterations
        arrays[f"m{k}_times"] = tr.times
        arrays[f"m{k}_atomic_numbers"] = tr.atomic_numbers
        arrays[f"m{k}_final_positions"] = tr.final_positions
        if tr.positions is not None:
            arrays[f"m{k}_positions"] = tr.positions
    meta = {"format": NPZ_FORMAT, "version": NPZ_VERSION, "molecules": len(trajectories),
            "timesteps": trajectories[0].timesteps,
            "settings": [tr.settings for tr in trajectories], **(metadata or {})}
    # a 0-d unicode array, not an object array: it loads with allow_pickle=False
    arrays["meta"] = np.array(json.dumps(meta, default=str))
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:  # a file object, so numpy does not append ".npz" to the name
            np.savez_compressed(fh, **arrays)
        os.replace(tmp, path)
    except OSError as e:
        raise EADError(f"cannot write {path}: {e.strerror or e}") from None
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def load_trajectories(path) -> list[MoleculeTrajectory]:
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            if meta.get("format") != NPZ_FORMAT:
                raise EADError(f"{path} is not an EAD trajectory file")
            out = []
            for k in range(int(meta["molecules"])):
                settings = meta["settings"][k] if k < len(meta.get("settings", [])) else {}
                out.append(MoleculeTrajectory(
                    iterations=data[f"m{k}_iterations"], times=data[f"m{k}_times"],
                    positions=data[f"m{k}_positions"] if f"m{k}_positions" in data else None,
                    atomic_numbers=data[f"m{k}_atomic_numbers"],
                    final_positions=data[f"m{k}_final_positions"],
                    timesteps=int(meta["timesteps"]), settings=settings))
            return out
    except FileNotFoundError:
        raise EADError(f"no such file: {path}") from None
    except (KeyError, ValueError, OSError, EOFError, zipfile.BadZipFile) as e:  # truncated, missing array, bad JSON
        raise EADError(f"corrupt trajectory file {path}: {e}") from None
