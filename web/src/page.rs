//! What the page does, over the core, in plain Rust: load a model folder from picked files,
//! evaluate a benchmark, synthesize and judge one image. The wasm bindings (`bindings.rs`)
//! only move bytes and JSON across the JavaScript boundary; everything here also compiles
//! natively, where the workspace tests run it against the CLI's code paths.
//!
//! Nothing is re-implemented: prompts, generation, parsing, metrics and the file layouts of
//! `predictions.jsonl` / `results.json` are the core's, so the page's downloads match
//! `adamllm eval`'s files line for line.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use adamllm::burn::tensor::DType;
use adamllm::device::SelectedDevice;
use adamllm::eval::benchmark::{
    BenchmarkRow, ReadOptions, attach_picked_images, read_benchmark_bytes,
};
use adamllm::eval::custom_task::{CustomTask, EvalTask};
use adamllm::eval::runner::{
    EvalOptions, eval_max_new_tokens, predict_rows, result_scores, results_record,
};
use adamllm::io::{json_text, jsonl_text};
use adamllm::models::checkpoint::CheckpointReader;
use adamllm::models::files::ModelFiles;
use adamllm::models::registry::ConfigSummary;
use adamllm::models::{LoadOptions, Model};
use adamllm::quantize::{Quantization, is_quantized};
use adamllm::synth::judge::{FilterOptions, judge_triplet};
use adamllm::synth::synthesize::{SynthesizeOptions, synthesize_pair};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A model folder as the page shows it before and after loading.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ModelInfo {
    /// The folder's name.
    pub name: String,
    /// Files found, sorted.
    pub files: Vec<String>,
    /// Bytes over all files.
    pub bytes: u64,
    /// Parameters (elements over all checkpoint tensors).
    pub parameters: usize,
    /// The family that loads it (`qwen2_vl`, `llama`, `llava_next`).
    pub family: String,
    /// `model_type` of its config (`qwen2_vl`, `qwen2`, `llama`, `llava_next`, ...).
    pub model_type: String,
    /// Decoder layers.
    pub layers: usize,
    /// Hidden size.
    pub hidden_size: usize,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// The largest tensor and its size in bytes once loaded as f32.
    pub largest_tensor: String,
    /// Its size in bytes (f32).
    pub largest_tensor_bytes: u64,
    /// How the linear layers are quantized once loaded (`q8`, `q4`; `None`: dense, or not
    /// loaded yet).
    pub quantize: Option<String>,
    /// Linear layers whose weights are quantized once loaded (a layer narrower than a block
    /// stays dense).
    pub quantized_linears: usize,
}

/// Reads a model folder's config and checkpoint headers (no weights), so the page can show
/// its size and refuse it before loading. Errors name the file.
pub fn inspect_model(files: &ModelFiles) -> Result<ModelInfo, String> {
    let config = ConfigSummary::read(files).map_err(|e| e.to_string())?;
    let reader = CheckpointReader::open(files).map_err(|e| e.to_string())?;
    let (largest_tensor, largest) = reader.largest_tensor().unwrap_or_default();
    Ok(ModelInfo {
        name: files.root().display().to_string(),
        files: files.names(),
        bytes: files.total_bytes(),
        parameters: reader.parameter_count(),
        family: config.family.to_string(),
        model_type: config.model_type.clone(),
        layers: config.layers,
        hidden_size: config.hidden_size,
        vocab_size: config.vocab_size,
        largest_tensor,
        largest_tensor_bytes: largest as u64 * 4,
        quantize: None,
        quantized_linears: 0,
    })
}

/// Refuses a model whose largest tensor cannot be bound on the device: WebGPU limits each
/// storage-buffer binding (often 128 MiB or 2 GiB), and an embedding table of 151,936 rows is
/// the first weight to exceed it.
pub fn check_fits(info: &ModelInfo, device: &SelectedDevice) -> Result<(), String> {
    match device.max_binding_bytes {
        Some(limit) if info.largest_tensor_bytes > limit => Err(format!(
            "{}: tensor `{}` needs {:.1} MiB as f32, but this device binds at most {:.1} MiB \
             per buffer ({}). Use the CPU device, or a smaller model",
            info.name,
            info.largest_tensor,
            info.largest_tensor_bytes as f64 / (1024.0 * 1024.0),
            limit as f64 / (1024.0 * 1024.0),
            device.description
        )),
        _ => Ok(()),
    }
}

