#!/usr/bin/env bash
# Resume the training of the shipped QM9 model (issue 5) on this machine's CPU. The run folder is
# committed with its last checkpoint, so every session can continue it; stop it with SIGTERM (it
# checkpoints first), then export with benchmarks/ship_model.sh. A session lent a GPU continues the
# same run faster with benchmarks/gpu_session.py (batch 256, as here).
# History: training/qm9-small-c9 (CPU, batch 64, 12,228 steps) was continued by --init-from into
# training/qm9-small-c9-gpu (H200, batch 256); the exported card lists both stretches.
set -euo pipefail
cd "$(dirname "$0")/.."
exec nohup .venv/bin/ead train --data qm9 --preset small --window 9 --lr 3e-4 --batch-size 256 \
  --max-steps 1000000 --ckpt-every 200 --log-every 50 --val-every 2000 --threads 1 --quiet \
  --accelerator cpu --run-dir training/qm9-small-c9-gpu >> training/qm9-small-c9-gpu.out 2>&1
