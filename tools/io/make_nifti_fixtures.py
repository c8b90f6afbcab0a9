#!/usr/bin/env python3
"""Write small synthetic NIfTI-1 files with known orientations for `tests/io_raster_nifti.rs`.

Run by hand from the repository root:

    /work/pyref/bin/python tools/io/make_nifti_fixtures.py

nibabel (PyPI) is the independent reference. For every file, `expected.json` holds:
- `axcodes`: nibabel's `aff2axcodes` of the affine nibabel picks (sform if sform_code > 0,
  else qform), i.e. the direction in which each voxel index increases;
- `display`: the slices the viewer must show, derived from nibabel's `as_closest_canonical`
  (RAS+ voxel order) and `get_fdata()` (scl_slope / scl_inter applied):
  `display[s][r][c] = canonical[ni - 1 - c, nj - 1 - r, s]`, i.e. columns run from patient
  right to patient left (radiological convention: patient left on screen right), rows from
  anterior to posterior (anterior up), slices from inferior to superior.
"""
import json
import os

import nibabel as nib
import numpy as np

ROOT = os.path.join("tests", "fixtures", "io", "nifti")


def volume(shape):
    i, j, k = np.meshgrid(*[np.arange(n) for n in shape[:3]], indexing="ij")
    return (1 + i + 10 * j + 100 * k).astype(np.int16)


def display_of(img):
    can = nib.as_closest_canonical(img)
    data = can.get_fdata()
    if data.ndim == 4:
        data = data[..., 0]
    ni, nj, nk = data.shape
    out = []
    for s in range(nk):
        out.append([[float(data[ni - 1 - c, nj - 1 - r, s]) for c in range(ni)]
                    for r in range(nj)])
    return out


def save(name, img, cases, note):
    path = os.path.join(ROOT, name)
    nib.save(img, path)
    back = nib.load(path)  # what is on disk, as nibabel reads it
    cases.append(dict(file=name, note=note,
                      axcodes="".join(nib.aff2axcodes(back.affine)),
                      shape=list(back.shape[:3]),
                      sform_code=int(back.header["sform_code"]),
                      qform_code=int(back.header["qform_code"]),
                      display=display_of(back)))


def main():
    os.makedirs(ROOT, exist_ok=True)
    cases = []
    shape = (5, 4, 3)

    # 1. RAS identity with scaling: value = raw * 2 - 10.
    img = nib.Nifti1Image(volume(shape), np.diag([1.0, 1.0, 1.0, 1.0]))
    img.header.set_slope_inter(2.0, -10.0)
    save("ras_identity_scaled.nii", img, cases, "RAS identity, scl_slope 2, scl_inter -10")

    # 2. LPS (DICOM-like): i -> patient left, j -> posterior, k -> superior.
    aff = np.diag([-0.8, -0.9, 2.5, 1.0])
    aff[:3, 3] = [10, 20, -30]
    save("lps_flipped.nii.gz", nib.Nifti1Image(volume(shape), aff), cases,
         "LPS diagonal, gzipped")

    # 3. Permuted axes: i -> anterior, j -> superior, k -> right (a coronal-ish acquisition).
    aff = np.array([[0, 0, 1.5, 0], [2.0, 0, 0, 0], [0, 3.0, 0, 0], [0, 0, 0, 1]], float)
    save("permuted_asr.nii", nib.Nifti1Image(volume(shape), aff), cases,
         "permuted: i->A, j->S, k->R")

    # 4. qform only (sform_code 0), improper rotation (qfac -1): i -> A, j -> L, k -> I.
    aff = np.array([[0, -1.0, 0, 5], [2.0, 0, 0, 6], [0, 0, -3.0, 7], [0, 0, 0, 1]], float)
    img = nib.Nifti1Image(volume(shape), None)
    img.set_qform(aff, code=1)
    img.set_sform(None, code=0)
    save("qform_only_ali.nii", img, cases, "qform only, qfac -1: i->A, j->L, k->I")

    # 5. Oblique sform (20 degrees about z) on float32 data, 4-D with two volumes.
    t = np.deg2rad(20)
    rot = np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1]])
    aff = np.eye(4)
    aff[:3, :3] = rot @ np.diag([-1.0, 1.0, 1.0])
    data = np.stack([volume(shape).astype(np.float32) * 0.5,
                     np.zeros(shape, np.float32)], axis=-1)
    save("oblique_4d_float.nii", nib.Nifti1Image(data, aff), cases,
         "oblique (20 deg about z, i flipped), float32, 4-D: first volume shown")

    with open(os.path.join(ROOT, "expected.json"), "w") as f:
        json.dump(dict(nibabel=nib.__version__, cases=cases), f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
