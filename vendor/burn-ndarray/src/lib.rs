#![cfg_attr(not(feature = "std"), no_std)]
#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

//! Burn ndarray backend.

#[cfg(any(
    feature = "blas-netlib",
    feature = "blas-openblas",
    feature = "blas-openblas-system",
))]
extern crate blas_src;

mod backend;
mod element;
mod ops;
mod parallel;
mod rand;
mod sharing;
mod storage;
mod tensor;

pub use backend::*;
pub use element::*;
pub(crate) use sharing::*;
pub(crate) use storage::*;
pub use tensor::*;

/// [mvfa patch 8] The kernel of this process's f32 matrix products, its choice and a BLAS
/// loaded at run time (`ops/matmul_kernel.rs`).
pub use ops::matmul_kernel::{
    BLAS_CANDIDATES, Blas, F32Kernel, bf16_product, blas_libraries, f32_matmul_kernel, f32_product,
    set_f32_matmul_kernel,
};

/// [mvfa patch 10] Attention with its probabilities, and its gradients from them, for an
/// autodiff op (`ops/attention_grad.rs`).
pub use ops::attention_grad::{attention_backward, attention_with_probs};

extern crate alloc;
