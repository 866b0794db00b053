"""The Gaussian noise process with per-atom times (docs/method.md §2, §3, §6).

EDM's variance-preserving process z = α(t)·[x, h] + σ(t)·ε, with α² + σ² = 1, on a discrete grid
t ∈ {0, …, T}. Every function here takes a *tensor* of times, one per atom: EAD's asynchronous
training and sampling are just different choices of that tensor, made by the schedules in
`schedules.py`. With all times equal, everything reduces to EDM exactly.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..errors import EADError
from ..data.batch import center, remove_mean  # noqa: F401 (center: re-exported)

SCHEDULES = ("polynomial_2", "cosine")
SPACINGS = ("uniform", "snr")


def polynomial_alpha2(timesteps: int, power: float = 2.0, precision: float = 1e-5,
                      clip_value: float = 0.001) -> np.ndarray:
    """EDM's `polynomial_2`: ᾱ²(t) = (1 − (t/T)^p)², each ratio ᾱ²(t)/ᾱ²(t−1) clipped to ≥ clip_value
    (so no single step destroys more than 99.9 % of the signal), then squeezed into [s, 1 − s]."""
    t = np.arange(timesteps + 1, dtype=np.float64) / timesteps
    alpha2 = (1.0 - t**power) ** 2
    ratios = np.clip(alpha2 / np.concatenate([[1.0], alpha2[:-1]]), clip_value, 1.0)
    alpha2 = np.cumprod(ratios)
    return (1.0 - 2.0 * precision) * alpha2 + precision


def cosine_alpha2(timesteps: int, s: float = 0.008, precision: float = 1e-5) -> np.ndarray:
    """Nichol & Dhariwal's cosine schedule as EDM implements it (betas clipped at 0.999)."""
    steps = timesteps + 2
    x = np.linspace(0, steps, steps)
    f = np.cos(((x / steps) + s) / (1 + s) * np.pi * 0.5) ** 2
    f = f / f[0]
    betas = np.clip(1.0 - f[1:] / f[:-1], 0.0, 0.999)
    alpha2 = np.cumprod(1.0 - betas)
    return (1.0 - 2.0 * precision) * alpha2 + precision


