#!/usr/bin/env bash
# One command on a machine with an NVIDIA GPU (issue 12, item 7): the parity tests on CUDA,
# forward images/s at batch 1 and 32, one training step, and a full k=4 paper-schedule
# fine-tune on synthetic shots, printed as one table. No cargo and no network needed there.
#
# Build here (any machine with the toolchain; no GPU needed to build):
#     cargo build --release --features cuda        # builds target/release/mvfa-dev too
#     cargo test --release --features cuda --test integration --no-run   # prints the test binary
# Carry the repository folder (tests/fixtures and this script are what is read) with the two
# binaries to the GPU machine, then from the repository root:
#     tools/cuda_check.sh
#     MVFA_BIN=path/to/mvfa-dev MVFA_TEST_BIN=path/to/integration-HASH tools/cuda_check.sh
# Defaults: target/release/mvfa-dev (the developer binary, which has `bench`) and the newest
# target/release/deps/integration-*.
# Needs only the NVIDIA driver (libcuda.so.1): burn-cuda compiles its kernels at run time.
#
# There are no real CLIP weights here: the timings use the random full-size ViT-L/14-336 of
# `mvfa-dev bench` (same shapes and work as the real tower), and the fine-tune is
# `bench --fit 4 --schedule paper`: 4 normal + 4 abnormal synthetic shots with masks, 11
# augmentations, 50 epochs, then the memory bank and the calibration (what `train --schedule
# paper` runs, minus loading weights from a file). Exit status: 0 when the parity passed.
set -uo pipefail

cd "$(dirname "$0")/.." || exit 2
ROOT=$PWD
BIN=${MVFA_BIN:-target/release/mvfa-dev}
TEST_BIN=${MVFA_TEST_BIN:-$(ls -t target/release/deps/integration-* 2>/dev/null | grep -v '\.d$' | head -n 1)}
OUT=${MVFA_CHECK_OUT:-$(mktemp -d)}
REPEAT=${MVFA_REPEAT:-3}
# Extra `bench` flags, e.g. a small tower to try the script on a CPU build:
#   MVFA_BENCH_ARGS="--layers 2 --width 64 --embed-dim 16 --text-layers 1 --text-width 32 --fit-epochs 1"
read -r -a EXTRA <<<"${MVFA_BENCH_ARGS:-}"

[ -x "$BIN" ] || { echo "no mvfa-dev binary at $BIN (set MVFA_BIN)" >&2; exit 2; }
if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
else
    echo "note: nvidia-smi not found"
fi

# 1. Parity on CUDA: the CLIP tower (taps, embedding, text tower, MVFA text features) and the
#    MVFA adapters, scoring, losses, gradients and one Adam step, against the PyTorch fixtures,
#    within 1e-3 (the tests `cuda_parity` and `cuda_mvfa_parity`; on the CPU the same checks
#    hold to 1e-4).
parity="not run (no test binary: set MVFA_TEST_BIN)"
parity_ok=1
if [ -n "$TEST_BIN" ] && [ -x "$TEST_BIN" ]; then
    echo "== parity: $TEST_BIN cuda_ (fixtures under $ROOT/tests/fixtures)"
    CARGO_MANIFEST_DIR=$ROOT "$TEST_BIN" cuda_ --ignored --test-threads 1 --nocapture \
        >"$OUT/parity.log" 2>&1
    rc=$?
    tail -n 5 "$OUT/parity.log"
    passed=$(grep -o '[0-9]* passed' "$OUT/parity.log" | tail -n 1)
    if grep -q 'needs an NVIDIA GPU' "$OUT/parity.log"; then
        parity="FAIL: $(grep -m1 -o 'needs an NVIDIA GPU.*' "$OUT/parity.log")"
    elif [ $rc -eq 0 ] && [ "${passed%% *}" = 0 ]; then
        parity="FAIL: no cuda_ tests in $TEST_BIN (built without --features cuda?)"
    elif [ $rc -eq 0 ] && [ "${passed%% *}" -ge 2 ] 2>/dev/null; then
        parity="PASS ($passed: clip + mvfa, worst errors in $OUT/parity.log)"
        parity_ok=0
    else
        parity="FAIL (exit $rc, see $OUT/parity.log)"
    fi
fi

# 2-4. Timings and the fine-tune, one process (one warm-up of the kernels).
echo "== bench: $BIN bench --batches 1,32 --repeat $REPEAT --fit 4 --schedule paper ${EXTRA[*]}"
"$BIN" bench --batches 1,32 --repeat "$REPEAT" --fit 4 --schedule paper "${EXTRA[@]}" 2>&1 |
    tee "$OUT/bench.log"
bench_rc=${PIPESTATUS[0]}

row_ms() { # median ms of the table row starting with $1 whose batch column is $2
    awk -F'|' -v what="$1" -v b="$2" \
        'index($1, what) == 1 { gsub(/ /, "", $2); if ($2 == b) { gsub(/ /, "", $3); print $3; exit } }' \
        "$OUT/bench.log"
}
ips() { [ -n "$1" ] && awk -v ms="$1" 'BEGIN { printf "%.1f images/s (%.1f ms/image)", 1000 / ms, ms }' || echo "-"; }
f1=$(row_ms "adapted forward pass" 1)
f32=$(row_ms "adapted forward pass" 32)
step=$(row_ms "training step" 1)
fit=$(grep -m1 '^fit k=4:' "$OUT/bench.log" | sed 's/^fit k=4: //')
# "Paper schedule (50 epochs x 88 augmented images)", as the bench ran it.
schedule=$(grep -m1 -o 'Paper schedule ([^)]*)' "$OUT/bench.log" | sed 's/Paper schedule (\(.*\))/\1/')
backend=$(grep -m1 '^backend:' "$OUT/bench.log")

echo
echo "== CUDA check ($backend; bench exit $bench_rc; logs in $OUT)"
printf '| %-44s | %-58s | %-12s |\n' "check" "result" "target"
printf '|%s|%s|%s|\n' "$(printf -- '-%.0s' {1..46})" "$(printf -- '-%.0s' {1..60})" "$(printf -- '-%.0s' {1..14})"
printf '| %-44s | %-58s | %-12s |\n' "parity on CUDA vs PyTorch fixtures (1e-3)" "$parity" "pass"
printf '| %-44s | %-58s | %-12s |\n' "adapted forward, batch 1" "$(ips "$f1")" ""
printf '| %-44s | %-58s | %-12s |\n' "adapted forward, batch 32" "$(ips "$f32")" ">= 50/s"
printf '| %-44s | %-58s | %-12s |\n' "training step, batch 1" "${step:--} ms" ""
printf '| %-44s | %-58s | %-12s |\n' "k=4 paper fine-tune (${schedule:-88 images x 50 epochs})" "${fit:--}" "< 120 s"
exit $parity_ok
