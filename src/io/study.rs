//! Studies: find DICOM instances in folders, DICOMDIRs or lists of paths, group them by
//! study and series, order the slices, and keep each instance's metadata tree.
//!
//! Scanning reads headers only (everything before the pixel data), so a large folder is quick;
//! the viewer decodes an instance's pixels with [`load_dicom`](super::dicom::load_dicom) when it
//! shows it. Files without the DICOM "DICM" marker are skipped silently (and counted); files
//! that look like DICOM but cannot be read are listed in [`StudyScan::errors`] and the scan
//! goes on.
//!
//! Order within a series: by ImagePositionPatient projected on the slice normal (the cross
//! product of the ImageOrientationPatient row and column directions), ascending; instances
//! without a position come after, by InstanceNumber; ties by InstanceNumber, then path.
use std::collections::{BTreeMap, HashSet};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use dicom_core::DicomValue;
use dicom_dictionary_std::tags;

use super::dicom::{DicomError, DicomErrorKind, DicomSummary, looks_like_dicom, read_dicom_header};
use super::image::MetadataNode;

/// Progress of a scan, reported once per file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanProgress {
    /// Files examined so far (including this one).
    pub done: usize,
    /// Files to examine in all.
    pub total: usize,
    /// The file just examined.
    pub current: PathBuf,
}

/// One instance: its header summary (which holds its path) and metadata tree.
#[derive(Debug, Clone)]
pub struct Instance {
    /// Header facts of the instance, including its path.
    pub summary: DicomSummary,
    /// The instance's attributes as a tree, for the metadata panel.
    pub metadata: Vec<MetadataNode>,
}

impl Instance {
    /// The file the instance was read from.
    pub fn path(&self) -> &Path {
        &self.summary.path
    }
}

/// The instances of one series (same SeriesInstanceUID within a study).
#[derive(Debug, Clone)]
pub struct Series {
    /// Empty when the instances have no SeriesInstanceUID.
    pub series_instance_uid: String,
    /// SeriesNumber of the first instance (in slice order).
    pub series_number: Option<i64>,
    /// Modality of the first instance.
    pub modality: Option<String>,
    /// SeriesDescription of the first instance.
    pub description: Option<String>,
    /// In slice order (see the module documentation).
    pub instances: Vec<Instance>,
}

/// The series of one study (same StudyInstanceUID).
#[derive(Debug, Clone)]
pub struct Study {
    /// Empty when the instances have no StudyInstanceUID.
    pub study_instance_uid: String,
    /// PatientName of the study's first instance (first series, first slice).
    pub patient_name: Option<String>,
    /// PatientID, from the same instance.
    pub patient_id: Option<String>,
    /// StudyDate (`YYYYMMDD` as stored), from the same instance.
    pub study_date: Option<String>,
    /// StudyDescription, from the same instance.
    pub description: Option<String>,
    /// By SeriesNumber, then UID.
    pub series: Vec<Series>,
}

/// The result of a scan. Problems with single files never fail the scan: they are listed.
#[derive(Debug, Clone, Default)]
pub struct StudyScan {
    /// By StudyDate, then UID.
    pub studies: Vec<Study>,
    /// Files that look like DICOM but could not be read, each naming the file and the problem.
    pub errors: Vec<DicomError>,
    /// Files skipped because they are not DICOM (no "DICM" marker).
    pub skipped_non_dicom: usize,
    /// DICOMDIR files met during a folder scan (directories, not instances).
    pub dicomdir_files: usize,
    /// Files examined (instances + errors + skipped + DICOMDIRs).
    pub files_examined: usize,
    /// True when the progress callback asked to stop before the end.
    pub cancelled: bool,
}

impl StudyScan {
    /// Number of instances in all studies.
    pub fn instance_count(&self) -> usize {
        self.studies
            .iter()
            .flat_map(|s| &s.series)
            .map(|s| s.instances.len())
            .sum()
    }

    /// Number of series in all studies.
    pub fn series_count(&self) -> usize {
        self.studies.iter().map(|s| s.series.len()).sum()
    }
}

/// Every file under `dir` ([`crate::io::walk`]); unreadable entries and link loops become
/// errors of the scan.
fn collect_files(dir: &Path, out: &mut Vec<PathBuf>, errors: &mut Vec<DicomError>) {
    let problem = |path: PathBuf, message: String| DicomError {
        path,
        kind: DicomErrorKind::Io,
        message,
    };
    match crate::io::walk::walk_files(dir, |_| true) {
        Ok(walk) => {
            out.extend(walk.files);
            errors.extend(
                walk.problems
                    .into_iter()
                    .map(|p| problem(p.path, p.message)),
            );
        }
        Err(e) => errors.push(problem(
            dir.to_path_buf(),
            format!("cannot list the folder: {e}"),
        )),
    }
}

