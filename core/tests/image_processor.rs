//! Checks the Qwen2-VL image processor against transformers 4.47.1 and the resampler against
//! Pillow, using the vectors written by `tests/fixtures/gen_image_processor_vectors.py`.

use std::path::{Path, PathBuf};

use adamllm::models::qwen2_vl::image_processor::{
    ImageProcessorConfig, ImageProcessorError, ProcessedImage, convert_to_rgb, load_and_process,
    process_image, smart_resize,
};
use adamllm::models::qwen2_vl::resample::{
    Filter, resize_bicubic_pil, resize_gray_pil, resize_rgb_pil,
};
use image::{DynamicImage, RgbImage};
use serde_json::Value;

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/image_processor")
}

fn read_json(name: &str) -> Value {
    let path = data_dir().join(name);
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

fn open(rel: &str) -> DynamicImage {
    let path = data_dir().join(rel);
    image::open(&path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()))
}

fn usize_of(v: &Value) -> usize {
    v.as_u64().unwrap() as usize
}

fn filter_of(name: &str) -> Filter {
    match name {
        "bicubic" => Filter::Bicubic,
        "bilinear" => Filter::Bilinear,
        "lanczos" => Filter::Lanczos,
        "hamming" => Filter::Hamming,
        "box" => Filter::Box,
        other => panic!("unknown filter {other}"),
    }
}

fn first_mismatch(a: &[u8], b: &[u8]) -> Option<(usize, u8, u8)> {
    a.iter()
        .zip(b)
        .enumerate()
        .find(|(_, (x, y))| x != y)
        .map(|(i, (x, y))| (i, *x, *y))
}

#[test]
fn resampler_matches_pillow_byte_for_byte() {
    let spec = read_json("resample.json");
    let cases = spec["cases"].as_array().unwrap();
    assert!(cases.len() >= 15);
    for case in cases {
        let (w, h) = (
            usize_of(&case["width"]) as u32,
            usize_of(&case["height"]) as u32,
        );
        let filter = filter_of(case["filter"].as_str().unwrap());
        let src = open(case["source"].as_str().unwrap());
        let expected = open(case["expected"].as_str().unwrap());
        let label = case["expected"].as_str().unwrap();
        let (got, want) = if case["gray"].as_bool().unwrap_or(false) {
            (
                resize_gray_pil(&src.to_luma8(), w, h, filter).into_raw(),
                expected.to_luma8().into_raw(),
            )
        } else {
            (
                resize_rgb_pil(&src.to_rgb8(), w, h, filter).into_raw(),
                expected.to_rgb8().into_raw(),
            )
        };
        assert_eq!(got.len(), want.len(), "{label}: size");
        assert_eq!(
            first_mismatch(&got, &want),
            None,
            "{label}: first differing byte (index, ours, pillow)"
        );
    }
}

