//! Transfer syntax names and the few properties the pixel path needs.
use dicom_encoding::transfer_syntax::TransferSyntaxIndex;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;

pub(super) const EXPLICIT_VR_BIG_ENDIAN: &str = "1.2.840.10008.1.2.2";
pub(super) const RLE_LOSSLESS: &str = "1.2.840.10008.1.2.5";
pub(super) const ENCAPSULATED_UNCOMPRESSED: &str = "1.2.840.10008.1.2.1.98";

/// Human-readable name of a transfer syntax UID: the registry's name when it knows the UID,
/// else a short description, else "unknown transfer syntax".
pub fn transfer_syntax_name(uid: &str) -> String {
    let uid = uid.trim_end_matches(['\0', ' ']);
    if let Some(ts) = TransferSyntaxRegistry.get(uid) {
        return ts.name().to_string();
    }
    let known = match uid {
        "1.2.840.10008.1.2.4.100" | "1.2.840.10008.1.2.4.101" => "MPEG2",
        "1.2.840.10008.1.2.4.102"
        | "1.2.840.10008.1.2.4.103"
        | "1.2.840.10008.1.2.4.104"
        | "1.2.840.10008.1.2.4.105"
        | "1.2.840.10008.1.2.4.106" => "MPEG-4 AVC/H.264",
        "1.2.840.10008.1.2.4.107" | "1.2.840.10008.1.2.4.108" => "HEVC/H.265",
        "1.2.840.10008.1.2.4.94" | "1.2.840.10008.1.2.4.95" => "JPIP",
        "" => "no transfer syntax",
        _ => "unknown transfer syntax",
    };
    known.to_string()
}

/// True for the JPEG 2000 family (Part 1, Part 2 and High-Throughput).
pub(super) fn is_jpeg2000(uid: &str) -> bool {
    matches!(
        uid,
        "1.2.840.10008.1.2.4.90"
            | "1.2.840.10008.1.2.4.91"
            | "1.2.840.10008.1.2.4.92"
            | "1.2.840.10008.1.2.4.93"
            | "1.2.840.10008.1.2.4.201"
            | "1.2.840.10008.1.2.4.202"
            | "1.2.840.10008.1.2.4.203"
    )
}

/// True for JPEG-LS, lossless and near-lossless.
pub(super) fn is_jpeg_ls(uid: &str) -> bool {
    matches!(uid, "1.2.840.10008.1.2.4.80" | "1.2.840.10008.1.2.4.81")
}

/// True for transfer syntaxes whose codestreams start with a JPEG SOI marker (JPEG family
/// and JPEG-LS): used to find frame boundaries when the basic offset table is empty.
pub(super) fn starts_with_soi(uid: &str) -> bool {
    matches!(
        uid,
        "1.2.840.10008.1.2.4.50"
            | "1.2.840.10008.1.2.4.51"
            | "1.2.840.10008.1.2.4.57"
            | "1.2.840.10008.1.2.4.70"
            | "1.2.840.10008.1.2.4.80"
            | "1.2.840.10008.1.2.4.81"
    )
}
