# Sourced by train.sh and ablation.sh, after they set $py, $work and $data.
# evaluate RUN_DIR [JSON_NAME [EXTRA_ARGS...]]: a run's model on the held-out sets, once per run
# and JSON name (default eval.json; an existing file is kept).
evaluate() {
    local dir="$1" name="${2:-eval.json}"
    shift $(( $# < 2 ? $# : 2 ))
    [ -f "$dir/$name" ] || $py -m train.evaluate --model "$dir/model.pt" --synth-val "$work/synth_val" "$work/synth_val_dm" \
        --real2d "$data/real2d_fashion" --backgrounds "$data/backgrounds" --align average lstsq weighted \
        --json "$dir/$name" "$@"
}
