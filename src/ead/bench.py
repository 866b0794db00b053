"""Speed benchmark (issue 4): the flat EAD denoiser against a dense EDM-layout baseline.

What `ead bench` measures, on the machine it runs on, for each preset:
- a training step at batch 64 (QM9 molecules): loss, backward, gradient clipping, AdamW, EMA;
- a sampling network call for a batch of 100 molecules with sizes drawn from p(M) (EDM's reference
  figure is per step of such a batch), and from it the sampling throughput in molecules/s for each
  sampler at 1000 and 100 steps;
- peak memory (RSS on CPU, sampled every few ms; max allocated on CUDA);
- FLOPs per training step and per network call (matrix products, counted with
  torch.utils.flop_counter.FlopCounterMode) and the fraction of the machine's matmul peak achieved;
- all of it again for a dense implementation in EDM's layout (`DenseDenoiser`: molecules padded to
  [B, M, F], all B·M·M pairs as edges, masks), with the same weights, as a ratio.

Throughput is extrapolated, and the output says so: a full 1000-step run of the paper network takes
minutes per sampler. Total time for S steps = calls(S) × (time of one network call) + loop
overhead(S), where calls(S) and the loop overhead (schedule, reverse step, noise) come from running
the real sampler over all S steps with a zero-cost stand-in denoiser, and the network call is timed
on the real batch. `check_extrapolation` compares that model with an end-to-end run.
"""

from __future__ import annotations

import os
import platform
import threading
import time
from contextlib import nullcontext
from dataclasses import dataclass, field, replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .config import PRESETS, ModelConfig
from .data.batch import FeatureEncoder, MoleculeSet, collate, full_edges, molecule_index
from .data.elements import QM9_TYPES
from .diffusion.noise import NoiseSchedule, center
from .diffusion.sampler import accelerate, run_sampler
from .diffusion.schedules import TrainingWindow, make_schedule
from .model.egnn import PLAIN, Denoiser, SpeedOptions
from .pipeline import cpu_flags, resolve_precision

# EDM's reference code on this machine kind (2 cores), as measured and quoted in issue 4 — not
# re-measured here: seconds per training step at batch 64, and seconds per sampling step for a
# batch of 100 molecules padded to 29 atoms.
EDM_REFERENCE = {"paper": {"train_s": 13.5, "sample_step_s": 8.1},
                 "small": {"train_s": 2.7, "sample_step_s": 1.05}}
# The EAD paper's own sampling cost on a GPU (issue 4, not re-measured): seconds per molecule.
PAPER_GPU_S_PER_MOL = 0.21
QM9_MAX_ATOMS = 29


def _edm_reference(preset: str, device: str) -> dict | None:
    """EDM's figures were measured on the 2-core CPU machine: compare only against a CPU run."""
    return EDM_REFERENCE.get(preset) if str(device).startswith("cpu") else None


# ==================================================================================== machine
def machine_info(device: torch.device | str = "cpu") -> dict:
    """CPU model and cores (from lscpu's source, /proc/cpuinfo), torch threads, bf16 support."""
    info = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "threads": torch.get_num_threads(), "torch": torch.__version__, "device": str(device)}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and info["cpu"] in (platform.processor(), platform.machine()):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    flags = cpu_flags()
    info["bf16_hw"] = "amx_bf16" if "amx_bf16" in flags else ("avx512_bf16" if "avx512_bf16" in flags else "none")
    if str(device).startswith("cuda") and torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return info


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(device="cpu", dtype=torch.float32, n: int = 2048, seconds: float = 1.0) -> float:
    """Best GFLOP/s of an n×n×n matrix product: the practical peak that the model's matrix work
    is compared with (the FMA-unit paper peak is higher and not reachable from PyTorch)."""
    g = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, generator=g, device=device).to(dtype)
    b = torch.randn(n, n, generator=g, device=device).to(dtype)
    a @ b
    _sync(device)
    best, t_end = float("inf"), time.perf_counter() + seconds
    while True:
        t0 = time.perf_counter()
        a @ b
        _sync(device)
        best = min(best, time.perf_counter() - t0)
        if time.perf_counter() > t_end:
            break
    return 2 * n**3 / best / 1e9


