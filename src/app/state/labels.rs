//! Shot labels and lesion masks, keyed by image (file and frame), with the edit history that
//! undo and redo walk. Masks live at the image's own resolution ([`Mask`]); an undo step of a
//! stroke keeps only the rectangle the stroke touched, before and after.
use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::io::mask::{Mask, PixelRect};

/// One image a label or mask belongs to: a file and a frame of it (0 for single-frame files).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ImageKey {
    /// The image file.
    pub path: PathBuf,
    /// The frame of the file (0-based).
    pub frame: usize,
}

/// What a shot shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Label {
    /// A normal shot: no lesion.
    Normal,
    /// An abnormal shot: shows a lesion, which a mask may outline.
    Abnormal,
}

impl Label {
    /// The label's name as shown to the user ("normal", "abnormal").
    pub fn name(self) -> &'static str {
        match self {
            Label::Normal => "normal",
            Label::Abnormal => "abnormal",
        }
    }
}

/// One image's label before and after a change; a mask removed with an abnormal label is
/// kept so that undo brings it back.
#[derive(Debug, Clone)]
struct LabelChange {
    key: ImageKey,
    before: Option<Label>,
    after: Option<Label>,
    removed_mask: Option<Mask>,
}

/// One undoable step.
#[derive(Debug, Clone)]
enum Edit {
    Labels(Vec<LabelChange>),
    Mask {
        key: ImageKey,
        size: (u32, u32),
        rect: PixelRect,
        before: Vec<u8>,
        after: Vec<u8>,
        /// The edit created the mask: undoing it removes the mask again.
        created: bool,
    },
}

/// A brush stroke being painted: the mask as it was when the stroke began, and what the
/// stroke has touched so far.
#[derive(Debug, Clone)]
struct Stroke {
    key: ImageKey,
    before: Mask,
    created: bool,
    rect: PixelRect,
}

/// Undo keeps this many steps.
const HISTORY: usize = 200;

/// Labels and masks of the project.
#[derive(Debug, Default)]
pub struct Labels {
    labels: BTreeMap<ImageKey, Label>,
    masks: BTreeMap<ImageKey, Mask>,
    undo: Vec<Edit>,
    redo: Vec<Edit>,
    stroke: Option<Stroke>,
    /// Increases with every change: what the project compares to know it is unsaved, and what
    /// mask textures are keyed by.
    pub revision: u64,
}

/// Whether `mask` marks any pixel. Stops at the first lesion pixel: called for every mask on
/// every frame (status bar, browser badges), where counting them all would cost a full scan
/// of each mask.
pub fn has_lesion(mask: &Mask) -> bool {
    mask.as_bytes().iter().any(|&v| v != 0)
}

/// Why a mask edit was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MaskEditError {
    /// Masks belong to abnormal shots only.
    #[error("Mark the image abnormal (A) before drawing its lesion mask")]
    NotAbnormal,
}

/// How many shots and masks the project holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counts {
    /// Images labelled normal.
    pub normal: usize,
    /// Images labelled abnormal.
    pub abnormal: usize,
    /// Masks with at least one lesion pixel.
    pub masks: usize,
}

impl Labels {
    /// The label of `key`, if it has one.
    pub fn label(&self, key: &ImageKey) -> Option<Label> {
        self.labels.get(key).copied()
    }

    /// The lesion mask of `key`, if it has one.
    pub fn mask(&self, key: &ImageKey) -> Option<&Mask> {
        self.masks.get(key)
    }

    /// Every label, in key order (file, then frame).
    pub fn labels(&self) -> impl Iterator<Item = (&ImageKey, &Label)> {
        self.labels.iter()
    }

    /// Every mask, in key order (file, then frame).
    pub fn masks(&self) -> impl Iterator<Item = (&ImageKey, &Mask)> {
        self.masks.iter()
    }

    /// How many images are labelled normal and abnormal, and how many masks are non-empty.
    pub fn counts(&self) -> Counts {
        let normal = self
            .labels
            .values()
            .filter(|&&l| l == Label::Normal)
            .count();
        Counts {
            normal,
            abnormal: self.labels.len() - normal,
            masks: self.masks.values().filter(|m| has_lesion(m)).count(),
        }
    }

    /// The labels of every frame of `path`, in frame order (for the browser's badge).
    pub fn labels_of_file(&self, path: &std::path::Path) -> Vec<Label> {
        let start = ImageKey {
            path: path.to_path_buf(),
            frame: 0,
        };
        self.labels
            .range(start..)
            .take_while(|(k, _)| k.path == path)
            .map(|(_, &l)| l)
            .collect()
    }

