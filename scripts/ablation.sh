#!/usr/bin/env bash
# The paper's ablation (docs/results.md): short trainings on the same data, seed and schedule
# from the same start (stage 1 of scripts/train.sh), differing only in 2D fusion, the lifter and
# the number of roots, each evaluated on the held-out
# synthetic images and real photos with the three alignment methods. Resumes like train.sh.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
work="${POSECAST_WORK:-$root/../data}"
data="${POSECAST_DATA:-$root/../shared/datasets}"
py=.venv/bin/python
source "$root/scripts/evaluate_run.sh"
# The start every variant shares (stage 1), as it is.
evaluate "$work/runs/default"
specs=("stage 1 (the start)=$work/runs/default/eval.json")
# The pretrained lifter on stage 1's 2D, before any training on images (scripts/train.sh makes it).
missing=()
if [ -f "$work/runs/lifter_only/model.pt" ]; then
    evaluate "$work/runs/lifter_only"
    specs+=("lifter, no image training=$work/runs/lifter_only/eval.json")
else
    missing+=(lifter_only)
fi
# 'both' and 'lifter' first: the two the lifter's effect is read from.
for run in both lifter baseline multiroot fusion; do
    out="$work/runs/ablation_$run"
    [ -f "$out/model.pt" ] || $py -m train.train --config "configs/train/ablation_$run.yaml" --out "$out" \
        --init-from "$work/runs/default/model.pt" $([ $run = lifter ] && echo --lifter-from "$work/lifter/pre.pt")
    evaluate "$out"
done
for run in baseline multiroot fusion both lifter; do
    specs+=("$run=$work/runs/ablation_$run/eval.json")
done
# The later stages of the shipped model (scripts/train.sh), where they exist.
# stage RUN LABEL [MIRRORED_LABEL]: its row, and with a third argument its row mirrored at test time
# (LABEL "-": the mirrored row only).
stage() {
    [ -f "$work/runs/$1/model.pt" ] || { missing+=("$1"); return 0; }
    if [ "$2" != - ]; then
        evaluate "$work/runs/$1"
        specs+=("$2=$work/runs/$1/eval.json")
    fi
    if [ $# -ge 3 ]; then
        evaluate "$work/runs/$1" eval_mirrored.json --flip-test all
        specs+=("$3=$work/runs/$1/eval_mirrored.json")
    fi
}
stage lifted "stage 2 (3D branch only, 4000 steps)"
stage refined "stage 3 (all weights, negatives, 7000 steps)"
stage extended "stage 4 (7000 more steps)" "stage 4, mirrored at test time"
stage fine "stage 5 (finer 2D grid, 6000 more steps)" "stage 5, mirrored at test time"
stage ray_frame "stage 6 (3D in the person's ray frame, 5000 more steps)" "stage 6, mirrored at test time"
stage longer - "stage 9 (12000 more steps), mirrored at test time"
stage negatives - "stage 10 (a quarter person-free crops, 2000 more steps), mirrored at test time"
stage soup - "stage 14 (the average of stages 10, 12 and 13), mirrored at test time"
stage cut_off - "stage 21 (stage 14 with people cut off by the frame, 3000 more steps), mirrored at test time"
stage gpu - "stage 22 (stage 21 on a GPU, 111200 new rendered images, 5182 steps of 128), mirrored at test time"
stage gpu_more - "stage 23 (stage 22 on a GPU, 45000 new rendered images, 3763 steps of 128), mirrored at test time"
stage gpu_long - "stage 24 (stage 23 on a GPU, 130600 new rendered images, 7007 steps of 128), mirrored at test time"
stage cpu_rendered - "stage 25c (stage 24 on this project's CPU machine, 84800 people rendered here), mirrored at test time"
stage gpu_next2 - "stage 27 (stage 25c on a GPU, 120800 new rendered images, 6209 then 3217 steps of 128), mirrored at test time"
stage soup28 - "stage 28 (the average of stages 25c and 27), mirrored at test time (shipped 2026-12-06 to 12-07)"
# The committed table is only written over by a machine that holds every run it has rows for.
table=docs/ablation_table.md
if [ ${#missing[@]} -gt 0 ]; then
    table="$work/ablation_table.md"
    echo "note: no run here for ${missing[*]}: the table goes to $table, not over $root/docs/ablation_table.md" >&2
fi
$py -m train.report "${specs[@]}" --out "$table"
cat "$table"
