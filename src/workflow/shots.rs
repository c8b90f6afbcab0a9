//! Collecting labelled shots at model resolution from wherever the user keeps them: an MVFA
//! dataset, plain folders, or the app's list of labelled images (with painted masks).
use std::path::{Path, PathBuf};

use super::WorkflowError;
use crate::io::dataset::{
    FewShot, MvfaDataset, MvfaKey, PlainFolderOptions, Sample, ShotFile, open_plain_folders,
};
use crate::io::image::Channels;
use crate::io::input::{is_supported_file, load_mask, load_model_image, load_model_images};
use crate::io::model_input::mask_input;
use crate::io::resample::Image8;
use crate::io::walk::walk_files;
use crate::train::fit::{Shot, Shots};

/// Where the labelled shots come from.
#[derive(Debug, Clone)]
pub enum ShotSource {
    /// `<root>/normal/`, `<root>/abnormal/`, optional `<root>/masks/` (matched by file stem)
    /// and optional `<root>/held_out/` (normal images kept out of training, for calibration).
    PlainFolders {
        /// The folder holding `normal/` and `abnormal/`.
        root: PathBuf,
        /// Accept abnormal images without a mask when `masks/` exists.
        allow_unmasked: bool,
    },
    /// Shots from an MVFA dataset's `valid/` pools.
    Dataset(DatasetShots),
    /// Images labelled one by one (the app): files with a frame, a label and maybe a mask.
    Labelled(Vec<LabelledImage>),
}

/// Shots drawn from an MVFA dataset (`<Key>_AD` layout).
#[derive(Debug, Clone)]
pub struct DatasetShots {
    /// The `<Key>_AD` folder, or its parent when `key` is given.
    pub root: PathBuf,
    /// The dataset key (Brain, Liver, ...), when `root` is the data root.
    pub key: Option<MvfaKey>,
    /// Shots per class.
    pub shots: usize,
    /// The reference's `<k>-shot.txt` and its line group, else a seeded draw.
    pub shot_file: Option<(PathBuf, u32)>,
    /// Seed of the draw.
    pub seed: u64,
}

/// One labelled frame handed over by the app.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelledImage {
    /// The image file.
    pub path: PathBuf,
    /// The frame (slice) of a multi-frame file, 0-based.
    pub frame: usize,
    /// What the user said about it.
    pub label: ShotLabel,
    /// The lesion mask, for abnormal images where one was painted or imported.
    pub mask: Option<MaskSource>,
}

/// A shot's label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShotLabel {
    /// Normal: memory bank, fine-tuning and calibration.
    Normal,
    /// Abnormal: fine-tuning and the threshold.
    Abnormal,
    /// Normal, but kept out of training and the memory bank: calibration only.
    HeldOutNormal,
}

/// A lesion mask at the image's own resolution.
#[derive(Debug, Clone, PartialEq)]
pub enum MaskSource {
    /// A mask image file (non-zero = lesion after the 0.5 threshold on value / 255).
    File(PathBuf),
    /// Painted pixels, row-major, non-zero = lesion.
    Pixels {
        /// Width in pixels (the image's).
        width: usize,
        /// Height in pixels (the image's).
        height: usize,
        /// One value per pixel.
        values: Vec<u8>,
    },
}

/// The shots of a fit, with what the source says about them.
#[derive(Debug, Clone)]
pub struct CollectedShots {
    /// Images (and masks) at model resolution.
    pub shots: Shots,
    /// The organ word the source names (an MVFA dataset's), if any.
    pub organ: Option<String>,
    /// Whether abnormal shots come with masks.
    pub has_masks: bool,
    /// Where the shots came from, for checkpoint provenance.
    pub description: String,
}

/// Reads the shots of `source` at model resolution.
pub fn collect_shots(source: &ShotSource) -> Result<CollectedShots, WorkflowError> {
    match source {
        ShotSource::PlainFolders {
            root,
            allow_unmasked,
        } => plain_folder_shots(root, *allow_unmasked),
        ShotSource::Dataset(spec) => dataset_shots(spec),
        ShotSource::Labelled(images) => labelled_shots(images),
    }
}