# ==================================================================================== memory
def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class PeakMemory:
    """Peak memory over a `with` block: CUDA max allocated, or on CPU the process RSS sampled by a
    thread every `interval` s (ru_maxrss cannot be reset between measurements). `peak_mb` is the
    process peak, `delta_mb` the rise above the level at entry."""

    def __init__(self, device="cpu", interval: float = 0.002):
        self.device = torch.device(device)
        self.interval = interval
        self.peak_mb = self.delta_mb = float("nan")

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._start = torch.cuda.memory_allocated(self.device)
            return self
        self._start = _rss_bytes()
        self._peak = self._start
        self._stop = threading.Event()

        def watch():
            while not self._stop.is_set():
                self._peak = max(self._peak, _rss_bytes())
                self._stop.wait(self.interval)

        self._thread = threading.Thread(target=watch, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
        else:
            self._stop.set()
            self._thread.join()
            peak = max(self._peak, _rss_bytes())
        self.peak_mb = peak / 2**20
        self.delta_mb = (peak - self._start) / 2**20
        return False


def _busy_cpu_seconds() -> float:
    """CPU seconds spent by the whole machine (all processes), from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    busy = sum(v[:3]) + sum(v[5:8])           # user nice system + irq softirq steal
    return busy / os.sysconf("SC_CLK_TCK")


class Interference:
    """How many cores other processes kept busy during a `with` block (machine CPU time minus
    this process's, over wall time): timings taken while `other_cores` is well above 0 on a
    2-core machine are not trustworthy. NaN where /proc/stat is not readable."""

    other_cores = float("nan")

    def __enter__(self):
        try:
            self._m0 = _busy_cpu_seconds()
        except (OSError, ValueError, IndexError):
            self._m0 = None
        t = os.times()
        self._o0, self._w0 = t.user + t.system, time.perf_counter()
        return self

    def __exit__(self, *exc):
        if self._m0 is not None:
            t = os.times()
            own = t.user + t.system - self._o0
            other = _busy_cpu_seconds() - self._m0 - own
            self.other_cores = max(0.0, other / max(time.perf_counter() - self._w0, 1e-9))
        return False


# ==================================================================================== dense baseline
class DenseDenoiser(nn.Module):
    """The same network as a flat `Denoiser`, computed the way EDM's code does it: molecules padded
    to [B, M, ·], an edge for every one of the B·M·M ordered pairs (self-pairs and padding
    included), the edge MLPs on concatenated [h_i, h_j, e_ij] rows, messages and coordinate updates
    multiplied by an edge mask, scatter-add aggregation, node features multiplied by a node mask
    after every layer. It borrows the flat model's modules, so the weights are the same ones.

    forward(x [B,M,3], h [B,M,F], t [B,M], node_mask [B,M]) → (ε̂^x [B,M,3], ε̂^h [B,M,F]); padded
    rows of the outputs are zero. Real atoms get the flat model's values up to float rounding."""

    def __init__(self, flat: Denoiser):
        super().__init__()
        self.flat = flat
        self._edges: dict = {}

    def all_pairs(self, B: int, M: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        """EDM's `get_adj_matrix`: rows/cols of all M·M pairs in each of the B blocks (cached)."""
        key = (B, M, str(device))
        if key not in self._edges:
            i = torch.arange(M, device=device)
            base = (torch.arange(B, device=device) * M).view(B, 1, 1)
            rows = (base + i.view(1, M, 1)).expand(B, M, M).reshape(-1)
            cols = (base + i.view(1, 1, M)).expand(B, M, M).reshape(-1)
            self._edges = {key: (rows, cols)}
        return self._edges[key]

    def forward(self, x, h, t, node_mask, context=None):
        B, M, _ = x.shape
        egnn = self.flat.egnn
        rows, cols = self.all_pairs(B, M, x.device)
        nm = node_mask.reshape(B * M, 1).to(x.dtype)
        em = (nm[rows] * nm[cols]) * (rows != cols).unsqueeze(-1).to(x.dtype)   # [B·M·M, 1]
        xf = x.reshape(B * M, 3) * nm
        feats = [h.reshape(B * M, -1), t.reshape(B * M, 1).to(x.dtype)]
        if self.flat.context_features:
            feats.append(context.reshape(B * M, -1).to(x.dtype))
        hf = torch.cat(feats, -1) * nm
        x0 = xf
        radial0, _ = _coord2diff(xf, rows, cols, 1.0)
        hh = egnn.embedding(hf)
        for blk in egnn.blocks:
            radial, unit = _coord2diff(xf, rows, cols, blk.norm_constant)
            e_attr = torch.cat([radial, radial0], 1)
            m = _mlp2(blk.edge_mlp, torch.cat([hh[rows], hh[cols], e_attr], 1))
            if blk.attention is not None:
                m = m * torch.sigmoid(blk.attention(m))
            m = m * em
            agg = _scatter_sum(m, rows, B * M) / blk.normalization_factor
            hh = (hh + blk.node_mlp(torch.cat([hh, agg], 1))) * nm
            phi = blk.coord_out(_mlp2(blk.coord_mlp, torch.cat([hh[rows], hh[cols], e_attr], 1)))
            if blk.tanh:
                phi = torch.tanh(phi) * blk.coords_range
            xf = (xf + _scatter_sum(unit * phi * em, rows, B * M) / blk.normalization_factor) * nm
            hh = hh * nm
        h_out = egnn.embedding_out(hh) * nm
        vel = ((xf - x0) * nm).reshape(B, M, 3)
        # EDM's remove_mean_with_mask
        n = node_mask.sum(1, keepdim=True).to(x.dtype).clamp_min(1).unsqueeze(-1)
        vel = vel - vel.sum(1, keepdim=True) / n * node_mask.unsqueeze(-1).to(x.dtype)
        return vel, h_out.reshape(B, M, -1)[..., : self.flat.num_features]


def _coord2diff(x, rows, cols, norm_constant):
    diff = x[rows] - x[cols]
    radial = (diff**2).sum(1, keepdim=True)
    return radial, diff / (torch.sqrt(radial + 1e-8) + norm_constant)


def _mlp2(pair_mlp, inp):
    """EDM's edge/coordinate MLP: Linear(cat) → SiLU → Linear → SiLU, from a PairMLP's weights."""
    return F.silu(pair_mlp.second(F.silu(pair_mlp.first(inp))))


def _scatter_sum(values, index, n):   # EDM's unsorted_segment_sum
    out = values.new_zeros((n, values.shape[1]))
    return out.scatter_add_(0, index.unsqueeze(-1).expand(-1, values.shape[1]), values)


def to_dense(values: torch.Tensor, num_atoms: torch.Tensor, max_atoms: int) -> torch.Tensor:
    """Flat [N, ·] → padded [B, max_atoms, ·] (zeros in the padding)."""
    B = len(num_atoms)
    slot = _dense_slots(num_atoms, max_atoms)
    out = values.new_zeros((B * max_atoms,) + values.shape[1:])
    out[slot] = values
    return out.view((B, max_atoms) + values.shape[1:])


def from_dense(values: torch.Tensor, num_atoms: torch.Tensor) -> torch.Tensor:
    B, M = values.shape[:2]
    return values.reshape((B * M,) + values.shape[2:])[_dense_slots(num_atoms, M)]


def _dense_slots(num_atoms, max_atoms):
    mol = molecule_index(num_atoms)
    start = torch.cumsum(num_atoms, 0) - num_atoms
    return mol * max_atoms + torch.arange(len(mol), device=mol.device) - start[mol]


def dense_mask(num_atoms: torch.Tensor, max_atoms: int) -> torch.Tensor:
    return torch.arange(max_atoms, device=num_atoms.device).unsqueeze(0) < num_atoms.unsqueeze(1)


class DenseSamplingDenoiser:
    """The dense network behind the flat sampling loop's calling convention: pads the batch to
    `max_atoms` (29 for QM9, as EDM samples), runs `DenseDenoiser`, un-pads. The padding and
    un-padding cost is counted against the dense side (EDM keeps everything padded, so this is
    slightly unfavourable to it; it is small next to the network)."""

    def __init__(self, dense: DenseDenoiser, max_atoms: int = QM9_MAX_ATOMS):
        self.dense, self.max_atoms = dense, max_atoms

    def __call__(self, z_x, z_h, time, mol, num_molecules, edges, context=None):
        num_atoms = torch.bincount(mol, minlength=num_molecules)
        M = max(self.max_atoms, int(num_atoms.max()))
        d = lambda v: to_dense(v, num_atoms, M)  # noqa: E731
        ex, eh = self.dense(d(z_x), d(z_h), d(time), dense_mask(num_atoms, M),
                            None if context is None else d(context))
        return from_dense(ex, num_atoms), from_dense(eh, num_atoms)


def dense_diffusion_loss(dense: DenseDenoiser, noise: NoiseSchedule, window: TrainingWindow,
                         batch, gen, max_atoms: int | None = None) -> torch.Tensor:
    """Algorithm 1's loss computed in the padded layout (EDM's training step): per-atom times,
    noise and loss all on [B, M, ·] with masks; M = the batch's largest molecule unless given (EDM's
    collate trims the padding to the batch's largest molecule)."""
    num_atoms = batch.num_atoms
    M = max_atoms or int(num_atoms.max())
    mask = dense_mask(num_atoms, M)
    mf = mask.unsqueeze(-1).to(batch.x.dtype)
    B = len(num_atoms)
    t = window.sample(batch.mol, B, gen)            # per-atom times (drawn flat, then padded)
    td = to_dense(t, num_atoms, M)
    x, h = to_dense(batch.x, num_atoms, M), to_dense(batch.h, num_atoms, M)
    n = mf.sum(1, keepdim=True).clamp_min(1)
    eps_x = torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype) * mf
    eps_x = (eps_x - eps_x.sum(1, keepdim=True) / n) * mf
    eps_h = torch.randn(h.shape, generator=gen, device=h.device, dtype=h.dtype) * mf
    alpha = noise.alpha(td).to(x.dtype).unsqueeze(-1)
    sigma = noise.sigma(td).to(x.dtype).unsqueeze(-1)
    z_x = (alpha * x + sigma * eps_x) * mf
    z_x = (z_x - z_x.sum(1, keepdim=True) / n) * mf
    z_h = (alpha * h + sigma * eps_h) * mf
    px, ph = dense(z_x, z_h, td.to(x.dtype) / noise.timesteps, mask)
    sq = ((px - eps_x) ** 2 * mf).sum() + ((ph - eps_h) ** 2 * mf).sum()
    return sq / (batch.x.shape[0] * (3 + batch.h.shape[1]))


# ==================================================================================== workload
@dataclass
class Workload:
    """The molecules a benchmark runs on: training batches and a sampling batch's sizes."""

    train_batches: list
    sample_sizes: torch.Tensor
    source: str


def qm9_workload(batch_size: int = 64, sample_batch: int = 100, n_train_batches: int = 4,
                 seed: int = 0) -> Workload:
    """QM9 training molecules (random batches) and sampling sizes drawn from QM9's p(M); random
    molecules with QM9-like sizes if the QM9 cache cannot be built here."""
    # separate streams: the sampling sizes must not depend on how many training batches are drawn
    rng, rng_sizes = np.random.default_rng([seed, 0]), np.random.default_rng([seed, 1])
    enc = FeatureEncoder(QM9_TYPES)
    try:
        from .data.qm9 import qm9_split

        train = qm9_split("train", verbose=False)
        source = "QM9 train split"
    except Exception:  # no qm9pack / no cache: synthetic molecules with QM9's typical sizes
        sizes = np.clip(np.round(rng.normal(18, 3, 2000)), 3, QM9_MAX_ATOMS).astype(int)
        train = MoleculeSet.from_list(
            [(rng.normal(0, 1.5, (n, 3)), rng.choice(QM9_TYPES, n)) for n in sizes])
        source = "synthetic molecules (QM9 not available)"
    batches = [collate(train, rng.choice(len(train), batch_size, replace=False), enc)
               for _ in range(n_train_batches)]
    sizes = torch.as_tensor(rng_sizes.choice(train.num_atoms, sample_batch), dtype=torch.long)
    return Workload(batches, sizes, source)


def build(preset: str, seed: int = 0) -> Denoiser:
    layers, hidden = PRESETS[preset]
    cfg = ModelConfig.from_preset(preset)
    torch.manual_seed(seed)
    net = Denoiser(cfg.num_features, 0, hidden, layers, attention=cfg.attention, tanh=cfg.tanh,
                   coords_range=cfg.coords_range, norm_constant=cfg.norm_constant,
                   normalization_factor=cfg.normalization_factor)
    # a trained-like coordinate head (the init is ~0): the coordinate path then does real work
    for blk in net.egnn.blocks:
        nn.init.normal_(blk.coord_out.weight, std=0.02)
    return net


# ==================================================================================== timing
def _timed(fn, reps: int, device, warmup: int = 1) -> list[float]:
    for _ in range(warmup):
        fn()
    _sync(device)
    out = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        out.append(time.perf_counter() - t0)
    return out


def _flops(fn) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


def train_step_fn(net: Denoiser, batches, device, layout: str = "flat", autocast: str | None = None,
                  fused: bool = True):
    """A callable running one full training step per call (cycling through `batches`): loss of
    Algorithm 1, backward, gradient clipping, AdamW (amsgrad, as train.py), EMA update."""
    net = net.to(device).train()
    dense = DenseDenoiser(net) if layout == "dense" else None
    model = net if fused else _unfused(net)
    noise = NoiseSchedule()
    window = TrainingWindow(noise.timesteps, 9)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4, weight_decay=1e-12, amsgrad=True)
    params = list(net.parameters())
    ema = [p.detach().clone() for p in params]
    batches = [b.to(device) for b in batches]
    state = {"k": 0}
    amp = torch.autocast(torch.device(device).type, dtype=torch.bfloat16) if autocast == "bf16" else nullcontext()

    def step(backward: bool = True):
        from .train import diffusion_loss

        b = batches[state["k"] % len(batches)]
        gen = torch.Generator(device).manual_seed(state["k"])
        state["k"] += 1
        with amp:
            if dense is None:
                loss = diffusion_loss(model, noise, window, b, gen)
            else:
                loss = dense_diffusion_loss(dense, noise, window, b, gen)
        if backward:
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1e6)
            opt.step()
            opt.zero_grad(set_to_none=True)
            with torch.no_grad():
                torch._foreach_lerp_(ema, [p.detach() for p in params], 1e-3)
        return loss

    return step


