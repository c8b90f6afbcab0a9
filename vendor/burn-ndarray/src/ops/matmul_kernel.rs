//! [mvfa patch 8] The kernel of f32 matrix products, chosen once per process, and a BLAS
//! loaded at run time.
//!
//! Which kernel is fastest depends on the CPU and on what the system has: gemm's AVX-512
//! kernels beat matrixmultiply on AMD Zen 4/5, but a Xeon's two vCPUs are often one core's
//! two hyperthreads, where MKL or OpenBLAS run at the core's peak and gemm at half of it.
//! So the kernel is a process-wide choice that the application makes before the first
//! product ([`set_f32_matmul_kernel`], e.g. from a measurement it caches per CPU), with
//! [`F32Kernel::default_for_this_cpu`] when it makes none.
//!
//! A BLAS is opened with `dlopen` (`cblas_sgemm`), never linked, so that building needs no
//! BLAS. Only products whose right operand is one matrix shared by the whole batch (`linear`:
//! every weight product, forward and input gradient) run on it: attention's per-head products
//! and weight gradients keep the pure-Rust kernel. With one thread count and one library the
//! values are a function of the inputs (a BLAS splits m and n over its threads, never k), but
//! whether a row's value depends on how many rows the product has is the library's affair:
//! the application's measurement checks that before it picks a BLAS.

use std::sync::OnceLock;

/// A kernel for f32 matrix products.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum F32Kernel {
    /// matrixmultiply's kernels (up to AVX2/FMA), split over rayon's pool (patch 3).
    MatrixMultiply,
    /// gemm's AVX-512 kernels (patch 4), one product split over all of rayon's threads.
    Gemm,
    /// gemm's AVX-512 kernels, each product on one thread (two hyperthreads of one core may
    /// gain nothing from splitting a product).
    GemmOneThread,
    /// A BLAS opened at run time, on as many threads as rayon's pool.
    Blas(&'static Blas),
}

impl F32Kernel {
    /// A short name, e.g. `"gemm (AVX-512)"` or `"OpenBLAS 0.3.21 (libopenblas.so.0)"`.
    pub fn name(&self) -> String {
        match self {
            F32Kernel::MatrixMultiply => "matrixmultiply".into(),
            F32Kernel::Gemm => "gemm (AVX-512)".into(),
            F32Kernel::GemmOneThread => "gemm (AVX-512, 1 thread per product)".into(),
            F32Kernel::Blas(blas) => blas.name.clone(),
        }
    }

    /// The name [`Self::from_name`] reads back (`matrixmultiply`, `gemm`, `gemm-1`, or the
    /// BLAS library's file name as it was opened).
    pub fn key(&self) -> String {
        match self {
            F32Kernel::MatrixMultiply => "matrixmultiply".into(),
            F32Kernel::Gemm => "gemm".into(),
            F32Kernel::GemmOneThread => "gemm-1".into(),
            F32Kernel::Blas(blas) => blas.library.clone(),
        }
    }

    /// The kernel a [`Self::key`] names, when it is available here: `blas` names the first
    /// BLAS found, a path or file name opens that library.
    pub fn from_name(name: &str) -> Result<F32Kernel, String> {
        match name {
            "matrixmultiply" => Ok(F32Kernel::MatrixMultiply),
            "gemm" | "gemm-1" if !avx512() => Err(format!(
                "the {name} kernel needs AVX-512, which this CPU does not have"
            )),
            "gemm" => Ok(F32Kernel::Gemm),
            "gemm-1" => Ok(F32Kernel::GemmOneThread),
            "blas" => blas_libraries()
                .first()
                .map(|blas| F32Kernel::Blas(blas))
                .ok_or_else(|| format!("no BLAS found (tried {})", BLAS_CANDIDATES.join(", "))),
            library => open_blas(library).map(F32Kernel::Blas),
        }
    }

    /// gemm on AVX-512 CPUs, matrixmultiply elsewhere (gemm's AVX2 kernel is the slower
    /// one there), unless `BURN_NDARRAY_MATMUL` names another kernel ([`Self::from_name`]).
    pub fn default_for_this_cpu() -> F32Kernel {
        if let Ok(name) = std::env::var("BURN_NDARRAY_MATMUL") {
            match F32Kernel::from_name(&name) {
                Ok(kernel) => return kernel,
                Err(reason) => eprintln!("BURN_NDARRAY_MATMUL={name} ignored: {reason}"),
            }
        }
        if avx512() {
            F32Kernel::Gemm
        } else {
            F32Kernel::MatrixMultiply
        }
    }

