#!/usr/bin/env bash
# Resume the training of the shipped QM9 model on this machine's CPU. The run folder is committed
# with its one resumable checkpoint (overwritten in place: --keep-checkpoints 1), so any clone can
# continue it; stop it with SIGTERM (it checkpoints first), then ship with scripts/ship_model.sh.
# On a GPU the same lineage continues with `ead train --init-from RUN --accelerator cuda
# --batch-size 256 --run-dir …` (scripts/gpu_session.py does that on a rented machine).
# The run it continues is named in training/current_run (one line; ship_model.sh, device_prune.sh
# and gpu_session.py read it too). Each stretch of the lineage starts from the one before with
# --init-from, which matters only on the first start: afterwards the run resumes its own checkpoint.
# When current_run names a GPU stretch (batch 256, brought back from gpu_session.py) or a finished
# cooldown stretch (--lr-schedule cosine, benchmarks/cooldown.py), this script
# opens the next CPU stretch itself (training/qm9-small-c9-cpuN, N one above the highest there is,
# --init-from the GPU stretch) and points current_run at it. The exported model's card ("continues"
# in model/config.json, and docs/model-card.md) lists every stretch, so it is not repeated here.
# CPU stretches use batch 64 (2.7x more molecules per hour than batch 256 on one thread here); a new
# one uses lr 5e-5 (NEW_LR), a resumed one keeps the lr its train_config.json records. EDM's lr 1e-4
# served to cpu9; by then its weights were noisier than the batch-256 GPU stretches' (validation loss
# of the raw weights 0.1339 against 0.1319) and the EMA did not catch up: from the same checkpoint,
# lr 5e-5 gave EMA validation loss 0.13145 after 1,000 steps against 0.13154 for 1e-4 (raw 0.1326 vs
# 0.1339; benchmarks/results/learning-rate/).
# Pass --max-hours H to stop in time (it counts this run's earlier hours too).
set -euo pipefail
cd "$(dirname "$0")/.."
LATEST=$(cat training/current_run)
field() { .venv/bin/python -c 'import json,sys; print(json.load(open(sys.argv[1])).get(sys.argv[2], ""))' "$1/train_config.json" "$2"; }
NEW_LR=5e-5
last_step() { local s; s=$(sed -n 's/^step-0*\([0-9][0-9]*\)$/\1/p' "$1/checkpoints/latest" 2>/dev/null || true); echo "${s:-0}"; }
# A CPU stretch is resumed with its own settings, unless it is a cooldown (cosine to 0 at its
# --max-steps) that has reached its end: that one, like a GPU stretch, is continued by a new stretch.
SCHEDULE=constant; MAX_STEPS=1000000
if [ "$(field "$LATEST" batch_size)" = 64 ] && { [ "$(field "$LATEST" lr_schedule)" != cosine ] \
     || [ "$(last_step "$LATEST")" -lt "$(field "$LATEST" max_steps)" ]; }; then
  RUN=$LATEST; INIT=$(field "$LATEST" init_from); LR=$(field "$LATEST" lr); WARMUP=$(field "$LATEST" warmup_steps)
  SCHEDULE=$(field "$LATEST" lr_schedule); MAX_STEPS=$(field "$LATEST" max_steps)
else
  LR=$NEW_LR; WARMUP=0   # the lineage continues from trained weights: no warm-up, as every stretch so far
  last=$(ls -d training/qm9-small-c9-cpu* training/logs/qm9-small-c9-cpu*.csv 2>/dev/null \
    | sed -n 's/.*-cpu\([0-9]*\)\(\.csv\)\{0,1\}$/\1/p' | sort -n | tail -1)
  RUN=training/qm9-small-c9-cpu$(( ${last:-0} + 1 )); INIT=$LATEST
  echo "$RUN" > training/current_run
  echo "new CPU stretch $RUN --init-from $INIT (training/current_run updated)"
fi
# The precision is ead train's default, auto: a new stretch trains in bf16-mixed where the CPU has
# bfloat16 units (AMX tiles or AVX-512 BF16; elsewhere bfloat16 is emulated, ~8 s per step instead
# of ~0.4 s) and in float32 elsewhere; a resumed stretch keeps its own. Override with --precision.
exec nohup nice .venv/bin/ead train --data qm9 --preset small --window 9 --lr "$LR" --warmup-steps "${WARMUP:-0}" --batch-size 64 \
  --init-from "$INIT" --lr-schedule "${SCHEDULE:-constant}" \
  --max-steps "$MAX_STEPS" --ckpt-every 500 --log-every 100 --val-every 4000 --keep-checkpoints 1 \
  --threads 1 --quiet --accelerator cpu --run-dir "$RUN" "$@" >> "$RUN.out" 2>&1
