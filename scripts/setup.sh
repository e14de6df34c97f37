#!/usr/bin/env bash
# Create .venv beside the repository and install Posecast (editable) with its test tools.
# Idempotent: a second run only checks what is there. Needs Python 3.11+ and pip's registry.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
python="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
fi
stamp=.venv/.posecast-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    .venv/bin/python -m pip install --quiet --upgrade pip
    # torch is pinned to 2.13.0 (CPU build available locally); an unpinned torch would pull CUDA wheels.
    .venv/bin/python -m pip install --quiet -e '.[test]'
    touch "$stamp"
fi
