"""Algorithm 1: the training loss, beside the per-atom time window it draws times from."""

from __future__ import annotations

import numpy as np
import torch

from ..data.bonds import bond_matrix
from ..data.elements import ABSENT
from ..errors import EADError
from ..model.config import check_window
from .noise import NoiseSchedule
from .target import Parameterization, self_cond_input


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
                 gamma: float = 5.0, target: str = "eps") -> torch.Tensor | None:
    """Per-atom weights of the squared error of the network's own target: None for "uniform"
    (EDM: the plain mean), or min-SNR-γ (Hang et al. 2023), which caps the clean-data weight SNR(t)
    at γ whatever the target: min(SNR, γ)/SNR on ε, min(SNR, γ) on x0, min(SNR, γ)/(SNR + 1) on v."""
    if kind == "uniform":
        return None
    if kind != "min-snr":
        raise EADError(f"unknown loss weight {kind!r}; choose from {', '.join(LOSS_WEIGHTS)}")
    snr = torch.exp(noise.log_snr(t))
    capped = torch.clamp(snr, max=gamma)
    return {"eps": capped / snr, "x0": capped, "v": capped / (snr + 1)}[target]


def held_fragments(batch, share: float, gen: torch.Generator) -> torch.Tensor:
    """[N] bool: for each molecule with probability `share`, a random connected set of its atoms
    (by the protocol's distance bonds, docs/evaluation.md §2) of 1 … n−1 atoms, grown from a random
    atom along bonds; the context a fragment gives at sampling (docs/fragments.md). The draws come
    from one seed taken from the step's generator, so a resumed run draws the same sets."""
    seed = int(torch.randint(0, 2**62, (1,), generator=gen, device=gen.device))
    rng = np.random.default_rng(seed)
    pos = batch.x.detach().cpu().double().numpy()
    z = batch.atomic_numbers.cpu().numpy()
    held = np.zeros(len(z), dtype=bool)
    start = 0
    for n in batch.num_atoms.cpu().tolist():
        real = np.flatnonzero(z[start : start + n] != ABSENT)
        if len(real) >= 2 and rng.random() < share:
            bonded = bond_matrix(pos[start : start + n], z[start : start + n]) > 0
            size = int(rng.integers(1, len(real)))
            chosen = [int(rng.choice(real))]
            while len(chosen) < size:
                frontier = np.flatnonzero(bonded[chosen].any(0))
                frontier = frontier[~np.isin(frontier, chosen)]
                if not len(frontier):
                    break
                chosen.append(int(rng.choice(frontier)))
            held[start + np.asarray(chosen)] = True
        start += n
    return torch.from_numpy(held).to(batch.x.device)


def diffusion_loss(model, noise: NoiseSchedule, window: TrainingWindow, batch, gen,
                   weighting: str = "uniform", gamma: float = 5.0,
                   fragment_share: float = 0.0, target: str = "eps",
                   self_condition: bool = False) -> torch.Tensor:
    """Algorithm 1: per-atom times, the network's target (ε for EDM; x0 or v, `target.py`), mean
    squared error over atoms and channels (EDM's l2); `weighting` "min-snr" scales each atom's
    squared error by `loss_weights`.

    `fragment_share` > 0: in that share of molecules a connected set of atoms (`held_fragments`)
    is held at t = 0 as clean context, as a fragment is at sampling, and left out of the loss.
    `self_condition`: for half of the batches (a coin from the step's generator) a first pass
    without gradient gives the clean estimate the second pass reads; the others read zeros."""
    B = batch.num_molecules
    absent = None
    if window.absent_bias and batch.atomic_numbers is not None:
        absent = batch.atomic_numbers == ABSENT
    held = held_fragments(batch, fragment_share, gen) if fragment_share > 0 else None
    t = window.sample(batch.mol, B, gen, absent)
    if held is not None:
        t = t.masked_fill(held, 0)
    z_x, z_h, eps_x, eps_h = noise.add_noise(batch.x, batch.h, t, batch.mol, B, gen, clean=held)
    time = t.to(z_x.dtype) / noise.timesteps
    param = Parameterization(noise, target)
    extra = {}
    if self_condition:
        coin = torch.rand((), generator=gen, device=gen.device)
        estimate = None
        if float(coin) < 0.5:
            with torch.no_grad():
                out_x, out_h = model(z_x, z_h, time, batch.mol, B, batch.edge_index, batch.context)
                _, _, x0_x, x0_h = param.outputs(out_x, out_h, z_x, z_h, t, batch.mol, B)
                estimate = self_cond_input(x0_x, x0_h)
        extra["self_cond"] = estimate
    pred_x, pred_h = model(z_x, z_h, time, batch.mol, B, batch.edge_index, batch.context, **extra)
    goal_x, goal_h = param.training_targets(batch.x, batch.h, eps_x, eps_h, t, batch.mol, B)
    if param.target_x == "x0":   # the coordinate slot is a displacement from z^x
        pred_x = z_x + pred_x
    w_x = loss_weights(noise, t, weighting, gamma, param.target_x)
    w_h = loss_weights(noise, t, weighting, gamma, param.target_h)
    if held is None and w_x is None and w_h is None:
        sq = (pred_x - goal_x).pow(2).sum() + (pred_h - goal_h).pow(2).sum()
        return sq / (batch.x.shape[0] * (3 + batch.h.shape[1]))
    err_x, err_h = (pred_x - goal_x).pow(2).sum(-1), (pred_h - goal_h).pow(2).sum(-1)
    per_atom = (err_x if w_x is None else w_x.to(err_x.dtype) * err_x) + \
               (err_h if w_h is None else w_h.to(err_h.dtype) * err_h)
    if held is not None:   # the held atoms' ε is not the model's to predict
        keep = (~held).to(per_atom.dtype)
        return (keep * per_atom).sum() / ((~held).sum().clamp_min(1) * (3 + batch.h.shape[1]))
    return per_atom.sum() / (batch.x.shape[0] * (3 + batch.h.shape[1]))
