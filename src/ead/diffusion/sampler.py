"""The sampling loop: size prior → noise → (schedule decides per-atom times, denoiser predicts ε,
per-atom reverse step) until every atom is at t = 0 → decode atoms and coordinates."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from ..data.batch import full_edges, molecule_index, remove_mean
from .noise import NoiseSchedule
from .schedules import SamplerSchedule, SamplingState


@dataclass
class SampleResult:
    positions: torch.Tensor        # [N, 3] Å, zero CoM per molecule
    atom_index: torch.Tensor       # [N] index into the model's atom types
    num_atoms: torch.Tensor        # [B]
    network_calls: int
    features: torch.Tensor | None = None   # [N, F] denoised features
    info: dict = field(default_factory=dict)


@torch.no_grad()
def run_sampler(denoiser: Callable, noise: NoiseSchedule, schedule: SamplerSchedule,
                num_atoms: torch.Tensor, num_features: int, num_types: int, generator: torch.Generator | None = None,
                context: torch.Tensor | None = None, on_step: Callable | None = None,
                dtype: torch.dtype = torch.float32, z_init: tuple | None = None,
                noise_scale: float = 1.0) -> SampleResult:
    """Generate one batch of molecules of the given sizes.

    `denoiser(z_x, z_h, time, mol, num_molecules, edge_index, context)` returns (ε̂^x, ε̂^h);
    `on_step(iteration, t, z_x, z_h)` sees every iterate (trajectories); `z_init` overrides the
    initial noise (tests of equivariance); `noise_scale` scales the noise added at each step
    (0 = a deterministic trajectory from the initial noise)."""
    device = num_atoms.device
    B = len(num_atoms)
    mol = molecule_index(num_atoms)
    edges = full_edges(num_atoms)                          # fixed for the whole trajectory
    T = noise.timesteps
    if z_init is None:
        z_x = remove_mean(torch.randn((len(mol), 3), generator=generator, device=device, dtype=dtype), mol, B)
        z_h = torch.randn((len(mol), num_features), generator=generator, device=device, dtype=dtype)
    else:
        z_x, z_h = (v.to(device=device, dtype=dtype) for v in z_init)
    t = torch.full((len(mol),), T, dtype=torch.long, device=device)
    state = SamplingState(t, mol, B, z_x, z_h)
    schedule.reset(state)
    calls = 0
    if on_step is not None:
        on_step(0, t, z_x, z_h)
    while True:
        s = schedule.propose(state)
        if s is None:
            break
        eps_x, eps_h = denoiser(state.z_x, state.z_h, state.t.to(dtype) / T, mol, B, edges, context)
        calls += 1
        z_x, z_h = noise.step(state.z_x, state.z_h, eps_x, eps_h, state.t, s, mol, B, generator,
                              noise_scale)
        schedule.observe(state, z_x, z_h, s)
        state = SamplingState(s, mol, B, z_x, z_h)
        if on_step is not None:
            on_step(calls, s, z_x, z_h)
    assert int(state.t.max()) == 0, "sampler ended with atoms still noisy"
    # decode (as EDM): one more prediction at t = 0, x̂ = (z − σ_0 ε̂)/α_0, type = argmax
    eps_x, eps_h = denoiser(state.z_x, state.z_h, state.t.to(dtype) / T, mol, B, edges, context)
    calls += 1
    x = remove_mean(noise.predict_clean(state.z_x, eps_x, state.t), mol, B)
    h = noise.predict_clean(state.z_h, eps_h, state.t)
    return SampleResult(x, h[:, :num_types].argmax(-1), num_atoms, calls, h)
