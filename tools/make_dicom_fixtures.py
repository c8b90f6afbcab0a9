"""Writes the small synthetic DICOM fixtures of tests/fixtures/dicom/ (run by hand, not by CI).

    /work/pyref/bin/python tools/make_dicom_fixtures.py tests/fixtures/dicom

Needs pydicom 3 (+ pylibjpeg, pylibjpeg-openjpeg and pyjpegls for the compressed ones).
Every pixel value is a simple formula of (frame, row, column) so that the Rust tests can
state the expected modality values independently of any decoder.
"""
import shutil
import sys
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.fileset import FileSet
from pydicom.sequence import Sequence
from pydicom.uid import (
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)

ROOT_UID = "1.2.826.0.1.3680043.10.1432."  # fixed prefix; UIDs below are deterministic
CT_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
ENHANCED_CT = "1.2.840.10008.5.1.4.1.1.2.1"
CR_STORAGE = "1.2.840.10008.5.1.4.1.1.1"
US_STORAGE = "1.2.840.10008.5.1.4.1.1.6.1"
SC_STORAGE = "1.2.840.10008.5.1.4.1.1.7"


def uid(name):
    return generate_uid(prefix=ROOT_UID, entropy_srcs=[name])


def base(name, sop_class, ts, modality="CT", study="study-a", series="series-a"):
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = uid(name)
    meta.TransferSyntaxUID = ts
    meta.ImplementationClassUID = ROOT_UID + "1"
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = uid(name)
    ds.PatientName = "Fixture^Synthetic"
    ds.PatientID = "FIX-001"
    ds.StudyInstanceUID = uid(study)
    ds.SeriesInstanceUID = uid(series)
    ds.StudyDate = "20240101"
    ds.StudyTime = "120000"
    ds.StudyID = "1"
    ds.AccessionNumber = ""
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = "Synthetic " + study
    ds.SeriesDescription = "Synthetic " + series
    ds.Modality = modality
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    return ds


def grey(ds, arr, bits_stored, signed):
    arr = np.asarray(arr)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = ds.get("PhotometricInterpretation", "MONOCHROME2")
    ds.Rows, ds.Columns = arr.shape[-2:]
    if arr.ndim == 3:
        ds.NumberOfFrames = arr.shape[0]
    alloc = 8 if bits_stored <= 8 else 16
    ds.BitsAllocated = alloc
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 1 if signed else 0
    dtype = {(8, False): "<u1", (8, True): "<i1", (16, False): "<u2", (16, True): "<i2"}[(alloc, signed)]
    ds.PixelData = arr.astype(dtype).tobytes()


def colour8(ds, rows, cols, photometric, planar):
    """The image pixel attributes of 8-bit, 3-sample colour."""
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = photometric
    ds.PlanarConfiguration = planar
    ds.Rows, ds.Columns = rows, cols
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0


def save(ds, path, implicit=False, big=False):
    path.parent.mkdir(parents=True, exist_ok=True)
    if big:
        ds.file_meta.TransferSyntaxUID = ExplicitVRBigEndian
        # pydicom writes OW bytes as given: swap 16-bit samples to big endian by hand.
        ds.PixelData = np.frombuffer(ds.PixelData, "<u2").astype(">u2").tobytes()
        ds["PixelData"].VR = "OW"
    elif implicit:
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    # The encoding follows the file meta TransferSyntaxUID set above.
    pydicom.dcmwrite(path, ds, enforce_file_format=True)


