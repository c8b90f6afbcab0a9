//! Getting from a path or bytes to a parsed `dicom-object`: size limits, gzip, the preamble
//! check, and parse errors turned into messages that say what is wrong.
use std::borrow::Cow;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use dicom_dictionary_std::tags;
use dicom_encoding::transfer_syntax::TransferSyntaxIndex;
use dicom_object::file::ReadPreamble;
use dicom_object::{DefaultDicomObject, FileMetaTable, OpenFileOptions};
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;

use super::{DicomError, DicomErrorKind as K, MAX_FILE_BYTES, prescan, ts};

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Where the "DICM" marker sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// 128-byte preamble, then "DICM".
    Preamble,
    /// "DICM" at offset 0 (preamble left out).
    NoPreamble,
}

fn io_error(path: &Path, what: &str, err: std::io::Error) -> DicomError {
    DicomError::new(path, K::Io, format!("cannot {what}: {err}"))
}

/// Reads the whole file, refusing files over [`MAX_FILE_BYTES`].
pub(super) fn read_file(path: &Path) -> Result<Vec<u8>, DicomError> {
    let meta = std::fs::metadata(path).map_err(|e| io_error(path, "open the file", e))?;
    if meta.is_dir() {
        return Err(DicomError::new(path, K::Io, "is a folder, not a file"));
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(DicomError::new(
            path,
            K::TooLarge,
            format!(
                "file of {} bytes exceeds the {MAX_FILE_BYTES}-byte limit",
                meta.len()
            ),
        ));
    }
    std::fs::read(path).map_err(|e| io_error(path, "read the file", e))
}

/// Decompresses gzip content (limited to [`MAX_FILE_BYTES`]); other bytes pass unchanged.
pub(super) fn maybe_gunzip<'a>(bytes: &'a [u8], path: &Path) -> Result<Cow<'a, [u8]>, DicomError> {
    if !bytes.starts_with(&GZIP_MAGIC) {
        return Ok(Cow::Borrowed(bytes));
    }
    let mut out = Vec::new();
    let mut decoder = flate2::read::GzDecoder::new(bytes).take(MAX_FILE_BYTES + 1);
    decoder.read_to_end(&mut out).map_err(|e| {
        DicomError::new(
            path,
            K::Malformed,
            format!("gzip-compressed file cannot be decompressed: {e}"),
        )
    })?;
    if out.len() as u64 > MAX_FILE_BYTES {
        return Err(DicomError::new(
            path,
            K::TooLarge,
            format!("gzip content exceeds the {MAX_FILE_BYTES}-byte limit"),
        ));
    }
    Ok(Cow::Owned(out))
}

fn layout(start: &[u8], path: &Path) -> Result<Layout, DicomError> {
    if start.len() >= 132 && &start[128..132] == b"DICM" {
        Ok(Layout::Preamble)
    } else if start.len() >= 4 && &start[0..4] == b"DICM" {
        Ok(Layout::NoPreamble)
    } else if start.is_empty() {
        Err(DicomError::new(
            path,
            K::NotDicom,
            "not a DICOM file (empty file)",
        ))
    } else {
        Err(DicomError::new(
            path,
            K::NotDicom,
            "not a DICOM file (no DICM preamble: not a Part 10 file, or its file meta information is missing)",
        ))
    }
}

/// The source of an error and its causes, joined by ": ", for messages.
pub(super) fn error_chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut cur = err.source();
    let mut depth = 0;
    while let Some(e) = cur {
        let s = e.to_string();
        if !out.ends_with(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        cur = e.source();
        depth += 1;
        if depth > 12 {
            break;
        }
    }
    out
}

/// Byte length of the file meta group that starts at "DICM" (from its group length element),
/// i.e. the offset of the data set from "DICM".
fn dataset_offset(from_magic: &[u8]) -> Option<u64> {
    let v: [u8; 4] = from_magic.get(12..16)?.try_into().ok()?;
    Some(16 + u64::from(u32::from_le_bytes(v)))
}

fn is_deflated(uid: &str) -> bool {
    matches!(uid, "1.2.840.10008.1.2.1.99" | "1.2.840.10008.1.2.4.95")
}