    /// Every kernel this process can run: matrixmultiply, gemm where the CPU has AVX-512,
    /// and each BLAS found ([`blas_libraries`]).
    pub fn available() -> Vec<F32Kernel> {
        let mut kernels = vec![F32Kernel::MatrixMultiply];
        if avx512() {
            kernels.extend([F32Kernel::Gemm, F32Kernel::GemmOneThread]);
        }
        kernels.extend(blas_libraries().iter().map(|blas| F32Kernel::Blas(blas)));
        kernels
    }
}

static KERNEL: OnceLock<F32Kernel> = OnceLock::new();

/// The kernel of this process's f32 products; fixed at the first product.
pub fn f32_matmul_kernel() -> F32Kernel {
    *KERNEL.get_or_init(F32Kernel::default_for_this_cpu)
}

/// Chooses the kernel of this process's f32 products. Only before the first product (or a
/// call of [`f32_matmul_kernel`]): afterwards the kernel in use is returned as the error, so
/// that one process never mixes two kernels' rounding.
pub fn set_f32_matmul_kernel(kernel: F32Kernel) -> Result<(), F32Kernel> {
    KERNEL.set(kernel)?;
    Ok(())
}

/// Whether gemm's AVX-512 kernels can run here.
pub(crate) fn avx512() -> bool {
    #[cfg(avx512_gemm)]
    {
        std::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(avx512_gemm))]
    {
        false
    }
}

/// `lhs [m, k] x rhs` into a new row-major `[m, n]` array, with `kernel`: what `matmul` does
/// with that kernel for one matrix (for measuring kernels against each other). `rhs` is
/// `[k, n]` row-major, or `[n, k]` row-major read transposed when `rhs_transposed` (the
/// layout of a weight in a backward pass).
pub fn f32_product(
    kernel: F32Kernel,
    (m, k, n): (usize, usize, usize),
    lhs: &[f32],
    rhs: &[f32],
    rhs_transposed: bool,
) -> Vec<f32> {
    assert_eq!(lhs.len(), m * k, "f32_product: lhs is not m x k");
    assert_eq!(rhs.len(), k * n, "f32_product: rhs is not k x n");
    let lhs = ndarray::ArrayView3::from_shape((1, m, k), lhs).expect("lhs shape");
    let rhs = if rhs_transposed {
        ndarray::ArrayView3::from_shape((1, n, k), rhs)
            .expect("rhs shape")
            .permuted_axes([0, 2, 1])
    } else {
        ndarray::ArrayView3::from_shape((1, k, n), rhs).expect("rhs shape")
    };
    let out = super::matmul::matmul_f32_with(kernel, &lhs, &rhs, 1, |_| (0, 0));
    out.into_raw_vec_and_offset().0
}

/// A BLAS library opened at run time.
pub struct Blas {
    /// What the library says it is, and its file: `OpenBLAS 0.3.21 ... (libopenblas.so.0)`.
    pub name: String,
    /// The file name or path it was opened by.
    pub library: String,
    sgemm: CblasSgemm,
    /// MKL's `cblas_gemm_bf16bf16f32`, where the library has it.
    gemm_bf16: Option<CblasGemmBf16>,
    /// Kept open for the life of the process (the function pointer above points into it).
    _library: libloading::Library,
}

impl core::fmt::Debug for Blas {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(&self.name)
    }
}

impl PartialEq for Blas {
    fn eq(&self, other: &Self) -> bool {
        self.library == other.library
    }
}
impl Eq for Blas {}

/// `cblas_sgemm(order, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)`.
type CblasSgemm = unsafe extern "C" fn(
    i32,
    i32,
    i32,
    i32,
    i32,
    i32,
    f32,
    *const f32,
    i32,
    *const f32,
    i32,
    f32,
    *mut f32,
    i32,
);

/// MKL's `cblas_gemm_bf16bf16f32`: the arguments of `cblas_sgemm` with bf16 operands
/// (`u16` bit patterns) and an f32 product.
type CblasGemmBf16 = unsafe extern "C" fn(
    i32,
    i32,
    i32,
    i32,
    i32,
    i32,
    f32,
    *const u16,
    i32,
    *const u16,
    i32,
    f32,
    *mut f32,
    i32,
);

const CBLAS_ROW_MAJOR: i32 = 101;
const CBLAS_NO_TRANS: i32 = 111;
const CBLAS_TRANS: i32 = 112;

/// The libraries looked for, in order, when `MVFA_BLAS` names none: Intel's MKL (single
/// dynamic library; `pip install mkl` puts it in Python's `lib/`) and OpenBLAS, by their
/// Debian and PyPI sonames, on the loader's search path.
pub const BLAS_CANDIDATES: [&str; 5] = [
    "libmkl_rt.so.3",
    "libmkl_rt.so.2",
    "libmkl_rt.so",
    "libopenblas.so.0",
    "libopenblas.so",
];

