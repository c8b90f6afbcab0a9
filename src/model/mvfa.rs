//! MVFA: residual adapters on the CLIP vision tower, scoring (zero- and few-shot), losses.
//!
//! Pipeline (spec sections 2, 4, 5): [`adapter::forward_adapted`] runs images through a
//! [`adapter::TappedBackbone`] with one seg and one det adapter hooked in after each tapped
//! block, giving per-level bottleneck tokens of both heads; [`scoring::Scorer`] turns tokens
//! into zero-shot scores and maps (text comparison) and few-shot maps (against a
//! [`scoring::MemoryBank`] of support tokens); [`losses::mvfa_loss`] gives the training loss
//! terms. Adapter files are read and written by `crate::weights::adapters`.
pub mod adapter;
pub mod calibration;
pub mod detector;
pub mod losses;
pub mod nearest;
pub mod scoring;
