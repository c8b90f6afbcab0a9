#!/bin/sh
# Renders the PNG icons from mvfa-studio.svg (needs rsvg-convert: `apt install librsvg2-bin`).
# The PNGs are committed, so building the package does not need this.
set -eu
cd "$(dirname "$0")"
for size in 48 128 256; do
    rsvg-convert -w "$size" -h "$size" mvfa-studio.svg -o "mvfa-studio-$size.png"
done
