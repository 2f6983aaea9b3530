//! Weight-only quantization (`--quantize q8|q4`) on the transformers parity fixtures of every
//! family: which weights are quantized, q8's greedy tokens against transformers' f32 ones, and
//! the loss each quantization moves, on flex and on wgpu; and LoRA training over a quantized
//! base (QLoRA) with its merged export.

mod common;

use adamllm::burn::tensor::DType;
use adamllm::generation::{GenerationOptions, PromptInput, generate};
use adamllm::models::layers::tensor_to_vec;
use adamllm::models::{LoadOptions, Model, TokenBatch};
use adamllm::precision::DTypeChoice;
use adamllm::quantize::{Quantization, is_quantized};
use common::{case_input, fixture, read_reference, test_devices};
use serde_json::Value;

/// The parity fixtures: folder, a case with a generation prompt, a case with a supervised
/// reply.
const FIXTURES: [(&str, &str, &str); 4] = [
    ("qwen2vl/cfg_a", "gen_prompt", "one_image"),
    ("qwen2vl/cfg_b", "gen_prompt", "one_image"),
    ("llama/cfg_a", "gen_prompt", "chat"),
    ("llava_next/cfg_a", "gen_prompt", "one_image"),
];

fn load(
    dir: &std::path::Path,
    device: &adamllm::burn::tensor::Device,
    q: Option<Quantization>,
) -> Model {
    let options = LoadOptions {
        dtype: DTypeChoice::F32,
        template: None,
        quantize: q,
    };
    Model::load_with(dir, device, &options).unwrap()
}

/// The logits of two loadings of one fixture over the prompt of its case `case`.
fn case_logits(a: &Model, b: &Model, dir: &std::path::Path, case: &str) -> (Vec<f32>, Vec<f32>) {
    let (prompt, _) = case_input(a, dir, case);
    let batch = TokenBatch::from_sequences(
        vec![(prompt.ids.clone(), prompt.images.clone())],
        a.processor.pad_id,
        false,
    );
    (
        tensor_to_vec(a.logits(&batch).unwrap()),
        tensor_to_vec(b.logits(&batch).unwrap()),
    )
}

fn greedy(model: &Model, prompt: &PromptInput) -> Vec<i64> {
    let options = GenerationOptions {
        max_new_tokens: 12,
        ignore_eos: true,
        ..Default::default()
    };
    let out = generate(model, std::slice::from_ref(prompt), &options).unwrap();
    out[0].token_ids.iter().map(|&t| t as i64).collect()
}

fn loss(model: &Model, prompt: &PromptInput, labels: &[i64]) -> f64 {
    let batch = TokenBatch::from_sequences(
        vec![(prompt.ids.clone(), prompt.images.clone())],
        model.processor.pad_id,
        false,
    );
    let (sum, n) = model.loss_sum(&batch, &[labels.to_vec()]).unwrap();
    tensor_to_vec(sum)[0] as f64 / n as f64
}

#[test]
fn linear_weights_are_quantized_and_the_embedding_and_head_are_not() {
    let dir = fixture("qwen2vl/cfg_b"); // untied: it has its own LM head
    let model = load(
        &dir,
        &adamllm::burn::tensor::Device::flex(),
        Some(Quantization::Q4),
    );
    assert_eq!(model.quantization, Some(Quantization::Q4));
    let text = model.text();
    let layer = &text.layers[0];
    for (name, weight) in [
        ("q_proj", layer.self_attn.q_proj.weight.val()),
        ("o_proj", layer.self_attn.o_proj.weight.val()),
        ("down_proj", layer.mlp.down_proj.weight.val()),
    ] {
        assert!(is_quantized(&weight), "{name}: {:?}", weight.dtype());
    }
    let bias = layer
        .self_attn
        .q_proj
        .bias
        .as_ref()
        .expect("qwen2 has qkv bias");
    assert_eq!(bias.val().dtype(), DType::F32);
    assert_eq!(text.embed_tokens.val().dtype(), DType::F32);
    let head = text.lm_head.as_ref().expect("cfg_b is untied");
    assert_eq!(head.weight.val().dtype(), DType::F32);
}

