"""Autoguidance (Karras et al. 2024, "Guiding a diffusion model with a bad version of itself"):
the prediction of a weaker model of the same data — here an earlier checkpoint of the same
lineage, or a smaller network — is pushed away from, ε = ε_guide + w·(ε_main − ε_guide).
w = 1 is the main model alone; w > 1 moves each step further along the direction in which the
better model differs from the weaker one. Each step calls both networks: two network calls."""

from __future__ import annotations

from typing import Callable

from ..errors import EADError


class Autoguided:
    """A denoiser call (the sampling loop's convention) that combines a main and a guide network."""

    calls_per_call = 2

    def __init__(self, main: Callable, guide: Callable, weight: float):
        if not weight > 0:
            raise EADError(f"guidance weight must be positive, got {weight}")
        self.main, self.guide, self.weight = main, guide, float(weight)

    def reset(self) -> None:
        """A new trajectory (networks that remember their last estimate start afresh)."""
        for net in (self.main, self.guide):
            if hasattr(net, "reset"):
                net.reset()

    def __call__(self, z_x, z_h, time, mol, num_molecules, edges, context=None):
        mx, mh = self.main(z_x, z_h, time, mol, num_molecules, edges, context)
        gx, gh = self.guide(z_x, z_h, time, mol, num_molecules, edges, context)
        w = self.weight
        return gx + w * (mx - gx), gh + w * (mh - gh)
