#!/usr/bin/env bash
# What scripts/gpu_train.sh needs on a GPU machine that holds neither the datasets nor pybullet,
# in one folder of about 43 MB: the body bank, the motions and cameras in one file
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
# A bank with older joint labels (train.synth.body.JOINTS_VERSION) would be refused on the GPU
# machine, after its start: refuse it here, with the command that makes it again.
(cd "$root" && "$py" - "$work/bodies.npz" <<'EOF'
import sys
from pathlib import Path
from train.synth.body import BodyBank
try:
    BodyBank.load(Path(sys.argv[1]))
except (OSError, ValueError) as exc:
    sys.exit(f"error: {exc}")
EOF
) || exit 2
for d in backgrounds real2d_fashion; do
    [ -d "$data/$d" ] || { echo "error: no $data/$d (set POSECAST_DATA to the datasets folder)" >&2; exit 2; }
done
data="$(cd "$data" && pwd)"      # train.motion runs from the repository's root
# The pack is made in a folder beside OUT_DIR and moved into place whole: an interrupted one
# leaves nothing that gpu_carry.sh or gpu_train.sh would take for complete.
parent="$(mkdir -p "$(dirname "$out")" && cd "$(dirname "$out")" && pwd)" ||
    { echo "error: cannot make the folder of $out" >&2; exit 2; }
out="$parent/$(basename "$out")"
tmp="$(mktemp -d "$parent/.gpu_pack.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
cp "$work/bodies.npz" "$tmp/bodies.npz"
(cd "$root" && "$py" -m train.motion "$data" --pack "$tmp/motions.npz" >/dev/null)
cp -r "$data/backgrounds" "$data/real2d_fashion" "$tmp/"
chmod -R u+w "$tmp"
chmod 755 "$tmp"
rm -rf "$out"
mv "$tmp" "$out"
du -sh "$out"
