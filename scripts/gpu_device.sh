#!/usr/bin/env bash
# Run on the GPU machine, from the repository root of a carried checkout (scripts/gpu_carry.sh
# made .gpu, .gl and .whl): unpack the OpenGL libraries, install moderngl into /tmp/site, point EGL
# at NVIDIA's driver, then train with scripts/gpu_train.sh. One command per device call:
#   bash scripts/gpu_device.sh OUT [RENDER_S] [TRAIN_S] [CONFIG]
# INIT (default engines/weights/default.pt, the shipped weights), SEED_BASE, STEPS, RESUME,
# DEADLINE_S and POSECAST_WORK (default /tmp/work) pass through to gpu_train.sh. DEADLINE_S (570 s)
# counts from gpu_train.sh's start, after the few seconds of unpacking here.
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
[ $# -ge 1 ] || { echo "usage: bash scripts/gpu_device.sh OUT [RENDER_S] [TRAIN_S] [CONFIG]" >&2; exit 2; }
for d in .gpu/pack .gl .whl; do
    [ -e "$d" ] || { echo "error: no $d in the carried checkout (bash scripts/gpu_carry.sh here, then carry .gpu, .gl and .whl)" >&2; exit 2; }
done
for want in ".gl/*.deb" ".whl/*.whl"; do
    # shellcheck disable=SC2086 # the pattern is meant to expand
    ls $want >/dev/null 2>&1 || { echo "error: no $want in the carried checkout (bash scripts/gpu_carry.sh here makes them)" >&2; exit 2; }
done
py="${PYTHON:-python3}"
for f in .gl/*.deb; do
    err=$(dpkg -x "$f" / 2>&1) || { echo "error: cannot unpack $f (${err##*$'\n'}): dpkg -x needs to write to /" >&2; exit 3; }
done
ldconfig 2>/dev/null || true
err=$("$py" -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl 2>&1) ||
    { echo "error: cannot install the wheels of .whl for $("$py" --version 2>&1) (${err##*$'\n'}): set GPU_PYTHON_VERSION for gpu_carry.sh" >&2; exit 3; }
export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
vendor=/usr/local/nvidia/share/glvnd/egl_vendor.d/10_nvidia.json
[ -f "$vendor" ] && export __EGL_VENDOR_LIBRARY_FILENAMES="$vendor"
export INIT="${INIT:-engines/weights/default.pt}" POSECAST_WORK="${POSECAST_WORK:-/tmp/work}" PYTHON="$py"
exec bash scripts/gpu_train.sh .gpu/pack "$@"
