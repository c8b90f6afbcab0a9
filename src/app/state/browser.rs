//! The study browser's model: what has been opened, grouped the way a radiologist navigates
//! it. DICOM instances go into patient / study / series groups (grouped and ordered by
//! [`crate::io::study`]); raster images and NIfTI volumes into one group per folder. A group is
//! also what the viewer scrolls through: the slices of a series, the images of a folder.
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::io::image::MetadataNode;
use crate::io::study::{Instance, ScanItem, Study, group_instances};

/// One file in the browser.
#[derive(Debug, Clone)]
pub struct Item {
    /// The file.
    pub path: PathBuf,
    /// File name (DICOM: instance number and file name).
    pub name: String,
    /// Frames the file holds, as far as known before loading (DICOM headers say; rasters
    /// have one; a NIfTI volume's count is known once it is loaded).
    pub frames: usize,
}

/// What a group is, for the tree's headings.
#[derive(Debug, Clone, PartialEq)]
pub enum GroupKind {
    /// A DICOM series (patient / study / series).
    Series {
        /// Patient name and ID, or "Unknown patient".
        patient: String,
        /// Study date and description, or "Study".
        study: String,
        /// Modality, series number and description.
        series: String,
        /// SeriesInstanceUID: display settings are shared by the slices of a series.
        uid: String,
    },
    /// Raster images or NIfTI volumes of one folder.
    Folder(PathBuf),
}

/// A heading of the browser's tree and the files under it, in viewing order; also what the
/// viewer scrolls through.
#[derive(Debug, Clone)]
pub struct Group {
    /// What the group is.
    pub kind: GroupKind,
    /// Its files, in viewing order.
    pub items: Vec<Item>,
}

impl Group {
    /// The key display settings (window, inversion) are stored under: the series for DICOM,
    /// else each file on its own (images of a folder rarely share a value range).
    pub fn display_key(&self, item: &Item) -> String {
        match &self.kind {
            GroupKind::Series { uid, .. } if !uid.is_empty() => format!("series:{uid}"),
            _ => format!("file:{}", item.path.display()),
        }
    }
}

/// Everything opened so far.
#[derive(Debug, Default)]
pub struct Browser {
    /// The files and folders the user opened (what a project file reopens).
    pub roots: Vec<PathBuf>,
    /// The groups: DICOM series first (by study), then one per folder of other images.
    pub groups: Vec<Group>,
    /// Files that could not be used, with the reason (scan or load errors).
    pub unreadable: Vec<(PathBuf, String)>,
    /// Result objects (Parametric Maps, Segmentations) found, in the order found: read and
    /// laid over their source images, not listed as images.
    pub result_objects: Vec<PathBuf>,
    studies: Vec<Study>,
    images: Vec<PathBuf>,
    /// Frame counts learnt by loading (NIfTI volumes, multi-frame files).
    loaded_frames: HashMap<PathBuf, usize>,
    index: HashMap<PathBuf, (usize, usize)>,
}

impl Browser {
    /// Adds what a scan found (a batch of items), regrouping everything.
    pub fn add(&mut self, items: Vec<ScanItem>) {
        if items.is_empty() {
            return;
        }
        let mut instances: Vec<Instance> = std::mem::take(&mut self.studies)
            .into_iter()
            .flat_map(|s| s.series)
            .flat_map(|s| s.instances)
            .collect();
        for item in items {
            match item {
                ScanItem::Dicom(inst) => {
                    if !self.index.contains_key(inst.path()) {
                        instances.push(*inst)
                    }
                }
                ScanItem::Image(path) => {
                    if !self.images.contains(&path) {
                        self.images.push(path)
                    }
                }
                ScanItem::ResultObject(path) => {
                    if !self.result_objects.contains(&path) {
                        self.result_objects.push(path)
                    }
                }
                ScanItem::Unreadable { path, reason } => self.add_unreadable(path, reason),
            }
        }
        self.studies = group_instances(instances);
        self.images.sort();
        self.rebuild();
    }

