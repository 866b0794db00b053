#!/usr/bin/env bash
# Copy the EMA model of the shipped training run into the package (src/ead/pretrained/NAME, default
# qm9; qm9-fragment is the fine-tune trained with held fragments) with the default sampler
# settings; then measure it for the card (benchmarks/model_card.py, or on a GPU
# scripts/gpu_session.py + benchmarks/sample_grid.py evaluate).
#   bash scripts/ship_model.sh [RUN_DIR | MODEL_DIR] [NAME]   (default: the run being trained on,
#   named in training/current_run; a run folder's model/ is re-exported at every checkpoint, so copy it
#   aside first when training is running and pass the copy)
# The sampler defaults stay those of the model shipped now under NAME (its config.json's
# sampler_defaults, the one source of truth, changed only on a measured win: docs/autoguidance.md and
# docs/model-card.md; a new NAME starts from qm9's).
# The paper's setting, per command:
#   ead sample --steps 1000 --update ancestral --stall-lag 0 --corrector-steps 0
set -euo pipefail
cd "$(dirname "$0")/.."
RUN="${1:-$(cat training/current_run)}"
NAME="${2:-qm9}"
.venv/bin/python - "$RUN" "$NAME" <<'PY'
import sys
from ead.pipeline import EAD
from pathlib import Path
src = Path(sys.argv[1])
if (src / "checkpoints" / "latest").exists():
    from ead.train import export_checkpoint   # the checkpoint is the source: a fresh export, fresh card
    export_checkpoint(src, src / "model")
m = EAD.from_pretrained(src / "model" if (src / "model").is_dir() else src)
shipped = Path(f"src/ead/pretrained/{sys.argv[2]}")   # the name's own defaults (qm9-fragment keeps its own)
m.sampler_defaults = EAD.from_pretrained(shipped if shipped.is_dir() else "src/ead/pretrained/qm9").sampler_defaults
m.save_pretrained(f"src/ead/pretrained/{sys.argv[2]}")
print("shipped", sys.argv[2], m.card)
PY
