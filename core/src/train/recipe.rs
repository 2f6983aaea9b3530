//! The training recipe: every knob of a training run, read from a YAML file and overridable
//! from the command line.
//!
//! Keys carry LLaMA-Factory's names wherever the meaning is the same, so a LLaMA-Factory
//! recipe's training block mostly reads unchanged; keys LLaMA-Factory does not have
//! (`vision_lr_multiplier`, `mask_mode`, `dtype`, `quantize`, `max_shard_size`) are ours. A
//! key this struct does not know is an error, never silently ignored: a typo in a recipe must
//! not train with a default instead.
//!
//! Defaults follow LLaMA-Factory where it sets one and transformers' `TrainingArguments`
//! otherwise; each field's doc names where its default comes from.

use std::fmt;
use std::path::Path;

use serde::{Deserialize, Deserializer, Serialize};
use sha2::{Digest, Sha256};

use crate::io::FileError;
use crate::precision::DTypeChoice;
use crate::quantize::Quantization;

/// What part of the model training updates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FinetuningType {
    /// Low-rank adapters on `lora_target` modules of the language model; base weights frozen.
    Lora,
    /// Every parameter not frozen by the `freeze_*` switches trains.
    Full,
    /// Only some decoder layers of the language model train (`freeze_trainable_layers`).
    Freeze,
}

/// Learning-rate schedule shape (names as transformers' `lr_scheduler_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LrSchedulerType {
    /// Linear warmup, then linear decay to zero at the last step.
    Linear,
    /// Linear warmup, then half a cosine wave down to zero at the last step.
    Cosine,
    /// The base rate at every step; warmup settings are ignored (as in transformers).
    Constant,
    /// Linear warmup, then the base rate.
    ConstantWithWarmup,
}

/// Which tokens of a conversation carry loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MaskMode {
    /// Loss on assistant turns only (or on everything with `train_on_prompt`).
    Assistant,
    /// The whole first round (system, image, first user turn, first answer) is masked and every
    /// later token trains, user turns included: how the paper's synthesizer learns to write
    /// instructions.
    Synthesizer,
}

/// The modules LoRA wraps when `lora_target` is not given (or is `all`): every linear layer of
/// a language-model decoder block.
pub const DEFAULT_LORA_TARGETS: [&str; 7] = [
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
];

/// Every recipe key, in the order the struct declares them. A test keeps it in step with the
/// struct.
pub const RECIPE_KEYS: [&str; 38] = [
    "finetuning_type",
    "lora_rank",
    "lora_alpha",
    "lora_dropout",
    "lora_target",
    "freeze_trainable_layers",
    "learning_rate",
    "num_train_epochs",
    "max_steps",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "lr_scheduler_type",
    "warmup_ratio",
    "warmup_steps",
    "weight_decay",
    "max_grad_norm",
    "adam_beta1",
    "adam_beta2",
    "adam_epsilon",
    "cutoff_len",
    "freeze_vision_tower",
    "freeze_multi_modal_projector",
    "freeze_language_model",
    "vision_lr_multiplier",
    "image_max_pixels",
    "image_min_pixels",
    "seed",
    "save_steps",
    "save_total_limit",
    "logging_steps",
    "val_size",
    "train_on_prompt",
    "mask_mode",
    "template",
    "dtype",
    "gradient_checkpointing",
    "quantize",
    "max_shard_size",
];

/// Keys left out of [`TrainRecipe::fingerprint`]: they decide how often the run logs and saves,
/// or how much memory it takes, not what it computes, so changing them does not block a resume.
pub const FINGERPRINT_EXCLUDED_KEYS: [&str; 5] = [
    "logging_steps",
    "save_steps",
    "save_total_limit",
    "gradient_checkpointing",
    "max_shard_size",
];

