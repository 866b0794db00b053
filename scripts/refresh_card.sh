#!/usr/bin/env bash
# Ship a run of the lineage and measure its model card on this CPU, in one command:
#   bash scripts/refresh_card.sh RUN OUTDIR
# Stop the training first: this needs both cores (on the 2-core AMD EPYC machines 10-20 minutes to
# draw the three samplers' 1,000 molecules two at a time, then 20-45 minutes of PoseBusters: 35 min
# in all and 65 min on two such machines).
#   1. scripts/ship_model.sh RUN: its EMA model becomes src/ead/pretrained/qm9
#   2. OUTDIR/cells.json: the card's cells (each sampler at the model's defaults, seed 0), drawn by
#      two benchmarks/sample_grid.py workers on one thread each (a rerun skips finished cells)
#   3. sample_grid.py evaluate (protocol, connectivity, PoseBusters) → docs/figures/model_card.json
#   4. model_card.py: the table in docs/model-card.md, the measurement added to
#      docs/figures/model_card_history.json (labelled with the model's lineage)
#   5. plot_training.py: docs/figures/training_qm9.png
# The card's prose (training, compute and losses rows, the bar paragraph, the History row) and the
# README's summary are still written by hand. CARD_N=20 tries the wiring in a few minutes (then
# `git checkout` the docs and figures it wrote).
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${1:?usage: refresh_card.sh RUN OUTDIR}
OUT=${2:?usage: refresh_card.sh RUN OUTDIR}
N=${CARD_N:-1000}
PY=.venv/bin/python
[ -f "$RUN/model/config.json" ] || [ -f "$RUN/checkpoints/latest" ] || {
  echo "refresh_card.sh: no exported model or checkpoint in $RUN" >&2; exit 2; }
bash scripts/ship_model.sh "$RUN"
mkdir -p "$OUT"
$PY - "$OUT/cells.json" "$N" <<'PY'
import json, sys
cells = [{"label": f"card-{s}", "model": "src/ead/pretrained/qm9", "sampler": s, "n": int(sys.argv[2]),
          "seeds": [0], "options": {}} for s in ("adaptive", "synchronous", "manual")]
with open(sys.argv[1], "w") as f:
    f.write("[" + ",\n ".join(json.dumps(c) for c in cells) + "]\n")
PY
pids=()
for w in 1 2; do   # the two workers share the list (each claims the next unfinished cell)
  OMP_NUM_THREADS=1 $PY benchmarks/sample_grid.py sample "$OUT/cells.json" --out "$OUT" --device cpu \
    --threads 1 > "$OUT/sample-$w.log" 2>&1 &
  pids+=($!)
done
for p in "${pids[@]}"; do wait "$p"; done
$PY benchmarks/sample_grid.py evaluate "$OUT" --posebusters "$N" --json docs/figures/model_card.json
$PY benchmarks/model_card.py --from-grid docs/figures/model_card.json --update-doc docs/model-card.md \
  --history docs/figures/model_card_history.json
$PY benchmarks/plot_training.py "$RUN" docs/figures/training_qm9.png --points docs/figures/model_card_history.json
echo "card measured: $OUT; edit the card's prose (docs/model-card.md) and README to match"
