//! LLaMA-Factory SFT configs: read one as a run (`adamllm train --config lf.yaml`) and write a
//! run as one (`adamllm train --export-llamafactory DIR`).
//!
//! Reading sorts every top-level key into one of four kinds:
//! - **the same**: a recipe key of the same name and meaning (`learning_rate`, `lora_rank`,
//!   `freeze_vision_tower`, `cutoff_len`, ...), taken as it is;
//! - **the run**: `model_name_or_path`, `dataset` / `eval_dataset` by name through
//!   `dataset_dir/dataset_info.json` (with each entry's `formatting`, `columns` and `tags`),
//!   `media_dir`, `output_dir`, `template` (the names both tools render alike);
//! - **ignored, with a warning**: keys about how LLaMA-Factory runs rather than what it
//!   computes (DeepSpeed, `report_to`, worker counts, attention kernels);
//! - **precision**: `bf16: true` / `fp16: true` become `dtype: bf16` / `f16`, the same scheme as
//!   LLaMA-Factory's (a half-precision base, trainable weights and AdamW state in f32);
//! - **refused**: keys that change the result and that adamllm cannot honour (`pure_bf16`,
//!   `quantization_bit`, packing, DoRA, a non-AdamW optimizer, ...), each only when set to
//!   something other than LLaMA-Factory's default.
//!
//! Unknown keys are warned about and ignored, as LLaMA-Factory's own version drift would make
//! refusing them refuse valid files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::recipe::{DEFAULT_LORA_TARGETS, FinetuningType, MaskMode, TrainRecipe, find_key_line};
use crate::data::conversation::read_conversations_with;
use crate::data::dataset_info::{DATASET_INFO_FILE, DatasetLayout, find_datasets};
use crate::io::{FileError, write_atomic};
use crate::precision::DTypeChoice;

/// Keys whose presence marks a file as a LLaMA-Factory config (an adamllm recipe has none).
const MARKERS: [&str; 6] = [
    "model_name_or_path",
    "dataset",
    "stage",
    "do_train",
    "output_dir",
    "dataset_dir",
];

/// Whether a key is a recipe key with LLaMA-Factory's name and meaning: every recipe key but
/// adamllm's own and `template` (whose names are checked against [`SHARED_TEMPLATES`]).
fn is_same_key(key: &str) -> bool {
    TrainRecipe::keys().contains(&key) && !OWN_KEYS.contains(&key) && key != "template"
}

/// Recipe keys adamllm has and LLaMA-Factory does not: read, with a warning that
/// LLaMA-Factory itself would refuse the file.
const OWN_KEYS: [&str; 3] = ["vision_lr_multiplier", "mask_mode", "max_shard_size"];

/// Templates both tools render alike, by LLaMA-Factory's names.
pub const SHARED_TEMPLATES: [&str; 3] = ["qwen2_vl", "llama3", "llava_next_llama3"];

/// Keys about how LLaMA-Factory runs, not what it computes: ignored with this reason.
const IGNORED: [(&str, &str); 42] = [
    (
        "deepspeed",
        "multi-GPU sharding; adamllm trains on one device",
    ),
    (
        "report_to",
        "adamllm logs to metrics.jsonl and loss_curve.png",
    ),
    ("run_name", "a logger's run name"),
    ("logging_dir", "adamllm logs into the run folder"),
    ("plot_loss", "the loss curve is always plotted"),
    ("overwrite_cache", "no tokenized cache is kept"),
    ("tokenized_path", "no tokenized cache is kept"),
    ("preprocessing_num_workers", "a worker count"),
    ("preprocessing_batch_size", "a worker setting"),
    ("dataloader_num_workers", "a worker count"),
    ("dataloader_pin_memory", "a loader setting"),
    ("dataloader_persistent_workers", "a loader setting"),
    ("ddp_timeout", "multi-GPU setting"),
    ("ddp_find_unused_parameters", "multi-GPU setting"),
    ("flash_attn", "an attention kernel choice; results agree"),
    ("enable_liger_kernel", "a kernel choice; results agree"),
    ("use_unsloth", "a kernel choice"),
    ("use_unsloth_gc", "a memory setting"),
    (
        "trust_remote_code",
        "adamllm runs no model code from the folder",
    ),
    (
        "save_only_model",
        "checkpoints keep the optimizer state for --resume",
    ),
    ("per_device_eval_batch_size", "evaluation batch size"),
    (
        "eval_strategy",
        "the validation loss is computed at the end",
    ),
    (
        "evaluation_strategy",
        "the validation loss is computed at the end",
    ),
    ("eval_steps", "the validation loss is computed at the end"),
    ("save_strategy", "checkpoints follow save_steps"),
    ("logging_strategy", "metrics follow logging_steps"),
    (
        "do_eval",
        "the validation loss is computed at the end when there is validation data",
    ),
    ("do_predict", "use `adamllm eval`"),
    ("predict_with_generate", "use `adamllm eval`"),
    ("compute_accuracy", "use `adamllm eval`"),
    (
        "overwrite_output_dir",
        "a new run needs a new or empty folder; --resume continues one",
    ),
    ("resume_from_checkpoint", "pass --resume"),
    ("push_to_hub", "no network access"),
    ("hub_model_id", "no network access"),
    ("torch_compile", "a PyTorch setting"),
    ("low_cpu_mem_usage", "a loading setting"),
    (
        "cache_dir",
        "models are read from their folder or the Hugging Face cache",
    ),
    ("include_num_input_tokens_seen", "a logging setting"),
    ("video_max_pixels", "adamllm trains on images only"),
    ("video_min_pixels", "adamllm trains on images only"),
    ("video_fps", "adamllm trains on images only"),
    ("print_param_status", "a logging setting"),
];

