#!/usr/bin/env bash
# Quick start 1: set up, then track the built-in synthetic clip (rendered on first use, no download).
# Writes posecast-demo/demo.jsonl and posecast-demo/demo_overlay.mp4 in the current folder (or
# in --out-dir DIR, from the current folder).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup.sh"
exec "$root/.venv/bin/posecast" demo "$@"
