#!/usr/bin/env python3
"""Write the Pillow reference fixtures for `mvfa_studio::io::resample` (spec 7.1).

Run by hand from the repository root, once per Pillow generation (the pass order changed
in Pillow 12.2 and 13.0, see `PillowOrder` in src/io/resample.rs), oldest first:

    pip install --target /tmp/pil-classic pillow==12.1.1
    PYTHONPATH=/tmp/pil-classic /work/pyref/bin/python tools/io/make_resize_fixtures.py
    pip install --target /tmp/pil-12.3 pillow==12.3.0
    PYTHONPATH=/tmp/pil-12.3 /work/pyref/bin/python tools/io/make_resize_fixtures.py
    /work/pyref/bin/python tools/io/make_resize_fixtures.py      # pyref has Pillow 13.0

Each run writes `tests/fixtures/io/resize/pillow-<major.minor>/manifest.json`.

Inputs are NOT stored: they are regenerated from a seed by the same integer-only generator in
the Rust test (`tests/io_model_input.rs`), so only Pillow's outputs are committed:
The manifest describes each case and records the SHA-256 of Pillow's raw output bytes
(row-major, channels interleaved); the output itself is stored as a PNG (`file`) for every case
except the incompressible ones (random RGB content, and the 240x240 passthrough which equals its
input), to keep the fixtures small; an output identical to one stored for another Pillow
version points at that file (`file` is relative to `tests/fixtures/io/resize`). The Rust test checks the hash for every case and the max
difference wherever the PNG is stored.

Generator (must match the Rust side exactly):
- `random`: splitmix64 stream seeded with `seed`; each sample is the top byte of one draw, in
  row-major order, channels interleaved.
- `smooth`: integer ramps (see `smooth_sample`).
- `pattern` (masks): (x * 31 + y * 17 + c * 101) % 256, which makes any wrong source index
  visible in the NEAREST output.
"""
import hashlib
import json
import os
import sys

import numpy as np
import PIL
from PIL import Image

MASK64 = (1 << 64) - 1
OUT = 240


def splitmix64_bytes(seed, n):
    state = seed & MASK64
    out = bytearray(n)
    for i in range(n):
        state = (state + 0x9E3779B97F4A7C15) & MASK64
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
        z = z ^ (z >> 31)
        out[i] = z >> 56
    return bytes(out)


def smooth_sample(x, y, c, w, h):
    gx = x * 255 // max(w - 1, 1)
    gy = y * 255 // max(h - 1, 1)
    if c == 0:
        return (gx + gy) // 2
    if c == 1:
        return (gx * 3 + (255 - gy)) // 4
    d = (w - 1) ** 2 + (h - 1) ** 2
    return (x * x + y * y) * 255 // max(d, 1)


def make_input(kind, w, h, ch, seed):
    if kind == "random":
        data = splitmix64_bytes(seed, w * h * ch)
        return np.frombuffer(data, dtype=np.uint8).reshape(h, w, ch)
    arr = np.zeros((h, w, ch), dtype=np.uint8)
    for c in range(ch):
        if kind == "smooth":
            f = np.vectorize(lambda yy, xx: smooth_sample(xx, yy, c, w, h))
        else:  # pattern
            f = np.vectorize(lambda yy, xx: (xx * 31 + yy * 17 + c * 101) % 256)
        yy, xx = np.mgrid[0:h, 0:w]
        arr[:, :, c] = f(yy, xx).astype(np.uint8)
    return arr


def to_pil(arr):
    if arr.shape[2] == 1:
        return Image.fromarray(arr[:, :, 0], mode="L")
    return Image.fromarray(arr, mode="RGB")


def digest(im):
    return hashlib.sha256(np.asarray(im).tobytes()).hexdigest()


def pass_order(version):
    """Which pass Pillow runs first (see `PillowOrder` in src/io/resample.rs)."""
    major, minor = (int(v) for v in version.split(".")[:2])
    if (major, minor) < (12, 2):
        return "horizontal_first"
    if major < 13:
        return "pillow12_2"
    return "pillow13"


def main():
    base = os.path.join("tests", "fixtures", "io", "resize")
    tag = "pillow-" + ".".join(PIL.__version__.split(".")[:2])
    root = os.path.join(base, tag)
    os.makedirs(root, exist_ok=True)
    # Outputs already stored by another Pillow version are referenced, not stored again.
    known = {}
    for other in sorted(os.listdir(base)):
        mpath = os.path.join(base, other, "manifest.json")
        if other != tag and os.path.exists(mpath):
            for c in json.load(open(mpath))["cases"]:
                if c.get("file"):
                    known[c["sha256"]] = c["file"]

    def store(im, name, wanted):
        sha = digest(im)
        if sha in known:
            return known[sha], sha
        if not wanted:
            return None, sha
        im.save(os.path.join(root, name), optimize=True)
        return f"{tag}/{name}", sha

    # (3, 400): taller than 100x its width, the case Pillow 12.2 resizes vertically first.
    sizes = [(512, 512), (512, 496), (1024, 512), (512, 1024), (100, 37), (240, 240),
             (17, 300), (3, 400)]
    cases = []
    seed = 1
    for (w, h) in sizes:
        for ch, mode in ((1, "gray"), (3, "rgb")):
            for kind in ("random", "smooth"):
                seed += 1
                arr = make_input(kind, w, h, ch, seed)
                out = to_pil(arr).resize((OUT, OUT), Image.BICUBIC)
                wanted = kind == "smooth" or (
                    (w, h) != (OUT, OUT) and (ch == 1 or (w, h) == (100, 37)))
                file, sha = store(out, f"bicubic_{w}x{h}_{mode}_{kind}.png", wanted)
                cases.append(dict(filter="bicubic", file=file, width=w, height=h,
                                  channels=ch, content=kind, seed=seed, sha256=sha))
    # NEAREST (masks): Pillow's `convert('L')` then `resize(NEAREST)`.
    for (w, h) in [(512, 512), (512, 496), (1024, 512), (100, 37), (17, 300), (480, 480),
                   (720, 720), (333, 241), (240, 240)]:
        arr = make_input("pattern", w, h, 1, 0)
        out = to_pil(arr).resize((OUT, OUT), Image.NEAREST)
        file, sha = store(out, f"nearest_{w}x{h}.png", True)
        cases.append(dict(filter="nearest", file=file, width=w, height=h, channels=1,
                          content="pattern", seed=0, sha256=sha))
    # Pillow's RGB -> L conversion (ITU-R 601-2 luma in fixed point) for colour masks.
    arr = make_input("random", 64, 48, 3, 99)
    lum = to_pil(arr).convert("L")
    file, sha = store(lum, "luma_64x48_rgb_random.png", True)
    cases.append(dict(filter="luma", file=file, width=64, height=48, channels=3,
                      content="random", seed=99, sha256=sha))
    manifest = dict(pillow=PIL.__version__, python=sys.version.split()[0], out=OUT,
                    order=pass_order(PIL.__version__), cases=cases)
    with open(os.path.join(root, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
