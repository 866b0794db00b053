"""What the network predicts, and its own previous estimate as an input (docs/recipe.md).

The sampler and the ancestral step work with ε̂. A network trained with another target returns
that target in ε̂'s two slots (the coordinate slot as a zero-CoM displacement from z^x, so that
x̂0^x = z^x + output); `Parameterization` turns any target into ε̂ and into the clean estimate x̂0,
per atom, with each atom's own α(t_i), σ(t_i) (α² + σ² = 1):

    eps:  ε̂ = out                       x̂0 = (z − σ·ε̂)/α
    x0:   ε̂ = (z − α·x̂0)/σ              x̂0 = out
    v:    ε̂ = σ·z + α·v̂                 x̂0 = α·z − σ·v̂        (v = α·ε − σ·x0)
    x0-types: ε for the coordinates, x0 for the features (atom types, charges)

Coordinate results are re-centred per molecule (per-atom α, σ move the centre of mass).

Self-conditioning (Chen et al. 2022, "Analog Bits"): the network also reads a clean estimate
x̂0 — zeros, or (in training, for half of the batches) its own estimate from a first pass without
gradient; in sampling, the estimate of the previous network call of the same trajectory, so no
call is added. The estimate is clipped to ±SELF_COND_CLIP before it is read: an ε-model's x̂0 =
(z − σ·ε̂)/α is unbounded as α → 0.
"""

from __future__ import annotations

import torch

from ..data.batch import center
from ..model.config import TARGETS
from .noise import NoiseSchedule

SELF_COND_CLIP = 20.0   # Å and feature units: QM9 molecules span < 20 Å, features are O(1)


def part_targets(target: str) -> tuple[str, str]:
    """(coordinate target, feature target): "x0-types" predicts ε for the positions and x0 for the
    atom types and charges (decoded by argmax of x̂0 anyway); the others use one target for both."""
    return ("eps", "x0") if target == "x0-types" else (target, target)


class Parameterization:
    def __init__(self, noise: NoiseSchedule, target: str = "eps"):
        assert target in TARGETS, target
        self.noise, self.target = noise, target
        self.target_x, self.target_h = part_targets(target)

    def coefficients(self, t: torch.Tensor, dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-atom α(t), σ(t) as [N, 1] columns."""
        return (self.noise.alpha(t).to(dtype).unsqueeze(-1), self.noise.sigma(t).to(dtype).unsqueeze(-1))

    @staticmethod
    def _convert(kind, out, z, alpha, sigma):
        """(ε̂, x̂0) of one part from its output (for x0, `out` is the clean estimate itself)."""
        if kind == "eps":
            return out, (z - sigma * out) / alpha
        if kind == "x0":
            return (z - alpha * out) / sigma, out
        return sigma * z + alpha * out, alpha * z - sigma * out

    def outputs(self, out_x, out_h, z_x, z_h, t, mol, num_molecules):
        """(ε̂^x, ε̂^h, x̂0^x, x̂0^h) from the network's output at integer times t [N]."""
        alpha, sigma = self.coefficients(t, z_x.dtype)
        if self.target_x == "x0":   # the coordinate slot is a displacement from z^x
            out_x = z_x + out_x
        eps_x, x0_x = self._convert(self.target_x, out_x, z_x, alpha, sigma)
        eps_h, x0_h = self._convert(self.target_h, out_h, z_h, alpha, sigma)
        return center(eps_x, mol, num_molecules), eps_h, center(x0_x, mol, num_molecules), x0_h

    def training_targets(self, x, h, eps_x, eps_h, t, mol, num_molecules):
        """What the network's two slots should hold for data (x, h) noised with (ε^x, ε^h) at
        times t: ε, x0 (for the coordinates the caller compares z^x + output) or v."""
        alpha, sigma = self.coefficients(t, x.dtype)

        def goal(kind, data, eps):
            if kind == "eps":
                return eps
            return data if kind == "x0" else alpha * eps - sigma * data
        goal_x = goal(self.target_x, x, eps_x)   # ε^x and x are zero-CoM; v^x (per-atom α, σ) is not
        if self.target_x == "v":
            goal_x = center(goal_x, mol, num_molecules)
        return goal_x, goal(self.target_h, h, eps_h)


def self_cond_input(x0_x: torch.Tensor, x0_h: torch.Tensor):
    """The clean estimate as the network reads it: detached, clipped to ±SELF_COND_CLIP."""
    c = SELF_COND_CLIP
    return x0_x.detach().clamp(-c, c), x0_h.detach().clamp(-c, c)


class EpsilonNetwork:
    """The sampling loop's denoiser call for a model with another target or self-conditioning:
    network → ε̂, remembering each call's clean estimate for the next call when the model reads
    it. One object per trajectory (`reset` starts a new one); times arrive as t/T."""

    calls_per_call = 1

    def __init__(self, network, noise: NoiseSchedule, target: str = "eps", self_condition: bool = False):
        self.network, self.param, self.self_condition = network, Parameterization(noise, target), self_condition
        self.timesteps = noise.timesteps
        self.previous = None

    def reset(self) -> None:
        self.previous = None

    def __call__(self, z_x, z_h, time, mol, num_molecules, edges, context=None):
        t = torch.round(time.double() * self.timesteps).long()
        if self.previous is not None and self.previous[0].shape != z_x.shape:
            self.previous = None   # another batch: start without an estimate
        extra = {"self_cond": self.previous} if self.self_condition else {}
        out_x, out_h = self.network(z_x, z_h, time, mol, num_molecules, edges, context, **extra)
        eps_x, eps_h, x0_x, x0_h = self.param.outputs(out_x, out_h, z_x, z_h, t, mol, num_molecules)
        if self.self_condition:
            self.previous = self_cond_input(x0_x, x0_h)
        return eps_x, eps_h
