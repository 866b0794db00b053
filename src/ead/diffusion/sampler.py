"""The sampling loop: size prior → noise → (schedule decides per-atom times, denoiser predicts ε,
per-atom reverse step) until every atom is at t = 0 → decode atoms and coordinates."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from ..data.batch import full_edges, molecule_index, remove_mean
from .noise import NoiseSchedule
from .schedules import SamplerSchedule, SamplingState
from .updates import langevin_step


@dataclass
class SampleResult:
    positions: torch.Tensor        # [N, 3] Å, zero CoM per molecule (with held atoms: their frame)
    atom_index: torch.Tensor       # [N] index into the model's atom types
    num_atoms: torch.Tensor        # [B]
    network_calls: int
    features: torch.Tensor | None = None   # [N, F] denoised features
    info: dict = field(default_factory=dict)


@dataclass
class FixedAtoms:
    """Atoms held at t = 0 for the whole trajectory (a fragment to grow: docs/fragments.md).

    mask [N] bool marks them; x [N, 3] holds their coordinates in the frame the caller wants back
    (the fragment file's), h [N, F] their clean features; rows of free atoms are ignored."""

    mask: torch.Tensor
    x: torch.Tensor
    h: torch.Tensor

    def to(self, device, dtype) -> "FixedAtoms":
        return FixedAtoms(self.mask.to(device), self.x.to(device=device, dtype=dtype),
                          self.h.to(device=device, dtype=dtype))

    def centroids(self, z_x: torch.Tensor, mol: torch.Tensor, num_molecules: int) -> torch.Tensor:
        """[B, 3] mean position of each molecule's held atoms."""
        w = self.mask.to(z_x.dtype).unsqueeze(-1)
        total = z_x.new_zeros((num_molecules, 3)).index_add_(0, mol, w * z_x)
        count = z_x.new_zeros(num_molecules).index_add_(0, mol, w.squeeze(-1))
        return total / count.clamp_min(1).unsqueeze(-1)

    def hold(self, z_x, z_h, mol, num_molecules, home: torch.Tensor):
        """Put the held atoms back exactly: their features, and their coordinates shifted by
        where the molecule's re-centring has moved them (a rigid shift of the whole molecule).
        `home` = centroids(self.x, …), computed once per trajectory by the caller."""
        shift = self.centroids(z_x, mol, num_molecules) - home
        m = self.mask.unsqueeze(-1)
        return torch.where(m, self.x + shift[mol], z_x), torch.where(m, self.h, z_h)


@torch.no_grad()
def run_sampler(denoiser: Callable, noise: NoiseSchedule, schedule: SamplerSchedule,
                num_atoms: torch.Tensor, num_features: int, num_types: int, generator: torch.Generator | None = None,
                context: torch.Tensor | None = None, on_step: Callable | None = None,
                dtype: torch.dtype = torch.float32, z_init: tuple | None = None,
                noise_scale: float = 1.0, fixed: FixedAtoms | None = None) -> SampleResult:
    """Generate one batch of molecules of the given sizes.

    `denoiser(z_x, z_h, time, mol, num_molecules, edge_index, context)` returns (ε̂^x, ε̂^h);
    `on_step(iteration, t, z_x, z_h)` sees every iterate (trajectories); `z_init` overrides the
    initial noise (tests of equivariance); `noise_scale` scales the noise added at each step
    (0 = a deterministic trajectory from the initial noise).

    `fixed` holds some atoms at t = 0 with their clean coordinates and features throughout
    (docs/fragments.md): the free atoms' initial noise is drawn around the held atoms' centroid,
    the whole molecule is re-centred every step as usual (which moves the held atoms rigidly
    only), and the result is translated so that the held atoms sit exactly at `fixed.x`."""
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
    held = None
    if fixed is not None:
        fixed = fixed.to(device, dtype)
        held = fixed.mask
        home = fixed.centroids(fixed.x, mol, B)   # the held atoms' centroid, constant
        z_x = z_x + home[mol]                      # noise around the held atoms
        z_x, z_h = fixed.hold(z_x, z_h, mol, B, home)
        z_x = remove_mean(z_x, mol, B)
        t = t.masked_fill(held, 0)
    state = SamplingState(t, mol, B, z_x, z_h, held)
    schedule.reset(state)
    update = schedule.make_update()
    update.reset()
    calls = 0
    if on_step is not None:
        on_step(0, t, z_x, z_h)
    while True:
        s = schedule.propose(state)
        if s is None:
            break
        if held is not None:
            s = s.masked_fill(held, 0)
        eps_x, eps_h = denoiser(state.z_x, state.z_h, state.t.to(dtype) / T, mol, B, edges, context)
        calls += 1
        z_x, z_h = update(noise, state.z_x, state.z_h, eps_x, eps_h, state.t, s, mol, B, generator,
                          noise_scale)
        if held is not None:   # undo float drift: the held atoms move rigidly only
            z_x, z_h = fixed.hold(z_x, z_h, mol, B, home)
        active = None
        if schedule.corrector_steps:   # atoms still noisy, at most corrector_below, not held
            active = (s > 0) & (s <= schedule.corrector_below)
            if held is not None:
                active &= ~held
        if active is not None and bool(active.any()):
            time = s.to(dtype) / T
            for _ in range(schedule.corrector_steps):
                cx, ch = denoiser(z_x, z_h, time, mol, B, edges, context)
                calls += 1
                z_x, z_h = langevin_step(noise, z_x, z_h, cx, ch, s, mol, B, schedule.corrector_snr,
                                         active, generator, noise_scale)
                if held is not None:
                    z_x, z_h = fixed.hold(z_x, z_h, mol, B, home)
        schedule.observe(state, z_x, z_h, s)
        state = SamplingState(s, mol, B, z_x, z_h, held)
        if on_step is not None:
            on_step(calls, s, z_x, z_h)
    assert int(state.t.max()) == 0, "sampler ended with atoms still noisy"
    # decode (as EDM): one more prediction at t = 0, x̂ = (z − σ_0 ε̂)/α_0, type = argmax
    eps_x, eps_h = denoiser(state.z_x, state.z_h, state.t.to(dtype) / T, mol, B, edges, context)
    calls += 1
    x = noise.predict_clean(state.z_x, eps_x, state.t)
    h = noise.predict_clean(state.z_h, eps_h, state.t)
    if held is None:
        x = remove_mean(x, mol, B)
    else:   # back to the caller's frame, the held atoms exactly where they were
        m = held.unsqueeze(-1)
        x = torch.where(m, state.z_x, x)
        x = x - (fixed.centroids(x, mol, B) - home)[mol]
        x, h = torch.where(m, fixed.x, x), torch.where(m, fixed.h, h)
    return SampleResult(x, h[:, :num_types].argmax(-1), num_atoms, calls, h)


# --------------------------------------------------------------------------------------------
# Speed wrappers for the denoiser (issue 4). Each returns a callable with the denoiser's calling
# convention, so `run_sampler` and its signature stay as they are; each is off unless asked for.
# --------------------------------------------------------------------------------------------
def accelerate(denoiser, autocast: str | None = None, compile: bool = False,
               cuda_graph: bool = False, compile_options: dict | None = None) -> Callable:
    """Wrap a `Denoiser` for sampling.

    autocast: None (float32) or "bf16" / "fp16": mixed precision for the network only (matrix
    products in low precision, the noise process stays float32/64). On CPUs with AMX or
    AVX512-BF16 this is the largest single gain; ε̂ moves by ~1e-2 relative (docs/speed.md).
    compile: torch.compile the network (one compilation per molecule-batch shape on CPU unless
    dynamic shapes are asked for in compile_options; pays off over a 1000-step trajectory).
    cuda_graph: capture the whole denoiser call in a CUDA graph per input shape and replay it:
    removes the per-kernel launch cost that dominates small batches on a GPU. CUDA only; written
    against the documented torch.cuda.graph API but not yet run on a GPU in this project.
    """
    if autocast not in (None, "bf16", "fp16"):
        raise ValueError(f"autocast must be None, 'bf16' or 'fp16', got {autocast!r}")
    net = denoiser
    if compile:
        # Edge chunking is a host-side loop with data-dependent bounds (a graph break per batch):
        # the compiled graph fuses the element-wise work itself, so it runs without chunks.
        from dataclasses import replace

        denoiser.speed = replace(denoiser.speed, edge_chunk=0)   # note: changes the module's option
        net = torch.compile(denoiser, **({"dynamic": False} | (compile_options or {})))
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(autocast)

    def call(z_x, z_h, time, mol, num_molecules, edges, context=None, **extra):
        device_type = z_x.device.type
        # the autocast weight cache must be off under CUDA-graph capture (cached casts would be
        # freed after capture while the graph still points at them)
        with torch.autocast(device_type, dtype=dtype, enabled=dtype is not None,
                            cache_enabled=not cuda_graph):
            eps_x, eps_h = net(z_x, z_h, time, mol, num_molecules, edges, context, **extra)
        return eps_x.to(z_x.dtype), eps_h.to(z_h.dtype)

    if cuda_graph:
        return CudaGraphDenoiser(call)
    return call


class CudaGraphDenoiser:
    """Replays one captured CUDA graph per (shapes, edge tensor) instead of launching the
    denoiser's ~15 kernels per layer one by one. Inputs are copied into static buffers; outputs are
    cloned out of the graph's static outputs. The sampling loop keeps one edge tensor for a whole
    trajectory, so each batch of molecules is captured once and replayed at every step.

    Requires a denoiser call without host syncs (the denoiser's mean removal is sync-free, and
    edge chunking is CPU-only). UNTESTED on a GPU so far: a CPU tensor falls back to eager calls.
    """

    def __init__(self, fn: Callable, warmup: int = 3):
        self.fn = fn
        self.warmup = warmup
        self._key = None
        self._graph = None

    def __call__(self, z_x, z_h, time, mol, num_molecules, edges, context=None, **extra):
        if z_x.device.type != "cuda" or any(v is not None for v in extra.values()):
            # CPU, or a self-conditioning estimate (not among the captured inputs): eager
            return self.fn(z_x, z_h, time, mol, num_molecules, edges, context, **extra)
        key = (tuple(z_x.shape), tuple(z_h.shape), z_x.dtype, edges.data_ptr(), tuple(edges.shape),
               mol.data_ptr(), int(num_molecules), None if context is None else tuple(context.shape))
        if key != self._key:
            self._capture(key, z_x, z_h, time, mol, num_molecules, edges, context)
        s = self._static
        s["z_x"].copy_(z_x)
        s["z_h"].copy_(z_h)
        s["time"].copy_(time)
        if context is not None:
            s["context"].copy_(context)
        self._graph.replay()
        return s["eps_x"].clone(), s["eps_h"].clone()

    def _capture(self, key, z_x, z_h, time, mol, num_molecules, edges, context):
        self._graph = None
        static = {"z_x": z_x.clone(), "z_h": z_h.clone(), "time": time.clone(),
                  "context": None if context is None else context.clone(),
                  "mol": mol, "edges": edges}           # held: the graph reads their memory

        def run():
            return self.fn(static["z_x"], static["z_h"], static["time"], mol, num_molecules, edges,
                           static["context"])

        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):   # warm-up on a side stream, as the CUDA-graph docs ask
            for _ in range(self.warmup):
                run()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static["eps_x"], static["eps_h"] = run()
        self._graph, self._static, self._key = graph, static, key