/// A key refused unless it holds LLaMA-Factory's default: the test of the default, and why.
type Refusal = (&'static str, fn(&Value) -> bool, &'static str);

fn is_false(v: &Value) -> bool {
    matches!(v, Value::Null | Value::Bool(false))
}

fn is_null(v: &Value) -> bool {
    v.is_null() || v.as_str().is_some_and(str::is_empty)
}

const REFUSED: [Refusal; 23] = [
    (
        "stage",
        |v| v.as_str() == Some("sft"),
        "adamllm trains supervised (stage: sft) only",
    ),
    (
        "do_train",
        |v| v.as_bool() != Some(false),
        "`do_train: false` asks for no training",
    ),
    (
        "pure_bf16",
        is_false,
        "pure bf16 keeps the weights and optimizer in bf16; adamllm keeps trainable weights in f32 (use bf16: true)",
    ),
    (
        "adapter_name_or_path",
        is_null,
        "starting from an existing adapter is not available",
    ),
    (
        "packing",
        is_false,
        "sequence packing is not available; each sample is its own sequence",
    ),
    (
        "neat_packing",
        is_false,
        "sequence packing is not available",
    ),
    (
        "mask_history",
        is_false,
        "loss on the last turn only is not available",
    ),
    ("use_dora", is_false, "DoRA is not available; LoRA is"),
    (
        "use_rslora",
        is_false,
        "rank-stabilized LoRA scaling is not available",
    ),
    (
        "pissa_init",
        is_false,
        "PiSSA initialization is not available",
    ),
    (
        "loraplus_lr_ratio",
        is_null,
        "LoRA+ learning rates are not available",
    ),
    (
        "additional_target",
        is_null,
        "extra trainable modules beside LoRA are not available",
    ),
    ("streaming", is_false, "datasets are read whole"),
    (
        "mix_strategy",
        |v| is_null(v) || v.as_str() == Some("concat"),
        "datasets are concatenated (mix_strategy: concat) only",
    ),
    (
        "interleave_probs",
        is_null,
        "datasets are concatenated only",
    ),
    (
        "disable_shuffling",
        is_false,
        "samples are always shuffled by the seed",
    ),
    (
        "default_system",
        is_null,
        "the template's own system prompt is used",
    ),
    (
        "freeze_trainable_modules",
        |v| is_null(v) || v.as_str() == Some("all"),
        "freeze training trains whole decoder layers (freeze_trainable_modules: all)",
    ),
    (
        "freeze_extra_modules",
        is_null,
        "extra trainable modules are not available",
    ),
    (
        "max_samples",
        is_null,
        "every sample of the dataset is used",
    ),
    (
        "train_mm_proj_only",
        is_false,
        "use freeze_vision_tower / freeze_language_model instead",
    ),
    (
        "lr_scheduler_kwargs",
        |v| is_null(v) || v.as_object().is_some_and(|m| m.is_empty()),
        "schedule options beyond lr_scheduler_type are not available",
    ),
    ("rope_scaling", is_null, "RoPE scaling is not available"),
];

/// Optimizers that are AdamW as adamllm runs it.
const ADAMW_NAMES: [&str; 4] = ["adamw_torch", "adamw_hf", "adamw_torch_fused", "adamw"];

