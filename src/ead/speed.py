"""Speed benchmark (`ead bench`): the flat EAD denoiser's training step and sampling on this machine,
and, when run from a checkout, against the dense EDM-layout baseline of benchmarks/edm_baseline.py.

What `ead bench` measures, on the machine it runs on, for each preset:
- a training step at batch 64 (QM9 molecules): loss, backward, gradient clipping, AdamW, EMA;
- a sampling network call for a batch of 100 molecules with sizes drawn from p(M) (EDM's reference
  figure is per step of such a batch), and from it the sampling throughput in molecules/s for each
  sampler at 1000 and 100 steps;
- peak memory (RSS on CPU, sampled every few ms; max allocated on CUDA);
- FLOPs per training step and per network call (matrix products, counted with
  torch.utils.flop_counter.FlopCounterMode) and the fraction of the machine's matmul peak achieved;
- all of it again for a dense implementation in EDM's layout (benchmarks/edm_baseline.py's
  `DenseDenoiser`: molecules padded to [B, M, F], all B·M·M pairs as edges, masks), with the same
  weights, as a ratio. That baseline is benchmark code, outside the library: without a checkout
  (an installed package) the comparison is skipped and the report says where it lives.

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
from torch import nn

from .data.batch import FeatureEncoder, MoleculeSet, center, collate, full_edges, molecule_index
from .data.elements import QM9_TYPES
from .device import cpu_flags, resolve_precision
from .diffusion.loss import TrainingWindow, diffusion_loss
from .diffusion.noise import NoiseSchedule
from .diffusion.sampler import accelerate, run_sampler
from .diffusion.schedules import make_schedule
from .model.build import compile_for_training
from .model.config import DEFAULT_WINDOW, PRESETS, ModelConfig
from .model.egnn import PLAIN, Denoiser, SpeedOptions

# EDM's reference code on this machine kind (2 cores), as measured and quoted in issue 4 — not
# re-measured here: seconds per training step at batch 64, and seconds per sampling step for a
# batch of 100 molecules padded to 29 atoms.
EDM_REFERENCE = {"paper": {"train_s": 13.5, "sample_step_s": 8.1},
                 "small": {"train_s": 2.7, "sample_step_s": 1.05}}
# The EAD paper's own sampling cost on a GPU (issue 4, not re-measured): seconds per molecule.
PAPER_GPU_S_PER_MOL = 0.21
QM9_MAX_ATOMS = 29   # QM9's largest molecule (the synthetic workload's cap; EDM's padding)


def baseline_path() -> str | None:
    """benchmarks/edm_baseline.py of the checkout this package runs from, if there is one."""
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "edm_baseline.py"
    return str(path) if path.is_file() else None


def load_baseline(path: str):
    """The dense EDM-layout baseline module at `path` (loaded by file: it is not part of `ead`)."""
    import importlib.util
    import sys

    name = "ead_bench_edm_baseline"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


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


def train_step_fn(net: Denoiser, batches, device, baseline=None, autocast: str | None = None,
                  fused: bool = True):
    """A callable running one full training step per call (cycling through `batches`): loss of
    Algorithm 1, backward, gradient clipping, AdamW (amsgrad, as training), EMA update. `baseline`:
    the dense EDM-layout module (edm_baseline.py) to compute the loss with, else the flat layout."""
    net = net.to(device).train()
    dense = baseline.DenseDenoiser(net) if baseline is not None else None
    model = net if fused else _unfused(net)
    noise = NoiseSchedule()
    window = TrainingWindow(noise.timesteps, DEFAULT_WINDOW)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4, weight_decay=1e-12, amsgrad=True)
    params = list(net.parameters())
    ema = [p.detach().clone() for p in params]
    batches = [b.to(device) for b in batches]
    state = {"k": 0}
    amp = torch.autocast(torch.device(device).type, dtype=torch.bfloat16) if autocast == "bf16" else nullcontext()

    def step(backward: bool = True):
        b = batches[state["k"] % len(batches)]
        gen = torch.Generator(device).manual_seed(state["k"])
        state["k"] += 1
        with amp:
            if dense is None:
                loss = diffusion_loss(model, noise, window, b, gen)
            else:
                loss = baseline.dense_diffusion_loss(dense, noise, window, b, gen)
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
                 window: int = DEFAULT_WINDOW, seed: int = 0, update: str = "ancestral") -> dict:
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
    dense: bool = True            # also the EDM-layout baseline (needs `baseline`)
    baseline: str | None = None   # the path of benchmarks/edm_baseline.py (None: no dense layout)
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


def _cell_train(preset: str, layout: str, cfg: "BenchConfig", autocast: str | None = None,
                prefix: str = "train") -> dict:
    """One training-step measurement (runs in a fresh process unless cfg.isolate is False)."""
    device = torch.device(cfg.device)
    work = qm9_workload(cfg.train_batch, cfg.sample_batch, 1 if cfg.quick else 4, cfg.seed)
    baseline = load_baseline(cfg.baseline) if layout == "dense" else None
    step = train_step_fn(build(preset, cfg.seed), work.train_batches, device, baseline, autocast)
    with Interference() as busy, PeakMemory(device) as mem:
        ts = _timed(step, cfg.train_reps, device)
    return {f"{prefix}_s": _best(ts), f"{prefix}_all_s": ts, f"{prefix}_peak_mb": mem.peak_mb,
            f"{prefix}_delta_mb": mem.delta_mb, f"{prefix}_gflop": _flops(step) / 1e9,
            f"{prefix}_other_cores": busy.other_cores}


def _cell_train_bf16(preset: str, layout: str, cfg: "BenchConfig") -> dict:
    """The flat layout's training step in bf16 autocast, as `ead train --precision bf16-mixed`."""
    return _cell_train(preset, layout, cfg, "bf16", "train_bf16")


