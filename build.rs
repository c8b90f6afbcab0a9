//! `cfg(patched_ndarray)`: burn-ndarray is the patched copy in vendor/burn-ndarray
//! (PATCHES.md), not the crates.io release. The patched crate's build script publishes
//! `patch_set` under its `links` key, which cargo hands to this script as
//! `DEP_BURN_NDARRAY_MVFA_PATCHES_PATCH_SET`; the calls that only the patched crate offers
//! (the matmul kernel choice, `src/backend/matmul_choice.rs`, and `mvfa-dev bench --kernels`)
//! are compiled under this cfg. So with the
//! `[patch.crates-io]` entry removed from Cargo.toml the application builds against stock
//! burn-ndarray 0.21.0 unchanged.
fn main() {
    const PATCH_SET: &str = "DEP_BURN_NDARRAY_MVFA_PATCHES_PATCH_SET";
    println!("cargo::rustc-check-cfg=cfg(patched_ndarray)");
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-env-changed={PATCH_SET}");
    if std::env::var_os(PATCH_SET).is_some() {
        println!("cargo::rustc-cfg=patched_ndarray");
    }
}