def ct_rescale_windows(out):
    # stored v = 10*r + c - 20 (signed 12-bit in 16), modality = 2 v - 1024.
    r, c = np.mgrid[0:6, 0:8]
    v = (10 * r + c - 20).astype(np.int16)
    ds = base("ct_rescale_windows", CT_STORAGE, ExplicitVRLittleEndian)
    ds.PhotometricInterpretation = "MONOCHROME2"
    grey(ds, v, 12, True)
    # Garbage in the 4 unused high bits of every sample: must be masked off.
    raw = np.frombuffer(ds.PixelData, "<u2").copy()
    raw = (raw & 0x0FFF) | 0xA000
    ds.PixelData = raw.tobytes()
    ds.RescaleSlope = "2"
    ds.RescaleIntercept = "-1024"
    ds.WindowCenter = ["40", "-600"]
    ds.WindowWidth = ["400", "1500"]
    ds.WindowCenterWidthExplanation = ["SOFT TISSUE", "LUNG"]
    ds.PixelSpacing = ["0.5", "0.75"]
    ds.SliceThickness = "2.5"
    ds.ImagePositionPatient = ["-10", "-20", "30"]
    ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
    save(ds, out / "ct_rescale_windows.dcm")
    # The same image in the other uncompressed encodings.
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = uid("ct_implicit")
    save(ds, out / "ct_rescale_windows_implicit.dcm", implicit=True)
    ds_be = pydicom.dcmread(out / "ct_rescale_windows.dcm")
    ds_be.file_meta.MediaStorageSOPInstanceUID = ds_be.SOPInstanceUID = uid("ct_be")
    save(ds_be, out / "ct_rescale_windows_bigendian.dcm", big=True)


def cr_mono1(out):
    # 8-bit unsigned MONOCHROME1, v = 16 r + c, sigmoid VOI.
    r, c = np.mgrid[0:4, 0:16]
    v = (16 * r + c).astype(np.uint8)
    ds = base("cr_mono1", CR_STORAGE, ExplicitVRLittleEndian, modality="CR", series="series-cr")
    ds.PhotometricInterpretation = "MONOCHROME1"
    grey(ds, v, 8, False)
    ds.WindowCenter = "32"
    ds.WindowWidth = "64"
    ds.VOILUTFunction = "SIGMOID"
    save(ds, out / "cr_mono1_sigmoid.dcm")


def colour(out):
    # 4 x 3 RGB, R = 60 c, G = 100 r, B = 200 - 50 c, planar configuration 1.
    r, c = np.mgrid[0:3, 0:4]
    rgb = np.stack([60 * c, 100 * r, 200 - 50 * c], axis=-1).astype(np.uint8)
    ds = base("rgb_planar", US_STORAGE, ExplicitVRLittleEndian, modality="US", series="series-us")
    colour8(ds, 3, 4, "RGB", 1)
    ds.PixelData = np.ascontiguousarray(rgb.transpose(2, 0, 1)).tobytes()
    save(ds, out / "rgb_planar.dcm")

    # YBR_FULL interleaved: grey levels (Cb = Cr = 128) so RGB = Y exactly.
    ds = base("ybr_full", US_STORAGE, ExplicitVRLittleEndian, modality="US", series="series-us")
    y = (20 * r + 5 * c).astype(np.uint8)
    ybr = np.stack([y, np.full_like(y, 128), np.full_like(y, 128)], axis=-1)
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "YBR_FULL"
    ds.PlanarConfiguration = 0
    ds.Rows, ds.Columns = 3, 4
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = ybr.tobytes()
    save(ds, out / "ybr_full.dcm")

    # YBR_FULL_422: Y0 Y1 Cb Cr per pixel pair; grey again.
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = uid("ybr_full_422")
    ds.PhotometricInterpretation = "YBR_FULL_422"
    packed = []
    for row in y:
        for k in range(0, 4, 2):
            packed += [row[k], row[k + 1], 128, 128]
    ds.PixelData = bytes(packed)
    save(ds, out / "ybr_full_422.dcm")

    # PALETTE COLOR, 8-bit indices 0..3 with 16-bit LUT entries.
    ds = base("palette", US_STORAGE, ExplicitVRLittleEndian, modality="US", series="series-us")
    idx = ((r + c) % 4).astype(np.uint8)
    grey(ds, idx, 8, False)
    ds.PhotometricInterpretation = "PALETTE COLOR"
    for name, vals in (("Red", [0, 65535, 0, 32896]), ("Green", [0, 0, 65535, 32896]), ("Blue", [65535, 0, 0, 32896])):
        setattr(ds, f"{name}PaletteColorLookupTableDescriptor", [4, 0, 16])
        setattr(ds, f"{name}PaletteColorLookupTableData", np.array(vals, "<u2").tobytes())
    save(ds, out / "palette.dcm")


