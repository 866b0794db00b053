"""The training step per preset and mode (eager or `ead train --compile`; float32 or bf16-mixed),
in one run on one machine.

Each preset's step (Algorithm 1's loss, backward, clipping, AdamW, EMA: `ead.speed.train_step_fn`)
runs on the same QM9 batches (batch 64) with a fixed number of torch threads, timed as the best of
`--reps` steps after warm-up steps that cover every batch (for the compiled network: every
compilation). bf16 = the network in bfloat16 autocast with float32 weights, as `--precision
bf16-mixed`. FLOPs are counted by torch's FlopCounterMode; %peak is against the best 2048³ matrix
product of the step's precision on the same threads.

    python benchmarks/train_speed.py [--presets tiny,small,paper] [--modes eager-fp32,compiled-fp32]
                                     [--threads 1] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch

from ead.model.build import compile_for_training
from ead.speed import _flops, build, machine_info, matmul_peak, qm9_workload, train_step_fn


def time_step(preset: str, compiled: bool, work, reps: int, precision: str = "fp32") -> dict:
    net = build(preset)
    if compiled:
        compile_for_training(net)
    step = train_step_fn(net, work.train_batches, "cpu", autocast="bf16" if precision == "bf16" else None)
    t0 = time.perf_counter()
    for _ in range(len(work.train_batches)):   # warm-up: every batch shape once (and compilation)
        step()
    warm = time.perf_counter() - t0
    times = []
    for _ in range(reps):
        t1 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t1)
    gflop = _flops(step) / 1e9
    best = min(times)
    return {"preset": preset, "compiled": compiled, "precision": precision, "s_per_step": best, "median_s": sorted(times)[reps // 2],
            "gflop": gflop, "gflops": gflop / best, "warmup_s": warm}


MODES = ("eager-fp32", "compiled-fp32", "eager-bf16", "compiled-bf16")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", default="tiny,small,paper")
    p.add_argument("--modes", default="eager-fp32,compiled-fp32", help=f"comma-separated, of {', '.join(MODES)}")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--reps", type=int, default=8)
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    modes = a.modes.split(",")
    if not set(modes) <= set(MODES):
        p.error(f"--modes: choose from {', '.join(MODES)}")
    torch.set_num_threads(a.threads)
    info = machine_info("cpu")
    peaks = {prec: matmul_peak("cpu", dtype) for prec, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16))
             if any(m.endswith(prec) for m in modes)}
    work = qm9_workload(64, 8, 4)
    rows = []
    for preset in a.presets.split(","):
        for mode in modes:
            how, prec = mode.split("-")
            rows.append(time_step(preset, how == "compiled", work, a.reps, prec))
            r = rows[-1]
            print(f"{preset:6} {mode:13} {r['s_per_step']:.3f} s/step (median {r['median_s']:.3f}) "
                  f"{r['gflops']:.1f} GFLOP/s {100 * r['gflops'] / peaks[prec]:.0f}% of the {prec} peak",
                  file=sys.stderr, flush=True)
    print(f"machine: {info['cpu']} (bf16 hardware: {info.get('bf16_hw')}), {a.threads} thread(s); matmul peak "
          + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in peaks.items()) + "; batch 64 QM9")
    print("| preset | GFLOP/step | " + " | ".join(f"{m} s/step" for m in modes) + " | "
          + " | ".join(f"{m} %peak" for m in modes) + " | speed-up vs " + modes[0] + " |")
    print("|---|---|" + "---|" * (2 * len(modes) + 1))
    for preset in a.presets.split(","):
        rs = [next(r for r in rows if r["preset"] == preset and f"{'compiled' if r['compiled'] else 'eager'}-"
                   f"{r['precision']}" == m) for m in modes]
        print(f"| {preset} | {rs[0]['gflop']:.1f} | " + " | ".join(f"{r['s_per_step']:.3f}" for r in rs) + " | "
              + " | ".join(f"{100 * r['gflops'] / peaks[r['precision']]:.0f} %" for r in rs) + " | "
              + ", ".join(f"{rs[0]['s_per_step'] / r['s_per_step']:.2f}×" for r in rs[1:]) + " |")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"machine": info, "threads": a.threads, "peak_gflops": peaks, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
