//! LLaVA-NeXT's anyres image preprocessing, matching transformers 4.47.1
//! `LlavaNextImageProcessor` (the PIL-based one) and the token count of
//! `LlavaNextProcessor._get_number_of_features`.
//!
//! 1. RGB (PIL `convert("RGB")`: alpha dropped), then `select_best_resolution` picks the grid
//!    resolution that keeps the most of the image.
//! 2. The image is resized to fit that resolution keeping its aspect (f64 `ceil`, as Python),
//!    padded with black symmetrically (an odd remainder leaves the canvas one pixel short, as
//!    transformers does), and cut into `crop × crop` patches in raster order.
//! 3. The whole image squashed to `shortest_edge²` goes first, then the patches; each is
//!    resized to `shortest_edge` on its short side, centre-cropped to the crop size, rescaled
//!    and normalised (CLIP mean/std), channel first.

use image::{DynamicImage, RgbImage};
use serde::Deserialize;

use crate::models::image::{
    ImageOptions, ImagePreprocessor, ImageProcessorError, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD,
    ProcessedImage, convert_to_rgb, rescale_normalize_planes,
};
use crate::models::resample::{Filter, resize_rgb_pil};

/// Settings from `preprocessor_config.json` (transformers `LlavaNextImageProcessor`), plus the
/// processor's token rules.
#[derive(Debug, Clone, PartialEq)]
pub struct AnyresConfig {
    /// Grid resolutions `[height, width]`.
    pub pinpoints: Vec<[usize; 2]>,
    /// `size.shortest_edge` (336).
    pub shortest_edge: usize,
    /// `crop_size` (336), also the side of the grid patches.
    pub crop: usize,
    /// PIL resampling filter (bicubic).
    pub filter: Filter,
    /// Whether crops are resized (`do_resize`).
    pub do_resize: bool,
    /// Whether crops are centre-cropped (`do_center_crop`).
    pub do_center_crop: bool,
    /// Rescale factor when `do_rescale`.
    pub rescale: Option<f64>,
    /// Mean and std when `do_normalize`.
    pub normalize: Option<([f32; 3], [f32; 3])>,
    /// The vision tower's patch size (for the token count).
    pub patch_size: usize,
    /// `num_additional_image_tokens` of `processor_config.json` (0 unless set).
    pub num_additional_image_tokens: usize,
    /// `vision_feature_select_strategy` (`default` drops the CLS token).
    pub strategy_default: bool,
}

#[derive(Deserialize, Default)]
struct RawSize {
    shortest_edge: Option<usize>,
    height: Option<usize>,
    width: Option<usize>,
}

#[derive(Deserialize, Default)]
struct RawPreprocessor {
    image_grid_pinpoints: Option<Vec<[usize; 2]>>,
    size: Option<RawSize>,
    crop_size: Option<RawSize>,
    resample: Option<u32>,
    do_resize: Option<bool>,
    do_center_crop: Option<bool>,
    do_rescale: Option<bool>,
    rescale_factor: Option<f64>,
    do_normalize: Option<bool>,
    image_mean: Option<[f32; 3]>,
    image_std: Option<[f32; 3]>,
    do_convert_rgb: Option<bool>,
}