/// The quantized model computes exactly what the dense model computes with each quantized
/// weight replaced by its dequantized values: the matmul path adds no error of its own.
#[test]
fn quantized_logits_equal_the_dense_model_with_rounded_weights() {
    for (name, gen_case, _) in FIXTURES {
        let dir = fixture(name);
        for (device_name, selected) in test_devices() {
            for q in [Quantization::Q8, Quantization::Q4] {
                let quantized = load(&dir, &selected.device, Some(q));
                let mut rounded = load(&dir, &selected.device, None);
                let mut count = 0;
                rounded
                    .network
                    .family_mut()
                    .for_each_linear(&mut |path, layer| {
                        let loaded_dense =
                            path.ends_with("lm_head") || path.contains("patch_embed");
                        let weight = q.quantize(layer.weight.val());
                        if !loaded_dense && is_quantized(&weight) {
                            layer.weight =
                                adamllm::burn::module::Param::from_tensor(weight.dequantize());
                            count += 1;
                        }
                    });
                assert!(count >= 4, "{name}: only {count} layers quantized");
                let (a, b) = case_logits(&quantized, &rounded, &dir, gen_case);
                let d = a
                    .iter()
                    .zip(&b)
                    .map(|(x, y)| (x - y).abs())
                    .fold(0.0f32, f32::max);
                assert!(
                    d <= 1e-4,
                    "{name} {q} on {device_name}: logits differ by {d}"
                );
            }
        }
    }
}

/// q8's greedy tokens equal transformers' f32 ones where the fixture's top-two margins allow
/// it. The other random fixtures amplify weight noise: q8 moves their logits by 0.2–0.5
/// (measured) against a first-step top-two margin of 0.1 on `qwen2vl/cfg_a`, so greedy
/// decoding there follows another path from the first or a later token.
#[test]
fn q8_greedy_tokens_equal_transformers_on_the_untied_qwen2_vl_fixture() {
    let dir = fixture("qwen2vl/cfg_b");
    let reference = read_reference(&dir.join("gen_prompt.safetensors"));
    let want = reference["generated_ids"].i64().to_vec();
    for (device_name, selected) in test_devices() {
        for q in [None, Some(Quantization::Q8)] {
            let model = load(&dir, &selected.device, q);
            let (prompt, _) = case_input(&model, &dir, "gen_prompt");
            assert_eq!(
                greedy(&model, &prompt),
                want,
                "{q:?} on {device_name}: greedy tokens differ from transformers' f32 ones"
            );
        }
    }
}

/// q8 moves the loss by under 1%, q4 by under 15% (these random fixtures: 0.3–0.6% and
/// 2.5–7.5%), on flex and on wgpu; the figures are printed (run with `--nocapture`). The two
/// backends may round a value lying exactly between two codes differently (bf16 checkpoints
/// have many), so their quantized losses agree only to these bounds, not bit for bit.
#[test]
fn quantized_losses_stay_near_f32() {
    for (name, _, loss_case) in FIXTURES {
        let dir = fixture(name);
        for (device_name, selected) in test_devices() {
            let dense = load(&dir, &selected.device, None);
            let (prompt, labels) = case_input(&dense, &dir, loss_case);
            assert!(!labels.is_empty(), "{name}/{loss_case}: no labels");
            let full = loss(&dense, &prompt, &labels);
            for (q, bound) in [(Quantization::Q8, 1e-2), (Quantization::Q4, 0.15)] {
                let model = load(&dir, &selected.device, Some(q));
                let got = loss(&model, &prompt, &labels);
                let relative = (got - full).abs() / full;
                eprintln!(
                    "{name}/{loss_case} on {device_name}: f32 {full:.6}, {q} {got:.6} ({relative:.2e} relative)"
                );
                assert!(
                    relative <= bound,
                    "{name} {q} on {device_name}: loss {got} vs f32 {full}"
                );
                assert!(
                    got != full,
                    "{name} {q}: the loss did not move; nothing was quantized?"
                );
            }
        }
    }
}

/// Two image-caption rows over `picture.png` in `dir`, as a dataset file.
fn write_picture_rows(fixture_dir: &std::path::Path, dir: &std::path::Path) -> std::path::PathBuf {
    std::fs::copy(fixture_dir.join("one_image_0.png"), dir.join("picture.png")).unwrap();
    let rows: Vec<Value> = ["A red square.", "It is a picture."]
        .iter()
        .map(|answer| {
            serde_json::json!({
                "messages": [
                    {"role": "user", "content": "<image>What is shown?"},
                    {"role": "assistant", "content": answer}
                ],
                "images": ["picture.png"]
            })
        })
        .collect();
    let data = dir.join("data.jsonl");
    common::write_jsonl(&data, &rows);
    data
}

