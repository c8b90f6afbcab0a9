//! The metadata tree of an instance for the viewer's panel: one node per element, named
//! "(gggg,eeee) Keyword", with sequences as "Item N" children.
use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry};
use dicom_core::header::Header;
use dicom_core::{DicomValue, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::StandardDataDictionary;
use dicom_object::DefaultDicomObject;

use super::attrs::Obj;
use super::ts;
use crate::io::image::MetadataNode;

/// Longest value shown in full; longer ones are cut with "…".
const MAX_VALUE_CHARS: usize = 256;
/// At most this many nodes per instance (deep structured reports can hold many thousands).
const MAX_NODES: usize = 20_000;
/// Deepest sequence nesting shown.
const MAX_DEPTH: usize = 16;

/// The tree: the file meta group first (as "(0002,xxxx)" nodes), then the data set.
pub(super) fn metadata_tree(obj: &DefaultDicomObject) -> Vec<MetadataNode> {
    let meta = obj.meta();
    let mut out = Vec::new();
    let mut push = |tag: Tag, value: String| {
        out.push(MetadataNode {
            name: node_name(tag),
            value,
            children: Vec::new(),
        })
    };
    push(
        Tag(0x0002, 0x0002),
        meta.media_storage_sop_class_uid().to_string(),
    );
    push(
        Tag(0x0002, 0x0003),
        meta.media_storage_sop_instance_uid().to_string(),
    );
    let ts_uid = meta.transfer_syntax();
    push(
        Tag(0x0002, 0x0010),
        format!("{ts_uid} ({})", ts::transfer_syntax_name(ts_uid)),
    );
    push(
        Tag(0x0002, 0x0012),
        meta.implementation_class_uid().to_string(),
    );
    if let Some(v) = &meta.implementation_version_name {
        push(
            Tag(0x0002, 0x0013),
            v.trim_end_matches(['\0', ' ']).to_string(),
        );
    }
    let mut budget = MAX_NODES;
    out.extend(dataset_nodes(obj, 0, &mut budget));
    out
}

fn node_name(tag: Tag) -> String {
    let keyword = if tag.group() % 2 == 1 {
        if tag.element() <= 0x00FF && tag.element() >= 0x0010 {
            "PrivateCreator".to_string()
        } else {
            "Private".to_string()
        }
    } else {
        StandardDataDictionary
            .by_tag(tag)
            .map(|e| e.alias().to_string())
            .unwrap_or_else(|| "Unknown".to_string())
    };
    format!("({:04X},{:04X}) {keyword}", tag.group(), tag.element())
}

fn dataset_nodes(obj: &Obj, depth: usize, budget: &mut usize) -> Vec<MetadataNode> {
    let mut out = Vec::new();
    for elem in obj.iter() {
        if *budget == 0 {
            out.push(MetadataNode {
                name: "…".to_string(),
                value: format!("more than {MAX_NODES} elements; the rest is not shown"),
                children: Vec::new(),
            });
            break;
        }
        *budget -= 1;
        let name = node_name(elem.tag());
        let node = match elem.value() {
            DicomValue::Primitive(p) if elem.vr() == VR::UN => {
                let p = super::attrs::reinterpret_un(elem.tag(), p);
                let vr = match p {
                    PrimitiveValue::U8(_) => VR::UN,
                    _ => VR::LO,
                };
                MetadataNode {
                    name,
                    value: primitive_text(&p, vr),
                    children: Vec::new(),
                }
            }
            DicomValue::Primitive(p) => MetadataNode {
                name,
                value: primitive_text(p, elem.vr()),
                children: Vec::new(),
            },
            DicomValue::PixelSequence(seq) => {
                let bytes: usize = seq.fragments().iter().map(|f| f.len()).sum();
                MetadataNode {
                    name,
                    value: format!(
                        "<encapsulated: {} fragment(s), {bytes} bytes>",
                        seq.fragments().len()
                    ),
                    children: Vec::new(),
                }
            }
            DicomValue::Sequence(seq) => {
                let items = seq.items();
                let children = if depth >= MAX_DEPTH {
                    vec![MetadataNode {
                        name: "…".to_string(),
                        value: "nested too deeply to show".to_string(),
                        children: Vec::new(),
                    }]
                } else {
                    items
                        .iter()
                        .enumerate()
                        .map(|(i, item)| MetadataNode {
                            name: format!("Item {}", i + 1),
                            value: String::new(),
                            children: dataset_nodes(item, depth + 1, budget),
                        })
                        .collect()
                };
                MetadataNode {
                    name,
                    value: format!("{} item(s)", items.len()),
                    children,
                }
            }
        };
        out.push(node);
    }
    out
}

fn primitive_text(p: &PrimitiveValue, vr: VR) -> String {
    let binary = matches!(
        vr,
        VR::OB | VR::OW | VR::OD | VR::OF | VR::OL | VR::OV | VR::UN
    );
    if binary {
        return format!("<{} bytes>", p.calculate_byte_len());
    }
    if p.multiplicity() > 64 {
        return format!("<{} values>", p.multiplicity());
    }
    let s = p.to_str();
    let s = s.trim_end_matches(['\0', ' ']);
    if s.chars().count() > MAX_VALUE_CHARS {
        let cut: String = s.chars().take(MAX_VALUE_CHARS).collect();
        format!("{cut}…")
    } else {
        s.to_string()
    }
}
