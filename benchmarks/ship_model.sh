#!/usr/bin/env bash
# Copy the EMA model of the shipped training run into the package (src/ead/pretrained/qm9) with
# the default sampler settings; then measure it for the card with benchmarks/model_card.py.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/python - <<'PY'
from ead.pipeline import EAD
m = EAD.from_pretrained("training/qm9-small-c9/model")
m.sampler_defaults = {"sampler": "adaptive", "steps": 1000, "spacing": "uniform",
                      "async_ratio": 0.8, "history": 2}
m.save_pretrained("src/ead/pretrained/qm9")
print("shipped", m.card)
PY