/// Every BLAS this process can open: those `MVFA_BLAS` names (paths or file names separated
/// by `:`), else [`BLAS_CANDIDATES`]; one per library (the first soname of each found).
pub fn blas_libraries() -> &'static [&'static Blas] {
    static FOUND: OnceLock<Vec<&'static Blas>> = OnceLock::new();
    FOUND.get_or_init(|| {
        let named = std::env::var("MVFA_BLAS").ok();
        let names: Vec<String> = match &named {
            Some(list) => list
                .split(':')
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect(),
            None => BLAS_CANDIDATES.iter().map(|s| s.to_string()).collect(),
        };
        let mut found: Vec<&'static Blas> = Vec::new();
        for name in names {
            let Ok(blas) = open_blas(&name) else { continue };
            let family = |b: &Blas| b.name.split_whitespace().next().map(str::to_owned);
            if !found.iter().any(|f| family(f) == family(blas)) {
                found.push(blas);
            }
        }
        found
    })
}

/// Opens `library` (once per name) and finds `cblas_sgemm`; sets its thread count to
/// rayon's.
fn open_blas(library: &str) -> Result<&'static Blas, String> {
    use std::collections::HashMap;
    use std::sync::Mutex;
    static OPENED: OnceLock<Mutex<HashMap<String, Result<&'static Blas, String>>>> =
        OnceLock::new();
    let mut opened = OPENED
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    opened
        .entry(library.to_owned())
        .or_insert_with(|| load_blas(library).map(|blas| &*Box::leak(Box::new(blas))))
        .clone()
}

fn load_blas(library: &str) -> Result<Blas, String> {
    // SAFETY: opening a BLAS runs its initialisers (thread pool set-up), nothing else; the
    // symbols are declared with the signatures the CBLAS, OpenBLAS and MKL headers give.
    unsafe {
        let lib = libloading::Library::new(library).map_err(|e| format!("{library}: {e}"))?;
        let sgemm = *lib
            .get::<CblasSgemm>(b"cblas_sgemm\0")
            .map_err(|e| format!("{library}: no cblas_sgemm ({e})"))?;
        #[cfg(feature = "multi-threads")]
        let threads = rayon::current_num_threads() as i32;
        #[cfg(not(feature = "multi-threads"))]
        let threads = 1;
        let gemm_bf16 = lib
            .get::<CblasGemmBf16>(b"cblas_gemm_bf16bf16f32\0")
            .ok()
            .map(|f| *f);
        let file = std::path::Path::new(library)
            .file_name()
            .map_or(library.into(), |f| f.to_string_lossy().into_owned());
        let name = if let Ok(config) =
            lib.get::<unsafe extern "C" fn() -> *const core::ffi::c_char>(b"openblas_get_config\0")
        {
            if let Ok(set) = lib.get::<unsafe extern "C" fn(i32)>(b"openblas_set_num_threads\0") {
                set(threads);
            }
            let config = std::ffi::CStr::from_ptr(config()).to_string_lossy();
            let core = lib
                .get::<unsafe extern "C" fn() -> *const core::ffi::c_char>(
                    b"openblas_get_corename\0",
                )
                .map(|f| std::ffi::CStr::from_ptr(f()).to_string_lossy().into_owned())
                .unwrap_or_default();
            let version = config
                .split_whitespace()
                .take(2)
                .collect::<Vec<_>>()
                .join(" ");
            format!("{version} {core} ({file})")
        } else if let Ok(version) = lib
            .get::<unsafe extern "C" fn(*mut core::ffi::c_char, i32)>(b"MKL_Get_Version_String\0")
        {
            if let Ok(set) = lib.get::<unsafe extern "C" fn(i32)>(b"MKL_Set_Num_Threads\0") {
                set(threads);
            }
            let mut buf = [0 as core::ffi::c_char; 256];
            version(buf.as_mut_ptr(), buf.len() as i32);
            let text = std::ffi::CStr::from_ptr(buf.as_ptr()).to_string_lossy();
            let short = text
                .split_whitespace()
                .find(|w| w.chars().next().is_some_and(|c| c.is_ascii_digit()))
                .unwrap_or("");
            format!("MKL {short} ({file})")
        } else {
            format!("BLAS ({file})")
        };
        Ok(Blas {
            name,
            library: library.to_owned(),
            sgemm,
            gemm_bf16,
            _library: lib,
        })
    }
}

/// Rows of a BLAS product are padded to at least this many, as on gemm's path: libraries
/// take other code paths (matrix-vector products, small-matrix kernels) for a few rows.
const BLAS_MIN_ROWS: usize = 65;