/// A training recipe. Unknown keys are rejected when reading.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainRecipe {
    /// `lora`, `full` or `freeze`. Default `lora` (LLaMA-Factory).
    pub finetuning_type: FinetuningType,
    /// LoRA rank r. Default 8 (LLaMA-Factory).
    pub lora_rank: usize,
    /// LoRA scale numerator α (the update is scaled by α/r). Default: unset, meaning 2·r
    /// (LLaMA-Factory); see [`TrainRecipe::lora_alpha_value`].
    pub lora_alpha: Option<f64>,
    /// Dropout on the LoRA input path. Default 0 (LLaMA-Factory).
    pub lora_dropout: f64,
    /// Module names LoRA wraps, as a list or one comma-separated string; `all` means
    /// [`DEFAULT_LORA_TARGETS`]. Default: [`DEFAULT_LORA_TARGETS`].
    #[serde(deserialize_with = "de_string_list")]
    pub lora_target: Vec<String>,
    /// With `finetuning_type: freeze`: how many decoder layers train; positive counts from the
    /// last layer, negative from the first. Default 2 (LLaMA-Factory).
    pub freeze_trainable_layers: i64,
    /// Peak learning rate (after warmup). Default 5e-5 (transformers).
    pub learning_rate: f64,
    /// Passes over the data; fractions stop part-way. Default 3 (transformers).
    pub num_train_epochs: f64,
    /// Optimizer steps to run, overriding `num_train_epochs`. Default: unset (transformers'
    /// `-1`, which is also accepted and means unset).
    #[serde(deserialize_with = "de_optional_count")]
    pub max_steps: Option<usize>,
    /// Samples per micro-batch. Default 8 (transformers).
    pub per_device_train_batch_size: usize,
    /// Micro-batches per optimizer step. Default 1 (transformers).
    pub gradient_accumulation_steps: usize,
    /// Schedule shape. Default `linear` (transformers).
    pub lr_scheduler_type: LrSchedulerType,
    /// Warmup length as a fraction of the total optimizer steps (rounded up). Default 0
    /// (transformers).
    pub warmup_ratio: f64,
    /// Warmup length in optimizer steps; when above 0 it wins over `warmup_ratio`. Default 0
    /// (transformers).
    pub warmup_steps: usize,
    /// AdamW decoupled weight decay. Default 0 (transformers).
    pub weight_decay: f64,
    /// Clip gradients to this global L2 norm; 0 turns clipping off. Default 1 (transformers).
    pub max_grad_norm: f64,
    /// AdamW β1. Default 0.9 (PyTorch / transformers).
    pub adam_beta1: f64,
    /// AdamW β2. Default 0.999 (PyTorch / transformers).
    pub adam_beta2: f64,
    /// AdamW ε. Default 1e-8 (PyTorch / transformers).
    pub adam_epsilon: f64,
    /// Longest tokenized sample; longer ones are cut from the end (never inside image tokens).
    /// Default 2048 (LLaMA-Factory).
    pub cutoff_len: usize,
    /// Keep the vision tower's weights fixed. Default true (LLaMA-Factory).
    pub freeze_vision_tower: bool,
    /// Keep the merger (the projector from vision to text width) fixed. Default true
    /// (LLaMA-Factory).
    pub freeze_multi_modal_projector: bool,
    /// Keep the language model's weights fixed. Default false (LLaMA-Factory).
    pub freeze_language_model: bool,
    /// Factor on `learning_rate` for the vision tower's parameters (patch embedding and ViT
    /// blocks); the paper uses 0.1. Default 1 (ours).
    pub vision_lr_multiplier: f64,
    /// Images with more pixels are scaled down. Default 768·768 = 589,824 (LLaMA-Factory).
    pub image_max_pixels: u64,
    /// Images with fewer pixels are scaled up. Default 32·32 = 1,024 (LLaMA-Factory).
    pub image_min_pixels: u64,
    /// Seed for initialization, shuffling and dropout. Default 42 (transformers).
    pub seed: u64,
    /// Save a checkpoint every this many optimizer steps (and always at the end); 0 saves only
    /// at the end. Default 500 (transformers).
    pub save_steps: usize,
    /// Keep only the newest K checkpoints. Default: unset, keep all (transformers).
    pub save_total_limit: Option<usize>,
    /// Write a metrics row every this many optimizer steps. Default 500 (transformers).
    pub logging_steps: usize,
    /// Held-out validation split: a fraction in [0, 1), or a whole number ≥ 1 of samples.
    /// Default 0, none (LLaMA-Factory).
    pub val_size: f64,
    /// Also train on prompt tokens (user and system turns). Default false (LLaMA-Factory).
    pub train_on_prompt: bool,
    /// `assistant` or `synthesizer`; see [`MaskMode`]. Default `assistant` (ours).
    pub mask_mode: MaskMode,
    /// Chat template by name (LLaMA-Factory's key; `qwen2_vl`, `llama3`, `llava_llama_3`,
    /// `chatml`, `folder`, ...). Default: unset, the model family's own prompt.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// Weight dtype of the frozen base: `f32`, `bf16`, `f16` or `auto` (the checkpoint's, where
    /// the device computes it). Trainable weights, their gradients and AdamW state stay f32;
    /// `f16` adds dynamic loss scaling. Default `f32` (LLaMA-Factory's `bf16: true` is
    /// `dtype: bf16`).
    #[serde(skip_serializing_if = "DTypeChoice::is_f32")]
    pub dtype: DTypeChoice,
    /// Recompute each decoder layer's activations during the backward pass instead of keeping
    /// them (transformers' gradient checkpointing; LLaMA-Factory's default, turned off there
    /// by `disable_gradient_checkpointing: true`). It saves most activation memory for about
    /// one extra forward pass and leaves the gradients as they are, so it is not part of the
    /// fingerprint: a run may resume with it changed (with `lora_dropout`, the masks are then
    /// drawn per layer, so they differ from the other setting's). Default true.
    pub gradient_checkpointing: bool,
    /// Weight-only quantization of the frozen base's linear layers, `q8` or `q4` (QLoRA: only
    /// with `finetuning_type: lora`; the adapters stay f32). LLaMA-Factory's
    /// `quantization_bit: 8|4`. Default: unset, a dense base in `dtype`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quantize: Option<Quantization>,
    /// Largest weight file of the exported model, as transformers' `save_pretrained` takes
    /// it: bytes, or `5GB`, `500MB`, `2GiB`, ... Larger models are written in shards with
    /// `model.safetensors.index.json`. Default `5GB` (transformers').
    #[serde(deserialize_with = "de_size_text")]
    pub max_shard_size: String,
}

impl Default for TrainRecipe {
    fn default() -> Self {
        Self {
            finetuning_type: FinetuningType::Lora,
            lora_rank: 8,
            lora_alpha: None,
            lora_dropout: 0.0,
            lora_target: DEFAULT_LORA_TARGETS.iter().map(|s| s.to_string()).collect(),
            freeze_trainable_layers: 2,
            learning_rate: 5e-5,
            num_train_epochs: 3.0,
            max_steps: None,
            per_device_train_batch_size: 8,
            gradient_accumulation_steps: 1,
            lr_scheduler_type: LrSchedulerType::Linear,
            warmup_ratio: 0.0,
            warmup_steps: 0,
            weight_decay: 0.0,
            max_grad_norm: 1.0,
            adam_beta1: 0.9,
            adam_beta2: 0.999,
            adam_epsilon: 1e-8,
            cutoff_len: 2048,
            freeze_vision_tower: true,
            freeze_multi_modal_projector: true,
            freeze_language_model: false,
            vision_lr_multiplier: 1.0,
            image_max_pixels: 768 * 768,
            image_min_pixels: 32 * 32,
            seed: 42,
            save_steps: 500,
            save_total_limit: None,
            logging_steps: 500,
            val_size: 0.0,
            train_on_prompt: false,
            mask_mode: MaskMode::Assistant,
            template: None,
            dtype: DTypeChoice::F32,
            gradient_checkpointing: true,
            quantize: None,
            max_shard_size: "5GB".into(),
        }
    }
}

