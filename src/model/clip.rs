//! CLIP towers (vision, text), tokenizer and the MVFA prompt ensemble.
pub mod config;
pub mod prompts;
pub mod text;
pub mod tokenizer;
pub mod transformer;
pub mod vision;
