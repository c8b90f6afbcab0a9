use crate::UnsafeSharedRef;
use crate::{NdArrayElement, ShapeOps, SharedArray, iter_range_par, ops::NdArrayOps, run_par};

use alloc::{vec, vec::Vec};
use burn_backend::ElementConversion;
use burn_backend::Shape;
use ndarray::{IxDyn, s};

pub(crate) fn matmul<E: NdArrayElement>(
    lhs: SharedArray<E>,
    rhs: SharedArray<E>,
) -> SharedArray<E> {
    let shape_lhs = lhs.shape();
    let shape_rhs = rhs.shape();
    let ndims = shape_lhs.num_dims();
    let m = shape_lhs[ndims - 2]; // # of left rows
    let k = shape_rhs[ndims - 2]; // # of left cols and right rows
    let n = shape_rhs[ndims - 1]; // # of right cols

    let (out_shape, strides_lhs, strides_rhs, strides_out) = output_shape(shape_lhs, shape_rhs);
    let l_mat_size = m * k; // size of matrix component of left array
    let r_mat_size = k * n; // size of matrix component of right array
    let out_mat_size = m * n; // size of matrix component of output array

    let num_l_batches = shape_lhs.num_elements() / l_mat_size;
    let num_r_batches = shape_rhs.num_elements() / r_mat_size;
    let num_out_batches = out_shape.num_elements() / out_mat_size;

    // [mvfa patch 1] `NdArrayOps::reshape` copies every non-standard-layout operand into
    // standard layout, e.g. the whole transposed weight `W^T` of every backward matmul.
    // `to_shape` gives a strided view whenever the batch axes can be merged without moving
    // data (always for a transposed matrix), and `general_mat_mul` (matrixmultiply) takes
    // arbitrary row and column strides; it copies only when no view is possible.
    let lhs_array = lhs
        .to_shape((num_l_batches, m, k))
        .expect("matmul: lhs shape");
    let rhs_array = rhs
        .to_shape((num_r_batches, k, n))
        .expect("matmul: rhs shape");

    let batch_of = |batch: usize| {
        let out_index = strides_out.unflatten(batch);
        (
            strides_lhs.flatten(&out_index),
            strides_rhs.flatten(&out_index),
        )
    };
    // [mvfa patch 8] f32 products run on the process's kernel (`matmul_kernel`).
    let out = if core::any::TypeId::of::<E>() == core::any::TypeId::of::<f32>() {
        let (lhs_view, rhs_view) = (lhs_array.view(), rhs_array.view());
        // SAFETY: `E` is `f32` (checked above); same size, alignment and representation.
        let (lhs_f32, rhs_f32) = unsafe {
            (
                &*(&lhs_view as *const _ as *const ndarray::ArrayView3<'_, f32>),
                &*(&rhs_view as *const _ as *const ndarray::ArrayView3<'_, f32>),
            )
        };
        let out = matmul_f32_with(
            super::matmul_kernel::f32_matmul_kernel(),
            lhs_f32,
            rhs_f32,
            num_out_batches,
            batch_of,
        );
        // SAFETY: `E` is `f32`.
        unsafe { core::mem::transmute::<ndarray::Array3<f32>, ndarray::Array3<E>>(out) }
    } else {
        matrixmultiply_matmul(
            &lhs_array.view(),
            &rhs_array.view(),
            num_out_batches,
            batch_of,
        )
    };
    NdArrayOps::reshape(out.into_shared().into_dyn(), out_shape)
}

/// [mvfa patch 8] An f32 product `[batches, m, n]` on `kernel`. A BLAS takes the products
/// whose right operand is one matrix for the whole batch (`linear`), as one product of all
/// the rows; everything else, and what a kernel cannot take (negative strides), goes to gemm
/// where the CPU has AVX-512, else to matrixmultiply.
pub(crate) fn matmul_f32_with(
    kernel: super::matmul_kernel::F32Kernel,
    lhs: &ndarray::ArrayView3<'_, f32>,
    rhs: &ndarray::ArrayView3<'_, f32>,
    batches: usize,
    batch_of: impl Fn(usize) -> (usize, usize) + Sync,
) -> ndarray::Array3<f32> {
    use super::matmul_kernel::F32Kernel;
    let (_, m, k) = lhs.dim();
    let n = rhs.dim().2;
    if let F32Kernel::Blas(blas) = kernel {
        if rhs.dim().0 == 1 && (lhs.dim().0 == batches || lhs.dim().0 == 1) {
            let mut out = ndarray::Array3::<f32>::zeros((batches, m, n));
            let rows_owned;
            let rows = if lhs.dim().0 == batches {
                match lhs.view().into_shape_with_order((batches * m, k)) {
                    Ok(rows) => rows,
                    Err(_) => {
                        rows_owned = lhs
                            .as_standard_layout()
                            .into_owned()
                            .into_shape_with_order((batches * m, k))
                            .expect("standard layout");
                        rows_owned.view()
                    }
                }
            } else {
                // One left matrix broadcast over the batch: compute it once.
                let one = lhs.index_axis(ndarray::Axis(0), 0);
                let mut first = ndarray::Array2::<f32>::zeros((m, n));
                blas.product(one, rhs.index_axis(ndarray::Axis(0), 0), first.view_mut());
                for mut dst in out.outer_iter_mut() {
                    dst.assign(&first);
                }
                return out;
            };
            let dst = out
                .view_mut()
                .into_shape_with_order((batches * m, n))
                .expect("new array is contiguous");
            blas.product(rows, rhs.index_axis(ndarray::Axis(0), 0), dst);
            return out;
        }
    }
    #[cfg(avx512_gemm)]
    if super::matmul_kernel::avx512() && kernel != F32Kernel::MatrixMultiply {
        let whole_threads = kernel != F32Kernel::GemmOneThread;
        if let Some(out) = avx512_gemm::matmul(lhs, rhs, batches, &batch_of, whole_threads) {
            return out;
        }
    }
    matrixmultiply_matmul(lhs, rhs, batches, batch_of)
}

/// Patch 3's path: matrixmultiply over rayon's pool, for every element type.
fn matrixmultiply_matmul<E: NdArrayElement>(
    lhs_array: &ndarray::ArrayView3<'_, E>,
    rhs_array: &ndarray::ArrayView3<'_, E>,
    num_out_batches: usize,
    batch_of: impl Fn(usize) -> (usize, usize) + Sync,
) -> ndarray::Array3<E> {
    let (_, m, k) = lhs_array.dim();
    let n = rhs_array.dim().2;
    let alpha: E = 1.0.elem();
    let beta: E = 0.0.elem();

    // [mvfa patch 3] The work is split into (batch, block of output rows or columns) tasks
    // over rayon's pool, each a single-threaded matrixmultiply call (its own `threading`
    // feature is off): with a single large matrix, matrixmultiply's threads kept only ~1.4
    // of 2 cores busy. Each task packs its whole other operand, so the split runs along the
    // dimension whose operand is the cheaper to pack twice (columns when n >= m). Every
    // output element is still computed by the same kernel over the same k blocks, so the
    // values do not depend on the split (tested across pool sizes).
    let split_cols = n >= m;
    let blocks = blocks(num_out_batches, if split_cols { n } else { m }, m * k * n);
    let per_block = if split_cols { n } else { m }.div_ceil(blocks);

    let out = run_par!(|| {
        let mut out_array = ndarray::Array3::<E>::zeros((num_out_batches, m, n));
        let unsafe_shared_out_array = UnsafeSharedRef::new(&mut out_array);

        iter_range_par!(0, num_out_batches * blocks).for_each(|task| {
            let (out_batch, block) = (task / blocks, task % blocks);
            let len = if split_cols { n } else { m };
            let part = block * per_block..((block + 1) * per_block).min(len);
            let (rows, cols) = if split_cols {
                (0..m, part)
            } else {
                (part, 0..n)
            };
            let (l_batch, r_batch) = batch_of(out_batch);

            let lhs_slice = lhs_array.slice(s!(l_batch, rows.clone(), ..));
            let rhs_slice = rhs_array.slice(s!(r_batch, .., cols.clone()));

            unsafe {
                let mut out_slice = unsafe_shared_out_array
                    .get()
                    .slice_mut(s!(out_batch, rows, cols));

                ndarray::linalg::general_mat_mul(
                    alpha,
                    &lhs_slice,
                    &rhs_slice,
                    beta,
                    &mut out_slice,
                )
            }
        });

        out_array
    });
    out
}

/// [mvfa patch 3] Into how many blocks each output matrix is split along a dimension of
/// length `len`: enough tasks for every thread of the pool when there are fewer matrices
/// than threads, blocks of at least 64, and no split for products under 2^21 multiply-adds.
fn blocks(batches: usize, len: usize, multiply_adds: usize) -> usize {
    #[cfg(feature = "multi-threads")]
    let threads = rayon::current_num_threads();
    #[cfg(not(feature = "multi-threads"))]
    let threads = 1;
    if batches >= threads || multiply_adds < 1 << 21 {
        return 1;
    }
    threads.div_ceil(batches).min(len / 64).max(1)
}

/// [mvfa patch 4] f32 matrix products through the `gemm` crate's AVX-512 kernels.
///
/// On an AVX-512 CPU (AMD Zen 4/5, Intel since Skylake-SP) these run 1.2-1.35x faster than
/// matrixmultiply's AVX2 kernel on the shapes of a ViT (measured in `PATCHES.md`); without
/// AVX-512, or for other element types, `matmul` keeps matrixmultiply (gemm's AVX2 kernel is
/// slower than matrixmultiply's there).
///
/// Values: within gemm's blocked path every output element is the same function of its row
/// of `lhs` and column of `rhs` (the k blocking depends only on k and the CPU's caches), so
/// results do not depend on m, n, operand strides, batch merging or the thread count. gemm
/// has other paths for tiny or degenerate shapes (a matrix-vector product for m or n = 1,
/// another k blocking when m and n are both at most 64); such products are zero-padded to
/// 65 rows and 2 columns so that a row's value is the same in a batch of 1 as in a batch of
/// 100. Whether it runs is the process's kernel choice (patch 8, `matmul_kernel`); a BLAS
/// feature leaves it out of the build (`cfg(avx512_gemm)`, `build.rs`).
#[cfg(avx512_gemm)]
pub(crate) mod avx512_gemm {
    use gemm_common::Parallelism;
    use ndarray::{ArrayView3, ArrayViewMut2};

    /// gemm leaves its blocked path for one row or one column, and for products with at most
    /// 64 rows and 64 columns (see the module doc): such products are padded to these sizes.
    const MIN_ROWS: usize = 65;
    const MIN_COLS: usize = 2;

    /// `Some([batches, m, n])` when the product ran here, `None` to use matrixmultiply.
    /// `batch_of(out_batch)` gives the (lhs, rhs) batch of an output batch (broadcasting).
    /// `whole_threads`: a single product is split over all of rayon's threads (else each
    /// product runs on one thread).
    pub(super) fn matmul(
        lhs: &ArrayView3<'_, f32>,
        rhs: &ArrayView3<'_, f32>,
        batches: usize,
        batch_of: &(impl Fn(usize) -> (usize, usize) + Sync),
        whole_threads: bool,
    ) -> Option<ndarray::Array3<f32>> {
        let (_, m, k) = lhs.dim();
        let n = rhs.dim().2;
        let [_, rhs_rs, rhs_cs] = [rhs.strides()[0], rhs.strides()[1], rhs.strides()[2]];
        let positive = |dim: usize, stride: isize| dim <= 1 || stride > 0;
        let strides_ok = positive(m, lhs.strides()[1])
            && positive(k, lhs.strides()[2])
            && positive(k, rhs_rs)
            && positive(n, rhs_cs);
        if !strides_ok || m == 0 || n == 0 {
            return None;
        }
        let mut out = ndarray::Array3::<f32>::zeros((batches, m, n));

        #[cfg(feature = "multi-threads")]
        let threads = rayon::current_num_threads();
        #[cfg(not(feature = "multi-threads"))]
        let threads = 1;
        #[cfg(feature = "multi-threads")]
        let whole = if threads > 1 && whole_threads {
            Parallelism::Rayon(threads)
        } else {
            Parallelism::None
        };
        #[cfg(not(feature = "multi-threads"))]
        let whole = Parallelism::None;

        // A batch of token matrices times one shared weight (`linear` on [batch, tokens,
        // d]): one product of all the rows, so that the weight is packed once, not once per
        // batch (rows get the same values either way).
        if batches > 1 && rhs.dim().0 == 1 && lhs.dim().0 == batches {
            if let Ok(rows) = lhs.view().into_shape_with_order((batches * m, k)) {
                let dst = out
                    .view_mut()
                    .into_shape_with_order((batches * m, n))
                    .expect("new array is contiguous");
                product(rows, rhs.index_axis(ndarray::Axis(0), 0), dst, whole);
                return Some(out);
            }
        }
        if batches >= threads && threads > 1 {
            #[cfg(feature = "multi-threads")]
            {
                use ndarray::parallel::prelude::*;
                out.outer_iter_mut()
                    .into_par_iter()
                    .enumerate()
                    .for_each(|(batch, dst)| {
                        let (l, r) = batch_of(batch);
                        product(
                            lhs.index_axis(ndarray::Axis(0), l),
                            rhs.index_axis(ndarray::Axis(0), r),
                            dst,
                            Parallelism::None,
                        );
                    });
            }
        } else {
            for (batch, dst) in out.outer_iter_mut().enumerate() {
                let (l, r) = batch_of(batch);
                product(
                    lhs.index_axis(ndarray::Axis(0), l),
                    rhs.index_axis(ndarray::Axis(0), r),
                    dst,
                    whole,
                );
            }
        }
        Some(out)
    }

    /// `dst = lhs rhs` for one matrix.
    fn product(
        lhs: ndarray::ArrayView2<'_, f32>,
        rhs: ndarray::ArrayView2<'_, f32>,
        dst: ArrayViewMut2<'_, f32>,
        parallelism: Parallelism,
    ) {
        let (m, k) = lhs.dim();
        let n = rhs.dim().1;
        // gemm is fastest (its orientation: dst[m, n] = lhs[m, k] rhs[k, n]) with a column-
        // major dst, an m-contiguous lhs and a k-contiguous rhs; `call` gets there for
        // row-major operands by computing dst^T = rhs^T lhs^T. A right operand stored
        // k-contiguous (a transposed weight in a backward pass, the transposed key of
        // attention, transposed queries) spoils that: up to half the speed. So:
        if rhs.strides()[0] == 1 && k > 1 && n > 1 {
            if n <= m {
                // the smaller operand, `rhs`, is copied into row-major;
                let rhs = standard_copy(rhs);
                return padded_product(lhs, rhs.view(), dst, parallelism);
            }
            // or else `lhs` is copied into column-major, gemm writes a column-major
            // temporary, and that is copied into `dst` (copies of m x (k + n) elements,
            // under 1/min(m, n) of the product's multiply-adds).
            let lhs_t;
            let lhs = if lhs.strides()[0] == 1 {
                lhs
            } else {
                lhs_t = standard_copy(lhs.t());
                lhs_t.t()
            };
            let mut dst_t = ndarray::Array2::<f32>::zeros((n, m));
            padded_product(lhs, rhs, dst_t.view_mut().reversed_axes(), parallelism);
            return tiled_assign(dst, dst_t.t());
        }
        padded_product(lhs, rhs, dst, parallelism)
    }

    /// `src` copied into a new row-major array.
    fn standard_copy(src: ndarray::ArrayView2<'_, f32>) -> ndarray::Array2<f32> {
        let mut out = ndarray::Array2::<f32>::zeros(src.dim());
        tiled_assign(out.view_mut(), src);
        out
    }

    /// `dst = src` for a `dst` with contiguous rows, tile by tile over rayon's pool: a
    /// plain element-order copy of a transposed view misses the cache on every read.
    fn tiled_assign(mut dst: ArrayViewMut2<'_, f32>, src: ndarray::ArrayView2<'_, f32>) {
        const TILE: usize = 32;
        let (rows, cols) = src.dim();
        assert_eq!(dst.dim(), (rows, cols), "tiled_assign: shapes differ");
        assert!(
            cols <= 1 || dst.strides()[1] == 1,
            "tiled_assign: dst rows not contiguous"
        );
        let (src_rs, src_cs) = (src.strides()[0], src.strides()[1]);
        let dst_rs = dst.strides()[0];
        let (src_ptr, dst_ptr) = (src.as_ptr() as usize, dst.as_mut_ptr() as usize);
        let copy_block = |block: usize| {
            let row_end = ((block + 1) * TILE).min(rows);
            for col0 in (0..cols).step_by(TILE) {
                for r in block * TILE..row_end {
                    for c in col0..(col0 + TILE).min(cols) {
                        // SAFETY: (r, c) lies inside both views, whose strides are those of
                        // valid arrays; each block writes only its own rows of `dst`.
                        unsafe {
                            *(dst_ptr as *mut f32).offset(r as isize * dst_rs + c as isize) =
                                *(src_ptr as *const f32)
                                    .offset(r as isize * src_rs + c as isize * src_cs);
                        }
                    }
                }
            }
        };
        let blocks = rows.div_ceil(TILE);
        #[cfg(feature = "multi-threads")]
        {
            use rayon::prelude::*;
            (0..blocks).into_par_iter().for_each(copy_block);
        }
        #[cfg(not(feature = "multi-threads"))]
        (0..blocks).for_each(copy_block);
    }

    /// `dst = lhs rhs`, zero-padding shapes that gemm would send off its blocked path.
    fn padded_product(
        lhs: ndarray::ArrayView2<'_, f32>,
        rhs: ndarray::ArrayView2<'_, f32>,
        mut dst: ArrayViewMut2<'_, f32>,
        parallelism: Parallelism,
    ) {
        let (m, k) = lhs.dim();
        let n = rhs.dim().1;
        let padded_m = if m < 2 || (m < MIN_ROWS && n < MIN_ROWS) {
            MIN_ROWS
        } else {
            m
        };
        let padded_n = n.max(MIN_COLS);
        if (padded_m, padded_n) == (m, n) {
            // SAFETY: the views are valid for their shapes and strides; gemm writes only
            // `dst`'s m x n elements and reads nothing else outside the operands.
            unsafe { call(m, n, k, lhs, rhs, &mut dst, parallelism) };
            return;
        }
        let mut lhs_padded = ndarray::Array2::<f32>::zeros((padded_m, k));
        lhs_padded.slice_mut(ndarray::s![..m, ..]).assign(&lhs);
        let mut rhs_padded = ndarray::Array2::<f32>::zeros((k, padded_n));
        rhs_padded.slice_mut(ndarray::s![.., ..n]).assign(&rhs);
        let mut dst_padded = ndarray::Array2::<f32>::zeros((padded_m, padded_n));
        // SAFETY: as above, on owned contiguous arrays.
        unsafe {
            call(
                padded_m,
                padded_n,
                k,
                lhs_padded.view(),
                rhs_padded.view(),
                &mut dst_padded.view_mut(),
                parallelism,
            )
        };
        dst.assign(&dst_padded.slice(ndarray::s![..m, ..n]));
    }

    unsafe fn call(
        m: usize,
        n: usize,
        k: usize,
        lhs: ndarray::ArrayView2<'_, f32>,
        rhs: ndarray::ArrayView2<'_, f32>,
        dst: &mut ArrayViewMut2<'_, f32>,
        parallelism: Parallelism,
    ) {
        let (dst_rs, dst_cs) = (dst.strides()[0], dst.strides()[1]);
        let (lhs_rs, lhs_cs) = (lhs.strides()[0], lhs.strides()[1]);
        let (rhs_rs, rhs_cs) = (rhs.strides()[0], rhs.strides()[1]);
        // gemm's microkernels write columns of dst: for a row-major dst, compute the
        // transposed product dst^T = rhs^T lhs^T instead (as the `gemm` crate's front end
        // does; 3.5x faster here). Every element gets the same value either way.
        let (m, n, dst_rs, dst_cs, lhs, lhs_rs, lhs_cs, rhs, rhs_rs, rhs_cs) =
            if dst_cs.abs() < dst_rs.abs() {
                (
                    n,
                    m,
                    dst_cs,
                    dst_rs,
                    rhs.as_ptr(),
                    rhs_cs,
                    rhs_rs,
                    lhs.as_ptr(),
                    lhs_cs,
                    lhs_rs,
                )
            } else {
                (
                    m,
                    n,
                    dst_rs,
                    dst_cs,
                    lhs.as_ptr(),
                    lhs_rs,
                    lhs_cs,
                    rhs.as_ptr(),
                    rhs_rs,
                    rhs_cs,
                )
            };
        // dst := 0 * dst + 1 * lhs rhs, without reading dst.
        unsafe {
            gemm_f32::gemm::f32::get_gemm_fn()(
                m,
                n,
                k,
                dst.as_mut_ptr(),
                dst_cs,
                dst_rs,
                false,
                lhs,
                lhs_cs,
                lhs_rs,
                rhs,
                rhs_cs,
                rhs_rs,
                0.0,
                1.0,
                false,
                false,
                false,
                parallelism,
            )
        }
    }
}

#[derive(Debug, PartialEq)]
struct Strides {
    strides: Vec<usize>,
}
impl Strides {
    fn new(strides: Vec<usize>) -> Self {
        Strides { strides }
    }

    fn unflatten(&self, linear_index: usize) -> Vec<usize> {
        let mut coord = Vec::with_capacity(self.strides.len());
        let mut rem = linear_index;
        for stride in self.strides.iter() {
            coord.push(rem / stride);
            rem %= stride;
        }
        coord
    }

    fn flatten(&self, index: &Vec<usize>) -> usize {
        assert_eq!(self.strides.len(), index.len());
        self.strides
            .iter()
            .zip(index)
            .map(|(stride, index)| stride * index)
            .sum()
    }
}

/// Compute the (broadcasted) output shape of matrix multiplication, along with strides for
/// the non-matrix dimensions of all arrays.
///
/// # Arguments
/// * `lsh`: Shape of the first (left-hand) matrix multiplication argument.
/// * `rsh`: Shape of the second (right-hand) matrix multiplication argument.
///
/// # Panics
/// * If `D` is not at least 2.
/// * If the matrix multiplication dimensions (last 2) are incompatible.
/// * If any other dimension is not the same for both tensors, or equal to 1. (Any dimension where
///   one dim is equal to 1 is broadcast.)
fn output_shape(lsh: &[usize], rsh: &[usize]) -> (Shape, Strides, Strides, Strides) {
    let ndims = lsh.num_dims();
    if ndims < 2 {
        panic!("Matrix multiplication requires an array with at least 2 dimensions.");
    }

    // Fetch matrix dimensions and check compatibility.
    let l_rows = lsh[ndims - 2];
    let l_cols = lsh[ndims - 1];
    let r_rows = rsh[ndims - 2];
    let r_cols = rsh[ndims - 1];
    if l_cols != r_rows {
        panic!("Dimensions are incompatible for matrix multiplication.");
    }
    // Set matrix dimensions of the output shape.
    let mut osh = vec![0; ndims];
    osh[ndims - 2] = l_rows;
    osh[ndims - 1] = r_cols;

    // Set other array dimensions, broadcasting as necessary.
    // Compute the strides inline.
    let mut cur_l_stride: usize = 1;
    let mut cur_r_stride: usize = 1;
    let mut cur_o_stride: usize = 1;
    let mut l_strides = Vec::with_capacity(ndims - 2);
    let mut r_strides = Vec::with_capacity(ndims - 2);
    let mut o_strides = Vec::with_capacity(ndims - 2);
    for i in (0..ndims - 2).rev() {
        let l_dim = lsh[i];
        let r_dim = rsh[i];

        // Compatible dimensions are:
        //   1. Both dimensions are equal.
        //   2. One of the dimensions is equal to 1.
        let o_dim: usize;
        if l_dim == r_dim {
            o_dim = l_dim; // both dimensions are equal
            l_strides.push(cur_l_stride);
            r_strides.push(cur_r_stride);
        } else if l_dim == 1 {
            o_dim = r_dim; // broadcast the left
            l_strides.push(0);
            r_strides.push(cur_r_stride);
        } else if r_dim == 1 {
            o_dim = l_dim; // broadcast the right
            l_strides.push(cur_l_stride);
            r_strides.push(0);
        } else {
            panic!("Dimensions differ and cannot be broadcasted.");
        }
        osh[i] = o_dim;
        o_strides.push(cur_o_stride);
        cur_o_stride *= o_dim;

        cur_l_stride *= l_dim;
        cur_r_stride *= r_dim;
    }
    l_strides.reverse();
    r_strides.reverse();
    o_strides.reverse();

    (
        Shape::from(osh),
        Strides::new(l_strides),
        Strides::new(r_strides),
        Strides::new(o_strides),
    )
}

pub(crate) fn cross<E: NdArrayElement>(
    lhs: SharedArray<E>,
    rhs: SharedArray<E>,
    dim: usize,
) -> SharedArray<E> {
    let shape_lhs = lhs.shape();
    let shape_rhs = rhs.shape();
    let ndims = shape_lhs.num_dims();

    // Broadcast the shapes except along dim
    let mut broadcast_shape = vec![0; ndims];
    for i in 0..ndims {
        if i == dim {
            broadcast_shape[i] = shape_lhs[i]; // already checked to be 3
        } else {
            let l = shape_lhs[i];
            let r = shape_rhs[i];
            if l == r {
                broadcast_shape[i] = l;
            } else if l == 1 {
                broadcast_shape[i] = r;
            } else if r == 1 {
                broadcast_shape[i] = l;
            } else {
                panic!("Tensors are not broadcastable along dimension {}", i);
            }
        }
    }

    // Broadcast lhs and rhs
    let lhs_broadcast = if shape_lhs == broadcast_shape.as_slice() {
        lhs
    } else {
        NdArrayOps::expand(lhs, Shape::from(broadcast_shape.clone()))
    };
    let rhs_broadcast = if shape_rhs == broadcast_shape.as_slice() {
        rhs
    } else {
        NdArrayOps::expand(rhs, Shape::from(broadcast_shape.clone()))
    };

    // Now, move dim to the last dimension
    let mut perm = (0..ndims).collect::<Vec<_>>();
    perm.remove(dim);
    perm.push(dim);

    let lhs_permuted = NdArrayOps::permute(lhs_broadcast, &perm);
    let rhs_permuted = NdArrayOps::permute(rhs_broadcast, &perm);

    // Reshape to (*, 3)
    let total_elements = lhs_permuted.shape().num_elements();
    let batch_size = total_elements / 3;
    let lhs_reshaped = NdArrayOps::reshape(lhs_permuted, Shape::new([batch_size, 3]));
    let rhs_reshaped = NdArrayOps::reshape(rhs_permuted, Shape::new([batch_size, 3]));

    // Compute cross product
    let mut result = ndarray::ArrayD::<E>::zeros(IxDyn(&[batch_size, 3]));
    for i in 0..batch_size {
        let a1 = lhs_reshaped[IxDyn(&[i, 0])];
        let a2 = lhs_reshaped[IxDyn(&[i, 1])];
        let a3 = lhs_reshaped[IxDyn(&[i, 2])];
        let b1 = rhs_reshaped[IxDyn(&[i, 0])];
        let b2 = rhs_reshaped[IxDyn(&[i, 1])];
        let b3 = rhs_reshaped[IxDyn(&[i, 2])];
        result[IxDyn(&[i, 0])] = a2.mul(b3).sub(a3.mul(b2));
        result[IxDyn(&[i, 1])] = a3.mul(b1).sub(a1.mul(b3));
        result[IxDyn(&[i, 2])] = a1.mul(b2).sub(a2.mul(b1));
    }

    let result_shared = result.into_shared();

    // Reshape back to the broadcast shape with dim at the end
    let mut result_shape = broadcast_shape;
    result_shape.remove(dim);
    result_shape.push(3);
    let result_reshaped = NdArrayOps::reshape(result_shared, Shape::from(result_shape));

    // Permute back
    let mut inv_perm = vec![0; ndims];
    for (i, &p) in perm.iter().enumerate() {
        inv_perm[p] = i;
    }
    NdArrayOps::permute(result_reshaped, &inv_perm)
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Strides {
        fn empty() -> Self {
            Strides {
                strides: Vec::with_capacity(0),
            }
        }
    }

    #[test]
    fn test_output_shape() {
        // plain matrix multiply
        assert_eq!(
            output_shape(&[5, 3], &[3, 7]),
            (
                Shape::from([5, 7]),
                Strides::empty(),
                Strides::empty(),
                Strides::empty()
            )
        );
        // matrix multiply with one extra stack dimension
        assert_eq!(
            output_shape(&[4, 5, 3], &[4, 3, 7]),
            (
                Shape::from([4, 5, 7]),
                Strides::new(vec![1]),
                Strides::new(vec![1]),
                Strides::new(vec![1])
            )
        );
        // rank 3, broadcast left
        assert_eq!(
            output_shape(&[1, 5, 3], &[4, 3, 7]),
            (
                Shape::from([4, 5, 7]),
                Strides::new(vec![0]),
                Strides::new(vec![1]),
                Strides::new(vec![1])
            )
        );
        // rank 3, broadcast right
        assert_eq!(
            output_shape(&[4, 5, 3], &[1, 3, 7]),
            (
                Shape::from([4, 5, 7]),
                Strides::new(vec![1]),
                Strides::new(vec![0]),
                Strides::new(vec![1])
            )
        );
        // rank 4, multi broadcast
        assert_eq!(
            output_shape(&[1, 4, 5, 3], &[8, 1, 3, 7]),
            (
                Shape::from([8, 4, 5, 7]),
                Strides::new(vec![0, 1]),
                Strides::new(vec![1, 0]),
                Strides::new(vec![4, 1])
            )
        );
        // rank 5, multi-broadcast
        assert_eq!(
            output_shape(&[1, 3, 4, 5, 3], &[8, 3, 1, 3, 7]),
            (
                Shape::from([8, 3, 4, 5, 7]),
                Strides::new(vec![0, 4, 1]),
                Strides::new(vec![3, 1, 0]),
                Strides::new(vec![12, 4, 1])
            )
        )
    }

    #[test]
    #[should_panic(
        expected = "Matrix multiplication requires an array with at least 2 dimensions."
    )]
    fn test_output_shape_too_small() {
        output_shape(&[4], &[4]);
    }

    #[test]
    #[should_panic(expected = "Dimensions are incompatible for matrix multiplication.")]
    fn test_output_shape_bad_matrix_dims() {
        output_shape(&[5, 3], &[4, 7]);
    }

    #[test]
    #[should_panic(expected = "Dimensions differ and cannot be broadcasted.")]
    fn test_output_shape_non_broadcast() {
        output_shape(&[4, 5, 3], &[2, 3, 7]);
    }
}
