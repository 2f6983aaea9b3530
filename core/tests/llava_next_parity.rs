//! LLaVA-NeXT (`LlavaNextForConditionalGeneration`, Llama LM) against transformers 4.47.1: the
//! fixtures of `tests/fixtures/gen_llava_next_fixtures.py`.
//!
//! - The real-size anyres image processor (336 crops, the real pinpoints) on images drawn by a
//!   formula: best resolution, crops, per-crop sums, sampled values, image-token counts.
//! - Tiny models in the AdaMLLM layout (`<|reserved_special_token_4|>`, the authors' prompt),
//!   the llava-hf layout (`<image>` added, padded vocabulary, tied head, bf16 shards) and the
//!   original LLaVA repository's layout: rendered prompt, ids, labels, pixel values, packed image
//!   features, logits (≤ 1e-4), loss (≤ 1e-4) and 12 greedy tokens, on flex and wgpu.

mod common;

use adamllm::burn::tensor::DType;
use adamllm::data::conversation::{Conversation, Role};
use adamllm::generation::{GenerationOptions, PromptInput, generate};
use adamllm::models::image::{ImageOptions, ImagePreprocessor, ProcessedImage};
use adamllm::models::layers::tensor_to_vec;
use adamllm::models::llava_next::config::default_pinpoints;
use adamllm::models::llava_next::image_processor::AnyresConfig;
use adamllm::models::prompt::LabelMode;
use adamllm::models::{Model, Network, TokenBatch};
use common::{fixture, fixture_cases, read_reference, test_devices};
use serde_json::Value;

const TOL: f32 = 1e-4;
const LOSS_TOL: f64 = 1e-4;

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn json(path: &std::path::Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The fixture's formula image: R = (3x+y) % 256, G = (x+5y) % 256, B = (x·y) % 256, and for
/// RGBA A = (x+2y) % 256.
fn formula_image(w: u32, h: u32, rgba: bool) -> image::DynamicImage {
    let px = |x: u32, y: u32| {
        [
            ((3 * x + y) % 256) as u8,
            ((x + 5 * y) % 256) as u8,
            ((x * y) % 256) as u8,
        ]
    };
    if rgba {
        image::DynamicImage::ImageRgba8(image::RgbaImage::from_fn(w, h, |x, y| {
            let [r, g, b] = px(x, y);
            image::Rgba([r, g, b, ((x + 2 * y) % 256) as u8])
        }))
    } else {
        image::DynamicImage::ImageRgb8(image::RgbImage::from_fn(w, h, |x, y| image::Rgb(px(x, y))))
    }
}

#[test]
fn real_size_anyres_processor_matches_transformers() {
    let cases = json(&fixture("llava_next/processor_cases.json"));
    let processor = AnyresConfig::from_json(None, &default_pinpoints(), 14, true, 0).unwrap();
    let side = 336 * 336;
    for case in cases["cases"].as_array().unwrap() {
        let (w, h) = (
            case["width"].as_u64().unwrap() as u32,
            case["height"].as_u64().unwrap() as u32,
        );
        let tag = format!("{w}x{h}");
        let img = formula_image(w, h, case["mode"] == "RGBA");
        let out = processor.process(&img, &ImageOptions::default()).unwrap();
        let crops = case["num_crops"].as_u64().unwrap() as usize;
        assert_eq!(out.num_patches, crops, "{tag}: crops");
        assert_eq!(
            out.tokens,
            case["num_image_tokens"].as_u64().unwrap() as usize,
            "{tag}: tokens"
        );
        let best: Vec<usize> = serde_json::from_value(case["best_resolution_hw"].clone()).unwrap();
        assert_eq!(
            [out.grid_thw[1] * 336, out.grid_thw[2] * 336],
            [best[0], best[1]],
            "{tag}: best resolution"
        );
        let layout = processor
            .layout(w as usize, h as usize, &ImageOptions::default())
            .unwrap();
        assert_eq!(
            (layout.num_patches, layout.tokens),
            (out.num_patches, out.tokens),
            "{tag}: layout"
        );
        for (k, sums) in case["crop_channel_sums_f64"]
            .as_array()
            .unwrap()
            .iter()
            .enumerate()
        {
            for (c, want) in sums.as_array().unwrap().iter().enumerate() {
                let start = (k * 3 + c) * side;
                let got: f64 = out.pixel_values[start..start + side]
                    .iter()
                    .map(|&v| v as f64)
                    .sum();
                let want = want.as_f64().unwrap();
                assert!(
                    (got - want).abs() <= 1e-6 * want.abs().max(1.0),
                    "{tag}: crop {k} channel {c} sum {got} vs {want}"
                );
            }
        }
        for s in case["samples"].as_array().unwrap() {
            let i: Vec<usize> = serde_json::from_value(s["index"].clone()).unwrap();
            let got = out.pixel_values[((i[0] * 3 + i[1]) * 336 + i[2]) * 336 + i[3]];
            let want = s["value"].as_f64().unwrap() as f32;
            assert!(
                (got - want).abs() <= 1e-6,
                "{tag}: pixel {i:?} {got} vs {want}"
            );
        }
    }
}

/// The images of a case, processed by the model.
fn case_images(model: &Model, dir: &std::path::Path, row: &Value) -> Vec<ProcessedImage> {
    row["images"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|p| {
                    model
                        .load_image(&dir.join(p.as_str().unwrap()), &ImageOptions::default())
                        .unwrap()
                })
                .collect()
        })
        .unwrap_or_default()
}