/// Trains `model_dir` on `data` into `out` for 12 steps on flex with `finetuning_type`
/// (a LoRA recipe with a high learning rate) and `extra` recipe keys.
fn train_for_test(
    model_dir: &std::path::Path,
    data: &std::path::Path,
    out: &std::path::Path,
    finetuning_type: &str,
    extra: &[(&str, &str)],
) -> Result<adamllm::train::trainer::TrainSummary, adamllm::train::trainer::TrainError> {
    use adamllm::train::recipe::TrainRecipe;
    use adamllm::train::trainer::train;
    let mut pairs = vec![
        ("finetuning_type", finetuning_type),
        ("learning_rate", "1e-2"),
        ("lr_scheduler_type", "constant"),
        ("per_device_train_batch_size", "2"),
        ("max_steps", "12"),
        ("save_steps", "0"),
        ("logging_steps", "1"),
    ];
    pairs.extend_from_slice(extra);
    let pairs: Vec<(String, String)> = pairs
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let recipe = TrainRecipe::load(None, &pairs).unwrap();
    let request = common::train_request(
        model_dir,
        data,
        out,
        recipe,
        adamllm::burn::tensor::Device::flex(),
    );
    train(&request, &mut NoObserver)
}

/// QLoRA (`quantize` in a LoRA recipe): the adapters train over the q8 base as they do over
/// the dense one, and the exported model is the checkpoint's own weights plus the adapters'
/// update, not the quantized weights plus it.
#[test]
fn qlora_trains_over_a_quantized_base_and_merges_into_the_dense_one() {
    let dir = fixture("qwen2vl/cfg_b");
    let tmp = tempfile::tempdir().unwrap();
    let data = write_picture_rows(&dir, tmp.path());
    let run = |quantize: Option<&str>| {
        let out = tmp
            .path()
            .join(format!("run-{}", quantize.unwrap_or("dense")));
        let extra: Vec<(&str, &str)> = quantize.map(|q| ("quantize", q)).into_iter().collect();
        let summary = train_for_test(&dir, &data, &out, "lora", &extra).unwrap();
        let losses: Vec<f64> = summary.losses.iter().map(|l| l.loss).collect();
        (losses, out)
    };
    let (dense, _) = run(None);
    let (quantized, out) = run(Some("q8"));
    let (first, last) = (quantized[0], *quantized.last().unwrap());
    assert!(
        last < 0.7 * first,
        "q8 base: the loss went from {first} to {last}"
    );
    let dense_last = *dense.last().unwrap();
    assert!(
        (last - dense_last).abs() <= 0.05 * dense_last,
        "final loss over q8 {last} vs over the dense base {dense_last}"
    );
    assert!(
        (first - dense[0]).abs() <= 1e-2 * dense[0] && first != dense[0],
        "first loss over q8 {first} vs dense {}",
        dense[0]
    );

    // The merged q_proj of layer 0 is the checkpoint's weight plus (α/r)·A·B, to the bf16
    // rounding of the export; merging into the q8 values would miss by up to half a q8 step.
    let host = adamllm::burn::tensor::Device::flex();
    let q_proj =
        |model: &Model| tensor_to_vec(model.text().layers[0].self_attn.q_proj.weight.val());
    let base = q_proj(&load(&dir, &host, None));
    let merged = q_proj(&load(&out.join("model"), &host, None));
    let adapter = read_reference(&out.join("adapter/adapter_model.safetensors"));
    let key = "base_model.model.model.layers.0.self_attn.q_proj";
    let a = &adapter[&format!("{key}.lora_A.weight")]; // [r, in]
    let b = &adapter[&format!("{key}.lora_B.weight")]; // [out, r]
    let (r, fan_in, fan_out) = (a.shape()[0], a.shape()[1], b.shape()[0]);
    let scale = 2.0; // lora_alpha defaults to 2·r
    let mut moved = 0;
    for i in 0..fan_in {
        for o in 0..fan_out {
            let delta: f32 = (0..r)
                .map(|k| a.f32()[k * fan_in + i] * b.f32()[o * r + k])
                .sum::<f32>()
                * scale;
            let want = base[i * fan_out + o] + delta;
            let got = merged[i * fan_out + o];
            assert!(
                (got - want).abs() <= want.abs() / 256.0 + 1e-7,
                "q_proj[{i}, {o}]: exported {got}, checkpoint + update {want}"
            );
            moved += usize::from(delta.abs() > want.abs() / 128.0);
        }
    }
    assert!(moved > 0, "the adapter changed nothing visible in bf16");
}

