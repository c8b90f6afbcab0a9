//! MVFA: residual adapters on the CLIP vision tower, scoring (zero- and few-shot), losses.
pub mod adapter;
pub mod backbone;
pub mod calibration;
pub mod detector;
pub mod losses;
pub mod scoring;
