//! Pillow-equivalent 8-bit resampling: `Image.resize(size, BICUBIC)` for images and
//! `Image.resize(size, NEAREST)` for masks (spec 7.1).
//!
//! The reference feeds MVFA with images resized by Pillow, so the port reproduces Pillow's
//! integer arithmetic bit for bit rather than using a generic bicubic:
//! - `libImaging/Resample.c`: Keys cubic (a = -0.5), support 2 scaled by the downscale factor
//!   (antialiasing), coefficients normalised to sum 1 then quantised to 22 fractional bits
//!   (`PRECISION_BITS = 32 - 8 - 2`), accumulation from a rounding bias of `1 << 21`, clip to
//!   0..=255 after each pass. Up to Pillow 12.1 (the MVFA reference era) the horizontal pass
//!   runs first, over only the rows the vertical pass will read; Pillow 12.2 and 13.0 run the
//!   vertical pass first for some shapes ([`PillowOrder`]). A pass whose size is unchanged is
//!   skipped; a same-size resize is a copy.
//! - `_imaging.c` `_resize` + `Geometry.c` `ImagingScaleAffine` for NEAREST: the source
//!   coordinate starts at `scale / 2` and is *accumulated* by `+= scale` per output pixel (in
//!   f64), then truncated. Accumulating (instead of computing `(dst + 0.5) * scale`) matters
//!   where the exact product is an integer: e.g. 512 -> 240 at dst = 7 gives 15.999... in
//!   Pillow, hence source 15, not 16.
//!
//! Sizes come from images and callers: buffer lengths are computed with checked arithmetic
//! ([`Image8::byte_len`]); the passes index below the lengths of the buffers they allocated.
#![deny(clippy::arithmetic_side_effects)]
use super::image::Channels;

/// An 8-bit image, `height` rows of `width` pixels, row-major, channels interleaved
/// (`Channels::Gray`: one byte per pixel; `Channels::Rgb`: R, G, B).
///
/// This is the display-level image (after windowing) that the model input and the exports
/// consume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image8 {
    /// Pixels per row.
    pub width: u32,
    /// Rows.
    pub height: u32,
    /// Grey (1 byte per pixel) or RGB (3 bytes per pixel).
    pub channels: Channels,
    /// `width * height * channels.count()` bytes.
    pub data: Vec<u8>,
}

/// The image's buffer does not match its declared size (or the size cannot be addressed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image8SizeError {
    /// Declared pixels per row.
    pub width: u32,
    /// Declared rows.
    pub height: u32,
    /// Declared colour layout.
    pub channels: Channels,
    /// Bytes the declared size needs (`usize::MAX` when that overflows).
    pub expected: usize,
    /// Bytes the buffer has.
    pub actual: usize,
}

impl std::fmt::Display for Image8SizeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (w, h, c) = (self.width, self.height, self.channels);
        if self.expected == usize::MAX {
            write!(f, "8-bit image of {w}x{h} {c:?} is too large to address")
        } else {
            let (e, a) = (self.expected, self.actual);
            write!(f, "8-bit image of {w}x{h} {c:?} needs {e} bytes, has {a}")
        }
    }
}

impl std::error::Error for Image8SizeError {}

impl Image8 {
    /// Checked constructor: `data.len()` must be `width * height * channels`.
    pub fn new(
        width: u32,
        height: u32,
        channels: Channels,
        data: Vec<u8>,
    ) -> Result<Self, Image8SizeError> {
        let img = Image8 {
            width,
            height,
            channels,
            data,
        };
        img.check()?;
        Ok(img)
    }

    /// Bytes of a `width` x `height` image of `channels`; `None` when that overflows.
    pub fn byte_len(width: u32, height: u32, channels: Channels) -> Option<usize> {
        (width as usize)
            .checked_mul(height as usize)?
            .checked_mul(channels.count())
    }

    /// Verifies that the buffer length matches the declared shape (fields are public, so
    /// every consumer re-checks instead of trusting them).
    pub fn check(&self) -> Result<(), Image8SizeError> {
        let expected = Self::byte_len(self.width, self.height, self.channels);
        if expected != Some(self.data.len()) {
            return Err(Image8SizeError {
                width: self.width,
                height: self.height,
                channels: self.channels,
                expected: expected.unwrap_or(usize::MAX),
                actual: self.data.len(),
            });
        }
        Ok(())
    }

