//! The family layer on every preset and its bad-input cases: each family's presets load,
//! generate and compute a loss through the one `Model` interface; unknown families, a LLaVA
//! image token missing from the tokenizer, missing vision weights, a chat template that fails
//! and image / placeholder mismatches are named errors.

mod common;

use std::path::{Path, PathBuf};

use adamllm::burn::tensor::{DType, Device};
use adamllm::data::conversation::{Conversation, Message, Role};
use adamllm::models::checkpoint::{CheckpointReader, NamedTensor, StorageDtype, write_safetensors};
use adamllm::models::image::ImageOptions;
use adamllm::models::prompt::LabelMode;
use adamllm::models::registry::family_of_preset;
use adamllm::models::{LoadOptions, Model, TokenBatch};

fn preset(dir: &Path, name: &str) -> PathBuf {
    let out = dir.join(name);
    family_of_preset(name)
        .unwrap()
        .write_preset(name, &out, 1)
        .unwrap();
    out
}

#[test]
fn every_family_preset_generates_and_scores_through_one_interface() {
    let tmp = tempfile::tempdir().unwrap();
    let image = common::write_picture(tmp.path());
    for (name, family) in [
        ("tiny", "qwen2_vl"),
        ("llama-tiny", "llama"),
        ("llava-next-tiny", "llava_next"),
    ] {
        let dir = preset(tmp.path(), name);
        let model = Model::load(&dir, &Device::flex(), DType::F32).unwrap();
        assert_eq!(model.spec.family, family, "{name}");
        // The vision families take the picture; Llama is text only.
        assert_eq!(
            model.processor.images.is_some(),
            family != "llama",
            "{name}"
        );
        let checked = common::score_and_generate(&model, &image, 4).unwrap();
        assert!(checked.supervised_tokens > 0, "{name}");
        let loss = checked.loss;
        assert!(loss.is_finite() && loss > 0.0, "{name}: loss {loss}");
        assert_eq!(checked.generated, 4, "{name}");
    }
}

#[test]
fn half_precision_losses_stay_within_one_percent_of_f32_in_every_family() {
    let tmp = tempfile::tempdir().unwrap();
    let image = common::write_picture(tmp.path());
    for name in ["tiny", "llama-tiny", "llava-next-tiny"] {
        let dir = preset(tmp.path(), name);
        let loss_in = |dtype: DType| {
            let model = Model::load(&dir, &Device::flex(), dtype).unwrap();
            assert_eq!(model.dtype, dtype, "{name}");
            let checked = common::score_and_generate(&model, &image, 2).unwrap();
            assert_eq!(checked.generated, 2, "{name} {dtype:?}");
            checked.loss
        };
        let full = loss_in(DType::F32);
        for half in [DType::F16, DType::BF16] {
            let loss = loss_in(half);
            let relative = ((loss - full) / full).abs();
            assert!(
                relative <= 1e-2,
                "{name} {half:?}: loss {loss} vs f32 {full} ({relative:.2e} relative)"
            );
        }
    }
}

#[test]
fn an_unknown_family_names_what_it_found_and_what_is_supported() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("mistral");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("config.json"),
        r#"{"model_type": "mistral", "architectures": ["MistralForCausalLM"]}"#,
    )
    .unwrap();
    let err = common::load_error(&dir);
    for part in [
        "config.json",
        "model_type",
        "\"mistral\"",
        "MistralForCausalLM",
        "qwen2_vl",
        "llama",
        "llava_next",
    ] {
        assert!(err.contains(part), "{part} missing from: {err}");
    }
    std::fs::write(
        dir.join("config.json"),
        r#"{"architectures": ["GPT2LMHeadModel"]}"#,
    )
    .unwrap();
    let err = common::load_error(&dir);
    assert!(
        err.contains("architectures") && err.contains("GPT2LMHeadModel"),
        "{err}"
    );
}

