//! NIfTI-1 volumes (`.nii`, `.nii.gz`, `.hdr`/`.img` pairs) as axial slice stacks in
//! radiological display orientation.
//!
//! What is done, exactly:
//! 1. The header and voxels are read with the `nifti` crate. For 4-D (or higher) files only the
//!    first volume (t = 0) is shown. Voxel values get `value * scl_slope + scl_inter` when
//!    `scl_slope` is finite and non-zero (NIfTI-1: slope 0 means "no scaling"); non-finite
//!    values become 0. RGB24 / RGBA32 voxels become [`Channels::Rgb`] (alpha dropped).
//! 2. The voxel-to-world affine (world = NIfTI RAS+: +x right, +y anterior, +z superior, mm) is
//!    the sform when `sform_code > 0`, else the qform when `qform_code > 0` (quaternion, qfac
//!    from `pixdim[0]`), else NIfTI-1 "method 1" `diag(pixdim[1..4])`, i.e. voxel axes taken as
//!    R, A, S (nibabel would flip x there; the standard does not). A singular affine falls back
//!    to the next method.
//! 3. Each voxel axis is matched to the world axis it is most parallel to (greedy on the
//!    largest |direction cosine|, like nibabel's `io_orientation`), giving an orientation code
//!    such as `RAS`, `LPS` or `ASR` (the direction in which each voxel index increases).
//! 4. The volume is permuted and flipped (never interpolated) so that display columns run from
//!    patient right to patient left (patient left on screen right, radiological convention),
//!    rows from anterior (top) to posterior, and slices from inferior (frame 0) to superior.
//!    Frames are therefore axial whatever the acquisition plane; for a typical axial file the
//!    slices are along its third voxel axis. Oblique volumes are shown in the closest axial
//!    orientation without resampling (as most viewers' "closest canonical" mode does).
//!
//! [`NiftiGeometry`] reports the original axes, what was flipped, the spacing of display
//! columns/rows/slices (which may differ: pixels are not resampled to be square) and the
//! display-to-world affine.
//!
//! Sizes come from the header: they are checked against [`MAX_VOXELS`] and
//! [`MAX_VOXEL_BYTES`] before the voxels are read, with checked arithmetic.
#![deny(clippy::arithmetic_side_effects)]
use std::path::{Path, PathBuf};

use nifti::{NiftiHeader, NiftiObject, NiftiType, ReaderOptions};

use super::image::{Channels, Frame, ImageInfo, ImageStack, MetadataNode, Window};

/// A NIfTI file that could not be read, with the file and the reason.
#[derive(Debug, thiserror::Error)]
#[error("{path}: cannot read NIfTI volume: {reason}")]
pub struct NiftiError {
    /// The NIfTI file.
    pub path: PathBuf,
    /// Why it could not be read.
    pub reason: String,
}

/// Most voxels (times channels) of the first volume, which is decoded to f32: as for DICOM
/// ([`crate::io::dicom::MAX_SAMPLES`]).
pub const MAX_VOXELS: u64 = crate::io::dicom::MAX_SAMPLES;

/// Most bytes of voxel data in a file: the reader loads every volume of a 4-D file, though
/// only the first is shown.
pub const MAX_VOXEL_BYTES: u64 = 1 << 33;

