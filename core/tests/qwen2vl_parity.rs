//! Parity with transformers 4.47.1: tiny random Qwen2-VL models built by
//! `tests/fixtures/gen_qwen2vl_fixtures.py` (configs `cfg_a`: f32, tied, single file;
//! `cfg_b`: bf16 on disk, sharded, untied), checked on flex and on wgpu.
//! Cases: text only, one non-square resized image, two images in a multi-turn conversation,
//! and greedy generation.

mod common;

use adamllm::burn::tensor::DType;
use adamllm::data::conversation::Conversation;
use adamllm::generation::{GenerationOptions, PromptInput, generate};
use adamllm::models::Network;
use adamllm::models::image::ImageOptions;
use adamllm::models::layers::{tensor_from_vec, tensor_to_vec};
use adamllm::models::prompt::LabelMode;
use adamllm::models::{Model, TokenBatch};
use common::*;

const LOGITS_TOL: f32 = 1e-4;
const LOSS_TOL: f64 = 1e-4;

fn check_case(model: &Model, dir: &std::path::Path, case: &str, device_name: &str) {
    let tag = format!(
        "{}/{case} on {device_name}",
        dir.file_name().unwrap().to_string_lossy()
    );
    let row: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join(format!("{case}.json"))).unwrap())
            .unwrap();
    let expected: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join(format!("{case}.expected.json"))).unwrap(),
    )
    .unwrap();
    let reference = read_reference(&dir.join(format!("{case}.safetensors")));
    let conversation = Conversation::from_json(&row).unwrap();
    let images: Vec<_> = conversation
        .images
        .iter()
        .map(|p| {
            model
                .load_image(&dir.join(p), &ImageOptions::default())
                .unwrap()
        })
        .collect();
    let generation = expected["add_generation_prompt"].as_bool().unwrap_or(false);
    let encoded = model
        .processor
        .encode(
            &conversation,
            &images,
            generation,
            LabelMode::AssistantTurns,
        )
        .unwrap();
    assert_eq!(
        encoded.text,
        expected["rendered"].as_str().unwrap(),
        "{tag}: rendered prompt"
    );
    let ids: Vec<i64> = encoded.ids.iter().map(|&i| i as i64).collect();
    assert_eq!(ids, reference["input_ids"].i64(), "{tag}: input ids");
    assert_eq!(encoded.labels, reference["labels"].i64(), "{tag}: labels");
    if let Some(px) = reference.get("pixel_values") {
        let ours: Vec<f32> = images.iter().flat_map(|i| i.pixel_values.clone()).collect();
        let d = max_abs_diff(&ours, px.f32());
        assert!(d <= 1e-5, "{tag}: pixel_values differ by {d}");
        let grids: Vec<i64> = images
            .iter()
            .flat_map(|i| i.grid_thw.iter().map(|&g| g as i64))
            .collect();
        assert_eq!(grids, reference["image_grid_thw"].i64(), "{tag}: grids");
    }
    let batch = TokenBatch::from_sequences(
        vec![(encoded.ids.clone(), images.clone())],
        model.processor.pad_id,
        false,
    );
    let positions = model.net().positions(&batch);
    let flat: Vec<i64> = positions[0].axes.iter().flatten().copied().collect();
    assert_eq!(
        flat,
        reference["position_ids"].i64(),
        "{tag}: M-RoPE positions"
    );

    if let Some(embeds) = reference.get("image_embeds") {
        let px: Vec<f32> = images.iter().flat_map(|i| i.pixel_values.clone()).collect();
        let rows = px.len() / 1176;
        let pixels = tensor_from_vec(px, [rows, 1176], &model.device, DType::F32);
        let grids: Vec<[usize; 3]> = images.iter().map(|i| i.grid_thw).collect();
        let Network::Qwen2Vl(net) = &model.network else {
            panic!("{tag}: not a Qwen2-VL network")
        };
        let ours = tensor_to_vec(net.vision.as_ref().unwrap().forward(pixels, &grids));
        let d = max_abs_diff(&ours, embeds.f32());
        assert!(d <= LOGITS_TOL, "{tag}: image embeds differ by {d}");
    }

    let logits = tensor_to_vec(model.logits(&batch).unwrap());
    let d = max_abs_diff(&logits, reference["logits"].f32());
    assert!(d <= LOGITS_TOL, "{tag}: logits differ by {d}");

    if !generation {
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
                ids: encoded.ids.clone(),
                images: images.clone(),
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
            "{tag}: greedy generation"
        );
    }
}

fn check_config(name: &str) {
    let dir = fixture(&format!("qwen2vl/{name}"));
    let cases = fixture_cases(&dir);
    assert!(cases.len() >= 2, "{name}: fixture cases missing");
    for (device_name, selected) in test_devices() {
        let model = Model::load(&dir, &selected.device, DType::F32).unwrap();
        for case in &cases {
            check_case(&model, &dir, case, device_name);
        }
    }
}

#[test]
fn cfg_a_f32_tied_single_file_matches_transformers() {
    check_config("cfg_a");
}

#[test]
fn cfg_b_bf16_sharded_untied_matches_transformers() {
    check_config("cfg_b");
}
