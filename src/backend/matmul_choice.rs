//! Which kernel runs the CPU's f32 matrix products: measured once per CPU, then cached.
//!
//! The fastest kernel depends on the machine: gemm's AVX-512 kernels lead on AMD Zen 4/5,
//! while on a Xeon whose two vCPUs are one core's hyperthreads MKL or OpenBLAS run near the
//! core's peak and gemm at about half of it; AVX2-only CPUs have matrixmultiply and whatever
//! BLAS the system has. So at the first start on a CPU the candidates (the pure-Rust kernels
//! and each BLAS the system can open, see `burn_ndarray::BLAS_CANDIDATES`) multiply the ViT's
//! own shapes, the fastest that passes the row check below wins, and the result is kept in
//! `~/.cache/mvfa-studio/matmul-kernel.json` under a key naming the CPU, its thread count and
//! the candidates. Later starts read it; the measurement takes about two seconds.
//!
//! The row check keeps results reproducible: a kernel qualifies only when each row of a
//! 290-row product equals, bit for bit, the same row computed in a product of 1 and of 7
//! rows. Scores then do not depend on how images are batched (the correction loop's cached
//! tokens rely on it).
//!
//! `MVFA_MATMUL_KERNEL` (or burn-ndarray's `BURN_NDARRAY_MATMUL`) names a kernel and skips all
//! this: `matrixmultiply`, `gemm`, `gemm-1`, `blas`, or a BLAS library's file name or path.
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Instant;

use burn::backend::ndarray::{F32Kernel, f32_product, set_f32_matmul_kernel};
use serde::{Deserialize, Serialize};

/// The products measured: (m, k, n, right operand transposed). The ViT-L block's MLP forward
/// (`c_fc`, `c_proj`) and the input gradient through `c_proj` (a transposed weight).
pub const MEASURED_SHAPES: [(usize, usize, usize, bool); 3] = [
    (290, 1024, 4096, false),
    (290, 4096, 1024, false),
    (290, 1024, 4096, true),
];

/// How the kernel of this process was chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChoiceSource {
    /// Read from the cache of an earlier measurement on this CPU.
    Cached,
    /// Measured now (first start on this CPU).
    Measured,
    /// Named by `MVFA_MATMUL_KERNEL` or `BURN_NDARRAY_MATMUL`.
    Forced,
    /// Only one kernel can run here.
    Only,
    /// A product had run before the choice; that kernel stays.
    AlreadyInUse,
}

/// One kernel's measurement.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KernelMeasurement {
    /// `F32Kernel::key`.
    pub key: String,
    /// `F32Kernel::name`.
    pub name: String,
    /// GFLOP/s on each of [`MEASURED_SHAPES`] (median of the timed runs).
    pub gflops: Vec<f64>,
    /// Whether rows come out the same whatever the number of rows (see the module doc).
    pub rows_independent: bool,
}

/// The kernel in use and how it was chosen.
#[derive(Debug, Clone)]
pub struct KernelChoice {
    /// The kernel of this process's f32 products.
    pub kernel: F32Kernel,
    /// How it was chosen.
    pub source: ChoiceSource,
    /// The measurements behind a `Cached` or `Measured` choice.
    pub measurements: Vec<KernelMeasurement>,
}

impl KernelChoice {
    /// `gemm (AVX-512): the fastest measured on this CPU` style, for the status bar and
    /// `bench`.
    pub fn describe(&self) -> String {
        let how = match self.source {
            ChoiceSource::Cached => "the fastest measured on this CPU (cached)",
            ChoiceSource::Measured => "the fastest measured on this CPU",
            ChoiceSource::Forced => "named by MVFA_MATMUL_KERNEL or BURN_NDARRAY_MATMUL",
            ChoiceSource::Only => "the only kernel here",
            ChoiceSource::AlreadyInUse => "already in use",
        };
        format!("{}: {how}", self.kernel.name())
    }
}

/// Chooses this process's kernel once (see the module doc) and returns the choice.
pub fn choose() -> &'static KernelChoice {
    static CHOICE: OnceLock<KernelChoice> = OnceLock::new();
    CHOICE.get_or_init(|| {
        let choice = decide();
        match set_f32_matmul_kernel(choice.kernel) {
            Ok(()) => choice,
            Err(in_use) => KernelChoice {
                kernel: in_use,
                source: ChoiceSource::AlreadyInUse,
                measurements: choice.measurements,
            },
        }
    })
}

