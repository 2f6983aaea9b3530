//! Upper bounds on what a user's file may claim, checked before anything is allocated or
//! multiplied from it.
//!
//! A downloaded `config.json`, safetensors header, preprocessor config or image says how large
//! the things built from it are. Each number is checked here against a named bound well above
//! every released model (the largest real values are in the comments), so that the arithmetic
//! done with it afterwards cannot overflow and no allocation follows from a typo or a hostile
//! file. A value over its bound is an error that names the key, the value found and the limit.
//!
//! With every width at most 2^18 and every count at most 2^24, a product of three such numbers
//! stays below 2^64; wider products use [`checked_product`]. In the browser build `usize` has
//! 32 bits and its release profile wraps instead of panicking, so there a hostile config that
//! passes these bounds can still make a wrong size; what it allocates is capped by the tab's
//! 4 GiB, and a trap restarts the page's worker (`web/www/app.js`).

use std::io::{BufRead, Seek};

/// Widths: hidden, intermediate and embedding sizes, head dims (Llama-3.1-405B's MLP is 53,248).
pub const MAX_WIDTH: usize = 1 << 18;
/// Vocabulary rows (the largest released vocabularies are ~262k).
pub const MAX_VOCAB: usize = 1 << 22;
/// Decoder or encoder layers (released models have at most a few hundred).
pub const MAX_LAYERS: usize = 1 << 10;
/// Attention heads, query or key/value.
pub const MAX_HEADS: usize = 1 << 10;
/// `max_position_embeddings` (released: up to ~1M; 16M here).
pub const MAX_POSITIONS: usize = 1 << 24;
/// Image-side sizes in configs: tower input size, patch size, crop and resize edges, grid
/// pinpoints (real: 336–1,344 px).
pub const MAX_IMAGE_EDGE: usize = 1 << 14;
/// Small factors: channels, merge sizes, temporal patch sizes (real: 1–3).
pub const MAX_FACTOR: usize = 64;
/// Pixels of one processed image, `min_pixels` / `max_pixels` included (Qwen2-VL's default
/// `max_pixels` is 12,845,056).
pub const MAX_PROCESSED_PIXELS: usize = 1 << 25;
/// Width or height of a decoded image file.
pub const MAX_DECODED_SIDE: u32 = 1 << 15;
/// Bytes a decoder may allocate for one image (a PNG that inflates to more is refused).
pub const MAX_DECODED_BYTES: u64 = 1 << 29;
/// Nesting depth of a JSON file: serde_json's fixed recursion limit (it refuses the 128th
/// level), which every JSON reader here runs under (`crate::io::json_error` names it).
pub const MAX_JSON_NESTING: usize = 127;
/// Elements of one tensor named in a checkpoint header (Llama-3-70B's embedding is ~1.07e9).
/// A `u64`: the browser build's `usize` has 32 bits.
pub const MAX_TENSOR_ELEMENTS: u64 = 1 << 36;

thread_local! {
    /// Whether this thread is inside [`catch_parser_panic`].
    static IN_GUARDED_PARSER: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs a third-party parser that can panic on damaged input instead of returning an error
/// (tokenizers 0.23 on some `decoder` values, minijinja 3.1's lexer on some nestings, arrow-ipc
/// and parquet 60 on offsets past their buffers): a panic becomes `Err` with its message.
/// Natively only; in the browser a panic aborts, and the page restarts its worker.
pub fn catch_parser_panic<T>(parse: impl FnOnce() -> T) -> Result<T, String> {
    let outer = IN_GUARDED_PARSER.with(|flag| flag.replace(true));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(parse));
    IN_GUARDED_PARSER.with(|flag| flag.set(outer));
    result.map_err(|payload| {
        payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "no message".into())
    })
}

/// Installs a panic hook that says nothing about the panics [`catch_parser_panic`] turns into
/// errors (their message is in the error the user sees) and passes every other panic to the
/// hook that was there before. The CLI installs it once, at start.
pub fn quiet_caught_parser_panics() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !IN_GUARDED_PARSER.with(std::cell::Cell::get) {
            previous(info);
        }
    }));
}