def sampling_call_fn(denoise, sizes: torch.Tensor, num_features: int, device, seed: int = 0,
                     dtype: torch.dtype = torch.float32):
    """A callable making one denoiser call on a sampling batch (per-atom times spread over
    [0, T], as in a trajectory); the state is fixed so calls are comparable. The inputs are drawn
    in float32 on the CPU from `seed`, so every dtype and device gets the same values."""
    g = torch.Generator().manual_seed(seed)
    mol = molecule_index(sizes)
    B = len(sizes)
    z_x = center(torch.randn(len(mol), 3, generator=g), mol, B)
    z_h = torch.randn(len(mol), num_features, generator=g)
    t = torch.randint(0, 1001, (len(mol),), generator=g).float() / 1000
    z_x, z_h, t = (v.to(device=device, dtype=dtype) for v in (z_x, z_h, t))
    sizes = sizes.to(device)
    mol = molecule_index(sizes)
    edges = full_edges(sizes)

    @torch.no_grad()
    def call():
        return denoise(z_x, z_h, t, mol, B, edges, None)

    return call


class _NullDenoiser:
    """Zero-cost stand-in for the network: ε̂ = 0.1·z. Drives a real sampler over its full step
    budget to count network calls and time everything but the network (the loop overhead)."""

    def __call__(self, z_x, z_h, time, mol, num_molecules, edges, context=None):
        return 0.1 * z_x, 0.1 * z_h