impl Blas {
    /// `dst = lhs rhs` for one matrix; `dst` row-major and contiguous.
    pub(crate) fn product(
        &self,
        lhs: ndarray::ArrayView2<'_, f32>,
        rhs: ndarray::ArrayView2<'_, f32>,
        mut dst: ndarray::ArrayViewMut2<'_, f32>,
    ) {
        let (m, k) = lhs.dim();
        let n = rhs.dim().1;
        if m == 0 || n == 0 {
            return;
        }
        if k == 0 {
            dst.fill(0.0);
            return;
        }
        // CBLAS wants each operand with one unit stride; anything else is copied.
        let layout = |a: &ndarray::ArrayView2<'_, f32>| -> Option<(bool, i32)> {
            let (rows, cols) = a.dim();
            let (rs, cs) = (a.strides()[0], a.strides()[1]);
            if (cs == 1 || cols == 1) && rs >= cols.max(1) as isize {
                Some((false, rs as i32))
            } else if (rs == 1 || rows == 1) && cs >= rows.max(1) as isize {
                Some((true, cs as i32))
            } else {
                None
            }
        };
        let lhs_owned;
        let mut lhs = lhs;
        if m < BLAS_MIN_ROWS || layout(&lhs).is_none() {
            let mut padded = ndarray::Array2::<f32>::zeros((m.max(BLAS_MIN_ROWS), k));
            padded.slice_mut(ndarray::s![..m, ..]).assign(&lhs);
            lhs_owned = padded;
            lhs = lhs_owned.view();
        }
        let rhs_owned;
        let rhs = if layout(&rhs).is_some() {
            rhs
        } else {
            rhs_owned = rhs.as_standard_layout().into_owned();
            rhs_owned.view()
        };
        let rows = lhs.dim().0;
        let (ta, lda) = layout(&lhs).expect("lhs has a BLAS layout");
        let (tb, ldb) = layout(&rhs).expect("rhs has a BLAS layout");
        let direct = rows == m && dst.is_standard_layout();
        let mut out_owned = if direct {
            None
        } else {
            Some(ndarray::Array2::<f32>::zeros((rows, n)))
        };
        let out_ptr = match &mut out_owned {
            Some(out) => out.as_mut_ptr(),
            None => dst.as_mut_ptr(),
        };
        let trans = |t: bool| if t { CBLAS_TRANS } else { CBLAS_NO_TRANS };
        // SAFETY: the operands are valid for their shapes and leading dimensions (checked by
        // `layout`), the output holds rows x n contiguous elements.
        unsafe {
            (self.sgemm)(
                CBLAS_ROW_MAJOR,
                trans(ta),
                trans(tb),
                rows as i32,
                n as i32,
                k as i32,
                1.0,
                lhs.as_ptr(),
                lda,
                rhs.as_ptr(),
                ldb,
                0.0,
                out_ptr,
                n as i32,
            );
        }
        if let Some(out) = out_owned {
            dst.assign(&out.slice(ndarray::s![..m, ..]));
        }
    }
}

/// `lhs [m, k] x rhs` with both operands rounded to bfloat16 (to nearest, ties to even) and
/// the products accumulated in f32, by MKL's `cblas_gemm_bf16bf16f32`: for measuring what
/// bf16 products would gain (`mvfa-dev bench --kernels`). `None` when `blas` lacks it. Layouts
/// as [`f32_product`].
pub fn bf16_product(
    blas: &Blas,
    (m, k, n): (usize, usize, usize),
    lhs: &[f32],
    rhs: &[f32],
    rhs_transposed: bool,
) -> Option<Vec<f32>> {
    let gemm = blas.gemm_bf16?;
    assert_eq!(lhs.len(), m * k, "bf16_product: lhs is not m x k");
    assert_eq!(rhs.len(), k * n, "bf16_product: rhs is not k x n");
    let to_bf16 = |values: &[f32]| -> Vec<u16> {
        values
            .iter()
            .map(|v| {
                let bits = v.to_bits();
                (bits.wrapping_add(0x7FFF + ((bits >> 16) & 1)) >> 16) as u16
            })
            .collect()
    };
    let (a, b) = (to_bf16(lhs), to_bf16(rhs));
    let mut out = vec![0f32; m * n];
    let (trans_b, ldb) = if rhs_transposed {
        (CBLAS_TRANS, k)
    } else {
        (CBLAS_NO_TRANS, n)
    };
    // SAFETY: row-major operands of the sizes asserted above, leading dimensions k and
    // `ldb`, an m x n output.
    unsafe {
        gemm(
            CBLAS_ROW_MAJOR,
            CBLAS_NO_TRANS,
            trans_b,
            m as i32,
            n as i32,
            k as i32,
            1.0,
            a.as_ptr(),
            k as i32,
            b.as_ptr(),
            ldb as i32,
            0.0,
            out.as_mut_ptr(),
            n as i32,
        );
    }
    Some(out)
}