def enhanced(out):
    # 3 frames of 4 x 5, stored v = 100 f + 5 r + c, unsigned 16; per-frame intercepts.
    f, r, c = np.mgrid[0:3, 0:4, 0:5]
    v = (100 * f + 5 * r + c).astype(np.uint16)
    ds = base("enhanced", ENHANCED_CT, ExplicitVRLittleEndian)
    ds.PhotometricInterpretation = "MONOCHROME2"
    grey(ds, v, 16, False)
    shared = Dataset()
    pm = Dataset()
    pm.PixelSpacing = ["0.8", "0.9"]
    pm.SliceThickness = "3"
    shared.PixelMeasuresSequence = Sequence([pm])
    po = Dataset()
    po.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
    shared.PlaneOrientationSequence = Sequence([po])
    voi = Dataset()
    voi.WindowCenter = ["50", "150"]
    voi.WindowWidth = ["100", "300"]
    voi.WindowCenterWidthExplanation = ["NARROW", "WIDE"]
    voi.VOILUTFunction = "LINEAR_EXACT"
    shared.FrameVOILUTSequence = Sequence([voi])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    per = []
    for k in range(3):
        item = Dataset()
        pp = Dataset()
        pp.ImagePositionPatient = ["0", "0", str(5 * k)]
        item.PlanePositionSequence = Sequence([pp])
        pvt = Dataset()
        pvt.RescaleSlope = "1"
        pvt.RescaleIntercept = str(-1000 + 10 * k)
        pvt.RescaleType = "HU"
        item.PixelValueTransformationSequence = Sequence([pvt])
        per.append(item)
    ds.PerFrameFunctionalGroupsSequence = Sequence(per)
    save(ds, out / "enhanced_multiframe.dcm")


def compressed(out):
    # 2 frames 32 x 32, v = 1000 f + 32 r + c (unsigned 16), in RLE, JPEG-LS and JPEG 2000
    # (OpenJPEG needs at least 32 pixels for its default 6 resolution levels).
    f, r, c = np.mgrid[0:2, 0:32, 0:32]
    v = (1000 * f + 32 * r + c).astype(np.uint16)
    for name, ts in (("rle", RLELossless), ("jpegls", JPEGLSLossless), ("j2k", JPEG2000Lossless)):
        ds = base(f"mf_{name}", SC_STORAGE, ExplicitVRLittleEndian, modality="OT", series="series-" + name)
        ds.PhotometricInterpretation = "MONOCHROME2"
        grey(ds, v, 16, False)
        ds.compress(ts, v, encoding_plugin="pylibjpeg" if name == "j2k" else "")
        save(ds, out / f"multiframe_{name}.dcm")


def unsupported_and_broken(out):
    ds = base("mpeg2", SC_STORAGE, ExplicitVRLittleEndian, modality="XC", series="series-video")
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"
    ds.PhotometricInterpretation = "YBR_PARTIAL_420"
    ds.SamplesPerPixel = 3
    ds.Rows, ds.Columns = 16, 16
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PlanarConfiguration = 0
    ds.NumberOfFrames = 1
    from pydicom.encaps import encapsulate

    ds.PixelData = encapsulate([b"\x00\x00\x01\xb3" + bytes(60)])
    ds["PixelData"].VR = "OB"
    ds.save_as(out / "mpeg2.dcm", enforce_file_format=True)

    # Truncated: the last 50 bytes of the pixel data are cut off.
    data = (out / "ct_rescale_windows.dcm").read_bytes()
    (out / "truncated.dcm").write_bytes(data[:-50])
    (out / "not_dicom.txt").write_text("This is not a DICOM file.\n")


