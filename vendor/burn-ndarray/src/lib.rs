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

/// [mvfa patch 4] The kernel of this process's f32 matrix products: `"gemm (AVX-512)"` or
/// `"matrixmultiply"` (or BLAS, with a BLAS feature).
pub fn f32_matmul_kernel() -> &'static str {
    #[cfg(avx512_gemm)]
    if ops::matmul::avx512_gemm::enabled() {
        return "gemm (AVX-512)";
    }
    if cfg!(any(
        feature = "blas-accelerate",
        feature = "blas-netlib",
        feature = "blas-openblas",
        feature = "blas-openblas-system"
    )) {
        "BLAS"
    } else {
        "matrixmultiply"
    }
}

extern crate alloc;
