"""Schedules: who is at which diffusion time. This is where EAD's asynchrony lives.

Every sampler (synchronous, manual and adaptive asynchronous = Algorithm 2) is a schedule over
one noise process (`noise.py`) and one denoiser; training's time window (Algorithm 1) is in
`loss.py`. A sampler
schedule is asked, each iteration, for the next per-atom times s ≤ t; the sampling loop
(`sampler.py`) calls the denoiser once for the whole batch and applies the per-atom reverse step.
Adding a schedule means adding one class here.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import torch

from ..errors import EADError
from ..model.config import DEFAULT_WINDOW, MAX_TIMESTEPS, check_json, dataclass_schema
from .noise import SPACINGS, NoiseSchedule, strided_times
from .updates import UPDATES, UpdateRule, make_update


# --------------------------------------------------------------------------------------------
# Sampling schedules
# --------------------------------------------------------------------------------------------
@dataclass
class SamplingState:
    """What a sampler schedule may look at: per-atom times and molecule index, and the iterate."""

    t: torch.Tensor            # [N] current per-atom times
    mol: torch.Tensor          # [N]
    num_molecules: int
    z_x: torch.Tensor          # [N, 3]
    z_h: torch.Tensor          # [N, F]
    # [N] bool: atoms held at t = 0 throughout (a fragment's, docs/fragments.md), or None. The
    # sampling loop forces their next time to 0; a schedule must not count them as still noisy
    # nor let them set the pace of the free atoms.
    fixed: torch.Tensor | None = None


class SamplerSchedule:
    """Base class. `propose(state)` → per-atom next times s ≤ t (or None when every t_i = 0);
    `observe(state_before, z_x, z_h, s)` sees each transition (the adaptive schedule uses it)."""

    name = "base"
    # the SamplerConfig fields it takes
    OPTIONS = ("steps", "spacing", "update", "eta", "corrector_steps", "corrector_snr", "corrector_below")

    def __init__(self, noise: NoiseSchedule, *, steps: int | None, spacing: str, update: str, eta: float,
                 corrector_steps: int = 0, corrector_snr: float = 0.1, corrector_below: int | None = None):
        self.timesteps = noise.timesteps
        self.steps = steps or noise.timesteps
        self.grid = strided_times(self.timesteps, self.steps, spacing, noise)
        self.spacing = spacing
        self.update, self.eta = update, float(eta)
        self.make_update()   # bad names / values fail here, before any work
        if corrector_steps < 0 or not 0.0 < corrector_snr <= 1.0:
            raise EADError("corrector steps must be ≥ 0 and the corrector's snr in (0, 1]")
        # Langevin corrector steps after each move (the sampling loop applies them: `updates.py`)
        self.corrector_steps, self.corrector_snr = int(corrector_steps), float(corrector_snr)
        # only atoms whose time after the move is at most this are corrected (None: every atom)
        self.corrector_below = self.timesteps if corrector_below is None else int(corrector_below)
        if not 0 < self.corrector_below <= self.timesteps:
            raise EADError(f"corrector_below must be in [1, {self.timesteps}]")

    def make_update(self) -> UpdateRule:
        """A fresh update rule (how atoms move from t to s) for one trajectory: `updates.py`."""
        return make_update(self.update, self.eta)

    def reset(self, state: SamplingState) -> None:
        self._k = 0

    def propose(self, state: SamplingState) -> torch.Tensor | None:
        raise NotImplementedError

    def observe(self, before: SamplingState, z_x: torch.Tensor, z_h: torch.Tensor, s: torch.Tensor) -> None:
        pass

    def settings(self) -> dict:
        out = {"sampler": self.name, "steps": self.steps, "spacing": self.spacing}
        if self.update != "ancestral" or self.eta != 1.0:   # the default stays out of old records
            out.update(update=self.update, **({"eta": self.eta} if self.update == "ancestral" else {}))
        if self.corrector_steps:
            out.update(corrector_steps=self.corrector_steps, corrector_snr=self.corrector_snr)
            if self.corrector_below < self.timesteps:
                out.update(corrector_below=self.corrector_below)
        return out

    def _check_t_async(self, t_async: int | None) -> int:
        """The end of the synchronous warm-up; T/2 by default."""
        value = self.timesteps // 2 if t_async is None else int(t_async)
        if not 0 <= value <= self.timesteps:
            raise EADError(f"t_async must be in [0, {self.timesteps}]")
        return value

    def _warmup_grid(self, t_async: int) -> list[int]:
        """Grid points from T down to the first one ≤ t_async (the synchronous warm-up)."""
        k = next(i for i, v in enumerate(self.grid) if v <= t_async)
        return self.grid[: k + 1]


class SynchronousSchedule(SamplerSchedule):
    """Every atom shares t: T = τ_0 > τ_1 > … > τ_K = 0. With C = 0 training this is EDM."""

    name = "synchronous"

    def propose(self, state):
        if self._k >= len(self.grid) - 1:
            return None
        self._k += 1
        return torch.full_like(state.t, self.grid[self._k])


class ManualAsyncSchedule(SamplerSchedule):
    """Fixed per-atom offsets o_i ∈ [−C, C]: t_i = clip(τ + o_i, 0, t_async) on a shared clock τ.

    After a synchronous warm-up down to t_async, atoms are ranked by distance to their molecule's
    centroid, core first: the core gets −C (leaves the noise first), the periphery +C. The clock
    runs from t_async + C to −C with the stride of the base grid, so the call count is about
    `steps` plus the 2C lag."""

    name = "manual"
    OPTIONS = SamplerSchedule.OPTIONS + ("window", "t_async")

    def __init__(self, noise, *, steps, spacing, window: int, t_async: int | None, update: str, eta: float,
                 **corrector):
        super().__init__(noise, steps=steps, spacing=spacing, update=update, eta=eta, **corrector)
        self.window = int(window)
        # [ours] warm up to T/2 by default: ranking atoms by distance to the centroid only means
        # something once a shape has formed
        self.t_async = self._check_t_async(t_async)

    def reset(self, state):
        self._warm = self._warmup_grid(self.t_async)
        self._k = 0
        self._clock = None
        self._offsets = None

    def _start_async(self, state):
        t_a = int(state.t.max())
        remaining = max(1, sum(1 for v in self.grid if v < t_a))
        span = t_a + 2 * self.window
        n = max(1, math.ceil(remaining * span / max(t_a, 1)))
        self._clock = [round(t_a + self.window - j * span / n) for j in range(n + 1)]
        self._t_a = t_a
        self._offsets = self._rank_offsets(state)
        self._j = 0

    def _rank_offsets(self, state):
        """Offsets −C … +C by rank of distance to the centroid inside each molecule (core first).
        Held atoms (state.fixed) are ranked apart, so the free atoms still span −C … +C."""
        r = state.z_x.norm(dim=-1)  # z_x is zero-CoM per molecule: the norm is the distance
        mol, B = state.mol, state.num_molecules
        if state.fixed is not None:   # held atoms form one extra group of their own
            mol, B = torch.where(state.fixed, B, mol), B + 1
        rank, count = _rank_within_molecule(r, mol, B)
        frac = rank.to(r.dtype) / (count[mol] - 1).clamp_min(1).to(r.dtype)
        return torch.round(-self.window + 2 * self.window * frac).long()

    def propose(self, state):
        if self._k < len(self._warm) - 1:
            self._k += 1
            return torch.full_like(state.t, self._warm[self._k])
        if self._clock is None:
            if self.window == 0 or int(state.t.max()) == 0:
                # nothing asynchronous to do: finish on the base grid
                self._clock, self._offsets, self._j, self._t_a = [], None, 0, 0
            else:
                self._start_async(state)
        if self._offsets is None:  # synchronous remainder
            rest = [v for v in self.grid if v < int(state.t.max())]
            return torch.full_like(state.t, rest[0]) if rest else None
        if self._j >= len(self._clock) - 1:
            return None
        self._j += 1
        return (self._clock[self._j] + self._offsets).clamp(0, self._t_a)

    def settings(self):
        return {**super().settings(), "window": self.window, "t_async": self.t_async}


class AdaptiveAsyncSchedule(SamplerSchedule):
    """Algorithm 2: after a synchronous warm-up to t_async, each iteration advances the
    ⌈λ·M⌉ still-noisy atoms of each molecule whose recent velocity is smallest (settled atoms
    move on) and stalls the others, but never lets max t − min t inside a molecule exceed 2C.

    velocity v_i = ‖z_i(before) − z_i(after)‖ per grid stride moved, over the [x, h] vector,
    averaged over the atom's last `history` (w) moves [ours: a stalled step is not a move, so it
    records nothing — otherwise a stall would look like a settled atom]. An advancing atom goes to
    the next base-grid point below its time; a stalled atom more than 2C behind the leader of its
    molecule is pulled to leader + 2C (a partial step when the stride exceeds 2C)."""

    name = "adaptive"
    OPTIONS = SamplerSchedule.OPTIONS + ("window", "async_ratio", "history", "t_async", "stall_lag")

    def __init__(self, noise, *, steps, spacing, window: int, async_ratio: float, history: int,
                 t_async: int | None, update: str, eta: float, stall_lag: int | None, **corrector):
        super().__init__(noise, steps=steps, spacing=spacing, update=update, eta=eta, **corrector)
        # [ours, for strided grids] how far a stalled atom falls behind per iteration, in time units.
        # 0 = it stops (the paper's rule): on a grid with stride k it then falls k behind, so at 100
        # steps two stalls exhaust the 2C = 18 window that one-unit lags fill slowly at 1000 steps.
        # L ≥ 1 lets it move k − L instead (uniform grids only; times then leave the grid). Default
        # (None): 1 on uniform grids — identical to the paper's rule at steps = T, where k = 1 —
        # and 0 on other spacings. At 100 steps it lifts the adaptive sampler's molecule stability
        # from 19.7 to 23.9 % (sde-dpm2m update; docs/steps_sweep.md).
        if stall_lag is None:
            stall_lag = 1 if spacing == "uniform" else 0
        if int(stall_lag) < 0:
            raise EADError(f"stall_lag must be ≥ 0 time units, got {stall_lag}")
        if int(stall_lag) > 0 and spacing != "uniform":
            raise EADError("stall_lag ≥ 1 needs the uniform step spacing (0 = the paper's stop)")
        self.stall_lag = int(stall_lag)
        if not 0.0 < async_ratio <= 1.0:
            raise EADError(f"async ratio λ must be in (0, 1], got {async_ratio}")
        if history < 1:
            raise EADError(f"velocity history w must be ≥ 1, got {history}")
        self.window = int(window)
        self.async_ratio = float(async_ratio)
        self.history = int(history)
        self.t_async = self._check_t_async(t_async)

    def reset(self, state):
        self._warm = self._warmup_grid(self.t_async)
        self._k = 0
        n = state.t.shape[0]
        self._vel = torch.zeros(n, self.history, device=state.t.device)
        self._count = torch.zeros(n, dtype=torch.long, device=state.t.device)
        self._grid_asc = torch.tensor(sorted(self.grid), device=state.t.device)
        self._stride = self.timesteps / self.steps
        self._left = None   # after the last proposal, is any atom still above t = 0?

    def _next_grid(self, t):
        """Largest grid value strictly below t (0 stays 0)."""
        idx = torch.searchsorted(self._grid_asc, t, right=False) - 1
        return self._grid_asc[idx.clamp_min(0)].where(t > 0, t)

    def propose(self, state):
        if self._k < len(self._warm) - 1:
            self._k += 1
            return torch.full_like(state.t, self._warm[self._k])
        # the stop test reads the flag of the previous proposal (its atoms' times are this step's
        # t): on a GPU the host waits for that proposal only, while the network call queued after
        # it keeps the GPU busy, instead of draining the queue at every step
        left = self._warm[-1] > 0 if self._left is None else bool(self._left)
        if not left:
            return None
        t = state.t
        active = t > 0
        filled = self._count.clamp(max=self.history).clamp_min(1).to(self._vel.dtype)
        vbar = self._vel.sum(1) / filled
        vbar = torch.where(active, vbar, torch.full_like(vbar, float("inf")))
        rank, _ = _rank_within_molecule(vbar, state.mol, state.num_molecules)
        n_active = torch.zeros(state.num_molecules, dtype=torch.long, device=t.device).index_add_(
            0, state.mol, active.long())
        quota = torch.ceil(self.async_ratio * n_active.to(torch.float64)).long()
        advance = active & (rank < quota[state.mol])
        if self.stall_lag == 0:
            s = torch.where(advance, self._next_grid(t), t)
        else:   # fixed strides from each atom's own time: advance k, a stalled atom k − L
            k = max(1, round(self._stride))
            s = (t - torch.where(advance, k, max(k - self.stall_lag, 0))).clamp_min(0)
        lead = torch.full((state.num_molecules,), self.timesteps, dtype=t.dtype, device=t.device)
        # the leader is the least noisy *free* atom: a held atom (t = 0) would pull every other
        # atom down to 2C at once
        paced = s if state.fixed is None else s.masked_fill(state.fixed, self.timesteps)
        lead = lead.scatter_reduce(0, state.mol, paced, reduce="amin")
        s = torch.minimum(s, lead[state.mol] + 2 * self.window)
        self._left = LaggedFlag((s > 0).any())
        return s

    def observe(self, before, z_x, z_h, s):
        # masked writes, no data-dependent shapes: no host sync on a GPU
        moved = s < before.t
        dz = torch.cat([z_x - before.z_x, z_h - before.z_h], -1).norm(dim=-1)
        rate = dz / ((before.t - s).clamp_min(1).to(dz.dtype) / self._stride)
        slot = (self._count % self.history).unsqueeze(1)
        kept = self._vel.gather(1, slot).squeeze(1)
        self._vel.scatter_(1, slot, torch.where(moved, rate.to(self._vel.dtype), kept).unsqueeze(1))
        self._count += moved.long()

    def settings(self):
        return {**super().settings(), "window": self.window, "async_ratio": self.async_ratio,
                "history": self.history, "t_async": self.t_async, "stall_lag": self.stall_lag}


class LaggedFlag:
    """A boolean computed on the device and read by the host later. On a GPU the value is copied
    into page-locked memory behind the work that produced it and an event marks the copy; reading
    waits for that event only (not for work queued after it). On the CPU it is the value itself."""

    def __init__(self, value: torch.Tensor):
        self._event = None
        if value.is_cuda:
            self._value = torch.empty((), dtype=value.dtype, pin_memory=True)
            self._value.copy_(value, non_blocking=True)
            self._event = torch.cuda.Event()
            self._event.record()
        else:
            self._value = value

    def __bool__(self) -> bool:
        if self._event is not None:
            self._event.synchronize()
        return bool(self._value)


def _rank_within_molecule(values: torch.Tensor, mol: torch.Tensor, num_molecules: int):
    """Rank (0 = smallest) of each atom's value among the atoms of its molecule, ties broken by
    atom index; and the atom count of each molecule."""
    order = torch.argsort(values, stable=True)
    order = order[torch.argsort(mol[order], stable=True)]
    count = torch.zeros(num_molecules, dtype=mol.dtype, device=mol.device).index_add_(
        0, mol, torch.ones_like(mol))   # bincount would sync with the host on a GPU
    start = torch.cumsum(count, 0) - count
    rank = torch.empty_like(mol)
    rank[order] = torch.arange(len(mol), device=mol.device) - start[mol[order]]
    return rank, count


SAMPLERS = {"synchronous": SynchronousSchedule, "manual": ManualAsyncSchedule,
            "adaptive": AdaptiveAsyncSchedule}


# --------------------------------------------------------------------------------------------
# The sampler's settings
# --------------------------------------------------------------------------------------------
def _option(default, help: str, kind: str, **extra):
    """A field with its command-line help and value kind (the CLI maps kinds to argument types)."""
    return field(default=default, metadata={"help": help, "kind": kind, **extra})


@dataclass(frozen=True)
class SamplerConfig:
    """The sampler's settings: the single place of their defaults and of their command-line help
    (`ead sample` derives its flags from these fields), saved with a model as config.json's
    `sampler_defaults` and read back through `from_dict`.

    A field left at None is decided where it depends on the model or the noise process: `steps` =
    T, `window` = the model's C (DEFAULT_WINDOW without a model), `t_async` = T/2, `stall_lag` = 1
    on uniform grids and 0 on others. Values are checked once, by the schedule class that uses
    them (above), where T is known."""

    sampler: str = _option("adaptive", " | ".join(SAMPLERS), "choice", choices=tuple(SAMPLERS))
    steps: int | None = _option(None, "network steps (≤ T; fewer = strided); default: the model's sampler "
                                "defaults (`ead info` lists them; trained models: T)", "positive_int")
    spacing: str = _option("uniform", "how strided steps are spread", "choice", choices=SPACINGS)
    window: int | None = _option(None, "asynchrony window C (default: the model's)", "nonneg_int")
    async_ratio: float = _option(0.8, "adaptive: fraction λ of atoms advanced", "fraction")
    history: int = _option(2, "adaptive: velocity window w", "positive_int")
    t_async: int | None = _option(None, "synchronous warm-up down to this time", "nonneg_int")
    stall_lag: int | None = _option(
        None, "adaptive: time units a stalled atom falls behind per iteration (default 1 on uniform "
        "grids: at --steps < T it moves the rest of the stride; 0 = it stops for a whole stride, the "
        "paper's rule; the same at --steps = T)", "nonneg_int")
    update: str = _option(
        "ancestral", "how atoms move from t to s: ancestral (EDM's step; --eta < 1 = DDIM), sde-dpm2m "
        "(DPM-Solver++(2M) SDE: the few-step rule) or dpm2m (its deterministic ODE form); default: the "
        "model's (ancestral, for the shipped qm9 and trained models)", "choice", choices=UPDATES)
    eta: float = _option(1.0, "ancestral: share of the fresh noise per step, 1 = EDM (default), 0 = DDIM",
                         "unit_float")
    corrector_steps: int = _option(
        0, "Langevin corrector steps after each move (predictor-corrector, Song et al. 2021), one "
        "network call each; default: the model's (`ead info`; trained models: 0). Count the calls: "
        "--steps 32 --corrector-steps 2 makes about as many as --steps 100", "nonneg_int")
    corrector_snr: float = _option(0.1, "corrector: signal-to-noise ratio r of a Langevin step "
                                   "(step size 2·r²·σ² per atom; default: the model's)", "unit_float")
    corrector_below: int | None = _option(
        None, "corrector: only atoms whose time after a move is at most this are corrected, so the "
        "corrector's calls go to the low-noise end where bonds form (default: every time, or the "
        "model's)", "positive_int")

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def from_dict(cls, d: dict | None, where: str = "sampler settings") -> "SamplerConfig":
        d = dict(d or {}) if d is None or isinstance(d, dict) else d
        unknown = sorted(set(d) - set(cls.names())) if isinstance(d, dict) else []
        if unknown:
            raise EADError(f"unknown {where} {unknown}; known: {', '.join(cls.names())}")
        d = check_json(d, dataclass_schema(cls), where, _KIND_RANGES_OF(cls))
        for f in dataclasses.fields(cls):
            if f.metadata.get("kind") == "choice" and f.name in d and d[f.name] not in f.metadata["choices"]:
                raise EADError(f"{where}: unknown {f.name} {d[f.name]!r}; choose from "
                               f"{', '.join(f.metadata['choices'])}")
        return cls(**d)

    def to_dict(self) -> dict:
        """The settings that are set (None = decided by the model / the schedule is left out)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}

    def updated(self, **options) -> "SamplerConfig":
        """These settings with the given options replacing them; None leaves a setting as it is."""
        given = {k: v for k, v in options.items() if v is not None}
        unknown = sorted(set(given) - set(self.names()))
        if unknown:
            raise EADError(f"unknown sampler option {unknown[0]!r}; known: {', '.join(self.names())}")
        return dataclasses.replace(self, **given)