fn decide() -> KernelChoice {
    for var in ["MVFA_MATMUL_KERNEL", "BURN_NDARRAY_MATMUL"] {
        if let Ok(name) = std::env::var(var) {
            match F32Kernel::from_name(&name) {
                Ok(kernel) => {
                    return KernelChoice {
                        kernel,
                        source: ChoiceSource::Forced,
                        measurements: Vec::new(),
                    };
                }
                Err(reason) => eprintln!("note: {var}={name} ignored: {reason}"),
            }
        }
    }
    let candidates = F32Kernel::available();
    if candidates.len() == 1 {
        return KernelChoice {
            kernel: candidates[0],
            source: ChoiceSource::Only,
            measurements: Vec::new(),
        };
    }
    let key = cache_key(&candidates);
    let Some(path) = cache_path() else {
        let measurements = measure_all(&candidates, 3);
        return pick(&candidates, measurements, ChoiceSource::Measured);
    };
    if let Some(cached) = read_cache(&path, &key) {
        return pick(&candidates, cached, ChoiceSource::Cached);
    }
    // One process measures while the others wait: processes started together (tests, Ray
    // workers) would otherwise measure on a loaded machine and might choose differently.
    let _lock = std::fs::create_dir_all(path.parent().unwrap_or(&path))
        .ok()
        .and_then(|()| std::fs::File::create(path.with_extension("lock")).ok())
        .filter(|file| file.lock().is_ok());
    if let Some(cached) = read_cache(&path, &key) {
        return pick(&candidates, cached, ChoiceSource::Cached);
    }
    let measurements = measure_all(&candidates, 3);
    if let Err(err) = write_cache(&path, &key, &measurements) {
        eprintln!(
            "note: could not cache the matmul kernel choice in {}: {err}",
            path.display()
        );
    }
    pick(&candidates, measurements, ChoiceSource::Measured)
}

/// How much faster than the best pure-Rust kernel a BLAS must measure to be chosen. Its
/// threads are not rayon's: between calls they spin, which slows the element-wise work on
/// rayon's pool around the products, and the measurement (products back to back) cannot see
/// that. On an AMD EPYC Zen 4 (2 vCPUs, 2026-12-08) OpenBLAS measured 3% faster than gemm on
/// the shapes, and scoring an image (`bench`, two alternating runs each) took 12% longer with
/// it (1504-1537 ms against 1334-1349 ms).
const BLAS_MUST_BE_FASTER_BY: f64 = 0.10;

/// The fastest kernel (least total time over the shapes, a BLAS's counted
/// [`BLAS_MUST_BE_FASTER_BY`] slower) whose rows are independent of the number of rows; the
/// built-in default when none qualifies.
fn pick(
    candidates: &[F32Kernel],
    measurements: Vec<KernelMeasurement>,
    source: ChoiceSource,
) -> KernelChoice {
    let total_seconds = |m: &KernelMeasurement| -> f64 {
        MEASURED_SHAPES
            .iter()
            .zip(&m.gflops)
            .map(|(&(rows, k, n, _), gflops)| flops(rows, k, n) / (gflops * 1e9))
            .sum()
    };
    let qualified: Vec<(&F32Kernel, f64)> = measurements
        .iter()
        .filter(|m| m.rows_independent && m.gflops.len() == MEASURED_SHAPES.len())
        .filter_map(|m| {
            let kernel = candidates.iter().find(|k| k.key() == m.key)?;
            Some((kernel, total_seconds(m)))
        })
        .collect();
    let times: Vec<(f64, bool)> = qualified
        .iter()
        .map(|(kernel, seconds)| (*seconds, matches!(kernel, F32Kernel::Blas(_))))
        .collect();
    let best = fastest(&times)
        .map(|i| *qualified[i].0)
        .unwrap_or_else(F32Kernel::default_for_this_cpu);
    KernelChoice {
        kernel: best,
        source,
        measurements,
    }
}

/// Index of the fastest of `times` (seconds over the shapes, whether the kernel is a BLAS),
/// a BLAS's time counted [`BLAS_MUST_BE_FASTER_BY`] longer.
fn fastest(times: &[(f64, bool)]) -> Option<usize> {
    let counted = |&(seconds, blas): &(f64, bool)| {
        if blas {
            seconds / (1.0 - BLAS_MUST_BE_FASTER_BY)
        } else {
            seconds
        }
    };
    (0..times.len()).min_by(|&a, &b| counted(&times[a]).total_cmp(&counted(&times[b])))
}

