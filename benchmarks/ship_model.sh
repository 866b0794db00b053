#!/usr/bin/env bash
# Copy the EMA model of the shipped training run into the package (src/ead/pretrained/qm9) with
# the default sampler settings; then measure it for the card (benchmarks/model_card.py, or on a GPU
# benchmarks/gpu_session.py + benchmarks/sample_grid.py evaluate).
#   bash benchmarks/ship_model.sh [RUN_DIR]   (default: the run being trained on, training/qm9-small-c9-cpu5;
#   the model shipped now came from training/qm9-small-c9-gpu)
set -euo pipefail
cd "$(dirname "$0")/.."
RUN="${1:-training/qm9-small-c9-cpu5}"
.venv/bin/python - "$RUN" <<'PY'
import sys
from ead.pipeline import EAD
m = EAD.from_pretrained(f"{sys.argv[1]}/model")
m.sampler_defaults = {"sampler": "adaptive", "steps": 1000, "spacing": "uniform",
                      "async_ratio": 0.8, "history": 2}
m.save_pretrained("src/ead/pretrained/qm9")
print("shipped", m.card)
PY
