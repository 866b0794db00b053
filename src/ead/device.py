"""Devices and numeric precision: which device to run on, and whether this CPU runs bfloat16 fast."""

from __future__ import annotations

import functools
import os

import torch

from .errors import EADError


def resolve_device(device: str | torch.device | None) -> torch.device:
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise EADError("--device cuda asked for, but no CUDA device is available")
    try:
        return torch.device(device)
    except RuntimeError:
        raise EADError(f"unknown device {device!r}; use cpu, cuda or auto") from None


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset:
    """The CPU's feature flags from /proc/cpuinfo (Linux; empty elsewhere), read once."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def has_bf16_units(device: torch.device) -> bool:
    """True on CPUs that multiply bfloat16 matrices in hardware: AMX tiles (Intel Sapphire Rapids
    and later) or AVX-512 BF16 (AMD Zen 4, Intel Cooper Lake). There bf16 is faster than float32
    (docs/speed.md: training steps 1.4x with AMX and 2.0-2.4x with AVX-512 BF16, sampling calls
    1.3-2.2x and 1.7x); elsewhere bfloat16 is emulated and several times slower."""
    if device.type != "cpu":
        return False
    if cpu_flags():
        return bool(cpu_flags() & {"amx_bf16", "avx512_bf16"})
    probe = getattr(torch.cpu, "_is_amx_tile_supported", None)   # private: other OSes
    return bool(probe()) if probe is not None else False


PRECISIONS = ("auto", "fp32", "bf16")


def resolve_precision(precision: str | None, device: torch.device) -> str | None:
    """The network's sampling precision: None (float32) or "bf16" (bfloat16 autocast).

    "auto" = bf16 on CPUs with bfloat16 units (AMX or AVX-512 BF16), where a call is 1.3-2.2x
    faster and the molecules are the same in distribution (docs/speed.md: checked on both kinds,
    same-seed cells agree within their standard errors); float32 elsewhere, GPUs included (bf16
    there is a speed option, not yet checked for quality)."""
    if precision in (None, "fp32"):
        return None
    if precision == "bf16":
        return "bf16"
    if precision == "auto":
        return "bf16" if has_bf16_units(device) else None
    raise EADError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")


def training_precision(precision: str, accelerator: str, saved: str | None = None) -> str:
    """Fabric's training precision for `precision`, resolving "auto": the precision a resumed run
    was trained in (`saved`), else "bf16-mixed" on a CPU with bfloat16 units — where the step is
    1.4-2.4x faster with the float32 loss curve and sampled quality (docs/speed.md) — and
    "32-true" elsewhere, GPUs included (bf16 there is not yet checked for quality)."""
    if precision != "auto":
        return precision
    if saved:
        return saved
    on_cpu = accelerator == "cpu" or (accelerator == "auto" and resolve_device("auto").type == "cpu")
    return "bf16-mixed" if on_cpu and has_bf16_units(torch.device("cpu")) else "32-true"


def device_name(device) -> str:
    """The device in words, as a model card records it."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform

    return f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"


# ---------------------------------------------------------------- CPU threads
# One rule for every verb that computes (`--threads N` overrides it): as many threads as this
# process may use (its CPU affinity, not the machine's core count: containers, taskset, Slurm),
# less the CPUs other processes keep busy right now. torch's default (one thread per core)
# collapses on a loaded machine: 8 molecules took 52-73 s with 2 threads beside one busy process
# on a 2-core machine and 4.3 s with 1 (docs/speed.md, "Threads on a busy machine").
BUSY_WINDOW_S = 0.2   # how long /proc/stat is watched
BUSY_CORE = 0.5       # a CPU counts as taken when others used more than this fraction of it


def usable_cpus() -> set[int]:
    """The CPUs this process may run on."""
    try:
        return set(os.sched_getaffinity(0))
    except (AttributeError, OSError):   # not Linux
        return set(range(os.cpu_count() or 1))


def _cpu_ticks() -> dict[int, tuple[int, int]]:
    """{cpu: (busy ticks, total ticks)} from /proc/stat (Linux; empty elsewhere)."""
    out = {}
    try:
        with open("/proc/stat") as f:
            for line in f:
                if not line.startswith("cpu") or line.startswith("cpu "):
                    continue
                name, *vals = line.split()
                ticks = [int(v) for v in vals[:8]]
                idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)   # idle + iowait
                out[int(name[3:])] = (sum(ticks) - idle, sum(ticks))
    except (OSError, ValueError):
        return {}
    return out


def busy_cpus(cpus: set[int], window: float = BUSY_WINDOW_S) -> float:
    """How many of `cpus` other processes keep busy: the busy fraction of each over `window`
    seconds (this process sleeps meanwhile), summed. 0.0 where /proc/stat cannot be read."""
    import time

    before = _cpu_ticks()
    if not before:
        return 0.0
    time.sleep(window)
    after = _cpu_ticks()
    busy = 0.0
    for c in cpus:
        if c in before and c in after:
            total = after[c][1] - before[c][1]
            busy += (after[c][0] - before[c][0]) / total if total > 0 else 0.0
    return busy


def default_threads(cpus: int | None = None, busy: float | None = None) -> int:
    """The thread count the rule picks: usable CPUs minus those taken (> BUSY_CORE busy), at
    least one. `cpus` and `busy` default to this process's affinity and a measurement now."""
    mine = usable_cpus()
    cpus = len(mine) if cpus is None else cpus
    busy = busy_cpus(mine) if busy is None else busy
    taken = int(busy + (1 - BUSY_CORE))   # rounds at BUSY_CORE: 0.6 busy CPUs take one
    return max(1, cpus - taken)


def set_threads(requested: int | None = None, quiet: bool = False) -> int:
    """Set torch's CPU threads: `requested` (--threads), else OMP_NUM_THREADS when the user set
    it, else `default_threads()`. When the rule chose fewer threads than the cores, says so on
    stderr, and why (an explicit choice is not repeated back); returns the count."""
    import sys

    import torch

    cores = os.cpu_count() or 1
    why = None
    if requested:
        n = int(requested)
    elif os.environ.get("OMP_NUM_THREADS", "").strip().isdigit():
        n = max(1, int(os.environ["OMP_NUM_THREADS"]))
    else:
        mine = usable_cpus()
        busy = busy_cpus(mine)
        n = default_threads(len(mine), busy)
        why = (f"{len(mine)} usable CPUs, {busy:.1f} busy with other processes; "
               f"--threads N to override")
    torch.set_num_threads(n)
    if why and n != cores and not quiet:
        print(f"ead: using {n} CPU thread{'s' if n != 1 else ''} of {cores} cores ({why})",
              file=sys.stderr)
    return n
