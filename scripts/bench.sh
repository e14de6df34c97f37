#!/usr/bin/env bash
# Reproduce docs/performance.md: the network alone, then `posecast track` on a 1000x1000 clip.
# Usage: bash scripts/bench.sh [BACKEND]   (default onnxruntime)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup.sh"
cd "$root"
backend="${1:-onnxruntime}"
pc=.venv/bin/posecast
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
lscpu | grep -E "Model name|^CPU\(s\)" || true
echo "== network alone ($backend, 2 threads)"
$pc bench-network --backend "$backend" --threads 2 --batch 1 8 32 --iters 300
echo "== posecast track, 1000x1000, 300 frames (wall time includes start-up)"
$pc make-clip "$work/walk1000.mp4" --size 1000x1000 --frames 300 >/dev/null
# bash's own `time` (GNU time is not always installed): the pipeline's wall time, start-up included.
TIMEFORMAT="wall %R s (start-up included)"
for run in 1 2 3; do
    time ($pc track "$work/walk1000.mp4" -o "$work/w.jsonl" --backend "$backend" --min-score 0 --no-progress 2>&1 \
        | grep -v "note:")
done
echo "== per-stage timings"
$pc track "$work/walk1000.mp4" -o "$work/w.jsonl" --backend "$backend" --min-score 0 --no-progress --stats 2>&1 \
    | grep -v "note:"
echo "== with --overlay (H.264 encode of every frame)"
TIMEFORMAT="wall %R s"
time ($pc track "$work/walk1000.mp4" -o "$work/w.jsonl" --overlay "$work/w.mp4" \
    --backend "$backend" --min-score 0 --no-progress 2>&1 | grep -v "note:")