/// Checks a config value against its bound; the error is `(key, message)` as the configs'
/// `validate` functions return it.
pub fn at_most(key: &str, value: usize, limit: usize) -> Result<(), (String, String)> {
    if value > limit {
        return Err((
            key.to_string(),
            format!("{value} exceeds the limit of {limit}"),
        ));
    }
    Ok(())
}

/// Checks several `(key, value, limit)` triples in order; the first violation is returned.
pub fn all_at_most(checks: &[(&str, usize, usize)]) -> Result<(), (String, String)> {
    checks
        .iter()
        .try_for_each(|&(key, value, limit)| at_most(key, value, limit))
}

/// The sizes a decoder-only language model is built from, as its `config.json` names them.
#[derive(Debug, Clone, Copy)]
pub struct DecoderSizes {
    /// `vocab_size`.
    pub vocab_size: usize,
    /// `hidden_size`.
    pub hidden_size: usize,
    /// `intermediate_size`.
    pub intermediate_size: usize,
    /// `num_hidden_layers`.
    pub num_hidden_layers: usize,
    /// `num_attention_heads`.
    pub num_attention_heads: usize,
    /// `num_key_value_heads` (or its default).
    pub num_key_value_heads: usize,
    /// `head_dim` (or its default).
    pub head_dim: usize,
    /// `max_position_embeddings`.
    pub max_position_embeddings: usize,
}

impl DecoderSizes {
    /// Checks every size against its bound; the first one over is returned as
    /// `(key, message)`.
    pub fn check(&self) -> Result<(), (String, String)> {
        all_at_most(&[
            ("vocab_size", self.vocab_size, MAX_VOCAB),
            ("hidden_size", self.hidden_size, MAX_WIDTH),
            ("intermediate_size", self.intermediate_size, MAX_WIDTH),
            ("num_hidden_layers", self.num_hidden_layers, MAX_LAYERS),
            ("num_attention_heads", self.num_attention_heads, MAX_HEADS),
            ("num_key_value_heads", self.num_key_value_heads, MAX_HEADS),
            ("head_dim", self.head_dim, MAX_WIDTH),
            (
                "max_position_embeddings",
                self.max_position_embeddings,
                MAX_POSITIONS,
            ),
        ])
    }
}

/// The product of `factors` in 64 bits (on every target), or `None` on overflow.
pub fn checked_product(factors: &[usize]) -> Option<u64> {
    factors
        .iter()
        .try_fold(1u64, |acc, &f| acc.checked_mul(u64::try_from(f).ok()?))
}

/// Pixels of a decoded image file (8,192 × 8,192): what it and its RGB copy take stays near
/// half a gigabyte.
pub const MAX_DECODED_PIXELS: u64 = 1 << 26;

/// The decoder limits every image read goes through: [`MAX_DECODED_SIDE`] per side and
/// [`MAX_DECODED_BYTES`] of allocation.
pub fn image_limits() -> image::Limits {
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_DECODED_SIDE);
    limits.max_image_height = Some(MAX_DECODED_SIDE);
    limits.max_alloc = Some(MAX_DECODED_BYTES);
    limits
}

/// Why an image could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Reading the bytes failed.
    #[error("cannot read: {0}")]
    Io(#[from] std::io::Error),
    /// The header claims more than the limits allow (found and limit in the message).
    #[error("{0}")]
    TooLarge(String),
    /// The decoder refused the data.
    #[error("cannot decode: {0}")]
    Decode(image::ImageError),
}

