#!/usr/bin/env bash
# Resume the training of the shipped QM9 model (issue 5) on this machine's CPU. The run folder is
# committed with its last checkpoint, so every session can continue it; stop it with SIGTERM (it
# checkpoints first), then export with benchmarks/ship_model.sh. A session lent a GPU continues it
# faster with benchmarks/gpu_session.py (batch 256 via --init-from).
# History: training/qm9-small-c9 (CPU, batch 64, 12,228 steps) was continued by --init-from into
# training/qm9-small-c9-gpu (H200, batch 256, 16,876 steps), and that into training/qm9-small-c9-cpu5
# (this CPU, batch 64 and lr 1e-4 as EDM: 2.7x more molecules per hour here than batch 256, 0.52 vs
# 5.7 s/step on one thread); the exported card lists every stretch. Pass --max-hours H to stop in time.
set -euo pipefail
cd "$(dirname "$0")/.."
exec nohup nice .venv/bin/ead train --data qm9 --preset small --window 9 --lr 1e-4 --batch-size 64 \
  --max-steps 1000000 --ckpt-every 500 --log-every 100 --val-every 4000 --keep-checkpoints 1 \
  --threads 1 --quiet --accelerator cpu --run-dir training/qm9-small-c9-cpu5 "$@" \
  >> training/qm9-small-c9-cpu5.out 2>&1