def trailing_bytes(out):
    """Complete pixel data followed by bytes that do not parse as elements: a trailing
    DataSetTrailingPadding (FFFC,FFFC) whose declared length runs past the end of the file,
    three stray bytes, and a run of empty (0000,0000) elements. pydicom opens them all; so
    must we (with a warning)."""
    data = (out / "ct_rescale_windows.dcm").read_bytes()
    cut_element = b"\xfc\xff\xfc\xffOB\x00\x00" + (4096).to_bytes(4, "little") + bytes(10)
    (out / "trailing_truncated_element.dcm").write_bytes(data + cut_element)
    (out / "trailing_junk.dcm").write_bytes(data + b"\x01\x02\x03")
    # A long run of zeros, which reads as empty (0000,0000) elements, ending in a cut element
    # header (4 bytes), in explicit and implicit VR: the shape of a damaged GE MR series.
    zeros = bytes(8 * 600) + bytes(4)
    (out / "trailing_zero_elements.dcm").write_bytes(data + zeros)
    implicit = (out / "ct_rescale_windows_implicit.dcm").read_bytes()
    (out / "trailing_zero_elements_implicit.dcm").write_bytes(implicit + zeros)


def voi_lut(out):
    """Stored v = 4 r + c + 100 (no rescale), no window, a VOI LUT Sequence of two LUTs: an
    8-bit ramp over 104..111 ("RAMP") and a 16-bit inverse over 100..115 ("INVERSE")."""
    r, c = np.mgrid[0:4, 0:4]
    ds = base("voi_lut", "1.2.840.10008.5.1.4.1.1.1", ExplicitVRLittleEndian, modality="CR")
    ds.PhotometricInterpretation = "MONOCHROME2"
    grey(ds, (4 * r + c + 100).astype(np.uint16), 12, False)
    ramp = Dataset()
    ramp.add_new(0x00283002, "US", [8, 104, 8])
    ramp.add_new(0x00283003, "LO", "RAMP")
    ramp.add_new(0x00283006, "US", [0, 36, 73, 109, 146, 182, 219, 255])
    inverse = Dataset()
    inverse.add_new(0x00283002, "US", [16, 100, 16])
    inverse.add_new(0x00283003, "LO", "INVERSE")
    inverse.add_new(0x00283006, "US", [65535 - 4369 * i for i in range(16)])
    ds.VOILUTSequence = Sequence([ramp, inverse])
    save(ds, out / "voi_lut.dcm")


def enhanced_per_frame(out):
    """3 frames of 2 x 3, stored v = 10 f + 3 r + c; each frame its own rescale (slope f + 1,
    intercept -100 f) and its own window (center 50 f, width 20 + 10 f, labelled F<f>) in the
    Per-Frame Functional Groups, nothing shared."""
    f, r, c = np.mgrid[0:3, 0:2, 0:3]
    ds = base("enhanced_per_frame", ENHANCED_CT, ExplicitVRLittleEndian, series="series-pf")
    ds.PhotometricInterpretation = "MONOCHROME2"
    grey(ds, (10 * f + 3 * r + c).astype(np.uint16), 16, False)
    per = []
    for k in range(3):
        item = Dataset()
        pvt = Dataset()
        pvt.RescaleSlope = str(k + 1)
        pvt.RescaleIntercept = str(-100 * k)
        pvt.RescaleType = "HU"
        item.PixelValueTransformationSequence = Sequence([pvt])
        voi = Dataset()
        voi.WindowCenter = str(50 * k)
        voi.WindowWidth = str(20 + 10 * k)
        voi.WindowCenterWidthExplanation = "F%d" % k
        item.FrameVOILUTSequence = Sequence([voi])
        per.append(item)
    ds.PerFrameFunctionalGroupsSequence = Sequence(per)
    save(ds, out / "enhanced_per_frame.dcm")


