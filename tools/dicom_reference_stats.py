"""Reference pixel statistics of the DICOM corpus, written by an independent decoder.

Run by hand (not by CI):
    /work/pyref/bin/python tools/dicom_reference_stats.py ../shared/data/dicom \
        > tests/fixtures/dicom/reference_stats.csv

Needs pydicom 3.0.2 with pylibjpeg (+ -libjpeg, -openjpeg, -rle) and pyjpegls. For every file
of MANIFEST.csv whose reference decode is "ok" it writes the statistics of the pixel values in
the units `mvfa_studio::io::dicom::load_dicom` promises:
- grey: stored values after the modality LUT (RescaleSlope/Intercept, taken per frame from the
  per-frame functional groups, then the shared ones, then the top level; RT Dose's
  DoseGridScaling as the slope when there is no RescaleSlope; or a Modality LUT Sequence),
  1-bit data as 0/1;
- colour: RGB on the 0..255 scale (YBR converted by pydicom, PALETTE COLOR expanded through its
  LUT with 16-bit entries divided by 257).
The Rust conformance test (tests/io_dicom_corpus.rs) compares its own decode with these.
"""
import csv
import gzip
import io
import sys
from pathlib import Path

import numpy as np
import pydicom
from pydicom.pixels import apply_color_lut, apply_modality_lut


def frame_rescale(ds, i):
    """(slope, intercept) of frame i: per-frame group, shared group, top level, identity."""
    for seq_name, idx in (("PerFrameFunctionalGroupsSequence", i), ("SharedFunctionalGroupsSequence", 0)):
        seq = ds.get(seq_name)
        if seq is not None and len(seq) > idx:
            pvt = seq[idx].get("PixelValueTransformationSequence")
            if pvt is not None and len(pvt) > 0 and "RescaleSlope" in pvt[0]:
                return float(pvt[0].RescaleSlope), float(pvt[0].RescaleIntercept)
    if "RescaleSlope" in ds:
        return float(ds.RescaleSlope), float(ds.get("RescaleIntercept", 0.0))
    if "DoseGridScaling" in ds:
        return float(ds.DoseGridScaling), float(ds.get("RescaleIntercept", 0.0))
    return 1.0, 0.0


def values(ds):
    arr = ds.pixel_array
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    pi = ds.PhotometricInterpretation
    if pi == "PALETTE COLOR":
        rgb = apply_color_lut(arr, ds).astype(np.float64)
        if rgb.max() > 255:
            rgb = rgb / 257.0
        return rgb, 3
    if ds.SamplesPerPixel == 3:
        return arr.astype(np.float64), 3
    if frames == 1:
        arr = arr[None, ...]
    if "ModalityLUTSequence" in ds:
        return apply_modality_lut(arr, ds).astype(np.float64), 1
    out = np.empty(arr.shape, dtype=np.float64)
    for i in range(arr.shape[0]):
        slope, intercept = frame_rescale(ds, i)
        out[i] = arr[i].astype(np.float64) * slope + intercept
    return out, 1


def main(root):
    root = Path(root)
    w = csv.writer(sys.stdout, lineterminator="\n")
    w.writerow(["file", "channels", "min", "max", "mean", "std"])
    with open(root / "MANIFEST.csv", newline="") as f:
        for row in csv.DictReader(f):
            if not row["pixel_decode"].startswith("ok"):
                continue
            path = root / row["file"]
            data = path.read_bytes()
            if data[:2] == b"\x1f\x8b":
                data = gzip.decompress(data)
            ds = pydicom.dcmread(io.BytesIO(data))
            try:
                v, ch = values(ds)
            except Exception as e:  # noqa: BLE001 - report and go on
                print(f"{row['file']}: {e}", file=sys.stderr)
                continue
            w.writerow([row["file"], ch, f"{v.min():.6g}", f"{v.max():.6g}", f"{v.mean():.9g}", f"{v.std():.9g}"])


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "../shared/data/dicom")