/// Refuses a header whose volume is too large to load, before its voxels are read (the
/// reader would reserve what the header says).
fn check_header_size(path: &Path, header: &NiftiHeader) -> Result<(), NiftiError> {
    let ndim = usize::from(header.dim[0]);
    if !(1..=7).contains(&ndim) {
        return Err(err(path, format!("dim[0] = {ndim}, expected 1..=7")));
    }
    let dims = &header.dim[1..=ndim];
    let overflow = || err(path, format!("a volume of {dims:?} voxels overflows"));
    let total = dims
        .iter()
        .try_fold(1u64, |n, &d| n.checked_mul(u64::from(d)))
        .ok_or_else(overflow)?;
    let first = dims
        .iter()
        .take(3)
        .try_fold(1u64, |n, &d| n.checked_mul(u64::from(d)))
        .ok_or_else(overflow)?;
    let (channels, size) = match header.data_type() {
        Ok(NiftiType::Rgb24 | NiftiType::Rgba32) => (3, 4),
        Ok(t) => (1, t.size_of() as u64),
        // Reported with the voxels.
        Err(_) => (1, 1),
    };
    let samples = first.checked_mul(channels).ok_or_else(overflow)?;
    if samples > MAX_VOXELS {
        return Err(err(
            path,
            format!(
                "a volume of {:?} voxels exceeds the {MAX_VOXELS}-voxel limit",
                &dims[..dims.len().min(3)]
            ),
        ));
    }
    let bytes = total.checked_mul(size).ok_or_else(overflow)?;
    if bytes > MAX_VOXEL_BYTES {
        return Err(err(
            path,
            format!(
                "{dims:?} voxels of {size} byte(s) ({bytes} bytes) exceeds the \
                 {MAX_VOXEL_BYTES}-byte limit"
            ),
        ));
    }
    Ok(())
}