/// The shots of plain folders (`normal/`, `abnormal/` with masks, `held_out/`): masks must
/// have their image's size.
fn plain_folder_shots(root: &Path, allow_unmasked: bool) -> Result<CollectedShots, WorkflowError> {
    let opts = PlainFolderOptions {
        organ_word: String::new(),
        allow_unmasked_abnormal: allow_unmasked,
        allow_normal_only: true,
    };
    let few = open_plain_folders(root, &opts)?.to_few_shot();
    let mut collected =
        from_few_shot(&few, None, root.display().to_string(), MaskSizes::MustMatch)?;
    let held_out = root.join("held_out");
    if held_out.is_dir() {
        for path in walk_files(&held_out, is_supported_file)
            .map_err(|e| crate::io::input::InputError {
                path: held_out.clone(),
                message: e.to_string(),
            })?
            .files
        {
            collected.shots.held_out.push(Shot {
                image: load_model_image(&path)?.input,
                mask: None,
            });
        }
    }
    Ok(collected)
}

/// The shots of an MVFA dataset: listed in a shot file, or a seeded draw; masks resized with
/// their images as the reference does.
fn dataset_shots(spec: &DatasetShots) -> Result<CollectedShots, WorkflowError> {
    // A missing, unreadable or non-folder --data is a read error with the system's
    // reason, not "no known layout".
    std::fs::read_dir(&spec.root).map_err(|source| crate::io::dataset::DatasetError::Io {
        path: spec.root.clone(),
        source,
    })?;
    let dataset = match spec.key {
        Some(key) => MvfaDataset::open(&spec.root, key)?,
        None => MvfaDataset::open_dir(&spec.root).map_err(|source| {
            WorkflowError::UnknownDataLayout {
                path: spec.root.clone(),
                source,
            }
        })?,
    };
    let (few, how) = match &spec.shot_file {
        Some((path, iterate)) => {
            let list = ShotFile::read(path)?.list(*iterate)?;
            (
                dataset.shots_from_list(&list, spec.shots)?,
                format!("{} iterate {iterate}", path.display()),
            )
        }
        None => (
            dataset.shots_random(spec.shots, spec.seed)?,
            format!("seeded draw (seed {})", spec.seed),
        ),
    };
    let organ = Some(dataset.key.organ_word().to_string());
    // The reference resizes the datasets' masks with their images; so do we.
    from_few_shot(
        &few,
        organ,
        format!("{}, {how}", spec.root.display()),
        MaskSizes::Resize,
    )
}

/// The shots of images the user labelled one by one.
fn labelled_shots(images: &[LabelledImage]) -> Result<CollectedShots, WorkflowError> {
    let mut shots = Shots::default();
    for item in images {
        let shot = labelled_shot(item)?;
        match item.label {
            ShotLabel::Normal => shots.normal.push(shot),
            ShotLabel::Abnormal => shots.abnormal.push(shot),
            ShotLabel::HeldOutNormal => shots.held_out.push(shot),
        }
    }
    let has_masks = !shots.abnormal.is_empty() && shots.abnormal.iter().all(|s| s.mask.is_some());
    Ok(CollectedShots {
        shots,
        organ: None,
        has_masks,
        description: format!("{} labelled image(s)", images.len()),
    })
}

/// Whether a mask of another size than its image is an error or resized with it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum MaskSizes {
    /// The user's own folders: a silent resize would misplace the lesion.
    MustMatch,
    /// MVFA datasets, as the reference reads them.
    Resize,
}

fn from_few_shot(
    few: &FewShot,
    organ: Option<String>,
    description: String,
    mask_sizes: MaskSizes,
) -> Result<CollectedShots, WorkflowError> {
    let load = |samples: &[Sample], with_masks: bool| -> Result<Vec<Shot>, WorkflowError> {
        samples
            .iter()
            .map(|sample| {
                let image = load_model_image(&sample.image)?;
                let mask = match (&sample.mask, with_masks) {
                    (Some(path), true) if mask_sizes == MaskSizes::MustMatch => {
                        let display = load_model_image(path)?.display;
                        check_mask_size(
                            &sample.image,
                            (display.width as usize, display.height as usize),
                            (image.display.width as usize, image.display.height as usize),
                        )?;
                        Some(mask_input(&display.to_luma())?)
                    }
                    (Some(path), true) => Some(load_mask(path)?),
                    _ => None,
                };
                Ok(Shot {
                    image: image.input,
                    mask,
                })
            })
            .collect()
    };
    Ok(CollectedShots {
        shots: Shots {
            normal: load(&few.normal, false)?,
            abnormal: load(&few.abnormal, few.has_masks)?,
            held_out: Vec::new(),
        },
        organ,
        has_masks: few.has_masks,
        description,
    })
}

