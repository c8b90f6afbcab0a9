//! Errors of the workflow layer. Each keeps its source; the messages name the file once.
use std::path::PathBuf;

use crate::io::dataset::DatasetError;
use crate::io::export::ExportError;
use crate::io::input::InputError;
use crate::io::model_input::ModelInputError;
use crate::io::output::OutputError;
use crate::model::mvfa::adapter::MvfaError;
use crate::train::fit::FitError;
use crate::weights::adapters::AdapterCheckpointError;
use crate::weights::clip::WeightsError;

/// Why a workflow step failed.
#[derive(Debug, thiserror::Error)]
pub enum WorkflowError {
    /// The CLIP weights could not be loaded (the load report's message).
    #[error(transparent)]
    Weights(#[from] WeightsError),
    /// The prompt ensemble could not be built for an organ word.
    #[error("text features for the organ word {organ:?}: {source}")]
    TextFeatures {
        /// The organ word.
        organ: String,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// An adapter checkpoint could not be read or written.
    #[error(transparent)]
    Checkpoint(#[from] AdapterCheckpointError),
    /// A detector file could not be read or written (the source names the file).
    #[error("{source}")]
    DetectorFile {
        /// The checkpoint.
        path: PathBuf,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The checkpoint was fitted on a differently shaped backbone.
    #[error(
        "{}: the checkpoint belongs to another backbone ({theirs}) than {} ({ours})",
        checkpoint.display(),
        weights.display()
    )]
    BackboneMismatch {
        /// The checkpoint.
        checkpoint: PathBuf,
        /// The CLIP weights.
        weights: PathBuf,
        /// The checkpoint's backbone.
        theirs: String,
        /// The loaded backbone.
        ours: String,
    },
    /// No organ word from the user, the checkpoint or the dataset.
    #[error("{what} names no organ word: give one (e.g. Brain or \"Chest X-ray film\")")]
    NoOrganWord {
        /// What was asked (a checkpoint, plain folders, labelled images).
        what: String,
    },
    /// A new false-positive rate cannot move this detector's threshold.
    #[error("{}: {reason}", checkpoint.display())]
    Threshold {
        /// The checkpoint.
        checkpoint: PathBuf,
        /// Why, in plain words.
        reason: String,
    },
    /// Scoring or saving was asked of a session before any detector existed.
    #[error("no detector yet: label at least one normal image, or import adapters")]
    NoDetector,
    /// A dataset folder that cannot be used.
    #[error(transparent)]
    Dataset(#[from] DatasetError),
    /// A data folder in no known layout.
    #[error(
        "{}: neither a plain folder (normal/, abnormal/) nor an MVFA dataset folder ({source}); \
         name the dataset key for a data root",
        path.display()
    )]
    UnknownDataLayout {
        /// The folder.
        path: PathBuf,
        /// Why the MVFA layout did not fit.
        #[source]
        source: DatasetError,
    },
    /// An image or mask could not be read.
    #[error(transparent)]
    Input(#[from] InputError),
    /// A labelled frame that the file does not have.
    #[error("{}: frame {frame} was labelled, the file has {frames} frame(s)", path.display())]
    NoSuchFrame {
        /// The file.
        path: PathBuf,
        /// The labelled frame (0-based).
        frame: usize,
        /// Frames in the file.
        frames: usize,
    },
    /// A mask whose size is not its image's.
    #[error(
        "{}: the mask is {mask_width}x{mask_height} pixels, the image {image_width}x{image_height}",
        path.display()
    )]
    MaskSize {
        /// The image.
        path: PathBuf,
        /// Mask width.
        mask_width: usize,
        /// Mask height.
        mask_height: usize,
        /// Image width.
        image_width: usize,
        /// Image height.
        image_height: usize,
    },
    /// The fit could not run.
    #[error(transparent)]
    Fit(#[from] FitError),
    /// The model rejected its inputs.
    #[error("{context}: {source}")]
    Model {
        /// What was being done.
        context: String,
        /// Why.
        #[source]
        source: MvfaError,
    },
    /// Images of the wrong size for the model.
    #[error(transparent)]
    ModelInput(#[from] ModelInputError),
    /// An export file could not be written, or its options or data are inconsistent (the
    /// message names the file or frame).
    #[error(transparent)]
    Export(#[from] ExportError),
    /// An output would replace an input, or its folder cannot be written.
    #[error(transparent)]
    Output(#[from] OutputError),
}
