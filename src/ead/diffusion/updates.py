"""Update rules: how the sampling loop moves each atom from its time t_i to s_i ≤ t_i given ε̂.

The schedules (`schedules.py`) choose the per-atom times; an update rule turns (z_t, ε̂, t, s)
into z_s. Every rule works per atom, so it serves the synchronous and both asynchronous samplers
alike, and an atom with s_i = t_i is left exactly where it is.

- `ancestral` (default, EDM's sampler): a draw from the model's p(z_s | z_t), i.e. the posterior
  q(z_s | z_t, x̂). With `eta` < 1 it is the DDIM family (Song et al. 2021): the same marginals
  with less fresh noise per step; eta = 0 is the deterministic DDIM step.
- `dpm2m`: DPM-Solver++(2M) (Lu et al. 2022), a deterministic second-order multistep solver of
  the probability-flow ODE in data prediction; it reuses the previous step's x̂, so it costs one
  network call per step like the others. `sde-dpm2m`: its stochastic (SDE) form, which is the
  ancestral step with x̂ replaced by the same second-order extrapolation (first order = ancestral). Per atom: an atom's first move is first order (= DDIM,
  eta 0); after a stall it pairs with the atom's own previous move.

docs/method.md §6 fixes the ancestral step; the other rules are our options for few-step sampling
(issue 4) and are off by default.
"""

from __future__ import annotations

import torch

from ..errors import EADError
from .noise import NoiseSchedule, center

UPDATES = ("ancestral", "dpm2m", "sde-dpm2m")


class UpdateRule:
    name = "base"

    def reset(self) -> None:
        """Called before each trajectory (rules with memory forget it here)."""

    def __call__(self, noise: NoiseSchedule, z_x, z_h, eps_x, eps_h, t, s, mol, num_molecules,
                 generator=None, noise_scale: float = 1.0):
        raise NotImplementedError


class Ancestral(UpdateRule):
    """z_s = α_s·x̂ + √(σ_s² − c²)·ε̂ + c·η,  c = eta·σ_{t|s}·σ_s/σ_t. eta = 1 is EDM's ancestral
    step (computed by `NoiseSchedule.step`, bit for bit); eta = 0 is DDIM."""

    name = "ancestral"

    def __init__(self, eta: float = 1.0):
        if not 0.0 <= eta <= 1.0:
            raise EADError(f"eta must be in [0, 1], got {eta}")
        self.eta = float(eta)

    def __call__(self, noise, z_x, z_h, eps_x, eps_h, t, s, mol, num_molecules, generator=None,
                 noise_scale=1.0):
        if self.eta == 1.0:
            return noise.step(z_x, z_h, eps_x, eps_h, t, s, mol, num_molecules, generator, noise_scale)
        alpha_t, alpha_s, sigma_t, sigma_s = noise.alpha(t), noise.alpha(s), noise.sigma(t), noise.sigma(s)
        c = self.eta * noise.step_coefficients(t, s)[2]
        a = alpha_s / alpha_t
        b = alpha_s * sigma_t / alpha_t - (sigma_s**2 - c**2).clamp_min(0).sqrt()
        a, b, c = (v.to(z_x.dtype).unsqueeze(-1) for v in (a, b, c * noise_scale))
        new_x = a * z_x - b * eps_x
        new_h = a * z_h - b * eps_h
        if self.eta > 0.0 and noise_scale > 0.0:
            new_x = new_x + c * center(_randn(z_x, generator), mol, num_molecules)
            new_h = new_h + c * _randn(z_h, generator)
        return center(new_x, mol, num_molecules), new_h


