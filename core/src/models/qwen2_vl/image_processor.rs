//! Qwen2-VL image preprocessing, matching transformers 4.47.1 `Qwen2VLImageProcessor` (the slow,
//! PIL-based processor) for single images.
//!
//! Pipeline (each step reproduces the numerics of its upstream counterpart):
//! 1. `convert_to_rgb` (PIL `Image.convert("RGB")`: alpha is dropped, not composited; grey is
//!    replicated; palettes are looked up).
//! 2. `smart_resize` picks a size divisible by `patch_size * merge_size` within
//!    `[min_pixels, max_pixels]`, then the image is resized with Pillow's fixed-point bicubic
//!    resampler ([`super::resample::resize_bicubic_pil`], byte-exact).
//! 3. Rescale (`f32(f64(u8) * rescale_factor)`), normalise (`(x - mean) / std` in `f32`).
//! 4. The single frame is repeated `temporal_patch_size` times and cut into flattened patches of
//!    `C * T * P * P` values, ordered so that each run of `merge_size^2` consecutive rows forms
//!    one merged (LLM) token.

use std::path::Path;

use image::{DynamicImage, RgbImage};
use serde::{Deserialize, Serialize};

use crate::models::image::{
    ImageOptions, ImagePreprocessor, decode_image_file, rescale_normalize_planes,
};
pub use crate::models::image::{
    ImageProcessorError, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, ProcessedImage, convert_to_rgb,
};
use crate::models::resample;

/// `PILImageResampling.BICUBIC`, the only resampling filter supported here.
const PIL_BICUBIC: u32 = 3;

/// Settings from `preprocessor_config.json` (transformers `Qwen2VLImageProcessor.__init__`).
///
/// Unknown keys are ignored and missing keys take transformers' defaults (see [`Default`]).
/// `min_pixels` / `max_pixels` are read from the top level and, if absent there, from a `size`
/// dict holding either `{"min_pixels", "max_pixels"}` (transformers 4.47) or
/// `{"shortest_edge", "longest_edge"}` (later transformers). Only `resample = 3` (bicubic) is
/// accepted.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(try_from = "RawConfig")]
pub struct ImageProcessorConfig {
    /// Lower bound on `height * width` after resizing.
    pub min_pixels: usize,
    /// Upper bound on `height * width` after resizing.
    pub max_pixels: usize,
    /// Spatial patch size of the vision encoder (14).
    pub patch_size: usize,
    /// Number of frames per temporal patch (2); a still image is repeated this many times.
    pub temporal_patch_size: usize,
    /// Spatial merge size of the vision-to-LLM merger (2).
    pub merge_size: usize,
    /// Per-channel normalisation mean.
    pub image_mean: [f32; 3],
    /// Per-channel normalisation standard deviation.
    pub image_std: [f32; 3],
    /// Whether to resize with `smart_resize` (otherwise the size must already fit).
    pub do_resize: bool,
    /// Whether to multiply by `rescale_factor`.
    pub do_rescale: bool,
    /// Rescale factor (1/255).
    pub rescale_factor: f64,
    /// Whether to normalise with `image_mean` / `image_std`.
    pub do_normalize: bool,
    /// Whether to convert the input to RGB first.
    pub do_convert_rgb: bool,
}

impl Default for ImageProcessorConfig {
    /// transformers 4.47.1 defaults, which equal Qwen2-VL's `preprocessor_config.json` except
    /// `max_pixels`: the Hub configs of Qwen2-VL-2B/7B-Instruct set `max_pixels: 12845056`,
    /// while the constructor default (used here) is `28 * 28 * 1280 = 1003520`.
    fn default() -> Self {
        Self {
            min_pixels: 56 * 56,
            max_pixels: 28 * 28 * 1280,
            patch_size: 14,
            temporal_patch_size: 2,
            merge_size: 2,
            image_mean: OPENAI_CLIP_MEAN,
            image_std: OPENAI_CLIP_STD,
            do_resize: true,
            do_rescale: true,
            rescale_factor: 1.0 / 255.0,
            do_normalize: true,
            do_convert_rgb: true,
        }
    }
}