    /// Pillow's `convert('L')`: grey stays as is; RGB uses ITU-R 601-2 luma in Pillow's fixed
    /// point, `(R*19595 + G*38470 + B*7471 + 0x8000) >> 16` (`Convert.c`, `L24`).
    #[allow(
        clippy::arithmetic_side_effects,
        reason = "at most 255 * 65536 + 0x8000, far below u32::MAX"
    )]
    pub fn to_luma(&self) -> Image8 {
        match self.channels {
            Channels::Gray => self.clone(),
            Channels::Rgb => Image8 {
                width: self.width,
                height: self.height,
                channels: Channels::Gray,
                data: self
                    .data
                    .chunks_exact(3)
                    .map(|p| {
                        ((p[0] as u32 * 19595 + p[1] as u32 * 38470 + p[2] as u32 * 7471 + 0x8000)
                            >> 16) as u8
                    })
                    .collect(),
            },
        }
    }

    /// Pillow's `convert('RGB')` from grey: the grey level replicated into R, G and B.
    pub fn to_rgb(&self) -> Image8 {
        match self.channels {
            Channels::Rgb => self.clone(),
            Channels::Gray => Image8 {
                width: self.width,
                height: self.height,
                channels: Channels::Rgb,
                data: self.data.iter().flat_map(|&v| [v, v, v]).collect(),
            },
        }
    }
}

/// Fractional bits of Pillow's 8-bit fixed-point coefficients (`32 - 8 - 2`).
const PRECISION_BITS: u32 = 22;

/// Keys cubic convolution kernel with a = -0.5 (`bicubic_filter` in `Resample.c`; PyTorch's
/// antialiased bicubic uses the same kernel).
pub fn bicubic_filter(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// Quantised filter taps for one axis: output `i` reads `len[i]` inputs from `first[i]`
/// with weights `kk[i * ksize ..]`.
struct Coeffs {
    ksize: usize,
    first: Vec<usize>,
    len: Vec<usize>,
    kk: Vec<i32>,
}

/// `usize` holds any product of two image sides (`u32`) and a small factor: the bounds the
/// allowances below rely on.
const _: () = assert!(usize::BITS >= 64);

/// `precompute_coeffs` + `normalize_coeffs_8bpc` of `Resample.c`, for the whole-image box
/// `(0, in_size)`. Arithmetic order follows the C code so the f64 rounding is identical.
#[allow(
    clippy::arithmetic_side_effects,
    reason = "sizes are u32 sides; out_size * ksize <= 4 * in_size + 3 * out_size < 2^35"
)]
fn precompute_coeffs(in_size: usize, out_size: usize) -> Coeffs {
    const SUPPORT: f64 = 2.0;
    // The box is float in Pillow: (float)in_size - 0.0f, exact for any realistic size.
    let in0 = 0.0f32;
    let in1 = in_size as f32;
    let scale = (in1 - in0) as f64 / out_size as f64;
    let filterscale = if scale < 1.0 { 1.0 } else { scale };
    let support = SUPPORT * filterscale;
    let ksize = support.ceil() as usize * 2 + 1;
    let inv_filterscale = 1.0 / filterscale;

    let mut first = Vec::with_capacity(out_size);
    let mut len = Vec::with_capacity(out_size);
    let mut kk = vec![0i32; out_size * ksize];
    let mut k = vec![0f64; ksize];
    for xx in 0..out_size {
        let center = in0 as f64 + (xx as f64 + 0.5) * scale;
        let mut ww = 0.0f64;
        // C: (int)(center - support + 0.5), truncation toward zero, then clamp.
        let xmin = ((center - support + 0.5) as i64).max(0);
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64);
        let n = (xmax - xmin).max(0) as usize;
        for (x, kx) in k.iter_mut().enumerate().take(n) {
            let w = bicubic_filter(((x as i64 + xmin) as f64 - center + 0.5) * inv_filterscale);
            *kx = w;
            ww += w;
        }
        if ww != 0.0 {
            for kx in k.iter_mut().take(n) {
                *kx /= ww;
            }
        }
        let scale_q = (1u32 << PRECISION_BITS) as f64;
        for x in 0..n {
            let v = k[x];
            kk[xx * ksize + x] = if v < 0.0 {
                (-0.5 + v * scale_q) as i32
            } else {
                (0.5 + v * scale_q) as i32
            };
        }
        first.push(xmin as usize);
        len.push(n);
    }
    Coeffs {
        ksize,
        first,
        len,
        kk,
    }
}