class DPMSolver2M(UpdateRule):
    """DPM-Solver++(2M), per atom. With λ = log(α/σ) and h = λ_s − λ_t:
    z_s = (σ_s/σ_t)·z_t − α_s·expm1(−h)·D,  D = (1 + 1/(2r))·x̂_t − 1/(2r)·x̂_prev,  r = h_prev/h,
    where x̂_prev and h_prev belong to the atom's previous move. D = x̂_t (first order) for an atom's
    first move, and — `lower_order_final` — for the move that lands on t = 0 (as the reference
    implementation does for short trajectories: the last step's h is large and unstable)."""

    name = "dpm2m"

    def __init__(self, lower_order_final: bool = True, stochastic: bool = False):
        self.lower_order_final = lower_order_final
        self.stochastic = stochastic
        if stochastic:
            self.name = "sde-dpm2m"

    def reset(self) -> None:
        self._prev = None   # (x̂_x, x̂_h, h, moved before) per atom, from the atom's last move

    def __call__(self, noise, z_x, z_h, eps_x, eps_h, t, s, mol, num_molecules, generator=None,
                 noise_scale=1.0):
        alpha_s, sigma_t, sigma_s = noise.alpha(s), noise.sigma(t), noise.sigma(s)
        h = 0.5 * (noise.log_snr(s) - noise.log_snr(t))      # λ = log(α/σ) = log-SNR / 2
        moved = s < t
        dt = z_x.dtype
        xhat_x, xhat_h = noise.predict_clean(z_x, eps_x, t), noise.predict_clean(z_h, eps_h, t)
        if self._prev is None:   # no atom has moved yet: every correction below is zero
            self._prev = (torch.zeros_like(xhat_x), torch.zeros_like(xhat_h), torch.zeros_like(h),
                          torch.zeros_like(moved))
        px, ph, h_prev, valid = self._prev
        second = valid & moved
        if self.lower_order_final:
            second = second & (s > 0)
        r = torch.where(second, h_prev / torch.where(moved, h, torch.ones_like(h)), torch.ones_like(h))
        k = torch.where(second, 0.5 / r, torch.zeros_like(r)).to(dt).unsqueeze(-1)
        d_x = xhat_x + k * (xhat_x - px)
        d_h = xhat_h + k * (xhat_h - ph)
        # an atom with s = t gets ratio 1 and coef 0: it stays put (up to the molecule's re-centring,
        # as in the ancestral step) and keeps its last move's memory
        if self.stochastic:
            # z_s = (σ_s/σ_t)·e^{−h}·z + α_s·(1 − e^{−2h})·D + σ_s·√(1 − e^{−2h})·η
            one_minus = -torch.expm1(-2 * h)
            ratio = (sigma_s / sigma_t * torch.exp(-h)).to(dt).unsqueeze(-1)
            coef = (-alpha_s * one_minus).to(dt).unsqueeze(-1)
            std = (sigma_s * one_minus.sqrt() * noise_scale).to(dt).unsqueeze(-1)
            new_x = ratio * z_x - coef * d_x + std * center(_randn(z_x, generator), mol, num_molecules)
            new_h = ratio * z_h - coef * d_h + std * _randn(z_h, generator)
        else:
            # z_s = (σ_s/σ_t)·z − α_s·(e^{−h} − 1)·D
            ratio = (sigma_s / sigma_t).to(dt).unsqueeze(-1)
            coef = (alpha_s * torch.expm1(-h)).to(dt).unsqueeze(-1)
            new_x = ratio * z_x - coef * d_x
            new_h = ratio * z_h - coef * d_h
        m = moved.unsqueeze(-1)
        self._prev = (torch.where(m, xhat_x, px), torch.where(m, xhat_h, ph),
                      torch.where(moved, h, h_prev), valid | moved)
        return center(new_x, mol, num_molecules), new_h


def make_update(name: str = "ancestral", eta: float = 1.0) -> UpdateRule:
    if name == "ancestral":
        return Ancestral(eta)
    if name in ("dpm2m", "sde-dpm2m"):
        return DPMSolver2M(stochastic=name == "sde-dpm2m")
    raise EADError(f"unknown update rule {name!r}; choose from {', '.join(UPDATES)}")


def _randn(x: torch.Tensor, generator) -> torch.Tensor:
    return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


def langevin_step(noise: NoiseSchedule, z_x, z_h, eps_x, eps_h, s, mol, num_molecules, snr: float,
                  active: torch.Tensor, generator=None, noise_scale: float = 1.0):
    """One Langevin corrector step at the atoms' current times s (Song et al. 2021's corrector for
    the variance-preserving process): with the score −ε̂/σ and step δ_i = 2·(r·σ_i)² per atom,
    z ← z − 2r²σ_i·ε̂ + 2r·σ_i·η. A per-atom step is a diagonal preconditioner, which leaves the
    same distribution stationary. Atoms not `active` ([N] bool: at t = 0, or held) do not move;
    coordinates are re-centred per molecule."""
    sigma = noise.sigma(s).to(z_x.dtype).unsqueeze(-1) * active.to(z_x.dtype).unsqueeze(-1)
    drift, spread = 2.0 * snr * snr * sigma, 2.0 * snr * sigma * noise_scale
    eta_x = center(torch.randn(z_x.shape, generator=generator, device=z_x.device, dtype=z_x.dtype),
                   mol, num_molecules)
    eta_h = torch.randn(z_h.shape, generator=generator, device=z_h.device, dtype=z_h.dtype)
    new_x = center(z_x - drift * eps_x + spread * eta_x, mol, num_molecules)
    return new_x, z_h - drift * eps_h + spread * eta_h