#[test]
fn a_llava_image_token_outside_the_tokenizer_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = preset(tmp.path(), "llava-next-tiny");
    let path = dir.join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    // Inside the (padded) embedding, but no token of tokenizer.json.
    config["image_token_index"] = serde_json::json!(760);
    std::fs::write(&path, config.to_string()).unwrap();
    let err = common::load_error(&dir);
    assert!(
        err.contains("image_token_index") && err.contains("760") && err.contains("tokenizer.json"),
        "{err}"
    );
    // A processor_config.json naming another image token than the config's.
    config["image_token_index"] = serde_json::json!(708);
    std::fs::write(&path, config.to_string()).unwrap();
    std::fs::write(
        dir.join("processor_config.json"),
        r#"{"image_token": "<image>"}"#,
    )
    .unwrap();
    let err = common::load_error(&dir);
    assert!(
        err.contains("processor_config.json") && err.contains("<image>"),
        "{err}"
    );
}

#[test]
fn a_llava_folder_without_vision_weights_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = preset(tmp.path(), "llava-next-tiny");
    let file = dir.join("model.safetensors");
    let reader = CheckpointReader::open_dir(&dir).unwrap();
    let kept: Vec<NamedTensor> = reader
        .names()
        .into_iter()
        .filter(|n| !n.starts_with("vision_tower."))
        .map(|name| {
            let shape = reader.shape(&name).unwrap().to_vec();
            NamedTensor {
                values: reader.read_f32(&name, &shape).unwrap(),
                name,
                shape,
            }
        })
        .collect();
    drop(reader);
    write_safetensors(&file, &kept, StorageDtype::F32).unwrap();
    let err = common::load_error(&dir);
    assert!(
        err.contains("vision tower") && err.contains("vision_tower.vision_model"),
        "{err}"
    );
}

#[test]
fn a_failing_chat_template_is_named_with_its_line() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = preset(tmp.path(), "llama-tiny");
    let path = dir.join("tokenizer_config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    cfg["chat_template"] = serde_json::json!(
        "{% for m in messages %}\n{% if m['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}{{ m['content'] }}{% endfor %}"
    );
    std::fs::write(&path, cfg.to_string()).unwrap();
    let model = Model::load(&dir, &Device::flex(), DType::F32).unwrap();
    let mut conversation = Conversation::user_prompt("Hi", Vec::new());
    conversation.messages.insert(
        0,
        Message {
            role: Role::System,
            content: "Be brief.".into(),
        },
    );
    let err = model
        .processor
        .encode(&conversation, &[], true, LabelMode::AssistantTurns)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("tokenizer_config.json")
            && err.contains("line 2")
            && err.contains("System role not supported"),
        "{err}"
    );
    // A template that does not compile fails at load, with its line.
    cfg["chat_template"] =
        serde_json::json!("{% for m in messages %}\n{{ m['content'] }\n{% endfor %}");
    std::fs::write(&path, cfg.to_string()).unwrap();
    let err = common::load_error(&dir);
    assert!(
        err.contains("chat_template") && err.contains("line 2"),
        "{err}"
    );
    // A base model without a template reads plain text, and refuses chat with the fix named.
    cfg.as_object_mut().unwrap().remove("chat_template");
    std::fs::write(&path, cfg.to_string()).unwrap();
    let model = Model::load(&dir, &Device::flex(), DType::F32).unwrap();
    let err = model
        .processor
        .encode(&conversation, &[], true, LabelMode::AssistantTurns)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("no chat template") && err.contains("--template"),
        "{err}"
    );
    let ids = model.processor.encode_plain("### Verdict:").unwrap();
    assert_eq!(
        ids[0],
        model
            .processor
            .tokenizer
            .token_to_id("<|begin_of_text|>")
            .unwrap()
    );
    // --template llama3 gives it one.
    let options = LoadOptions {
        dtype: adamllm::precision::DTypeChoice::F32,
        template: Some("llama3".into()),
        quantize: None,
    };
    let model = Model::load_with(&dir, &Device::flex(), &options).unwrap();
    let text = model
        .processor
        .encode(&conversation, &[], true, LabelMode::AssistantTurns)
        .unwrap()
        .text;
    assert!(
        text.starts_with("<|begin_of_text|><|start_header_id|>system"),
        "{text}"
    );
    let bad = LoadOptions {
        dtype: adamllm::precision::DTypeChoice::F32,
        template: Some("vicuna".into()),
        quantize: None,
    };
    let err = Model::load_with(&dir, &Device::flex(), &bad)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("vicuna") && err.contains("llava_llama_3"),
        "{err}"
    );
}