fn flops(m: usize, k: usize, n: usize) -> f64 {
    2.0 * (m * k * n) as f64
}

/// Measures every candidate on [`MEASURED_SHAPES`] (`repeat` timed runs after one untimed).
pub fn measure_all(candidates: &[F32Kernel], repeat: usize) -> Vec<KernelMeasurement> {
    candidates
        .iter()
        .map(|&kernel| KernelMeasurement {
            key: kernel.key(),
            name: kernel.name(),
            gflops: MEASURED_SHAPES
                .iter()
                .map(|&shape| measure(kernel, shape, repeat).0)
                .collect(),
            rows_independent: rows_independent(kernel),
        })
        .collect()
}

/// GFLOP/s (median of `repeat` runs) and cores busy (process CPU time over wall time) of one
/// product on `kernel`.
pub fn measure(
    kernel: F32Kernel,
    (m, k, n, transposed): (usize, usize, usize, bool),
    repeat: usize,
) -> (f64, f64) {
    let lhs = pseudo_random(m * k, 1);
    let rhs = pseudo_random(k * n, 2);
    let _ = f32_product(kernel, (m, k, n), &lhs, &rhs, transposed);
    let mut seconds = Vec::with_capacity(repeat);
    let cpu_before = super::process_cpu_seconds();
    let wall = Instant::now();
    for _ in 0..repeat.max(1) {
        let started = Instant::now();
        let out = f32_product(kernel, (m, k, n), &lhs, &rhs, transposed);
        seconds.push(started.elapsed().as_secs_f64());
        std::hint::black_box(out);
    }
    let busy = (super::process_cpu_seconds() - cpu_before) / wall.elapsed().as_secs_f64();
    seconds.sort_by(f64::total_cmp);
    (flops(m, k, n) / seconds[seconds.len() / 2] / 1e9, busy)
}

/// Whether each row of a 290-row product equals that row computed among 1 and among 7 rows,
/// with a plain and a transposed right operand.
pub fn rows_independent(kernel: F32Kernel) -> bool {
    let (m, k, n) = (290, 512, 300);
    let lhs = pseudo_random(m * k, 3);
    let rhs = pseudo_random(k * n, 4);
    [false, true].into_iter().all(|transposed| {
        let full = f32_product(kernel, (m, k, n), &lhs, &rhs, transposed);
        [(0, 1), (5, 1), (100, 7), (283, 7)]
            .into_iter()
            .all(|(first, rows)| {
                let part = f32_product(
                    kernel,
                    (rows, k, n),
                    &lhs[first * k..(first + rows) * k],
                    &rhs,
                    transposed,
                );
                part.iter()
                    .zip(&full[first * n..(first + rows) * n])
                    .all(|(a, b)| a.to_bits() == b.to_bits())
            })
    })
}

/// Fixed values in [-1, 1) (a small LCG, one sequence per `stream`): measurements need
/// operands, not randomness.
pub fn pseudo_random(len: usize, stream: u64) -> Vec<f32> {
    let mut state = 0x9E37_79B9_7F4A_7C15u64.wrapping_mul(stream + 1);
    (0..len)
        .map(|_| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// What decides the choice: the CPU, its vector extensions, the threads, the candidates.
fn cache_key(candidates: &[F32Kernel]) -> String {
    #[cfg(target_arch = "x86_64")]
    let features: Vec<&str> = [
        ("avx2", std::is_x86_feature_detected!("avx2")),
        ("fma", std::is_x86_feature_detected!("fma")),
        ("avx512f", std::is_x86_feature_detected!("avx512f")),
    ]
    .into_iter()
    .filter_map(|(name, present)| present.then_some(name))
    .collect();
    #[cfg(not(target_arch = "x86_64"))]
    let features: Vec<&str> = Vec::new();
    let threads = rayon_threads();
    let kernels: Vec<String> = candidates.iter().map(F32Kernel::key).collect();
    format!(
        "{} | {} | {threads} threads | {}",
        super::cpu_model(),
        features.join(","),
        kernels.join(",")
    )
}

fn rayon_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn cache_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))?;
    Some(base.join("mvfa-studio").join("matmul-kernel.json"))
}

#[derive(Serialize, Deserialize, Default)]
struct CacheFile {
    /// One entry per CPU and candidate set.
    machines: Vec<CacheEntry>,
}

