fn main() {
    // [mvfa patch set] Tells the crates that depend on this one directly (through the `links`
    // key in Cargo.toml: `DEP_BURN_NDARRAY_MVFA_PATCHES_PATCH_SET`) that they build against the
    // patched copy, which has `f32_matmul_kernel`; the crates.io release publishes nothing.
    println!("cargo:patch_set=1-11");

    // https://github.com/rust-ndarray/ndarray/issues/1197
    if cfg!(feature = "blas-accelerate") {
        println!("cargo:rustc-link-lib=framework=Accelerate");
    }

    // [mvfa patch 4] `cfg(avx512_gemm)`: the AVX-512 matmul path through gemm-f32 is built
    // (x86-64 with `std`, and no BLAS feature: a user who asks for BLAS gets BLAS). Whether
    // it runs is decided at run time from the CPU's features.
    println!("cargo:rustc-check-cfg=cfg(avx512_gemm)");
    let feature = |name: &str| std::env::var_os(format!("CARGO_FEATURE_{name}")).is_some();
    let x86_64 = std::env::var("CARGO_CFG_TARGET_ARCH").is_ok_and(|arch| arch == "x86_64");
    let blas = [
        "BLAS_ACCELERATE",
        "BLAS_NETLIB",
        "BLAS_OPENBLAS",
        "BLAS_OPENBLAS_SYSTEM",
    ]
    .iter()
    .any(|name| feature(name));
    if x86_64 && feature("STD") && !blas {
        println!("cargo:rustc-cfg=avx512_gemm");
    }
}