impl AnyresConfig {
    /// Reads `preprocessor_config.json` text; missing keys take transformers' defaults
    /// (CLIP mean/std, bicubic, 336) with the model's pinpoints and tower patch size.
    pub fn from_json(
        text: Option<&str>,
        model_pinpoints: &[[usize; 2]],
        patch_size: usize,
        strategy_default: bool,
        num_additional_image_tokens: usize,
    ) -> Result<Self, String> {
        let raw: RawPreprocessor = match text {
            Some(t) => serde_json::from_str(t).map_err(|e| e.to_string())?,
            None => RawPreprocessor::default(),
        };
        let filter = match raw.resample.unwrap_or(3) {
            1 => Filter::Lanczos,
            2 => Filter::Bilinear,
            3 => Filter::Bicubic,
            4 => Filter::Box,
            5 => Filter::Hamming,
            other => return Err(format!("resample {other} is not supported")),
        };
        if raw.do_convert_rgb == Some(false) {
            return Err("do_convert_rgb = false is not supported".into());
        }
        let size = raw.size.unwrap_or_default();
        let shortest_edge = size
            .shortest_edge
            .or(size.height.zip(size.width).map(|(h, w)| h.min(w)))
            .unwrap_or(336);
        let crop_size = raw.crop_size.unwrap_or_default();
        let crop = crop_size.height.or(crop_size.shortest_edge).unwrap_or(336);
        if shortest_edge == 0 || crop == 0 || patch_size == 0 {
            return Err("size, crop_size and the patch size must be positive".into());
        }
        let pinpoints = raw
            .image_grid_pinpoints
            .unwrap_or_else(|| model_pinpoints.to_vec());
        check_sizes(shortest_edge, crop, &pinpoints)?;
        Ok(Self {
            pinpoints,
            shortest_edge,
            crop,
            filter,
            do_resize: raw.do_resize.unwrap_or(true),
            do_center_crop: raw.do_center_crop.unwrap_or(true),
            rescale: raw
                .do_rescale
                .unwrap_or(true)
                .then(|| raw.rescale_factor.unwrap_or(1.0 / 255.0)),
            normalize: raw.do_normalize.unwrap_or(true).then(|| {
                (
                    raw.image_mean.unwrap_or(OPENAI_CLIP_MEAN),
                    raw.image_std.unwrap_or(OPENAI_CLIP_STD),
                )
            }),
            patch_size,
            num_additional_image_tokens,
            strategy_default,
        })
    }

    /// The number of image tokens an image of `height × width` takes in the prompt.
    // transformers: LlavaNextProcessor._get_number_of_features / _get_unpadded_features
    pub fn token_count(&self, height: usize, width: usize) -> usize {
        let [bh, bw] = select_best_resolution([height, width], &self.pinpoints);
        let (scale_h, scale_w) = (bh / self.crop, bw / self.crop);
        let patches = self.crop / self.patch_size;
        let (mut ch, mut cw) = (patches * scale_h, patches * scale_w);
        if (width as f64 / height as f64) > (cw as f64 / ch as f64) {
            let new_h = height * cw / width;
            ch -= 2 * ((ch - new_h) / 2);
        } else {
            let new_w = width * ch / height;
            cw -= 2 * ((cw - new_w) / 2);
        }
        let base = patches * patches + self.num_additional_image_tokens;
        let tokens = ch * cw + ch + base;
        if self.strategy_default {
            tokens - self.num_additional_image_tokens
        } else {
            tokens
        }
    }
}

/// Bounds the sizes of a preprocessor config (see [`crate::limits`]) and checks that every
/// grid pinpoint is a positive multiple of the crop, as the anyres split needs.
fn check_sizes(shortest_edge: usize, crop: usize, pinpoints: &[[usize; 2]]) -> Result<(), String> {
    use crate::limits::{MAX_IMAGE_EDGE, all_at_most};
    /// Grid pinpoints in one config (released configs list 5).
    const MAX_PINPOINTS: usize = 1024;
    all_at_most(&[
        ("size.shortest_edge", shortest_edge, MAX_IMAGE_EDGE),
        ("crop_size", crop, MAX_IMAGE_EDGE),
        (
            "image_grid_pinpoints (count)",
            pinpoints.len(),
            MAX_PINPOINTS,
        ),
    ])
    .map_err(|(key, message)| format!("{key}: {message}"))?;
    if shortest_edge < crop {
        // transformers would pad the crop; the tower's input would not be a full crop here.
        return Err(format!(
            "size.shortest_edge {shortest_edge} is smaller than crop_size {crop}"
        ));
    }
    if pinpoints.is_empty() {
        return Err("image_grid_pinpoints: the list is empty".into());
    }
    for &[h, w] in pinpoints {
        if h == 0
            || w == 0
            || h > MAX_IMAGE_EDGE
            || w > MAX_IMAGE_EDGE
            || h % crop != 0
            || w % crop != 0
        {
            return Err(format!(
                "image_grid_pinpoints: [{h}, {w}] must be positive multiples of the crop size \
                 {crop}, at most {MAX_IMAGE_EDGE}"
            ));
        }
    }
    Ok(())
}