/// Runs the [`prescan`] header walk over the data set of a file held in memory.
fn prescan_bytes(
    from_magic: &[u8],
    meta: &FileMetaTable,
    path: &Path,
    header_only: bool,
) -> Result<(), DicomError> {
    let Some(offset) = dataset_offset(from_magic) else {
        return Ok(());
    };
    let Some(dataset) = usize::try_from(offset)
        .ok()
        .and_then(|o| from_magic.get(o..))
    else {
        return Ok(());
    };
    let uid = meta.transfer_syntax();
    let explicit = uid != "1.2.840.10008.1.2";
    let big = uid == ts::EXPLICIT_VR_BIG_ENDIAN;
    let result = if is_deflated(uid) {
        // Deflate bombs: refuse data sets that inflate beyond 1 GiB.
        const MAX_INFLATED: u64 = 1 << 30;
        let mut inflated = Vec::new();
        let _ = flate2::read::DeflateDecoder::new(dataset)
            .take(MAX_INFLATED + 1)
            .read_to_end(&mut inflated);
        if inflated.len() as u64 > MAX_INFLATED {
            return Err(DicomError::new(
                path,
                K::TooLarge,
                format!("deflated data set inflates beyond {MAX_INFLATED} bytes"),
            ));
        }
        prescan::check(&mut inflated.as_slice(), 0, explicit, big, header_only)
    } else {
        prescan::check(&mut &dataset[..], 0, explicit, big, header_only)
    };
    result.map_err(|p| problem_error(&p, path))
}

fn problem_error(p: &prescan::Problem, path: &Path) -> DicomError {
    if p.is_truncated_pixel_data() {
        DicomError::new(path, K::Truncated, p.to_string())
    } else {
        DicomError::new(path, K::Malformed, format!("malformed data set: {p}"))
    }
}

/// Parses the file meta group alone, to name a missing or unknown transfer syntax precisely
/// before the data set parser fails on it.
fn check_meta(after_magic_or_preamble: &[u8], path: &Path) -> Result<FileMetaTable, DicomError> {
    let meta = FileMetaTable::from_reader(after_magic_or_preamble).map_err(|e| {
        DicomError::new(
            path,
            K::Malformed,
            format!("invalid file meta information: {}", error_chain(&e)),
        )
    })?;
    check_transfer_syntax(&meta, path)?;
    Ok(meta)
}

fn check_transfer_syntax(meta: &FileMetaTable, path: &Path) -> Result<(), DicomError> {
    let uid = meta.transfer_syntax();
    if uid.is_empty() {
        return Err(DicomError::new(
            path,
            K::Malformed,
            "file meta information has an empty TransferSyntaxUID",
        ));
    }
    match TransferSyntaxRegistry.get(uid) {
        None => Err(DicomError::new(
            path,
            K::UnsupportedTransferSyntax,
            format!(
                "unsupported transfer syntax {uid} ({}): not a known transfer syntax",
                ts::transfer_syntax_name(uid)
            ),
        )),
        Some(t) if !t.can_decode_dataset() => Err(DicomError::new(
            path,
            K::UnsupportedTransferSyntax,
            format!(
                "unsupported transfer syntax {uid} ({}): its data set cannot be read",
                t.name()
            ),
        )),
        Some(_) => Ok(()),
    }
}

/// Parses a Part 10 file held in memory. `header_only` stops before the pixel data.
pub(super) fn parse(
    bytes: &[u8],
    path: &Path,
    header_only: bool,
) -> Result<DefaultDicomObject, DicomError> {
    let layout = layout(bytes, path)?;
    let after_preamble = match layout {
        Layout::Preamble => &bytes[128..],
        Layout::NoPreamble => bytes,
    };
    let meta = check_meta(after_preamble, path)?;
    prescan_bytes(after_preamble, &meta, path, header_only)?;
    let mut options = OpenFileOptions::new().read_preamble(ReadPreamble::Never);
    if header_only {
        options = options.read_until(tags::PIXEL_DATA);
    }
    options
        .from_reader(after_preamble)
        .map_err(|e| parse_error(&e, bytes, path))
}