/// Scans a folder recursively.
pub fn scan_folder(
    root: &Path,
    progress: &mut dyn FnMut(&ScanProgress) -> ControlFlow<()>,
) -> StudyScan {
    scan_paths(&[root.to_path_buf()], progress)
}

/// Scans files and folders (folders recursively). A file named `DICOMDIR` given explicitly
/// is read as a directory: the files it references are scanned instead. Inside folders,
/// DICOMDIR files are counted and skipped (the folder walk finds their files anyway).
pub fn scan_paths(
    paths: &[PathBuf],
    progress: &mut dyn FnMut(&ScanProgress) -> ControlFlow<()>,
) -> StudyScan {
    let (files, errors) = expand_paths(paths);
    let scan = StudyScan {
        errors,
        ..Default::default()
    };
    scan_files(files, scan, progress, false)
}

/// The files that `paths` stand for (folders walked recursively, DICOMDIRs resolved to the
/// files they reference), plus an error for each folder or reference that could not be read.
fn expand_paths(paths: &[PathBuf]) -> (Vec<PathBuf>, Vec<DicomError>) {
    let mut errors = Vec::new();
    let mut files = Vec::new();
    for p in paths {
        if p.is_dir() {
            collect_files(p, &mut files, &mut errors);
        } else if is_dicomdir_name(p) {
            match dicomdir_files(p) {
                Ok((refs, missing)) => {
                    files.extend(refs);
                    errors.extend(missing);
                }
                Err(e) => errors.push(e),
            }
        } else {
            files.push(p.clone());
        }
    }
    (dedup(files), errors)
}

/// One file of a [`scan_for_viewer`] run, handed over as soon as it is examined.
#[derive(Debug, Clone)]
pub enum ScanItem {
    /// A DICOM image instance (header and metadata; pixels are decoded when shown).
    Dicom(Box<Instance>),
    /// A raster image or NIfTI volume (read when shown).
    Image(PathBuf),
    /// A DICOM result object (Parametric Map or Segmentation), laid over its source images
    /// rather than shown as an image of its own.
    ResultObject(PathBuf),
    /// A file that could not be used, and why.
    Unreadable {
        /// The file.
        path: PathBuf,
        /// Why it could not be used.
        reason: String,
    },
}

/// Scans files and folders for everything the viewer shows: DICOM instances (as
/// [`scan_paths`] does), raster images and NIfTI volumes. Each file is reported to `on_item`
/// as soon as it is examined (`None` for files that are neither, such as notes or DICOMDIRs
/// met inside folders), so that a browser can show the first images while a large folder is
/// still being read; returning `Break` stops the scan. Group the DICOM instances with
/// [`group_instances`].
pub fn scan_for_viewer(
    paths: &[PathBuf],
    on_item: &mut dyn FnMut(Option<ScanItem>, &ScanProgress) -> ControlFlow<()>,
) {
    let (files, errors) = expand_paths(paths);
    let progress = |done, total, current: &Path| ScanProgress {
        done,
        total,
        current: current.to_path_buf(),
    };
    for e in errors {
        let report = progress(0, files.len(), &e.path);
        let item = ScanItem::Unreadable {
            path: e.path,
            reason: e.message,
        };
        if on_item(Some(item), &report).is_break() {
            return;
        }
    }
    let total = files.len();
    for (i, path) in files.into_iter().enumerate() {
        let report = progress(i + 1, total, &path);
        let item = if super::raster::is_raster_path(&path) || super::nifti::is_nifti_path(&path) {
            Some(ScanItem::Image(path))
        } else {
            match examine(&path, false) {
                Examined::Instance(inst)
                    if super::result_objects::is_result_object_class(
                        &inst.summary.sop_class_uid,
                    ) =>
                {
                    Some(ScanItem::ResultObject(path))
                }
                Examined::Instance(inst) => Some(ScanItem::Dicom(inst)),
                Examined::Error(e) => Some(ScanItem::Unreadable {
                    path: e.path,
                    reason: e.message,
                }),
                Examined::NotDicom | Examined::Dicomdir => None,
            }
        };
        if on_item(item, &report).is_break() {
            return;
        }
    }
}

/// Reads a DICOMDIR and scans the files it references (missing ones are listed as errors).
pub fn scan_dicomdir(
    dicomdir: &Path,
    progress: &mut dyn FnMut(&ScanProgress) -> ControlFlow<()>,
) -> Result<StudyScan, DicomError> {
    let (files, missing) = dicomdir_files(dicomdir)?;
    let scan = StudyScan {
        errors: missing,
        ..Default::default()
    };
    Ok(scan_files(files, scan, progress, true))
}

