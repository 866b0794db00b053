#!/usr/bin/env bash
# Make the working tree small enough to travel to a lent GPU machine (64 MiB in all, with the
# carried QM9 pack of 24.7 MB): delete, from the working tree only, what scripts/gpu_session.py
# does not read — committed results and every run folder but the one it continues.
#   bash scripts/device_prune.sh [KEEP_RUN]      (default: training/current_run)
#   bash scripts/device_prune.sh --restore       (brings back the deleted tracked files only,
#                                                    so a running training's files are left alone)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--restore" ]; then
  git ls-files -z --deleted | xargs -0 -r git checkout --
  echo "restored; $(git ls-files --deleted | wc -l) tracked files still missing"
  exit 0
fi
KEEP="${1:-$(cat training/current_run)}"
KEEP="${KEEP%/}"
[ -d "$KEEP" ] || { echo "no run folder $KEEP" >&2; exit 2; }
rm -rf benchmarks/results/*/
for d in training/*/; do
  [ "${d%/}" = "$KEEP" ] || [ "${d%/}" = training/logs ] || rm -rf "$d"
done
tracked=$( (git ls-files -z | xargs -0 du -cb 2>/dev/null || true) | tail -1 | cut -f1)   # deleted ones fail du
pack=$( (du -cb .devcache 2>/dev/null || echo 0) | tail -1 | cut -f1)
echo "kept $KEEP; tracked files left $((tracked / 1000000)) MB + .devcache $((pack / 1000000)) MB (limit 67 MB)"
