#!/usr/bin/env bash
# Create .venv beside the repository and install Posecast (editable) with its test tools, and
# Debian's EGL/Mesa libraries (headless OpenGL: the renderer's tests draw with it; installed with
# apt-get, through sudo unless root, when missing).
# Idempotent: a second run only checks what is there. Needs Python 3.11+ and pip's registry.
# Without sudo or apt-get the libraries are only noted as missing (posecast never draws with
# OpenGL), unless the renderer is needed:
#   --tests   the test suite's set-up (scripts/test.sh): the renderer's tests need the libraries.
#   --train   also the `train` extra (what making training data and training need).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
python="${PYTHON:-python3}"
extras="test"
need_gl=""              # the renderer is needed: training data, or the tests that draw with it
case "${1:-}" in
    "") ;;
    --tests) need_gl=1 ;;
    --train) extras="test,train"; need_gl=1 ;;
    *) echo "usage: bash scripts/setup.sh [--tests | --train]" >&2; exit 2 ;;
esac
# ldconfig lives in /sbin, which a user's PATH on Debian may not hold.
if ! PATH="$PATH:/sbin:/usr/sbin" ldconfig -p | grep libEGL_mesa >/dev/null; then
    sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
    { $sudo apt-get update -qq &&
      DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq libegl1 libegl-mesa0 libgl1-mesa-dri >/dev/null; } ||
        if [ -n "$need_gl" ]; then
            echo "setup.sh: cannot install Debian's libegl1, libegl-mesa0 and libgl1-mesa-dri (headless OpenGL for the renderer and its tests): install them, then run this again" >&2
            exit 1
        else    # posecast itself never draws with OpenGL: the demo and the pipeline run without it
            echo "setup.sh: note: Debian's EGL/Mesa libraries could not be installed; posecast runs without them, the renderer (training data, and its tests) does not" >&2
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
