//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use adamllm::device::{DeviceChoice, SelectedDevice, select_device};

/// Repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A committed fixture path.
pub fn fixture(rel: &str) -> PathBuf {
    repo_root().join("tests/fixtures").join(rel)
}

/// The two device paths CI has: flex (CPU) and wgpu (lavapipe on CI, a GPU elsewhere).
/// `ADAMLLM_SKIP_WGPU=1` drops wgpu on machines without any Vulkan driver.
pub fn test_devices() -> Vec<(&'static str, SelectedDevice)> {
    let mut v = vec![("cpu", select_device(DeviceChoice::Cpu).unwrap())];
    if std::env::var("ADAMLLM_SKIP_WGPU").as_deref() != Ok("1") {
        let wgpu = select_device(DeviceChoice::Wgpu)
            .expect("no wgpu adapter: install mesa-vulkan-drivers or set ADAMLLM_SKIP_WGPU=1");
        v.push(("wgpu", wgpu));
    }
    v
}

/// A tensor read from a reference safetensors file.
#[derive(Debug, Clone)]
pub enum RefTensor {
    /// f32 values and shape.
    F32(Vec<f32>, Vec<usize>),
    /// i64 values and shape.
    I64(Vec<i64>, Vec<usize>),
}

impl RefTensor {
    pub fn f32(&self) -> &[f32] {
        match self {
            RefTensor::F32(v, _) => v,
            _ => panic!("expected f32"),
        }
    }
    pub fn i64(&self) -> &[i64] {
        match self {
            RefTensor::I64(v, _) => v,
            _ => panic!("expected i64"),
        }
    }
    pub fn shape(&self) -> &[usize] {
        match self {
            RefTensor::F32(_, s) | RefTensor::I64(_, s) => s,
        }
    }
}

/// Reads every tensor of a reference safetensors file.
pub fn read_reference(path: &Path) -> HashMap<String, RefTensor> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(name, view)| {
            let shape = view.shape().to_vec();
            let data = view.data();
            let t = match view.dtype() {
                safetensors::Dtype::F32 => RefTensor::F32(
                    data.chunks_exact(4)
                        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                        .collect(),
                    shape,
                ),
                safetensors::Dtype::I64 => RefTensor::I64(
                    data.chunks_exact(8)
                        .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
                        .collect(),
                    shape,
                ),
                other => panic!("unexpected dtype {other:?} in {name}"),
            };
            (name, t)
        })
        .collect()
}

/// Largest absolute difference.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// The case names of a parity fixture folder (every `<case>.expected.json`), sorted.
pub fn fixture_cases(dir: &Path) -> Vec<String> {
    let mut cases: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| {
            let n = e.unwrap().file_name().to_string_lossy().to_string();
            n.strip_suffix(".expected.json").map(str::to_string)
        })
        .collect();
    cases.sort();
    assert!(!cases.is_empty(), "{}: no fixture case", dir.display());
    cases
}

/// Writes JSON rows as a JSONL file.
pub fn write_jsonl(path: &Path, rows: &[serde_json::Value]) {
    let text: String = rows.iter().map(|r| format!("{r}\n")).collect();
    std::fs::write(path, text).unwrap();
}

/// The synthesizer's seed files for one-colour squares: `<name>.png` in `images`, a caption
/// `A <name> square.` each, and the same question with its precise and informative answers
/// for every image (`captions.jsonl`, `precise.jsonl`, `informative.jsonl` in `dir`).
pub fn write_square_seed(
    dir: &Path,
    images: &Path,
    colors: &[(&str, [u8; 3])],
    question: &str,
    precise: &str,
    informative: &str,
) -> adamllm::synth::seed::SeedInputs {
    use serde_json::json;
    std::fs::create_dir_all(images).unwrap();
    let (mut captions, mut precise_rows, mut informative_rows) =
        (Vec::new(), Vec::new(), Vec::new());
    for (name, rgb) in colors {
        let file = format!("{name}.png");
        image::RgbImage::from_pixel(56, 56, image::Rgb(*rgb))
            .save(images.join(&file))
            .unwrap();
        captions.push(json!({"images": [file], "messages": [
            {"role": "user", "content": "<image>Write a caption."},
            {"role": "assistant", "content": format!("A {name} square.")}]}));
        precise_rows.push(json!({"images": [file], "messages": [
            {"role": "user", "content": format!("<image>{question}")},
            {"role": "assistant", "content": precise}]}));
        informative_rows.push(json!({"images": [file], "messages": [
            {"role": "user", "content": format!("<image>{question}")},
            {"role": "assistant", "content": informative}]}));
    }
    for (file, rows) in [
        ("captions.jsonl", &captions),
        ("precise.jsonl", &precise_rows),
        ("informative.jsonl", &informative_rows),
    ] {
        write_jsonl(&dir.join(file), rows);
    }
    adamllm::synth::seed::SeedInputs {
        captions: dir.join("captions.jsonl"),
        precise: dir.join("precise.jsonl"),
        informative: dir.join("informative.jsonl"),
        images: images.to_path_buf(),
    }
}

