//! The `mvfa-studio` executable: runs `mvfa_studio::cli::main` (the desktop app when no
//! subcommand is given).
fn main() -> std::process::ExitCode {
    tune_allocator();
    mvfa_studio::cli::main()
}

/// Keeps glibc's malloc from returning every large tensor buffer to the kernel.
///
/// By default glibc serves allocations above a dynamic threshold (128 KiB at start, raised to
/// the size of the largest mmapped block freed so far, at most 32 MiB) with their own `mmap`,
/// and unmaps them on `free`: each new activation of a few MiB then costs a page fault per
/// 4 KiB page, plus zeroing, on the next use. The threshold used to be raised early by
/// burn-ndarray's 16 MiB copies of transposed weights; without those copies
/// (vendor/burn-ndarray, patch 1) every ViT-L activation went through mmap, which doubled the
/// page faults of a training step and made small ops up to 3x slower. Fixed values make this
/// independent of which buffers happen to be freed first: blocks under 64 MiB (all activations
/// of batch 1, and batch 8's 43 MB attention scores) are reused from the heap, and up to
/// 128 MiB of free heap is kept. Measured against 32/64 MiB: forward at batch 8 1494 -> 1336
/// ms per image, batch 1 about 6% faster, peak RSS +30 MB (docs/perf/cpu-profile.md).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn tune_allocator() {
    // SAFETY: mallopt only changes allocator parameters; called before any other thread
    // exists. A refused value (returns 0) leaves glibc's default, which is only slower.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 64 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 128 << 20);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune_allocator() {}
