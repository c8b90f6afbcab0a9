//! Small builders of DICOM elements, codes and sequences shared by the exported objects.
use dicom_core::value::DataSetSequence;
use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;

/// A code: (value, scheme designator, meaning).
pub type Code = (&'static str, &'static str, &'static str);

/// A text element.
pub fn text_element(tag: Tag, vr: VR, v: &str) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, vr, PrimitiveValue::from(v))
}

/// A sequence of `items`.
pub fn sequence(tag: Tag, items: Vec<InMemDicomObject>) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, VR::SQ, DataSetSequence::from(items))
}

/// A present but empty sequence (type 2).
pub fn empty_sequence(tag: Tag) -> DataElement<InMemDicomObject> {
    sequence(tag, Vec::new())
}

/// A Code Sequence Macro item.
pub fn code((value, scheme, meaning): Code) -> InMemDicomObject {
    InMemDicomObject::from_element_iter([
        text_element(tags::CODE_VALUE, VR::SH, value),
        text_element(tags::CODING_SCHEME_DESIGNATOR, VR::SH, scheme),
        text_element(tags::CODE_MEANING, VR::LO, meaning),
    ])
}

/// A code sequence of one code.
pub fn code_sequence(tag: Tag, c: Code) -> DataElement<InMemDicomObject> {
    sequence(tag, vec![code(c)])
}

/// Decimal String values, each at most 16 characters (PS3.5 6.2).
pub fn ds_values(tag: Tag, values: &[f64]) -> DataElement<InMemDicomObject> {
    let strs: Vec<String> = values.iter().map(|&v| ds(v)).collect();
    DataElement::new(tag, VR::DS, PrimitiveValue::Strs(strs.into()))
}

/// One value as a Decimal String of at most 16 characters.
pub fn ds(v: f64) -> String {
    let plain = format!("{v}");
    if plain.len() <= 16 {
        return plain;
    }
    for digits in (1..=15).rev() {
        let s = format!("{v:.digits$e}");
        if s.len() <= 16 {
            return s;
        }
    }
    "0".into()
}

/// An Unsigned Short element.
pub fn us(tag: Tag, v: u16) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, VR::US, PrimitiveValue::from(v))
}

/// An Unsigned Long element (of one or several values).
pub fn ul(tag: Tag, v: &[u32]) -> DataElement<InMemDicomObject> {
    DataElement::new(
        tag,
        VR::UL,
        PrimitiveValue::U32(v.iter().copied().collect()),
    )
}

/// A Code String of several values.
pub fn cs_values(tag: Tag, values: &[&str]) -> DataElement<InMemDicomObject> {
    let strs: Vec<String> = values.iter().map(|s| s.to_string()).collect();
    DataElement::new(tag, VR::CS, PrimitiveValue::Strs(strs.into()))
}

/// An Attribute Tag element (a Dimension Index Pointer, say).
pub fn at(tag: Tag, value: Tag) -> DataElement<InMemDicomObject> {
    DataElement::new(
        tag,
        VR::AT,
        PrimitiveValue::Tags(std::iter::once(value).collect()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_strings_fit_sixteen_characters() {
        for v in [
            0.0,
            1.5,
            -0.123_456_789_012_345_67,
            1e-30,
            123_456_789.123_456_78,
        ] {
            let s = ds(v);
            assert!(s.len() <= 16, "{s}");
            let back: f64 = s.parse().unwrap();
            assert!((back - v).abs() <= v.abs() * 1e-9 + 1e-300, "{v} -> {s}");
        }
    }
}
