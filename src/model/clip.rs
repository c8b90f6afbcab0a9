//! CLIP towers (vision, text), tokenizer and the MVFA prompt ensemble.
pub mod attention;
pub mod config;
pub mod prompts;
pub mod text;
pub mod tokenizer;
pub mod transformer;
pub mod vision;

pub use config::{Activation, ClipConfig, ClipModel, TextConfig, VisionConfig};
pub use text::TextTransformer;
pub use vision::{VisionOutput, VisionTransformer};