def overlays(out):
    """ct_rescale_windows.dcm plus two overlay planes: 6000 an ROI of 3 x 4 at row 2, column 3
    (1-based) with its main diagonal set, labelled "ROI-A"; 6002 a full-size graphic with the
    top-left and bottom-right pixels set. The pixels must load exactly as without them."""
    ds = pydicom.dcmread(out / "ct_rescale_windows.dcm")
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = uid("overlays")

    def packed(bits):
        bits = np.asarray(bits, dtype=np.uint8).ravel()
        bits = np.concatenate([bits, np.zeros((-len(bits)) % 16, np.uint8)])
        return np.packbits(bits, bitorder="little").tobytes()

    roi = np.zeros((3, 4), np.uint8)
    for i in range(3):
        roi[i, i] = 1
    full = np.zeros((6, 8), np.uint8)
    full[0, 0] = full[5, 7] = 1
    for group, bits, origin, kind, label in [
        (0x6000, roi, [2, 3], "R", "ROI-A"),
        (0x6002, full, [1, 1], "G", None),
    ]:
        ds.add_new((group, 0x0010), "US", bits.shape[0])
        ds.add_new((group, 0x0011), "US", bits.shape[1])
        ds.add_new((group, 0x0040), "CS", kind)
        ds.add_new((group, 0x0050), "SS", origin)
        ds.add_new((group, 0x0100), "US", 1)
        ds.add_new((group, 0x0102), "US", 0)
        if label:
            ds.add_new((group, 0x1500), "LO", label)
        ds.add_new((group, 0x3000), "OW", packed(bits))
    save(ds, out / "overlays.dcm")


def j2k_ybr_no_mct(out):
    """32 x 32 RGB colours (big enough for OpenJPEG's default resolution levels) stored as YBR_FULL samples in a lossless JPEG 2000 codestream without
    the multiple component transform (MCT 0): the decoder hands back Y, Cb, Cr, which the
    reader must convert to RGB itself."""
    from pydicom.pixels import convert_color_space

    r, c = np.mgrid[0:32, 0:32]
    rgb = np.stack([8 * c, 7 * r + 10, 250 - 5 * c - 2 * r], axis=-1).astype(np.uint8)
    ybr = convert_color_space(rgb, "RGB", "YBR_FULL")
    ds = base("j2k_ybr", SC_STORAGE, ExplicitVRLittleEndian, modality="OT", series="series-ybr")
    colour8(ds, 32, 32, "YBR_FULL", 0)
    ds.PixelData = ybr.tobytes()
    ds.compress(JPEG2000Lossless, ybr, photometric_interpretation="YBR_FULL", use_mct=False,
                generate_instance_uid=False)
    save(ds, out / "j2k_ybr_full_no_mct.dcm")


def rt_dose(out):
    """RT Dose, 2 frames of 3 x 4, stored v = 1000 f + 10 r + c (unsigned 16), DoseGridScaling
    0.001: the dose in Gy is v / 1000."""
    f, r, c = np.mgrid[0:2, 0:3, 0:4]
    ds = base("rt_dose", "1.2.840.10008.5.1.4.1.1.481.2", ExplicitVRLittleEndian,
              modality="RTDOSE", series="series-dose")
    ds.PhotometricInterpretation = "MONOCHROME2"
    grey(ds, (1000 * f + 10 * r + c).astype(np.uint16), 16, False)
    ds.DoseUnits = "GY"
    ds.DoseType = "PHYSICAL"
    ds.DoseSummationType = "PLAN"
    ds.DoseGridScaling = "0.001"
    ds.GridFrameOffsetVector = ["0", "2.5"]
    ds.FrameIncrementPointer = 0x3004000C
    ds.ImagePositionPatient = ["0", "0", "0"]
    ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
    ds.PixelSpacing = ["2", "2"]
    save(ds, out / "rt_dose.dcm")


