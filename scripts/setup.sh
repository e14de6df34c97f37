#!/usr/bin/env bash
# Create .venv beside the repository and install Posecast (editable) with its test tools.
# Idempotent: a second run only checks what is there. Needs Python 3.11+ and pip's registry.
# Where the renderer is needed, also Debian's EGL/Mesa libraries (headless OpenGL), and for the
# tests Debian's C# compiler and Json.NET, installed with apt-get, through sudo unless root, when
# missing; posecast itself never draws with OpenGL, nor runs C#:
#   --tests   the test suite's set-up (scripts/test.sh): the renderer's tests need the libraries,
#             the Unity example's (tests/test_unity_client.py) mcs and Json.NET.
#   --train   also the `train` extra (what making training data and training need).
# torch is pinned to 2.13.0. Where pip finds only PyPI, that is the CUDA build (gigabytes of NVIDIA
# packages); PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu before this script makes pip
# take PyTorch's CPU build (2.13.0+cpu) instead.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
python="${PYTHON:-python3}"
extras="test"
need_gl=""              # the renderer is needed: training data, or the tests that draw with it
need_cs=""              # C#: the test that compiles the Unity example and runs it under mono
case "${1:-}" in
    "") ;;
    --tests) need_gl=1; need_cs=1 ;;
    --train) extras="test,train"; need_gl=1 ;;
    *) echo "usage: bash scripts/setup.sh [--tests | --train]" >&2; exit 2 ;;
esac
# Debian's packages, each set only where it is needed and missing: the demo's set-up (no option)
# does not ask sudo for libraries posecast never uses. ldconfig lives in /sbin, which a user's
# PATH on Debian may not hold.
packages=()
why=()
if [ -n "$need_gl" ] && ! PATH="$PATH:/sbin:/usr/sbin" ldconfig -p | grep libEGL_mesa >/dev/null; then
    packages+=(libegl1 libegl-mesa0 libgl1-mesa-dri); why+=("headless OpenGL for the renderer and its tests")
fi
if [ -n "$need_cs" ] && { ! command -v mcs >/dev/null || ! compgen -G "/usr/lib/cli/Newtonsoft.Json*/Newtonsoft.Json.dll" >/dev/null; }; then
    packages+=(mono-mcs libnewtonsoft-json-cil-dev); why+=("mcs and Json.NET for the Unity example's test")
fi
if [ ${#packages[@]} -gt 0 ]; then
    sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
    { $sudo apt-get update -qq &&
      DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${packages[@]}" >/dev/null; } ||
        { reasons="$(printf '%s; ' "${why[@]}")"
          echo "setup.sh: cannot install Debian's ${packages[*]} (${reasons%; }): install them, then run this again" >&2
          exit 1; }
fi
# A venv made without pip (Debian without python3-venv) is made again, not taken as done.
if [ ! -x .venv/bin/python ] || ! .venv/bin/python -m pip --version >/dev/null 2>&1; then
    rm -rf .venv
    "$python" -m venv .venv || { echo "setup.sh: cannot make .venv with $python (on Debian: apt-get install python3-venv)" >&2; exit 1; }
fi
stamp=.venv/.posecast-installed-$extras
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    # pip's own lines (and setuptools' notices about editable installs, which look like failures)
    # go to a log, shown only where the install fails; this line says why the terminal waits.
    log=.venv/setup.log
    echo "setup.sh: installing Posecast and its dependencies ($extras) into .venv; the first time takes a minute or more (log: $log)" >&2
    if ! { .venv/bin/python -m pip install --upgrade pip &&
           .venv/bin/python -m pip install -e ".[$extras]"; } > "$log" 2>&1; then
        tail -n 30 "$log" >&2
        echo "setup.sh: the install failed (above: the end of $log); fix what pip says, then run this again" >&2
        exit 1
    fi
    touch "$stamp"
fi
