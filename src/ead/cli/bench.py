"""`ead bench`: the speed of this machine's training step and sampling (ead/speed.py), against the
dense EDM-layout baseline when run from a checkout (benchmarks/edm_baseline.py)."""

from __future__ import annotations

import sys
import time

from ..errors import EADError
from .common import add_threads_flag


HELP = "speed: training step, sampling throughput, memory, FLOPs, vs EDM layout"


def add(sub):
    from ..device import PRECISIONS   # torch: loaded for this verb only

    p = sub.add_parser("bench", help=HELP,
                       description="Time the denoiser on this machine (paper and small presets) "
                       "against a dense EDM-layout baseline with the same weights (from a checkout: "
                       "benchmarks/edm_baseline.py). Sampling throughput is extrapolated from timed "
                       "network calls (the output says so).")
    p.add_argument("--presets", default=None,
                   help="comma-separated presets (default paper,small; --quick: micro)")
    p.add_argument("--samplers", default="synchronous,manual,adaptive")
    p.add_argument("--sample-steps", default=None, help="step budgets (default 1000,100)")
    p.add_argument("--steps", type=int, default=None,
                   help="network calls timed per configuration (default 5; --quick 1)")
    p.add_argument("--train-reps", type=int, default=None, help="training steps timed (default 3)")
    p.add_argument("--device", default="cpu", help="cpu | cuda")
    add_threads_flag(p)
    p.add_argument("--no-dense", action="store_true", help="skip the EDM-layout baseline")
    p.add_argument("--tricks", action="store_true", help="time each speed trick separately")
    p.add_argument("--compile", action="store_true", help="include torch.compile in --tricks")
    p.add_argument("--quick", action="store_true", help="tiny sizes: checks that it runs")
    p.add_argument("--update", default="ancestral",
                   help="the samplers' update rule for the throughput table (e.g. sde-dpm2m)")
    p.add_argument("--precision", choices=list(PRECISIONS), default="auto",
                   help="the flat layout's sampling precision, as `ead sample` (default auto: bf16 "
                        "on CPUs with AMX or AVX-512 BF16); the training step and the dense baseline stay float32")
    p.add_argument("--no-isolate", action="store_true",
                   help="measure in this process (faster; peak memory then mixes measurements)")
    p.add_argument("--check", action="store_true",
                   help="also compare the extrapolation with end-to-end sampling runs (small preset)")
    p.add_argument("--check-model", default=None,
                   help="a trained model folder for --check (random weights diverge; see docs)")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    p.set_defaults(func=run)


def run(args) -> int:
    import torch

    from ..model.config import PRESETS
    from ..speed import (BenchConfig, baseline_path, check_extrapolation, format_report,
                         run_bench)

    from ..device import set_threads

    set_threads(args.threads)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise EADError("--device cuda asked for, but no CUDA device is available")
    kw = {"device": args.device, "dense": not args.no_dense, "baseline": baseline_path(), "tricks": args.tricks,
          **({"isolate": False} if args.no_isolate else {}),
          "compile": args.compile, "samplers": tuple(args.samplers.split(",")),
          "precision": args.precision, "update": args.update,
          "log": lambda s: print(f"  [{time.strftime('%H:%M:%S')}] {s}", file=sys.stderr, flush=True)}
    if args.presets:
        bad = [p for p in args.presets.split(",") if p not in PRESETS]
        if bad:
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
