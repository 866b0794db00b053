#!/usr/bin/env bash
# Resume the training of the shipped QM9 model (issue 5) on this machine's CPU. The run folder is
# committed with its last checkpoint, so every session can continue it; stop it with SIGTERM (it
# checkpoints first), then export with benchmarks/ship_model.sh. A session lent a GPU continues it
# faster with benchmarks/gpu_session.py (batch 256 via --init-from).
# History: training/qm9-small-c9 (CPU, batch 64, 12,228 steps) was continued by --init-from into
# training/qm9-small-c9-gpu (H200, batch 256, 16,876 steps), that into training/qm9-small-c9-cpu5
# (this CPU, batch 64 and lr 1e-4 as EDM: 2.7x more molecules per hour here than batch 256, 0.52 vs
# 5.7 s/step on one thread; 14,153 steps), and that into training/qm9-small-c9-cpu6 (the same, in
# bf16-mixed precision: float32 weights, optimiser and EMA, the network's matrix products in bfloat16
# on this CPU's AMX units — 1.4x faster per step, docs/speed.md; 17,356 steps), that into
# training/qm9-small-c9-gpu2 (H200, batch 256, lr 2e-4 — the square-root rule from 1e-4 at 64 —
# 19,847 steps in two calls of one session), that into training/qm9-small-c9-cpu7 (a CPU again, as
# cpu6; 26,822 steps), that into training/qm9-small-c9-gpu3 (H200, as gpu2: 18,762 steps in two
# calls), and that into training/qm9-small-c9-cpu8 (a CPU, as cpu7). --init-from matters only on the
# first start: afterwards the run resumes its own checkpoint. The exported card lists every stretch.
# Pass --max-hours H to stop in time (it counts this run's earlier hours too).
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=training/qm9-small-c9-cpu8
# bf16-mixed only where the CPU has AMX tiles: elsewhere (e.g. AMD EPYC without AVX-512) bfloat16 is
# emulated and a step took ~8 s instead of ~0.4 s. The weights, optimiser and EMA are float32 either
# way, so the run resumes in either precision. Override with --precision.
PRECISION=32-true
if grep -qw amx_bf16 /proc/cpuinfo 2>/dev/null; then PRECISION=bf16-mixed; fi
exec nohup nice .venv/bin/ead train --data qm9 --preset small --window 9 --lr 1e-4 --batch-size 64 \
  --precision "$PRECISION" --init-from training/qm9-small-c9-gpu3 \
  --max-steps 1000000 --ckpt-every 500 --log-every 100 --val-every 4000 --keep-checkpoints 1 \
  --threads 1 --quiet --accelerator cpu --run-dir "$RUN" "$@" >> "$RUN.out" 2>&1
