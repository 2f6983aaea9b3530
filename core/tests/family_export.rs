//! The trainer's export of the Llama and LLaVA-NeXT families loads in transformers (+ PEFT)
//! with the loss `adamllm loss` computes.
//!
//! `tests/fixtures/gen_family_export.sh` trained a LoRA run on the `llama-tiny` and
//! `llava-next-tiny` presets (seed 11), copied each run's `model/` and `adapter/` here and
//! recorded what transformers 4.47.1 and PEFT 0.13.2 compute on them (`expected.json`): the
//! exported model's loss, and the loss of the base model with the adapter applied by PEFT.

mod common;

use adamllm::burn::tensor::{DType, Device};
use adamllm::loss::{encode_dataset, mean_loss};
use adamllm::models::Model;
use adamllm::models::prompt::LabelMode;
use adamllm::models::registry::family_of_preset;

fn our_loss(family: &str, model_dir: &std::path::Path, device: &Device) -> f64 {
    let data = common::fixture(&format!("family_export/data_{family}.jsonl"));
    let model = Model::load(model_dir, device, DType::F32).unwrap();
    let examples = encode_dataset(&model, &data, None, LabelMode::AssistantTurns).unwrap();
    mean_loss(&model, &examples, 2, |_| {}).unwrap().loss
}

fn check(family: &str, preset: &str) {
    let dir = common::fixture(&format!("family_export/{family}"));
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    let model_loss = expected["model_loss"].as_f64().unwrap();
    let adapter_loss = expected["adapter_loss"].as_f64().unwrap();
    for (name, selected) in common::test_devices() {
        let ours = our_loss(family, &dir.join("model"), &selected.device);
        assert!(
            (ours - model_loss).abs() < 1e-4,
            "{family} on {name}: adamllm {ours} vs transformers {model_loss}"
        );
        assert!(
            (ours - adapter_loss).abs() < 1e-4,
            "{family} on {name}: adamllm {ours} vs PEFT {adapter_loss}"
        );
    }
    // Training moved the model: the base it started from scores differently.
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base");
    family_of_preset(preset)
        .unwrap()
        .write_preset(preset, &base, 11)
        .unwrap();
    let base_loss = our_loss(family, &base, &Device::flex());
    assert!(
        base_loss - model_loss > 0.3,
        "base {base_loss} vs trained {model_loss}"
    );
}

#[test]
fn llama_export_and_adapter_match_transformers_and_peft() {
    check("llama", "llama-tiny");
}

#[test]
fn llava_next_export_and_adapter_match_transformers_and_peft() {
    check("llava_next", "llava-next-tiny");
}