/// A recipe value that parses but cannot be used (a zero batch size, a ratio above 1, ...).
#[derive(Debug, Clone, PartialEq)]
pub struct RecipeValueError {
    /// The offending key.
    pub key: &'static str,
    /// Why its value is refused.
    pub message: String,
}

impl fmt::Display for RecipeValueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "key `{}`: {}", self.key, self.message)
    }
}

impl std::error::Error for RecipeValueError {}

impl TrainRecipe {
    /// Every recipe key, in declaration order.
    pub fn keys() -> &'static [&'static str] {
        &RECIPE_KEYS
    }

    /// Reads a YAML recipe. Keys left out take their defaults; an empty file is the default
    /// recipe. Errors name the file and, when known, the line and the key: unknown keys (with
    /// the closest known names), values of the wrong type, values out of range.
    pub fn from_yaml_file(path: &Path) -> Result<Self, FileError> {
        let text = std::fs::read_to_string(path).map_err(|e| FileError::io(path, e))?;
        Self::from_yaml_str(&text).map_err(|e| e.into_file_error(path))
    }

    /// Parses a YAML recipe from text (see [`TrainRecipe::from_yaml_file`]).
    pub fn from_yaml_str(text: &str) -> Result<Self, RecipeParseError> {
        // A document with nothing but comments is the default recipe.
        let doc: serde_yaml_ng::Value =
            serde_yaml_ng::from_str(text).map_err(|e| RecipeParseError::from_yaml(&e))?;
        let recipe = match doc {
            serde_yaml_ng::Value::Null => Self::default(),
            serde_yaml_ng::Value::Mapping(_) => serde_yaml_ng::from_str::<Self>(text)
                .map_err(|e| RecipeParseError::from_yaml(&e).at_key_line(text))?,
            _ => {
                return Err(RecipeParseError {
                    line: Some(1),
                    key: None,
                    message: "a recipe is a mapping of `key: value` lines".into(),
                });
            }
        };
        recipe.validate().map_err(|e| RecipeParseError {
            line: find_key_line(text, e.key),
            key: Some(e.key.to_string()),
            message: e.message,
        })?;
        Ok(recipe)
    }

    /// Reads the recipe file when given (the defaults otherwise), applies `--key value`
    /// overrides in order, then validates the result. The error is ready to print.
    pub fn load(config: Option<&Path>, overrides: &[(String, String)]) -> Result<Self, String> {
        let mut recipe = match config {
            Some(path) => Self::from_yaml_file(path).map_err(|e| e.to_string())?,
            None => Self::default(),
        };
        for (key, value) in overrides {
            recipe.apply_override(key, value)?;
        }
        recipe.validate().map_err(|e| match config {
            Some(path) => format!("{} (after command-line overrides): {e}", path.display()),
            None => e.to_string(),
        })?;
        Ok(recipe)
    }

    /// Sets one key from a command-line flag: `key` may be `learning_rate`, `learning-rate`
    /// or `--learning-rate`; `value` is read as a YAML scalar (`1e-4`, `true`, `cosine`,
    /// `q_proj,v_proj`, `null`) and must have the key's type. The recipe is unchanged on error.
    /// Range checks are left to [`TrainRecipe::validate`], run once all overrides are applied.
    pub fn apply_override(&mut self, key: &str, value: &str) -> Result<(), String> {
        let key = normalize_key(key);
        if !Self::keys().contains(&key.as_str()) {
            return Err(unknown_key_message(&key, true));
        }
        let parsed: serde_json::Value = match serde_yaml_ng::from_str(value) {
            Ok(v) => v,
            // Text YAML cannot read as a scalar (`a: b`, `[x`) is taken as a plain string.
            Err(_) => serde_json::Value::String(value.to_string()),
        };
        let mut map = match serde_json::to_value(&*self) {
            Ok(serde_json::Value::Object(map)) => map,
            _ => return Err("internal error: a recipe must serialize to a JSON object".into()),
        };
        map.insert(key.clone(), parsed);
        let updated: Self =
            serde_json::from_value(serde_json::Value::Object(map)).map_err(|e| {
                format!(
                    "--{} {value}: not a valid value for recipe key `{key}`: {e}",
                    key.replace('_', "-")
                )
            })?;
        *self = updated;
        Ok(())
    }

    /// Checks values that parse but cannot train: zero sizes, out-of-range ratios, ...
    pub fn validate(&self) -> Result<(), RecipeValueError> {
        fn bad(key: &'static str, message: impl Into<String>) -> Result<(), RecipeValueError> {
            Err(RecipeValueError {
                key,
                message: message.into(),
            })
        }
        let finite_nonneg = |x: f64| x.is_finite() && x >= 0.0;
        if let Some(t) = &self.template
            && !crate::models::chat::TEMPLATE_NAMES
                .iter()
                .any(|(name, _)| name == t)
        {
            return bad(
                "template",
                format!(
                    "unknown template {t:?}; expected one of {}",
                    crate::models::prompt::template_names()
                ),
            );
        }
        match crate::models::export::parse_shard_size(&self.max_shard_size) {
            Ok(0) => return bad("max_shard_size", "must be more than 0 bytes"),
            Ok(_) => {}
            Err(e) => return bad("max_shard_size", e),
        }
        if let Some(q) = self.quantize
            && self.finetuning_type != FinetuningType::Lora
        {
            return bad(
                "quantize",
                format!(
                    "a {q} base cannot train; quantize goes with finetuning_type: lora \
                     (QLoRA: adapters over the frozen quantized base)"
                ),
            );
        }
        if self.finetuning_type == FinetuningType::Lora {
            if self.lora_rank == 0 {
                return bad("lora_rank", "must be at least 1");
            }
            if let Some(alpha) = self.lora_alpha
                && !(alpha.is_finite() && alpha > 0.0)
            {
                return bad("lora_alpha", format!("must be positive, got {alpha}"));
            }
            if !(self.lora_dropout.is_finite() && (0.0..1.0).contains(&self.lora_dropout)) {
                return bad(
                    "lora_dropout",
                    format!("must lie in [0, 1), got {}", self.lora_dropout),
                );
            }
            if self.lora_target.is_empty() {
                return bad("lora_target", "names no module");
            }
        }
        if self.finetuning_type == FinetuningType::Freeze && self.freeze_trainable_layers == 0 {
            return bad(
                "freeze_trainable_layers",
                "must not be 0 with `finetuning_type: freeze`",
            );
        }
        if !finite_nonneg(self.learning_rate) {
            return bad(
                "learning_rate",
                format!("must be a finite number ≥ 0, got {}", self.learning_rate),
            );
        }
        if self.max_steps.is_none()
            && !(self.num_train_epochs.is_finite() && self.num_train_epochs > 0.0)
        {
            return bad(
                "num_train_epochs",
                format!(
                    "must be positive when `max_steps` is unset, got {}",
                    self.num_train_epochs
                ),
            );
        }
        if self.max_steps == Some(0) {
            return bad(
                "max_steps",
                "must be at least 1 (or unset / -1 to train by epochs)",
            );
        }
        if self.per_device_train_batch_size == 0 {
            return bad("per_device_train_batch_size", "must be at least 1");
        }
        if self.gradient_accumulation_steps == 0 {
            return bad("gradient_accumulation_steps", "must be at least 1");
        }
        // Samples per step are multiplied out: both factors are bounded (2^20 each).
        for (key, value) in [
            (
                "per_device_train_batch_size",
                self.per_device_train_batch_size,
            ),
            (
                "gradient_accumulation_steps",
                self.gradient_accumulation_steps,
            ),
        ] {
            if value > 1 << 20 {
                return bad(key, "exceeds the limit of 1048576");
            }
        }
        if !(self.warmup_ratio.is_finite() && (0.0..=1.0).contains(&self.warmup_ratio)) {
            return bad(
                "warmup_ratio",
                format!("must lie in [0, 1], got {}", self.warmup_ratio),
            );
        }
        if !finite_nonneg(self.weight_decay) {
            return bad(
                "weight_decay",
                format!("must be a finite number ≥ 0, got {}", self.weight_decay),
            );
        }
        if !finite_nonneg(self.max_grad_norm) {
            return bad(
                "max_grad_norm",
                format!("must be a finite number ≥ 0, got {}", self.max_grad_norm),
            );
        }
        for (key, beta) in [
            ("adam_beta1", self.adam_beta1),
            ("adam_beta2", self.adam_beta2),
        ] {
            if !(beta.is_finite() && (0.0..1.0).contains(&beta)) {
                return bad(key, format!("must lie in [0, 1), got {beta}"));
            }
        }
        if !(self.adam_epsilon.is_finite() && self.adam_epsilon > 0.0) {
            return bad(
                "adam_epsilon",
                format!("must be positive, got {}", self.adam_epsilon),
            );
        }
        if self.cutoff_len == 0 {
            return bad("cutoff_len", "must be at least 1");
        }
        if !finite_nonneg(self.vision_lr_multiplier) {
            return bad(
                "vision_lr_multiplier",
                format!(
                    "must be a finite number ≥ 0, got {}",
                    self.vision_lr_multiplier
                ),
            );
        }
        if self.image_max_pixels == 0 {
            return bad("image_max_pixels", "must be at least 1");
        }
        if self.image_min_pixels > self.image_max_pixels {
            return bad(
                "image_min_pixels",
                format!(
                    "{} exceeds image_max_pixels ({})",
                    self.image_min_pixels, self.image_max_pixels
                ),
            );
        }
        if self.save_total_limit == Some(0) {
            return bad(
                "save_total_limit",
                "must be at least 1 (or unset to keep every checkpoint)",
            );
        }
        if self.logging_steps == 0 {
            return bad("logging_steps", "must be at least 1");
        }
        let v = self.val_size;
        if !(v.is_finite() && v >= 0.0 && (v < 1.0 || v.fract() == 0.0)) {
            return bad(
                "val_size",
                format!("must be a fraction in [0, 1) or a whole count, got {v}"),
            );
        }
        if self.freeze_vision_tower
            && self.freeze_multi_modal_projector
            && self.freeze_language_model
            && self.finetuning_type == FinetuningType::Full
        {
            return bad(
                "freeze_language_model",
                "with the vision tower and merger also frozen, nothing would train",
            );
        }
        Ok(())
    }

    /// `max_shard_size` in bytes (the default, 5·10⁹, where it does not read: validation
    /// names that case).
    pub fn max_shard_bytes(&self) -> u64 {
        crate::models::export::parse_shard_size(&self.max_shard_size)
            .unwrap_or(crate::models::export::DEFAULT_MAX_SHARD_BYTES)
    }

    /// The LoRA scale numerator: `lora_alpha`, or 2·`lora_rank` when unset.
    pub fn lora_alpha_value(&self) -> f64 {
        self.lora_alpha.unwrap_or(2.0 * self.lora_rank as f64)
    }

    /// The LoRA target module names with `all` expanded to [`DEFAULT_LORA_TARGETS`].
    pub fn lora_target_modules(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for name in &self.lora_target {
            if name == "all" {
                for d in DEFAULT_LORA_TARGETS {
                    if !out.iter().any(|o| o == d) {
                        out.push(d.to_string());
                    }
                }
            } else if !out.contains(name) {
                out.push(name.clone());
            }
        }
        out
    }

    /// Samples per optimizer step: micro-batch size × accumulation steps.
    pub fn effective_batch_size(&self) -> usize {
        self.per_device_train_batch_size * self.gradient_accumulation_steps
    }

    /// How many of `n` samples go to validation: `val_size` as a fraction (rounded down, as
    /// a train/test split of that fraction would) or as a count, never all of them.
    pub fn val_count(&self, n: usize) -> usize {
        let v = self.val_size;
        let count = if v < 1.0 {
            (v * n as f64).floor() as usize
        } else {
            v as usize
        };
        count.min(n.saturating_sub(1))
    }

    /// The recipe as canonical JSON: keys sorted at every level, no whitespace, floats in
    /// shortest round-trip form. Keys in [`FINGERPRINT_EXCLUDED_KEYS`] are left out.
    pub fn canonical_json(&self) -> String {
        let mut value = serde_json::to_value(self).expect("a recipe always serializes");
        if let serde_json::Value::Object(map) = &mut value {
            for k in FINGERPRINT_EXCLUDED_KEYS {
                map.remove(k);
            }
        }
        let mut out = String::new();
        write_canonical(&value, &mut out);
        out
    }

    /// A stable identity of what this recipe computes: lowercase hex SHA-256 of a version tag
    /// and [`TrainRecipe::canonical_json`]. Two recipes that differ only in logging or saving
    /// cadence share it; any other difference changes it.
    pub fn fingerprint(&self) -> String {
        let mut hasher = Sha256::new();
        hasher.update(b"adamllm-recipe-v1\n");
        hasher.update(self.canonical_json().as_bytes());
        hex(&hasher.finalize())
    }
}