/// The `(name, dtype)` of every tensor of a folder's single weight file.
fn stored_tensors(dir: &std::path::Path) -> Vec<(String, String)> {
    let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut names: Vec<(String, String)> = file
        .tensors()
        .into_iter()
        .map(|(name, view)| (name, format!("{:?}", view.dtype())))
        .collect();
    names.sort();
    names
}

/// Bytes of a folder's weight files (`model.safetensors` or its shards).
fn weight_file_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.starts_with("model") && name.ends_with(".safetensors")
        })
        .map(|e| e.metadata().unwrap().len())
        .sum()
}

/// A quantized folder (`adamllm quantize` = load with `--quantize`, then export) loads back
/// without `--quantize` as the same model: its logits equal the quantize-on-load model's, on
/// flex and on wgpu, every family; the linear layers are stored as integers and scales, the
/// embedding and LM head as floats, and the weight file shrinks.
#[test]
fn a_quantized_folder_loads_back_as_the_same_model() {
    use adamllm::models::export::{DEFAULT_MAX_SHARD_BYTES, save_model_dir};
    for (name, gen_case, _) in FIXTURES {
        let dir = fixture(name);
        let dense_out = tempfile::tempdir().unwrap();
        let host = adamllm::burn::tensor::Device::flex();
        save_model_dir(
            &load(&dir, &host, None),
            dense_out.path(),
            DEFAULT_MAX_SHARD_BYTES,
        )
        .unwrap();
        let dense_bytes = weight_file_bytes(dense_out.path());
        for (device_name, selected) in test_devices() {
            for (q, values_dtype) in [(Quantization::Q8, "I8"), (Quantization::Q4, "U8")] {
                let quantized = load(&dir, &selected.device, Some(q));
                let out = tempfile::tempdir().unwrap();
                save_model_dir(&quantized, out.path(), DEFAULT_MAX_SHARD_BYTES).unwrap();
                let config: Value = serde_json::from_str(
                    &std::fs::read_to_string(out.path().join("config.json")).unwrap(),
                )
                .unwrap();
                let section = &config["quantization_config"];
                assert_eq!(section["quant_method"], "adamllm", "{name}");
                assert_eq!(section["bits"], q.bits(), "{name}");
                assert_eq!(section["block_size"], 32, "{name}");

                let tensors = stored_tensors(out.path());
                let has = |key: &str, dtype: &str| {
                    tensors.iter().any(|(n, d)| n.ends_with(key) && d == dtype)
                };
                assert!(
                    has("layers.0.self_attn.q_proj.qweight", values_dtype),
                    "{name}"
                );
                assert!(has("layers.0.self_attn.q_proj.scales", "F32"), "{name}");
                assert!(!has("layers.0.self_attn.q_proj.weight", "F32"), "{name}");
                assert!(has("embed_tokens.weight", "F32"), "{name}: {tensors:?}");
                assert!(
                    weight_file_bytes(out.path()) < dense_bytes,
                    "{name} {q}: the quantized file is not smaller than the dense export"
                );

                let reloaded = load(out.path(), &selected.device, None);
                assert_eq!(reloaded.quantization, Some(q), "{name}");
                let (a, b) = case_logits(&quantized, &reloaded, &dir, gen_case);
                assert_eq!(a, b, "{name} {q} on {device_name}: reloaded logits differ");
            }
        }
    }
}

/// The message of loading `dir` (with `quantize`) that must fail.
fn load_failure(dir: &std::path::Path, quantize: Option<Quantization>) -> String {
    let options = LoadOptions {
        dtype: DTypeChoice::F32,
        template: None,
        quantize,
    };
    let device = adamllm::burn::tensor::Device::flex();
    match Model::load_with(dir, &device, &options) {
        Ok(_) => panic!("{} loaded", dir.display()),
        Err(e) => e.to_string(),
    }
}