/// [`parse`] of a whole file, lenient where pydicom and the common viewers are, with a
/// warning saying what was tolerated:
/// - bytes after a complete top-level pixel data element that do not parse as elements
///   (trailing padding, a truncated trailing element, a run of empty (0000,0000) elements
///   that ends in a cut element header) are ignored;
/// - a defined-length sequence or item that claims more bytes than its container or the file
///   holds (e.g. pydicom's `DICOMDIR-nooffset`) is read up to where its container ends.
///
/// Truncated pixel data stays an error.
pub(super) fn parse_lenient(
    bytes: &[u8],
    path: &Path,
) -> Result<(DefaultDicomObject, Option<String>), DicomError> {
    let walked = || walk(bytes);
    let ignored = |n: usize, why: &str| {
        format!("ignored {n} byte(s) after the pixel data that do not parse as elements ({why})")
    };
    let error = match parse(bytes, path, false) {
        Ok(obj) => {
            // The parser may also stop quietly on a few stray bytes: say so.
            let read_past_pixels = obj.iter().any(|e| e.header().tag > tags::PIXEL_DATA);
            let warning = match walked().and_then(|w| w.trailing) {
                Some(end) if !read_past_pixels => {
                    Some(ignored(bytes.len() - end, "too short for an element"))
                }
                _ => None,
            };
            return Ok((obj, warning));
        }
        Err(e) => e,
    };
    let Some(w) = walked() else {
        return Err(error);
    };
    // The pixel data is whole and something after it fails to parse (a truncation there
    // reads as a truncated file): what it holds is dropped, as pydicom drops it.
    if let Some(end) = w.trailing
        && let Ok(obj) = parse(&bytes[..end], path, false)
    {
        let why = if bytes[end..].iter().all(|&b| b == 0) {
            "zeros, read as empty (0000,0000) elements up to a cut element header"
        } else {
            &error.message
        };
        return Ok((obj, Some(ignored(bytes.len() - end, why))));
    }
    if error.kind == K::Truncated {
        return Err(error);
    }
    if !w.overlong.is_empty() {
        let mut repaired = bytes.to_vec();
        for &(at, len) in &w.overlong {
            let field = if w.big_endian {
                len.to_be_bytes()
            } else {
                len.to_le_bytes()
            };
            repaired[at..at + 4].copy_from_slice(&field);
        }
        if let Ok(obj) = parse(&repaired, path, false) {
            let warning = format!(
                "{} sequence or item length(s) run past the end of their container; read up to \
                 where it ends ({})",
                w.overlong.len(),
                error.message
            );
            return Ok((obj, Some(warning)));
        }
    }
    Err(error)
}

/// Where lenient reading may cut or repair a Part 10 file held in memory (offsets in `bytes`).
struct Walked {
    /// Just past a complete top-level pixel data element, when bytes follow it.
    trailing: Option<usize>,
    /// Over-long sequence or item length fields: (offset, length that fits).
    overlong: Vec<(usize, u32)>,
    big_endian: bool,
}

fn walk(bytes: &[u8]) -> Option<Walked> {
    let start = match layout(bytes, Path::new("")).ok()? {
        Layout::Preamble => 128,
        Layout::NoPreamble => 0,
    };
    let from_magic = &bytes[start..];
    let meta = FileMetaTable::from_reader(from_magic).ok()?;
    let uid = meta.transfer_syntax();
    if is_deflated(uid) {
        return None;
    }
    let offset = usize::try_from(dataset_offset(from_magic)?).ok()?;
    let dataset = from_magic.get(offset..)?;
    let explicit = uid != "1.2.840.10008.1.2";
    let big_endian = uid == ts::EXPLICIT_VR_BIG_ENDIAN;
    let found = prescan::layout(&mut &dataset[..], 0, explicit, big_endian);
    let absolute = |p: u64| usize::try_from(p).ok().map(|p| start + offset + p);
    Some(Walked {
        trailing: found
            .pixel_data_end
            .and_then(absolute)
            .filter(|&end| end < bytes.len()),
        overlong: found
            .overlong
            .into_iter()
            .filter_map(|(at, len)| Some((absolute(at)?, len)))
            .filter(|&(at, _)| at + 4 <= bytes.len())
            .collect(),
        big_endian,
    })
}

