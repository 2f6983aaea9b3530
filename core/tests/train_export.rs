//! The trainer's export loads in transformers (+ PEFT) with the loss `adamllm loss` computes.
//!
//! `tests/fixtures/gen_train_export.sh` trained a LoRA run on the tiny preset (seed 11), copied
//! its `model/` and `adapter/` here and recorded what transformers 4.47.1 and PEFT 0.13.2
//! compute on them (`expected.json`): the merged model's loss, and the loss of the base model
//! with the adapter applied by PEFT.

mod common;

use adamllm::burn::tensor::{DType, Device};
use adamllm::loss::{encode_dataset, mean_loss};
use adamllm::models::Model;
use adamllm::models::prompt::LabelMode;
use adamllm::models::qwen2_vl::presets::{Preset, init_model_dir};

fn our_loss(model_dir: &std::path::Path, device: &Device) -> f64 {
    let data = common::fixture("train_export/data.jsonl");
    let model = Model::load(model_dir, device, DType::F32).unwrap();
    let examples = encode_dataset(&model, &data, None, LabelMode::AssistantTurns).unwrap();
    mean_loss(&model, &examples, 2, |_| {}).unwrap().loss
}

#[test]
fn exported_model_and_adapter_match_transformers() {
    let expected: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(common::fixture("train_export/expected.json")).unwrap(),
    )
    .unwrap();
    let model_loss = expected["model_loss"].as_f64().unwrap();
    let adapter_loss = expected["adapter_loss"].as_f64().unwrap();
    let merged_loss = expected["adapter_merged_loss"].as_f64().unwrap();

    for (name, selected) in common::test_devices() {
        let ours = our_loss(&common::fixture("train_export/model"), &selected.device);
        assert!(
            (ours - model_loss).abs() < 1e-4,
            "{name}: adamllm {ours} vs transformers {model_loss}"
        );
        // PEFT on the untouched base gives the same as our merged export.
        assert!(
            (ours - adapter_loss).abs() < 1e-4,
            "{name}: adamllm {ours} vs PEFT {adapter_loss}"
        );
        assert!((ours - merged_loss).abs() < 1e-4);
    }

    // Training moved the model: the base it started from scores differently.
    let tmp = tempfile::tempdir().unwrap();
    init_model_dir(&tmp.path().join("base"), Preset::Tiny, 11, false).unwrap();
    let base = our_loss(&tmp.path().join("base"), &Device::flex());
    assert!(
        base - model_loss > 0.3,
        "base {base} vs trained {model_loss}"
    );
}