fn check_pixel_values(name: &str, out: &ProcessedImage, case: &Value) {
    let shape: Vec<usize> = case["shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(usize_of)
        .collect();
    assert_eq!(
        [out.num_patches, out.patch_dim],
        [shape[0], shape[1]],
        "{name}: shape"
    );
    assert_eq!(
        out.pixel_values.len(),
        shape[0] * shape[1],
        "{name}: length"
    );
    let grid: Vec<usize> = case["grid_thw"]
        .as_array()
        .unwrap()
        .iter()
        .map(usize_of)
        .collect();
    assert_eq!(out.grid_thw.to_vec(), grid, "{name}: grid");

    let idx = case["sample_indices"].as_array().unwrap();
    let vals = case["sample_values"].as_array().unwrap();
    for (i, v) in idx.iter().zip(vals) {
        let (i, v) = (usize_of(i), v.as_f64().unwrap());
        let got = f64::from(out.pixel_values[i]);
        assert!(
            (got - v).abs() <= 1e-5,
            "{name}: pixel_values[{i}] = {got}, transformers {v}"
        );
    }

    let n = out.pixel_values.len() as f64;
    let (mut sum, mut sum_sq, mut weighted) = (0f64, 0f64, 0f64);
    for (i, &v) in out.pixel_values.iter().enumerate() {
        let v = f64::from(v);
        sum += v;
        sum_sq += v * v;
        weighted += v * ((i % 97) + 1) as f64;
    }
    let close = |got: f64, want: f64, what: &str| {
        // Per-element agreement within 1e-5 bounds each sum's difference by 1e-5 * (sum of weights).
        assert!(
            (got - want).abs() <= 1e-5 * n * 100.0 + 1e-9 * want.abs(),
            "{name}: {what} {got} vs {want}"
        );
    };
    close(sum, case["sum"].as_f64().unwrap(), "sum");
    close(sum_sq, case["sum_sq"].as_f64().unwrap(), "sum of squares");
    close(
        weighted,
        case["weighted_sum"].as_f64().unwrap(),
        "weighted sum",
    );
    assert!(
        (sum / n - case["mean"].as_f64().unwrap()).abs() < 1e-6,
        "{name}: mean"
    );

    if let Some(full) = case["full"].as_str() {
        let bytes = std::fs::read(data_dir().join(full)).unwrap();
        let want: Vec<f32> = bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        assert_eq!(want.len(), out.pixel_values.len(), "{name}: full length");
        // The whole chain is deterministic IEEE float32 arithmetic, so it is bit-exact.
        for (i, (a, b)) in out.pixel_values.iter().zip(&want).enumerate() {
            assert_eq!(
                a.to_bits(),
                b.to_bits(),
                "{name}: full[{i}] = {a}, transformers {b}"
            );
        }
    }
}

#[test]
fn processor_matches_transformers() {
    let spec = read_json("processor.json");
    let cases = spec["cases"].as_array().unwrap();
    assert!(cases.len() >= 10);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let cfg = ImageProcessorConfig {
            min_pixels: usize_of(&case["min_pixels"]),
            max_pixels: usize_of(&case["max_pixels"]),
            ..Default::default()
        };
        let input = data_dir().join(case["input"].as_str().unwrap());

        // Intermediate: RGB conversion + smart_resize + Pillow bicubic, byte for byte.
        let img = image::open(&input).unwrap();
        let rgb = convert_to_rgb(&img);
        let (h, w) = smart_resize(
            rgb.height() as usize,
            rgb.width() as usize,
            28,
            cfg.min_pixels,
            cfg.max_pixels,
        )
        .unwrap();
        assert_eq!(
            [h, w],
            [
                usize_of(&case["resized_height"]),
                usize_of(&case["resized_width"])
            ],
            "{name}: smart_resize"
        );
        let resized = resize_bicubic_pil(&rgb, w as u32, h as u32);
        let want = open(case["resized"].as_str().unwrap()).to_rgb8();
        assert_eq!(
            resized.dimensions(),
            want.dimensions(),
            "{name}: resized size"
        );
        assert_eq!(
            first_mismatch(resized.as_raw(), want.as_raw()),
            None,
            "{name}: resized bytes (index, ours, pil)"
        );

        // Final pixel_values, through the file-level entry point.
        let out = load_and_process(&input, &cfg).unwrap_or_else(|e| panic!("{name}: {e}"));
        check_pixel_values(name, &out, case);
        assert_eq!(
            out,
            process_image(&img, &cfg).unwrap(),
            "{name}: process_image vs load_and_process"
        );
    }
}

#[test]
fn white_224_reference_fact() {
    let img = DynamicImage::ImageRgb8(RgbImage::from_pixel(224, 224, image::Rgb([255, 255, 255])));
    let out = process_image(&img, &ImageProcessorConfig::default()).unwrap();
    assert_eq!((out.num_patches, out.patch_dim), (256, 1176));
    assert_eq!(out.grid_thw, [1, 16, 16]);
    assert_eq!(out.num_merged_tokens(2), 64);
    let mean =
        out.pixel_values.iter().map(|&v| f64::from(v)).sum::<f64>() / out.pixel_values.len() as f64;
    assert!((mean - 2.050372362136841).abs() < 1e-6, "mean {mean}");
}

