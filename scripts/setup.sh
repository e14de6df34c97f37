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
if [ "${1:-}" = "--train" ]; then
    extras="test,train"
    if ! ldconfig -p | grep libEGL_mesa >/dev/null; then
        sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq libegl1 libegl-mesa0 libgl1-mesa-dri >/dev/null
    fi
fi
if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
fi
stamp=.venv/.posecast-installed-$extras
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    .venv/bin/python -m pip install --quiet --upgrade pip
    # torch is pinned to 2.13.0 (CPU build available locally); an unpinned torch would pull CUDA wheels.
    .venv/bin/python -m pip install --quiet -e ".[$extras]"
    touch "$stamp"
fi