    /// Sets (or with `None` clears) the label of every key, as one undo step. A mask goes
    /// with its abnormal label: relabelling an image normal removes its mask. Returns whether
    /// anything changed.
    pub fn set(&mut self, keys: &[ImageKey], label: Option<Label>) -> bool {
        let mut changes = Vec::new();
        for key in keys {
            let before = self.labels.get(key).copied();
            if before == label {
                continue;
            }
            let removed_mask = if label == Some(Label::Abnormal) {
                None
            } else {
                self.masks.remove(key)
            };
            match label {
                Some(l) => self.labels.insert(key.clone(), l),
                None => self.labels.remove(key),
            };
            changes.push(LabelChange {
                key: key.clone(),
                before,
                after: label,
                removed_mask,
            });
        }
        if changes.is_empty() {
            return false;
        }
        self.push(Edit::Labels(changes));
        true
    }

    /// Paints (or erases) a segment of a stroke on the mask of `key`, an image of `size`
    /// pixels; the first segment starts the stroke. Fails on an image not labelled abnormal.
    pub fn paint(
        &mut self,
        key: &ImageKey,
        size: (u32, u32),
        from: [f32; 2],
        to: [f32; 2],
        radius: f32,
        value: bool,
    ) -> Result<(), MaskEditError> {
        self.begin_stroke(key, size)?;
        let mask = self.masks.get_mut(key).expect("begin_stroke made the mask");
        let touched = mask.paint_segment(from, to, radius, value);
        if let Some(stroke) = &mut self.stroke {
            stroke.rect = stroke.rect.union(touched);
        }
        self.revision += 1;
        Ok(())
    }

    /// Fills the inside of a closed outline (image pixel coordinates) as one undo step.
    pub fn fill(
        &mut self,
        key: &ImageKey,
        size: (u32, u32),
        outline: &[[f32; 2]],
    ) -> Result<(), MaskEditError> {
        self.begin_stroke(key, size)?;
        let mask = self.masks.get_mut(key).expect("begin_stroke made the mask");
        let touched = mask.fill_polygon(outline, true);
        if let Some(stroke) = &mut self.stroke {
            stroke.rect = stroke.rect.union(touched);
        }
        self.end_stroke();
        Ok(())
    }

    /// Replaces the mask of `key` by `mask` (an imported one) as one undo step.
    pub fn replace_mask(&mut self, key: &ImageKey, mask: Mask) -> Result<(), MaskEditError> {
        let size = (mask.width, mask.height);
        self.begin_stroke(key, size)?;
        self.masks.insert(key.clone(), mask);
        if let Some(stroke) = &mut self.stroke {
            stroke.rect = PixelRect {
                x0: 0,
                y0: 0,
                x1: size.0,
                y1: size.1,
            };
        }
        self.end_stroke();
        Ok(())
    }

    fn begin_stroke(&mut self, key: &ImageKey, size: (u32, u32)) -> Result<(), MaskEditError> {
        if self.labels.get(key) != Some(&Label::Abnormal) {
            return Err(MaskEditError::NotAbnormal);
        }
        if self.stroke.as_ref().is_some_and(|s| &s.key != key) {
            self.end_stroke();
        }
        if self.stroke.is_none() {
            let created = !self.masks.contains_key(key);
            let mask = self
                .masks
                .entry(key.clone())
                .or_insert_with(|| Mask::new(size.0, size.1));
            self.stroke = Some(Stroke {
                key: key.clone(),
                before: mask.clone(),
                created,
                rect: PixelRect::EMPTY,
            });
        }
        Ok(())
    }

    /// Whether a brush stroke is being painted (the mouse button is still down).
    pub fn stroke_active(&self) -> bool {
        self.stroke.is_some()
    }

    /// Ends the stroke in progress (mouse released) and records it as one undo step.
    pub fn end_stroke(&mut self) {
        let Some(stroke) = self.stroke.take() else {
            return;
        };
        let Some(mask) = self.masks.get(&stroke.key) else {
            return;
        };
        if stroke.rect.is_empty() {
            if stroke.created {
                self.masks.remove(&stroke.key);
            }
            return;
        }
        let edit = Edit::Mask {
            key: stroke.key,
            size: (mask.width, mask.height),
            rect: stroke.rect,
            before: stroke.before.region(stroke.rect),
            after: mask.region(stroke.rect),
            created: stroke.created,
        };
        self.push(edit);
    }

    fn push(&mut self, edit: Edit) {
        self.undo.push(edit);
        if self.undo.len() > HISTORY {
            self.undo.remove(0);
        }
        self.redo.clear();
        self.revision += 1;
    }