def loop_profile(sampler: str, steps: int, sizes: torch.Tensor, num_features: int, device,
                 window: int = 9, seed: int = 0, update: str = "ancestral") -> dict:
    """Network calls and loop overhead (s) of a full run of `sampler` at `steps` steps."""
    noise = NoiseSchedule()
    sched = make_schedule(sampler, noise, steps=steps, window=window, update=update)
    g = torch.Generator(device).manual_seed(seed)
    _sync(device)
    t0 = time.perf_counter()
    res = run_sampler(_NullDenoiser(), noise, sched, sizes.to(device), num_features,
                      num_features - 1, g)
    _sync(device)
    return {"calls": res.network_calls, "overhead_s": time.perf_counter() - t0}


# ==================================================================================== the benchmark
@dataclass
class BenchConfig:
    presets: tuple[str, ...] = ("paper", "small")
    samplers: tuple[str, ...] = ("synchronous", "manual", "adaptive")
    sample_steps: tuple[int, ...] = (1000, 100)
    timed_calls: int = 5          # network calls timed per configuration (--steps)
    train_reps: int = 3           # training steps timed per configuration
    train_batch: int = 64
    sample_batch: int = 100
    device: str = "cpu"
    dense: bool = True            # also the EDM-layout baseline
    tricks: bool = False          # also time each speed trick separately (slow: torch.compile)
    compile: bool = False         # include torch.compile among the tricks
    precision: str = "auto"       # the flat layout's sampling precision, as `ead sample --precision`
    update: str = "ancestral"     # the samplers' update rule (its per-step work is in the loop overhead)
    quick: bool = False
    isolate: bool = True          # each measurement in a fresh process (clean peak RSS)
    seed: int = 0
    log: object = None            # callable(str) for progress lines

    @classmethod
    def quick_config(cls, **kw) -> "BenchConfig":
        base = dict(presets=("micro",), sample_steps=(100, 10), timed_calls=1, train_reps=1,
                    train_batch=8, sample_batch=8, quick=True, isolate=False)
        return cls(**{**base, **kw})


@dataclass
class BenchResult:
    machine: dict
    config: BenchConfig
    peak_gflops: dict
    rows: list = field(default_factory=list)        # per (preset, layout)
    loops: dict = field(default_factory=dict)       # (sampler, steps) -> calls / overhead
    tricks: list = field(default_factory=list)
    workload: str = ""