/// Parses the header of a file on disk without reading its pixel data into memory
/// (gzip-compressed files are decompressed whole).
pub(super) fn parse_header_from_file(path: &Path) -> Result<DefaultDicomObject, DicomError> {
    let meta = std::fs::metadata(path).map_err(|e| io_error(path, "open the file", e))?;
    if meta.is_dir() {
        return Err(DicomError::new(path, K::Io, "is a folder, not a file"));
    }
    let mut file = File::open(path).map_err(|e| io_error(path, "open the file", e))?;
    let mut start = Vec::with_capacity(132);
    (&mut file)
        .take(132)
        .read_to_end(&mut start)
        .map_err(|e| io_error(path, "read the file", e))?;
    if start.starts_with(&GZIP_MAGIC) {
        let bytes = read_file(path)?;
        let bytes = maybe_gunzip(&bytes, path)?;
        return parse(&bytes, path, true);
    }
    let layout = layout(&start, path)?;
    let offset = match layout {
        Layout::Preamble => 128,
        Layout::NoPreamble => 0,
    };
    file.seek(SeekFrom::Start(offset))
        .map_err(|e| io_error(path, "read the file", e))?;
    // The meta group is small; read it through its own reader to check the transfer syntax.
    let meta = FileMetaTable::from_reader(BufReader::new(&mut file)).map_err(|e| {
        DicomError::new(
            path,
            K::Malformed,
            format!("invalid file meta information: {}", error_chain(&e)),
        )
    })?;
    check_transfer_syntax(&meta, path)?;
    if is_deflated(meta.transfer_syntax()) {
        // The walk needs the inflated bytes: read the whole (small, compressed) file.
        drop(file);
        let bytes = read_file(path)?;
        return parse(&bytes, path, true);
    }
    prescan_file(&mut file, &meta, offset, path)?;
    parse_header_after_meta(file, offset, path)
}

/// Walks the data set on disk (without reading pixel data) so that a malformed or truncated
/// file is explained before the parser meets it.
fn prescan_file(
    file: &mut File,
    meta: &FileMetaTable,
    offset: u64,
    path: &Path,
) -> Result<(), DicomError> {
    let mut magic_and_len = [0u8; 16];
    file.seek(SeekFrom::Start(offset))
        .map_err(|e| io_error(path, "read the file", e))?;
    file.read_exact(&mut magic_and_len)
        .map_err(|e| io_error(path, "read the file", e))?;
    if let Some(ds_offset) = dataset_offset(&magic_and_len) {
        let uid = meta.transfer_syntax();
        let mut src = prescan::FileSource {
            file: file
                .try_clone()
                .map_err(|e| io_error(path, "read the file", e))?,
            len: std::fs::metadata(path).map(|m| m.len()).unwrap_or(0),
        };
        prescan::check(
            &mut src,
            offset + ds_offset,
            uid != "1.2.840.10008.1.2",
            uid == ts::EXPLICIT_VR_BIG_ENDIAN,
            true,
        )
        .map_err(|p| problem_error(&p, path))?;
    }
    Ok(())
}

/// Parses the header from the meta group at `offset` up to the pixel data, retrying small
/// files with the lenient reader.
fn parse_header_after_meta(
    mut file: File,
    offset: u64,
    path: &Path,
) -> Result<DefaultDicomObject, DicomError> {
    file.seek(SeekFrom::Start(offset))
        .map_err(|e| io_error(path, "read the file", e))?;
    let parsed = OpenFileOptions::new()
        .read_preamble(ReadPreamble::Never)
        .read_until(tags::PIXEL_DATA)
        .from_reader(BufReader::new(file));
    // Only the header was read: no pixel-data diagnosis, just the parser's account.
    let error = match parsed {
        Ok(obj) => return Ok(obj),
        Err(e) => parse_error_message(&e, path),
    };
    // What the lenient reader repairs (an over-long item, as in pydicom's DICOMDIR-nooffset)
    // needs the whole file; only small files are worth that retry.
    const RETRY_LIMIT: u64 = 64 << 20;
    if std::fs::metadata(path).is_ok_and(|m| m.len() <= RETRY_LIMIT)
        && let Some((obj, _)) = read_file(path)
            .ok()
            .and_then(|bytes| parse_lenient(&bytes, path).ok())
    {
        return Ok(obj);
    }
    Err(error)
}