/// Loads a model folder onto the device after [`inspect_model`] and [`check_fits`], its
/// linear layers quantized as `quantize` asks (the page's weights choice) or as a quantized
/// folder stores them.
pub fn load_model(
    files: &ModelFiles,
    device: &SelectedDevice,
    quantize: Option<Quantization>,
) -> Result<(Model, ModelInfo), String> {
    let mut info = inspect_model(files)?;
    check_fits(&info, device)?;
    let options = LoadOptions {
        quantize,
        ..LoadOptions::dtype(DType::F32)
    };
    let mut model =
        Model::load_files(files, &device.device, &options).map_err(|e| e.to_string())?;
    info.quantize = model.quantization.map(|q| q.to_string());
    model
        .network
        .family_mut()
        .for_each_linear(&mut |_, linear| {
            info.quantized_linears += usize::from(is_quantized(&linear.weight.val()));
        });
    Ok((model, info))
}

/// The page's weights choice: `""` or `dense` for none, else a quantization name.
pub fn parse_weights_choice(choice: &str) -> Result<Option<Quantization>, String> {
    match choice {
        "" | "dense" => Ok(None),
        other => other.parse().map(Some),
    }
}

/// Which task a benchmark is scored as.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum TaskSpec {
    /// One of the paper's eight benchmarks, by name.
    Builtin {
        /// `VQA_RAD`, `Food101`, ...
        name: String,
    },
    /// A custom task file's text (YAML; vocabulary inline).
    Custom {
        /// The file name, for messages.
        file: String,
        /// Its text.
        yaml: String,
    },
}

impl TaskSpec {
    /// The task, with errors naming the task or the file.
    pub fn resolve(&self) -> Result<EvalTask, String> {
        match self {
            Self::Builtin { name } => EvalTask::from_arg(name).map_err(|e| e.to_string()),
            Self::Custom { file, yaml } => {
                CustomTask::from_yaml(yaml, Path::new(file), Path::new(""))
                    .map(EvalTask::Custom)
                    .map_err(|e| e.to_string())
            }
        }
    }
}

/// Evaluation settings the page passes (the same meaning as `adamllm eval`'s flags).
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct EvalSettings {
    /// The task.
    pub task: TaskSpec,
    /// Evaluate only the first N rows.
    #[serde(default)]
    pub limit: Option<usize>,
    /// Override of the task's max new tokens.
    #[serde(default)]
    pub max_new_tokens: Option<usize>,
    /// Prompts per batch (default 1).
    #[serde(default)]
    pub batch_size: Option<usize>,
    /// Smallest image area (default: the paper's).
    #[serde(default)]
    pub min_pixels: Option<usize>,
    /// Largest image area (default: the paper's).
    #[serde(default)]
    pub max_pixels: Option<usize>,
}

impl Default for TaskSpec {
    fn default() -> Self {
        Self::Builtin {
            name: String::new(),
        }
    }
}

impl EvalSettings {
    /// The core's options for these settings.
    pub fn options(&self) -> EvalOptions {
        EvalOptions {
            batch_size: self.batch_size.unwrap_or(1).max(1),
            limit: self.limit,
            max_new_tokens: self.max_new_tokens,
            pixels: EvalOptions::pixel_bounds(self.min_pixels, self.max_pixels),
        }
    }
}

/// Reads a picked benchmark file (JSON Lines or parquet) and attaches the picked images to
/// its rows. Errors name the file and line.
pub fn read_picked_benchmark(
    file_name: &str,
    bytes: Vec<u8>,
    images: &BTreeMap<String, Vec<u8>>,
    task: &EvalTask,
    limit: Option<usize>,
) -> Result<Vec<BenchmarkRow>, String> {
    let path = PathBuf::from(file_name);
    let read = ReadOptions {
        images_dir: Some(PathBuf::new()),
        required_fields: task.required_fields(),
        limit,
    };
    let mut rows = read_benchmark_bytes(&path, bytes, &read).map_err(|e| e.to_string())?;
    attach_picked_images(&path, &mut rows, images).map_err(|e| e.to_string())?;
    Ok(rows)
}

/// An evaluation's outputs, as the page shows and downloads them.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EvalOutcome {
    /// Task name.
    pub task: String,
    /// Metric name.
    pub metric: String,
    /// Task-level scores in output order.
    pub scores: Vec<(String, f64)>,
    /// The text of `predictions.jsonl` (same layout as `adamllm eval`'s).
    pub predictions_jsonl: String,
    /// The text of `results.json` (same layout as `adamllm eval`'s).
    pub results_json: String,
    /// Per-row predictions (benchmark fields + `pred` + `syn_id`).
    pub rows: Vec<Value>,
    /// Seconds spent generating.
    pub seconds: f64,
    /// New tokens generated over all rows.
    pub generated_tokens: usize,
}

