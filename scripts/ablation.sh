#!/usr/bin/env bash
# The paper's ablation (docs/training.md): four short trainings on the same data, seed and
# schedule, differing only in 2D fusion and the number of roots, each evaluated on the held-out
# synthetic images and real photos with the three alignment methods. Resumes like train.sh.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
work="${POSECAST_WORK:-$root/../data}"
data="${POSECAST_DATA:-$root/../shared/datasets}"
py=.venv/bin/python
specs=()
for run in baseline multiroot fusion both; do
    out="$work/runs/ablation_$run"
    [ -f "$out/model.pt" ] || $py -m train.train --config "configs/train/ablation_$run.yaml" --out "$out"
    [ -f "$out/eval.json" ] || $py -m train.evaluate --model "$out/model.pt" --synth-val "$work"/synth_val* \
        --real2d "$data/real2d_fashion" --align average lstsq weighted --json "$out/eval.json"
    specs+=("$run=$out/eval.json")
done
$py -m train.report "${specs[@]}" --out docs/ablation_table.md
cat docs/ablation_table.md