/// A LLaMA-Factory config read as an adamllm run.
#[derive(Debug, Clone)]
pub struct LlamaFactoryRun {
    /// The hyper-parameters.
    pub recipe: TrainRecipe,
    /// `model_name_or_path` (a folder or a hub id).
    pub model: Option<PathBuf>,
    /// The data files of `dataset`, in order.
    pub data: Vec<PathBuf>,
    /// The file of `eval_dataset`.
    pub val_data: Option<PathBuf>,
    /// How each file's rows are laid out.
    pub layouts: BTreeMap<PathBuf, DatasetLayout>,
    /// `media_dir` (default `dataset_dir`, as LLaMA-Factory).
    pub images_dir: Option<PathBuf>,
    /// `output_dir`.
    pub output_dir: Option<PathBuf>,
    /// One line per key ignored, in file order.
    pub warnings: Vec<String>,
}

/// Whether a YAML text is a LLaMA-Factory config rather than an adamllm recipe.
pub fn is_llamafactory_config(text: &str) -> bool {
    match serde_yaml_ng::from_str::<serde_yaml_ng::Value>(text) {
        Ok(serde_yaml_ng::Value::Mapping(map)) => map
            .keys()
            .filter_map(serde_yaml_ng::Value::as_str)
            .any(|k| MARKERS.contains(&k)),
        _ => false,
    }
}

/// A folder named in the config: absolute as it is; relative to the working folder when it
/// exists there (how LLaMA-Factory resolves it), else to the config's folder.
fn resolve_dir(given: &str, config_dir: &Path) -> PathBuf {
    let p = PathBuf::from(given);
    if p.is_absolute() || p.exists() {
        p
    } else {
        config_dir.join(p)
    }
}

/// The dataset names of a `dataset` value: a comma-separated string or a list.
fn dataset_names(v: &Value) -> Option<Vec<String>> {
    let names: Vec<String> = match v {
        Value::String(s) => s.split(',').map(|n| n.trim().to_owned()).collect(),
        Value::Array(items) => items
            .iter()
            .map(|i| i.as_str().map(|s| s.trim().to_owned()))
            .collect::<Option<_>>()?,
        _ => return None,
    };
    Some(names.into_iter().filter(|n| !n.is_empty()).collect())
}

/// Reads a LLaMA-Factory SFT config. Errors name the file, the line and the key.
pub fn read_llamafactory_config(path: &Path) -> Result<LlamaFactoryRun, FileError> {
    let text = std::fs::read_to_string(path).map_err(|e| FileError::io(path, e))?;
    let config_dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
    let not_mapping = |e: String| FileError::new(path, format!("not a YAML mapping of keys: {e}"));
    // Read in file order (warnings and the first refusal follow it), then looked up by key.
    let ordered: serde_yaml_ng::Mapping =
        serde_yaml_ng::from_str(&text).map_err(|e| not_mapping(e.to_string()))?;
    let mut entries = Vec::with_capacity(ordered.len());
    for (key, value) in &ordered {
        let key = key
            .as_str()
            .ok_or_else(|| not_mapping(format!("key {key:?} is not text")))?;
        let value = serde_json::to_value(value).map_err(|e| not_mapping(e.to_string()))?;
        entries.push((key.to_owned(), value));
    }
    let map: serde_json::Map<String, Value> = entries.iter().cloned().collect();
    let at_key = |key: &str, message: String| FileError {
        path: path.to_path_buf(),
        location: Some(match find_key_line(&text, key) {
            Some(line) => format!("line {line}, key `{key}`"),
            None => format!("key `{key}`"),
        }),
        message,
    };
    let mut recipe_keys = serde_json::Map::new();
    let mut warnings = Vec::new();
    for (key, value) in &entries {
        let key = key.as_str();
        if is_same_key(key) {
            recipe_keys.insert(key.to_owned(), value.clone());
        } else if OWN_KEYS.contains(&key) {
            recipe_keys.insert(key.to_owned(), value.clone());
            warnings.push(format!("`{key}` is adamllm's own key: read here, but LLaMA-Factory refuses a file holding it"));
        } else if let Some((_, ok, why)) = REFUSED.iter().find(|(k, _, _)| *k == key) {
            if !ok(value) {
                return Err(at_key(key, format!("{value} cannot be honoured: {why}")));
            }
        } else if let Some((_, why)) = IGNORED.iter().find(|(k, _)| *k == key) {
            warnings.push(format!("`{key}` ignored: {why}"));
        } else {
            match read_special(key, value) {
                Special::Handled => {}
                Special::Refuse(message) => return Err(at_key(key, message)),
                Special::Recipe(name, v) => {
                    recipe_keys.insert(name.to_owned(), v);
                }
                Special::Nearest(name, v, how) => {
                    warnings.push(format!("`{key}` read as `{name}: {}`: {how}", scalar(&v)));
                    recipe_keys.insert(name.to_owned(), v);
                }
                Special::Unknown => warnings.push(format!(
                    "`{key}` ignored: not a LLaMA-Factory key adamllm knows"
                )),
            }
        }
    }
    let recipe = recipe_from_keys(recipe_keys).map_err(|(key, message)| at_key(&key, message))?;
    let text_of = |key: &str| map.get(key).and_then(Value::as_str).map(str::to_owned);
    let dataset_dir = resolve_dir(
        &text_of("dataset_dir").unwrap_or_else(|| "data".into()),
        &config_dir,
    );
    let images_dir = text_of("media_dir")
        .or_else(|| text_of("image_dir"))
        .map(|d| resolve_dir(&d, &config_dir))
        .unwrap_or_else(|| dataset_dir.clone());
    let mut layouts = BTreeMap::new();
    let mut data = Vec::new();
    if let Some(v) = map.get("dataset") {
        let names = dataset_names(v).ok_or_else(|| {
            at_key(
                "dataset",
                "expected dataset names, comma-separated or a list".into(),
            )
        })?;
        for found in find_datasets(&dataset_dir, &names)? {
            for file in found.files {
                layouts.insert(file.clone(), found.layout.clone());
                data.push(file);
            }
        }
    }
    let val_data = match map.get("eval_dataset") {
        None | Some(Value::Null) => None,
        Some(v) => {
            let names = dataset_names(v)
                .ok_or_else(|| at_key("eval_dataset", "expected dataset names".into()))?;
            let found = find_datasets(&dataset_dir, &names)?;
            let files: Vec<PathBuf> = found.iter().flat_map(|f| f.files.clone()).collect();
            let [file] = &files[..] else {
                return Err(at_key(
                    "eval_dataset",
                    format!("names {} files; adamllm validates on one", files.len()),
                ));
            };
            layouts.insert(file.clone(), found[0].layout.clone());
            Some(file.clone())
        }
    };
    Ok(LlamaFactoryRun {
        recipe,
        model: text_of("model_name_or_path").map(PathBuf::from),
        data,
        val_data,
        layouts,
        images_dir: Some(images_dir),
        output_dir: text_of("output_dir").map(PathBuf::from),
        warnings,
    })
}