fn err(path: &Path, reason: impl Into<String>) -> NiftiError {
    NiftiError {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Which header fields gave the voxel-to-world affine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AffineSource {
    /// The sform (`sform_code > 0`), which takes precedence.
    Sform,
    /// The qform (`qform_code > 0`, quaternion), used when there is no valid sform.
    Qform,
    /// Neither transform set (or both singular): `diag(pixdim)`.
    Pixdim,
}

/// How the voxel grid was laid out for display (see the module docs).
#[derive(Debug, Clone, PartialEq)]
pub struct NiftiGeometry {
    /// Voxel grid size (i, j, k) of the file's first volume.
    pub voxel_dims: [usize; 3],
    /// Orientation code of the voxel axes: the patient direction in which i, j and k increase
    /// (e.g. "RAS", "LPS", "ASR").
    pub voxel_orientation: String,
    /// Voxel axis (0 = i, 1 = j, 2 = k) shown as display columns, rows and slices.
    pub display_axes: [usize; 3],
    /// Whether that voxel axis was reversed for display.
    pub flipped: [bool; 3],
    /// Spacing in mm between display columns, rows and slices.
    pub spacing: [f64; 3],
    /// Which header fields gave the voxel-to-world affine.
    pub affine_source: AffineSource,
    /// Voxel (i, j, k, 1) -> RAS+ mm, rows x, y, z.
    pub voxel_to_ras: [[f64; 4]; 3],
    /// Display (column, row, slice, 1) -> RAS+ mm, rows x, y, z.
    pub display_to_ras: [[f64; 4]; 3],
}

/// Loads a NIfTI file as a slice stack in display orientation; see [`load_nifti_with_geometry`].
pub fn load_nifti(path: &Path) -> Result<ImageStack, NiftiError> {
    load_nifti_with_geometry(path).map(|(stack, _)| stack)
}

/// True for names ending in `.nii`, `.nii.gz` or `.hdr` (case-insensitive).
pub fn is_nifti_path(path: &Path) -> bool {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    name.ends_with(".nii") || name.ends_with(".nii.gz") || name.ends_with(".hdr")
}

/// Loads a NIfTI file: frames are axial slices (inferior first), each `width` = number of
/// left-right voxels, `height` = number of anterior-posterior voxels, in radiological display
/// orientation. Windows: `cal_min..cal_max` when the header sets it, then the data range.
pub fn load_nifti_with_geometry(path: &Path) -> Result<(ImageStack, NiftiGeometry), NiftiError> {
    let header = NiftiHeader::from_file(path).map_err(|e| err(path, e.to_string()))?;
    check_header_size(path, &header)?;
    let obj = ReaderOptions::new()
        .read_file(path)
        .map_err(|e| err(path, e.to_string()))?;
    let header = obj.header().clone();
    let raw = obj.into_volume().into_raw_data();

    let (dims, nvox) = volume_dims(path, &header)?;
    let datatype = header
        .data_type()
        .map_err(|e| err(path, format!("data type: {e}")))?;
    let (channels, values) = decode_first_volume(path, &header, datatype, &raw, nvox)?;
    let geometry = display_geometry(&header, dims);

    // Permute and flip.
    let frames = display_frames(
        &values,
        dims,
        geometry.display_axes,
        geometry.flipped,
        channels,
    );

    let windows = windows_for(&header, datatype, channels, &values);
    let metadata = metadata_for(&header, datatype, &geometry);
    let stack = ImageStack {
        source: path.to_path_buf(),
        frames,
        windows,
        invert: false,
        metadata,
        info: display_info(&geometry),
        overlays: Vec::new(),
        warnings: Vec::new(),
    };
    Ok((stack, geometry))
}

/// The voxel grid (i, j, k) of the first volume and its voxel count, checked: `dim[0]` in
/// 1..=7, no empty axis, no overflow.
fn volume_dims(path: &Path, header: &NiftiHeader) -> Result<([usize; 3], usize), NiftiError> {
    let ndim = header.dim[0] as usize;
    if !(1..=7).contains(&ndim) {
        return Err(err(path, format!("dim[0] = {ndim}, expected 1..=7")));
    }
    let dim_at = |a: usize| if a <= ndim { header.dim[a] as usize } else { 1 };
    let dims = [dim_at(1), dim_at(2), dim_at(3)];
    if dims.contains(&0) {
        return Err(err(path, format!("empty volume of {dims:?} voxels")));
    }
    let nvox = dims[0]
        .checked_mul(dims[1])
        .and_then(|n| n.checked_mul(dims[2]))
        .ok_or_else(|| err(path, format!("volume of {dims:?} voxels overflows")))?;
    Ok((dims, nvox))
}

/// The display layout of a voxel grid of `dims`: the affine the header chooses, the voxel
/// orientation, and which voxel axis (flipped or not) each display axis follows.
fn display_geometry(header: &NiftiHeader, dims: [usize; 3]) -> NiftiGeometry {
    let (affine, affine_source) = choose_affine(header);
    let (axis_world, sign) = orientation(&affine);
    let voxel_orientation: String = (0..3)
        .map(|j| axis_letter(axis_world[j], sign[j]))
        .collect();
    // Display axis d (0 = columns -> patient left, 1 = rows -> posterior, 2 = slices ->
    // superior) is the voxel axis matched to world axis d; it is flipped when the voxel index
    // increases the other way (world x and y increase toward R and A, display toward L and P).
    let mut display_axes = [0usize; 3];
    let mut flipped = [false; 3];
    for j in 0..3 {
        let d = axis_world[j];
        display_axes[d] = j;
        flipped[d] = if d == 2 { sign[j] < 0.0 } else { sign[j] > 0.0 };
    }
    let col_norm = |j: usize| (0..3).map(|i| affine[i][j].powi(2)).sum::<f64>().sqrt();
    let spacing = display_axes.map(col_norm);
    let mut display_to_ras = [[0f64; 4]; 3];
    for i in 0..3 {
        display_to_ras[i][3] = affine[i][3];
        for d in 0..3 {
            let j = display_axes[d];
            if flipped[d] {
                // index' = n - 1 - index: column flips sign, origin moves to the far end.
                display_to_ras[i][d] = -affine[i][j];
                display_to_ras[i][3] += affine[i][j] * dims[j].saturating_sub(1) as f64;
            } else {
                display_to_ras[i][d] = affine[i][j];
            }
        }
    }
    NiftiGeometry {
        voxel_dims: dims,
        voxel_orientation,
        display_axes,
        flipped,
        spacing,
        affine_source,
        voxel_to_ras: affine,
        display_to_ras,
    }
}

/// The display frames: `values` (voxels of `dims`, i fastest, `channels` interleaved)
/// permuted so that display axis d runs along voxel axis `display_axes[d]`, reversed where
/// `flipped[d]`.
#[allow(
    clippy::arithmetic_side_effects,
    reason = "indices below the voxel count times channels, which is values.len() (checked)"
)]
fn display_frames(
    values: &[f32],
    dims: [usize; 3],
    display_axes: [usize; 3],
    flipped: [bool; 3],
    channels: Channels,
) -> Vec<Frame> {
    let nch = channels.count();
    let strides = [1, dims[0], dims[0] * dims[1]];
    let [nc, nr, ns] = display_axes.map(|j| dims[j]);
    let src_index = |d: usize, v: usize| {
        let j = display_axes[d];
        let v = if flipped[d] { dims[j] - 1 - v } else { v };
        v * strides[j]
    };
    let mut frames = Vec::with_capacity(ns);
    for s in 0..ns {
        let base_s = src_index(2, s);
        let mut data = Vec::with_capacity(nc * nr * nch);
        for r in 0..nr {
            let base_r = base_s + src_index(1, r);
            for c in 0..nc {
                let idx = base_r + src_index(0, c);
                data.extend_from_slice(&values[idx * nch..][..nch]);
            }
        }
        frames.push(Frame {
            width: nc as u32,
            height: nr as u32,
            channels,
            data,
        });
    }
    frames
}