/// transformers `select_best_resolution`: the `[height, width]` that keeps the most of the
/// image after an aspect-preserving downscale, then the least wasted area, then the first.
pub fn select_best_resolution(size: [usize; 2], pinpoints: &[[usize; 2]]) -> [usize; 2] {
    let (oh, ow) = (size[0] as f64, size[1] as f64);
    let mut best = pinpoints[0];
    let mut max_effective = 0usize;
    let mut min_wasted = usize::MAX;
    for &[h, w] in pinpoints {
        let scale = (w as f64 / ow).min(h as f64 / oh);
        let (dw, dh) = ((ow * scale) as usize, (oh * scale) as usize);
        let effective = (dw * dh).min(size[0] * size[1]);
        let wasted = h * w - effective;
        if effective > max_effective || (effective == max_effective && wasted < min_wasted) {
            max_effective = effective;
            min_wasted = wasted;
            best = [h, w];
        }
    }
    best
}

/// transformers `_get_patch_output_size`: the aspect-preserving size within `target`.
pub fn patch_output_size(size: [usize; 2], target: [usize; 2]) -> [usize; 2] {
    let (oh, ow) = (size[0] as f64, size[1] as f64);
    let (th, tw) = (target[0], target[1]);
    let scale_w = tw as f64 / ow;
    let scale_h = th as f64 / oh;
    if scale_w < scale_h {
        [((oh * scale_w).ceil() as usize).min(th), tw]
    } else {
        [th, ((ow * scale_h).ceil() as usize).min(tw)]
    }
}

/// Pads symmetrically with black: `pad` rows/columns on each side (`np.pad`).
fn pad_symmetric(img: &RgbImage, pad_y: usize, pad_x: usize) -> RgbImage {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let mut out = RgbImage::new((w + 2 * pad_x) as u32, (h + 2 * pad_y) as u32);
    image::imageops::replace(&mut out, img, pad_x as i64, pad_y as i64);
    out
}

/// `divide_to_patches`: `crop × crop` tiles in raster order (edge tiles may be smaller).
fn divide_to_patches(img: &RgbImage, crop: usize) -> Vec<RgbImage> {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let mut out = Vec::new();
    for y in (0..h).step_by(crop) {
        for x in (0..w).step_by(crop) {
            let (cw, ch) = (crop.min(w - x), crop.min(h - y));
            out.push(
                image::imageops::crop_imm(img, x as u32, y as u32, cw as u32, ch as u32).to_image(),
            );
        }
    }
    out
}

impl AnyresConfig {
    /// `_preprocess` of one tile: shortest-edge resize, centre crop, rescale, normalise.
    fn tile_values(&self, tile: &RgbImage, out: &mut Vec<f32>) {
        let mut img = tile.clone();
        if self.do_resize {
            // transformers get_resize_output_image_size(default_to_square=False)
            let (w, h) = (img.width() as usize, img.height() as usize);
            let (short, long) = if w <= h { (w, h) } else { (h, w) };
            let new_long = (self.shortest_edge as f64 * long as f64 / short as f64) as usize;
            let (nw, nh) = if w <= h {
                (self.shortest_edge, new_long)
            } else {
                (new_long, self.shortest_edge)
            };
            img = resize_rgb_pil(&img, nw as u32, nh as u32, self.filter);
        }
        if self.do_center_crop {
            let (w, h) = (img.width() as usize, img.height() as usize);
            let top = h.saturating_sub(self.crop) / 2;
            let left = w.saturating_sub(self.crop) / 2;
            img = image::imageops::crop_imm(
                &img,
                left as u32,
                top as u32,
                self.crop as u32,
                self.crop as u32,
            )
            .to_image();
        }
        for plane in rescale_normalize_planes(&img, self.rescale, self.normalize) {
            out.extend(plane);
        }
    }
}