/// How a key outside the fixed tables is read.
enum Special {
    /// Read elsewhere (model, data, output).
    Handled,
    /// Refused, with this message.
    Refuse(String),
    /// Sets this recipe key.
    Recipe(&'static str, Value),
    /// Sets this recipe key to the nearest adamllm has, with a warning saying how it differs.
    Nearest(&'static str, Value, &'static str),
    /// Not a key known here.
    Unknown,
}

fn read_special(key: &str, value: &Value) -> Special {
    match key {
        "model_name_or_path" | "dataset" | "eval_dataset" | "dataset_dir" | "media_dir"
        | "image_dir" | "output_dir" => Special::Handled,
        "template" => match value.as_str() {
            Some(name) if SHARED_TEMPLATES.contains(&name) => {
                Special::Recipe("template", value.clone())
            }
            _ => Special::Refuse(format!(
                "template {value} is not one adamllm renders as LLaMA-Factory does (it renders {})",
                SHARED_TEMPLATES.join(", ")
            )),
        },
        "bf16" if value.as_bool() == Some(true) => Special::Recipe("dtype", "bf16".into()),
        "fp16" if value.as_bool() == Some(true) => Special::Recipe("dtype", "f16".into()),
        "bf16" | "fp16" => Special::Handled,
        "disable_gradient_checkpointing" if value.as_bool() == Some(true) => {
            Special::Recipe("gradient_checkpointing", false.into())
        }
        "disable_gradient_checkpointing" => Special::Handled,
        "optim" => match value.as_str() {
            Some(name) if ADAMW_NAMES.contains(&name) => Special::Handled,
            _ => Special::Refuse(format!(
                "optimizer {value} is not available; adamllm trains with AdamW ({})",
                ADAMW_NAMES.join(", ")
            )),
        },
        "image_resolution" => Special::Recipe("image_max_pixels", value.clone()),
        "quantization_bit" => {
            // LLaMA-Factory quantizes with bitsandbytes (LLM.int8, NF4); adamllm's blocks are
            // symmetric integers, so the frozen base's values differ slightly.
            const SCHEME: &str = "the base is quantized with adamllm's symmetric blocks of 32, \
                                  not bitsandbytes' LLM.int8/NF4";
            match value.as_u64() {
                Some(8) => Special::Nearest("quantize", "q8".into(), SCHEME),
                Some(4) => Special::Nearest("quantize", "q4".into(), SCHEME),
                None if value.is_null() => Special::Handled,
                _ => Special::Refuse(format!("{value} bits: adamllm quantizes to 8 or 4")),
            }
        }
        _ => Special::Unknown,
    }
}

/// The recipe from the keys read; an error names the key.
fn recipe_from_keys(keys: serde_json::Map<String, Value>) -> Result<TrainRecipe, (String, String)> {
    let text = serde_yaml_ng::to_string(&keys).map_err(|e| (String::new(), e.to_string()))?;
    let text = if keys.is_empty() { String::new() } else { text };
    TrainRecipe::from_yaml_str(&text).map_err(|e| (e.key.clone().unwrap_or_default(), e.message))
}

/// What [`export_llamafactory`] writes a config for.
#[derive(Debug, Clone)]
pub struct ExportRequest<'a> {
    /// The hyper-parameters.
    pub recipe: &'a TrainRecipe,
    /// The model as given (a folder or a hub id).
    pub model: &'a Path,
    /// The template to name when the recipe names none (from the model's family).
    pub family_template: Option<&'a str>,
    /// The training files.
    pub data: &'a [PathBuf],
    /// The validation file.
    pub val_data: Option<&'a Path>,
    /// The image folder (default: the data files' one folder).
    pub images_dir: Option<&'a Path>,
    /// The run folder LLaMA-Factory is to write.
    pub output_dir: &'a Path,
    /// `--stages` (not expressible: refused).
    pub stages: bool,
}

