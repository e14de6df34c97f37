#!/usr/bin/env bash
# Create .venv beside the repository and install Posecast (editable) with its test tools.
# Idempotent: a second run only checks what is there. Needs Python 3.11+ and pip's registry.
#   --train   also what making training data needs: Debian's EGL/Mesa libraries (headless
#             OpenGL for the renderer, installed with apt-get when missing) and the `train` extra.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
python="${PYTHON:-python3}"
extras="test"
case "${1:-}" in
    "") ;;
    --train) extras="test,train" ;;
    *) echo "usage: bash scripts/setup.sh [--train]" >&2; exit 2 ;;
esac
if [ "$extras" = "test,train" ]; then
    # ldconfig lives in /sbin, which a user's PATH on Debian may not hold.
    if ! PATH="$PATH:/sbin:/usr/sbin" ldconfig -p | grep libEGL_mesa >/dev/null; then
        sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq libegl1 libegl-mesa0 libgl1-mesa-dri >/dev/null
    fi
fi
# A venv made without pip (Debian without python3-venv) is made again, not taken as done.
if [ ! -x .venv/bin/python ] || ! .venv/bin/python -m pip --version >/dev/null 2>&1; then
    rm -rf .venv
    "$python" -m venv .venv || { echo "setup.sh: cannot make .venv with $python (on Debian: apt-get install python3-venv)" >&2; exit 1; }
fi
stamp=.venv/.posecast-installed-$extras
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    .venv/bin/python -m pip install --quiet --upgrade pip
    # torch is pinned to 2.13.0, whose CPU build this project's machines install from a local
    # wheel (pip's find-links); elsewhere PyPI gives the default build, CUDA wheels on Linux.
    .venv/bin/python -m pip install --quiet -e ".[$extras]"
    touch "$stamp"
fi
