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
# TRAIN_S seconds (to repeat a recorded run). While it renders, the training step is timed on the
# GPU (STEP_BENCH, below). The run goes to
# $POSECAST_WORK/runs/<the recipe's name>, started afresh unless RESUME=1. INIT=FILE starts it
# from FILE instead of the recipe's init_from (for a machine that holds only what was carried to
# it). CONFIG and INIT are found from the repository's root (as train.train reads them), else from
# the current folder.
# DEADLINE_S (default 570; a device call is cut at 600 s) bounds the whole script: rendering and
# training are shortened to end by then. A run stopped before its end (its time, the deadline, a
# Ctrl-C or SIGTERM, which reach the renderers and the run) leaves in OUT last_weights.pt (the
# weights of its last checkpoint, which every Posecast command loads) and last.pt in parts of at
# most 15 MB (cat last.pt.part_* > last.pt, into the run folder, and RESUME=1 to go on).
# Needs python3 with a CUDA torch, numpy, opencv, pyyaml, tqdm and moderngl with an EGL driver.
set -uo pipefail
t0=$(date +%s)
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
fail() { echo "error: $*" >&2; exit 2; }
[ $# -ge 2 ] || { echo "usage: bash scripts/gpu_train.sh PACK OUT [RENDER_S] [TRAIN_S] [CONFIG]" >&2; exit 2; }
pack="$(cd "$1" 2>/dev/null && pwd)" || fail "no pack folder $1 (bash scripts/gpu_pack.sh $1)"
out="$2"; render_s="${3:-180}"; train_s="${4:-300}"; config="${5:-configs/train/gpu.yaml}"
deadline_s="${DEADLINE_S:-570}"; seed_base="${SEED_BASE:-1000}"
py="${PYTHON:-python3}"
# `timeout 0` would mean no limit at all, and a word would fail only after rendering.
for pair in "RENDER_S=$render_s" "TRAIN_S=$train_s" "DEADLINE_S=$deadline_s"; do
    [[ ${pair#*=} =~ ^[1-9][0-9]*$ ]] || fail "${pair%%=*} must be a whole number of seconds above 0 (got '${pair#*=}')"
done
[[ $seed_base =~ ^[0-9]+$ ]] || fail "SEED_BASE must be a whole number (got '$seed_base')"
[ -z "${STEPS:-}" ] || [[ $STEPS =~ ^[1-9][0-9]*$ ]] || fail "STEPS must be a whole number above 0 (got '$STEPS')"
bench="${STEP_BENCH:-auto}"
[[ $bench =~ ^(auto|0|1)$ ]] || fail "STEP_BENCH must be auto, 1 or 0 (got '$bench')"
# train.train runs from the repository's root: a path that holds from there is kept as written
# (config.json records it), one that holds only from here is made absolute.
locate() {
    if [[ $1 != /* && -f "$root/$1" ]]; then echo "$1"
    elif [ -f "$1" ]; then echo "$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"
    else return 1; fi
}
found="$(locate "$config")" || fail "no recipe $config (a file of configs/train, from here or from $root)"
config="$found"
init=()
if [ -n "${INIT:-}" ]; then
    init_path="$(locate "$INIT")" || fail "no INIT model file $INIT (from here or from $root)"
    init=(--init-from "$init_path")
fi
for f in bodies.npz motions.npz backgrounds real2d_fashion real2d_fashion/keypoints.json; do
    [ -e "$pack/$f" ] || fail "the pack $pack has no $f (bash scripts/gpu_pack.sh)"
done
work="${POSECAST_WORK:-$root/../data}"
found="$(mkdir -p "$work" 2>/dev/null && cd "$work" && pwd)" || fail "cannot make POSECAST_WORK $work (a folder it can write)"
work="$found"
found="$(mkdir -p "$out" 2>/dev/null && cd "$out" && pwd)" || fail "cannot make OUT $out (a folder it can write)"
out="$found"
logs="$work/gpu_logs"
mkdir -p "$logs" 2>/dev/null || fail "cannot make $logs (a folder it can write)"
trap 'tar czf "$out/logs.tgz" -C "$work" gpu_logs' EXIT
cd "$root"
cores=$(nproc --all)   # before OMP_NUM_THREADS, which nproc obeys
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}" POSECAST_DATA="$pack" POSECAST_WORK="$work" OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
stamp() { echo "[$(date +%T)] $*"; }
left() { echo $(( deadline_s - ($(date +%s) - t0) )); }

# Each `timeout` runs its command in a process group of its own, which a terminal's Ctrl-C never
# reaches: a signal to this script is passed on to them (the run then checkpoints and ends). One
# that comes between them ends the script at the next phase (`go_on`). A command that does not
# end on TERM is killed 20 s later (timeout -k), so the script keeps to its deadline.
children=(); stopped=""
forward() { stopped="$1"; [ ${#children[@]} -eq 0 ] || kill -TERM "${children[@]}" 2>/dev/null; }
go_on() { [ -z "$stopped" ] || { stamp "stopped ($stopped) $1"; exit "$(stopped_code)"; }; }
trap 'forward INT' INT
trap 'forward TERM' TERM
# `wait` returns early when a trap runs: wait again until the process has really ended.
finish() { local st; while :; do wait "$1"; st=$?; kill -0 "$1" 2>/dev/null || return "$st"; done; }
stopped_code() { [ "$stopped" = INT ] && echo 130 || echo 143; }
count_images() {
    "$py" - "$work" "$seed_base" "$procs" <<'EOF'
import json, sys
from pathlib import Path
work, first, count = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
manifests = [work / f"synth_gpu_{seed}" / "manifest.json" for seed in range(first, first + count)]
print(sum(json.loads(m.read_text())["total"] for m in manifests if m.exists()))
EOF
}

# 1. Rendering works here (one shard of 20 images, made afresh), before the cores are spent on it.
gen=(-m train.synth.generate --split train --motions "$pack/motions.npz" --bodies "$pack/bodies.npz" --data "$pack")
rm -rf "$work/gpu_smoke"
timeout -k 10 120 "$py" "${gen[@]}" --count 20 --seed 999 --shard-size 20 --out "$work/gpu_smoke" >"$logs/smoke.log" 2>&1 &
children=($!)
if ! finish "${children[0]}"; then
    go_on "while checking that rendering works"
    stamp "error: rendering failed here (OpenGL through EGL, or a package missing?); the end of $logs/smoke.log:"
    tail -5 "$logs/smoke.log"; exit 3
fi
stamp "rendering works"

# 2. Render on all but two cores for RENDER_S seconds, leaving training at least 150 s before the
#    deadline (its least, 130 s, and the renderers' 20 s to be killed in). A generator stopped by its timeout keeps its finished shards (train/shards.py);
#    each process has its own seed, so the sets differ.
procs=$(( cores > 3 ? cores - 2 : 1 ))
room=$(( $(left) - 150 ))
[ "$room" -ge 10 ] || { stamp "error: DEADLINE_S $deadline_s leaves no time to render and train"; exit 3; }
[ "$render_s" -le "$room" ] || { stamp "rendering for $room s, not $render_s, to end by the deadline"; render_s=$room; }
before=$(count_images)
children=()
go_on "before rendering"
# Training waits for the renderers, which use the GPU only to draw: meanwhile the training
# step's arithmetics and layouts are timed there (train/step_bench.py), on one of the two cores
# the renderers leave. STEP_BENCH: auto (on a CUDA GPU; it ends at once without one), 1 (on
# whatever there is) or 0 (never).
rm -f "$logs/step_bench.log"
# Without NVIDIA's driver there is no GPU to time, known at once: the bench would first have to
# start torch to find out, and a short render cuts it off before it can say so.
if [ "$bench" = auto ] && ! nvidia-smi -L >/dev/null 2>&1; then
    bench=0
fi
if [ "$bench" != 0 ]; then
    device=$([ "$bench" = auto ] && echo cuda || echo auto)
    timeout -k 5 "$render_s" "$py" -m train.step_bench --config "$config" --device "$device" --channels-last \
        --steps 20 --rounds 3 >"$logs/step_bench.log" 2>&1 &
    children+=($!)
fi
for i in $(seq 0 $((procs - 1))); do
    timeout -k 20 "$render_s" "$py" "${gen[@]}" --count 1000000 --seed $((seed_base + i)) --shard-size 200 \
        --out "$work/synth_gpu_$((seed_base + i))" >"$logs/render_$i.log" 2>&1 &
    children+=($!)
done
for pid in "${children[@]}"; do finish "$pid"; done
children=()
go_on "while rendering; the shards finished are kept in $work"
if grep -q "ms/step" "$logs/step_bench.log" 2>/dev/null; then
    stamp "the training step, timed while rendering (python -m train.step_bench; cut off where rendering ended first):"
    grep -E "ms/step|crops, on" "$logs/step_bench.log"
elif [ "$bench" = 1 ] || { [ "$bench" = auto ] && ! grep -q "sees no CUDA GPU" "$logs/step_bench.log"; }; then
    stamp "the training step's timing gave no figure; the end of $logs/step_bench.log:"
    tail -3 "$logs/step_bench.log"
fi
images=$(count_images)
new=$(( images - before ))
stamp "rendered $new images in $render_s s with $procs process$([ "$procs" -eq 1 ] || echo es) ($(( new / render_s )) images/s; $images in synth_gpu_$seed_base.. in all)"
[ "${images:-0}" -gt 0 ] || { stamp "error: no shard of 200 images was finished in $render_s s (give RENDER_S more; see $logs/render_0.log)"; exit 3; }

# 3. The run, for TRAIN_S seconds: it measures its own rate once its loaders and the GPU have
#    settled and sets its step count from it (train/budget.py; a throw-away probe run read a cold
#    start's rate, and the runs sized from it trained for 56-76% of their time). Its start and
#    its end (validation, the model's file) take up to 90 s more, all within the deadline.
workers=$(( cores > 4 ? cores - 2 : 2 ))
run="$work/runs/$(basename "$config" .yaml)"
[ -n "${RESUME:-}" ] || rm -rf "$run"
limit=$(left)
[ "$limit" -ge 130 ] || { stamp "error: the deadline leaves $limit s, too little to train"; exit 3; }
# The run's start and end get 90 s, and a run that does not end on TERM 20 s more.
budget=$(( train_s < limit - 110 ? train_s : limit - 110 ))
[ "$budget" -eq "$train_s" ] || [ -n "${STEPS:-}" ] || stamp "training for $budget s, not $train_s, to end by the deadline"
sizing=(--time-budget "$budget"); [ -n "${STEPS:-}" ] && sizing=(--steps "$STEPS")
go_on "before training"
timeout -k 20 $(( limit - 20 )) "$py" -m train.train --config "$config" --out "$run" "${init[@]}" --num-workers "$workers" \
    "${sizing[@]}" --no-progress >"$logs/train.log" 2>&1 &
children=($!)
finish "${children[0]}"
status=$?
children=()
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
    exit 0
fi
case "$status" in
    124) why="ran out of its $limit s (the deadline)" ;;
    130|143) why="was stopped (${stopped:-a signal})" ;;
    *) why="stopped (exit $status) before its end" ;;
esac
stamp "error: the run $why; the end of $logs/train.log:"; tail -5 "$logs/train.log"
if [ -f "$run/last.pt" ]; then
    split -b 15M "$run/last.pt" "$out/last.pt.part_"
    step=$("$py" - "$run/last.pt" "$out/last_weights.pt" <<'EOF'
import sys

import torch

blob = torch.load(sys.argv[1], map_location="cpu", weights_only=True)
step = blob.pop("training")["step"]          # the optimizer's state: last.pt's parts keep it
torch.save(blob, sys.argv[2])
print(step)
EOF
) && stamp "its last checkpoint (step $step) is in $out/last_weights.pt, and last.pt in parts beside it"
fi
[ -z "$stopped" ] || exit "$(stopped_code)"
exit 4
