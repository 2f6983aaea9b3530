//! Llama (`LlamaForCausalLM`) against transformers 4.47.1: the fixtures of
//! `tests/fixtures/gen_llama_fixtures.py` (GQA + untied head; tied head + llama3 rope scaling +
//! an explicit head_dim, bf16 shards; attention and MLP biases). For every case: the rendered
//! chat template, ids, labels, logits (≤ 1e-4), loss (≤ 1e-4) and 12 greedy tokens, on flex and
//! on wgpu.

mod common;

use adamllm::burn::tensor::DType;
use adamllm::data::conversation::Conversation;
use adamllm::generation::{GenerationOptions, PromptInput, generate};
use adamllm::models::Model;
use adamllm::models::TokenBatch;
use adamllm::models::layers::tensor_to_vec;
use adamllm::models::prompt::LabelMode;
use common::{fixture, fixture_cases, read_reference, test_devices};

const LOGITS_TOL: f32 = 1e-4;
const LOSS_TOL: f64 = 1e-4;

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Ids of a case: the chat template's rendering, or plain text with the tokenizer's BOS.
fn encode(
    model: &Model,
    dir: &std::path::Path,
    case: &str,
) -> (Vec<u32>, Option<Vec<i64>>, String) {
    let row: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join(format!("{case}.json"))).unwrap())
            .unwrap();
    if let Some(text) = row.get("text").and_then(|t| t.as_str()) {
        return (
            model.processor.encode_plain(text).unwrap(),
            None,
            text.to_string(),
        );
    }
    let conversation = Conversation::from_json(&row).unwrap();
    let generation = conversation.messages.last().map(|m| m.role.as_str()) != Some("assistant");
    let encoded = model
        .processor
        .encode(&conversation, &[], generation, LabelMode::AssistantTurns)
        .unwrap();
    let labels = (!generation).then_some(encoded.labels);
    (encoded.ids, labels, encoded.text)
}

fn check_case(model: &Model, dir: &std::path::Path, case: &str, device: &str) {
    let tag = format!("{}/{case} on {device}", dir.display());
    let expected: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join(format!("{case}.expected.json"))).unwrap(),
    )
    .unwrap();
    let reference = read_reference(&dir.join(format!("{case}.safetensors")));
    let (ids, labels, text) = encode(model, dir, case);
    assert_eq!(
        text,
        expected["rendered"].as_str().unwrap(),
        "{tag}: rendered"
    );
    let ids64: Vec<i64> = ids.iter().map(|&i| i as i64).collect();
    assert_eq!(ids64, reference["input_ids"].i64(), "{tag}: ids");
    let batch = TokenBatch::from_sequences(
        vec![(ids.clone(), Vec::new())],
        model.processor.pad_id,
        false,
    );
    let logits = tensor_to_vec(model.logits(&batch).unwrap());
    let d = max_abs_diff(&logits, reference["logits"].f32());
    assert!(d <= LOGITS_TOL, "{tag}: logits differ by {d}");
    if let Some(labels) = labels {
        assert_eq!(labels, reference["labels"].i64(), "{tag}: labels");
        let (sum, n) = model
            .loss_sum(&batch, std::slice::from_ref(&labels))
            .unwrap();
        let loss = tensor_to_vec(sum)[0] as f64 / n as f64;
        assert_eq!(
            n as u64,
            expected["num_supervised_tokens"].as_u64().unwrap(),
            "{tag}"
        );
        let want = expected["loss"].as_f64().unwrap();
        assert!(
            (loss - want).abs() <= LOSS_TOL,
            "{tag}: loss {loss} vs {want}"
        );
    } else {
        let out = generate(
            model,
            &[PromptInput {
                ids,
                images: Vec::new(),
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

fn check_config(name: &str) {
    let dir = fixture(&format!("llama/{name}"));
    let cases = fixture_cases(&dir);
    for (device, selected) in test_devices() {
        let model = Model::load(&dir, &selected.device, DType::F32).unwrap();
        assert_eq!(model.spec.family, "llama");
        for case in &cases {
            check_case(&model, &dir, case, device);
        }
    }
}

#[test]
fn cfg_a_gqa_untied_matches_transformers() {
    check_config("cfg_a");
}

#[test]
fn cfg_b_tied_llama3_scaling_head_dim_bf16_shards_match_transformers() {
    check_config("cfg_b");
}

#[test]
fn cfg_c_attention_and_mlp_biases_match_transformers() {
    check_config("cfg_c");
}
