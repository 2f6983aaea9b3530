//! Images as every family's processor sees them: the processed-image record, per-stage pixel
//! budgets, decoding (PIL-compatible RGB conversion), and the [`ImagePreprocessor`] seam each
//! family implements (Qwen2-VL's `smart_resize` patches, LLaVA-NeXT's anyres crops, ...).

use std::fmt::Debug;
use std::path::{Path, PathBuf};

use image::{DynamicImage, RgbImage};

use crate::limits::DecodeError;

/// OpenAI CLIP normalisation mean (transformers `OPENAI_CLIP_MEAN`), rounded from the Python
/// floats (`f64`) to `f32` as `np.array(mean, dtype=np.float32)` does.
pub const OPENAI_CLIP_MEAN: [f32; 3] = [
    0.48145466_f64 as f32,
    0.4578275_f64 as f32,
    0.40821073_f64 as f32,
];
/// OpenAI CLIP normalisation std (transformers `OPENAI_CLIP_STD`), rounded like the mean.
pub const OPENAI_CLIP_STD: [f32; 3] = [
    0.26862954_f64 as f32,
    0.26130258_f64 as f32,
    0.27577711_f64 as f32,
];

/// Errors of image preprocessing (every family's image processor).
#[derive(Debug, thiserror::Error)]
pub enum ImageProcessorError {
    /// The image file could not be opened or read.
    #[error("cannot read image file {}: {source}", .path.display())]
    Io {
        /// The image file.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The image file could not be decoded.
    #[error("cannot decode image file {}: {source}", .path.display())]
    Decode {
        /// The image file.
        path: PathBuf,
        /// The decoder's error.
        #[source]
        source: image::ImageError,
    },
    /// The image is larger than [`crate::limits::image_limits`] allow.
    #[error("{}: {message}", .path.display())]
    TooLarge {
        /// The image file.
        path: PathBuf,
        /// The limit hit, with its values.
        message: String,
    },
    /// One side is shorter than `patch_size * merge_size` (transformers raises a `ValueError`).
    #[error(
        "{}image is too small: height {height} and width {width} must both be at least {factor} pixels",
        path_prefix(.path)
    )]
    TooSmall {
        /// Image height in pixels.
        height: usize,
        /// Image width in pixels.
        width: usize,
        /// The resize factor (`patch_size * merge_size`).
        factor: usize,
        /// The image file, when known.
        path: Option<PathBuf>,
    },
    /// `max(h, w) / min(h, w)` exceeds 200.
    #[error(
        "{}absolute aspect ratio must be smaller than 200, got {ratio} (height {height}, width {width})",
        path_prefix(.path)
    )]
    AspectRatio {
        /// `max(h, w) / min(h, w)`.
        ratio: f64,
        /// Image height in pixels.
        height: usize,
        /// Image width in pixels.
        width: usize,
        /// The image file, when known.
        path: Option<PathBuf>,
    },
    /// With `do_resize = false`, the image size must already be a multiple of
    /// `patch_size * merge_size` (transformers would fail in a reshape).
    #[error(
        "{}image of height {height} and width {width} is not divisible into {factor}x{factor} blocks and do_resize is false",
        path_prefix(.path)
    )]
    NotDivisible {
        /// Image height in pixels.
        height: usize,
        /// Image width in pixels.
        width: usize,
        /// `patch_size * merge_size`.
        factor: usize,
        /// The image file, when known.
        path: Option<PathBuf>,
    },
    /// With `do_convert_rgb = false` the input must already be a three-channel image.
    #[error("{}image has color type {color:?}; with do_convert_rgb = false only RGB images are accepted", path_prefix(.path))]
    NotRgb {
        /// The decoded color type.
        color: image::ColorType,
        /// The image file, when known.
        path: Option<PathBuf>,
    },
    /// The preprocessor config file could not be read.
    #[error("cannot read preprocessor config {}: {source}", .path.display())]
    ConfigIo {
        /// The config file.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The preprocessor config file is not valid JSON for this processor.
    #[error("invalid preprocessor config {}: {source}", .path.display())]
    ConfigParse {
        /// The config file.
        path: PathBuf,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
    /// The settings are inconsistent (zero sizes, unsupported resample filter, ...).
    #[error("invalid image processor config: {0}")]
    InvalidConfig(String),
    /// The model has no image processor (a text-only model).
    #[error("the model is text-only and takes no images")]
    TextOnly,
}

fn path_prefix(path: &Option<PathBuf>) -> String {
    match path {
        Some(p) => format!("{}: ", p.display()),
        None => String::new(),
    }
}

impl ImageProcessorError {
    /// Attaches the image file name to the size errors that do not carry one yet.
    pub fn with_path(mut self, file: &Path) -> Self {
        match &mut self {
            ImageProcessorError::TooSmall { path, .. }
            | ImageProcessorError::AspectRatio { path, .. }
            | ImageProcessorError::NotDivisible { path, .. }
            | ImageProcessorError::NotRgb { path, .. }
                if path.is_none() =>
            {
                *path = Some(file.to_path_buf());
            }
            _ => {}
        }
        self
    }
}

/// The processor output for one image, in the layout of the family that made it.
///
/// - Qwen2-VL: `pixel_values` is `[num_patches, patch_dim]` flattened patches (`patch_dim` =
///   `C·T·P·P` = 1176), `grid_thw` the patch grid `(t, h, w)`.
/// - LLaVA-NeXT: `pixel_values` is `[num_patches, patch_dim]` = `[crops, 3·S·S]` (the squashed
///   base image first, then the anyres crops, each channel-first `S×S`), `grid_thw` is
///   `(1, grid rows, grid cols)` of the anyres grid.
///
/// Either way `tokens` is the number of placeholder tokens the image takes in the prompt, and
/// `image_size` the original `(height, width)`. An image read from its header only (training
/// data is tokenized before any pixel is decoded) has empty `pixel_values`.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessedImage {
    /// Row-major `[num_patches, patch_dim]` values.
    pub pixel_values: Vec<f32>,
    /// Rows of `pixel_values` (Qwen2-VL: patches; LLaVA-NeXT: crops).
    pub num_patches: usize,
    /// Values per row.
    pub patch_dim: usize,
    /// The family's grid (Qwen2-VL: `(t, h, w)` in patches; LLaVA-NeXT: `(1, rows, cols)`).
    pub grid_thw: [usize; 3],
    /// Placeholder tokens the image expands to in the prompt.
    pub tokens: usize,
    /// Original `(height, width)` in pixels.
    pub image_size: [usize; 2],
}