def _best(v):
    """Best of k: the machine is shared (a training run, other users), and interference only ever
    adds time, so the minimum is the most stable estimate of the steady-state cost."""
    return float(np.min(v))


def _cell_train(preset: str, layout: str, cfg: "BenchConfig") -> dict:
    """One training-step measurement (runs in a fresh process unless cfg.isolate is False)."""
    device = torch.device(cfg.device)
    work = qm9_workload(cfg.train_batch, cfg.sample_batch, 1 if cfg.quick else 4, cfg.seed)
    step = train_step_fn(build(preset, cfg.seed), work.train_batches, device, layout)
    with Interference() as busy, PeakMemory(device) as mem:
        ts = _timed(step, cfg.train_reps, device)
    return {"train_s": _best(ts), "train_all_s": ts, "train_peak_mb": mem.peak_mb,
            "train_delta_mb": mem.delta_mb, "train_gflop": _flops(step) / 1e9,
            "train_other_cores": busy.other_cores}


def _cell_sample(preset: str, layout: str, cfg: "BenchConfig") -> dict:
    """One sampling-call measurement on the sampling batch (fresh process unless not isolated)."""
    device = torch.device(cfg.device)
    work = qm9_workload(cfg.train_batch, cfg.sample_batch, 1, cfg.seed)
    net = build(preset, cfg.seed).to(device).eval()
    # the flat layout samples as `ead sample` would here; the EDM-layout baseline stays float32
    autocast = resolve_precision(cfg.precision, device) if layout == "flat" else None
    denoise = (accelerate(net, autocast=autocast) if layout == "flat"
               else DenseSamplingDenoiser(DenseDenoiser(net)))
    call = sampling_call_fn(denoise, work.sample_sizes, len(QM9_TYPES) + 1, device, cfg.seed)
    with Interference() as busy, PeakMemory(device) as mem:
        cs = _timed(call, cfg.timed_calls, device)
    return {"call_s": _best(cs), "call_all_s": cs, "sample_peak_mb": mem.peak_mb,
            "sample_delta_mb": mem.delta_mb, "call_gflop": _flops(call) / 1e9,
            "sample_other_cores": busy.other_cores}


def _child(fn, threads, *args):
    torch.set_num_threads(threads)
    return fn(*args)


def _run_cell(fn, cfg: "BenchConfig", *args) -> dict:
    """Run a measurement in a fresh spawned process: its peak RSS then belongs to that measurement
    alone (the allocator of a long-lived process keeps what earlier measurements used), and no
    measurement inherits another's heap. In-process when cfg.isolate is False (tests, --quick)."""
    cfg = replace(cfg, log=None)
    if not cfg.isolate:
        return fn(*args, cfg)
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as ex:
        return ex.submit(_child, fn, torch.get_num_threads(), *args, cfg).result()


def run_bench(cfg: BenchConfig) -> BenchResult:
    log = cfg.log or (lambda s: None)
    device = torch.device(cfg.device)
    info = machine_info(device)
    log(f"machine: {info['cpu']}, {info['cores']} cores, {info['threads']} torch threads")
    with Interference() as busy:
        peak = {"fp32": matmul_peak(device, torch.float32, 1024 if cfg.quick else 2048,
                                    0.2 if cfg.quick else 1.0)}
        if info["bf16_hw"] != "none" or device.type == "cuda":
            peak["bf16"] = matmul_peak(device, torch.bfloat16, 1024 if cfg.quick else 2048,
                                       0.2 if cfg.quick else 1.0)
    info["peak_other_cores"] = busy.other_cores
    log("matmul peak: " + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in peak.items()))
    work = qm9_workload(cfg.train_batch, cfg.sample_batch, 1 if cfg.quick else 4, cfg.seed)
    nf = len(QM9_TYPES) + 1
    result = BenchResult(info, cfg, peak, workload=work.source)

    # the sampling loop without the network: calls and overhead per (sampler, steps)
    for s in cfg.samplers:
        for steps in cfg.sample_steps:
            result.loops[(s, steps)] = loop_profile(s, steps, work.sample_sizes, nf, device,
                                                    seed=cfg.seed, update=cfg.update)
            log(f"loop {s} {steps} steps: {result.loops[(s, steps)]}")

    layouts = ["flat", "dense"] if cfg.dense else ["flat"]
    for preset in cfg.presets:
        for layout in layouts:
            row = {"preset": preset, "layout": layout}
            row.update(_run_cell(_cell_train, cfg, preset, layout))
            log(f"{preset} {layout}: train {row['train_s']:.3f} s/step "
                f"(all {[round(v, 3) for v in row['train_all_s']]})")
            row.update(_run_cell(_cell_sample, cfg, preset, layout))
            log(f"{preset} {layout}: sampling {row['call_s']:.3f} s/call "
                f"(all {[round(v, 3) for v in row['call_all_s']]})")
            row["throughput"] = {
                key: cfg.sample_batch / (lp["calls"] * row["call_s"] + lp["overhead_s"])
                for key, lp in result.loops.items()}
            result.rows.append(row)
        if cfg.tricks:
            result.tricks.extend(time_tricks(preset, work, device, cfg, log))
    return result


