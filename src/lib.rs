//! MVFA Studio: few-shot medical anomaly detection with MVFA adapters on a CLIP ViT.
//!
//! Module map (each owns one thing):
//! - [`model`]: CLIP towers, tokenizer and prompts, MVFA adapters, scoring, losses.
//! - [`weights`]: checkpoint loading (safetensors, open_clip and Hugging Face layouts), key remap,
//!   load reports, adapter checkpoints.
//! - [`train`]: fine-tuning loop, augmentation, calibration, progress and cancellation.
//! - [`io`]: DICOM, raster and NIfTI studies, model input, exports.
//! - [`eval`]: exact ROC AUC and benchmark protocols.
//! - [`pacs`]: PACS client (DICOMweb and DIMSE): query, retrieve, store.
//! - [`app`]: the egui application.
//! - [`workflow`]: the user-level steps both front ends run (open weights, load a detector,
//!   collect shots, fit, score).
//! - [`serve`]: the AI node: DICOM and STOW-RS receivers, SQLite journal, routing, scoring
//!   and sending of results.
//! - [`rng`]: seeded, portable random streams.
//! - [`cli`]: headless commands.
pub mod app;
pub mod backend;
pub mod cli;
pub mod eval;
pub mod io;
pub mod model;
pub mod pacs;
pub mod rng;
pub mod serve;
pub mod train;
pub mod weights;
pub mod workflow;