fn check_case(
    model: &Model,
    dir: &std::path::Path,
    case_dir: &std::path::Path,
    case: &str,
    device: &str,
) {
    let tag = format!("{}/{case} on {device}", dir.display());
    let row = json(&case_dir.join(format!("{case}.json")));
    let expected = json(&case_dir.join(format!("{case}.expected.json")));
    let reference = read_reference(&case_dir.join(format!("{case}.safetensors")));
    let conversation = Conversation::from_json(&row).unwrap();
    let images = case_images(model, case_dir, &row);
    let open = match row["generation_role"].as_str() {
        Some("user") => Some(Role::User),
        Some(_) => Some(Role::Assistant),
        None => None,
    };
    let encoded = model
        .processor
        .encode_opening(&conversation, &images, open, LabelMode::AssistantTurns)
        .unwrap();
    assert_eq!(
        encoded.text,
        expected["rendered"].as_str().unwrap(),
        "{tag}: rendered"
    );
    let ids: Vec<i64> = encoded.ids.iter().map(|&i| i as i64).collect();
    assert_eq!(ids, reference["input_ids"].i64(), "{tag}: ids");
    if let Some(px) = reference.get("pixel_values") {
        // [n_img, max_crops, 3, S, S], padding crops zero.
        let per_crop = images[0].patch_dim;
        let max_crops = px.shape()[1];
        for (k, img) in images.iter().enumerate() {
            let start = k * max_crops * per_crop;
            let want = &px.f32()[start..start + img.num_patches * per_crop];
            let d = max_abs_diff(&img.pixel_values, want);
            assert!(d <= 1e-6, "{tag}: pixel values of image {k} differ by {d}");
        }
        let Network::LlavaNext(net) = &model.network else {
            panic!("{tag}: not a LLaVA-NeXT network")
        };
        let refs: Vec<&ProcessedImage> = images.iter().collect();
        let feats = tensor_to_vec(net.image_features(&refs, burn::tensor::DType::F32).unwrap());
        let d = max_abs_diff(&feats, reference["image_features"].f32());
        assert!(d <= TOL, "{tag}: image features differ by {d}");
    }
    let batch = TokenBatch::from_sequences(
        vec![(encoded.ids.clone(), images.clone())],
        model.processor.pad_id,
        false,
    );
    let logits = tensor_to_vec(model.logits(&batch).unwrap());
    let d = max_abs_diff(&logits, reference["logits"].f32());
    assert!(d <= TOL, "{tag}: logits differ by {d}");
    if open.is_none() {
        assert_eq!(encoded.labels, reference["labels"].i64(), "{tag}: labels");
        let (sum, n) = model
            .loss_sum(&batch, std::slice::from_ref(&encoded.labels))
            .unwrap();
        let loss = tensor_to_vec(sum)[0] as f64 / n as f64;
        let want = expected["loss"].as_f64().unwrap();
        assert_eq!(
            n as u64,
            expected["num_supervised_tokens"].as_u64().unwrap(),
            "{tag}"
        );
        assert!(
            (loss - want).abs() <= LOSS_TOL,
            "{tag}: loss {loss} vs {want}"
        );
    } else {
        let out = generate(
            model,
            &[PromptInput {
                ids: encoded.ids,
                images,
            }],
            &GenerationOptions {
                max_new_tokens: 12,
                ignore_eos: true,
                ..Default::default()
            },
        )
        .unwrap();
        let got: Vec<i64> = out[0].token_ids.iter().map(|&t| t as i64).collect();
        assert_eq!(
            got,
            reference["generated_ids"].i64(),
            "{tag}: greedy tokens"
        );
    }
}

fn check_config(name: &str, cases_from: &str) {
    let dir = fixture(&format!("llava_next/{name}"));
    let case_dir = fixture(&format!("llava_next/{cases_from}"));
    for (device, selected) in test_devices() {
        let model = Model::load(&dir, &selected.device, DType::F32).unwrap();
        assert_eq!(model.spec.family, "llava_next");
        for case in fixture_cases(&case_dir) {
            check_case(&model, &dir, &case_dir, &case, device);
        }
    }
}

#[test]
fn cfg_a_adamllm_layout_matches_transformers() {
    check_config("cfg_a", "cfg_a");
}

#[test]
fn cfg_b_llava_hf_layout_padded_vocab_tied_bf16_matches_transformers() {
    check_config("cfg_b", "cfg_b");
}

#[test]
fn original_llava_layout_loads_as_cfg_a() {
    check_config("cfg_orig", "cfg_a");
}