/// The file names [`export_llamafactory`] writes.
pub const EXPORT_CONFIG_FILE: &str = "train.yaml";

fn absolute(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            std::env::current_dir()
                .map(|d| d.join(p))
                .unwrap_or_else(|_| p.to_path_buf())
        }
    })
}

/// Writes `dir/train.yaml` and `dir/dataset_info.json`: the same run for LLaMA-Factory
/// (`llamafactory-cli train dir/train.yaml`). Everything is checked before anything is written:
/// recipe keys LLaMA-Factory cannot express, and data rows LLaMA-Factory would read otherwise
/// than adamllm does, are named errors.
pub fn export_llamafactory(req: &ExportRequest<'_>, dir: &Path) -> Result<Vec<PathBuf>, FileError> {
    let r = req.recipe;
    let refuse = |key: &str, message: String| FileError {
        path: dir.join(EXPORT_CONFIG_FILE),
        location: Some(format!("key `{key}`")),
        message,
    };
    if r.vision_lr_multiplier != 1.0 {
        return Err(refuse(
            "vision_lr_multiplier",
            format!(
                "{} has no LLaMA-Factory key (it trains every part at one learning rate); export with --vision-lr-multiplier 1, or freeze the vision tower",
                r.vision_lr_multiplier
            ),
        ));
    }
    if r.mask_mode != MaskMode::Assistant {
        return Err(refuse(
            "mask_mode",
            "the synthesizer mask (loss after the first round) has no LLaMA-Factory key".into(),
        ));
    }
    if req.stages {
        return Err(refuse(
            "stages",
            "LLaMA-Factory trains one mixed stage per run; export each stage's data separately"
                .into(),
        ));
    }
    let template = match r.template.as_deref().or(req.family_template) {
        Some(t) if SHARED_TEMPLATES.contains(&t) => t.to_owned(),
        other => {
            return Err(refuse(
                "template",
                format!(
                    "{} has no LLaMA-Factory equivalent; pick one of {} with --template",
                    other.unwrap_or("the model family's own prompt"),
                    SHARED_TEMPLATES.join(", ")
                ),
            ));
        }
    };
    let images_dir = match req.images_dir {
        Some(d) => absolute(d),
        None => one_folder(req.data, req.val_data).ok_or_else(|| {
            refuse(
                "media_dir",
                "the data files are in several folders; give the image folder with --images".into(),
            )
        })?,
    };
    let mut entries = serde_json::Map::new();
    let mut names = Vec::new();
    for file in req.data {
        let name = entry_name(file, &entries);
        entries.insert(name.clone(), dataset_entry(file)?);
        names.push(name);
    }
    let val_name = match req.val_data {
        Some(file) => {
            let name = entry_name(file, &entries);
            entries.insert(name.clone(), dataset_entry(file)?);
            Some(name)
        }
        None => None,
    };
    let yaml = config_text(
        req,
        &template,
        &names,
        val_name.as_deref(),
        dir,
        &images_dir,
    );
    let config_path = dir.join(EXPORT_CONFIG_FILE);
    let info_path = dir.join(DATASET_INFO_FILE);
    let info = crate::io::json_text(&Value::Object(entries))
        .map_err(|e| FileError::new(&info_path, e.to_string()))?;
    write_atomic(&info_path, info.as_bytes())?;
    write_atomic(&config_path, yaml.as_bytes())?;
    Ok(vec![config_path, info_path])
}

