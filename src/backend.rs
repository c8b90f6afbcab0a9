//! Compute backend selection. All model code is generic over `burn::prelude::Backend`; this
//! module names the concrete backends and picks the device at start-up.
//!
//! The CUDA backend (feature `cuda`) panics inside a device thread when no NVIDIA driver is
//! present, so [`probe`] checks for `libcuda.so.1` first and falls back to the CPU with a
//! reason the UI and the CLI can show.

#[cfg(patched_ndarray)]
pub mod matmul_choice;

/// The default CPU backend (see the README for the measurement behind the choice).
pub type CpuBackend = burn::backend::NdArray<f32>;
/// Autodiff wrapper used for fine-tuning on the CPU.
pub type CpuTrainBackend = burn::backend::Autodiff<CpuBackend>;

/// The NVIDIA GPU backend (burn-cuda; the driver is loaded at run time).
#[cfg(feature = "cuda")]
pub type CudaBackend = burn::backend::Cuda<f32, i32>;
/// Autodiff wrapper used for fine-tuning on the GPU.
#[cfg(feature = "cuda")]
pub type CudaTrainBackend = burn::backend::Autodiff<CudaBackend>;

/// Which backend and device the app or CLI runs on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceChoice {
    /// The CPU, through burn's ndarray backend.
    Cpu,
    /// An NVIDIA GPU, by CUDA device index.
    #[cfg(feature = "cuda")]
    Cuda(usize),
}

/// What was selected and why, for display.
#[derive(Debug, Clone)]
pub struct BackendInfo {
    /// The backend and device in use.
    pub choice: DeviceChoice,
    /// Short backend name, e.g. "ndarray (CPU)" or "cuda".
    pub backend: String,
    /// Human-readable device description, with how the matmul kernel was chosen.
    pub device: String,
    /// The device in a few words, for the status bar (e.g. "CPU, 2 threads, gemm
    /// (AVX-512)"); [`Self::device`] has the rest.
    pub short_device: String,
    /// Set when a faster backend was compiled in but could not be used.
    pub fallback_reason: Option<String>,
}

fn cpu_info(fallback_reason: Option<String>) -> BackendInfo {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let blas = if cfg!(feature = "blas") {
        " + OpenBLAS"
    } else {
        ""
    };
    BackendInfo {
        choice: DeviceChoice::Cpu,
        backend: format!("ndarray{blas} (CPU)"),
        device: format!(
            "CPU, {threads} threads, f32 matmul: {}",
            f32_matmul_kernel()
        ),
        short_device: format!("CPU, {threads} threads, {}", f32_matmul_kernel_name()),
        fallback_reason,
    }
}

/// The kernel of this process's f32 matrix products, chosen once (measured per CPU, cached:
/// [`matmul_choice`]), with how it was chosen. `cfg(patched_ndarray)` is set by build.rs.
#[cfg(patched_ndarray)]
fn f32_matmul_kernel() -> String {
    matmul_choice::choose().describe()
}

/// The kernel's name alone, without its library file: "OpenBLAS 0.3.21 Cooperlake".
#[cfg(patched_ndarray)]
fn f32_matmul_kernel_name() -> String {
    let name = matmul_choice::choose().kernel.name();
    match name.rsplit_once(" (lib") {
        Some((short, _)) => short.to_string(),
        None => name,
    }
}

#[cfg(not(patched_ndarray))]
fn f32_matmul_kernel_name() -> String {
    f32_matmul_kernel()
}

/// The kernel of this process's f32 matrix products with the crates.io burn-ndarray (the
/// `[patch.crates-io]` entry removed): always matrixmultiply, or BLAS with the `blas` feature.
#[cfg(not(patched_ndarray))]
fn f32_matmul_kernel() -> String {
    if cfg!(feature = "blas") {
        "BLAS".into()
    } else {
        "matrixmultiply".into()
    }
}

/// The CPU as `/proc/cpuinfo` names it: model name, family, model, stepping (VMs often show
/// only a vendor name, e.g. "AMD EPYC", so the numbers tell the generation). Timings name it.
pub fn cpu_model() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |name: &str| {
        info.lines()
            .find(|l| l.split(':').next().is_some_and(|k| k.trim() == name))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
    };
    let name = field("model name").unwrap_or_else(|| std::env::consts::ARCH.to_string());
    match (field("cpu family"), field("model"), field("stepping")) {
        (Some(family), Some(model), Some(stepping)) => {
            format!("{name} (family {family}, model {model}, stepping {stepping})")
        }
        _ => name,
    }
}

/// CPU time (user + system) this process has used, in seconds; NaN where unknown. Divided by
/// wall time it gives the cores busy that the benchmarks report.
pub fn process_cpu_seconds() -> f64 {
    #[cfg(unix)]
    {
        // SAFETY: getrusage fills the struct it is given; a zeroed rusage is a valid value.
        let mut u: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: RUSAGE_SELF and a valid pointer.
        if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) } == 0 {
            let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
            return tv(u.ru_utime) + tv(u.ru_stime);
        }
    }
    f64::NAN
}

/// Picks the best available device. `force_cpu` skips the GPU even when one is present.
pub fn probe(force_cpu: bool) -> BackendInfo {
    #[cfg(feature = "cuda")]
    {
        if !force_cpu {
            return match cuda_driver_present() {
                Ok(()) => BackendInfo {
                    choice: DeviceChoice::Cuda(0),
                    backend: "cuda".into(),
                    device: "NVIDIA GPU 0".into(),
                    short_device: "NVIDIA GPU 0".into(),
                    fallback_reason: None,
                },
                Err(reason) => cpu_info(Some(reason.to_string())),
            };
        }
    }
    let _ = force_cpu;
    cpu_info(None)
}

/// A CUDA build on a machine without the NVIDIA driver library.
#[cfg(feature = "cuda")]
#[derive(Debug, thiserror::Error)]
#[error("built with CUDA support but no NVIDIA driver was found ({0}); using the CPU")]
struct NoCudaDriver(libloading::Error);

/// Checks that the NVIDIA driver library can be loaded, without touching the device.
#[cfg(feature = "cuda")]
fn cuda_driver_present() -> Result<(), NoCudaDriver> {
    // SAFETY: loading the driver library runs no user code beyond its initialisers, which is
    // what the CUDA backend does itself moments later.
    match unsafe { libloading::Library::new("libcuda.so.1") } {
        Ok(_) => Ok(()),
        Err(err) => Err(NoCudaDriver(err)),
    }
}

/// Runs `$body` with `$B` bound to the selected backend type and `$device` to its device.
#[macro_export]
macro_rules! with_backend {
    ($info:expr, |$B:ident, $device:ident| $body:expr) => {{
        match &$info.choice {
            $crate::backend::DeviceChoice::Cpu => {
                type $B = $crate::backend::CpuBackend;
                let $device = burn::backend::ndarray::NdArrayDevice::Cpu;
                $body
            }
            #[cfg(feature = "cuda")]
            $crate::backend::DeviceChoice::Cuda(index) => {
                type $B = $crate::backend::CudaBackend;
                let $device = burn::backend::cuda::CudaDevice::new(*index);
                $body
            }
        }
    }};
}
