#!/usr/bin/env bash
# Copy the EMA model of the shipped training run into the package (src/ead/pretrained/qm9) with
# the default sampler settings; then measure it for the card (benchmarks/model_card.py, or on a GPU
# scripts/gpu_session.py + benchmarks/sample_grid.py evaluate).
#   bash scripts/ship_model.sh [RUN_DIR | MODEL_DIR]   (default: the run being trained on,
#   named in training/current_run; a run folder's model/ is re-exported at every checkpoint, so copy it
#   aside first when training is running and pass the copy)
# Default sampler: the paper's adaptive sampler (λ = 0.8, w = 2) in the few-step setting, 100 network
# calls with the DPM-Solver++(2M) SDE update and stall lag 1 — the same card quality as 1000 ancestral
# steps at a tenth of the calls (docs/steps_sweep.md). The paper's setting, per command:
#   ead sample --steps 1000 --update ancestral --stall-lag 0
set -euo pipefail
cd "$(dirname "$0")/.."
RUN="${1:-$(cat training/current_run)}"
.venv/bin/python - "$RUN" <<'PY'
import sys
from ead.pipeline import EAD
from pathlib import Path
src = Path(sys.argv[1])
if (src / "checkpoints" / "latest").exists() and not (src / "model" / "config.json").exists():
    from ead.train import export_checkpoint   # a run folder whose model/ was not kept: export it
    export_checkpoint(src, src / "model")
m = EAD.from_pretrained(src / "model" if (src / "model").is_dir() else src)
m.sampler_defaults = {"sampler": "adaptive", "steps": 100, "spacing": "uniform", "update": "sde-dpm2m",
                      "async_ratio": 0.8, "history": 2, "stall_lag": 1}
m.save_pretrained("src/ead/pretrained/qm9")
print("shipped", m.card)
PY