impl ImagePreprocessor for AnyresConfig {
    // transformers: LlavaNextImageProcessor.preprocess / get_image_patches (one image)
    fn process(
        &self,
        image: &DynamicImage,
        options: &ImageOptions,
    ) -> Result<ProcessedImage, ImageProcessorError> {
        let rgb = convert_to_rgb(image);
        let size = [rgb.height() as usize, rgb.width() as usize];
        let mut out = self.layout(size[1], size[0], options)?;
        let best = select_best_resolution(size, &self.pinpoints);
        let [nh, nw] = patch_output_size(size, best);
        let resized = resize_rgb_pil(&rgb, nw as u32, nh as u32, self.filter);
        let padded = pad_symmetric(&resized, (best[0] - nh) / 2, (best[1] - nw) / 2);
        let base = resize_rgb_pil(
            &rgb,
            self.shortest_edge as u32,
            self.shortest_edge as u32,
            self.filter,
        );
        let mut tiles = vec![base];
        tiles.extend(divide_to_patches(&padded, self.crop));
        let mut values = Vec::with_capacity(tiles.len() * out.patch_dim);
        for tile in &tiles {
            self.tile_values(tile, &mut values);
        }
        out.num_patches = tiles.len();
        out.pixel_values = values;
        Ok(out)
    }

    fn layout(
        &self,
        width: usize,
        height: usize,
        _options: &ImageOptions,
    ) -> Result<ProcessedImage, ImageProcessorError> {
        if width == 0 || height == 0 {
            return Err(ImageProcessorError::InvalidConfig(format!(
                "the image is {width}x{height} pixels"
            )));
        }
        let best = select_best_resolution([height, width], &self.pinpoints);
        let [nh, nw] = patch_output_size([height, width], best);
        // Tiles of the padded canvas, which is one pixel short when a remainder is odd.
        let canvas_h = nh + 2 * ((best[0] - nh) / 2);
        let canvas_w = nw + 2 * ((best[1] - nw) / 2);
        let (rows, cols) = (canvas_h.div_ceil(self.crop), canvas_w.div_ceil(self.crop));
        Ok(ProcessedImage {
            pixel_values: Vec::new(),
            num_patches: 1 + rows * cols,
            patch_dim: 3 * self.crop * self.crop,
            grid_thw: [1, best[0] / self.crop, best[1] / self.crop],
            tokens: self.token_count(height, width),
            image_size: [height, width],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn real() -> AnyresConfig {
        AnyresConfig::from_json(
            None,
            &super::super::config::default_pinpoints(),
            14,
            true,
            0,
        )
        .unwrap()
    }

    #[test]
    fn best_resolution_and_the_float_trap() {
        let p = super::super::config::default_pinpoints();
        assert_eq!(select_best_resolution([300, 300], &p), [336, 672]);
        assert_eq!(select_best_resolution([480, 640], &p), [672, 672]);
        assert_eq!(select_best_resolution([500, 2000], &p), [336, 1008]);
        // ceil(300 · (336/300)) is 337 in f64.
        assert_eq!(patch_output_size([300, 300], [336, 672]), [336, 337]);
        assert_eq!(patch_output_size([333, 500], [336, 672]), [336, 505]);
    }

    #[test]
    fn token_counts_of_the_worked_examples() {
        let c = real();
        for ((w, h), tokens) in [
            ((336, 336), 1176),
            ((500, 333), 1464),
            ((640, 480), 2340),
            ((768, 1024), 2352),
            ((1000, 1000), 2928),
            ((2000, 500), 1890),
        ] {
            assert_eq!(c.token_count(h, w), tokens, "{w}x{h}");
        }
        let l = c.layout(500, 333, &ImageOptions::default()).unwrap();
        assert_eq!((l.num_patches, l.grid_thw), (3, [1, 1, 2]));
    }
}