    /// Records a file that could not be used, with the reason (once per file).
    pub fn add_unreadable(&mut self, path: PathBuf, reason: String) {
        if !self.unreadable.iter().any(|(p, _)| p == &path) {
            self.unreadable.push((path, reason));
        }
    }

    /// Records the frame count found when the file was loaded.
    pub fn set_frames(&mut self, path: &Path, frames: usize) {
        if self.loaded_frames.get(path) != Some(&frames) {
            self.loaded_frames.insert(path.to_path_buf(), frames);
            self.rebuild();
        }
    }

    fn rebuild(&mut self) {
        let mut groups = Vec::new();
        for study in &self.studies {
            let patient = match (&study.patient_name, &study.patient_id) {
                (Some(n), Some(id)) => format!("{n} ({id})"),
                (Some(n), None) => n.clone(),
                (None, Some(id)) => id.clone(),
                (None, None) => "Unknown patient".into(),
            };
            let study_title = [study.study_date.clone(), study.description.clone()]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(" ");
            for series in &study.series {
                let series_title = format!(
                    "{} {} {}",
                    series.modality.as_deref().unwrap_or("?"),
                    series
                        .series_number
                        .map(|n| format!("#{n}"))
                        .unwrap_or_default(),
                    series.description.as_deref().unwrap_or("")
                );
                let items = series
                    .instances
                    .iter()
                    .map(|inst| Item {
                        path: inst.path().to_path_buf(),
                        name: instance_name(inst),
                        frames: inst.summary.frames.unwrap_or(1).max(1) as usize,
                    })
                    .collect();
                groups.push(Group {
                    kind: GroupKind::Series {
                        patient: patient.clone(),
                        study: if study_title.is_empty() {
                            "Study".into()
                        } else {
                            study_title.clone()
                        },
                        series: series_title.trim().to_string(),
                        uid: series.series_instance_uid.clone(),
                    },
                    items,
                });
            }
        }
        let mut by_folder: Vec<(PathBuf, Vec<Item>)> = Vec::new();
        for path in &self.images {
            let folder = path.parent().map(Path::to_path_buf).unwrap_or_default();
            let item = Item {
                path: path.clone(),
                name: file_name(path),
                frames: 1,
            };
            match by_folder.iter_mut().find(|(f, _)| *f == folder) {
                Some((_, items)) => items.push(item),
                None => by_folder.push((folder, vec![item])),
            }
        }
        groups.extend(by_folder.into_iter().map(|(folder, items)| Group {
            kind: GroupKind::Folder(folder),
            items,
        }));
        for group in &mut groups {
            for item in &mut group.items {
                if let Some(&n) = self.loaded_frames.get(&item.path) {
                    item.frames = n.max(1);
                }
            }
        }
        self.index = groups
            .iter()
            .enumerate()
            .flat_map(|(g, group)| {
                group
                    .items
                    .iter()
                    .enumerate()
                    .map(move |(i, item)| (item.path.clone(), (g, i)))
            })
            .collect();
        self.groups = groups;
    }

    /// Where `path` sits: (group, item) indices.
    pub fn locate(&self, path: &Path) -> Option<(usize, usize)> {
        self.index.get(path).copied()
    }

    /// The group and item of `path`, if it is in the browser.
    pub fn item(&self, path: &Path) -> Option<(&Group, &Item)> {
        let (g, i) = self.locate(path)?;
        Some((&self.groups[g], &self.groups[g].items[i]))
    }

    /// The header metadata a scan read for a DICOM file (before its pixels are loaded).
    pub fn scanned_metadata(&self, path: &Path) -> Option<&[MetadataNode]> {
        self.studies
            .iter()
            .flat_map(|s| &s.series)
            .flat_map(|s| &s.instances)
            .find(|i| i.path() == path)
            .map(|i| i.metadata.as_slice())
    }

    /// Number of files in the browser.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether the browser holds no file.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Forgets everything (a project is being opened).
    pub fn clear(&mut self) {
        *self = Browser::default();
    }
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

fn instance_name(inst: &Instance) -> String {
    match inst.summary.instance_number {
        Some(n) => format!("{n}: {}", file_name(inst.path())),
        None => file_name(inst.path()),
    }
}