#[test]
fn images_and_placeholders_must_agree() {
    let tmp = tempfile::tempdir().unwrap();
    let image = common::write_picture(tmp.path());
    let dir = preset(tmp.path(), "llava-next-tiny");
    let model = Model::load(&dir, &Device::flex(), DType::F32).unwrap();
    let img = model.load_image(&image, &ImageOptions::default()).unwrap();
    let conversation = Conversation::user_prompt("What is shown?", vec![image.clone()]);
    let err = model
        .processor
        .encode(
            &conversation,
            &[img.clone(), img.clone()],
            true,
            LabelMode::AssistantTurns,
        )
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("1 `<image>` placeholder(s) but 2 image(s)"),
        "{err}"
    );
    // Image tokens in the ids without their images: a forward error, not a panic.
    let ok = model
        .processor
        .encode(
            &conversation,
            std::slice::from_ref(&img),
            true,
            LabelMode::AssistantTurns,
        )
        .unwrap();
    let batch = TokenBatch::from_sequences(vec![(ok.ids, Vec::new())], 0, true);
    let err = model.logits(&batch).err().unwrap().to_string();
    assert!(err.contains("image placeholder tokens"), "{err}");
    // A text-only Llama refuses images by name.
    let llama = Model::load(
        &preset(tmp.path(), "llama-tiny"),
        &Device::flex(),
        DType::F32,
    )
    .unwrap();
    let err = llama
        .load_image(&image, &ImageOptions::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("text-only"), "{err}");
}

/// A text-only loss of `dir`'s model, for comparing two folders of one model.
fn text_loss(dir: &Path) -> f32 {
    let model = Model::load(dir, &Device::flex(), DType::F32).unwrap();
    let mut conversation = Conversation::user_prompt("Which organ is shown?", Vec::new());
    conversation.messages.push(Message {
        role: Role::Assistant,
        content: "The liver.".into(),
    });
    let encoded = model
        .processor
        .encode(&conversation, &[], false, LabelMode::AssistantTurns)
        .unwrap();
    let batch = TokenBatch::from_sequences(
        vec![(encoded.ids.clone(), Vec::new())],
        model.processor.pad_id,
        false,
    );
    let (sum, n) = model
        .loss_sum(&batch, std::slice::from_ref(&encoded.labels))
        .unwrap();
    adamllm::models::layers::tensor_to_vec(sum)[0] / n as f32
}

/// `dir`'s files copied to `to`, with `config.json` replaced by `config`.
fn with_config(dir: &Path, to: &Path, config: &str) -> PathBuf {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            std::fs::copy(&path, to.join(path.file_name().unwrap())).unwrap();
        }
    }
    std::fs::write(to.join("config.json"), config).unwrap();
    to.to_path_buf()
}

#[test]
fn full_form_configs_load_as_their_diff_form() {
    // `config.to_json_file(use_diff=False)` of each family's parity fixture (transformers
    // 4.47.1, tests/fixtures/gen_hf_layouts.py): every key, Qwen2-VL's vision config with both
    // `in_chans` and `in_channels`.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures");
    let tmp = tempfile::tempdir().unwrap();
    for (full, diff) in [
        ("qwen2_vl", "qwen2vl/cfg_a"),
        ("llama", "llama/cfg_b"),
        ("llava_next", "llava_next/cfg_a"),
    ] {
        let text = std::fs::read_to_string(
            root.join(format!("hf_layouts/full_configs/{full}.config.json")),
        )
        .unwrap();
        let folder = with_config(&root.join(diff), &tmp.path().join(full), &text);
        assert_eq!(
            text_loss(&folder).to_bits(),
            text_loss(&root.join(diff)).to_bits(),
            "{full}"
        );
    }
    // Two aliases that disagree are a named error.
    let text =
        std::fs::read_to_string(root.join("hf_layouts/full_configs/qwen2_vl.config.json")).unwrap();
    let mut config: serde_json::Value = serde_json::from_str(&text).unwrap();
    config["vision_config"]["in_chans"] = serde_json::json!(4);
    let folder = with_config(
        &root.join("qwen2vl/cfg_a"),
        &tmp.path().join("disagree"),
        &config.to_string(),
    );
    let e = common::load_error(&folder);
    assert!(
        e.contains("config.json") && e.contains("in_chans") && e.contains("in_channels"),
        "{e}"
    );
}