/// The acquisition info of the display stack: pixel spacing and the display axes in the DICOM
/// patient system (columns toward patient left, rows toward posterior; see the module docs),
/// so that the viewer draws orientation labels and a scale bar as it does for DICOM.
fn display_info(g: &NiftiGeometry) -> ImageInfo {
    ImageInfo {
        pixel_spacing: Some([g.spacing[1], g.spacing[0]]),
        slice_thickness: Some(g.spacing[2]),
        image_orientation: Some([1.0, 0.0, 0.0, 0.0, 1.0, 0.0]),
        ..Default::default()
    }
}

/// Decodes the first `nvox` voxels (the first volume) into modality values, channels
/// interleaved.
fn decode_first_volume(
    path: &Path,
    header: &NiftiHeader,
    datatype: NiftiType,
    raw: &[u8],
    nvox: usize,
) -> Result<(Channels, Vec<f32>), NiftiError> {
    let size = datatype.size_of();
    let need = nvox
        .checked_mul(size)
        .ok_or_else(|| err(path, "volume size overflows"))?;
    if raw.len() < need {
        return Err(err(
            path,
            format!("voxel data has {} bytes, need {need}", raw.len()),
        ));
    }
    let raw = &raw[..need];
    match datatype {
        NiftiType::Rgb24 | NiftiType::Rgba32 => {
            let data = raw
                .chunks_exact(size)
                .flat_map(|p| [p[0] as f32, p[1] as f32, p[2] as f32])
                .collect();
            Ok((Channels::Rgb, data))
        }
        NiftiType::Uint8
        | NiftiType::Int8
        | NiftiType::Uint16
        | NiftiType::Int16
        | NiftiType::Uint32
        | NiftiType::Int32
        | NiftiType::Uint64
        | NiftiType::Int64
        | NiftiType::Float32
        | NiftiType::Float64 => {
            let (slope, inter) = (header.scl_slope as f64, header.scl_inter as f64);
            let scaled = slope != 0.0 && slope.is_finite() && inter.is_finite();
            let mut data = Vec::with_capacity(nvox);
            for chunk in raw.chunks_exact(size) {
                // Slope 0 asks the crate for the raw value; scaling is done here in f64.
                let v: f64 = datatype
                    .read_primitive_value(chunk, header.endianness, 0.0, 0.0)
                    .map_err(|e| err(path, format!("voxel data: {e}")))?;
                let v = if scaled { v * slope + inter } else { v };
                data.push(if v.is_finite() { v as f32 } else { 0.0 });
            }
            Ok((Channels::Gray, data))
        }
        other => Err(err(
            path,
            format!("unsupported voxel data type {other:?} (complex and 128-bit types)"),
        )),
    }
}

type Affine = [[f64; 4]; 3];

fn sform(h: &NiftiHeader) -> Affine {
    let r = |row: &[f32; 4]| row.map(|v| v as f64);
    [r(&h.srow_x), r(&h.srow_y), r(&h.srow_z)]
}