/// `clip8`: drop the fractional bits (arithmetic shift) and clamp to 0..=255.
#[inline]
fn clip8(v: i32) -> u8 {
    (v >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Which separable pass Pillow runs first. The arithmetic of each pass is the same in every
/// version; only the order (hence where the intermediate 8-bit rounding happens) changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PillowOrder {
    /// Pillow up to 12.1 (the MVFA reference era, and spec 7.1): horizontal pass first, always.
    #[default]
    HorizontalFirst,
    /// Pillow 12.2 and 12.3: vertical first for very tall inputs (`in_h > 100 * in_w`) whose
    /// height shrinks (`Image.resize` splits the call in two).
    Pillow12_2,
    /// Pillow 13.0 and later: vertical first when the height shrinks by more than twice as many
    /// pixels as the width (`(in_h - out_h) > 0 && (in_h - out_h) > 2 * (in_w - out_w)`).
    Pillow13,
}

impl PillowOrder {
    #[allow(
        clippy::arithmetic_side_effects,
        reason = "sides are u32: products and differences with 100 or 2 fit in 64 bits"
    )]
    fn vertical_first(self, in_w: usize, in_h: usize, out_w: usize, out_h: usize) -> bool {
        match self {
            PillowOrder::HorizontalFirst => false,
            PillowOrder::Pillow12_2 => in_h > in_w * 100 && out_h < in_h,
            PillowOrder::Pillow13 => {
                let dy = in_h as i64 - out_h as i64;
                let dx = in_w as i64 - out_w as i64;
                dy > 0 && dy > dx * 2
            }
        }
    }
}

/// Pillow `Image.resize((out_w, out_h), Image.BICUBIC)` for an 8-bit grey or RGB image, with
/// the pass order of Pillow <= 12.1 (horizontal first), as in the MVFA reference.
///
/// Same-size input is returned unchanged (Pillow copies). Upscaling uses the unscaled kernel
/// (support 2), downscaling widens it by the factor. Errors only if the buffer does not match
/// the declared size; zero output sizes give an empty image.
pub fn resize_bicubic(img: &Image8, out_w: u32, out_h: u32) -> Result<Image8, Image8SizeError> {
    resize_bicubic_with(img, out_w, out_h, PillowOrder::HorizontalFirst)
}

/// [`resize_bicubic`] with the pass order of a given Pillow generation.
pub fn resize_bicubic_with(
    img: &Image8,
    out_w: u32,
    out_h: u32,
    order: PillowOrder,
) -> Result<Image8, Image8SizeError> {
    img.check()?;
    let (in_w, in_h) = (img.width as usize, img.height as usize);
    let (ow, oh) = (out_w as usize, out_h as usize);
    let nch = img.channels.count();
    let done = |data: Vec<u8>| Image8 {
        width: out_w,
        height: out_h,
        channels: img.channels,
        data,
    };
    if (ow, oh) == (in_w, in_h) {
        return Ok(img.clone());
    }
    let out_len = output_len(out_w, out_h, img.channels)?;
    if ow == 0 || oh == 0 || in_w == 0 || in_h == 0 {
        return Ok(done(vec![0; out_len]));
    }
    let need_h = ow != in_w;
    let need_v = oh != in_h;
    if order.vertical_first(in_w, in_h, ow, oh) {
        // Only reached when the height shrinks, so the vertical pass is needed; its output
        // (in_w x oh) is checked like the final one.
        output_len(img.width, out_h, img.channels)?;
        let data = vertical_pass(&img.data, in_w, nch, &precompute_coeffs(in_h, oh), 0);
        if !need_h {
            return Ok(done(data));
        }
        let hor = precompute_coeffs(in_w, ow);
        return Ok(done(horizontal_pass(&data, in_w, 0..oh, nch, &hor)));
    }
    let vert = precompute_coeffs(in_h, oh);
    if !need_h {
        return Ok(done(vertical_pass(&img.data, in_w, nch, &vert, 0)));
    }
    // Horizontal first, over only the rows the vertical pass reads.
    let hor = precompute_coeffs(in_w, ow);
    if !need_v {
        return Ok(done(horizontal_pass(&img.data, in_w, 0..in_h, nch, &hor)));
    }
    // oh > 0 here; a tap range ends at most at in_h. The intermediate (ow x the rows read)
    // is checked like the final image.
    let first = vert.first[0];
    let last = vert.first[oh.saturating_sub(1)].saturating_add(vert.len[oh.saturating_sub(1)]);
    let rows_read = u32::try_from(last.saturating_sub(first)).unwrap_or(u32::MAX);
    output_len(out_w, rows_read, img.channels)?;
    let data = horizontal_pass(&img.data, in_w, first..last, nch, &hor);
    Ok(done(vertical_pass(&data, ow, nch, &vert, first)))
}

