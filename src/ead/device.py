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


def has_fast_bf16(device: torch.device) -> bool:
    """True on CPUs with AMX-BF16 tiles (bf16 matrix products ~6.6x the fp32 rate measured here)."""
    if device.type != "cpu":
        return False
    if cpu_flags():
        return "amx_bf16" in cpu_flags()
    probe = getattr(torch.cpu, "_is_amx_tile_supported", None)   # private: other OSes
    return bool(probe()) if probe is not None else False


PRECISIONS = ("auto", "fp32", "bf16")


def resolve_precision(precision: str | None, device: torch.device) -> str | None:
    """The network's sampling precision: None (float32) or "bf16" (bfloat16 autocast).

    "auto" = bf16 on CPUs with AMX, where it is 1.3-1.8x faster per call and the molecules are the
    same in distribution (docs/speed.md: same-seed cells agree within their standard errors); float32
    elsewhere, GPUs included (bf16 there is a speed option, not yet checked for quality)."""
    if precision in (None, "fp32"):
        return None
    if precision == "bf16":
        return "bf16"
    if precision == "auto":
        return "bf16" if has_fast_bf16(device) else None
    raise EADError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")


def device_name(device) -> str:
    """The device in words, as a model card records it."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform

    return f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"