/// A recipe that failed to parse, with what is known of where.
#[derive(Debug, Clone, PartialEq)]
pub struct RecipeParseError {
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// The key concerned, when known.
    pub key: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl RecipeParseError {
    fn from_yaml(err: &serde_yaml_ng::Error) -> Self {
        let line = err.location().map(|l| l.line());
        let mut message = err.to_string();
        // The YAML library appends " at line L column C"; the line travels separately.
        if let Some((head, tail)) = message.rsplit_once(" at line ")
            && tail.split_once(" column ").is_some_and(|(l, c)| {
                l.chars().all(|ch| ch.is_ascii_digit()) && c.chars().all(|ch| ch.is_ascii_digit())
            })
        {
            message = head.to_string();
        }
        if let Some(rest) = message.strip_prefix("unknown field `")
            && let Some((name, _)) = rest.split_once('`')
        {
            let name = name.to_string();
            return Self {
                line,
                message: unknown_key_message(&name, false),
                key: Some(name),
            };
        }
        // Errors inside a value start with the path to it: `learning_rate: invalid type ...`.
        if let Some((path, rest)) = message.split_once(": ") {
            let root = path.split(['[', '.']).next().unwrap_or(path);
            if let Some(known) = TrainRecipe::keys().iter().copied().find(|k| *k == root) {
                return Self {
                    line,
                    key: Some(known.to_string()),
                    message: rest.to_string(),
                };
            }
        }
        Self {
            line,
            key: None,
            message,
        }
    }

    /// Some errors (raised after a value was read) carry the document's start as their
    /// position; a top-level key written further down is a better line then.
    fn at_key_line(mut self, text: &str) -> Self {
        if let Some(key_line) = self.key.as_deref().and_then(|k| find_key_line(text, k))
            && self.line.is_none_or(|l| l < key_line)
        {
            self.line = Some(key_line);
        }
        self
    }

    /// Attaches the file name.
    pub fn into_file_error(self, path: &Path) -> FileError {
        let location = match (self.line, &self.key) {
            (Some(l), Some(k)) => Some(format!("line {l}, key `{k}`")),
            (Some(l), None) => Some(format!("line {l}")),
            (None, Some(k)) => Some(format!("key `{k}`")),
            (None, None) => None,
        };
        FileError {
            path: path.to_path_buf(),
            location,
            message: self.message,
        }
    }
}

impl fmt::Display for RecipeParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(l) = self.line {
            write!(f, "line {l}: ")?;
        }
        if let Some(k) = &self.key {
            write!(f, "key `{k}`: ")?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for RecipeParseError {}

/// `--learning-rate` / `learning-rate` / `learning_rate` → `learning_rate`.
pub fn normalize_key(flag: &str) -> String {
    flag.trim().trim_start_matches('-').replace('-', "_")
}

/// Whether a command-line flag names a recipe key (after [`normalize_key`]).
pub fn is_recipe_key(flag: &str) -> bool {
    TrainRecipe::keys().contains(&normalize_key(flag).as_str())
}

/// Names that people often use for a recipe key; only used to suggest the right one.
const ALIASES: [(&str, &str); 12] = [
    ("lr", "learning_rate"),
    ("epochs", "num_train_epochs"),
    ("num_epochs", "num_train_epochs"),
    ("batch_size", "per_device_train_batch_size"),
    ("grad_accum", "gradient_accumulation_steps"),
    ("gradient_accumulation", "gradient_accumulation_steps"),
    ("warmup", "warmup_ratio"),
    ("max_length", "cutoff_len"),
    ("max_len", "cutoff_len"),
    ("lora_r", "lora_rank"),
    ("scheduler", "lr_scheduler_type"),
    ("lr_scheduler", "lr_scheduler_type"),
];

/// Known keys close to `name`: aliases, small edit distance, or containment.
pub fn close_keys(name: &str) -> Vec<&'static str> {
    let name = normalize_key(name).to_lowercase();
    let mut out: Vec<&'static str> = Vec::new();
    for (alias, key) in ALIASES {
        if alias == name && !out.contains(&key) {
            out.push(key);
        }
    }
    let mut scored: Vec<(usize, &'static str)> = TrainRecipe::keys()
        .iter()
        .filter_map(|k| {
            let d = edit_distance(&name, k);
            let limit = (k.len().max(name.len()) / 3).max(2);
            let contains = name.len() >= 3 && (k.contains(name.as_str()) || name.contains(*k));
            (d <= limit || contains).then_some((d, *k))
        })
        .collect();
    scored.sort();
    for (_, k) in scored {
        if !out.contains(&k) {
            out.push(k);
        }
    }
    out.truncate(4);
    out
}

/// LLaMA-Factory keys that have no place in an adamllm recipe, with what to do instead.
const LLAMAFACTORY_ELSEWHERE: [(&str, &str); 12] = [
    ("model_name_or_path", "pass the model folder with --model"),
    ("dataset", "pass data files with --data"),
    (
        "dataset_dir",
        "pass data files with --data and the image folder with --images",
    ),
    ("eval_dataset", "pass validation files with --val-data"),
    ("output_dir", "pass the run folder with --out"),
    (
        "overwrite_output_dir",
        "remove it: a new run needs an empty or new --out folder",
    ),
    ("resume_from_checkpoint", "pass --resume"),
    ("bf16", "write `dtype: bf16` (LLaMA-Factory's `bf16: true`)"),
    ("fp16", "write `dtype: f16` (LLaMA-Factory's `fp16: true`)"),
    ("stage", "remove it: adamllm trains supervised (sft) only"),
    ("do_train", "remove it"),
    ("plot_loss", "remove it: the loss curve is always plotted"),
];

fn unknown_key_message(name: &str, as_flag: bool) -> String {
    let what = if as_flag {
        format!("--{}", name.replace('_', "-"))
    } else {
        format!("`{name}`")
    };
    if let Some((_, hint)) = LLAMAFACTORY_ELSEWHERE.iter().find(|(k, _)| *k == name) {
        return format!("{what} is not a recipe key in adamllm: {hint}");
    }
    let close = close_keys(name);
    if close.is_empty() {
        format!(
            "unknown recipe key {what}; known keys: {}",
            TrainRecipe::keys().join(", ")
        )
    } else {
        let list: Vec<String> = close.iter().map(|k| format!("`{k}`")).collect();
        format!(
            "unknown recipe key {what}; did you mean {}?",
            list.join(" or ")
        )
    }
}

fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for i in 1..=a.len() {
        cur[0] = i;
        for j in 1..=b.len() {
            let sub = prev[j - 1] + usize::from(a[i - 1] != b[j - 1]);
            cur[j] = sub.min(prev[j] + 1).min(cur[j - 1] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// The 1-based line where a top-level `key:` is written, if any.
pub(crate) fn find_key_line(text: &str, key: &str) -> Option<usize> {
    text.lines()
        .position(|line| {
            line.strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with(':'))
        })
        .map(|i| i + 1)
}

/// Writes JSON with object keys sorted at every level and no whitespace.
fn write_canonical(value: &serde_json::Value, out: &mut String) {
    match value {
        serde_json::Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&serde_json::to_string(k).expect("strings serialize"));
                out.push(':');
                write_canonical(&map[k], out);
            }
            out.push('}');
        }
        serde_json::Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&serde_json::to_string(scalar).expect("scalars serialize")),
    }
}

