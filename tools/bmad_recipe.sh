#!/usr/bin/env bash
# The real numbers, one command: MVFA's few-shot k = 4 benchmark (CVPR 2024, Table 1) on the
# BMAD data with the real CLIP ViT-L/14-336 weights, under both of our protocols, beside the
# paper's table. Meant for a machine with an NVIDIA GPU (it builds the `cuda` binary when
# `nvidia-smi` is there); on a CPU the paper schedule takes days.
#
#   tools/bmad_recipe.sh CLIP_WEIGHTS DATA_ROOT [SHOT_DIR]
#
# CLIP_WEIGHTS  openai/clip-vit-large-patch14-336 as safetensors (`mvfa-studio weights download`
#               prints its path), config.json beside it.
# DATA_ROOT     the BMAD data as the reference code reads it (spec section 8):
#                 DATA_ROOT/Brain_AD/{valid,test}/{good,Ungood}/img/*.png
#                 DATA_ROOT/Brain_AD/{valid,test}/Ungood/anomaly_mask/*.png   (Brain, Liver, RESC)
#               with Liver_AD, Retina_RESC_AD, Retina_OCT2017_AD, Chest_AD, Histopathology_AD
#               beside Brain_AD (missing ones are skipped and said so).
# SHOT_DIR      optional: the reference repository's dataset/fewshot_seed folder, whose
#               <Key>/4-shot.txt lists the shots the paper used (line a-0/n-0 is its draw; the
#               further draws use a-1/n-1 and so on). Without it, shots are drawn with seeds.
#
# What runs (each an `mvfa-studio eval`, one JSON per protocol under $OUT):
#   paper       the reference's fusion: test-set min-max per branch, 0.5 / 0.5, 50 epochs, no
#               model selection on the shots (--no-select). The paper also kept the best epoch
#               on the test set; we never do, so expect its numbers to be a little optimistic.
#   calibrated  what the app does: single-image calibration, and the fit chooses what to install
#               by cross-validation on the shots (issue 20).
# Each repeats the protocol over $DRAWS shot draws and prints mean ± sd and minimum.
#
# Settings (environment): DRAWS (3), SHOTS (4), EPOCHS (50), DATASETS (all), OUT (bmad-results),
# SEED (111), MVFA (a built binary to use instead of building one), EXTRA (more eval arguments).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ $# -lt 2 ]; then
    sed -n '2,33p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
fi
clip=$1
data=$2
shot_dir=${3:-}
draws=${DRAWS:-3}
shots=${SHOTS:-4}
epochs=${EPOCHS:-50}
datasets=${DATASETS:-all}
out=${OUT:-bmad-results}
seed=${SEED:-111}

if [ -z "${MVFA:-}" ]; then
    if command -v nvidia-smi >/dev/null 2>&1; then
        cargo build --release --features cuda
    else
        echo "note: no nvidia-smi: building the CPU binary (the paper schedule takes days on a CPU)" >&2
        cargo build --release
    fi
    MVFA=target/release/mvfa-studio
fi
mkdir -p "$out"

shot_args=()
if [ -n "$shot_dir" ]; then
    shot_args=(--shot-dir "$shot_dir")
fi
for protocol in paper calibrated; do
    select_args=()
    if [ "$protocol" = paper ]; then
        select_args=(--no-select)
    fi
    echo "== protocol: $protocol ($draws draws, k = $shots, $epochs epochs) =="
    # shellcheck disable=SC2086
    "$MVFA" eval --clip "$clip" --data "$data" --dataset "$datasets" --shots "$shots" \
        --epochs "$epochs" --draws "$draws" --seed "$seed" --protocol "$protocol" \
        "${shot_args[@]}" "${select_args[@]}" --json "$out/$protocol.json" ${EXTRA:-}
    echo
done
echo "wrote $out/paper.json and $out/calibrated.json"
