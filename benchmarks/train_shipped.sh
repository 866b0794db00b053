#!/usr/bin/env bash
# Resume the training of the shipped QM9 model (issue 5) on this machine's CPU. The run folder is
# committed with its last checkpoint, so every session can continue it; stop it with SIGTERM (it
# checkpoints first), then export with benchmarks/ship_model.sh. A session lent a GPU continues it
# faster with benchmarks/gpu_session.py (batch 256 via --init-from).
# The run it continues is named in training/current_run (one line; ship_model.sh, device_prune.sh
# and gpu_session.py read it too). Each stretch of the lineage starts from the one before with
# --init-from (a new stretch after a GPU one at batch 256: point INIT at it and current_run at a new
# folder); --init-from matters only on the first start: afterwards the run resumes its own
# checkpoint. The exported model's card ("continues" in model/config.json, and docs/model-card.md)
# lists every stretch, so it is not repeated here. CPU stretches use batch 64 and EDM's lr 1e-4
# (2.7x more molecules per hour than batch 256 on one thread here).
# Pass --max-hours H to stop in time (it counts this run's earlier hours too).
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=$(cat training/current_run)
INIT=training/qm9-small-c9-gpu3
# bf16-mixed only where the CPU has AMX tiles: elsewhere (e.g. AMD EPYC without AVX-512) bfloat16 is
# emulated and a step took ~8 s instead of ~0.4 s. The weights, optimiser and EMA are float32 either
# way, so the run resumes in either precision. Override with --precision.
PRECISION=32-true
if grep -qw amx_bf16 /proc/cpuinfo 2>/dev/null; then PRECISION=bf16-mixed; fi
exec nohup nice .venv/bin/ead train --data qm9 --preset small --window 9 --lr 1e-4 --batch-size 64 \
  --precision "$PRECISION" --init-from "$INIT" \
  --max-steps 1000000 --ckpt-every 500 --log-every 100 --val-every 4000 --keep-checkpoints 1 \
  --threads 1 --quiet --accelerator cpu --run-dir "$RUN" "$@" >> "$RUN.out" 2>&1