#[test]
fn smart_resize_matches_transformers() {
    let spec = read_json("smart_resize.json");
    for case in spec["ok"].as_array().unwrap() {
        let (h, w) = (usize_of(&case["height"]), usize_of(&case["width"]));
        let got = smart_resize(
            h,
            w,
            usize_of(&case["factor"]),
            usize_of(&case["min_pixels"]),
            usize_of(&case["max_pixels"]),
        )
        .unwrap();
        let want: Vec<usize> = case["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(usize_of)
            .collect();
        assert_eq!(vec![got.0, got.1], want, "smart_resize({h}, {w})");
    }
    for case in spec["errors"].as_array().unwrap() {
        let (h, w) = (usize_of(&case["height"]), usize_of(&case["width"]));
        let msg = case["message"].as_str().unwrap();
        let err = smart_resize(h, w, 28, 56 * 56, 28 * 28 * 1280).unwrap_err();
        if msg.contains("aspect ratio") {
            let ratio = msg.rsplit(' ').next().unwrap();
            assert!(
                matches!(err, ImageProcessorError::AspectRatio { .. }),
                "{err:?}"
            );
            assert!(
                err.to_string().contains(ratio),
                "{err} should name the ratio {ratio}"
            );
        } else {
            assert!(
                matches!(err, ImageProcessorError::TooSmall { factor: 28, .. }),
                "{err:?}"
            );
        }
    }
}

#[test]
fn smart_resize_rounds_half_to_even() {
    let (lo, hi) = (56 * 56, 28 * 28 * 1280);
    // 70 / 28 = 2.5 -> 2, 126 / 28 = 4.5 -> 4, 98 / 28 = 3.5 -> 4.
    assert_eq!(smart_resize(70, 126, 28, lo, hi).unwrap(), (56, 112));
    assert_eq!(smart_resize(98, 98, 28, lo, hi).unwrap(), (112, 112));
    assert_eq!(smart_resize(224, 224, 28, lo, hi).unwrap(), (224, 224));
    // Upscaled to reach min_pixels, downscaled to fit max_pixels.
    assert_eq!(smart_resize(30, 40, 28, lo, hi).unwrap(), (56, 84));
    assert_eq!(smart_resize(1000, 1000, 28, lo, hi).unwrap(), (980, 980));
    match smart_resize(28, 5700, 28, lo, hi).unwrap_err() {
        ImageProcessorError::AspectRatio { ratio, .. } => {
            assert!((ratio - 5700.0 / 28.0).abs() < 1e-12)
        }
        other => panic!("unexpected {other:?}"),
    }
    // Exactly 200 is allowed.
    assert!(smart_resize(28, 5600, 28, lo, hi).is_ok());
}

#[test]
fn config_parses_both_layouts() {
    let d = ImageProcessorConfig::default();
    assert_eq!(
        (
            d.min_pixels,
            d.max_pixels,
            d.patch_size,
            d.temporal_patch_size,
            d.merge_size
        ),
        (3136, 1003520, 14, 2, 2)
    );

    // Written by transformers 4.47.1 (top-level min/max_pixels plus a `size` dict).
    let a =
        ImageProcessorConfig::from_file(&data_dir().join("config_transformers_4_47.json")).unwrap();
    assert_eq!((a.min_pixels, a.max_pixels), (12 * 28 * 28, 300 * 28 * 28));
    assert_eq!(a.image_mean, d.image_mean);
    assert_eq!(a.image_std, d.image_std);
    assert_eq!(a.rescale_factor, 1.0 / 255.0);
    assert_eq!(
        ImageProcessorConfig {
            min_pixels: d.min_pixels,
            max_pixels: d.max_pixels,
            ..a.clone()
        },
        d
    );

    // Only `size` with shortest_edge/longest_edge, plus an unknown key.
    let b = ImageProcessorConfig::from_file(&data_dir().join("config_size_edges.json")).unwrap();
    assert_eq!(b, a);

    // Only `size` with min_pixels/max_pixels; the Hub preprocessor_config.json layout.
    let c: ImageProcessorConfig =
        serde_json::from_str(r#"{"size": {"min_pixels": 1000, "max_pixels": 5000}, "image_processor_type": "Qwen2VLImageProcessor"}"#)
            .unwrap();
    assert_eq!((c.min_pixels, c.max_pixels), (1000, 5000));
    let hub: ImageProcessorConfig = serde_json::from_str(
        r#"{"min_pixels": 3136, "max_pixels": 12845056, "patch_size": 14, "temporal_patch_size": 2, "merge_size": 2,
            "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711],
            "image_processor_type": "Qwen2VLImageProcessor", "processor_class": "Qwen2VLProcessor"}"#,
    )
    .unwrap();
    assert_eq!(
        hub,
        ImageProcessorConfig {
            max_pixels: 12845056,
            ..d.clone()
        }
    );
    // Top level wins over `size`.
    let e: ImageProcessorConfig = serde_json::from_str(
        r#"{"min_pixels": 10, "size": {"min_pixels": 1000, "max_pixels": 5000}}"#,
    )
    .unwrap();
    assert_eq!((e.min_pixels, e.max_pixels), (10, 5000));
    // Round trip through Serialize.
    let back: ImageProcessorConfig =
        serde_json::from_str(&serde_json::to_string(&a).unwrap()).unwrap();
    assert_eq!(back, a);
    // Unsupported settings are rejected with a message.
    let err = serde_json::from_str::<ImageProcessorConfig>(r#"{"resample": 2}"#).unwrap_err();
    assert!(err.to_string().contains("resample"), "{err}");
    assert!(serde_json::from_str::<ImageProcessorConfig>(r#"{"image_mean": [0.5, 0.5]}"#).is_err());
    let scalar: ImageProcessorConfig =
        serde_json::from_str(r#"{"image_mean": 0.5, "image_std": 0.5}"#).unwrap();
    assert_eq!((scalar.image_mean, scalar.image_std), ([0.5; 3], [0.5; 3]));
}

#[test]
fn config_file_errors_name_the_file() {
    let missing = data_dir().join("no_such_config.json");
    let err = ImageProcessorConfig::from_file(&missing).unwrap_err();
    assert!(err.to_string().contains("no_such_config.json"), "{err}");
    let not_json = data_dir().join("processor/white_224.png");
    let err = ImageProcessorConfig::from_file(&not_json).unwrap_err();
    assert!(err.to_string().contains("white_224.png"), "{err}");
}

#[test]
fn image_errors_name_the_file() {
    let dir = std::env::temp_dir().join(format!("adamllm-imgproc-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = ImageProcessorConfig::default();

    let bogus = dir.join("not_an_image.png");
    std::fs::write(&bogus, b"this is not a png").unwrap();
    let err = load_and_process(&bogus, &cfg).unwrap_err();
    assert!(matches!(err, ImageProcessorError::Decode { .. }), "{err:?}");
    assert!(err.to_string().contains("not_an_image.png"), "{err}");

    let missing = dir.join("missing.png");
    let err = load_and_process(&missing, &cfg).unwrap_err();
    assert!(err.to_string().contains("missing.png"), "{err}");

    let thin = dir.join("thin.png");
    RgbImage::from_pixel(5700, 28, image::Rgb([1, 2, 3]))
        .save(&thin)
        .unwrap();
    let err = load_and_process(&thin, &cfg).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("thin.png") && msg.contains("203.57142857142858"),
        "{msg}"
    );

    let small = dir.join("small.png");
    RgbImage::from_pixel(20, 20, image::Rgb([1, 2, 3]))
        .save(&small)
        .unwrap();
    let err = load_and_process(&small, &cfg).unwrap_err();
    assert!(
        matches!(err, ImageProcessorError::TooSmall { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("small.png"), "{err}");

    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn no_resize_requires_multiples_of_factor() {
    let cfg = ImageProcessorConfig {
        do_resize: false,
        ..Default::default()
    };
    let ok = DynamicImage::ImageRgb8(RgbImage::from_pixel(56, 28, image::Rgb([0, 0, 0])));
    assert_eq!(process_image(&ok, &cfg).unwrap().grid_thw, [1, 2, 4]);
    let bad = DynamicImage::ImageRgb8(RgbImage::from_pixel(57, 28, image::Rgb([0, 0, 0])));
    assert!(matches!(
        process_image(&bad, &cfg),
        Err(ImageProcessorError::NotDivisible { .. })
    ));
}