def _cell_sample(preset: str, layout: str, cfg: "BenchConfig") -> dict:
    """One sampling-call measurement on the sampling batch (fresh process unless not isolated)."""
    device = torch.device(cfg.device)
    work = qm9_workload(cfg.train_batch, cfg.sample_batch, 1, cfg.seed)
    net = build(preset, cfg.seed).to(device).eval()
    # the flat layout samples as `ead sample` would here; the EDM-layout baseline stays float32
    autocast = resolve_precision(cfg.precision, device) if layout == "flat" else None
    if layout == "flat":
        denoise = accelerate(net, autocast=autocast)
    else:
        baseline = load_baseline(cfg.baseline)
        denoise = baseline.DenseSamplingDenoiser(baseline.DenseDenoiser(net))
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

    layouts = ["flat", "dense"] if cfg.dense and cfg.baseline else ["flat"]
    for preset in cfg.presets:
        for layout in layouts:
            row = {"preset": preset, "layout": layout}
            row.update(_run_cell(_cell_train, cfg, preset, layout))
            log(f"{preset} {layout}: train {row['train_s']:.3f} s/step "
                f"(all {[round(v, 3) for v in row['train_all_s']]})")
            if layout == "flat" and "bf16" in peak and device.type == "cpu":   # bf16 units: it trains faster so
                row.update(_run_cell(_cell_train_bf16, cfg, preset, layout))
                log(f"{preset} {layout}: train bf16-mixed {row['train_bf16_s']:.3f} s/step "
                    f"(all {[round(v, 3) for v in row['train_bf16_all_s']]})")
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
        if name.startswith(("plain", "+ index_select", "+ bf16", "torch.compile")):   # chunks: inference only
            tnet = build(preset, cfg.seed)
            tnet.speed = speed
            if acc.get("compile"):   # as `ead train --compile`; the first steps compile
                compile_for_training(tnet)
            step = train_step_fn(tnet, work.train_batches, device, None, acc.get("autocast"), fused)
            row["train_s"] = _best(_timed(step, cfg.train_reps, device,
                                          warmup=len(work.train_batches) if acc.get("compile") else 1))
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
    sched = make_schedule(sampler, noise, steps=steps)
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
             f"training float32 (and flat-bf16 = bf16-mixed, where the CPU has bf16 units), flat "
             f"sampling {sp} (--precision {cfg.precision}; the dense EDM "
             "layout float32); each speed trick off/on is in the tricks table. peak RSS = the measuring "
             f"process's peak ({'each measurement in a fresh process' if cfg.isolate else 'one process for all: mixed'}), +MB = rise during the timed "
             "runs; busy = cores that OTHER processes kept busy meanwhile (≫ 0: distrust the row)"
             + (" (--quick: tiny sizes, figures not meaningful)" if cfg.quick else ""))
    if cfg.dense and not cfg.baseline:
        L.append("no dense EDM-layout comparison: its baseline is benchmark code, in a checkout's "
                 "benchmarks/edm_baseline.py (run `ead bench` from a checkout of the repository)")
    pk32 = r.peak_gflops["fp32"]
    L.append("")
    for title, unit, key, prefix in (("training step (loss + backward + clip + AdamW + EMA)", "s/step", "train", "train"),
                                     (f"sampling: one network call on {cfg.sample_batch} molecules", "s/call",
                                      "call", "sample")):
        L.append(title)
        L.append(f"{'preset':8} {'layout':9} {unit:>8} {'GFLOP':>8} {'GFLOP/s':>8} {'%peak':>6} "
                 f"{'peak RSS MB':>11} {'+MB':>7} {'busy':>5}")
        for row in r.rows:
            # the flat layout's bf16-mixed training step, where measured, as a row of its own
            for k, p, label in ((key, prefix, row["layout"]),) + (
                    (("train_bf16", "train_bf16", "flat-bf16"),) if key == "train" and "train_bf16_s" in row else ()):
                secs, gflop = row[f"{k}_s"], row[f"{k}_gflop"]
                # %peak against the peak of the precision the row ran in
                bf16_row = (key == "call" and row["layout"] == "flat" and sp == "bf16") or k == "train_bf16"
                pk = r.peak_gflops.get("bf16", pk32) if bf16_row else pk32
                L.append(f"{row['preset']:8} {label:9} {secs:8.3f} {gflop:8.1f} {gflop / secs:8.1f} "
                         f"{100 * gflop / secs / pk:5.1f}% {row[f'{p}_peak_mb']:11.0f} "
                         f"{row[f'{p}_delta_mb']:7.0f} {row[f'{p}_other_cores']:5.2f}")
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