fn is_dicomdir_name(p: &Path) -> bool {
    p.file_name()
        .is_some_and(|n| n.eq_ignore_ascii_case("DICOMDIR"))
}

/// The files a DICOMDIR references through ReferencedFileID, resolved next to it, plus an
/// error for each reference that does not resolve.
fn dicomdir_files(dicomdir: &Path) -> Result<(Vec<PathBuf>, Vec<DicomError>), DicomError> {
    let bytes = std::fs::read(dicomdir).map_err(|e| DicomError {
        path: dicomdir.to_path_buf(),
        kind: DicomErrorKind::Io,
        message: format!("cannot read the DICOMDIR: {e}"),
    })?;
    let obj = super::dicom::parse_object(&bytes, dicomdir)?;
    let base = dicomdir.parent().unwrap_or(Path::new("."));
    let records = match obj.get(tags::DIRECTORY_RECORD_SEQUENCE).map(|e| e.value()) {
        Some(DicomValue::Sequence(seq)) => seq.items(),
        _ => {
            return Err(DicomError {
                path: dicomdir.to_path_buf(),
                kind: DicomErrorKind::Malformed,
                message: "DICOMDIR without a Directory Record Sequence".to_string(),
            });
        }
    };
    let mut files = Vec::new();
    let mut missing = Vec::new();
    let mut seen = HashSet::new();
    for rec in records {
        let Some(elem) = rec.get(tags::REFERENCED_FILE_ID) else {
            continue;
        };
        let Ok(raw) = elem.to_str() else {
            continue;
        };
        let parts: Vec<&str> = raw
            .split('\\')
            .map(|s| s.trim_matches(|c: char| c == ' ' || c == '\0'))
            .filter(|s| !s.is_empty())
            .collect();
        if parts.is_empty() {
            continue;
        }
        let display = parts.join("/");
        if parts
            .iter()
            .any(|p| *p == ".." || *p == "." || p.contains('/'))
        {
            missing.push(DicomError {
                path: dicomdir.to_path_buf(),
                kind: DicomErrorKind::Malformed,
                message: format!("DICOMDIR reference {display:?} leaves the DICOMDIR's folder"),
            });
            continue;
        }
        match resolve(base, &parts) {
            Some(p) => {
                if seen.insert(p.clone()) {
                    files.push(p);
                }
            }
            None => missing.push(DicomError {
                path: base.join(&display),
                kind: DicomErrorKind::Io,
                message: format!("file referenced by {} is missing", dicomdir.display()),
            }),
        }
    }
    Ok((files, missing))
}

/// Joins DICOMDIR path components, matching each one case-insensitively when the exact name
/// does not exist (media written on one system are often read on another).
fn resolve(base: &Path, parts: &[&str]) -> Option<PathBuf> {
    let mut cur = base.to_path_buf();
    for part in parts {
        let exact = cur.join(part);
        if exact.exists() {
            cur = exact;
            continue;
        }
        let found = std::fs::read_dir(&cur)
            .ok()?
            .filter_map(|e| e.ok())
            .find(|e| {
                e.file_name()
                    .to_str()
                    .is_some_and(|n| n.eq_ignore_ascii_case(part))
            })?;
        cur = found.path();
    }
    cur.is_file().then_some(cur)
}

fn scan_files(
    files: Vec<PathBuf>,
    mut scan: StudyScan,
    progress: &mut dyn FnMut(&ScanProgress) -> ControlFlow<()>,
    from_dicomdir: bool,
) -> StudyScan {
    let files = dedup(files);
    let total = files.len();
    let mut instances = Vec::new();
    for (i, path) in files.into_iter().enumerate() {
        scan.files_examined += 1;
        match examine(&path, from_dicomdir) {
            Examined::Instance(inst) => instances.push(*inst),
            Examined::Dicomdir => scan.dicomdir_files += 1,
            Examined::NotDicom => scan.skipped_non_dicom += 1,
            Examined::Error(e) => scan.errors.push(e),
        }
        let report = ScanProgress {
            done: i + 1,
            total,
            current: path,
        };
        if progress(&report).is_break() {
            scan.cancelled = i + 1 < total;
            break;
        }
    }
    scan.studies = group_instances(instances);
    scan
}

/// Drops repeats of a file (the same file given twice, or via two routes).
fn dedup(files: Vec<PathBuf>) -> Vec<PathBuf> {
    let mut seen = HashSet::new();
    files
        .into_iter()
        .filter(|p| seen.insert(std::fs::canonicalize(p).unwrap_or_else(|_| p.clone())))
        .collect()
}