    /// Whether there is a step to undo.
    pub fn can_undo(&self) -> bool {
        !self.undo.is_empty()
    }

    /// Whether there is an undone step to redo.
    pub fn can_redo(&self) -> bool {
        !self.redo.is_empty()
    }

    /// Undoes the last step; returns what it was, for the status bar.
    pub fn undo(&mut self) -> Option<String> {
        self.end_stroke();
        let edit = self.undo.pop()?;
        let text = self.apply(&edit, false);
        self.redo.push(edit);
        self.revision += 1;
        Some(format!("Undone: {text}"))
    }

    /// Redoes the last undone step.
    pub fn redo(&mut self) -> Option<String> {
        self.end_stroke();
        let edit = self.redo.pop()?;
        let text = self.apply(&edit, true);
        self.undo.push(edit);
        self.revision += 1;
        Some(format!("Redone: {text}"))
    }

    fn apply(&mut self, edit: &Edit, forward: bool) -> String {
        match edit {
            Edit::Labels(changes) => {
                for c in changes {
                    let label = if forward { c.after } else { c.before };
                    match label {
                        Some(l) => self.labels.insert(c.key.clone(), l),
                        None => self.labels.remove(&c.key),
                    };
                    if let Some(mask) = &c.removed_mask {
                        if forward {
                            self.masks.remove(&c.key);
                        } else {
                            self.masks.insert(c.key.clone(), mask.clone());
                        }
                    }
                }
                format!("label of {} image(s)", changes.len())
            }
            Edit::Mask {
                key,
                size,
                rect,
                before,
                after,
                created,
            } => {
                if *created && !forward {
                    self.masks.remove(key);
                } else {
                    let mask = self
                        .masks
                        .entry(key.clone())
                        .or_insert_with(|| Mask::new(size.0, size.1));
                    mask.set_region(*rect, if forward { after } else { before });
                }
                "mask edit".into()
            }
        }
    }

    /// Puts labels and masks read from a project file in place, with an empty history.
    pub fn restore(&mut self, labels: BTreeMap<ImageKey, Label>, masks: BTreeMap<ImageKey, Mask>) {
        *self = Labels {
            labels,
            masks,
            revision: self.revision + 1,
            ..Default::default()
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(frame: usize) -> ImageKey {
        ImageKey {
            path: PathBuf::from("/data/a.dcm"),
            frame,
        }
    }

    #[test]
    fn labels_and_strokes_undo_and_redo_in_order() {
        let mut l = Labels::default();
        assert!(
            l.paint(&key(0), (8, 8), [1.0, 1.0], [1.0, 1.0], 1.0, true)
                .is_err()
        );
        assert!(l.set(&[key(0), key(1)], Some(Label::Abnormal)));
        l.paint(&key(0), (8, 8), [1.0, 1.0], [6.0, 1.0], 1.0, true)
            .unwrap();
        l.paint(&key(0), (8, 8), [6.0, 1.0], [6.0, 6.0], 1.0, true)
            .unwrap();
        l.end_stroke();
        let painted = l.mask(&key(0)).unwrap().count();
        assert!(painted > 10);
        assert_eq!(
            l.counts(),
            Counts {
                normal: 0,
                abnormal: 2,
                masks: 1
            }
        );

        // Relabelling normal drops the mask; undo brings it back.
        l.set(&[key(0)], Some(Label::Normal));
        assert!(l.mask(&key(0)).is_none());
        l.undo().unwrap();
        assert_eq!(l.mask(&key(0)).unwrap().count(), painted);

        l.undo().unwrap(); // the stroke
        assert!(l.mask(&key(0)).is_none());
        l.redo().unwrap();
        assert_eq!(l.mask(&key(0)).unwrap().count(), painted);
        l.undo().unwrap();
        l.undo().unwrap(); // the labels
        assert_eq!(l.counts(), Counts::default());
        assert!(l.undo().is_none());
        l.redo().unwrap();
        assert_eq!(l.label(&key(1)), Some(Label::Abnormal));
    }

    #[test]
    fn a_filled_outline_is_one_step() {
        let mut l = Labels::default();
        l.set(&[key(0)], Some(Label::Abnormal));
        l.fill(
            &key(0),
            (10, 10),
            &[[1.0, 1.0], [9.0, 1.0], [9.0, 9.0], [1.0, 9.0]],
        )
        .unwrap();
        assert_eq!(l.mask(&key(0)).unwrap().count(), 64);
        l.undo().unwrap();
        assert!(l.mask(&key(0)).is_none());
        assert_eq!(l.labels_of_file(&key(0).path), vec![Label::Abnormal]);
    }
}
