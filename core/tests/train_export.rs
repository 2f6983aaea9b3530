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

/// A model exported in shards (`max_shard_size`) is transformers' sharded layout: numbered
/// files, an index naming every tensor's file and the total size, and the same weights as the
/// single file. Exporting again in one file removes the old shards and index.
#[test]
fn sharded_export_holds_the_single_file_weights() {
    use adamllm::models::export::save_model_dir;
    let tmp = tempfile::tempdir().unwrap();
    let model = Model::load(
        &common::fixture("train_export/model"),
        &Device::flex(),
        DType::F32,
    )
    .unwrap();
    let single = tmp.path().join("single");
    save_model_dir(&model, &single, 5_000_000_000).unwrap();
    let single_file = single.join("model.safetensors");
    assert!(!single.join("model.safetensors.index.json").exists());
    let tensors = common::read_reference(&single_file);
    let total: u64 = tensors
        .values()
        .map(|t| 4 * t.shape().iter().product::<usize>() as u64)
        .sum();

    let sharded = tmp.path().join("sharded");
    save_model_dir(&model, &sharded, total / 3).unwrap();
    let index: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(sharded.join("model.safetensors.index.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(index["metadata"]["total_size"].as_u64(), Some(total));
    let weight_map = index["weight_map"].as_object().unwrap();
    let mut files: Vec<&str> = weight_map.values().map(|f| f.as_str().unwrap()).collect();
    files.sort();
    files.dedup();
    assert!(files.len() >= 3, "{files:?}");
    let count = files.len();
    for (i, file) in files.iter().enumerate() {
        assert_eq!(
            *file,
            format!("model-{:05}-of-{count:05}.safetensors", i + 1)
        );
        // Each shard holds exactly the tensors the index assigns to it, as in the single file.
        let shard = common::read_reference(&sharded.join(file));
        for (name, tensor) in &shard {
            assert_eq!(weight_map[name], *file, "{name}");
            assert_eq!(tensor.f32(), tensors[name].f32(), "{name}");
        }
    }
    assert_eq!(weight_map.len(), tensors.len());
    assert!(!sharded.join("model.safetensors").exists());
    let loss = our_loss(&sharded, &Device::flex());
    assert_eq!(loss, our_loss(&single, &Device::flex()));

    save_model_dir(&model, &sharded, 5_000_000_000).unwrap();
    let left: Vec<String> = std::fs::read_dir(&sharded)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("safetensors"))
        .collect();
    assert_eq!(left, ["model.safetensors"]);
}
