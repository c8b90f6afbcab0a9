//! The user-level steps that both front ends run, the CLI and the app alike: open the CLIP
//! weights with their text features, load a detector (our checkpoint or a reference `.pth`)
//! with its identity checks, collect labelled shots (a dataset layout, plain folders, or the
//! app's list of labelled images with masks), fit with progress events and cancellation,
//! score images to results, and export results to files (PNG, raw maps, CSV, DICOM).
//!
//! The layer orchestrates the library (`weights`, `model`, `train`, `io`) and knows nothing of
//! egui or clap; its errors are typed ([`WorkflowError`]) and keep their sources.
mod backbone;
mod checkpoint;
mod error;
mod export;
mod export_dicom;
mod fit_checkpoint;
mod fitting;
pub mod label_next;
pub mod maps;
pub mod results_file;
mod scorer;
mod scoring;
pub mod series;
mod session;
mod shots;
pub mod text_cache;

pub use crate::train::fit::{FitSettings, Schedule};
pub use backbone::Backbone;
pub use checkpoint::{
    OpenedDetector, checkpoint_meta, open_detector, resolve_organ, save_detector,
};
pub use error::WorkflowError;
pub use export::{
    DetectorFacts, DicomExport, ExportOptions, ExportSummary, Exporter, FrameToExport,
    FrameWritten, RawFormat, RawTensor, SCORE_COLUMNS, SCORES_CSV, describe_options, raw_tensors,
    results_sr_name,
};
pub use fit_checkpoint::{
    FitOptions, FitOutcome, FitProgress, FitReport, FitSpec, fit_to_checkpoint,
};
pub use fitting::{FitRequest, FitResult, FittedDetector, fit_adapters, fit_detector};
pub use maps::{Branch, LayerMap, MAX_LEVELS, MapLayer, MapScale, layer_map, layer_or_zero_shot};
pub use scorer::{Exported, FileScorer, ScorerInfo, ScorerSpec, export_files, open_scorer};
pub use scoring::{
    BatchTuner, PREFETCH_FRAMES, Prefetched, ScoredFrame, Streamed, map_at_original, score_file,
    score_frames, score_stream, with_prefetched_frames,
};
pub use series::{
    FileSeries, SERIES_CSV, SERIES_RULE, SeriesRule, SeriesScore, SliceContext, TOP_K, group_files,
    series_csv, series_score, study_score,
};
pub use session::{
    DetectorSummary, FitSummary, ModelSession, SCORE_BATCH_MAX, Session, open_session,
};
pub use shots::{
    CollectedShots, DatasetShots, LabelledImage, MaskSource, ShotLabel, ShotSource, collect_shots,
};