/// A per-channel statistic that transformers accepts as a float or a list of floats.
#[derive(Deserialize)]
#[serde(untagged)]
enum ChannelValues {
    Scalar(f32),
    List(Vec<f32>),
}

impl ChannelValues {
    fn into_array(self, name: &str) -> Result<[f32; 3], String> {
        match self {
            ChannelValues::Scalar(v) => Ok([v; 3]),
            ChannelValues::List(v) => <[f32; 3]>::try_from(v.as_slice())
                .map_err(|_| format!("{name} must have 3 elements, got {}", v.len())),
        }
    }
}

#[derive(Deserialize, Default)]
struct RawSize {
    min_pixels: Option<usize>,
    max_pixels: Option<usize>,
    shortest_edge: Option<usize>,
    longest_edge: Option<usize>,
}

#[derive(Deserialize)]
struct RawConfig {
    min_pixels: Option<usize>,
    max_pixels: Option<usize>,
    size: Option<RawSize>,
    patch_size: Option<usize>,
    temporal_patch_size: Option<usize>,
    merge_size: Option<usize>,
    image_mean: Option<ChannelValues>,
    image_std: Option<ChannelValues>,
    do_resize: Option<bool>,
    do_rescale: Option<bool>,
    rescale_factor: Option<f64>,
    do_normalize: Option<bool>,
    do_convert_rgb: Option<bool>,
    resample: Option<u32>,
}

impl TryFrom<RawConfig> for ImageProcessorConfig {
    type Error = String;

    fn try_from(raw: RawConfig) -> Result<Self, String> {
        let d = ImageProcessorConfig::default();
        let size = raw.size.unwrap_or_default();
        if let Some(r) = raw.resample
            && r != PIL_BICUBIC
        {
            return Err(format!(
                "only resample = {PIL_BICUBIC} (bicubic) is supported, got {r}"
            ));
        }
        let cfg = ImageProcessorConfig {
            min_pixels: raw
                .min_pixels
                .or(size.min_pixels)
                .or(size.shortest_edge)
                .unwrap_or(d.min_pixels),
            max_pixels: raw
                .max_pixels
                .or(size.max_pixels)
                .or(size.longest_edge)
                .unwrap_or(d.max_pixels),
            patch_size: raw.patch_size.unwrap_or(d.patch_size),
            temporal_patch_size: raw.temporal_patch_size.unwrap_or(d.temporal_patch_size),
            merge_size: raw.merge_size.unwrap_or(d.merge_size),
            image_mean: match raw.image_mean {
                Some(v) => v.into_array("image_mean")?,
                None => d.image_mean,
            },
            image_std: match raw.image_std {
                Some(v) => v.into_array("image_std")?,
                None => d.image_std,
            },
            do_resize: raw.do_resize.unwrap_or(d.do_resize),
            do_rescale: raw.do_rescale.unwrap_or(d.do_rescale),
            rescale_factor: raw.rescale_factor.unwrap_or(d.rescale_factor),
            do_normalize: raw.do_normalize.unwrap_or(d.do_normalize),
            do_convert_rgb: raw.do_convert_rgb.unwrap_or(d.do_convert_rgb),
        };
        cfg.validate()?;
        Ok(cfg)
    }
}