/// Whether the file starts like a Part 10 file (optionally gzip-compressed).
pub(super) fn looks_like_dicom(path: &Path) -> bool {
    let Ok(file) = File::open(path) else {
        return false;
    };
    let mut start = Vec::with_capacity(132);
    if file.take(132).read_to_end(&mut start).is_err() {
        return false;
    }
    if start.starts_with(&GZIP_MAGIC) {
        let Ok(file) = File::open(path) else {
            return false;
        };
        let mut inner = Vec::with_capacity(132);
        let decoder = flate2::read::GzDecoder::new(file);
        if decoder.take(132).read_to_end(&mut inner).is_err() {
            return false;
        }
        start = inner;
    }
    layout(&start, path).is_ok()
}

fn parse_error_message(err: &dicom_object::ReadError, path: &Path) -> DicomError {
    let chain = error_chain(err);
    let lower = chain.to_ascii_lowercase();
    if lower.contains("failed to fill whole buffer")
        || lower.contains("unexpected end of file")
        || lower.contains("unexpectedeof")
    {
        DicomError::new(
            path,
            K::Truncated,
            format!("truncated file: the data set ends early ({chain})"),
        )
    } else {
        DicomError::new(path, K::Malformed, format!("malformed data set: {chain}"))
    }
}

/// A parse failure of the whole file. When the header parses but the whole file does not, the
/// pixel data element is the problem: say how long it claims to be and how much is there.
fn parse_error(err: &dicom_object::ReadError, bytes: &[u8], path: &Path) -> DicomError {
    let generic = parse_error_message(err, path);
    if let Some((declared, present)) = pixel_data_shortfall(bytes)
        && present < declared
    {
        return DicomError::new(
            path,
            K::Truncated,
            format!("truncated pixel data: expected {declared} bytes, found {present}"),
        );
    }
    generic
}

/// Finds the last top-level-looking Pixel Data element header (7FE0,0010) and returns its
/// declared length and the bytes actually left after the header. Best effort, for messages:
/// a defined length in explicit VR LE/BE or implicit VR LE layout.
fn pixel_data_shortfall(bytes: &[u8]) -> Option<(u64, u64)> {
    let le = [0xE0u8, 0x7F, 0x10, 0x00];
    let be = [0x7Fu8, 0xE0, 0x00, 0x10];
    let pos_le = find_last(bytes, &le);
    let pos_be = find_last(bytes, &be);
    let (pos, big) = match (pos_le, pos_be) {
        (Some(a), Some(b)) if b > a => (b, true),
        (Some(a), _) => (a, false),
        (None, Some(b)) => (b, true),
        (None, None) => return None,
    };
    let rest = &bytes[pos + 4..];
    let read32 = |b: &[u8]| -> Option<u32> {
        let a: [u8; 4] = b.get(..4)?.try_into().ok()?;
        Some(if big {
            u32::from_be_bytes(a)
        } else {
            u32::from_le_bytes(a)
        })
    };
    // Explicit VR with a 4-byte length: "OB"/"OW"/"UN" + 2 reserved bytes.
    let (len, header) = match rest.get(..2) {
        Some(b"OB") | Some(b"OW") | Some(b"UN") | Some(b"OD") | Some(b"OF") | Some(b"OL") => {
            (read32(rest.get(4..)?)?, 12usize)
        }
        _ => (read32(rest)?, 8usize),
    };
    if len == u32::MAX {
        return None; // undefined length: encapsulated
    }
    let present = bytes.len().saturating_sub(pos + header) as u64;
    Some((len as u64, present))
}

fn find_last(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if hay.len() < needle.len() {
        return None;
    }
    (0..=hay.len() - needle.len())
        .rev()
        .find(|&i| &hay[i..i + needle.len()] == needle)
}
