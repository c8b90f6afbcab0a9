//! A grey 8-bit slice as a DICOM MR image with its place in a volume (Image Position and
//! Orientation, Pixel Spacing), for `synth-data --volumes`: synthetic series whose file names
//! do not follow their geometry, so that readers must order slices by position.
use std::path::Path;

use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::InMemDicomObject;
use dicom_object::meta::FileMetaTableBuilder;

use super::ExportError;
use super::atomic::write_atomically;
use super::dicom_sc::{derived_uid, put_str};

/// Where a slice belongs: its series and its place along the slice axis.
#[derive(Debug, Clone, PartialEq)]
pub struct SliceInVolume<'a> {
    /// A name the study, series and instance UIDs are derived from (the same name gives the
    /// same UIDs).
    pub volume: &'a str,
    /// Series description.
    pub description: &'a str,
    /// Slice index along the normal (position `index * spacing` mm).
    pub index: usize,
    /// Instance number (need not follow the position).
    pub instance_number: usize,
    /// Slice spacing in mm.
    pub spacing: f64,
}

/// Writes `pixels` (`side x side`, 8-bit grey) at `path` as an MR image of `slice`'s volume.
pub fn write_slice(
    path: &Path,
    side: u16,
    pixels: &[u8],
    slice: &SliceInVolume,
) -> Result<(), ExportError> {
    if pixels.len() != usize::from(side) * usize::from(side) {
        return Err(ExportError::Invalid(format!(
            "{} pixels for a {side} x {side} slice",
            pixels.len()
        )));
    }
    let mut obj = InMemDicomObject::new_empty();
    let key = "mvfa-studio synthetic volume";
    let study = derived_uid(key, &format!("study:{}", slice.volume));
    let series = derived_uid(key, &format!("series:{}", slice.volume));
    let instance = derived_uid(key, &format!("instance:{}:{}", slice.volume, slice.index));
    let us = |v: u16| PrimitiveValue::from(v);
    put_str(
        &mut obj,
        tags::SOP_CLASS_UID,
        VR::UI,
        uids::MR_IMAGE_STORAGE,
    );
    put_str(&mut obj, tags::SOP_INSTANCE_UID, VR::UI, &instance);
    put_str(&mut obj, tags::STUDY_INSTANCE_UID, VR::UI, &study);
    put_str(&mut obj, tags::SERIES_INSTANCE_UID, VR::UI, &series);
    put_str(&mut obj, tags::PATIENT_NAME, VR::PN, "SYNTHETIC^VOLUME");
    put_str(&mut obj, tags::PATIENT_ID, VR::LO, slice.volume);
    put_str(&mut obj, tags::MODALITY, VR::CS, "MR");
    put_str(
        &mut obj,
        tags::SERIES_DESCRIPTION,
        VR::LO,
        slice.description,
    );
    put_str(
        &mut obj,
        tags::STUDY_DESCRIPTION,
        VR::LO,
        "Synthetic volume",
    );
    put_str(&mut obj, tags::SERIES_NUMBER, VR::IS, "1");
    put_str(
        &mut obj,
        tags::INSTANCE_NUMBER,
        VR::IS,
        &slice.instance_number.to_string(),
    );
    put_str(
        &mut obj,
        tags::IMAGE_POSITION_PATIENT,
        VR::DS,
        &format!("0\\0\\{}", slice.index as f64 * slice.spacing),
    );
    put_str(
        &mut obj,
        tags::IMAGE_ORIENTATION_PATIENT,
        VR::DS,
        "1\\0\\0\\0\\1\\0",
    );
    put_str(&mut obj, tags::PIXEL_SPACING, VR::DS, "1\\1");
    let frame_of_reference = derived_uid(key, &format!("frame-of-reference:{}", slice.volume));
    put_str(
        &mut obj,
        tags::FRAME_OF_REFERENCE_UID,
        VR::UI,
        &frame_of_reference,
    );
    obj.put(DataElement::new(
        tags::POSITION_REFERENCE_INDICATOR,
        VR::LO,
        PrimitiveValue::Empty,
    ));
    put_str(
        &mut obj,
        tags::SLICE_THICKNESS,
        VR::DS,
        &slice.spacing.to_string(),
    );
    obj.put(DataElement::new(tags::SAMPLES_PER_PIXEL, VR::US, us(1)));
    put_str(
        &mut obj,
        tags::PHOTOMETRIC_INTERPRETATION,
        VR::CS,
        "MONOCHROME2",
    );
    obj.put(DataElement::new(tags::ROWS, VR::US, us(side)));
    obj.put(DataElement::new(tags::COLUMNS, VR::US, us(side)));
    obj.put(DataElement::new(tags::BITS_ALLOCATED, VR::US, us(8)));
    obj.put(DataElement::new(tags::BITS_STORED, VR::US, us(8)));
    obj.put(DataElement::new(tags::HIGH_BIT, VR::US, us(7)));
    obj.put(DataElement::new(tags::PIXEL_REPRESENTATION, VR::US, us(0)));
    let mut data = pixels.to_vec();
    if data.len() % 2 == 1 {
        data.push(0);
    }
    obj.put(DataElement::new(
        tags::PIXEL_DATA,
        VR::OB,
        PrimitiveValue::from(data),
    ));
    let file = obj
        .with_meta(
            FileMetaTableBuilder::new()
                .transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN)
                .media_storage_sop_class_uid(uids::MR_IMAGE_STORAGE)
                .media_storage_sop_instance_uid(&instance),
        )
        .map_err(|e| ExportError::write(path, super::atomic::error_chain(&e)))?;
    write_atomically(path, |w| Ok(file.write_all(w)?))
}
