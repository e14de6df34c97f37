#!/usr/bin/env bash
# Train on a GPU machine that holds only the repository and a pack (scripts/gpu_pack.sh):
# render people there for RENDER_S seconds on all but two of its cores, then train
# configs/train/gpu.yaml (or CONFIG) for TRAIN_S seconds (the run sets its step count from the rate
# it measures: train.train --time-budget). Everything lands in OUT, in at most eight files:
# model.pt, the run's log.jsonl, data.json and config.json, and logs.tgz (the generators' and the
# run's output).
#   bash scripts/gpu_train.sh PACK OUT [RENDER_S] [TRAIN_S] [CONFIG]
# Rendered images go to $POSECAST_WORK (default ../data beside the repository), synth_gpu_<seed>,
# generator i seeded SEED_BASE + i (SEED_BASE default 1000; a later run takes another, so that it
# renders other people, and its recipe names those folders). STEPS=N trains N steps instead of
# TRAIN_S seconds (to repeat a recorded run). The run goes to
# $POSECAST_WORK/runs/<the recipe's name>. INIT=FILE starts it from FILE instead of the recipe's
# init_from (for a machine that holds only what was carried to it).
# Needs python3 with a CUDA torch, numpy, opencv, pyyaml, tqdm and moderngl with an EGL driver.
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
[ $# -ge 2 ] || { echo "usage: bash scripts/gpu_train.sh PACK OUT [RENDER_S] [TRAIN_S] [CONFIG]" >&2; exit 2; }
pack="$(cd "$1" && pwd)" || { echo "error: no pack folder $1 (bash scripts/gpu_pack.sh $1)" >&2; exit 2; }
out="$2"; render_s="${3:-180}"; train_s="${4:-300}"; config="${5:-configs/train/gpu.yaml}"
py="${PYTHON:-python3}"
seed_base="${SEED_BASE:-1000}"
init=(); [ -n "${INIT:-}" ] && init=(--init-from "$INIT")
work="${POSECAST_WORK:-$root/../data}"
for f in bodies.npz motions.npz backgrounds real2d_fashion; do
    [ -e "$pack/$f" ] || { echo "error: the pack $pack has no $f (bash scripts/gpu_pack.sh)" >&2; exit 2; }
done
logs="$work/gpu_logs"
mkdir -p "$out" "$work" "$logs"
out="$(cd "$out" && pwd)"
trap 'tar czf "$out/logs.tgz" -C "$work" gpu_logs' EXIT
cd "$root"
cores=$(nproc --all)   # before OMP_NUM_THREADS, which nproc obeys
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}" POSECAST_DATA="$pack" POSECAST_WORK="$work" OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
stamp() { echo "[$(date +%T)] $*"; }
t0=$(date +%s)

# 1. Rendering works here (one shard of 20 images), before the cores are spent on it.
gen=(-m train.synth.generate --split train --motions "$pack/motions.npz" --bodies "$pack/bodies.npz" --data "$pack")
if ! timeout 120 "$py" "${gen[@]}" --count 20 --seed 999 --shard-size 20 --out "$work/gpu_smoke" >"$logs/smoke.log" 2>&1; then
    stamp "error: rendering failed here (OpenGL through EGL?); the end of $logs/smoke.log:"; tail -5 "$logs/smoke.log"; exit 3
fi
stamp "rendering works"

# 2. Render on all but two cores for RENDER_S seconds. A generator stopped by the timeout keeps
#    its finished shards (train/shards.py); each process has its own seed, so the sets differ.
procs=$(( cores > 3 ? cores - 2 : 1 ))
for i in $(seq 0 $((procs - 1))); do
    timeout "$render_s" "$py" "${gen[@]}" --count 1000000 --seed $((seed_base + i)) --shard-size 200 \
        --out "$work/synth_gpu_$((seed_base + i))" >"$logs/render_$i.log" 2>&1 &
done
wait
images=$("$py" - "$work" "$seed_base" "$procs" <<'EOF'
import json, sys
from pathlib import Path
work, first, count = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
manifests = [work / f"synth_gpu_{seed}" / "manifest.json" for seed in range(first, first + count)]
print(sum(json.loads(m.read_text())["total"] for m in manifests if m.exists()))
EOF
)
stamp "rendered $images images in $render_s s with $procs processes ($(( images / render_s )) images/s)"
[ "${images:-0}" -gt 0 ] || { stamp "error: no shard of 200 images was finished in $render_s s (give RENDER_S more; see $logs/render_0.log)"; exit 3; }

# 3. The run, for TRAIN_S seconds: it measures its own rate once its loaders and the GPU have
#    settled and sets its step count from it (train/budget.py; a throw-away probe run read a cold
#    start's rate, and the runs sized from it trained for 56-76% of their time). A timeout leaves
#    last.pt, which is split into files of at most 15 MB in OUT.
workers=$(( cores > 4 ? cores - 2 : 2 ))
run="$work/runs/$(basename "$config" .yaml)"; rm -rf "$run"
sizing=(--time-budget "$train_s"); [ -n "${STEPS:-}" ] && sizing=(--steps "$STEPS")
timeout $(( train_s + 90 )) "$py" -m train.train --config "$config" --out "$run" "${init[@]}" --num-workers "$workers" \
    "${sizing[@]}" --no-progress >"$logs/train.log" 2>&1
status=$?
cp "$run"/{log.jsonl,data.json,config.json} "$out/" 2>/dev/null
if [ -f "$run/model.pt" ]; then
    cp "$run/model.pt" "$out/model.pt"
    summary=$("$py" - "$run/log.jsonl" <<'EOF'
import json, statistics, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
plan = next((r["plan"] for r in rows if "plan" in r), None)
# The first record carries the warm-up; a run too short for a second one still reports it.
rates = [r["img_per_s"] for r in rows if r.get("img_per_s")]
rates = rates[1:] or rates
steps = max(r["step"] for r in rows)
how = f"planned at step {plan['hold']} from {plan['steps_per_s']:.1f} steps/s" if plan else "STEPS"
waits = [r["data_wait"] for r in rows if "data_wait" in r]
waits = waits[1:] or waits
wait = f", {100 * statistics.median(waits):.0f}% of the time waiting for data" if waits else ""
print(f"{steps} steps ({how}; median {statistics.median(rates) if rates else 0:.0f} images/s{wait})")
EOF
)
    stamp "trained $summary: $out/model.pt ($(( $(date +%s) - t0 )) s in all)"
else
    [ -f "$run/last.pt" ] && split -b 15M "$run/last.pt" "$out/last.pt.part_"
    stamp "error: the run stopped (exit $status) before its end; the end of $logs/train.log:"; tail -5 "$logs/train.log"; exit 4
fi
