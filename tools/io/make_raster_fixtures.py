#!/usr/bin/env python3
"""Write tiny raster files with Pillow (an independent encoder) for `tests/io_raster.rs`.

Run by hand from the repository root:

    /work/pyref/bin/python tools/io/make_raster_fixtures.py

`expected.json` lists, per file: the mode Pillow wrote, the expected channel layout after
loading (`gray` keeps raw values, colour becomes `rgb`, alpha dropped) and the expected
samples (row-major, channels interleaved) as Pillow decodes them. 8-bit colour with only
neutral pixels (R = G = B) is expected as grey. JPEG entries carry a
tolerance because decoders may differ by a grey level or two.
"""
import json
import os

import numpy as np
from PIL import Image

ROOT = os.path.join("tests", "fixtures", "io", "raster")
W, H = 7, 5


def grad8(seed):
    y, x = np.mgrid[0:H, 0:W]
    return ((x * 37 + y * 23 + seed * 50) % 256).astype(np.uint8)


def main():
    os.makedirs(ROOT, exist_ok=True)
    g8 = grad8(0)
    g16 = (grad8(1).astype(np.uint16) * 200 + 1000).astype(np.uint16)  # 1000..~52000
    a8 = grad8(2)
    rgb = np.stack([grad8(0), grad8(1), grad8(3)], axis=-1)
    files = []

    def add(name, img, layout, expected, tol=0, **save):
        img.save(os.path.join(ROOT, name), **save)
        files.append(dict(file=name, mode=img.mode, layout=layout, width=W, height=H,
                          tolerance=tol, samples=[int(v) for v in np.ravel(expected)]))

    add("gray8.png", Image.fromarray(g8), "gray", g8)
    add("gray16.png", Image.fromarray(g16), "gray", g16)
    add("gray_alpha.png", Image.fromarray(np.stack([g8, a8], -1), "LA"), "gray", g8)
    add("rgb.png", Image.fromarray(rgb), "rgb", rgb)
    add("rgba.png", Image.fromarray(np.concatenate([rgb, a8[..., None]], -1), "RGBA"),
        "rgb", rgb)
    pal = Image.fromarray(rgb).quantize(colors=16, method=Image.Quantize.MEDIANCUT)
    add("palette.png", pal, "rgb", np.asarray(pal.convert("RGB")))
    add("gray8.tif", Image.fromarray(g8), "gray", g8)
    add("gray16.tif", Image.fromarray(g16), "gray", g16)
    add("rgb.tif", Image.fromarray(rgb), "rgb", rgb)
    # Pillow stores an L image in BMP with a grey palette: neutral colour loads as grey.
    add("gray8.bmp", Image.fromarray(g8), "gray", g8)
    add("rgb.bmp", Image.fromarray(rgb), "rgb", rgb)
    jg = Image.fromarray(g8)
    jg.save(os.path.join(ROOT, "gray.jpg"), quality=95)
    add("gray.jpg", jg, "gray", np.asarray(Image.open(os.path.join(ROOT, "gray.jpg"))),
        tol=2, quality=95)
    jc = Image.fromarray(rgb)
    jc.save(os.path.join(ROOT, "rgb.jpg"), quality=95, subsampling=0)
    add("rgb.jpg", jc, "rgb", np.asarray(Image.open(os.path.join(ROOT, "rgb.jpg"))),
        tol=3, quality=95, subsampling=0)
    # Not an image, but named like one: must give an error naming the file.
    with open(os.path.join(ROOT, "not_an_image.png"), "wb") as f:
        f.write(b"this is not a PNG file\n")
    with open(os.path.join(ROOT, "expected.json"), "w") as f:
        json.dump(dict(files=files), f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