class NoiseSchedule:
    """α(t), σ(t) tables and the two transitions of the process, for per-atom integer times.

    Tables are float64 (the step coefficients 1 − α²_t/α²_s lose precision in float32 near t = s);
    per-atom coefficients are computed in float64 and cast to the data's dtype.
    """

    def __init__(self, kind: str = "polynomial_2", timesteps: int = 1000, precision: float = 1e-5):
        if kind not in SCHEDULES:
            raise EADError(f"unknown noise schedule {kind!r}; choose from {', '.join(SCHEDULES)}")
        if timesteps < 1:
            raise EADError("timesteps must be at least 1")
        self.kind, self.timesteps, self.precision = kind, int(timesteps), precision
        alpha2 = (polynomial_alpha2(timesteps, precision=precision) if kind == "polynomial_2"
                  else cosine_alpha2(timesteps, precision=precision))
        self.log_alpha2 = torch.from_numpy(np.log(alpha2))          # [T+1], float64
        self.alpha2 = torch.from_numpy(alpha2)
        self._device_tables: dict = {}

    def _tables(self, device) -> tuple[torch.Tensor, torch.Tensor]:
        key = str(device)
        if key not in self._device_tables:
            self._device_tables[key] = (self.alpha2.to(device), self.log_alpha2.to(device))
        return self._device_tables[key]

    # --- the schedule ---------------------------------------------------------------------
    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        return self._tables(t.device)[0][t].sqrt()

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        return (1.0 - self._tables(t.device)[0][t]).sqrt()

    def log_snr(self, t: torch.Tensor) -> torch.Tensor:
        a2 = self._tables(t.device)[0][t]
        return torch.log(a2) - torch.log1p(-a2)

    def check_times(self, t: torch.Tensor) -> None:
        if t.dtype not in (torch.int64, torch.int32):
            raise TypeError("atom times are integer time indices")
        assert int(t.min()) >= 0 and int(t.max()) <= self.timesteps, "atom times outside [0, T]"

    # --- forward process q(z_t | x), per atom (docs/method.md §3) ------------------------------------
    def add_noise(self, x: torch.Tensor, h: torch.Tensor, atom_times: torch.Tensor, mol: torch.Tensor,
                  num_molecules: int, generator: torch.Generator | None = None,
                  clean: torch.Tensor | None = None):
        """z_i = α(t_i)·[x_i, h_i] + σ(t_i)·ε_i. Returns (z_x, z_h, eps_x, eps_h).

        ε^x is drawn in the zero-CoM subspace of each molecule (as EDM). With unequal times z^x is
        not zero-CoM any more, so it is re-centred: the denoiser's coordinate output only depends
        on differences, so this loses nothing and keeps inputs like EDM's. `clean` ([N] bool) marks
        atoms held as clean context (z = data, no σ(0) noise), as the sampler holds a fragment.
        """
        eps_x = center(_randn_like(x, generator), mol, num_molecules)
        eps_h = _randn_like(h, generator)
        alpha = self.alpha(atom_times).to(x.dtype).unsqueeze(-1)
        sigma = self.sigma(atom_times).to(x.dtype).unsqueeze(-1)
        if clean is not None:
            alpha = alpha.masked_fill(clean.unsqueeze(-1), 1.0)
            sigma = sigma.masked_fill(clean.unsqueeze(-1), 0.0)
        z_x = center(alpha * x + sigma * eps_x, mol, num_molecules)
        z_h = alpha * h + sigma * eps_h
        return z_x, z_h, eps_x, eps_h

    # --- reverse process p(z_s | z_t), any per-atom pair s_i ≤ t_i (docs/method.md §6) -------------
    def step_coefficients(self, t: torch.Tensor, s: torch.Tensor):
        """Per-atom (a, b, c) with mean μ = a·z − b·ε̂ and std c:
        α_{t|s} = α_t/α_s, σ²_{t|s} = 1 − α²_{t|s} (variance preserving),
        μ = z/α_{t|s} − σ²_{t|s}/(α_{t|s}·σ_t)·ε̂,  std = σ_{t|s}·σ_s/σ_t.
        Atoms with s = t get (1, 0, 0): they are left unchanged."""
        _, log_a2 = self._tables(t.device)
        log_ratio = log_a2[t] - log_a2[s]                     # log α²_{t|s} ≤ 0
        sigma2_ts = -torch.expm1(log_ratio)                   # σ²_{t|s}, exact near 0
        alpha_ts = torch.exp(0.5 * log_ratio)
        sigma_t = self.sigma(t)
        sigma_s = self.sigma(s)
        a = 1.0 / alpha_ts
        b = sigma2_ts / (alpha_ts * sigma_t)
        c = sigma2_ts.sqrt() * sigma_s / sigma_t
        return a, b, c

    def step(self, z_x: torch.Tensor, z_h: torch.Tensor, eps_x: torch.Tensor, eps_h: torch.Tensor,
             t: torch.Tensor, s: torch.Tensor, mol: torch.Tensor, num_molecules: int,
             generator: torch.Generator | None = None, noise_scale: float = 1.0):
        """One ancestral step z_t → z_s for every atom at once. Coordinate noise is zero-CoM and
        the coordinates are re-centred after the step (unequal per-atom scales break zero CoM)."""
        a, b, c = (v.to(z_x.dtype).unsqueeze(-1) for v in self.step_coefficients(t, s))
        c = c * noise_scale
        eta_x = center(_randn_like(z_x, generator), mol, num_molecules)
        eta_h = _randn_like(z_h, generator)
        new_x = center(a * z_x - b * eps_x + c * eta_x, mol, num_molecules)
        new_h = a * z_h - b * eps_h + c * eta_h
        return new_x, new_h

    def predict_clean(self, z: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x̂ = (z − σ_t·ε̂)/α_t: the data estimate used for the final decoding at t = 0."""
        alpha = self.alpha(t).to(z.dtype).unsqueeze(-1)
        sigma = self.sigma(t).to(z.dtype).unsqueeze(-1)
        return (z - sigma * eps) / alpha

    def posterior(self, x0: torch.Tensor, z_t: torch.Tensor, t: torch.Tensor, s: torch.Tensor):
        """Closed-form q(z_s | z_t, x0): mean and std, for testing the reverse step."""
        a2 = self._tables(t.device)[0]
        alpha_t, alpha_s = a2[t].sqrt(), a2[s].sqrt()
        sigma2_t, sigma2_s = 1 - a2[t], 1 - a2[s]
        alpha_ts = alpha_t / alpha_s
        sigma2_ts = 1 - alpha_ts**2
        w_z = (alpha_ts * sigma2_s / sigma2_t).unsqueeze(-1)
        w_x = (alpha_s * sigma2_ts / sigma2_t).unsqueeze(-1)
        std = (sigma2_ts * sigma2_s / sigma2_t).sqrt()
        return w_z * z_t.double() + w_x * x0.double(), std


def _randn_like(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


def strided_times(timesteps: int, steps: int, spacing: str = "uniform",
                  schedule: NoiseSchedule | None = None) -> list[int]:
    """A strictly decreasing grid τ_0 = T > … > τ_K = 0 with K = `steps` transitions.

    `uniform`: evenly spaced in t. `snr`: evenly spaced in log-SNR, i.e. denser where the
    schedule's signal-to-noise ratio changes fastest (needs `schedule`)."""
    if not 1 <= steps <= timesteps:
        raise EADError(f"steps must be between 1 and T = {timesteps}, got {steps}")
    if spacing == "uniform":
        grid = np.round(np.linspace(timesteps, 0, steps + 1)).astype(int)
    elif spacing == "snr":
        assert schedule is not None
        lsnr = schedule.log_snr(torch.arange(timesteps + 1)).numpy()   # decreasing in t
        targets = np.linspace(lsnr[-1], lsnr[0], steps + 1)
        grid = np.array([int(np.argmin(np.abs(lsnr - v))) for v in targets])
        grid[0], grid[-1] = timesteps, 0
        grid = _force_decreasing(grid)
    else:
        raise EADError(f"unknown step spacing {spacing!r}; choose uniform or snr")
    return [int(v) for v in grid]


def _force_decreasing(grid: np.ndarray) -> np.ndarray:
    """Nudge a grid from T down to 0 so that it is strictly decreasing, keeping its length."""
    n = len(grid)
    out = grid.copy()
    for k in range(1, n):
        # leave room for the remaining n-1-k strictly smaller values above 0
        out[k] = min(out[k], out[k - 1] - 1)
        out[k] = max(out[k], n - 1 - k)
    return out
