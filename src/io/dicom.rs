//! DICOM instances: pixel decoding to [`ImageStack`]s in modality units, cheap header-only
//! summaries, and the per-instance metadata tree.
//!
//! Parsing is done by `dicom-object` and compressed pixel data by the decoders that
//! `dicom-pixeldata`'s transfer syntax registry carries (JPEG baseline/extended/lossless via
//! `jpeg-decoder`, JPEG-LS via CharLS, JPEG 2000 via `openjp2`, RLE and deflate natively).
//! What is written here is what those crates leave to the application:
//! - sample extraction for every BitsAllocated/BitsStored/HighBit/PixelRepresentation
//!   combination (1, 8, 16 and 32 bits, signed and unsigned, big endian included), with the
//!   length checks that turn truncated files into clear errors;
//! - the modality LUT (rescale slope/intercept, per frame from enhanced functional groups, or
//!   a Modality LUT Sequence), the window presets and the VOI LUT function;
//! - colour: YBR_FULL / YBR_FULL_422 / YBR_PARTIAL_422 to RGB for native and RLE data, planar
//!   configuration 1, PALETTE COLOR (normal and segmented LUTs);
//! - framing of encapsulated fragments when the basic offset table is empty;
//! - robustness: size limits against allocation bombs and a panic guard around the
//!   third-party parser and decoders, so that hostile input is an error, never a crash.
//!
//! Every error names the file and the problem (see [`DicomError`]).
use std::fmt;
use std::path::{Path, PathBuf};

use super::image::{ImageStack, MetadataNode};

mod attrs;
mod codestream;
mod frames;
mod geometry;
mod guard;
mod jpeg12;
mod jpeg_ls;
mod lut;
mod metadata;
mod overlay;
mod pixels;
mod prescan;
mod rle;
mod source;
mod summary;
mod ts;

pub use geometry::{FrameGeometry, frame_geometries};

/// `element` with a UN value (an implicit-VR element kept in an explicit-VR file) decoded as
/// its dictionary VR, so that it can be copied into a new object and read as text; other
/// elements as they are.
pub fn element_with_dictionary_vr(
    element: &dicom_core::DataElement<dicom_object::InMemDicomObject>,
) -> dicom_core::DataElement<dicom_object::InMemDicomObject> {
    use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry};
    use dicom_core::header::Header;
    use dicom_dictionary_std::StandardDataDictionary;
    if element.vr() != dicom_core::VR::UN {
        return element.clone();
    }
    let tag = element.tag();
    let (Some(entry), Ok(value)) = (
        StandardDataDictionary.by_tag(tag),
        element.value().primitive().ok_or(()),
    ) else {
        return element.clone();
    };
    dicom_core::DataElement::new(tag, entry.vr().relaxed(), attrs::reinterpret_un(tag, value))
}
pub use summary::DicomSummary;
pub use ts::transfer_syntax_name;

/// What kind of problem a [`DicomError`] reports, for callers that react differently (a folder
/// scan skips [`NotDicom`](DicomErrorKind::NotDicom) files silently; the conformance table
/// counts [`UnsupportedTransferSyntax`](DicomErrorKind::UnsupportedTransferSyntax) apart).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DicomErrorKind {
    /// The file could not be opened or read.
    Io,
    /// No "DICM" marker: not a DICOM Part 10 file (or one without its file meta group).
    NotDicom,
    /// The file meta group or the data set cannot be parsed, or an attribute needed to
    /// interpret the pixels is missing or invalid.
    Malformed,
    /// The transfer syntax is unknown, or known but without a decoder here.
    UnsupportedTransferSyntax,
    /// Valid pixel data in a form this loader does not handle (e.g. float pixel data).
    Unsupported,
    /// The instance has no pixel data (structured report, waveform, DICOMDIR, ...).
    NoPixelData,
    /// The pixel data is shorter than its attributes require.
    Truncated,
    /// A compressed frame failed to decode.
    Decode,
    /// The declared image is larger than the loader accepts.
    TooLarge,
}

