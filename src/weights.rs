//! Weight files: CLIP checkpoints (safetensors, Hugging Face and open_clip layouts) with the
//! key-remap table and load report, MVFA adapter checkpoints, and the download of the public
//! ViT-L/14-336 weights from the Hugging Face hub.
pub mod adapters;
pub mod clip;
pub mod detector;
pub mod download;
pub mod format;