/// The byte length of a `width` x `height` output, or the error saying it is too large.
fn output_len(width: u32, height: u32, channels: Channels) -> Result<usize, Image8SizeError> {
    Image8::byte_len(width, height, channels).ok_or(Image8SizeError {
        width,
        height,
        channels,
        expected: usize::MAX,
        actual: 0,
    })
}

/// `_ImagingResampleHorizontal_8bpc`: resamples rows `rows` of `src` (`src_w` pixels wide)
/// to `coeffs.first.len()` pixels; output row 0 is source row `rows.start`.
#[allow(
    clippy::arithmetic_side_effects,
    reason = "indices below src.len() and the output length, both checked by the caller"
)]
fn horizontal_pass(
    src: &[u8],
    src_w: usize,
    rows: std::ops::Range<usize>,
    nch: usize,
    coeffs: &Coeffs,
) -> Vec<u8> {
    let ow = coeffs.first.len();
    let bias = 1i32 << (PRECISION_BITS - 1);
    let mut out = vec![0u8; ow * rows.len() * nch];
    for (r, y) in rows.enumerate() {
        let line_in = &src[y * src_w * nch..][..src_w * nch];
        let line_out = &mut out[r * ow * nch..][..ow * nch];
        for xx in 0..ow {
            let k = &coeffs.kk[xx * coeffs.ksize..][..coeffs.len[xx]];
            let xmin = coeffs.first[xx];
            for c in 0..nch {
                let mut ss = bias;
                for (x, &kx) in k.iter().enumerate() {
                    ss = ss.wrapping_add((line_in[(x + xmin) * nch + c] as i32).wrapping_mul(kx));
                }
                line_out[xx * nch + c] = clip8(ss);
            }
        }
    }
    out
}

/// `_ImagingResampleVertical_8bpc`: resamples the columns of `src` (`width` pixels wide) to
/// `coeffs.first.len()` rows; `src` row 0 is source row `row_offset`.
#[allow(
    clippy::arithmetic_side_effects,
    reason = "indices below src.len() and the output length, both checked by the caller"
)]
fn vertical_pass(
    src: &[u8],
    width: usize,
    nch: usize,
    coeffs: &Coeffs,
    row_offset: usize,
) -> Vec<u8> {
    let oh = coeffs.first.len();
    let bias = 1i32 << (PRECISION_BITS - 1);
    let stride = width * nch;
    let mut out = vec![0u8; stride * oh];
    for yy in 0..oh {
        let k = &coeffs.kk[yy * coeffs.ksize..][..coeffs.len[yy]];
        let ymin = coeffs.first[yy] - row_offset;
        let line_out = &mut out[yy * stride..][..stride];
        for (i, o) in line_out.iter_mut().enumerate() {
            let mut ss = bias;
            for (y, &ky) in k.iter().enumerate() {
                ss = ss.wrapping_add((src[(y + ymin) * stride + i] as i32).wrapping_mul(ky));
            }
            *o = clip8(ss);
        }
    }
    out
}

/// Source index per output index of Pillow's NEAREST resize (`ImagingScaleAffine`): the
/// coordinate starts at `scale * 0.5` and accumulates `+= scale`; negative or out-of-range
/// coordinates map to `None` (Pillow leaves those pixels 0).
fn nearest_indices(in_size: usize, out_size: usize) -> Vec<Option<usize>> {
    // a[0] = (double)(box[2] - box[0]) / xsize with a float box.
    let a = (in_size as f32 - 0.0f32) as f64 / out_size as f64;
    let mut xo = 0.0f64 + a * 0.5;
    (0..out_size)
        .map(|_| {
            let xin = if xo < 0.0 { -1 } else { xo as i64 };
            xo += a;
            (xin >= 0 && (xin as usize) < in_size).then_some(xin as usize)
        })
        .collect()
}

