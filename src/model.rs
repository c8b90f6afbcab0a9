//! MVFA, ViT and text-tower model code, generic over the burn backend.
pub mod clip;
pub mod mvfa;