/// NIfTI-1 `quatern_to_mat44` (nifti1_io.c): rotation from (b, c, d) with a = sqrt(1 - |bcd|²),
/// scaled by pixdim, k column times qfac.
fn qform(h: &NiftiHeader) -> Affine {
    let (mut b, mut c, mut d) = (h.quatern_b as f64, h.quatern_c as f64, h.quatern_d as f64);
    let mut a = 1.0 - (b * b + c * c + d * d);
    if a < 1e-7 {
        // Not a unit quaternion: renormalise (b, c, d) and use a 180-degree rotation.
        let n = 1.0 / (b * b + c * c + d * d).sqrt();
        b *= n;
        c *= n;
        d *= n;
        a = 0.0;
    } else {
        a = a.sqrt();
    }
    let pos = |v: f32| if v > 0.0 { v as f64 } else { 1.0 };
    let (xd, yd) = (pos(h.pixdim[1]), pos(h.pixdim[2]));
    let mut zd = pos(h.pixdim[3]);
    if h.pixdim[0] < 0.0 {
        zd = -zd;
    }
    [
        [
            (a * a + b * b - c * c - d * d) * xd,
            2.0 * (b * c - a * d) * yd,
            2.0 * (b * d + a * c) * zd,
            h.quatern_x as f64,
        ],
        [
            2.0 * (b * c + a * d) * xd,
            (a * a + c * c - b * b - d * d) * yd,
            2.0 * (c * d - a * b) * zd,
            h.quatern_y as f64,
        ],
        [
            2.0 * (b * d - a * c) * xd,
            2.0 * (c * d + a * b) * yd,
            (a * a + d * d - c * c - b * b) * zd,
            h.quatern_z as f64,
        ],
    ]
}

fn pixdim_affine(h: &NiftiHeader) -> Affine {
    let pos = |v: f32| {
        if v > 0.0 && v.is_finite() {
            v as f64
        } else {
            1.0
        }
    };
    [
        [pos(h.pixdim[1]), 0.0, 0.0, 0.0],
        [0.0, pos(h.pixdim[2]), 0.0, 0.0],
        [0.0, 0.0, pos(h.pixdim[3]), 0.0],
    ]
}

/// A usable affine: finite, with a non-negligible determinant.
fn usable(a: &Affine) -> bool {
    let m = |i: usize, j: usize| a[i][j];
    let det = m(0, 0) * (m(1, 1) * m(2, 2) - m(1, 2) * m(2, 1))
        - m(0, 1) * (m(1, 0) * m(2, 2) - m(1, 2) * m(2, 0))
        + m(0, 2) * (m(1, 0) * m(2, 1) - m(1, 1) * m(2, 0));
    a.iter().flatten().all(|v| v.is_finite()) && det.abs() > 1e-12
}

fn choose_affine(h: &NiftiHeader) -> (Affine, AffineSource) {
    if h.sform_code > 0 {
        let a = sform(h);
        if usable(&a) {
            return (a, AffineSource::Sform);
        }
    }
    if h.qform_code > 0 {
        let a = qform(h);
        if usable(&a) {
            return (a, AffineSource::Qform);
        }
    }
    (pixdim_affine(h), AffineSource::Pixdim)
}

/// For each voxel axis j: the world axis it runs along and the sign of its direction cosine.
/// Greedy: the largest |cosine| of the column-normalised matrix fixes one (voxel, world) pair,
/// whose row and column are then excluded.
fn orientation(a: &Affine) -> ([usize; 3], [f64; 3]) {
    let mut cos = [[0f64; 3]; 3];
    for j in 0..3 {
        let n = (0..3).map(|i| a[i][j].powi(2)).sum::<f64>().sqrt();
        for (i, row) in cos.iter_mut().enumerate() {
            row[j] = if n > 0.0 { a[i][j] / n } else { 0.0 };
        }
    }
    let mut axis_world = [usize::MAX; 3];
    let mut sign = [1.0; 3];
    let mut used_world = [false; 3];
    for _ in 0..3 {
        let mut best = (-1.0, 0, 0);
        for (i, row) in cos.iter().enumerate() {
            for (j, &v) in row.iter().enumerate() {
                if !used_world[i] && axis_world[j] == usize::MAX && v.abs() > best.0 {
                    best = (v.abs(), i, j);
                }
            }
        }
        let (_, i, j) = best;
        used_world[i] = true;
        axis_world[j] = i;
        sign[j] = if cos[i][j] < 0.0 { -1.0 } else { 1.0 };
    }
    (axis_world, sign)
}

