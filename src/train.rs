//! Fine-tuning: augmentation, training loop, calibration, progress and cancellation.
pub mod augment;
pub mod synthetic;