/// Pillow `Image.resize((out_w, out_h), Image.NEAREST)` for an 8-bit grey or RGB image.
/// Same-size input is returned unchanged.
pub fn resize_nearest(img: &Image8, out_w: u32, out_h: u32) -> Result<Image8, Image8SizeError> {
    img.check()?;
    let (in_w, in_h) = (img.width as usize, img.height as usize);
    let (ow, oh) = (out_w as usize, out_h as usize);
    let nch = img.channels.count();
    if (ow, oh) == (in_w, in_h) {
        return Ok(img.clone());
    }
    let mut out = vec![0u8; output_len(out_w, out_h, img.channels)?];
    if ow == 0 || nch == 0 {
        return Ok(Image8 {
            width: out_w,
            height: out_h,
            channels: img.channels,
            data: out,
        });
    }
    let xs = nearest_indices(in_w, ow);
    let ys = nearest_indices(in_h, oh);
    // Rows of the checked input and output buffers; pixels of `nch` bytes within them.
    let rows_in: Vec<&[u8]> = img
        .data
        .chunks_exact(in_w.max(1).saturating_mul(nch))
        .collect();
    for (row_out, ysrc) in out.chunks_exact_mut(ow.saturating_mul(nch)).zip(&ys) {
        let Some(line_in) = ysrc.and_then(|y| rows_in.get(y)) else {
            continue;
        };
        let pixels_in: Vec<&[u8]> = line_in.chunks_exact(nch).collect();
        for (px_out, xsrc) in row_out.chunks_exact_mut(nch).zip(&xs) {
            if let Some(px_in) = xsrc.and_then(|x| pixels_in.get(x)) {
                px_out.copy_from_slice(px_in);
            }
        }
    }
    Ok(Image8 {
        width: out_w,
        height: out_h,
        channels: img.channels,
        data: out,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coefficients_sum_to_one_in_fixed_point() {
        for (i, o) in [(512, 240), (100, 240), (17, 240), (1024, 240), (241, 240)] {
            let c = precompute_coeffs(i, o);
            for xx in 0..o {
                let s: i64 = c.kk[xx * c.ksize..][..c.len[xx]]
                    .iter()
                    .map(|&v| v as i64)
                    .sum();
                // Each tap is rounded separately: the sum is 1 within a few ulps.
                assert!(
                    (s - (1 << PRECISION_BITS)).abs() <= c.len[xx] as i64,
                    "{i}->{o}"
                );
            }
        }
    }

    #[test]
    fn nearest_accumulates_like_pillow() {
        // (7 + 0.5) * 512 / 240 = 16 exactly, but Pillow's accumulated coordinate is just
        // below 16.
        let idx = nearest_indices(512, 240);
        assert_eq!(idx[7], Some(15));
        assert_eq!(idx[0], Some(1));
        assert_eq!(idx[239], Some(510));
    }

    #[test]
    fn constant_image_stays_constant() {
        let img = Image8::new(37, 11, Channels::Rgb, vec![200; 37 * 11 * 3]).unwrap();
        for (w, h) in [(240, 240), (5, 3), (37, 240)] {
            let out = resize_bicubic(&img, w, h).unwrap();
            assert!(out.data.iter().all(|&v| v == 200));
        }
    }

    #[test]
    fn sizes_that_overflow_are_errors_not_panics() {
        let huge = Image8 {
            width: u32::MAX,
            height: u32::MAX,
            channels: Channels::Rgb,
            data: Vec::new(),
        };
        let e = huge.check().unwrap_err();
        assert_eq!(e.expected, usize::MAX);
        assert!(e.to_string().ends_with("is too large to address"), "{e}");
        assert!(resize_nearest(&huge, 2, 2).is_err());
        let small = Image8::new(3, 2, Channels::Rgb, vec![9; 18]).unwrap();
        for e in [
            resize_bicubic(&small, u32::MAX, u32::MAX).unwrap_err(),
            resize_nearest(&small, u32::MAX, u32::MAX).unwrap_err(),
        ] {
            assert!(e.to_string().contains("too large"), "{e}");
        }
    }

    #[test]
    fn bad_buffer_is_an_error() {
        let img = Image8 {
            width: 4,
            height: 4,
            channels: Channels::Gray,
            data: vec![0; 15],
        };
        let err = resize_bicubic(&img, 2, 2).unwrap_err();
        assert_eq!(err.expected, 16);
        assert!(resize_nearest(&img, 2, 2).is_err());
    }
}