impl ProcessedImage {
    /// Number of `<|image_pad|>` tokens a Qwen2-VL image expands to
    /// (`num_patches / merge_size^2`).
    pub fn num_merged_tokens(&self, merge_size: usize) -> usize {
        self.num_patches / (merge_size * merge_size)
    }

    /// The same image without its pixel values (what tokenization needs).
    pub fn layout_only(&self) -> Self {
        Self {
            pixel_values: Vec::new(),
            ..self.clone()
        }
    }
}

/// Converts any decoded image to 8-bit RGB the way PIL's `Image.convert("RGB")` treats the same
/// file as opened by `PIL.Image.open` (checked against PNG files with Pillow 9.4):
/// alpha is dropped without compositing, grey is replicated, palettes are already expanded by the
/// decoder, 16-bit RGB(A) and grey+alpha keep the high byte (PIL unpacks them as `RGB;16B`,
/// `LA;16B`), and 16-bit grey is clipped to 255 (PIL opens it as mode `I`, whose RGB conversion
/// clips instead of scaling).
// transformers: image_transforms.convert_to_rgb (PIL Image.convert("RGB"))
pub fn convert_to_rgb(img: &DynamicImage) -> RgbImage {
    match img {
        DynamicImage::ImageRgb8(rgb) => rgb.clone(),
        DynamicImage::ImageLuma16(g) => RgbImage::from_fn(g.width(), g.height(), |x, y| {
            let v = g.get_pixel(x, y).0[0].min(255) as u8;
            image::Rgb([v, v, v])
        }),
        DynamicImage::ImageLumaA16(g) => RgbImage::from_fn(g.width(), g.height(), |x, y| {
            let v = (g.get_pixel(x, y).0[0] >> 8) as u8;
            image::Rgb([v, v, v])
        }),
        DynamicImage::ImageRgb16(c) => RgbImage::from_fn(c.width(), c.height(), |x, y| {
            let p = c.get_pixel(x, y).0;
            image::Rgb([(p[0] >> 8) as u8, (p[1] >> 8) as u8, (p[2] >> 8) as u8])
        }),
        DynamicImage::ImageRgba16(c) => RgbImage::from_fn(c.width(), c.height(), |x, y| {
            let p = c.get_pixel(x, y).0;
            image::Rgb([(p[0] >> 8) as u8, (p[1] >> 8) as u8, (p[2] >> 8) as u8])
        }),
        // Luma8 / LumaA8 / Rgba8: the image crate replicates grey and drops alpha, as PIL does.
        // Float images have no PIL file counterpart; the image crate scales them to 0..=255.
        other => other.to_rgb8(),
    }
}