impl ImageProcessorConfig {
    /// Reads `preprocessor_config.json`; errors name the file.
    pub fn from_file(path: &Path) -> Result<Self, ImageProcessorError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ImageProcessorError::ConfigIo {
                path: path.to_path_buf(),
                source,
            })?;
        serde_json::from_str(&text).map_err(|source| ImageProcessorError::ConfigParse {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Parses the text of a `preprocessor_config.json`.
    pub fn from_json(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }

    /// The resize factor `patch_size * merge_size` (28 for Qwen2-VL).
    pub fn factor(&self) -> usize {
        self.patch_size * self.merge_size
    }

    /// Width of one flattened patch row: `3 · temporal_patch_size · patch_size²` (1176).
    pub fn patch_dim(&self) -> usize {
        3 * self.temporal_patch_size * self.patch_size * self.patch_size
    }

    /// Checks that the sizes are usable.
    fn validate(&self) -> Result<(), String> {
        if self.patch_size == 0 || self.temporal_patch_size == 0 || self.merge_size == 0 {
            return Err(format!(
                "patch_size ({}), temporal_patch_size ({}) and merge_size ({}) must be positive",
                self.patch_size, self.temporal_patch_size, self.merge_size
            ));
        }
        use crate::limits::{MAX_FACTOR, MAX_IMAGE_EDGE, MAX_PROCESSED_PIXELS, all_at_most};
        all_at_most(&[
            ("patch_size", self.patch_size, MAX_IMAGE_EDGE),
            ("temporal_patch_size", self.temporal_patch_size, MAX_FACTOR),
            ("merge_size", self.merge_size, MAX_FACTOR),
            ("min_pixels", self.min_pixels, MAX_PROCESSED_PIXELS),
            ("max_pixels", self.max_pixels, MAX_PROCESSED_PIXELS),
        ])
        .map_err(|(key, message)| format!("{key}: {message}"))?;
        if self.min_pixels > self.max_pixels {
            return Err(format!(
                "min_pixels ({}) must not exceed max_pixels ({})",
                self.min_pixels, self.max_pixels
            ));
        }
        Ok(())
    }
}

/// Chooses the resized `(height, width)`: both multiples of `factor`, the pixel count within
/// `[min_pixels, max_pixels]`, the aspect ratio kept as closely as possible.
///
/// Uses Python's rounding (`round` is half to even, so 70/28 = 2.5 rounds to 2).
// transformers: models/qwen2_vl/image_processing_qwen2_vl.py smart_resize
pub fn smart_resize(
    height: usize,
    width: usize,
    factor: usize,
    min_pixels: usize,
    max_pixels: usize,
) -> Result<(usize, usize), ImageProcessorError> {
    if factor == 0 {
        return Err(ImageProcessorError::InvalidConfig(
            "resize factor must be positive".into(),
        ));
    }
    if height < factor || width < factor {
        return Err(ImageProcessorError::TooSmall {
            height,
            width,
            factor,
            path: None,
        });
    }
    let ratio = height.max(width) as f64 / height.min(width) as f64;
    if ratio > 200.0 {
        return Err(ImageProcessorError::AspectRatio {
            ratio,
            height,
            width,
            path: None,
        });
    }
    let (h, w, f) = (height as f64, width as f64, factor as f64);
    let mut h_bar = (h / f).round_ties_even() as usize * factor;
    let mut w_bar = (w / f).round_ties_even() as usize * factor;
    // Python computes `height * width` on unbounded ints before the true division.
    let area = (height as u128 * width as u128) as f64;
    if h_bar * w_bar > max_pixels {
        let beta = (area / max_pixels as f64).sqrt();
        h_bar = (h / beta / f).floor() as usize * factor;
        w_bar = (w / beta / f).floor() as usize * factor;
    } else if h_bar * w_bar < min_pixels {
        let beta = (min_pixels as f64 / area).sqrt();
        h_bar = (h * beta / f).ceil() as usize * factor;
        w_bar = (w * beta / f).ceil() as usize * factor;
    }
    if h_bar == 0 || w_bar == 0 {
        // transformers would go on with an empty image; refuse instead.
        return Err(ImageProcessorError::InvalidConfig(format!(
            "max_pixels {max_pixels} is too small for a {height}x{width} image with factor {factor}"
        )));
    }
    Ok((h_bar, w_bar))
}

/// Runs the full Qwen2-VL preprocessing on one image.
// transformers: Qwen2VLImageProcessor._preprocess (single image, data_format = channels first)
pub fn process_image(
    img: &DynamicImage,
    cfg: &ImageProcessorConfig,
) -> Result<ProcessedImage, ImageProcessorError> {
    cfg.validate().map_err(ImageProcessorError::InvalidConfig)?;
    let rgb = if cfg.do_convert_rgb {
        convert_to_rgb(img)
    } else {
        match img {
            DynamicImage::ImageRgb8(_)
            | DynamicImage::ImageRgb16(_)
            | DynamicImage::ImageRgb32F(_) => convert_to_rgb(img),
            other => {
                return Err(ImageProcessorError::NotRgb {
                    color: other.color(),
                    path: None,
                });
            }
        }
    };
    let (height, width) = (rgb.height() as usize, rgb.width() as usize);
    let factor = cfg.factor();

    let resized = if cfg.do_resize {
        let (rh, rw) = smart_resize(height, width, factor, cfg.min_pixels, cfg.max_pixels)?;
        // transformers: image_transforms.resize -> PIL Image.resize((w, h), resample=BICUBIC)
        resample::resize_bicubic_pil(&rgb, rw as u32, rh as u32)
    } else {
        if height % factor != 0 || width % factor != 0 || height == 0 || width == 0 {
            return Err(ImageProcessorError::NotDivisible {
                height,
                width,
                factor,
                path: None,
            });
        }
        if height * width > crate::limits::MAX_PROCESSED_PIXELS {
            return Err(ImageProcessorError::InvalidConfig(format!(
                "with do_resize false the {height}x{width} image is processed as it is, \
                 above the limit of {} pixels",
                crate::limits::MAX_PROCESSED_PIXELS
            )));
        }
        rgb
    };
    let planes = normalize_planes(&resized, cfg);
    let (rh, rw) = (resized.height() as usize, resized.width() as usize);
    let mut out = patchify(&planes, rh, rw, cfg);
    out.image_size = [height, width];
    Ok(out)
}

/// Rescales and normalises an RGB image into three channel-first `f32` planes.
fn normalize_planes(img: &RgbImage, cfg: &ImageProcessorConfig) -> [Vec<f32>; 3] {
    rescale_normalize_planes(
        img,
        cfg.do_rescale.then_some(cfg.rescale_factor),
        cfg.do_normalize.then_some((cfg.image_mean, cfg.image_std)),
    )
}

/// Repeats the frame `temporal_patch_size` times and flattens it into patches: the
/// `(grid_t, T, C, gh/m, m, P, gw/m, m, P)` view transposed to `(0, 3, 6, 4, 7, 2, 1, 5, 8)`,
/// i.e. rows ordered `(t, block_row, block_col, in_block_row, in_block_col)` and columns
/// `(channel, frame, y, x)`.
// transformers: Qwen2VLImageProcessor._preprocess (np.tile / reshape / transpose)
fn patchify(
    planes: &[Vec<f32>; 3],
    height: usize,
    width: usize,
    cfg: &ImageProcessorConfig,
) -> ProcessedImage {
    let p = cfg.patch_size;
    let m = cfg.merge_size;
    let t = cfg.temporal_patch_size;
    let (gh, gw) = (height / p, width / p);
    let channels = planes.len();
    let patch_dim = channels * t * p * p;
    let num_patches = gh * gw; // grid_t = 1 for a single image
    let mut out = Vec::with_capacity(num_patches * patch_dim);
    for bh in 0..gh / m {
        for bw in 0..gw / m {
            for mh in 0..m {
                for mw in 0..m {
                    let y0 = (bh * m + mh) * p;
                    let x0 = (bw * m + mw) * p;
                    for plane in planes {
                        // Every temporal frame is the same still image.
                        for _ in 0..t {
                            for py in 0..p {
                                let row = (y0 + py) * width + x0;
                                out.extend_from_slice(&plane[row..row + p]);
                            }
                        }
                    }
                }
            }
        }
    }
    debug_assert_eq!(out.len(), num_patches * patch_dim);
    ProcessedImage {
        pixel_values: out,
        num_patches,
        patch_dim,
        grid_thw: [1, gh, gw],
        tokens: num_patches / (m * m),
        image_size: [height, width],
    }
}

/// Decodes an image file (format guessed from its content) and runs [`process_image`].
/// Errors name the file. EXIF orientation is not applied (as with `PIL.Image.open`).
pub fn load_and_process(
    path: &Path,
    cfg: &ImageProcessorConfig,
) -> Result<ProcessedImage, ImageProcessorError> {
    let img = decode_image_file(path)?;
    process_image(&img, cfg).map_err(|e| e.with_path(path))
}

impl ImageProcessorConfig {
    /// These settings with a stage's pixel budget applied.
    pub fn with_options(&self, options: &ImageOptions) -> Self {
        let mut cfg = self.clone();
        if let Some(min) = options.min_pixels {
            cfg.min_pixels = min;
        }
        if let Some(max) = options.max_pixels {
            cfg.max_pixels = max;
        }
        cfg
    }
}

// The Qwen2-VL family's image processor: `smart_resize` within the pixel budget, patches.
impl ImagePreprocessor for ImageProcessorConfig {
    fn process(
        &self,
        image: &DynamicImage,
        options: &ImageOptions,
    ) -> Result<ProcessedImage, ImageProcessorError> {
        process_image(image, &self.with_options(options))
    }

    fn layout(
        &self,
        width: usize,
        height: usize,
        options: &ImageOptions,
    ) -> Result<ProcessedImage, ImageProcessorError> {
        let cfg = self.with_options(options);
        cfg.validate().map_err(ImageProcessorError::InvalidConfig)?;
        let (rh, rw) = if cfg.do_resize {
            smart_resize(height, width, cfg.factor(), cfg.min_pixels, cfg.max_pixels)?
        } else {
            (height, width)
        };
        let grid = [1, rh / cfg.patch_size, rw / cfg.patch_size];
        let num_patches = grid[1] * grid[2];
        Ok(ProcessedImage {
            pixel_values: Vec::new(),
            num_patches,
            patch_dim: cfg.patch_dim(),
            grid_thw: grid,
            tokens: num_patches / (cfg.merge_size * cfg.merge_size),
            image_size: [height, width],
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patch_order_matches_transformers_layout() {
        // A 28x56 image whose value encodes (channel, y, x).
        let cfg = ImageProcessorConfig {
            do_resize: false,
            do_rescale: false,
            do_normalize: false,
            ..Default::default()
        };
        let (h, w) = (28usize, 56usize);
        let img = RgbImage::from_fn(w as u32, h as u32, |x, y| {
            image::Rgb([(x % 251) as u8, y as u8, 200])
        });
        let out = process_image(&DynamicImage::ImageRgb8(img), &cfg).unwrap();
        assert_eq!(out.grid_thw, [1, 2, 4]);
        assert_eq!((out.num_patches, out.patch_dim), (8, 1176));
        assert_eq!(out.num_merged_tokens(2), 2);
        // Row 5: block (0, 1), in-block (0, 1) -> patch at y0 = 0, x0 = (1*2+1)*14 = 42.
        let row = &out.pixel_values[5 * 1176..6 * 1176];
        // Column (c=0, t=1, py=3, px=4) -> x = 46.
        assert_eq!(row[196 + 3 * 14 + 4], 46.0);
        // Column (c=1, t=0, py=13, px=0) -> y = 13.
        assert_eq!(row[2 * 196 + 13 * 14], 13.0);
        // Row 2: block (0, 0), in-block (1, 0) -> y0 = 14.
        assert_eq!(out.pixel_values[2 * 1176 + 2 * 196], 14.0);
    }
}
