"""The training step, eager against `ead train --compile`, per preset, in one run on one machine.

Each preset's step (Algorithm 1's loss, backward, clipping, AdamW, EMA: `ead.speed.train_step_fn`)
runs on the same QM9 batches (batch 64), float32, with a fixed number of torch threads, timed as the
best of `--reps` steps after warm-up steps that cover every batch (for the compiled network: every
compilation). FLOPs are counted by torch's FlopCounterMode; %peak is against the best float32
2048³ matrix product on the same threads.

    python benchmarks/train_speed.py [--presets tiny,small,paper] [--threads 1] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch

from ead.model.build import compile_for_training
from ead.speed import _flops, build, machine_info, matmul_peak, qm9_workload, train_step_fn


def time_step(preset: str, compiled: bool, work, reps: int) -> dict:
    net = build(preset)
    if compiled:
        compile_for_training(net)
    step = train_step_fn(net, work.train_batches, "cpu")
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
    return {"preset": preset, "compiled": compiled, "s_per_step": best, "median_s": sorted(times)[reps // 2],
            "gflop": gflop, "gflops": gflop / best, "warmup_s": warm}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", default="tiny,small,paper")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--reps", type=int, default=8)
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    info = machine_info("cpu")
    peak = matmul_peak("cpu", torch.float32)
    work = qm9_workload(64, 8, 4)
    rows = []
    for preset in a.presets.split(","):
        for compiled in (False, True):
            rows.append(time_step(preset, compiled, work, a.reps))
            r = rows[-1]
            print(f"{preset:6} {'compiled' if compiled else 'eager':8} {r['s_per_step']:.3f} s/step "
                  f"(median {r['median_s']:.3f}) {r['gflops']:.1f} GFLOP/s {100 * r['gflops'] / peak:.0f}% of peak",
                  file=sys.stderr, flush=True)
    print(f"machine: {info['cpu']}, {a.threads} thread(s), float32; matmul peak {peak:.0f} GFLOP/s; batch 64 QM9")
    print("| preset | GFLOP/step | eager s/step | compiled s/step | speed-up | eager %peak | compiled %peak |")
    print("|---|---|---|---|---|---|---|")
    for preset in a.presets.split(","):
        e, c = (next(r for r in rows if r["preset"] == preset and r["compiled"] == x) for x in (False, True))
        print(f"| {preset} | {e['gflop']:.1f} | {e['s_per_step']:.3f} | {c['s_per_step']:.3f} | "
              f"{e['s_per_step'] / c['s_per_step']:.2f}× | {100 * e['gflops'] / peak:.0f} % | {100 * c['gflops'] / peak:.0f} % |")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"machine": info, "threads": a.threads, "peak_fp32_gflops": peak, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
