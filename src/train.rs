//! Fine-tuning: augmentation, training loop, calibration, progress and cancellation.
pub mod augment;
pub mod fit;
pub mod select;
pub mod synthetic;
pub mod trainer;