/// Per-stage limits on an image's pixel count (the paper evaluates Qwen2-VL between 224² and
/// 1280·28² pixels; training takes the recipe's `image_min_pixels` / `image_max_pixels`).
/// Families whose processor has a pixel budget (Qwen2-VL) apply them; fixed-resolution
/// processors (LLaVA-NeXT's anyres grid) ignore them, as transformers' processors do.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ImageOptions {
    /// Smallest area after resizing, overriding the folder's `preprocessor_config.json`.
    pub min_pixels: Option<usize>,
    /// Largest area after resizing, overriding the folder's `preprocessor_config.json`.
    pub max_pixels: Option<usize>,
}

impl ImageOptions {
    /// Both bounds set.
    pub fn bounds(min_pixels: usize, max_pixels: usize) -> Self {
        Self {
            min_pixels: Some(min_pixels),
            max_pixels: Some(max_pixels),
        }
    }
}

/// A family's image processor (transformers' `*ImageProcessor` + the processor's token count).
pub trait ImagePreprocessor: Send + Sync + Debug {
    /// Preprocesses one decoded image.
    fn process(
        &self,
        image: &DynamicImage,
        options: &ImageOptions,
    ) -> Result<ProcessedImage, ImageProcessorError>;

    /// The layout (tokens, grid, rows) an image of `width × height` gets, without pixels.
    fn layout(
        &self,
        width: usize,
        height: usize,
        options: &ImageOptions,
    ) -> Result<ProcessedImage, ImageProcessorError>;
}

/// Decodes an image file (format guessed from its content); errors name the file. EXIF
/// orientation is not applied (as with `PIL.Image.open`).
pub fn decode_image_file(path: &Path) -> Result<DynamicImage, ImageProcessorError> {
    let reader = image::ImageReader::open(path).map_err(|source| ImageProcessorError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    crate::limits::decode_image(reader).map_err(|error| match error {
        DecodeError::Io(source) => ImageProcessorError::Io {
            path: path.to_path_buf(),
            source,
        },
        DecodeError::TooLarge(message) => ImageProcessorError::TooLarge {
            path: path.to_path_buf(),
            message,
        },
        DecodeError::Decode(source) => ImageProcessorError::Decode {
            path: path.to_path_buf(),
            source,
        },
    })
}

/// Decodes and preprocesses an image file; errors name the file.
pub fn load_and_process_with(
    path: &Path,
    processor: &dyn ImagePreprocessor,
    options: &ImageOptions,
) -> Result<ProcessedImage, ImageProcessorError> {
    let image = decode_image_file(path)?;
    processor
        .process(&image, options)
        .map_err(|e| e.with_path(path))
}

/// The layout of an image file from its header alone (no pixel is decoded).
pub fn layout_of_file(
    path: &Path,
    processor: &dyn ImagePreprocessor,
    options: &ImageOptions,
) -> Result<ProcessedImage, String> {
    if !path.is_file() {
        return Err(format!("image {} not found", path.display()));
    }
    let (w, h) =
        image::image_dimensions(path).map_err(|e| format!("image {}: {e}", path.display()))?;
    processor
        .layout(w as usize, h as usize, options)
        .map_err(|e| format!("image {}: {e}", path.display()))
}

/// Rescales (`f32(f64(u8) · factor)`) and normalises (`(x - mean) / std` in f32) an RGB image
/// into three channel-first planes, as transformers' `rescale` and `normalize` compute them.
// transformers: image_transforms.rescale (dtype=float32) and image_transforms.normalize
pub fn rescale_normalize_planes(
    img: &RgbImage,
    rescale: Option<f64>,
    normalize: Option<([f32; 3], [f32; 3])>,
) -> [Vec<f32>; 3] {
    let n = img.width() as usize * img.height() as usize;
    let mut planes = [
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    ];
    for px in img.as_raw().chunks_exact(3) {
        for (c, plane) in planes.iter_mut().enumerate() {
            let v = px[c];
            // `rescale` multiplies in float64 (`image.astype(np.float64) * scale`) and then
            // casts to float32; `normalize` casts integer input to float32.
            let mut x = match rescale {
                Some(factor) => (f64::from(v) * factor) as f32,
                None => f32::from(v),
            };
            if let Some((mean, std)) = normalize {
                // `(image - mean) / std` with mean and std as float32 arrays: float32 arithmetic.
                x = (x - mean[c]) / std[c];
            }
            plane.push(x);
        }
    }
    planes
}