/// An error about one file: `"{path}: {message}"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DicomError {
    /// The file at fault.
    pub path: PathBuf,
    /// The class of problem, for callers that react to it.
    pub kind: DicomErrorKind,
    /// The problem, without the path, e.g. "unsupported transfer syntax
    /// 1.2.840.10008.1.2.4.100 (MPEG2 Main Profile / Main Level): no decoder for it".
    pub message: String,
}

impl DicomError {
    pub(crate) fn new(path: &Path, kind: DicomErrorKind, message: impl Into<String>) -> Self {
        DicomError {
            path: path.to_path_buf(),
            kind,
            message: message.into(),
        }
    }
}

impl fmt::Display for DicomError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.message)
    }
}

impl std::error::Error for DicomError {}

/// Largest file (or gzip-decompressed content) read into memory: 4 GiB.
pub const MAX_FILE_BYTES: u64 = 4 << 30;

/// Largest decoded image accepted, in samples (rows x columns x frames x samples per pixel):
/// 2^30 samples are 4 GiB of `f32`. Larger declared sizes are refused before anything is
/// allocated, so a corrupted Rows or NumberOfFrames cannot exhaust memory.
pub const MAX_SAMPLES: u64 = 1 << 30;

/// Loads a DICOM instance: every frame decoded to modality units (grey) or 0..=255 RGB,
/// window presets (file-provided first, then "Full range"), the MONOCHROME1 flag, the
/// metadata tree and the acquisition info. Gzip-compressed files are accepted.
pub fn load_dicom(path: &Path) -> Result<ImageStack, DicomError> {
    let bytes = source::read_file(path)?;
    load_dicom_bytes(&bytes, path)
}

/// [`load_dicom`] on the bytes of a file already in memory (Part 10 layout, with or without
/// the 128-byte preamble, or gzip-compressed); `source` names it in errors and in the stack.
pub fn load_dicom_bytes(bytes: &[u8], source: &Path) -> Result<ImageStack, DicomError> {
    guard::guarded(source, || {
        let bytes = source::maybe_gunzip(bytes, source)?;
        let (obj, warning) = source::parse_lenient(&bytes, source)?;
        let mut stack = pixels::decode_stack(&obj, source)?;
        stack.warnings.extend(warning);
        Ok(stack)
    })
}

/// Reads only the file meta group and the attributes before the pixel data, and summarises
/// them (modality, transfer syntax, size, UIDs, position). Does not decode pixels, so it is
/// cheap even for large multi-frame files.
pub fn inspect_dicom(path: &Path) -> Result<DicomSummary, DicomError> {
    read_dicom_header(path).map(|(summary, _)| summary)
}

/// [`inspect_dicom`] plus the metadata tree of everything before the pixel data: what a
/// folder scan keeps per instance for the viewer's metadata panel.
pub fn read_dicom_header(path: &Path) -> Result<(DicomSummary, Vec<MetadataNode>), DicomError> {
    guard::guarded(path, || {
        let obj = source::parse_header_from_file(path)?;
        let summary = summary::summarize(&obj, path)?;
        let tree = metadata::metadata_tree(&obj);
        Ok((summary, tree))
    })
}

/// Parses a whole Part 10 file held in memory without decoding pixels (for DICOMDIRs and
/// other non-image objects), with the same guards as the loaders.
pub(crate) fn parse_object(
    bytes: &[u8],
    path: &Path,
) -> Result<dicom_object::DefaultDicomObject, DicomError> {
    guard::guarded(path, || {
        let bytes = source::maybe_gunzip(bytes, path)?;
        source::parse_lenient(&bytes, path).map(|(obj, _)| obj)
    })
}

/// Whether the file starts like a DICOM Part 10 file ("DICM" at offset 128 or 0, possibly
/// inside a gzip stream). Reads at most a few hundred bytes; false when unreadable.
pub fn looks_like_dicom(path: &Path) -> bool {
    source::looks_like_dicom(path)
}
