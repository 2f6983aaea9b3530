//! Pillow-exact image resampling.
//!
//! A from-scratch Rust reimplementation of the arithmetic in Pillow's `src/libImaging/Resample.c`
//! for 8-bit images, so that `Image.resize(size, resample=...)` on an `RGB` (or `L`) image is
//! reproduced byte for byte. Qwen2-VL's (slow) image processor in transformers resizes with
//! `PIL.Image.resize(..., resample=BICUBIC)`, so this is what makes our `pixel_values` match.
//!
//! How Pillow resamples (and what this module mirrors exactly):
//! * The resize is separable: a horizontal pass into a temporary image, then a vertical pass.
//!   The horizontal pass runs first whenever it is needed, and only over the source rows the
//!   vertical pass will read. A pass whose output size equals its input size is skipped (the
//!   "box" is always the full image here); if both are skipped the image is copied.
//! * Per output pixel the filter is centred at `(i + 0.5) * scale` in source coordinates, with
//!   `scale = in_size / out_size`; on downscaling the support is widened by `scale` (antialias).
//!   Window bounds are rounded with a C `(int)` cast, weights are evaluated in `f64`, normalised
//!   to sum to one and then converted to fixed point with `PRECISION_BITS = 22` fractional bits
//!   (rounded half away from zero, truncating C cast).
//! * Each pass accumulates `pixel * weight` in a 32-bit integer starting at `1 << 21` (for
//!   rounding), shifts right by 22 and clamps to `0..=255`: intermediate results are rounded
//!   and clipped to `u8` between the two passes.

use image::{GrayImage, RgbImage};

/// Fractional bits of the fixed-point weights (`32 - 8 - 2`).
// Pillow: Resample.c PRECISION_BITS
const PRECISION_BITS: u32 = 32 - 8 - 2;

/// The resampling filters of Pillow (`PIL.Image.Resampling`), except `NEAREST`, which Pillow
/// implements with a different (affine) code path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    /// `Resampling.BOX` (support 0.5).
    Box,
    /// `Resampling.BILINEAR` (triangle, support 1).
    Bilinear,
    /// `Resampling.HAMMING` (Hamming-windowed sinc, support 1).
    Hamming,
    /// `Resampling.BICUBIC` (Keys cubic with `a = -0.5`, support 2).
    Bicubic,
    /// `Resampling.LANCZOS` (3-lobed Lanczos, support 3).
    Lanczos,
}

impl Filter {
    /// The filter's support radius at scale 1.
    // Pillow: Resample.c `static struct filter BOX/BILINEAR/HAMMING/BICUBIC/LANCZOS`
    pub fn support(self) -> f64 {
        match self {
            Filter::Box => 0.5,
            Filter::Bilinear | Filter::Hamming => 1.0,
            Filter::Bicubic => 2.0,
            Filter::Lanczos => 3.0,
        }
    }

