#!/usr/bin/env bash
# The shipped model, end to end: body bank -> synthetic images -> training -> evaluation -> export.
# Every step is seeded and resumes where it stopped: run the script again after an interruption.
# Data and runs go to $POSECAST_WORK (default ../data beside the repository), never into git.
# On two CPU cores: about 25 min of rendering and 50 min of training (docs/training.md).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup.sh" --train
cd "$root"
work="${POSECAST_WORK:-$root/../data}"
py=.venv/bin/python
mkdir -p "$work"
[ -f "$work/bodies.npz" ] || $py -m train.synth.body --out "$work/bodies.npz" --bodies 120 --seed 0
$py -m train.synth.generate --split val   --out "$work/synth_val"     --count 1500  --seed 100 --bodies "$work/bodies.npz"
$py -m train.synth.generate --split train --out "$work/synth_train_a" --count 12000 --seed 1   --bodies "$work/bodies.npz"
$py -m train.synth.generate --split train --out "$work/synth_train_b" --count 10000 --seed 2   --bodies "$work/bodies.npz"
# DeepMimic clips come from pybullet's wheel: POSECAST_DEEPMIMIC=<wheel, sdist or folder>, or
# pybullet installed. Without them these two sets are skipped.
if $py -c "import sys; from train.motion import load_deepmimic; sys.exit(load_deepmimic() is None)" 2>/dev/null; then
    $py -m train.synth.generate --split val   --out "$work/synth_val_dm"   --count 500  --seed 101 --bodies "$work/bodies.npz"
    $py -m train.synth.generate --split train --out "$work/synth_train_c" --count 6000 --seed 3   --bodies "$work/bodies.npz"
fi
$py -m train.train --config configs/train/default.yaml --out "$work/runs/default"
$py -m train.evaluate --model "$work/runs/default/model.pt" --synth-val "$work"/synth_val* \
    --real2d "${POSECAST_DATA:-$root/../shared/datasets}/real2d_fashion" --align average lstsq weighted \
    --json "$work/runs/default/eval.json"
