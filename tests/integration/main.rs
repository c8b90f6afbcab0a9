//! The integration suite as one test binary: the burn-heavy crate links once. Each module was
//! a test binary of its own; `support` holds what they share.

mod support;

mod app_model;
mod app_pacs;
mod app_project;
mod app_series;
mod app_ui;
mod app_workspace;
mod augment;
mod cli_commands;
mod cli_series;
mod clip_loader_errors;
mod clip_parity;
mod dataset_layout;
mod detector_checkpoint;
mod dicom_objects;
mod eval_auc;
mod export;
mod fuzz_readers;
mod guard_rails;
mod io_dicom;
mod io_dicom_cli;
mod io_dicom_corpus;
mod io_dicom_gaps;
mod io_export;
mod io_model_input;
mod io_raster;
mod io_raster_nifti;
mod learning;
mod mvfa_checkpoints;
mod mvfa_parity;
mod pacs;
mod pacs_tls;
mod python;
mod serve;
mod slice_context;
mod tokenizer;
mod weights_download;
mod workflow;
