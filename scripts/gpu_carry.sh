#!/usr/bin/env bash
# Everything a GPU machine without the datasets, OpenGL libraries or moderngl needs, in the
# checkout's ignored folders that a device call carries (docs/results.md, "The shipped model",
# "Why a GPU, and how little can travel"): .gpu/pack (scripts/gpu_pack.sh, 43 MB), .gl (Debian's
# glvnd and EGL libraries, unpacked there by scripts/gpu_device.sh) and .whl (moderngl and
# glcontext wheels for that machine's Python).
#   bash scripts/gpu_carry.sh
# Needs the body bank and the datasets (as gpu_pack.sh), apt-get and pip with access to Debian and
# PyPI. GPU_PYTHON_VERSION (default 3.12) names the device's Python. A folder already there is kept
# (the pack, unless this checkout refuses its body bank).
# It adds up what a device call would carry and exits 4 where that is over the call's 64 MiB.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
py="${PYTHON:-$root/.venv/bin/python}"
version="${GPU_PYTHON_VERSION:-3.12}"
# A pack whose body bank this checkout refuses (older joint labels) is made again.
stale_bank() {
    [ -f .gpu/pack/bodies.npz ] || return 1
    ! "$py" -c 'import sys; from pathlib import Path; from train.synth.body import BodyBank; BodyBank.load(Path(sys.argv[1]))' \
        .gpu/pack/bodies.npz >/dev/null 2>&1
}
if [ ! -f .gpu/pack/motions.npz ] || stale_bank; then bash scripts/gpu_pack.sh .gpu/pack; fi
# Each folder is filled in a temporary one and moved into place whole, so a failed download
# leaves nothing that a later run would take for complete.
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
if ! ls .gl/*.deb >/dev/null 2>&1; then
    mkdir -p "$tmp/gl"
    err=$(cd "$tmp/gl" && apt-get download libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2 libvulkan1 2>&1 >/dev/null) ||
        { echo "error: apt-get download failed (${err##*$'\n'}): the OpenGL libraries for .gl come from Debian's archive" >&2; exit 3; }
    rm -rf .gl && mv "$tmp/gl" .gl
fi
if ! ls .whl/*.whl >/dev/null 2>&1; then
    err=$("$py" -m pip download -q --only-binary=:all: --no-deps --python-version "$version" \
        --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 -d "$tmp/whl" moderngl==5.13.0 glcontext==3.1.0 2>&1 >/dev/null) ||
        { echo "error: pip download failed (${err##*$'\n'}): the moderngl and glcontext wheels for .whl come from PyPI" >&2; exit 3; }
    rm -rf .whl && mv "$tmp/whl" .whl
fi
du -sh .gpu .gl .whl
# A device call carries the working tree's files (tracked, and untracked ones git does not ignore)
# and the carried folders, at most 64 MiB in all: a call over it is refused, device time lost.
tree_files() { { git ls-files -z; git ls-files -z --others --exclude-standard; } | grep -zv '^\.\(gpu\|gl\|whl\)/'; }
tree=$(tree_files | xargs -0 -r stat -c %s -- 2>/dev/null | awk '{ s += $1 } END { print s + 0 }')
extra=$(du -sb .gpu .gl .whl | awk '{ s += $1 } END { print s + 0 }')
limit=$(( 64 * 1024 * 1024 ))
total=$(( tree + extra ))
mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }
echo "a device call carries $(mib "$total") (the working tree's files $(mib "$tree"), .gpu, .gl and .whl $(mib "$extra")); at most 64 MiB"
if [ "$total" -gt "$limit" ]; then
    largest=$(tree_files | xargs -0 -r du -b -- 2>/dev/null | sort -rn | head -3 | awk '{ printf "%s%s", sep, $2; sep = ", " }')
    echo "error: that is $(mib $(( total - limit ))) over a device call's 64 MiB: leave files that training does not need out of the working tree for the call${largest:+ (the largest: $largest)}" >&2
    exit 4
fi
