#!/usr/bin/env bash
# Resume the training of the shipped QM9 model (issue 5). The run folder is committed, with its
# last checkpoint, so every session can continue it; stop it with SIGTERM (it checkpoints first),
# then export with benchmarks/ship_model.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
exec nohup .venv/bin/ead train --data qm9 --preset small --window 9 --lr 3e-4 \
  --max-steps 1000000 --ckpt-every 500 --log-every 100 --val-every 2000 --sample-every 2000 --threads 1 --quiet \
  --run-dir training/qm9-small-c9 >> training/qm9-small-c9.out 2>&1