/// The one folder every data file is in, if there is one.
fn one_folder(data: &[PathBuf], val: Option<&Path>) -> Option<PathBuf> {
    let mut folders = data
        .iter()
        .map(PathBuf::as_path)
        .chain(val)
        .map(|f| absolute(f).parent().map(Path::to_path_buf));
    let first = folders.next()??;
    folders.all(|f| f.as_ref() == Some(&first)).then_some(first)
}

/// A `dataset_info.json` name for a file: its stem, made unique.
fn entry_name(file: &Path, taken: &serde_json::Map<String, Value>) -> String {
    let stem: String = file
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "data".into())
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut name = stem.clone();
    let mut n = 2;
    while taken.contains_key(&name) {
        name = format!("{stem}_{n}");
        n += 1;
    }
    name
}

/// The `dataset_info.json` entry of one of adamllm's files, checked row by row: every row must
/// read the same through the entry as adamllm reads it.
fn dataset_entry(file: &Path) -> Result<Value, FileError> {
    let native = crate::data::conversation::read_conversations(file)?;
    let first = std::fs::read_to_string(file).map_err(|e| FileError::io(file, e))?;
    let uses_messages = first.contains("\"messages\"");
    let layout = if uses_messages {
        DatasetLayout::openai_sharegpt()
    } else {
        let mut l = DatasetLayout {
            formatting: crate::data::dataset_info::Formatting::Sharegpt,
            ..DatasetLayout::default()
        };
        l.columns.images = "image".into();
        l
    };
    let through_layout =
        read_conversations_with(file, &|row| layout.conversation(row)).map_err(|e| {
            FileError::new(
                file,
                format!("LLaMA-Factory would not read it as adamllm does: {e}"),
            )
        })?;
    for (a, b) in native.iter().zip(&through_layout) {
        if a.conversation != b.conversation {
            return Err(FileError {
                path: file.to_path_buf(),
                location: Some(a.location.clone()),
                message: "LLaMA-Factory would read this row otherwise than adamllm (mixed role names, or an image without an <image> placeholder); rewrite it as ShareGPT `messages` with `<image>` marks".into(),
            });
        }
    }
    let tags = &layout.tags;
    Ok(serde_json::json!({
        "file_name": absolute(file).to_string_lossy(),
        "formatting": "sharegpt",
        "columns": {"messages": layout.columns.messages, "images": layout.columns.images},
        "tags": {
            "role_tag": tags.role_tag, "content_tag": tags.content_tag,
            "user_tag": tags.user_tag, "assistant_tag": tags.assistant_tag,
            "system_tag": tags.system_tag
        }
    }))
}

/// A YAML scalar for a value (numbers as Rust prints them round-trip exactly).
fn scalar(v: impl serde::Serialize) -> String {
    serde_yaml_ng::to_string(&v)
        .map(|s| s.trim_end().to_owned())
        .unwrap_or_default()
}

