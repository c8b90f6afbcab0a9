"""Writes tests/fixtures/augment/: torch reference outputs of the few-shot augmentation
(spec 7.2) for the Rust parity test tests/augment.rs.

Run by hand from the repository root with the reference venv:

    /work/pyref/bin/python tools/eval/make_augment_fixtures.py

The reference (MVFA `utils.augment`) builds, for a group of k images [k, C, H, W] and masks
[k, 1, H, W], eleven blocks of k: original, rotations by -pi/8, -pi/16, +pi/16, +pi/8,
shifts (0.1, 0.1), (-0.1, 0.1), (-0.1, -0.1), (0.1, -0.1), horizontal flip, vertical flip.
Rotation and shift are `F.affine_grid(theta, x.size())` + `F.grid_sample(x, grid,
padding_mode="reflection")` with the defaults bilinear / align_corners=False; theta is built as
a float32 tensor (`torch.tensor(angle)` is float32, cos/sin in float32). Flips are kornia's
hflip / vflip, i.e. `torch.flip` on the last / second-last dimension.

Files (all little-endian float32, C order):
- small_images.bin  [2, 3, 28, 36] input images (random, so every gradient is exercised)
- small_masks.bin   [2, 1, 28, 36] input masks (binary blobs)
- small_images_aug.bin [22, 3, 28, 36], small_masks_aug.bin [22, 1, 28, 36]
- large.json: a 240x240 three-channel image defined by a formula (regenerated in Rust), with
  per-output sums and values at fixed sample positions for the eleven outputs.
"""

import json
import math
import os

import numpy as np
import torch
import torch.nn.functional as F

OUT = os.path.join("tests", "fixtures", "augment")
ANGLES = [-np.pi / 8, -np.pi / 16, np.pi / 16, np.pi / 8]
SHIFTS = [(0.1, 0.1), (-0.1, 0.1), (-0.1, -0.1), (0.1, -0.1)]


def warp(x, theta_rows):
    theta = torch.tensor(theta_rows)[None, ...].type(torch.FloatTensor).repeat(x.shape[0], 1, 1)
    grid = F.affine_grid(theta, list(x.size()), align_corners=False)
    return F.grid_sample(
        x, grid, mode="bilinear", padding_mode="reflection", align_corners=False
    )


def rotation(angle):
    t = torch.tensor(angle)  # float32, as in the reference
    return [[torch.cos(t), -torch.sin(t), 0], [torch.sin(t), torch.cos(t), 0]]


def augment(x):
    blocks = [x]
    for angle in ANGLES:
        blocks.append(warp(x, rotation(angle)))
    for a, b in SHIFTS:
        blocks.append(warp(x, [[1, 0, a], [0, 1, b]]))
    blocks.append(torch.flip(x, dims=[-1]))
    blocks.append(torch.flip(x, dims=[-2]))
    return torch.cat(blocks, dim=0)


def large_image():
    """The formula tests/augment.rs regenerates: smooth shading plus a bright square."""
    h = w = 240
    img = np.zeros((3, h, w), dtype=np.float64)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    for c in range(3):
        img[c] = 0.5 + 0.3 * np.sin(yy / 17.0 + c) * np.cos(xx / 23.0 - 0.5 * c)
    img[:, 60:120, 150:200] = 0.95
    return img.astype(np.float32)


def write(name, t):
    a = t.detach().numpy().astype("<f4")
    a.tofile(os.path.join(OUT, name))
    return list(a.shape)


def main():
    torch.manual_seed(0)
    os.makedirs(OUT, exist_ok=True)
    rng = np.random.default_rng(7)

    k, c, h, w = 2, 3, 28, 36
    images = torch.from_numpy(rng.random((k, c, h, w)).astype(np.float32))
    yy, xx = np.mgrid[0:h, 0:w]
    masks = np.zeros((k, 1, h, w), dtype=np.float32)
    masks[0, 0] = ((yy - 8) ** 2 + (xx - 25) ** 2 <= 25).astype(np.float32)
    masks[1, 0, 15:24, 3:12] = 1.0
    masks = torch.from_numpy(masks)

    shapes = {
        "small_images": write("small_images.bin", images),
        "small_masks": write("small_masks.bin", masks),
        "small_images_aug": write("small_images_aug.bin", augment(images)),
        "small_masks_aug": write("small_masks_aug.bin", augment(masks)),
    }

    big = torch.from_numpy(large_image())[None]
    out = augment(big)[:, :, :, :]  # [11, 3, 240, 240]
    positions = [(int(p // 240), int(p % 240)) for p in rng.choice(240 * 240, 64, replace=False)]
    positions += [(0, 0), (0, 239), (239, 0), (239, 239), (120, 120), (60, 150), (119, 199)]
    large = {
        "height": 240,
        "width": 240,
        "sums": [[float(out[i, ch].double().sum()) for ch in range(3)] for i in range(11)],
        "positions": positions,
        "samples": [
            [[float(out[i, ch, y, x]) for (y, x) in positions] for ch in range(3)]
            for i in range(11)
        ],
    }
    meta = {
        "generator": "tools/eval/make_augment_fixtures.py",
        "torch_version": torch.__version__,
        "shapes": shapes,
        "large": large,
    }
    with open(os.path.join(OUT, "meta.json"), "w") as f:
        json.dump(meta, f, separators=(",", ":"))
        f.write("\n")
    print("wrote", OUT, shapes)


if __name__ == "__main__":
    main()