#[derive(Serialize, Deserialize)]
struct CacheEntry {
    key: String,
    measurements: Vec<KernelMeasurement>,
}

fn read_cache(path: &std::path::Path, key: &str) -> Option<Vec<KernelMeasurement>> {
    let text = std::fs::read_to_string(path).ok()?;
    let file: CacheFile = serde_json::from_str(&text).ok()?;
    file.machines
        .into_iter()
        .find(|entry| entry.key == key)
        .map(|entry| entry.measurements)
}

fn write_cache(
    path: &std::path::Path,
    key: &str,
    measurements: &[KernelMeasurement],
) -> std::io::Result<()> {
    let mut file: CacheFile = std::fs::read_to_string(path)
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or_default();
    file.machines.retain(|entry| entry.key != key);
    file.machines.push(CacheEntry {
        key: key.to_owned(),
        measurements: measurements.to_vec(),
    });
    let dir = path.parent().unwrap_or(path);
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    serde_json::to_writer_pretty(&mut tmp, &file)?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn measurement(key: &str, gflops: f64, rows_independent: bool) -> KernelMeasurement {
        KernelMeasurement {
            key: key.into(),
            name: key.into(),
            gflops: vec![gflops; MEASURED_SHAPES.len()],
            rows_independent,
        }
    }

    #[test]
    fn the_fastest_kernel_with_rows_independent_of_the_row_count_wins() {
        let candidates = [F32Kernel::MatrixMultiply];
        let choice = pick(
            &candidates,
            vec![
                measurement("matrixmultiply", 100.0, true),
                measurement("missing-here", 900.0, true),
            ],
            ChoiceSource::Measured,
        );
        assert_eq!(choice.kernel, F32Kernel::MatrixMultiply);
        // A faster kernel whose rows depend on the row count is passed over.
        let blas_like = F32Kernel::available()
            .into_iter()
            .find(|k| *k != F32Kernel::MatrixMultiply);
        if let Some(other) = blas_like {
            let candidates = [F32Kernel::MatrixMultiply, other];
            let choice = pick(
                &candidates,
                vec![
                    measurement("matrixmultiply", 100.0, true),
                    measurement(&other.key(), 400.0, false),
                ],
                ChoiceSource::Measured,
            );
            assert_eq!(choice.kernel, F32Kernel::MatrixMultiply);
            let choice = pick(
                &candidates,
                vec![
                    measurement("matrixmultiply", 100.0, true),
                    measurement(&other.key(), 400.0, true),
                ],
                ChoiceSource::Measured,
            );
            assert_eq!(choice.kernel, other);
        }
    }

    #[test]
    fn a_blas_must_be_clearly_faster_than_the_pure_rust_kernels() {
        // (seconds, is a BLAS): 5% faster is not enough, 15% is.
        assert_eq!(fastest(&[(1.0, false), (0.95, true)]), Some(0));
        assert_eq!(fastest(&[(1.0, false), (0.85, true)]), Some(1));
        assert_eq!(fastest(&[(1.0, false), (0.9, false)]), Some(1));
        assert_eq!(fastest(&[(0.9, true)]), Some(0));
        assert_eq!(fastest(&[]), None);
    }

    #[test]
    fn the_cache_keeps_one_entry_per_machine_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mvfa-studio").join("matmul-kernel.json");
        assert!(read_cache(&path, "cpu a").is_none());
        write_cache(&path, "cpu a", &[measurement("gemm", 400.0, true)]).unwrap();
        write_cache(
            &path,
            "cpu b",
            &[measurement("matrixmultiply", 150.0, true)],
        )
        .unwrap();
        write_cache(&path, "cpu a", &[measurement("gemm", 420.0, true)]).unwrap();
        let a = read_cache(&path, "cpu a").unwrap();
        assert_eq!((a.len(), a[0].gflops[0]), (1, 420.0));
        assert_eq!(read_cache(&path, "cpu b").unwrap()[0].key, "matrixmultiply");
        assert!(read_cache(&path, "cpu c").is_none());
        // A damaged cache is measured again, not an error.
        std::fs::write(&path, "{ not json").unwrap();
        assert!(read_cache(&path, "cpu a").is_none());
    }

    #[test]
    fn every_pure_rust_kernel_passes_the_row_check() {
        for kernel in F32Kernel::available() {
            if !matches!(kernel, F32Kernel::Blas(_)) {
                assert!(rows_independent(kernel), "{}", kernel.name());
            }
        }
    }
}
