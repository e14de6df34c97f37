#!/usr/bin/env bash
# Quick start 2 (and CI): set up, then run the test suite.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup.sh" --tests
cd "$root"
exec .venv/bin/python -m pytest -q "$@"