fn config_text(
    req: &ExportRequest<'_>,
    template: &str,
    names: &[String],
    val_name: Option<&str>,
    dir: &Path,
    images_dir: &Path,
) -> String {
    let r = req.recipe;
    let model = if req.model.exists() {
        absolute(req.model).to_string_lossy().into_owned()
    } else {
        req.model.to_string_lossy().into_owned()
    };
    let mut y = String::new();
    let mut line = |k: &str, v: String| y.push_str(&format!("{k}: {v}\n"));
    let finetuning = match r.finetuning_type {
        FinetuningType::Lora => "lora",
        FinetuningType::Full => "full",
        FinetuningType::Freeze => "freeze",
    };
    line("### model\nmodel_name_or_path", scalar(&model));
    line("image_max_pixels", scalar(r.image_max_pixels));
    line("image_min_pixels", scalar(r.image_min_pixels));
    line("\n### method\nstage", "sft".into());
    line("do_train", "true".into());
    line("finetuning_type", finetuning.into());
    match r.finetuning_type {
        FinetuningType::Lora => {
            line("lora_rank", scalar(r.lora_rank));
            if let Some(alpha) = r.lora_alpha {
                line("lora_alpha", scalar(alpha));
            }
            line("lora_dropout", scalar(r.lora_dropout));
            let targets = if r.lora_target.is_empty()
                || r.lora_target == ["all"]
                || r.lora_target == DEFAULT_LORA_TARGETS
            {
                "all".to_owned()
            } else {
                r.lora_target.join(",")
            };
            line("lora_target", targets);
        }
        FinetuningType::Freeze => {
            line("freeze_trainable_layers", scalar(r.freeze_trainable_layers))
        }
        FinetuningType::Full => {}
    }
    line("freeze_vision_tower", scalar(r.freeze_vision_tower));
    line(
        "freeze_multi_modal_projector",
        scalar(r.freeze_multi_modal_projector),
    );
    line("freeze_language_model", scalar(r.freeze_language_model));
    line("\n### dataset\ndataset", names.join(","));
    if let Some(v) = val_name {
        line("eval_dataset", v.into());
    }
    line("dataset_dir", scalar(absolute(dir).to_string_lossy()));
    line("media_dir", scalar(images_dir.to_string_lossy()));
    line("template", template.into());
    line("cutoff_len", scalar(r.cutoff_len));
    line("val_size", scalar(r.val_size));
    line("train_on_prompt", scalar(r.train_on_prompt));
    line(
        "\n### output\noutput_dir",
        scalar(req.output_dir.to_string_lossy()),
    );
    line("logging_steps", scalar(r.logging_steps));
    line("save_steps", scalar(r.save_steps));
    if let Some(limit) = r.save_total_limit {
        line("save_total_limit", scalar(limit));
    }
    line("plot_loss", "true".into());
    line(
        "\n### train\nper_device_train_batch_size",
        scalar(r.per_device_train_batch_size),
    );
    line(
        "gradient_accumulation_steps",
        scalar(r.gradient_accumulation_steps),
    );
    line("learning_rate", scalar(r.learning_rate));
    line("num_train_epochs", scalar(r.num_train_epochs));
    if let Some(steps) = r.max_steps {
        line("max_steps", scalar(steps));
    }
    line("lr_scheduler_type", scalar(r.lr_scheduler_type));
    line("warmup_ratio", scalar(r.warmup_ratio));
    line("warmup_steps", scalar(r.warmup_steps));
    line("weight_decay", scalar(r.weight_decay));
    line("max_grad_norm", scalar(r.max_grad_norm));
    line("adam_beta1", scalar(r.adam_beta1));
    line("adam_beta2", scalar(r.adam_beta2));
    line("adam_epsilon", scalar(r.adam_epsilon));
    line("optim", "adamw_torch".into());
    line("seed", scalar(r.seed));
    let mut text = format!(
        "# Written by `adamllm train --export-llamafactory`: the same run for LLaMA-Factory,\n\
         #   llamafactory-cli train {}\n\
         # A DeepSpeed line spreads the run over several GPUs:\n\
         #   deepspeed: examples/deepspeed/ds_z2_config.json\n\n",
        dir.join(EXPORT_CONFIG_FILE).display()
    );
    text.push_str(&y);
    text.push_str(&format!("bf16: {}\n", r.dtype == DTypeChoice::Bf16));
    if r.dtype == DTypeChoice::F16 {
        text.push_str("fp16: true\n");
    }
    if !r.gradient_checkpointing {
        text.push_str("disable_gradient_checkpointing: true\n");
    }
    if let Some(q) = r.quantize {
        text.push_str(&format!("quantization_bit: {}\n", q.bits()));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quantize::Quantization;

    #[test]
    fn llamafactory_files_are_told_from_recipes() {
        assert!(is_llamafactory_config(
            "model_name_or_path: m\nstage: sft\n"
        ));
        assert!(!is_llamafactory_config(
            "learning_rate: 1e-4\nlora_rank: 8\n"
        ));
        assert!(!is_llamafactory_config("# nothing\n"));
    }

    #[test]
    fn keys_sort_into_same_ignored_and_refused() {
        let dir = tempfile::tempdir().unwrap();
        let write = |text: &str| {
            let p = dir.path().join("lf.yaml");
            std::fs::write(&p, text).unwrap();
            p
        };
        let run = read_llamafactory_config(&write(
            "stage: sft\ndo_train: true\nfinetuning_type: lora\nlora_rank: 4\nlora_target: all\n\
             learning_rate: 2.0e-4\nbf16: true\ndeepspeed: ds_z2.json\nreport_to: none\n\
             template: qwen2_vl\noptim: adamw_torch\nsome_new_key: 3\n",
        ))
        .unwrap();
        assert_eq!(run.recipe.lora_rank, 4);
        assert_eq!(run.recipe.learning_rate, 2e-4);
        assert_eq!(run.recipe.template.as_deref(), Some("qwen2_vl"));
        assert_eq!(run.recipe.dtype, DTypeChoice::Bf16);
        assert!(run.recipe.gradient_checkpointing, "LLaMA-Factory's default");
        let off =
            read_llamafactory_config(&write("stage: sft\ndisable_gradient_checkpointing: true\n"))
                .unwrap();
        assert!(!off.recipe.gradient_checkpointing);
        assert!(off.warnings.is_empty(), "{:?}", off.warnings);
        let qlora = read_llamafactory_config(&write("stage: sft\nquantization_bit: 4\n")).unwrap();
        assert_eq!(qlora.recipe.quantize, Some(Quantization::Q4));
        assert!(
            qlora.warnings.len() == 1 && qlora.warnings[0].contains("NF4"),
            "{:?}",
            qlora.warnings
        );
        let e = read_llamafactory_config(&write("stage: sft\nquantization_bit: 2\n"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("line 2, key `quantization_bit`") && e.contains("8 or 4"),
            "{e}"
        );
        let keys: Vec<&str> = run
            .warnings
            .iter()
            .map(|w| w.split('`').nth(1).unwrap())
            .collect();
        assert_eq!(keys, ["deepspeed", "report_to", "some_new_key"]);
        let e = read_llamafactory_config(&write("stage: sft\npure_bf16: true\n"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("line 2, key `pure_bf16`") && e.contains("f32"),
            "{e}"
        );
        let e = read_llamafactory_config(&write("stage: dpo\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("`stage`") && e.contains("sft"), "{e}");
        let e = read_llamafactory_config(&write("stage: sft\ntemplate: mistral\n"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("mistral") && e.contains("llava_next_llama3"),
            "{e}"
        );
        let e = read_llamafactory_config(&write("stage: sft\nlearning_rate: fast\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2, key `learning_rate`"), "{e}");
    }

    #[test]
    fn gradient_checkpointing_and_quantization_survive_export_and_reading_back() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("rows.jsonl");
        let row = r#"{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]}"#;
        std::fs::write(&data, format!("{row}\n")).unwrap();
        let recipe = TrainRecipe {
            gradient_checkpointing: false,
            quantize: Some(Quantization::Q8),
            ..TrainRecipe::default()
        };
        let data_files = [data];
        let request = ExportRequest {
            recipe: &recipe,
            model: Path::new("Qwen/Qwen2-VL-2B-Instruct"),
            family_template: Some("qwen2_vl"),
            data: &data_files,
            val_data: None,
            images_dir: None,
            output_dir: &dir.path().join("run"),
            stages: false,
        };
        let out = dir.path().join("lf");
        export_llamafactory(&request, &out).unwrap();
        let yaml = std::fs::read_to_string(out.join(EXPORT_CONFIG_FILE)).unwrap();
        assert!(
            yaml.contains("disable_gradient_checkpointing: true"),
            "{yaml}"
        );
        let back = read_llamafactory_config(&out.join(EXPORT_CONFIG_FILE)).unwrap();
        assert!(yaml.contains("quantization_bit: 8"), "{yaml}");
        assert!(!back.recipe.gradient_checkpointing);
        assert_eq!(back.recipe.quantize, Some(Quantization::Q8));
    }

    #[test]
    fn the_shipped_paper_recipe_reads_as_the_native_one() {
        let recipes = Path::new(env!("CARGO_MANIFEST_DIR")).join("../recipes");
        let tmp = tempfile::tempdir().unwrap();
        // The config as a user keeps it: beside `data/` holding dataset_info.json and the file.
        let yaml = tmp.path().join("paper.yaml");
        std::fs::copy(recipes.join("llamafactory/paper-qwen2vl-2b.yaml"), &yaml).unwrap();
        let data = tmp.path().join("data");
        std::fs::create_dir_all(data.join("biomed-visual-instructions")).unwrap();
        std::fs::copy(
            recipes.join("llamafactory/dataset_info.json"),
            data.join(DATASET_INFO_FILE),
        )
        .unwrap();
        let file = data.join("biomed-visual-instructions/image_caption_and_synthetic_task.json");
        std::fs::write(&file, "[]").unwrap();
        let run = read_llamafactory_config(&yaml).unwrap();
        let mut native =
            TrainRecipe::from_yaml_file(&recipes.join("paper-qwen2vl-2b.yaml")).unwrap();
        // What LLaMA-Factory cannot say (a vision-tower rate), what it must (the template), and
        // the authors' bf16 (the native recipe stays in f32).
        native.vision_lr_multiplier = 1.0;
        native.template = Some("qwen2_vl".into());
        native.dtype = DTypeChoice::Bf16;
        assert_eq!(run.recipe, native);
        assert_eq!(run.data, vec![file.clone()]);
        assert_eq!(run.layouts[&file], DatasetLayout::openai_sharegpt());
        assert_eq!(run.model, Some(PathBuf::from("Qwen/Qwen2-VL-2B-Instruct")));
        let warned: Vec<&str> = run
            .warnings
            .iter()
            .map(|w| w.split('`').nth(1).unwrap())
            .collect();
        // One warning per ignored key, in file order.
        assert_eq!(
            warned,
            ["preprocessing_num_workers", "plot_loss", "deepspeed"]
        );
    }
}
