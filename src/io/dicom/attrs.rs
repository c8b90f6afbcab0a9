//! Tolerant attribute access: values that are missing, empty or unparsable read as `None`
//! (the caller decides whether that is an error), strings are trimmed of DICOM padding, and
//! enhanced multi-frame functional groups are searched per frame, then shared, as PS3.3
//! C.7.6.16 prescribes.
use std::borrow::Cow;

use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry};
use dicom_core::{DicomValue, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::{StandardDataDictionary, tags};
use dicom_object::InMemDicomObject;

pub(super) type Obj = InMemDicomObject;

/// The value of `tag`, with values stored as UN (unknown VR, common after anonymisers and
/// some PACS) reinterpreted through the dictionary's VR, as other toolkits do.
pub(super) fn primitive(obj: &Obj, tag: Tag) -> Option<Cow<'_, PrimitiveValue>> {
    let elem = obj.get(tag)?;
    match elem.value() {
        DicomValue::Primitive(p) if elem.vr() == VR::UN => Some(Cow::Owned(reinterpret_un(tag, p))),
        DicomValue::Primitive(p) => Some(Cow::Borrowed(p)),
        _ => None,
    }
}

/// Decodes the bytes of a UN value as the dictionary VR of `tag` (little endian; UN only
/// occurs in explicit VR little endian data in practice).
pub(super) fn reinterpret_un(tag: Tag, p: &PrimitiveValue) -> PrimitiveValue {
    let Some(vr) = StandardDataDictionary.by_tag(tag).map(|e| e.vr().relaxed()) else {
        return p.clone();
    };
    let bytes = p.to_bytes();
    let words = |n: usize| bytes.chunks_exact(n);
    match vr {
        VR::AE
        | VR::AS
        | VR::CS
        | VR::DA
        | VR::DS
        | VR::DT
        | VR::IS
        | VR::LO
        | VR::LT
        | VR::PN
        | VR::SH
        | VR::ST
        | VR::TM
        | VR::UC
        | VR::UI
        | VR::UR
        | VR::UT => {
            let text = String::from_utf8_lossy(&bytes);
            let parts: Vec<String> = text
                .trim_end_matches(['\0', ' '])
                .split('\\')
                .map(|s| s.to_string())
                .collect();
            PrimitiveValue::Strs(parts.into())
        }
        VR::US => PrimitiveValue::U16(words(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect()),
        VR::SS => PrimitiveValue::I16(words(2).map(|c| i16::from_le_bytes([c[0], c[1]])).collect()),
        VR::UL => PrimitiveValue::U32(
            words(4)
                .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        ),
        VR::SL => PrimitiveValue::I32(
            words(4)
                .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        ),
        VR::FL => PrimitiveValue::F32(
            words(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        ),
        VR::FD => PrimitiveValue::F64(
            words(8)
                .map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
                .collect(),
        ),
        _ => p.clone(),
    }
}

/// The raw string value, trimmed of spaces and NULs; `None` when absent or empty.
pub(super) fn string(obj: &Obj, tag: Tag) -> Option<String> {
    let p = primitive(obj, tag)?;
    let s = match p.as_ref() {
        PrimitiveValue::Str(_) | PrimitiveValue::Strs(_) => p.to_str().into_owned(),
        PrimitiveValue::Empty => return None,
        other => other.to_str().into_owned(),
    };
    let s = s.trim_matches(|c: char| c == ' ' || c == '\0').to_string();
    (!s.is_empty()).then_some(s)
}

/// The values of a multi-valued string attribute (split at '\'), each trimmed.
pub(super) fn strings(obj: &Obj, tag: Tag) -> Vec<String> {
    match primitive(obj, tag).as_deref() {
        Some(PrimitiveValue::Strs(v)) => v
            .iter()
            .flat_map(|s| s.split('\\'))
            .map(|s| s.trim_matches(|c: char| c == ' ' || c == '\0').to_string())
            .collect(),
        Some(PrimitiveValue::Str(s)) => s
            .split('\\')
            .map(|s| s.trim_matches(|c: char| c == ' ' || c == '\0').to_string())
            .collect(),
        Some(PrimitiveValue::Empty) | None => Vec::new(),
        Some(other) => other
            .to_str()
            .split('\\')
            .map(|s| s.trim().to_string())
            .collect(),
    }
}

/// Numbers of a DS/IS/FD/FL/US/SS/... attribute. `None` when absent, empty or when any value
/// does not parse (a half-parsed vector would silently shift multi-valued attributes).
pub(super) fn f64s(obj: &Obj, tag: Tag) -> Option<Vec<f64>> {
    let p = primitive(obj, tag)?;
    let v: Vec<f64> = match p.as_ref() {
        PrimitiveValue::Str(_) | PrimitiveValue::Strs(_) => {
            let parts = strings(obj, tag);
            let mut out = Vec::with_capacity(parts.len());
            for s in parts {
                if s.is_empty() {
                    return None;
                }
                out.push(s.parse::<f64>().ok().filter(|v| v.is_finite())?);
            }
            out
        }
        PrimitiveValue::Empty => return None,
        other => other.to_multi_float64().ok()?,
    };
    (!v.is_empty()).then_some(v)
}

pub(super) fn f64_1(obj: &Obj, tag: Tag) -> Option<f64> {
    f64s(obj, tag)?.first().copied()
}

/// An attribute that is present but not an integer, with its raw value for the message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{raw:?} is not an integer")]
pub(super) struct NotAnInteger {
    pub raw: String,
}

/// An integer attribute (US/UL/SS/IS...). `Err` when present but not an integer, so that
/// callers can report the bad value.
pub(super) fn int(obj: &Obj, tag: Tag) -> Option<Result<i64, NotAnInteger>> {
    let p = primitive(obj, tag)?;
    match p.as_ref() {
        PrimitiveValue::Empty => None,
        PrimitiveValue::Str(_) | PrimitiveValue::Strs(_) => {
            let s = string(obj, tag)?;
            let first = s.split('\\').next().unwrap_or("").trim();
            Some(
                first
                    .parse::<i64>()
                    .map_err(|_| NotAnInteger { raw: s.clone() }),
            )
        }
        other => Some(other.to_int::<i64>().map_err(|_| NotAnInteger {
            raw: other.to_str().into_owned(),
        })),
    }
}

/// An integer attribute, `None` when absent or invalid.
pub(super) fn int_opt(obj: &Obj, tag: Tag) -> Option<i64> {
    int(obj, tag)?.ok()
}

pub(super) fn items(obj: &Obj, tag: Tag) -> &[Obj] {
    match obj.get(tag).map(|e| e.value()) {
        Some(DicomValue::Sequence(seq)) => seq.items(),
        _ => &[],
    }
}

/// The first item of functional group `seq` for `frame`: from the Per-frame Functional Groups
/// Sequence item of that frame, else from the Shared Functional Groups Sequence.
pub(super) fn functional_group(obj: &Obj, frame: usize, seq: Tag) -> Option<&Obj> {
    let per_frame = items(obj, tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE);
    if let Some(item) = per_frame.get(frame)
        && let Some(first) = items(item, seq).first()
    {
        return Some(first);
    }
    items(obj, tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE)
        .first()
        .and_then(|shared| items(shared, seq).first())
}

/// `tag` inside functional group `seq` for `frame`, else at the top level.
pub(super) fn frame_f64s(obj: &Obj, frame: usize, seq: Tag, tag: Tag) -> Option<Vec<f64>> {
    functional_group(obj, frame, seq)
        .and_then(|g| f64s(g, tag))
        .or_else(|| f64s(obj, tag))
}

pub(super) fn fixed<const N: usize>(v: Option<Vec<f64>>) -> Option<[f64; N]> {
    let v = v?;
    (v.len() >= N).then(|| {
        let mut out = [0.0; N];
        out.copy_from_slice(&v[..N]);
        out
    })
}