/// Answers and scores a benchmark with `model`. `now_ms` is the clock (the browser's
/// `performance.now()`; std's clock does not exist there); `on_progress(done, total)` is
/// called at the start and after every batch.
pub async fn evaluate(
    model: &Model,
    model_name: &str,
    settings: &EvalSettings,
    rows: &[BenchmarkRow],
    now_ms: &dyn Fn() -> f64,
    on_progress: &mut dyn FnMut(usize, usize),
) -> Result<EvalOutcome, String> {
    let task = settings.task.resolve()?;
    let opts = settings.options();
    let started = now_ms();
    let answered = predict_rows(model, &task, rows, &opts, on_progress)
        .await
        .map_err(|e| e.to_string())?;
    let predictions = answered.records;
    let seconds = (now_ms() - started) / 1000.0;
    let results = results_record(
        &task,
        model_name,
        &predictions,
        eval_max_new_tokens(&task, &opts),
    )
    .map_err(|e| e.to_string())?;
    Ok(EvalOutcome {
        task: task.name().to_owned(),
        metric: task.metric_name().to_owned(),
        scores: result_scores(&task, &results),
        predictions_jsonl: jsonl_text(&predictions).map_err(|e| e.to_string())?,
        results_json: json_text(&results).map_err(|e| e.to_string())?,
        rows: predictions,
        seconds,
        generated_tokens: answered.generated_tokens,
    })
}

/// Whether the built-in judge (`www/demo/judge`, the `adamllm demo` judge) reads its prompt
/// with the instructions: it was tuned on the bare triplet layout, so no.
pub const BUILT_IN_JUDGE_INSTRUCTIONS: bool = false;

/// Synthesis settings the page passes.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct SynthSettings {
    /// The caption of the image.
    pub caption: String,
    /// Worked examples in the judge prompt (0-6; the built-in judge was tuned on 0).
    #[serde(default)]
    pub shots: Option<usize>,
    /// Whether the judge prompt opens with its instructions (default: the built-in judge's
    /// choice, see [`BUILT_IN_JUDGE_INSTRUCTIONS`]).
    #[serde(default)]
    pub instructions: Option<bool>,
    /// Max new tokens for the synthesizer (default 512, the paper's).
    #[serde(default)]
    pub max_new_tokens: Option<usize>,
}

/// What the synthesis panel shows.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SynthOutcome {
    /// The synthesizer's raw output.
    pub pred: String,
    /// `stop` or `length`.
    pub finish_reason: String,
    /// The parsed triplet (instruction, informative and precise answers), if any.
    pub triplet: Option<Value>,
    /// The judge's text and label (`no_triplet` when nothing was parsed, null without a judge).
    pub judge_text: Option<String>,
    /// `yes`, `no`, `open`, `unparsed`, `no_triplet`.
    pub consistency: Option<String>,
    /// Tokens the synthesizer wrote.
    pub tokens: usize,
    /// Seconds spent.
    pub seconds: f64,
}

/// Synthesizes a task triplet for one image + caption and, with a judge, labels it.
pub async fn synthesize_and_judge(
    synthesizer: &Model,
    judge: Option<&Model>,
    image_bytes: &[u8],
    settings: &SynthSettings,
    now_ms: &dyn Fn() -> f64,
) -> Result<SynthOutcome, String> {
    if settings.caption.trim().is_empty() {
        return Err(
            "the caption is empty: the synthesizer reads the image with its caption".into(),
        );
    }
    let image = adamllm::limits::decode_image_bytes(image_bytes)
        .map_err(|e| format!("the picked image: {e}"))?;
    let started = now_ms();
    let options = SynthesizeOptions {
        max_new_tokens: settings.max_new_tokens.unwrap_or(512),
        ..SynthesizeOptions::default()
    };
    let pair = synthesize_pair(synthesizer, &image, &settings.caption, &options)
        .await
        .map_err(|e| e.to_string())?;
    let (judge_text, consistency) = match (judge, &pair.triplet) {
        (None, _) => (None, None),
        (Some(_), None) => (None, Some("no_triplet".to_owned())),
        (Some(judge), Some(triplet)) => {
            let filter = FilterOptions {
                shots: settings.shots.unwrap_or(0),
                instructions: settings.instructions.unwrap_or(BUILT_IN_JUDGE_INSTRUCTIONS),
                ..FilterOptions::default()
            };
            let judgement = judge_triplet(judge, triplet, &filter)
                .await
                .map_err(|e| e.to_string())?;
            (
                Some(judgement.text),
                Some(judgement.label.as_str().to_owned()),
            )
        }
    };
    Ok(SynthOutcome {
        triplet: pair
            .triplet
            .as_ref()
            .map(|t| serde_json::to_value(t).expect("a triplet serializes")),
        pred: pair.pred,
        finish_reason: pair.finish_reason,
        judge_text,
        consistency,
        tokens: pair.tokens,
        seconds: (now_ms() - started) / 1000.0,
    })
}