/// Decodes an image from a reader (format guessed from its content). The header's size is
/// checked against [`MAX_DECODED_SIDE`] and [`MAX_DECODED_PIXELS`] before any pixel is
/// decoded, and the decoder runs under [`image_limits`].
pub fn decode_image<R: BufRead + Seek>(
    reader: image::ImageReader<R>,
) -> Result<image::DynamicImage, DecodeError> {
    use image::ImageDecoder;
    let mut reader = reader.with_guessed_format()?;
    reader.limits(image_limits());
    let decoder = reader.into_decoder().map_err(limit_or_decode)?;
    let (width, height) = decoder.dimensions();
    let pixels = u64::from(width) * u64::from(height);
    if pixels > MAX_DECODED_PIXELS {
        return Err(DecodeError::TooLarge(format!(
            "the image is {width}x{height} ({pixels} pixels), above the limit of \
             {MAX_DECODED_PIXELS} pixels"
        )));
    }
    image::DynamicImage::from_decoder(decoder).map_err(limit_or_decode)
}

fn limit_or_decode(error: image::ImageError) -> DecodeError {
    match error {
        image::ImageError::Limits(l) => DecodeError::TooLarge(format!(
            "the image exceeds the decoding limits ({MAX_DECODED_SIDE} pixels a side, \
             {MAX_DECODED_BYTES} bytes decoded): {l}"
        )),
        image::ImageError::IoError(e) => DecodeError::Io(e),
        other => DecodeError::Decode(other),
    }
}

/// Decodes image bytes (a picked file in the page, a benchmark's embedded image) as
/// [`decode_image`] does.
pub fn decode_image_bytes(bytes: &[u8]) -> Result<image::DynamicImage, DecodeError> {
    decode_image(image::ImageReader::new(std::io::Cursor::new(bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_name_the_key_the_value_and_the_limit() {
        assert!(at_most("hidden_size", MAX_WIDTH, MAX_WIDTH).is_ok());
        let (key, message) = at_most("hidden_size", MAX_WIDTH + 1, MAX_WIDTH).unwrap_err();
        assert_eq!(key, "hidden_size");
        assert_eq!(message, "262145 exceeds the limit of 262144");
        let first = all_at_most(&[("a", 1, 2), ("b", 3, 2), ("c", 9, 2)]).unwrap_err();
        assert_eq!(first.0, "b");
    }

    #[test]
    fn products_report_overflow() {
        assert_eq!(checked_product(&[2, 3, 4]), Some(24));
        assert_eq!(checked_product(&[]), Some(1));
        assert_eq!(checked_product(&[1 << 20, 1 << 20]), Some(1 << 40));
        assert_eq!(checked_product(&[usize::MAX, usize::MAX]), None);
    }

    #[test]
    fn a_png_claiming_a_huge_canvas_is_refused_by_the_limits() {
        let err = decode_image_bytes(&png_with_size(100_000, 100_000)).unwrap_err();
        assert!(matches!(err, DecodeError::TooLarge(_)), "{err}");
        assert!(err.to_string().contains("32768 pixels a side"), "{err}");
        let err = decode_image_bytes(&png_with_size(10_000, 10_000)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the image is 10000x10000 (100000000 pixels), above the limit of 67108864 pixels"
        );
        // The 2×3 canvas has no pixel data: an error, but not a limit.
        let err = decode_image_bytes(&png_with_size(2, 3)).unwrap_err();
        assert!(matches!(err, DecodeError::Decode(_)), "{err}");
    }

    /// A PNG of an 8-bit RGB canvas of `w × h` with no pixel data: the signature, IHDR, an
    /// empty IDAT (where the decoder stops reading the header) and IEND.
    fn png_with_size(w: u32, h: u32) -> Vec<u8> {
        let mut ihdr = Vec::new();
        ihdr.extend(w.to_be_bytes());
        ihdr.extend(h.to_be_bytes());
        ihdr.extend([8, 2, 0, 0, 0]);
        let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
        for (kind, data) in [
            (b"IHDR", ihdr),
            (b"IDAT", Vec::new()),
            (b"IEND", Vec::new()),
        ] {
            let mut chunk = kind.to_vec();
            chunk.extend(&data);
            png.extend((data.len() as u32).to_be_bytes());
            png.extend(&chunk);
            png.extend(crc32(&chunk).to_be_bytes());
        }
        png
    }

    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &b in bytes {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }
}