/// One labelled frame at model resolution, its mask checked against the frame's size.
fn labelled_shot(item: &LabelledImage) -> Result<Shot, WorkflowError> {
    let mut frames = load_model_images(&item.path)?;
    let count = frames.len();
    if item.frame >= count {
        return Err(WorkflowError::NoSuchFrame {
            path: item.path.clone(),
            frame: item.frame,
            frames: count,
        });
    }
    let frame = frames.swap_remove(item.frame);
    let (width, height) = (frame.display.width as usize, frame.display.height as usize);
    let mask = match &item.mask {
        None => None,
        Some(MaskSource::File(path)) => {
            let display = load_model_image(path)?.display;
            let size = (display.width as usize, display.height as usize);
            check_mask_size(&item.path, size, (width, height))?;
            Some(mask_input(&display.to_luma())?)
        }
        Some(MaskSource::Pixels {
            width: mask_width,
            height: mask_height,
            values,
        }) => {
            check_mask_size(&item.path, (*mask_width, *mask_height), (width, height))?;
            let binary: Vec<u8> = values
                .iter()
                .map(|&v| if v > 0 { 255 } else { 0 })
                .collect();
            let image = Image8::new(width as u32, height as u32, Channels::Gray, binary)
                .map_err(crate::io::model_input::ModelInputError::from)?;
            Some(mask_input(&image)?)
        }
    };
    Ok(Shot {
        image: frame.input,
        mask,
    })
}

/// A mask must have its image's size: a silent resize would misplace the lesion.
fn check_mask_size(
    path: &Path,
    (mask_width, mask_height): (usize, usize),
    (image_width, image_height): (usize, usize),
) -> Result<(), WorkflowError> {
    if (mask_width, mask_height) == (image_width, image_height) {
        Ok(())
    } else {
        Err(WorkflowError::MaskSize {
            path: path.to_path_buf(),
            mask_width,
            mask_height,
            image_width,
            image_height,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_png(path: &Path, width: u32, height: u32, value: u8) {
        image::GrayImage::from_pixel(width, height, image::Luma([value]))
            .save(path)
            .unwrap();
    }

    #[test]
    fn labelled_images_with_painted_masks_and_held_out_normals() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.png");
        let b = dir.path().join("b.png");
        write_png(&a, 64, 48, 100);
        write_png(&b, 64, 48, 30);
        let mut values = vec![0u8; 64 * 48];
        values[..64 * 24].fill(1);
        let items = vec![
            LabelledImage {
                path: a.clone(),
                frame: 0,
                label: ShotLabel::Normal,
                mask: None,
            },
            LabelledImage {
                path: b.clone(),
                frame: 0,
                label: ShotLabel::Abnormal,
                mask: Some(MaskSource::Pixels {
                    width: 64,
                    height: 48,
                    values,
                }),
            },
            LabelledImage {
                path: a.clone(),
                frame: 0,
                label: ShotLabel::HeldOutNormal,
                mask: None,
            },
        ];
        let collected = collect_shots(&ShotSource::Labelled(items)).unwrap();
        let shots = &collected.shots;
        assert_eq!(
            (
                shots.normal.len(),
                shots.abnormal.len(),
                shots.held_out.len()
            ),
            (1, 1, 1)
        );
        assert!(collected.has_masks);
        let mask = shots.abnormal[0].mask.as_ref().unwrap();
        // The top half is lesion at model resolution too.
        assert_eq!(mask[0], 1.0);
        assert_eq!(mask[mask.len() - 1], 0.0);
    }

    #[test]
    fn wrong_mask_size_and_missing_frame_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.png");
        write_png(&a, 64, 48, 100);
        let item = |frame, mask| LabelledImage {
            path: a.clone(),
            frame,
            label: ShotLabel::Abnormal,
            mask,
        };
        let err = collect_shots(&ShotSource::Labelled(vec![item(
            0,
            Some(MaskSource::Pixels {
                width: 32,
                height: 32,
                values: vec![0; 32 * 32],
            }),
        )]))
        .unwrap_err();
        assert!(
            err.to_string()
                .ends_with("the mask is 32x32 pixels, the image 64x48"),
            "{err}"
        );
        let err = collect_shots(&ShotSource::Labelled(vec![item(3, None)])).unwrap_err();
        assert!(err.to_string().contains("frame 3 was labelled"), "{err}");
    }
}