fn axis_letter(world: usize, sign: f64) -> char {
    match (world, sign > 0.0) {
        (0, true) => 'R',
        (0, false) => 'L',
        (1, true) => 'A',
        (1, false) => 'P',
        (2, true) => 'S',
        _ => 'I',
    }
}

fn is_integer_type(t: NiftiType) -> bool {
    !matches!(t, NiftiType::Float32 | NiftiType::Float64)
}

/// The window over `lo..=hi` ([`Window::data_range`]): the DICOM convention for integer data,
/// the exact linear function for float data (so [0, 1) volumes are stretched, not
/// thresholded), mid grey and a "Constant image" label for a constant volume.
fn range_window(lo: f64, hi: f64, integer: bool, label: &str) -> Window {
    Window::data_range(lo, hi, integer, label)
}

fn windows_for(
    h: &NiftiHeader,
    datatype: NiftiType,
    channels: Channels,
    values: &[f32],
) -> Vec<Window> {
    if channels == Channels::Rgb {
        return vec![range_window(0.0, 255.0, true, "Full range")];
    }
    let integer_values = is_integer_type(datatype)
        && (h.scl_slope == 0.0 || (h.scl_slope.fract() == 0.0 && h.scl_inter.fract() == 0.0));
    let mut windows = Vec::new();
    if h.cal_max > h.cal_min && h.cal_min.is_finite() && h.cal_max.is_finite() {
        windows.push(range_window(
            h.cal_min as f64,
            h.cal_max as f64,
            false,
            "NIfTI cal_min..cal_max",
        ));
    }
    let (lo, hi) = values
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        });
    if lo.is_finite() && hi.is_finite() {
        windows.push(range_window(
            lo as f64,
            hi as f64,
            integer_values,
            "Full range",
        ));
    }
    windows
}

fn node(name: &str, value: impl ToString) -> MetadataNode {
    MetadataNode {
        name: name.to_string(),
        value: value.to_string(),
        children: Vec::new(),
    }
}

fn metadata_for(h: &NiftiHeader, datatype: NiftiType, g: &NiftiGeometry) -> Vec<MetadataNode> {
    let fmt_affine = |a: &Affine| {
        a.iter()
            .map(|r| format!("[{:.4} {:.4} {:.4} {:.4}]", r[0], r[1], r[2], r[3]))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let descrip = String::from_utf8_lossy(&h.descrip)
        .trim_end_matches('\0')
        .trim()
        .to_string();
    let ndim = (h.dim[0] as usize).min(7);
    vec![
        node("dim", format!("{:?}", &h.dim[1..=ndim])),
        node("pixdim", format!("{:?}", &h.pixdim[1..=ndim])),
        node("datatype", format!("{datatype:?}")),
        node(
            "scl_slope / scl_inter",
            format!("{} / {}", h.scl_slope, h.scl_inter),
        ),
        node(
            "cal_min / cal_max",
            format!("{} / {}", h.cal_min, h.cal_max),
        ),
        node("qform_code", h.qform_code),
        node("sform_code", h.sform_code),
        node("affine used", format!("{:?}", g.affine_source)),
        node("voxel to RAS", fmt_affine(&g.voxel_to_ras)),
        node("voxel orientation", &g.voxel_orientation),
        node(
            "display",
            "axial, radiological: columns R->L, rows A->P, slices I->S",
        ),
        node("display spacing (mm)", format!("{:?}", g.spacing)),
        node("descrip", descrip),
        node(
            "volumes",
            if ndim >= 4 && h.dim[4] > 1 {
                format!("{} (first shown)", h.dim[4])
            } else {
                "1".to_string()
            },
        ),
    ]
}