_KIND_RANGES = {"positive_int": (1, MAX_TIMESTEPS), "nonneg_int": (0, MAX_TIMESTEPS),
                "fraction": (1e-12, 1.0), "unit_float": (0.0, 1.0)}


def _KIND_RANGES_OF(cls) -> dict:
    """Each field's range as read from JSON: the range of its command-line kind."""
    return {f.name: _KIND_RANGES[f.metadata["kind"]] for f in dataclasses.fields(cls)
            if f.metadata.get("kind") in _KIND_RANGES}


def make_schedule(name: str, noise: NoiseSchedule, **options) -> SamplerSchedule:
    """The schedule `name` with `options` (SamplerConfig's fields) over the defaults."""
    return build_schedule(SamplerConfig(sampler=name).updated(**options), noise)


def build_schedule(cfg: SamplerConfig, noise: NoiseSchedule) -> SamplerSchedule:
    """A fresh schedule for one batch: the sampler's class with the settings it takes."""
    if cfg.sampler not in SAMPLERS:
        raise EADError(f"unknown sampler {cfg.sampler!r}; choose from {', '.join(SAMPLERS)}")
    cls = SAMPLERS[cfg.sampler]
    if cfg.window is None:
        cfg = dataclasses.replace(cfg, window=DEFAULT_WINDOW)
    return cls(noise, **{k: getattr(cfg, k) for k in cls.OPTIONS})