def trick_variants(compile: bool = False, bf16: bool = True, cuda: bool = False):
    """(name, SpeedOptions, fused, accelerate kwargs): cumulative, plain first."""
    v = [("plain concatenation (fused=False)", PLAIN, False, {}),
         ("+ fused per-node projections", PLAIN, True, {}),
         ("+ index_select, in-place (= training)", replace(PLAIN, gather="index_select", inplace=True), True, {}),
         ("+ edge chunks (= sampling default)", SpeedOptions(), True, {})]
    if bf16:
        v.append(("+ bf16 autocast", SpeedOptions(), True, {"autocast": "bf16"}))
    if compile:
        v.append(("torch.compile, fp32", SpeedOptions(), True, {"compile": True}))
        if bf16:
            v.append(("torch.compile + bf16", SpeedOptions(), True, {"compile": True, "autocast": "bf16"}))
    if cuda:   # one captured graph per batch shape, replayed at every step
        v.append(("CUDA graph, fp32", SpeedOptions(), True, {"cuda_graph": True}))
        if bf16:
            v.append(("CUDA graph + bf16", SpeedOptions(), True, {"cuda_graph": True, "autocast": "bf16"}))
    return v


def time_tricks(preset: str, work: Workload, device, cfg: BenchConfig, log=lambda s: None) -> list:
    """Per-call sampling time (and ε̂ error against float64) for each trick, cumulatively; the
    training step for plain, default and default + bf16."""
    nf = len(QM9_TYPES) + 1
    out = []
    ref_net = build(preset, cfg.seed).double().eval()
    ref_net.speed = PLAIN
    ref = sampling_call_fn(accelerate(ref_net), work.sample_sizes, nf, "cpu", cfg.seed, torch.float64)
    with torch.no_grad():
        ref_out = ref()
    # the same inputs in float32 (sampling_call_fn draws them from the same seed)
    scale = max(float(ref_out[0].abs().max()), float(ref_out[1].abs().max()))
    bf16_ok = machine_info(device)["bf16_hw"] != "none" or torch.device(device).type == "cuda"
    for name, speed, fused, acc in trick_variants(cfg.compile, bf16_ok, torch.device(device).type == "cuda"):
        net = build(preset, cfg.seed).to(device).eval()
        net.speed = speed
        fn = accelerate(net, **acc)
        if not fused:
            fn = _unfused(net)
        call = sampling_call_fn(fn, work.sample_sizes, nf, device, cfg.seed)
        t0 = time.perf_counter()
        res = call()                             # includes compilation when compiling
        _sync(device)
        first = time.perf_counter() - t0
        cs = _timed(call, cfg.timed_calls, device, warmup=1)
        err = max(float((res[0].double().cpu() - ref_out[0]).abs().max()),
                  float((res[1].double().cpu() - ref_out[1]).abs().max())) / scale
        row = {"preset": preset, "trick": name, "call_s": _best(cs), "first_call_s": first,
               "rel_err": err}
        if name.startswith(("plain", "+ index_select", "+ bf16")):   # chunks: inference only
            tnet = build(preset, cfg.seed)
            tnet.speed = speed
            step = train_step_fn(tnet, work.train_batches, device, "flat", acc.get("autocast"), fused)
            row["train_s"] = _best(_timed(step, cfg.train_reps, device))
        log(f"{preset} trick {name}: {row['call_s']:.3f} s/call")
        out.append(row)
    return out


def _unfused(net: Denoiser):
    def call(z_x, z_h, time, mol, num_molecules, edges, context=None):
        return net(z_x, z_h, time, mol, num_molecules, edges, context, fused=False)

    return call


def check_extrapolation(preset: str, sampler: str, steps: int, device="cpu", sample_batch: int = 20,
                        seed: int = 0, model: str | None = None) -> dict:
    """Measured end-to-end sampling time against calls × call time + loop overhead.

    `model`: a trained model folder to run instead of the random-weight benchmark network. Use
    one: an untrained network's trajectory diverges (|z| ~ 1e6), and float32 arithmetic on the
    denormal numbers that then appear in its activations is several times slower, so a random
    network makes the end-to-end run look slower than the extrapolation."""
    work = qm9_workload(8, sample_batch, 1, seed)
    nf = len(QM9_TYPES) + 1
    if model:
        from .pipeline import EAD

        net = EAD.from_pretrained(model, device=device).denoiser
    else:
        net = build(preset, seed).to(device).eval()
    fn = accelerate(net)
    call = sampling_call_fn(fn, work.sample_sizes, nf, device, seed)
    call_s = _best(_timed(call, 3, device))
    lp = loop_profile(sampler, steps, work.sample_sizes, nf, device, seed=seed)
    noise = NoiseSchedule()
    sched = make_schedule(sampler, noise, steps=steps, window=9)
    t0 = time.perf_counter()
    run_sampler(fn, noise, sched, work.sample_sizes.to(device), nf, nf - 1,
                torch.Generator(device).manual_seed(seed))
    _sync(device)
    measured = time.perf_counter() - t0
    return {"measured_s": measured, "predicted_s": lp["calls"] * call_s + lp["overhead_s"],
            "calls": lp["calls"], "call_s": call_s}


