"""Algorithm 1: the training loss, beside the per-atom time window it draws times from."""

from __future__ import annotations

import torch

from ..data.elements import ABSENT
from ..errors import EADError
from ..model.config import check_window
from .noise import NoiseSchedule


TIME_SAMPLINGS = ("uniform", "low-noise")
LOSS_WEIGHTS = ("uniform", "min-snr")


class TrainingWindow:
    """t* ~ U{0..T} per molecule, δ_i ~ U{−C..C} per atom, t_i = clip(t* + δ_i, 0, T).

    So |t_i − t_j| ≤ 2C inside a molecule; C = 0 gives every atom the molecule's t*: EDM.
    Dummy-atom models (docs/method.md §8): an absent atom's time is shifted up by `absent_bias` before
    the clip, t_i = clip(t* + δ_i + b, 0, T) [ours: the bias is a constant; no extra draws, so a
    model without absent atoms sees the same times as before].

    `time_sampling` = "low-noise" draws t* = ⌊(T+1)·u²⌋ instead (u ~ U[0, 1): density ∝ t^-1/2, half
    of the molecules below T/4), a recipe option that spends more of training near the data."""

    def __init__(self, timesteps: int, window: int, absent_bias: int = 0, time_sampling: str = "uniform"):
        check_window(window, timesteps)
        if not 0 <= absent_bias <= timesteps:
            raise EADError("absent_bias must be in [0, T]")
        if time_sampling not in TIME_SAMPLINGS:
            raise EADError(f"unknown time sampling {time_sampling!r}; choose from {', '.join(TIME_SAMPLINGS)}")
        self.timesteps, self.window, self.absent_bias = timesteps, window, int(absent_bias)
        self.time_sampling = time_sampling

    def baseline(self, num_molecules: int, generator: torch.Generator | None, device) -> torch.Tensor:
        """t* per molecule."""
        if self.time_sampling == "uniform":
            return torch.randint(0, self.timesteps + 1, (num_molecules,), generator=generator, device=device)
        u = torch.rand(num_molecules, generator=generator, device=device, dtype=torch.float64)
        return ((self.timesteps + 1) * u * u).long().clamp_(max=self.timesteps)

    def sample(self, mol: torch.Tensor, num_molecules: int, generator: torch.Generator | None = None,
               absent: torch.Tensor | None = None):
        """Per-atom times; `absent` ([N] bool, dummy-atom models) marks the atoms to shift."""
        device = mol.device
        t = self.baseline(num_molecules, generator, device)[mol]
        if self.window:
            delta = torch.randint(-self.window, self.window + 1, mol.shape, generator=generator, device=device)
            t = t + delta
        if self.absent_bias and absent is not None:
            t = t + self.absent_bias * absent.long()
        return t.clamp(0, self.timesteps) if self.window or self.absent_bias else t


def step_generator(device, seed: int, step: int, rank: int) -> torch.Generator:
    """The random stream of one training step on one rank: a function of (seed, step, rank) only,
    so that a resumed run draws the very times and noise it would have drawn."""
    g = torch.Generator(device)
    g.manual_seed((seed * 1_000_003 + step) * 64 + rank)
    return g


def loss_weights(noise: NoiseSchedule, t: torch.Tensor, kind: str = "uniform",
                 gamma: float = 5.0) -> torch.Tensor | None:
    """Per-atom weights of the ε-loss: None for "uniform" (EDM), or min-SNR-γ (Hang et al. 2023):
    min(SNR(t), γ)/SNR(t), i.e. the clean-data weight SNR(t) of the ε-loss capped at γ."""
    if kind == "uniform":
        return None
    if kind != "min-snr":
        raise EADError(f"unknown loss weight {kind!r}; choose from {', '.join(LOSS_WEIGHTS)}")
    snr = torch.exp(noise.log_snr(t))
    return torch.clamp(snr, max=gamma) / snr


def diffusion_loss(model, noise: NoiseSchedule, window: TrainingWindow, batch, gen,
                   weighting: str = "uniform", gamma: float = 5.0) -> torch.Tensor:
    """Algorithm 1: per-atom times, ε-prediction, mean over atoms and channels (EDM's l2);
    `weighting` "min-snr" scales each atom's squared error by `loss_weights`."""
    B = batch.num_molecules
    absent = None
    if window.absent_bias and batch.atomic_numbers is not None:
        absent = batch.atomic_numbers == ABSENT
    t = window.sample(batch.mol, B, gen, absent)
    z_x, z_h, eps_x, eps_h = noise.add_noise(batch.x, batch.h, t, batch.mol, B, gen)
    pred_x, pred_h = model(z_x, z_h, t.to(z_x.dtype) / noise.timesteps, batch.mol, B,
                           batch.edge_index, batch.context)
    w = loss_weights(noise, t, weighting, gamma)
    if w is None:
        sq = (pred_x - eps_x).pow(2).sum() + (pred_h - eps_h).pow(2).sum()
    else:
        per_atom = (pred_x - eps_x).pow(2).sum(-1) + (pred_h - eps_h).pow(2).sum(-1)
        sq = (w.to(per_atom.dtype) * per_atom).sum()
    return sq / (batch.x.shape[0] * (3 + batch.h.shape[1]))
