//! Weight files: CLIP checkpoints (safetensors, Hugging Face and open_clip layouts) with the
//! key-remap table and load report, and MVFA adapter checkpoints.
pub mod adapters;
pub mod clip;
pub mod detector;
pub mod format;