# ==================================================================================== report
def format_report(r: BenchResult) -> str:
    m, cfg = r.machine, r.config
    L = []
    L.append(f"machine: {m['cpu']} | {m['cores']} cores, torch {m['torch']} with {m['threads']} "
             f"threads | device {m['device']}" + (f" ({m['gpu']})" if m.get("gpu") else "")
             + f" | bf16 hardware: {m['bf16_hw']}")
    L.append("matmul peak (best 2048³ product): "
             + ", ".join(f"{k} {v:,.0f} GFLOP/s" for k, v in r.peak_gflops.items()))
    L.append(f"workload: {r.workload}; training batch {cfg.train_batch}, sampling batch "
             f"{cfg.sample_batch} molecules (sizes from p(M)); dense = EDM layout: training padded "
             f"to the batch's largest molecule (EDM's collate), sampling to {QM9_MAX_ATOMS} atoms, "
             "B·M·M edges with masks")
    sp = resolve_precision(cfg.precision, torch.device(cfg.device)) or "float32"
    L.append("times are the best of k runs (the machine is shared); eager, default speed options: "
             f"training float32, flat sampling {sp} (--precision {cfg.precision}; the dense EDM "
             "layout float32); each speed trick off/on is in the tricks table. peak RSS = the measuring "
             f"process's peak ({'each measurement in a fresh process' if cfg.isolate else 'one process for all: mixed'}), +MB = rise during the timed "
             "runs; busy = cores that OTHER processes kept busy meanwhile (≫ 0: distrust the row)"
             + (" (--quick: tiny sizes, figures not meaningful)" if cfg.quick else ""))
    pk32 = r.peak_gflops["fp32"]
    L.append("")
    for title, unit, key, prefix in (("training step (loss + backward + clip + AdamW + EMA)", "s/step", "train", "train"),
                                     (f"sampling: one network call on {cfg.sample_batch} molecules", "s/call",
                                      "call", "sample")):
        L.append(title)
        L.append(f"{'preset':8} {'layout':7} {unit:>8} {'GFLOP':>8} {'GFLOP/s':>8} {'%peak':>6} "
                 f"{'peak RSS MB':>11} {'+MB':>7} {'busy':>5}")
        for row in r.rows:
            secs, gflop = row[f"{key}_s"], row[f"{key}_gflop"]
            # %peak against the peak of the precision the row ran in
            bf16_row = key == "call" and row["layout"] == "flat" and sp == "bf16"
            pk = r.peak_gflops.get("bf16", pk32) if bf16_row else pk32
            L.append(f"{row['preset']:8} {row['layout']:7} {secs:8.3f} {gflop:8.1f} {gflop / secs:8.1f} "
                     f"{100 * gflop / secs / pk:5.1f}% {row[f'{prefix}_peak_mb']:11.0f} "
                     f"{row[f'{prefix}_delta_mb']:7.0f} {row[f'{prefix}_other_cores']:5.2f}")
        L.append("")
    L.append(f"sampling throughput, molecules/s — EXTRAPOLATED: calls(S) × s/call (best of "
             f"{cfg.timed_calls} timed calls) + loop overhead(S) (the real sampler run over all S "
             f"steps with a zero-cost network; update rule {cfg.update})")
    L.append(f"{'preset':8} {'sampler':12} {'steps':>5} {'calls':>5} {'loop s':>7} {'flat mol/s':>10} "
             f"{'s/mol':>8} {'dense mol/s':>11} {'flat/dense':>10}")
    for preset in cfg.presets:
        flat = next(x for x in r.rows if x["preset"] == preset and x["layout"] == "flat")
        dense = next((x for x in r.rows if x["preset"] == preset and x["layout"] == "dense"), None)
        for (s, steps), lp in r.loops.items():
            f = flat["throughput"][(s, steps)]
            d = dense["throughput"][(s, steps)] if dense else None
            vs = f"{d:11.4f} {f / d:9.1f}×" if d else f"{'–':>11} {'–':>10}"   # --no-dense
            L.append(f"{preset:8} {s:12} {steps:5d} {lp['calls']:5d} {lp['overhead_s']:7.2f} {f:10.3f} "
                     f"{1 / f:8.2f} {vs}")
    L.append("")
    L.append("ratios, flat (this package) over dense (EDM layout), same weights, same machine:")
    for preset in cfg.presets:
        flat = next(x for x in r.rows if x["preset"] == preset and x["layout"] == "flat")
        dense = next((x for x in r.rows if x["preset"] == preset and x["layout"] == "dense"), None)
        if dense:
            L.append(f"  {preset}: training {dense['train_s'] / flat['train_s']:.1f}× faster, "
                     f"sampling {dense['call_s'] / flat['call_s']:.1f}× faster per call, "
                     f"{dense['call_gflop'] / flat['call_gflop']:.1f}× fewer FLOPs per call, "
                     f"peak RSS during sampling {dense['sample_delta_mb']:.0f} → "
                     f"{flat['sample_delta_mb']:.0f} MB above baseline")
        ref = _edm_reference(preset, cfg.device)
        sync = flat["throughput"].get(("synchronous", 1000))
        if not str(cfg.device).startswith("cpu") and sync and preset == "paper":
            L.append(f"  paper preset vs the paper's {PAPER_GPU_S_PER_MOL} s/molecule on a GPU (not re-measured): "
                     f"{1 / sync:.3f} s/molecule at 1000 steps ({sync * PAPER_GPU_S_PER_MOL:.1f}× faster)")
        if ref:
            edm_mol_s = cfg.sample_batch / (ref["sample_step_s"] * 1000)   # the 81 s/mol
            line = (f"  {preset} vs EDM's code (issue 4's figures, not re-measured): training "
                    f"{ref['train_s']:.1f} → {flat['train_s']:.2f} s/step "
                    f"({ref['train_s'] / flat['train_s']:.1f}×)")
            if sync:
                line += (f"; sampling at 1000 steps {edm_mol_s:.4f} → {sync:.4f} mol/s "
                         f"({sync / edm_mol_s:.1f}×)")
            few = [(k, v) for k, v in flat["throughput"].items() if k[1] < 1000]
            if few:
                (s, st), v = max(few, key=lambda kv: kv[1])
                line += f"; {s} at {st} steps {v / edm_mol_s:.0f}× EDM's 1000-step throughput"
            L.append(line)
    if r.tricks:
        L.append("")
        L.append("speed tricks, cumulative (sampling call on the same batch; rel. error of ε̂ "
                 "against the float64 plain model, max |Δ| / max |ε̂|)")
        L.append(f"{'preset':8} {'trick':38} {'s/call':>8} {'first call s':>12} {'rel err':>9} "
                 f"{'train s/step':>12}")
        for t in r.tricks:
            tr = f"{t['train_s']:12.3f}" if "train_s" in t else f"{'':>12}"
            L.append(f"{t['preset']:8} {t['trick']:38} {t['call_s']:8.3f} {t['first_call_s']:12.2f} "
                     f"{t['rel_err']:9.1e} {tr}")
        L.append("throughput with bf16 (synchronous sampler, same extrapolation):")
        for t in r.tricks:
            if "bf16" not in t["trick"]:
                continue
            ref = _edm_reference(t["preset"], cfg.device)
            parts = []
            for steps in cfg.sample_steps:
                lp = r.loops.get(("synchronous", steps))
                if lp is None:
                    continue
                mol_s = cfg.sample_batch / (lp["calls"] * t["call_s"] + lp["overhead_s"])
                vs = (f" = {mol_s * ref['sample_step_s'] * 1000 / cfg.sample_batch:.0f}× EDM's "
                      "1000-step" if ref else "")
                parts.append(f"{steps} steps {mol_s:.3f} mol/s{vs}")
            L.append(f"  {t['preset']} {t['trick']}: " + "; ".join(parts))
    return "\n".join(L)


