#!/usr/bin/env bash
# Starts MVFA Studio under Xvfb on fixture data, drives it with xdotool and saves a screenshot
# of each main view (CT viewer, labelling with a mask, NIfTI volume, help, palette, metadata,
# and the model loop on the tiny random CLIP fixture: fine-tuning with its loss plot, results
# with heatmap, legend, histogram and score table, side by side, the export window; a series
# with its score strip and the Results grouped by series).
#
# Needs: xvfb, xdotool, imagemagick (apt-get install xvfb xdotool imagemagick).
# Usage: tools/screenshots.sh [OUT_DIR]   (default docs/screenshots)
# MVFA_BIN selects the binary (default target/debug/mvfa-studio, built when missing);
# MVFA_CT a CT DICOM file to show (default: the shared corpus's CT_small.dcm when present,
# else the committed fixture series).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-docs/screenshots}
bin=${MVFA_BIN:-target/debug/mvfa-studio}
[ -x "$bin" ] || cargo build
mkdir -p "$out"
work=$(mktemp -d)
display=:97
Xvfb "$display" -screen 0 1400x900x24 -nolisten tcp >/dev/null 2>&1 &
xvfb=$!
app=
cleanup() {
    [ -n "$app" ] && kill "$app" 2>/dev/null || true
    kill "$xvfb" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
export DISPLAY=$display
# Settings and autosave of these runs stay in the temporary folder.
export XDG_DATA_HOME=$work/xdg
sleep 1

ct=${MVFA_CT:-../shared/data/dicom/pydicom/CT_small.dcm}
[ -f "$ct" ] || ct=tests/fixtures/dicom/study_folder/sub
"$bin" synth-data "$work/synth" --normal 3 --abnormal 3 --size 256 >/dev/null

# Starts the app on the given paths and waits for its window.
start() {
    "$bin" view "$@" >"$work/app.log" 2>&1 &
    app=$!
    window=$(xdotool search --sync --name "MVFA Studio" | head -n 1)
    xdotool windowmove "$window" 0 0
    # Without a window manager, keys go to the focused window only (XSendEvent to a given
    # window is ignored by winit).
    xdotool windowfocus --sync "$window"
    sleep 4
}

stop() {
    kill "$app" 2>/dev/null || true
    wait "$app" 2>/dev/null || true
    app=
}

# Saves the window as a small PNG (reduced palette: the UI is mostly flat dark grey).
shot() {
    import -window "$window" "$work/raw.png"
    convert "$work/raw.png" -resize 900x -dither None -colors 64 -strip "$out/$1.png"
    echo "$out/$1.png"
}

key() {
    xdotool key "$@" 2>/dev/null
    sleep 1
}

# The viewer's centre: between the 260-point browser and the 280-point right panel.
cx=630
cy=420

start "$ct"
key 2
shot viewer-ct
key F1
shot help
key F1
key ctrl+k
xdotool type "window" 2>/dev/null
sleep 1
shot palette
key Escape
key ctrl+i
shot metadata
stop

start "$work/synth/abnormal"
key a b
xdotool mousemove "$cx" "$((cy - 30))" mousedown 1
for dx in 10 20 30 40 50 60; do
    xdotool mousemove "$((cx + dx))" "$((cy - 30 + dx / 2))"
    sleep 0.1
done
xdotool mouseup 1
sleep 1
shot labelling
stop

start tests/fixtures/io/nifti/lps_flipped.nii.gz
shot nifti
stop

# The model loop on the tiny random CLIP of the test fixtures: its heatmaps show the layout,
# not a diagnosis. Label two abnormal and two normal images, let the untrained detector score
# the folder, fine-tune, then review.
mkdir -p "$work/study"
cp "$work/synth"/abnormal/*.png "$work/synth"/normal/*.png "$work/study/"
start --clip tests/fixtures/clip/hf/model.safetensors "$work/study"
for k in a Down a Down Down n Down n; do key "$k"; done
sleep "${MVFA_SCORE_WAIT:-40}"
key ctrl+t
sleep "${MVFA_TRAIN_WAIT:-60}"
key F3
shot model-training
key F4
key j
shot results
key d
shot side-by-side
key d
key ctrl+shift+e
shot export
stop

# Series: two synthetic 24-slice DICOM volumes (the second with a lesion over a few slices).
# Label four normal slices of the first and two of the second; the memory bank scores both
# series and the strip fills in; Shift+J goes to the peak of the most anomalous series.
export XDG_DATA_HOME=$work/xdg-series
"$bin" synth-data "$work/volumes" --normal 0 --abnormal 0 --size 256 --volumes 2 --slices 24 >/dev/null
start --clip tests/fixtures/clip/hf/model.safetensors "$work/volumes/volumes"
for k in n Down Down Down n Down Down Down n Down Down Down n; do key "$k"; done
sleep "${MVFA_SCORE_WAIT:-40}"
# Two normal labels at the start of the lesion series, so that the strip shows its N marks.
for k in shift+j Home n Down n; do key "$k"; done
# Both series rescored after the new labels (Xvfb's software rendering takes a core).
sleep "${MVFA_SERIES_WAIT:-90}"
key shift+j
shot series-strip
# The strip at full size: the frame slider and the strip above the viewer.
convert "$work/raw.png" -crop 870x64+258+22 +repage -strip "$out/series-strip-detail.png"
echo "$out/series-strip-detail.png"
key F4
shot series-results
stop