    /// Evaluates the filter kernel at `x` exactly as Pillow's C functions do (in `f64`).
    pub fn eval(self, x: f64) -> f64 {
        match self {
            // Pillow: Resample.c box_filter
            Filter::Box => {
                if x > -0.5 && x <= 0.5 {
                    1.0
                } else {
                    0.0
                }
            }
            // Pillow: Resample.c bilinear_filter
            Filter::Bilinear => {
                let x = x.abs();
                if x < 1.0 { 1.0 - x } else { 0.0 }
            }
            // Pillow: Resample.c hamming_filter
            Filter::Hamming => {
                let x = x.abs();
                if x == 0.0 {
                    1.0
                } else if x >= 1.0 {
                    0.0
                } else {
                    let x = x * std::f64::consts::PI;
                    // The window constants are C `float` literals (0.54f, 0.46f).
                    x.sin() / x * (f64::from(0.54f32) + f64::from(0.46f32) * x.cos())
                }
            }
            // Pillow: Resample.c bicubic_filter (a = -0.5)
            Filter::Bicubic => {
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
            // Pillow: Resample.c lanczos_filter
            Filter::Lanczos => {
                if (-3.0..3.0).contains(&x) {
                    sinc(x) * sinc(x / 3.0)
                } else {
                    0.0
                }
            }
        }
    }
}

// Pillow: Resample.c sinc_filter
fn sinc(x: f64) -> f64 {
    if x == 0.0 {
        1.0
    } else {
        let x = x * std::f64::consts::PI;
        x.sin() / x
    }
}

/// Fixed-point weights of one resampling pass: for every output index, the first source index
/// and the number of taps, plus `ksize` weights (only the first `count` are used).
struct Coeffs {
    ksize: usize,
    /// `(first source index, number of taps)` per output index.
    bounds: Vec<(usize, usize)>,
    /// `out_size * ksize` fixed-point weights.
    weights: Vec<i32>,
}

/// Computes the filter window and weights for resampling `in_size` samples (the box
/// `in0..in1`) to `out_size`, then converts them to fixed point.
// Pillow: Resample.c precompute_coeffs + normalize_coeffs_8bpc
fn precompute_coeffs(
    in_size: usize,
    in0: f32,
    in1: f32,
    out_size: usize,
    filter: Filter,
) -> Coeffs {
    // The box difference is a C float subtraction, then promoted to double.
    let scale = f64::from(in1 - in0) / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = filter.support() * filterscale;
    let ksize = support.ceil() as usize * 2 + 1;
    let ss = 1.0 / filterscale;

    let mut bounds = Vec::with_capacity(out_size);
    let mut weights = vec![0i32; out_size * ksize];
    let mut k = vec![0f64; ksize];
    for (xx, row) in weights.chunks_exact_mut(ksize).enumerate() {
        let center = f64::from(in0) + (xx as f64 + 0.5) * scale;
        // C `(int)` casts truncate toward zero; negative values are clamped to 0 anyway.
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
        let count = xmax.saturating_sub(xmin);
        let mut ww = 0.0f64;
        for (x, kx) in k.iter_mut().enumerate().take(count) {
            // Same operation order as C: ((x + xmin) - center + 0.5) * ss.
            let w = filter.eval(((x + xmin) as f64 - center + 0.5) * ss);
            *kx = w;
            ww += w;
        }
        for (x, out) in row.iter_mut().enumerate().take(count) {
            let mut w = k[x];
            if ww != 0.0 {
                w /= ww;
            }
            let fixed = w * f64::from(1u32 << PRECISION_BITS);
            // Round half away from zero with a truncating cast, as normalize_coeffs_8bpc does.
            *out = if w < 0.0 {
                (fixed - 0.5) as i32
            } else {
                (fixed + 0.5) as i32
            };
        }
        bounds.push((xmin, count));
    }
    Coeffs {
        ksize,
        bounds,
        weights,
    }
}

/// Rounds a fixed-point accumulator to `u8` (the accumulator already holds the `+0.5` bias).
// Pillow: Resample.c clip8
#[inline]
fn clip8(acc: i32) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Horizontal pass over source rows `row_offset..row_offset + out_rows` of an interleaved
/// `u8` image with `ch` channels.
// Pillow: Resample.c ImagingResampleHorizontal_8bpc
fn resample_horizontal(
    src: &[u8],
    src_w: usize,
    ch: usize,
    row_offset: usize,
    out_rows: usize,
    c: &Coeffs,
) -> Vec<u8> {
    let out_w = c.bounds.len();
    let mut out = vec![0u8; out_w * out_rows * ch];
    let mut acc = vec![0i32; ch];
    for yy in 0..out_rows {
        let src_row = &src[(yy + row_offset) * src_w * ch..(yy + row_offset + 1) * src_w * ch];
        let out_row = &mut out[yy * out_w * ch..(yy + 1) * out_w * ch];
        for (xx, &(xmin, count)) in c.bounds.iter().enumerate() {
            let k = &c.weights[xx * c.ksize..xx * c.ksize + count];
            acc.fill(1 << (PRECISION_BITS - 1));
            for (x, &w) in k.iter().enumerate() {
                let px = &src_row[(xmin + x) * ch..(xmin + x + 1) * ch];
                for (a, &p) in acc.iter_mut().zip(px) {
                    *a = a.wrapping_add(i32::from(p).wrapping_mul(w));
                }
            }
            for (o, &a) in out_row[xx * ch..(xx + 1) * ch].iter_mut().zip(&acc) {
                *o = clip8(a);
            }
        }
    }
    out
}

/// Vertical pass of an interleaved `u8` image `w` pixels wide with `ch` channels; `c.bounds`
/// index rows of `src`.
// Pillow: Resample.c ImagingResampleVertical_8bpc
fn resample_vertical(src: &[u8], w: usize, ch: usize, c: &Coeffs) -> Vec<u8> {
    let out_h = c.bounds.len();
    let stride = w * ch;
    let mut out = vec![0u8; stride * out_h];
    for (yy, &(ymin, count)) in c.bounds.iter().enumerate() {
        let k = &c.weights[yy * c.ksize..yy * c.ksize + count];
        let out_row = &mut out[yy * stride..(yy + 1) * stride];
        for (i, o) in out_row.iter_mut().enumerate() {
            let mut acc: i32 = 1 << (PRECISION_BITS - 1);
            for (y, &wt) in k.iter().enumerate() {
                let p = src[(ymin + y) * stride + i];
                acc = acc.wrapping_add(i32::from(p).wrapping_mul(wt));
            }
            *o = clip8(acc);
        }
    }
    out
}

/// Resizes an interleaved 8-bit image (`ch` channels per pixel, row-major) from
/// `src_w x src_h` to `new_w x new_h` exactly as Pillow's `Image.resize(size, filter)` does for
/// modes `L`, `RGB`, `RGBX`, `CMYK` (channels are independent; note that Pillow premultiplies
/// alpha for `RGBA`/`LA` before resampling, which this function does not do).
///
/// Returns an empty buffer when either output dimension is zero.
// Pillow: Resample.c ImagingResampleInner
pub fn resize_interleaved_u8(
    src: &[u8],
    src_w: usize,
    src_h: usize,
    ch: usize,
    new_w: usize,
    new_h: usize,
    filter: Filter,
) -> Vec<u8> {
    assert_eq!(
        src.len(),
        src_w * src_h * ch,
        "source buffer size does not match its dimensions"
    );
    if new_w == 0 || new_h == 0 || ch == 0 {
        return Vec::new();
    }
    if src_w == 0 || src_h == 0 {
        // Nothing to sample from; Pillow refuses this too (its window would be empty).
        return vec![0u8; new_w * new_h * ch];
    }
    let need_horizontal = new_w != src_w;
    let need_vertical = new_h != src_h;

    // The vertical coefficients are computed first: they decide which source rows the
    // horizontal pass has to produce.
    let mut vert = precompute_coeffs(src_h, 0.0, src_h as f32, new_h, filter);
    let ybox_first = vert.bounds[0].0;
    let (last_min, last_count) = vert.bounds[new_h - 1];
    let ybox_last = last_min + last_count;

    let mut current: Option<Vec<u8>> = None;
    let mut cur_w = src_w;
    if need_horizontal {
        let horiz = precompute_coeffs(src_w, 0.0, src_w as f32, new_w, filter);
        for b in &mut vert.bounds {
            b.0 -= ybox_first;
        }
        current = Some(resample_horizontal(
            src,
            src_w,
            ch,
            ybox_first,
            ybox_last - ybox_first,
            &horiz,
        ));
        cur_w = new_w;
    }
    if need_vertical {
        let input = current.as_deref().unwrap_or(src);
        current = Some(resample_vertical(input, cur_w, ch, &vert));
    }
    current.unwrap_or_else(|| src.to_vec())
}

/// Resizes an RGB image with Pillow's exact `Image.resize((new_w, new_h), resample=filter)`.
pub fn resize_rgb_pil(src: &RgbImage, new_w: u32, new_h: u32, filter: Filter) -> RgbImage {
    let (w, h) = src.dimensions();
    let out = resize_interleaved_u8(
        src.as_raw(),
        w as usize,
        h as usize,
        3,
        new_w as usize,
        new_h as usize,
        filter,
    );
    RgbImage::from_raw(new_w, new_h, out).expect("resampled buffer has the output size")
}

/// Resizes a grayscale (`L`) image with Pillow's exact `Image.resize((new_w, new_h), filter)`.
pub fn resize_gray_pil(src: &GrayImage, new_w: u32, new_h: u32, filter: Filter) -> GrayImage {
    let (w, h) = src.dimensions();
    let out = resize_interleaved_u8(
        src.as_raw(),
        w as usize,
        h as usize,
        1,
        new_w as usize,
        new_h as usize,
        filter,
    );
    GrayImage::from_raw(new_w, new_h, out).expect("resampled buffer has the output size")
}

/// Resizes an RGB image to `new_w x new_h` exactly as Pillow's
/// `Image.resize((new_w, new_h), resample=Image.Resampling.BICUBIC)` does, byte for byte.
pub fn resize_bicubic_pil(src: &RgbImage, new_w: u32, new_h: u32) -> RgbImage {
    resize_rgb_pil(src, new_w, new_h, Filter::Bicubic)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_is_copy() {
        let img = RgbImage::from_fn(5, 4, |x, y| image::Rgb([x as u8 * 40, y as u8 * 50, 7]));
        assert_eq!(resize_bicubic_pil(&img, 5, 4), img);
    }

    #[test]
    fn constant_image_stays_constant() {
        let img = RgbImage::from_pixel(37, 23, image::Rgb([255, 0, 128]));
        for (w, h) in [(10, 10), (74, 5), (3, 60), (1, 1)] {
            let out = resize_bicubic_pil(&img, w, h);
            assert!(out.pixels().all(|p| p.0 == [255, 0, 128]), "{w}x{h}");
        }
    }

    #[test]
    fn weights_sum_to_one_in_fixed_point() {
        for (i, o) in [(100, 7), (7, 100), (28, 56), (1000, 999)] {
            let c = precompute_coeffs(i, 0.0, i as f32, o, Filter::Bicubic);
            for (xx, &(_, n)) in c.bounds.iter().enumerate() {
                let s: i64 = c.weights[xx * c.ksize..xx * c.ksize + n]
                    .iter()
                    .map(|&w| i64::from(w))
                    .sum();
                assert!(
                    (s - (1 << PRECISION_BITS)).abs() <= n as i64,
                    "{i}->{o} at {xx}: {s}"
                );
            }
        }
    }
}