/// Lowercase hex of some bytes (digests).
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads a list of names from either a YAML list or one comma-separated string.
fn de_string_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrList {
        One(String),
        List(Vec<String>),
    }
    let names = match OneOrList::deserialize(d).map_err(|_| {
        <D::Error as serde::de::Error>::custom(
            "lora_target: expected module names, as one comma-separated string or a list of strings",
        )
    })? {
        OneOrList::One(s) => s.split(',').map(str::to_string).collect::<Vec<_>>(),
        OneOrList::List(v) => v,
    };
    Ok(names
        .into_iter()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect())
}

/// Reads a size given as text (`5GB`) or as a byte count, keeping it as text.
fn de_size_text<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum TextOrBytes {
        Text(String),
        Bytes(u64),
    }
    match TextOrBytes::deserialize(d) {
        Ok(TextOrBytes::Text(s)) => Ok(s),
        Ok(TextOrBytes::Bytes(n)) => Ok(n.to_string()),
        Err(_) => Err(<D::Error as serde::de::Error>::custom(
            "expected a size: bytes, or e.g. 5GB, 500MB, 2GiB",
        )),
    }
}

/// Reads a step count where null or any negative number (transformers' `-1`) means unset.
fn de_optional_count<'de, D: Deserializer<'de>>(d: D) -> Result<Option<usize>, D::Error> {
    let v: Option<i64> = Option::deserialize(d)?;
    Ok(v.and_then(|n| usize::try_from(n).ok()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> std::path::PathBuf {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn key_list_matches_struct() {
        // `template` is left out when unset (so recipes without it keep their fingerprint).
        let with_template = TrainRecipe {
            template: Some("llama3".into()),
            dtype: DTypeChoice::Bf16,
            quantize: Some(Quantization::Q4),
            ..TrainRecipe::default()
        };
        assert_eq!(
            TrainRecipe::default().fingerprint(),
            TrainRecipe {
                template: None,
                ..TrainRecipe::default()
            }
            .fingerprint()
        );
        let v = serde_json::to_value(with_template).unwrap();
        let mut serialized: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        let mut listed: Vec<String> = TrainRecipe::keys().iter().map(|s| s.to_string()).collect();
        serialized.sort();
        listed.sort();
        assert_eq!(serialized, listed);
    }

    #[test]
    fn defaults_follow_llamafactory_and_transformers() {
        let r = TrainRecipe::default();
        assert_eq!(r.finetuning_type, FinetuningType::Lora);
        assert_eq!(r.lora_rank, 8);
        assert_eq!(r.lora_alpha_value(), 16.0);
        assert_eq!(
            (r.adam_beta1, r.adam_beta2, r.adam_epsilon),
            (0.9, 0.999, 1e-8)
        );
        assert_eq!(r.lr_scheduler_type, LrSchedulerType::Linear);
        assert_eq!(r.lora_target_modules().len(), 7);
        r.validate().unwrap();
    }

    #[test]
    fn reads_yaml_with_comments_lists_and_strings() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            &dir,
            "r.yaml",
            "# a recipe\nfinetuning_type: full\nlearning_rate: 1e-5\nlr_scheduler_type: cosine\n\
             lora_target: q_proj, v_proj\nmax_steps: -1\nsave_total_limit: 2\nnum_train_epochs: 1\n",
        );
        let r = TrainRecipe::from_yaml_file(&p).unwrap();
        assert_eq!(r.finetuning_type, FinetuningType::Full);
        assert_eq!(r.learning_rate, 1e-5);
        assert_eq!(r.lr_scheduler_type, LrSchedulerType::Cosine);
        assert_eq!(r.lora_target, vec!["q_proj", "v_proj"]);
        assert_eq!(r.max_steps, None);
        assert_eq!(r.save_total_limit, Some(2));
        assert_eq!(r.num_train_epochs, 1.0);

        let p = write(&dir, "list.yaml", "lora_target:\n  - q_proj\n  - all\n");
        let r = TrainRecipe::from_yaml_file(&p).unwrap();
        assert_eq!(r.lora_target, vec!["q_proj", "all"]);
        assert_eq!(r.lora_target_modules().len(), 7);

        let p = write(&dir, "empty.yaml", "# nothing\n");
        assert_eq!(
            TrainRecipe::from_yaml_file(&p).unwrap(),
            TrainRecipe::default()
        );
    }

    #[test]
    fn unknown_key_names_file_line_key_and_suggestion() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            &dir,
            "bad.yaml",
            "learning_rate: 1e-4\nnum_train_epoch: 2\n",
        );
        let msg = TrainRecipe::from_yaml_file(&p).unwrap_err().to_string();
        assert!(msg.contains("bad.yaml"), "{msg}");
        assert!(msg.contains("line 2"), "{msg}");
        assert!(msg.contains("`num_train_epoch`"), "{msg}");
        assert!(msg.contains("did you mean `num_train_epochs`"), "{msg}");
    }

    #[test]
    fn wrong_type_names_file_line_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(&dir, "bad.yaml", "seed: 1\nlearning_rate: fast\n");
        let err = TrainRecipe::from_yaml_file(&p).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("bad.yaml"), "{msg}");
        assert!(msg.contains("line 2"), "{msg}");
        assert!(msg.contains("key `learning_rate`"), "{msg}");
        assert!(msg.contains("invalid type"), "{msg}");

        let p = write(&dir, "enum.yaml", "lr_scheduler_type: cosin\n");
        let msg = TrainRecipe::from_yaml_file(&p).unwrap_err().to_string();
        assert!(
            msg.contains("key `lr_scheduler_type`") && msg.contains("cosine"),
            "{msg}"
        );

        let p = write(&dir, "range.yaml", "seed: 3\nwarmup_ratio: 1.5\n");
        let msg = TrainRecipe::from_yaml_file(&p).unwrap_err().to_string();
        assert!(msg.contains("line 2, key `warmup_ratio`"), "{msg}");

        let p = write(&dir, "list.yaml", "- a\n- b\n");
        assert!(TrainRecipe::from_yaml_file(&p).is_err());

        let p = write(&dir, "target.yaml", "seed: 1\nlora_target: 3\n");
        let msg = TrainRecipe::from_yaml_file(&p).unwrap_err().to_string();
        assert!(msg.contains("line 2, key `lora_target`"), "{msg}");

        let p = write(&dir, "lf.yaml", "bf16: true\n");
        let msg = TrainRecipe::from_yaml_file(&p).unwrap_err().to_string();
        assert!(
            msg.contains("`bf16` is not a recipe key") && msg.contains("dtype: bf16"),
            "{msg}"
        );
    }

    #[test]
    fn overrides_accept_dashes_and_yaml_scalars() {
        let mut r = TrainRecipe::default();
        r.apply_override("--learning-rate", "1e-4").unwrap();
        r.apply_override("lr_scheduler_type", "cosine").unwrap();
        r.apply_override("freeze-vision-tower", "false").unwrap();
        r.apply_override("--lora-target", "q_proj,k_proj").unwrap();
        r.apply_override("max_steps", "100").unwrap();
        r.apply_override("save_total_limit", "3").unwrap();
        r.apply_override("lora_alpha", "32").unwrap();
        assert_eq!(r.learning_rate, 1e-4);
        assert_eq!(r.lr_scheduler_type, LrSchedulerType::Cosine);
        assert!(!r.freeze_vision_tower);
        assert_eq!(r.lora_target, vec!["q_proj", "k_proj"]);
        assert_eq!(r.max_steps, Some(100));
        assert_eq!(r.save_total_limit, Some(3));
        assert_eq!(r.lora_alpha, Some(32.0));
        r.apply_override("max_steps", "-1").unwrap();
        assert_eq!(r.max_steps, None);
        r.apply_override("save_total_limit", "null").unwrap();
        assert_eq!(r.save_total_limit, None);
    }

    #[test]
    fn override_errors_are_clear_and_leave_recipe_unchanged() {
        let mut r = TrainRecipe::default();
        let before = r.clone();
        let e = r.apply_override("--lr", "1e-4").unwrap_err();
        assert!(e.contains("learning_rate"), "{e}");
        let e = r.apply_override("--learning-rates", "1e-4").unwrap_err();
        assert!(e.contains("did you mean `learning_rate`"), "{e}");
        let e = r.apply_override("--learning-rate", "fast").unwrap_err();
        assert!(
            e.contains("learning_rate") && e.contains("invalid type"),
            "{e}"
        );
        let e = r
            .apply_override("--per-device-train-batch-size", "-2")
            .unwrap_err();
        assert!(e.contains("per_device_train_batch_size"), "{e}");
        let e = r.apply_override("--zzzzzzzz", "1").unwrap_err();
        assert!(e.contains("known keys"), "{e}");
        assert_eq!(r, before);
    }

    #[test]
    fn load_applies_overrides_then_validates() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(&dir, "r.yaml", "learning_rate: 1e-5\n");
        let r = TrainRecipe::load(Some(&p), &[("learning-rate".into(), "2e-5".into())]).unwrap();
        assert_eq!(r.learning_rate, 2e-5);
        let e = TrainRecipe::load(Some(&p), &[("warmup_ratio".into(), "2".into())]).unwrap_err();
        assert!(e.contains("warmup_ratio") && e.contains("r.yaml"), "{e}");
        let shards =
            |size: &str| TrainRecipe::load(None, &[("max_shard_size".into(), size.into())]);
        assert_eq!(shards("500MB").unwrap().max_shard_bytes(), 500_000_000);
        assert_eq!(shards("123456").unwrap().max_shard_bytes(), 123_456);
        assert_eq!(TrainRecipe::default().max_shard_bytes(), 5_000_000_000);
        for bad in ["5TB", "0"] {
            let e = shards(bad).unwrap_err();
            assert!(e.contains("max_shard_size"), "{bad}: {e}");
        }
        let p = write(&dir, "s.yaml", "max_shard_size: 2000000\n");
        let r = TrainRecipe::load(Some(&p), &[]).unwrap();
        assert_eq!(r.max_shard_bytes(), 2_000_000);
    }

    #[test]
    fn fingerprint_is_stable_and_ignores_cadence() {
        let a = TrainRecipe::default();
        let fp = a.fingerprint();
        assert_eq!(fp.len(), 64);
        assert_eq!(fp, TrainRecipe::default().fingerprint());
        let mut b = a.clone();
        b.logging_steps = 1;
        b.save_steps = 7;
        b.save_total_limit = Some(1);
        assert_eq!(b.fingerprint(), fp);
        b.learning_rate = 1e-3;
        assert_ne!(b.fingerprint(), fp);
        // Sorted keys, no whitespace.
        let c = a.canonical_json();
        assert!(c.starts_with("{\"adam_beta1\":0.9,"), "{c}");
        assert!(!c.contains(' '));
        // A round trip through YAML keeps the fingerprint.
        let yaml = serde_yaml_ng::to_string(&a).unwrap();
        assert_eq!(TrainRecipe::from_yaml_str(&yaml).unwrap().fingerprint(), fp);
    }

    #[test]
    fn val_count_fraction_or_count() {
        let mut r = TrainRecipe::default();
        assert_eq!(r.val_count(100), 0);
        r.val_size = 0.1;
        assert_eq!(r.val_count(105), 10);
        r.val_size = 20.0;
        assert_eq!(r.val_count(100), 20);
        assert_eq!(r.val_count(10), 9);
        r.val_size = 1.5;
        assert!(r.validate().is_err());
    }

    #[test]
    fn shipped_recipes_parse() {
        // `recipes/` sits at the workspace root, above the crate.
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .ancestors()
            .map(|a| a.join("recipes"))
            .find(|d| d.join("portable-lora.yaml").exists())
            .expect("recipes/ folder above the crate");
        let paper = TrainRecipe::from_yaml_file(&dir.join("paper-qwen2vl-2b.yaml")).unwrap();
        assert_eq!(paper.finetuning_type, FinetuningType::Full);
        assert_eq!(paper.learning_rate, 1e-5);
        assert_eq!(paper.lr_scheduler_type, LrSchedulerType::Cosine);
        assert_eq!(paper.warmup_ratio, 0.1);
        assert_eq!(paper.weight_decay, 0.1);
        assert_eq!(paper.effective_batch_size(), 128);
        assert_eq!(paper.num_train_epochs, 1.0);
        assert_eq!(paper.cutoff_len, 6144);
        assert_eq!(paper.vision_lr_multiplier, 0.1);
        let lora = TrainRecipe::from_yaml_file(&dir.join("portable-lora.yaml")).unwrap();
        assert_eq!(lora.finetuning_type, FinetuningType::Lora);
        assert_eq!((lora.lora_rank, lora.lora_alpha_value()), (16, 32.0));
        assert!(lora.freeze_vision_tower && lora.freeze_multi_modal_projector);
        assert_eq!(lora.learning_rate, 1e-4);
        assert_eq!(lora.warmup_ratio, 0.03);
    }
}
