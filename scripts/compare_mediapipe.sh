#!/usr/bin/env bash
# Posecast against MediaPipe Pose on the same real photos and rendered clips (docs/results.md,
# "Against MediaPipe Pose"). MediaPipe is never a dependency of Posecast: it forces numpy<2 and
# protobuf<5, so it gets its own virtual environment, .venv-mediapipe, made here.
#
#   bash scripts/compare_mediapipe.sh OUT [CLIPS_TUNE CLIPS_EVAL...]
#
# OUT: a working folder outside the repository. With clip folders (python -m train.synth.clip),
# the first fits MediaPipe's joints to Human3.6M's and the others are scored. Needs the datasets
# folder (../shared/datasets or POSECAST_DATA) and Posecast's .venv (bash scripts/setup.sh).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
[ $# -ge 1 ] || { echo "usage: bash scripts/compare_mediapipe.sh OUT [CLIPS_TUNE CLIPS_EVAL...]" >&2; exit 2; }
out="$(mkdir -p "$1" && cd "$1" && pwd)"
shift
clips=()
for c in "$@"; do clips+=("$(cd "$c" && pwd)"); done
py="$root/.venv/bin/python"
[ -x "$py" ] || { echo "compare_mediapipe: no .venv: run bash scripts/setup.sh first" >&2; exit 2; }
mpv="$root/.venv-mediapipe"
# The stamp is written only once the install has worked: a failed one is tried again next time.
if [ ! -f "$mpv/.installed" ]; then
    python3 -m venv "$mpv"
    # 0.10.14: the last release whose wheel carries the pose models (nothing is downloaded at run time).
    "$mpv/bin/python" -m pip install --quiet 'mediapipe==0.10.14' 'numpy<2' 'opencv-contrib-python<4.11' ||
        { echo "compare_mediapipe: cannot install mediapipe 0.10.14 into $mpv (it has wheels for Python 3.9-3.12)" >&2; exit 3; }
    touch "$mpv/.installed"
fi
mp=("$mpv/bin/python" "$root/scripts/mediapipe_poses.py")
cd "$root"

"$py" scripts/compare_mediapipe.py prepare "$out"
evals=()
for set in held_out backs; do
    for protocol in crop full; do
        # Always run again (seconds): the lists are rewritten by prepare, and a kept result of an
        # older list would be scored against the wrong photos. A clip's result is named by its clip.
        "${mp[@]}" images "$out/${set}_$protocol.txt" "$out/mp_${set}_$protocol.npz"
    done
    "$py" -m streamer.cli track "$out/$set" -o "$out/posecast_$set.jsonl" --no-progress
    files=()
    [ "$set" = backs ] && files=(--real-files train/real_back_views.txt)
    "$py" -m train.evaluate --model engines/weights/default.pt --flip-test all --align weighted --no-progress \
        --real2d "${POSECAST_DATA:-$root/../shared/datasets}/real2d_fashion" "${files[@]}" \
        --json "$out/evaluate_$set.json" > /dev/null
    evals+=("$set=$out/evaluate_$set.json")
done
for c in "${clips[@]}"; do
    key="$("$py" scripts/compare_mediapipe.py cache-name "$c")"      # as the .py keeps its own results
    mkdir -p "$out/mp_clips/$key"
    for v in "$c"/clip_*.mp4; do
        o="$out/mp_clips/$key/$(basename "${v%.mp4}").npz"
        [ -f "$o" ] || "${mp[@]}" video "$v" "$o"
    done
done
if [ ${#clips[@]} -gt 0 ]; then
    "$py" scripts/compare_mediapipe.py track-clips "$out" --clips "${clips[@]}"
fi
"$py" scripts/compare_mediapipe.py score "$out" --evaluate-json "${evals[@]}" --clips "${clips[@]}" --json "$out/scores.json"