def main(argv=None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="bench_speed", description=__doc__.split("\n\n")[0])
    add_arguments(p)
    return run_from_args(p.parse_args(argv))


def add_arguments(p) -> None:
    p.add_argument("--presets", default=None,
                   help="comma-separated presets (default paper,small; --quick: micro)")
    p.add_argument("--samplers", default="synchronous,manual,adaptive")
    p.add_argument("--sample-steps", default=None, help="step budgets (default 1000,100)")
    p.add_argument("--steps", type=int, default=None,
                   help="network calls timed per configuration (default 5; --quick 1)")
    p.add_argument("--train-reps", type=int, default=None, help="training steps timed (default 3)")
    p.add_argument("--device", default="cpu", help="cpu | cuda")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--no-dense", action="store_true", help="skip the EDM-layout baseline")
    p.add_argument("--tricks", action="store_true", help="time each speed trick separately")
    p.add_argument("--compile", action="store_true", help="include torch.compile in --tricks")
    p.add_argument("--quick", action="store_true", help="tiny sizes: checks that it runs")
    p.add_argument("--update", default="ancestral",
                   help="the samplers' update rule for the throughput table (e.g. sde-dpm2m)")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                   help="the flat layout's sampling precision, as `ead sample` (default auto: bf16 "
                        "on CPUs with AMX); the training step and the dense baseline stay float32")
    p.add_argument("--no-isolate", action="store_true",
                   help="measure in this process (faster; peak memory then mixes measurements)")
    p.add_argument("--check", action="store_true",
                   help="also compare the extrapolation with end-to-end sampling runs (small preset)")
    p.add_argument("--check-model", default=None,
                   help="a trained model folder for --check (random weights diverge; see docs)")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")


def run_from_args(args) -> int:
    import sys

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        from . import EADError

        raise EADError("--device cuda asked for, but no CUDA device is available")
    kw = {"device": args.device, "dense": not args.no_dense, "tricks": args.tricks,
          **({"isolate": False} if args.no_isolate else {}),
          "compile": args.compile, "samplers": tuple(args.samplers.split(",")),
          "precision": args.precision, "update": args.update,
          "log": lambda s: print(f"  [{time.strftime('%H:%M:%S')}] {s}", file=sys.stderr, flush=True)}
    if args.presets:
        bad = [p for p in args.presets.split(",") if p not in PRESETS]
        if bad:
            from . import EADError

            raise EADError(f"unknown preset {bad[0]!r}; choose from {', '.join(PRESETS)}")
        kw["presets"] = tuple(args.presets.split(","))
    if args.sample_steps:
        kw["sample_steps"] = tuple(int(v) for v in args.sample_steps.split(","))
    if args.steps:
        kw["timed_calls"] = args.steps
    if args.train_reps:
        kw["train_reps"] = args.train_reps
    cfg = BenchConfig.quick_config(**kw) if args.quick else BenchConfig(**kw)
    res = run_bench(cfg)
    print(format_report(res))
    if args.check:
        print("\ncheck of the extrapolation (end-to-end run vs calls × s/call + loop overhead):")
        preset = "micro" if args.quick else "small"
        if args.check_model:
            preset = f"model {args.check_model}"
        n_mol, steps = (4, 5) if args.quick else (20, 50)
        for sampler in ("synchronous", "adaptive"):
            c = check_extrapolation("micro" if args.quick else "small", sampler, steps, args.device,
                                    sample_batch=n_mol, model=args.check_model)
            print(f"  {preset} {sampler} {steps} steps, {n_mol} molecules: measured {c['measured_s']:.2f} s,"
                  f" predicted {c['predicted_s']:.2f} s ({c['calls']} calls × {c['call_s']:.4f} s "
                  f"+ loop), error {100 * (c['predicted_s'] / c['measured_s'] - 1):+.0f}%")
    if args.json:
        import json

        payload = {"machine": res.machine, "peak_gflops": res.peak_gflops, "workload": res.workload,
                   "rows": [{k: (v if k != "throughput" else {f"{a}@{b}": t for (a, b), t in v.items()})
                             for k, v in row.items()} for row in res.rows],
                   "loops": {f"{a}@{b}": v for (a, b), v in res.loops.items()},
                   "tricks": res.tricks}
        with open(args.json, "w") as f:
            json.dump(payload, f, indent=1)
    return 0