def dicomdir_nooffset(out):
    """dicomdir_nooffset/DICOMDIR: dicomdir_set/DICOMDIR changed like pydicom's test file
    DICOMDIR-nooffset: the last directory record loses its two offset elements (24 bytes)
    while its item keeps the old length, so the item claims 24 bytes more than the file holds;
    the sequence length is corrected. pydicom reads the record up to the end of the file. The
    referenced images are not copied (the references are what the test compares)."""
    import struct

    b = bytearray((out / "dicomdir_set" / "DICOMDIR").read_bytes())
    seq = b.find(b"\x04\x00\x20\x12SQ")
    seq_len = struct.unpack_from("<I", b, seq + 8)[0]
    pos, end, last = seq + 12, seq + 12 + seq_len, None
    while pos < end:
        last = pos
        pos += 8 + struct.unpack_from("<I", b, pos + 4)[0]
    for tag in (b"\x04\x00\x00\x14UL", b"\x04\x00\x20\x14UL"):
        at = b.find(tag, last)
        del b[at:at + 12]
    struct.pack_into("<I", b, seq + 8, seq_len - 24)
    (out / "dicomdir_nooffset").mkdir(exist_ok=True)
    (out / "dicomdir_nooffset" / "DICOMDIR").write_bytes(bytes(b))


def studies(out):
    """A folder of loose files (two studies, three series) and a DICOMDIR set of the same."""
    folder = out / "study_folder"
    if folder.exists():
        shutil.rmtree(folder)
    made = []
    # Series A of study A: 3 axial slices, positions z = 10, 0, 5 with instance numbers that
    # disagree with the positions (the position wins), files named against the order.
    for name, z, inst in (("c.dcm", 10, 1), ("a.dcm", 0, 3), ("b.dcm", 5, 2)):
        ds = base("slice" + name, CT_STORAGE, ExplicitVRLittleEndian)
        ds.PhotometricInterpretation = "MONOCHROME2"
        grey(ds, np.full((4, 4), z, np.int16), 16, True)
        ds.ImagePositionPatient = ["0", "0", str(z)]
        ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
        ds.InstanceNumber = inst
        made.append((folder / "sub" / name, ds))
    # Series B of study A: no positions, ordered by InstanceNumber.
    for name, inst in (("y.dcm", 2), ("x.dcm", 1)):
        ds = base("b" + name, CT_STORAGE, ExplicitVRLittleEndian, series="series-b")
        ds.SeriesNumber = 2
        ds.PhotometricInterpretation = "MONOCHROME2"
        grey(ds, np.full((4, 4), inst, np.int16), 16, True)
        ds.InstanceNumber = inst
        made.append((folder / name, ds))
    # Study B: one MR slice.
    ds = base("mr", "1.2.840.10008.5.1.4.1.1.4", ExplicitVRLittleEndian, modality="MR", study="study-b", series="series-mr")
    ds.PhotometricInterpretation = "MONOCHROME2"
    grey(ds, np.arange(16).reshape(4, 4), 16, False)
    made.append((folder / "other" / "mr.dcm", ds))
    for path, ds in made:
        save(ds, path)
    (folder / "README.txt").write_text("not DICOM\n")
    (folder / "notes.bin").write_bytes(bytes(range(256)))
    # Starts like DICOM, then garbage: an unreadable file the scan must list as an error.
    (folder / "broken.dcm").write_bytes(bytes(128) + b"DICM" + b"\x02\x00\x00\x00UL\x04\x00" + bytes(7))

    dd = out / "dicomdir_set"
    if dd.exists():
        shutil.rmtree(dd)
    fs = FileSet()
    for _, ds in made:
        fs.add(ds)
    fs.write(dd)


def main(out):
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ct_rescale_windows(out)
    cr_mono1(out)
    colour(out)
    enhanced(out)
    compressed(out)
    unsupported_and_broken(out)
    trailing_bytes(out)
    voi_lut(out)
    enhanced_per_frame(out)
    overlays(out)
    j2k_ybr_no_mct(out)
    rt_dose(out)
    studies(out)
    dicomdir_nooffset(out)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/dicom")