/// What one file of a scan turned out to be.
enum Examined {
    Instance(Box<Instance>),
    Dicomdir,
    NotDicom,
    Error(DicomError),
}

/// Reads the header of one file. A file without the DICOM marker is an error only when a
/// DICOMDIR referenced it; in a folder it is simply not DICOM.
fn examine(path: &Path, from_dicomdir: bool) -> Examined {
    if !looks_like_dicom(path) {
        if from_dicomdir {
            return Examined::Error(DicomError {
                path: path.to_path_buf(),
                kind: DicomErrorKind::NotDicom,
                message: "referenced by the DICOMDIR but not a DICOM file (no DICM preamble)"
                    .to_string(),
            });
        }
        return Examined::NotDicom;
    }
    match read_dicom_header(path) {
        Ok((summary, _)) if summary.is_dicomdir => Examined::Dicomdir,
        Ok((summary, metadata)) => Examined::Instance(Box::new(Instance { summary, metadata })),
        Err(e) => Examined::Error(e),
    }
}

/// Groups instances by study and series and orders everything (see the module
/// documentation); what a scan does at its end, and what a viewer does with the instances a
/// [`scan_for_viewer`] run has handed over so far.
pub fn group_instances(instances: Vec<Instance>) -> Vec<Study> {
    let mut by_study: BTreeMap<String, BTreeMap<String, Vec<Instance>>> = BTreeMap::new();
    for inst in instances {
        let study = inst.summary.study_instance_uid.clone().unwrap_or_default();
        let series = inst.summary.series_instance_uid.clone().unwrap_or_default();
        by_study
            .entry(study)
            .or_default()
            .entry(series)
            .or_default()
            .push(inst);
    }
    let mut studies: Vec<Study> = by_study
        .into_iter()
        .map(|(uid, series_map)| {
            let mut series: Vec<Series> = series_map
                .into_iter()
                .map(|(suid, mut instances)| {
                    order_slices(&mut instances);
                    let first = &instances[0].summary;
                    Series {
                        series_instance_uid: suid,
                        series_number: first.series_number,
                        modality: first.modality.clone(),
                        description: first.series_description.clone(),
                        instances,
                    }
                })
                .collect();
            series.sort_by(|a, b| {
                (a.series_number.unwrap_or(i64::MAX), &a.series_instance_uid)
                    .cmp(&(b.series_number.unwrap_or(i64::MAX), &b.series_instance_uid))
            });
            let first = &series[0].instances[0].summary;
            Study {
                study_instance_uid: uid,
                patient_name: first.patient_name.clone(),
                patient_id: first.patient_id.clone(),
                study_date: first.study_date.clone(),
                description: first.study_description.clone(),
                series,
            }
        })
        .collect();
    studies.sort_by(|a, b| {
        (
            a.study_date.clone().unwrap_or_default(),
            &a.study_instance_uid,
        )
            .cmp(&(
                b.study_date.clone().unwrap_or_default(),
                &b.study_instance_uid,
            ))
    });
    studies
}

fn cross(a: [f64; 3], b: [f64; 3]) -> [f64; 3] {
    [
        a[1] * b[2] - a[2] * b[1],
        a[2] * b[0] - a[0] * b[2],
        a[0] * b[1] - a[1] * b[0],
    ]
}

/// Orders the instances of one series (see the module documentation).
pub fn order_slices(instances: &mut [Instance]) {
    let normal = instances
        .iter()
        .find_map(|i| i.summary.image_orientation)
        .map(|o| cross([o[0], o[1], o[2]], [o[3], o[4], o[5]]))
        .filter(|n| n.iter().map(|v| v * v).sum::<f64>() > 1e-6)
        // No orientation: assume axial slices (normal along z).
        .unwrap_or([0.0, 0.0, 1.0]);
    let key = |i: &Instance| -> (u8, f64, i64) {
        let s = &i.summary;
        match s.image_position {
            Some(p) => (
                0,
                p[0] * normal[0] + p[1] * normal[1] + p[2] * normal[2],
                s.instance_number.unwrap_or(i64::MAX),
            ),
            None => (1, 0.0, s.instance_number.unwrap_or(i64::MAX)),
        }
    };
    instances.sort_by(|a, b| {
        let (ka, kb) = (key(a), key(b));
        ka.0.cmp(&kb.0)
            .then(ka.1.total_cmp(&kb.1))
            .then(ka.2.cmp(&kb.2))
            .then_with(|| a.summary.path.cmp(&b.summary.path))
    });
}