/// A quantized folder this version cannot read is refused with the file and key named:
/// another tool's format, a bit width, block size or scheme it does not store, integer
/// tensors without a `quantization_config`, and a `--quantize` that would re-quantize it.
#[test]
fn quantized_folders_in_unknown_formats_are_refused_by_name() {
    use adamllm::models::export::{DEFAULT_MAX_SHARD_BYTES, save_model_dir};
    let dir = fixture("qwen2vl/cfg_b");
    let host = adamllm::burn::tensor::Device::flex();
    let out = tempfile::tempdir().unwrap();
    let quantized = load(&dir, &host, Some(Quantization::Q4));
    save_model_dir(&quantized, out.path(), DEFAULT_MAX_SHARD_BYTES).unwrap();
    let config_path = out.path().join("config.json");
    let original = std::fs::read_to_string(&config_path).unwrap();
    let edit = |change: &dyn Fn(&mut Value)| {
        let mut config: Value = serde_json::from_str(&original).unwrap();
        change(&mut config);
        std::fs::write(&config_path, serde_json::to_string(&config).unwrap()).unwrap();
    };
    let cases: [(&str, Value, &str); 4] = [
        ("block_size", serde_json::json!(64), "64"),
        ("quant_method", serde_json::json!("gptq"), "another tool"),
        ("bits", serde_json::json!(2), "8 or 4"),
        ("scheme", serde_json::json!("asymmetric"), "asymmetric"),
    ];
    for (key, value, says) in cases {
        edit(&|c| c["quantization_config"][key] = value.clone());
        let message = load_failure(out.path(), None);
        for part in ["config.json", &format!("quantization_config.{key}"), says] {
            assert!(message.contains(part), "{key}: {message}");
        }
    }
    edit(&|c| {
        c.as_object_mut().unwrap().remove("quantization_config");
    });
    let message = load_failure(out.path(), None);
    assert!(
        message.contains("model.safetensors")
            && message.contains(".qweight")
            && message.contains("no quantization_config"),
        "{message}"
    );
    edit(&|_| {});
    let message = load_failure(out.path(), Some(Quantization::Q8));
    assert!(
        message.contains("stored in q4") && message.contains("cannot re-quantize"),
        "{message}"
    );
    assert_eq!(
        load(out.path(), &host, Some(Quantization::Q4)).quantization,
        Some(Quantization::Q4)
    );
}

/// LoRA trains over a quantized folder without `quantize` in the recipe (the folder is the
/// quantized base); the merged export writes the adapted layers dense and keeps the others
/// stored, and loads. Full fine-tuning of a quantized folder is refused, naming it.
#[test]
fn lora_trains_over_a_quantized_folder_and_full_fine_tuning_is_refused() {
    use adamllm::models::export::{DEFAULT_MAX_SHARD_BYTES, save_model_dir};
    let dir = fixture("qwen2vl/cfg_b");
    let tmp = tempfile::tempdir().unwrap();
    let folder = tmp.path().join("q8");
    let host = adamllm::burn::tensor::Device::flex();
    save_model_dir(
        &load(&dir, &host, Some(Quantization::Q8)),
        &folder,
        DEFAULT_MAX_SHARD_BYTES,
    )
    .unwrap();
    let data = write_picture_rows(&dir, tmp.path());
    let targets = [("lora_target", "q_proj,v_proj")];
    let summary =
        train_for_test(&folder, &data, &tmp.path().join("lora"), "lora", &targets).unwrap();
    let losses: Vec<f64> = summary.losses.iter().map(|l| l.loss).collect();
    let (first, last) = (losses[0], *losses.last().unwrap());
    assert!(last < 0.7 * first, "the loss went from {first} to {last}");

    let merged = tmp.path().join("lora/model");
    let tensors = stored_tensors(&merged);
    let has = |key: &str| tensors.iter().any(|(n, _)| n.ends_with(key));
    // The adapted q_proj and v_proj come back dense, the rest as stored.
    assert!(has("layers.0.self_attn.q_proj.weight"), "{tensors:?}");
    assert!(!has("layers.0.self_attn.q_proj.qweight"), "{tensors:?}");
    assert!(has("layers.0.mlp.down_proj.qweight"), "{tensors:?}");
    let model = load(&merged, &host, None);
    assert_eq!(model.quantization, Some(Quantization::Q8));

    let refused = match train_for_test(&folder, &data, &tmp.path().join("full"), "full", &[]) {
        Ok(_) => panic!("full fine-tuning of a quantized folder trained"),
        Err(e) => e.to_string(),
    };
    assert!(
        refused.contains(&folder.display().to_string())
            && refused.contains("stored in q8")
            && refused.contains("finetuning_type: lora"),
        "{refused}"
    );
    assert!(!tmp.path().join("full/model").exists());
}

/// A training observer that ignores every report.
struct NoObserver;

impl adamllm::train::trainer::TrainObserver for NoObserver {}