/// Writes a 90 × 50 gradient as `picture.png` in `dir`.
pub fn write_picture(dir: &Path) -> PathBuf {
    let path = dir.join("picture.png");
    image::RgbImage::from_fn(90, 50, |x, y| {
        image::Rgb([(x * 2) as u8, (y * 4) as u8, 90])
    })
    .save(&path)
    .unwrap();
    path
}

/// The error `Model::load` gives for `dir` on the CPU; panics when the folder loads.
pub fn load_error(dir: &Path) -> String {
    use adamllm::burn::tensor::{DType, Device};
    match adamllm::models::Model::load(dir, &Device::flex(), DType::F32) {
        Ok(_) => panic!("{} loaded", dir.display()),
        Err(e) => e.to_string(),
    }
}

/// What [`score_and_generate`] measured.
pub struct ScoredAndGenerated {
    /// Mean loss over the supervised tokens.
    pub loss: f32,
    /// Tokens the loss was taken over.
    pub supervised_tokens: usize,
    /// Tokens generated.
    pub generated: usize,
}

/// Through the one interface every stage uses: scores "What is shown?" → "A gradient." (with
/// `picture` when the model takes images), then generates up to `max_new_tokens` tokens for
/// the question, ignoring end-of-text. Errors come back as their text.
pub fn score_and_generate(
    model: &adamllm::models::Model,
    picture: &Path,
    max_new_tokens: usize,
) -> Result<ScoredAndGenerated, String> {
    use adamllm::data::conversation::{Conversation, Message, Role};
    use adamllm::generation::{GenerationOptions, PromptInput, generate};
    use adamllm::models::TokenBatch;
    use adamllm::models::image::ImageOptions;
    use adamllm::models::prompt::LabelMode;
    let text = |e: &dyn std::fmt::Display| e.to_string();
    let images = match model.processor.images {
        Some(_) => vec![
            model
                .load_image(picture, &ImageOptions::default())
                .map_err(|e| text(&e))?,
        ],
        None => Vec::new(),
    };
    let placeholders = images.iter().map(|_| "picture.png".into()).collect();
    let mut conversation = Conversation::user_prompt("What is shown?", placeholders);
    conversation.messages.push(Message {
        role: Role::Assistant,
        content: "A gradient.".into(),
    });
    let encoded = model
        .processor
        .encode(&conversation, &images, false, LabelMode::AssistantTurns)
        .map_err(|e| text(&e))?;
    let batch = TokenBatch::from_sequences(
        vec![(encoded.ids.clone(), images.clone())],
        model.processor.pad_id,
        false,
    );
    let (sum, n) = model
        .loss_sum(&batch, std::slice::from_ref(&encoded.labels))
        .map_err(|e| text(&e))?;
    let loss = adamllm::models::layers::tensor_to_vec(sum)[0] / n as f32;
    conversation.messages.pop();
    let prompt = model
        .processor
        .encode(&conversation, &images, true, LabelMode::AssistantTurns)
        .map_err(|e| text(&e))?;
    let options = GenerationOptions {
        max_new_tokens,
        ignore_eos: true,
        ..Default::default()
    };
    let input = PromptInput {
        ids: prompt.ids,
        images,
    };
    let out = generate(model, &[input], &options).map_err(|e| text(&e))?;
    Ok(ScoredAndGenerated {
        loss,
        supervised_tokens: encoded.supervised_tokens(),
        generated: out[0].token_ids.len(),
    })
}

/// A parity fixture case's transformers input ids (and labels, when it has them) and its
/// images, processed by `model`.
pub fn case_input(
    model: &adamllm::models::Model,
    dir: &Path,
    case: &str,
) -> (adamllm::generation::PromptInput, Vec<i64>) {
    let row: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join(format!("{case}.json"))).unwrap())
            .unwrap();
    let reference = read_reference(&dir.join(format!("{case}.safetensors")));
    let images = row["images"]
        .as_array()
        .map(|paths| {
            paths
                .iter()
                .map(|p| {
                    model
                        .load_image(&dir.join(p.as_str().unwrap()), &Default::default())
                        .unwrap()
                })
                .collect()
        })
        .unwrap_or_default();
    let ids = reference["input_ids"]
        .i64()
        .iter()
        .map(|&i| i as u32)
        .collect();
    let labels = reference
        .get("labels")
        .map(|l| l.i64().to_vec())
        .unwrap_or_default();
    (adamllm::generation::PromptInput { ids, images }, labels)
}

/// A single-stage training request on one device: `model` trained on `data` into `out`.
pub fn train_request(
    model: &Path,
    data: &Path,
    out: &Path,
    recipe: adamllm::train::recipe::TrainRecipe,
    device: adamllm::burn::tensor::Device,
) -> adamllm::train::trainer::TrainRequest {
    adamllm::train::trainer::TrainRequest {
        model_dir: model.to_path_buf(),
        data: vec![data.to_path_buf()],
        layouts: Default::default(),
        stages: false,
        val_data: None,
        images_dir: None,
        out: out.to_path_buf(),
        recipe,
        device,
        replica_devices: Vec::new(),
        resume: false,
        skip_bad: false,
    }
}
