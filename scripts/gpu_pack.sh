#!/usr/bin/env bash
# What scripts/gpu_train.sh needs on a GPU machine that holds neither the datasets nor pybullet,
# in one folder of about 46 MB: the body bank, the motions and cameras in one file
# (python -m train.motion --pack), the background photos and the real photos.
#   bash scripts/gpu_pack.sh OUT_DIR
# Reads the body bank from $POSECAST_WORK (default ../data) and the datasets from $POSECAST_DATA
# (default ../shared/datasets).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
[ $# -eq 1 ] || { echo "usage: bash scripts/gpu_pack.sh OUT_DIR" >&2; exit 2; }
out="$1"
work="${POSECAST_WORK:-$root/../data}"
data="${POSECAST_DATA:-$root/../shared/datasets}"
py="${PYTHON:-$root/.venv/bin/python}"
[ -f "$work/bodies.npz" ] || { echo "error: no body bank at $work/bodies.npz (python -m train.synth.body --out $work/bodies.npz --bodies 120)" >&2; exit 2; }
for d in backgrounds real2d_fashion; do
    [ -d "$data/$d" ] || { echo "error: no $data/$d (set POSECAST_DATA to the datasets folder)" >&2; exit 2; }
done
mkdir -p "$out"
cp "$work/bodies.npz" "$out/bodies.npz"
(cd "$root" && "$py" -m train.motion "$data" --pack "$out/motions.npz" >/dev/null)
rm -rf "$out/backgrounds" "$out/real2d_fashion"
cp -r "$data/backgrounds" "$data/real2d_fashion" "$out/"
chmod -R u+w "$out"
du -sh "$out"
