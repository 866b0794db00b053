"""Algorithm 1: the training loss, beside the per-atom time window it draws times from."""

from __future__ import annotations

import torch

from ..data.elements import ABSENT
from ..errors import EADError
from ..model.config import check_window
from .noise import NoiseSchedule


class TrainingWindow:
    """t* ~ U{0..T} per molecule, δ_i ~ U{−C..C} per atom, t_i = clip(t* + δ_i, 0, T).

    So |t_i − t_j| ≤ 2C inside a molecule; C = 0 gives every atom the molecule's t*: EDM.
    Dummy-atom models (docs/method.md §8): an absent atom's time is shifted up by `absent_bias` before
    the clip, t_i = clip(t* + δ_i + b, 0, T) [ours: the bias is a constant; no extra draws, so a
    model without absent atoms sees the same times as before]."""

    def __init__(self, timesteps: int, window: int, absent_bias: int = 0):
        check_window(window, timesteps)
        if not 0 <= absent_bias <= timesteps:
            raise EADError("absent_bias must be in [0, T]")
        self.timesteps, self.window, self.absent_bias = timesteps, window, int(absent_bias)

    def sample(self, mol: torch.Tensor, num_molecules: int, generator: torch.Generator | None = None,
               absent: torch.Tensor | None = None):
        """Per-atom times; `absent` ([N] bool, dummy-atom models) marks the atoms to shift."""
        device = mol.device
        baseline = torch.randint(0, self.timesteps + 1, (num_molecules,), generator=generator, device=device)
        t = baseline[mol]
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


def diffusion_loss(model, noise: NoiseSchedule, window: TrainingWindow, batch, gen) -> torch.Tensor:
    """Algorithm 1: per-atom times, ε-prediction, mean over atoms and channels (EDM's l2)."""
    B = batch.num_molecules
    absent = None
    if window.absent_bias and batch.atomic_numbers is not None:
        absent = batch.atomic_numbers == ABSENT
    t = window.sample(batch.mol, B, gen, absent)
    z_x, z_h, eps_x, eps_h = noise.add_noise(batch.x, batch.h, t, batch.mol, B, gen)
    pred_x, pred_h = model(z_x, z_h, t.to(z_x.dtype) / noise.timesteps, batch.mol, B,
                           batch.edge_index, batch.context)
    sq = (pred_x - eps_x).pow(2).sum() + (pred_h - eps_h).pow(2).sum()
    return sq / (batch.x.shape[0] * (3 + batch.h.shape[1]))
