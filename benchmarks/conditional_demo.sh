#!/usr/bin/env bash
# Conditional generation end to end (docs/conditional.md): sample a conditional model with targets
# drawn as EDM's protocol draws them, and at three fixed targets, then score every file with a
# property predictor. Defaults: the α demo's run folders (training/qm9-small-c9-alpha,
# training/predictor-alpha: retrain them or restore them from git, docs/conditional.md); the
# few-step sampler (100 steps, sde-dpm2m, no corrector), float32, seed 0; SAMPLER_ARGS "" samples with the model's
# own sampler defaults instead (those of the shipped qm9 model, once set on the folder), and
# "--guide qm9 --guidance W" adds classifier-free guidance by the unconditional model to them.
#   bash benchmarks/conditional_demo.sh [MODEL_DIR PREDICTOR_DIR OUT_DIR N "T1 T2 T3" "SAMPLER_ARGS"]
# A cell whose score is in OUT_DIR is not sampled again; ONLY=drawn or ONLY=targets runs one part.
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL="${1:-training/qm9-small-c9-alpha/model}"
PRED="${2:-training/predictor-alpha/model}"
OUT="${3:-benchmarks/results/conditional-alpha}"
N="${4:-1000}"
TARGETS="${5:-60 75 90}"
PROP=$(.venv/bin/python -c "import json,sys; print(json.load(open(sys.argv[1]))['predictor']['property'])" "$PRED/config.json")
SAMPLER=(${6---steps 100 --update sde-dpm2m --stall-lag 1 --corrector-steps 0})
FEW=("${SAMPLER[@]}" --precision fp32 --seed 0 --quiet)
mkdir -p "$OUT"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
# one file of samples and its score; a score already there is kept (a stopped demo continues, and
# the cells can run side by side: each is one call of this script with TARGETS / ONLY narrowed)
cell() {   # NAME N [ead sample options…]
  local name=$1 n=$2; shift 2
  [ -s "$OUT/$name.json" ] && return 0
  .venv/bin/ead sample --model "$MODEL" -n "$n" -o "$OUT/$name.sdf" "$@" "${FEW[@]}"
  .venv/bin/ead evaluate "$OUT/$name.sdf" --predictor "$PRED" --json \
    $([ "$name" = drawn ] || echo --reference none) > "$OUT/$name.json.tmp"
  mv "$OUT/$name.json.tmp" "$OUT/$name.json"
}
[ "${ONLY:-all}" = targets ] || cell drawn "$N"
if [ "${ONLY:-all}" != drawn ]; then
  for t in $TARGETS; do cell "$PROP-$t" $((N / 4)) --condition "$PROP=$t"; done
fi
.venv/bin/python - "$OUT" <<'PY'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
print("| samples | n | target mean | predicted mean | MAE [95 %] | shuffled | atom count only | MAE − atom count only [95 %] | predictor test | mol. stab. | valid |")
print("|---|---|---|---|---|---|---|---|---|---|---|")
for f in sorted(out.glob("*.json")):
    r = json.loads(f.read_text()); p = r["property"]
    lo, hi = p["mae_interval"]; d, dlo, dhi = p["vs_size_only"]
    print(f"| {f.stem} | {p['num_molecules']} | {p['target_mean']:.2f} | {p['predicted_mean']:.2f} | "
          f"{p['mae']:.2f} [{lo:.2f}, {hi:.2f}] | {p['shuffled_mae']:.2f} | {p['size_only_mae']:.2f} | "
          f"{d:+.2f} [{dlo:+.2f}, {dhi:+.2f}] | {p['predictor_test_mae']:.2f} | "
          f"{100 * r['molecule_stability']:.1f} | {100 * r['validity']:.1f} |")
PY
