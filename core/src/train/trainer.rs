//! The training loop: single-stage (all files shuffled together) or consecutive stages, full
//! fine-tuning, layer freezing or LoRA, gradient accumulation normalized by the supervised
//! tokens of the whole optimizer step, global-norm clipping, AdamW, checkpoints and exact
//! resume, metrics, validation and the final Hugging Face / PEFT export.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use web_time::Instant;

use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::{DType, Device, Tensor};
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::data::{
    DataOptions, SkippedSample, TrainData, TrainSample, epoch_order, micro_batch,
    read_train_file_as,
};
use super::data_parallel::{Replicas, Schedule, apply_gradients, device_pass, parallel_step};
use super::lora::{LoraSettings, attach_lora, merge_lora, save_peft_adapter};
use super::metrics_log::{MetricRow, MetricsLog, read_metrics};
use super::optimizer::{
    AdamW, AdamWSettings, ParamGroup, leaf_like, trainable_numel, trainable_params,
};
use super::plot::plot_loss_curve;
use super::recipe::{FinetuningType, MaskMode, TrainRecipe, hex};
use super::run_dir::{DataPosition, LossRecord, RunDir, RunDirError, TrainerState};
use super::schedule::{LrSchedule, micro_batches_per_epoch, total_optimizer_steps};
use crate::data::dataset_info::DatasetLayout;
use crate::io::{FileError, write_jsonl_atomic};
use crate::models::checkpoint::{CheckpointReader, NamedTensor, StorageDtype, write_safetensors};
use crate::models::export::{parameters_where, save_model_dir};
use crate::models::image::ImageOptions;
use crate::models::layers::{tensor_from_vec, tensor_to_vec};
use crate::models::paths::ModulePath;
use crate::models::prompt::LabelMode;
use crate::models::{FamilyNetwork, LoadOptions, Model, Network, Part, TokenBatch};
use crate::precision::LossScaler;
use crate::quantize::Quantization;

/// Trainable parameters in a checkpoint folder, keyed by module path.
pub const TRAINABLE_FILE: &str = "trainable.safetensors";
/// Optimizer moments in a checkpoint folder.
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";

/// What to train.
#[derive(Debug, Clone)]
pub struct TrainRequest {
    /// Base model folder (Hugging Face layout).
    pub model_dir: PathBuf,
    /// Training files (ShareGPT or LLaVA, JSON or JSONL).
    pub data: Vec<PathBuf>,
    /// Files (of `data` or `val_data`) whose rows are read through a LLaMA-Factory
    /// `dataset_info.json` layout; the others are told apart by their keys.
    pub layouts: BTreeMap<PathBuf, DatasetLayout>,
    /// Run the files as consecutive stages instead of one shuffled mix.
    pub stages: bool,
    /// Validation file (instead of a `val_size` split).
    pub val_data: Option<PathBuf>,
    /// Folder image paths are relative to (default: each dataset's folder).
    pub images_dir: Option<PathBuf>,
    /// Run folder.
    pub out: PathBuf,
    /// Hyper-parameters.
    pub recipe: TrainRecipe,
    /// Device (plain; autodiff is added here).
    pub device: Device,
    /// More devices for data-parallel training (`--devices` after the first; plain). Empty
    /// for a one-device run. A step then takes `gradient_accumulation_steps` micro-batches
    /// per device (see [`super::data_parallel`]).
    pub replica_devices: Vec<Device>,
    /// Continue the run in `out`.
    pub resume: bool,
    /// Skip bad samples (recorded in `skipped.jsonl`) instead of failing.
    pub skip_bad: bool,
}

/// Errors of training.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A file (data, image, model, checkpoint) is missing or malformed.
    #[error(transparent)]
    File(#[from] FileError),
    /// The run folder refused (busy, not empty, another model/recipe/data, ...).
    #[error(transparent)]
    RunDir(#[from] RunDirError),
    /// The recipe is unusable.
    #[error("recipe: {0}")]
    Recipe(String),
    /// Loading the model failed.
    #[error(transparent)]
    Model(#[from] crate::models::LoadModelError),
    /// The forward pass failed.
    #[error(transparent)]
    Forward(#[from] crate::models::ForwardError),
    /// No usable training sample.
    #[error("{0}")]
    EmptyDataset(String),
}

/// The training state reported after every optimizer step.
#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    /// Optimizer steps done.
    pub step: usize,
    /// Optimizer steps of the run.
    pub total_steps: usize,
    /// This step's loss (mean over its supervised tokens).
    pub loss: f64,
    /// Its learning rate.
    pub lr: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Input tokens per second of this step.
    pub tokens_per_s: f64,
}

/// What the loop tells its caller (the CLI draws a progress bar from it).
pub trait TrainObserver {
    /// Data read and the run set up.
    fn started(&mut self, _summary: &TrainPlan) {}
    /// One optimizer step done.
    fn step(&mut self, _report: &StepReport) {}
    /// A line worth showing (checkpoint saved, validation loss, export).
    fn message(&mut self, _text: &str) {}
}

/// Ignores everything.
pub struct Quiet;
impl TrainObserver for Quiet {}

/// The run as planned.
#[derive(Debug, Clone, Serialize)]
pub struct TrainPlan {
    /// Samples per stage.
    pub stage_samples: Vec<usize>,
    /// Optimizer steps per stage.
    pub stage_steps: Vec<usize>,
    /// Optimizer steps of the whole run.
    pub total_steps: usize,
    /// Validation samples.
    pub val_samples: usize,
    /// Samples dropped because `cutoff_len` would cut inside image tokens.
    pub dropped_too_long: usize,
    /// Samples truncated at `cutoff_len`.
    pub truncated: usize,
    /// Samples skipped with `--skip-bad`.
    pub skipped: usize,
    /// Trainable parameters.
    pub trainable_params: usize,
    /// All parameters of the base model.
    pub total_params: usize,
    /// Step the run continues from (0 for a fresh run).
    pub resumed_from_step: usize,
}

/// The finished run.
#[derive(Debug, Clone, Serialize)]
pub struct TrainSummary {
    /// The plan it ran.
    pub plan: TrainPlan,
    /// Loss of every optimizer step.
    pub losses: Vec<LossRecord>,
    /// Final validation loss, when there is validation data.
    pub val_loss: Option<f64>,
    /// The exported model folder.
    pub model_dir: PathBuf,
    /// The exported PEFT adapter (LoRA runs).
    pub adapter_dir: Option<PathBuf>,
    /// Peak resident memory of the process, MiB.
    pub peak_memory_mib: Option<f64>,
    /// Wall time of this invocation, seconds.
    pub wall_s: f64,
}

/// A `/proc/self/status` memory field (`VmHWM`, `VmRSS`, given in kB) in MiB, where the OS
/// reports it.
fn proc_status_mib(field: &str) -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status
        .lines()
        .find(|l| l.strip_prefix(field).is_some_and(|r| r.starts_with(':')))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Peak resident set size of this process (`VmHWM`) in MiB, where the OS reports it.
pub fn peak_rss_mib() -> Option<f64> {
    proc_status_mib("VmHWM")
}

/// Current resident set size of this process (`VmRSS`) in MiB, where the OS reports it.
pub fn current_rss_mib() -> Option<f64> {
    proc_status_mib("VmRSS")
}

/// SHA-256 hex of some byte strings.
fn sha256_hex(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    hex(&h.finalize())
}

/// Identity of a model folder: SHA-256 over its `config.json` and the full contents of its
/// safetensors files (in name order), streamed. Two folders of one shape with different
/// weights differ.
pub fn model_fingerprint(dir: &Path) -> Result<String, FileError> {
    use std::io::Read;
    let config_path = dir.join("config.json");
    let config = std::fs::read(&config_path).map_err(|e| FileError::io(&config_path, e))?;
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| FileError::io(dir, e))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    names.sort();
    let mut h = Sha256::new();
    h.update(b"adamllm-model-v1\n");
    h.update((config.len() as u64).to_le_bytes());
    h.update(&config);
    let mut buffer = vec![0u8; 1 << 20];
    for path in names {
        h.update(
            path.file_name()
                .map(|n| n.as_encoded_bytes())
                .unwrap_or_default(),
        );
        let mut file = std::fs::File::open(&path).map_err(|e| FileError::io(&path, e))?;
        loop {
            let n = file
                .read(&mut buffer)
                .map_err(|e| FileError::io(&path, e))?;
            if n == 0 {
                break;
            }
            h.update(&buffer[..n]);
        }
    }
    Ok(hex(&h.finalize()))
}

/// Identity of the training data: every file's bytes, the stage layout and validation file.
fn data_fingerprint(request: &TrainRequest) -> Result<String, FileError> {
    let mut parts: Vec<Vec<u8>> = vec![format!("stages={}", request.stages).into_bytes()];
    for p in request.data.iter().chain(request.val_data.iter()) {
        parts.push(std::fs::read(p).map_err(|e| FileError::io(p, e))?);
        if let Some(layout) = request.layouts.get(p) {
            parts.push(serde_json::to_vec(layout).unwrap_or_default());
        }
    }
    let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
    Ok(sha256_hex(&refs))
}

/// The label mode a recipe asks for: `mask_mode: synthesizer` → everything after the first
/// round, `train_on_prompt` → every token, else the assistant turns.
pub fn label_mode(recipe: &TrainRecipe) -> LabelMode {
    match (recipe.mask_mode, recipe.train_on_prompt) {
        (MaskMode::Synthesizer, _) => LabelMode::AfterFirstRound,
        (MaskMode::Assistant, true) => LabelMode::AllTokens,
        (MaskMode::Assistant, false) => LabelMode::AssistantTurns,
    }
}

/// Learning-rate multiplier and weight decay of a parameter, by module path: the vision
/// tower (not the projector) gets `vision_lr_multiplier`; biases and `nn.LayerNorm`
/// parameters get no weight decay, as transformers' `Trainer.get_decay_parameter_names`
/// decides (RMSNorm weights do decay there).
pub fn param_group(net: &dyn FamilyNetwork, path: &str, recipe: &TrainRecipe) -> ParamGroup {
    ParamGroup {
        lr_multiplier: if net.part_of(path) == Part::VisionTower {
            recipe.vision_lr_multiplier
        } else {
            1.0
        },
        decay: !net.no_decay(path),
    }
}

/// Freezes what the recipe keeps fixed and attaches LoRA adapters (returned settings) for
/// `finetuning_type: lora`; over a half-precision base, what trains is then moved to f32
/// ([`trainable_in_f32`]). Also sets the recipe's `gradient_checkpointing` on the model.
pub fn prepare_trainable(model: &mut Model, recipe: &TrainRecipe) -> Option<LoraSettings> {
    let lora = freeze_and_attach(model, recipe);
    model.gradient_checkpointing = recipe.gradient_checkpointing;
    if model.dtype != DType::F32 {
        model.network = trainable_in_f32(model.network.clone());
    }
    lora
}

fn freeze_and_attach(model: &mut Model, recipe: &TrainRecipe) -> Option<LoraSettings> {
    let device = model.device.clone();
    let net = model.network.family_mut();
    match recipe.finetuning_type {
        FinetuningType::Lora => {
            for part in [Part::VisionTower, Part::Projector, Part::LanguageModel] {
                net.freeze(part);
            }
            let settings = LoraSettings {
                rank: recipe.lora_rank,
                alpha: recipe.lora_alpha_value(),
                dropout: recipe.lora_dropout,
                targets: recipe.lora_target_modules(),
                parts: lora_parts(recipe),
            };
            attach_lora(net, &settings, recipe.seed, &device);
            Some(settings)
        }
        FinetuningType::Full | FinetuningType::Freeze => {
            if recipe.freeze_vision_tower {
                net.freeze(Part::VisionTower);
            }
            if recipe.freeze_multi_modal_projector {
                net.freeze(Part::Projector);
            }
            if recipe.freeze_language_model {
                net.freeze(Part::LanguageModel);
            }
            if recipe.finetuning_type == FinetuningType::Freeze {
                freeze_all_but_last_layers(net.text_mut(), recipe.freeze_trainable_layers);
            }
            None
        }
    }
}

/// The trainable parameters of a half-precision model moved to f32 (master weights, as
/// LLaMA-Factory upcasts them): their gradients and AdamW state follow their dtype, and they
/// meet the half-precision activations through a cast (see `models::layers::in_dtype`).
pub fn trainable_in_f32(network: Network) -> Network {
    struct Upcast;
    impl ModuleMapper for Upcast {
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            if !param.is_require_grad() || param.val().dtype() == DType::F32 {
                return param;
            }
            let (id, tensor, mapper) = param.consume();
            // Cast without autodiff: a cast of a tracked tensor is no leaf and could not
            // require gradients.
            let upcast = leaf_like(tensor.clone().inner().cast(DType::F32), &tensor);
            Param::from_mapped_value(id, upcast, mapper)
        }
    }
    network.map(&mut Upcast)
}

/// `trainer_state.json`'s key holding the f16 loss scaler.
const LOSS_SCALER_KEY: &str = "loss_scaler";

/// The loss scaler a resumed f16 run continues with (a fresh one for a new run).
fn resumed_loss_scaler(state: &TrainerState) -> LossScaler {
    state
        .extra
        .get(LOSS_SCALER_KEY)
        .and_then(|v| serde_json::from_value(v.clone()).ok())
        .unwrap_or_default()
}

/// The parts LoRA adapters go in: the language model, and the vision tower or projector when
/// the recipe does not freeze them.
pub fn lora_parts(recipe: &TrainRecipe) -> Vec<Part> {
    let mut parts = vec![Part::LanguageModel];
    if !recipe.freeze_vision_tower {
        parts.push(Part::VisionTower);
    }
    if !recipe.freeze_multi_modal_projector {
        parts.push(Part::Projector);
    }
    parts
}

/// LLaMA-Factory `freeze`: only some decoder layers of the language model train (`k > 0`: the
/// last k, `k < 0`: the first -k).
fn freeze_all_but_last_layers(text: &mut crate::models::decoder::TextModel, k: i64) {
    let n = text.layers.len() as i64;
    let trainable = |i: i64| if k >= 0 { i >= n - k } else { i < -k };
    text.embed_tokens = text.embed_tokens.clone().set_require_grad(false);
    text.norm = text.norm.clone().no_grad();
    text.lm_head = text.lm_head.clone().map(|h| h.no_grad());
    text.layers = std::mem::take(&mut text.layers)
        .into_iter()
        .enumerate()
        .map(|(i, l)| if trainable(i as i64) { l } else { l.no_grad() })
        .collect();
}

/// The optimizer group of every parameter, looked up by path while the optimizer consumes the
/// network (so the family cannot be asked then).
pub struct ParamGroups(std::collections::HashMap<String, ParamGroup>);

impl ParamGroups {
    /// The groups of every parameter of `model` under `recipe`.
    pub fn of(model: &Model, recipe: &TrainRecipe) -> Self {
        let net = model.net();
        Self(
            all_param_paths(&model.network)
                .into_iter()
                .map(|p| {
                    let g = param_group(net, &p, recipe);
                    (p, g)
                })
                .collect(),
        )
    }

    /// The group of `path` (full learning rate with decay for an unknown path).
    pub fn of_path(&self, path: &str) -> ParamGroup {
        self.0.get(path).copied().unwrap_or(ParamGroup {
            lr_multiplier: 1.0,
            decay: true,
        })
    }
}

/// Every float parameter's module path.
fn all_param_paths(module: &Network) -> Vec<String> {
    struct Paths(ModulePath, Vec<String>);
    impl burn::module::ModuleVisitor for Paths {
        fn enter_module(&mut self, name: &str, container_type: &str) {
            self.0.enter(name, container_type);
        }
        fn exit_module(&mut self, _name: &str, _container_type: &str) {
            self.0.exit();
        }
        fn visit_float<const D: usize>(&mut self, _param: &Param<Tensor<D>>) {
            self.1.push(self.0.joined());
        }
    }
    let mut v = Paths(ModulePath::new(), Vec::new());
    module.visit(&mut v);
    v.1
}

/// What building a micro-batch needs of a model, cheap to hold while the model trains.
pub struct Batcher {
    pad_id: u32,
    images: Option<std::sync::Arc<dyn crate::models::image::ImagePreprocessor>>,
}

impl Batcher {
    /// The batcher of `model`.
    pub fn of(model: &Model) -> Self {
        Self {
            pad_id: model.processor.pad_id,
            images: model.processor.images.clone(),
        }
    }

    /// The inputs and labels of a micro-batch (pixels decoded now).
    pub fn batch(
        &self,
        samples: &[&TrainSample],
        options: &ImageOptions,
    ) -> Result<(TokenBatch, Vec<Vec<i64>>), FileError> {
        micro_batch(self.pad_id, self.images.as_deref(), samples, options)
    }
}

/// Writes the trainable parameters (module paths as keys).
fn save_trainable(model: &Network, file: &Path) -> Result<(), FileError> {
    let trainable: std::collections::HashSet<String> = trainable_params(model)
        .into_iter()
        .map(|(p, _)| p)
        .collect();
    let tensors: Vec<NamedTensor> = parameters_where(model, |path| trainable.contains(path))
        .into_iter()
        .map(|(name, shape, values)| NamedTensor {
            name,
            shape,
            values,
        })
        .collect();
    write_safetensors(file, &tensors, StorageDtype::F32)
}

/// Replaces parameters by the values stored under their module path.
struct LoadByPath<'a> {
    reader: &'a CheckpointReader,
    path: ModulePath,
    loaded: usize,
    error: Option<FileError>,
}

impl ModuleMapper for LoadByPath<'_> {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.path.enter(name, container_type);
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.exit();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let path = self.path.joined();
        if !self.reader.contains(&path) || self.error.is_some() {
            return param;
        }
        let (id, tensor, mapper) = param.consume();
        let dims = tensor.dims();
        match self.reader.read_f32(&path, &dims) {
            Ok(values) => {
                let require_grad = tensor.is_require_grad();
                let mut t = tensor_from_vec(values, dims, &tensor.device(), tensor.dtype());
                if require_grad {
                    t = t.require_grad();
                }
                self.loaded += 1;
                Param::from_mapped_value(id, t, mapper)
            }
            Err(e) => {
                self.error = Some(e);
                Param::from_mapped_value(id, tensor, mapper)
            }
        }
    }
}

fn load_trainable(model: Network, file: &Path) -> Result<Network, FileError> {
    let reader = CheckpointReader::open_files(&[file.to_path_buf()])?;
    let expected = reader.names().len();
    let mut mapper = LoadByPath {
        reader: &reader,
        path: ModulePath::new(),
        loaded: 0,
        error: None,
    };
    let model = model.map(&mut mapper);
    if let Some(e) = mapper.error {
        return Err(e);
    }
    if mapper.loaded != expected {
        return Err(FileError::new(
            file,
            format!(
                "holds {expected} parameters but {} match this model",
                mapper.loaded
            ),
        ));
    }
    Ok(model)
}

/// Mean loss over samples, no gradients (validation).
fn evaluate(
    model: &Model,
    samples: &[TrainSample],
    batch_size: usize,
    images: &ImageOptions,
) -> Result<f64, TrainError> {
    let valid = model.valid();
    let mut sum = 0.0;
    let mut tokens = 0usize;
    let refs: Vec<&TrainSample> = samples.iter().collect();
    for chunk in refs.chunks(batch_size.max(1)) {
        let (batch, labels) = Batcher::of(&valid).batch(chunk, images)?;
        let (loss_sum, n) = valid.loss_sum(&batch, &labels)?;
        sum += tensor_to_vec(loss_sum)[0] as f64;
        tokens += n;
    }
    Ok(if tokens > 0 {
        sum / tokens as f64
    } else {
        f64::NAN
    })
}

/// Seed of the dropout masks of one micro-batch.
fn micro_batch_seed(seed: u64, step: usize, micro: usize) -> u64 {
    seed.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ (step as u64).wrapping_mul(0xD6E8_FEB8_6659_FD93)
        ^ (micro as u64).wrapping_add(0x2545_F491_4F6C_DD1D)
}

/// Loss and gradient norm of one optimizer step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepOutcome {
    /// Mean loss over the step's supervised tokens.
    pub loss: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
}

/// One optimizer step over `micro_batches` micro-batches built on demand by `micro_batch_at`:
/// each micro-batch's summed loss is divided by `step_tokens` (the supervised tokens of the
/// whole step) before its backward pass, gradients are summed, clipped by global norm and
/// applied with AdamW. `seed_of(k)` seeds the device RNG (dropout) before micro-batch `k`.
/// (The one-device case of [`super::data_parallel`], with the same pass and update.)
#[allow(clippy::too_many_arguments)]
pub fn accumulate_and_step(
    model: Model,
    optimizer: &mut AdamW,
    micro_batches: usize,
    step_tokens: usize,
    micro_batch_at: impl Fn(usize) -> Result<(TokenBatch, Vec<Vec<i64>>), TrainError> + Sync,
    lr: f64,
    max_grad_norm: f64,
    seed_of: impl Fn(usize) -> u64 + Sync,
    group_of: impl Fn(&str) -> ParamGroup,
) -> Result<(Model, StepOutcome), TrainError> {
    let (grads, losses) = device_pass(
        &model,
        0,
        1,
        micro_batches,
        step_tokens,
        &micro_batch_at,
        Some(&seed_of),
        optimizer.loss_scale(),
    )?;
    let loss = losses.iter().map(|(_, l)| l).sum();
    let (model, grad_norm) = apply_gradients(model, grads, optimizer, lr, max_grad_norm, group_of);
    Ok((model, StepOutcome { loss, grad_norm }))
}

/// Refuses what cannot train over a base quantized as `quantization` (the recipe's
/// `quantize`, or the model folder's own): fine-tuning other than LoRA (its weights would have
/// to change), and replicas (copies of the loaded network; a quantized tensor's storage is the
/// backend's own: flex keeps one byte a value, cubecl packs words).
fn check_quantized_base(
    quantization: Option<Quantization>,
    recipe: &TrainRecipe,
    request: &TrainRequest,
) -> Result<(), TrainError> {
    let Some(q) = quantization else {
        return Ok(());
    };
    let source = if recipe.quantize.is_some() {
        format!("quantize: {q}")
    } else {
        format!(
            "{}: the folder is stored in {q} (quantization_config in its config.json)",
            request.model_dir.display()
        )
    };
    if recipe.finetuning_type != FinetuningType::Lora {
        return Err(TrainError::Recipe(format!(
            "{source}: a quantized base trains only with finetuning_type: lora (QLoRA); \
             full and freeze fine-tuning need the unquantized checkpoint"
        )));
    }
    if !request.replica_devices.is_empty() {
        return Err(TrainError::Recipe(format!(
            "{source}: a quantized base trains on one device; drop --devices"
        )));
    }
    Ok(())
}

/// Trains as `request` says; see the module documentation.
pub fn train(
    request: &TrainRequest,
    observer: &mut dyn TrainObserver,
) -> Result<TrainSummary, TrainError> {
    let started = Instant::now();
    let recipe = &request.recipe;
    recipe
        .validate()
        .map_err(|e| TrainError::Recipe(e.to_string()))?;
    if request.data.is_empty() {
        return Err(TrainError::EmptyDataset("no --data file given".into()));
    }
    check_quantized_base(recipe.quantize, recipe, request)?;
    let train_device = request.device.clone().autodiff();
    let load = LoadOptions {
        dtype: recipe.dtype,
        template: recipe.template.clone(),
        quantize: recipe.quantize,
    };
    let mut model = Model::load_with(&request.model_dir, &train_device, &load)?;
    if recipe.quantize.is_none() {
        // A quantized folder (`adamllm quantize`) loads quantized whatever the recipe says.
        check_quantized_base(model.quantization, recipe, request)?;
    }

    // Data.
    let image_options = ImageOptions::bounds(
        recipe.image_min_pixels as usize,
        recipe.image_max_pixels as usize,
    );
    let options = DataOptions {
        mode: label_mode(recipe),
        cutoff_len: recipe.cutoff_len,
        images: image_options,
        images_dir: request.images_dir.clone(),
        skip_bad: request.skip_bad,
    };
    let mut files: Vec<TrainData> = Vec::new();
    for path in &request.data {
        let layout = request.layouts.get(path);
        files.push(read_train_file_as(
            &model.processor,
            path,
            layout,
            &options,
        )?);
    }
    let skipped: Vec<SkippedSample> = files.iter().flat_map(|f| f.skipped.clone()).collect();
    let dropped_too_long = files.iter().map(|f| f.dropped_too_long).sum();
    let truncated = files.iter().map(|f| f.truncated).sum();
    let mut stages: Vec<Vec<TrainSample>> = if request.stages {
        files.into_iter().map(|f| f.samples).collect()
    } else {
        vec![files.into_iter().flat_map(|f| f.samples).collect()]
    };
    for (i, s) in stages.iter().enumerate() {
        if s.is_empty() {
            let which = if request.stages {
                request.data[i].display().to_string()
            } else {
                request
                    .data
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            return Err(TrainError::EmptyDataset(format!(
                "{which}: no usable training sample ({} skipped, {dropped_too_long} longer than cutoff_len)",
                skipped.len()
            )));
        }
    }
    let val_samples: Vec<TrainSample> = if let Some(val) = &request.val_data {
        let mut val_options = options.clone();
        val_options.skip_bad = false;
        read_train_file_as(
            &model.processor,
            val,
            request.layouts.get(val),
            &val_options,
        )?
        .samples
    } else {
        // `val_size` held out of the (last) stage's samples, picked by a seeded shuffle.
        let last = stages.last_mut().expect("at least one stage");
        let k = recipe.val_count(last.len());
        if k > 0 {
            let order = epoch_order(last.len(), recipe.seed, usize::MAX, 0);
            let held: std::collections::HashSet<usize> = order[..k].iter().copied().collect();
            let mut keep = Vec::new();
            let mut val = Vec::new();
            for (i, s) in std::mem::take(last).into_iter().enumerate() {
                if held.contains(&i) {
                    val.push(s);
                } else {
                    keep.push(s);
                }
            }
            *last = keep;
            val
        } else {
            Vec::new()
        }
    };

    let batch_size = recipe.per_device_train_batch_size;
    let devices = 1 + request.replica_devices.len();
    // Micro-batches per optimizer step over all devices: the global batch.
    let accumulation = recipe.gradient_accumulation_steps * devices;
    let stage_micro: Vec<usize> = stages
        .iter()
        .map(|s| micro_batches_per_epoch(s.len(), batch_size))
        .collect();
    let stage_steps: Vec<usize> = stage_micro
        .iter()
        .map(|&mb| {
            total_optimizer_steps(mb, accumulation, recipe.num_train_epochs, recipe.max_steps)
        })
        .collect();
    let total_steps: usize = stage_steps.iter().sum();

    // Run folder.
    let mut state = RunDir::create_or_resume(
        &request.out,
        request.resume,
        &model_fingerprint(&model.dir)?,
        &recipe.fingerprint(),
        &data_fingerprint(request)?,
    )?;
    state.dir.set_save_total_limit(recipe.save_total_limit);
    let run = state.dir;
    if !skipped.is_empty() {
        write_jsonl_atomic(&run.skipped_path(), &skipped)?;
    }

    // Model: frozen parts, adapters, then (on resume) the checkpoint's weights.
    let total_params = model.network.num_params();
    let lora = prepare_trainable(&mut model, recipe);
    if let Some(note) = &model.dtype_note {
        observer.message(note);
    }
    let adam = AdamWSettings {
        beta1: recipe.adam_beta1,
        beta2: recipe.adam_beta2,
        eps: recipe.adam_epsilon,
        weight_decay: recipe.weight_decay,
    };
    let mut trainer_state = TrainerState {
        total_steps,
        ..TrainerState::default()
    };
    let mut optimizer = AdamW::new(adam);
    let groups = ParamGroups::of(&model, recipe);
    if let Some(ckpt) = &state.checkpoint {
        let state_error = |m| {
            FileError::new(
                &ckpt.path.join(crate::train::run_dir::TRAINER_STATE_JSON),
                m,
            )
        };
        trainer_state = ckpt.state.clone();
        trainer_state.total_steps = total_steps;
        check_resume_position(&trainer_state, &stage_steps, &stage_micro).map_err(state_error)?;
        check_resume_devices(&trainer_state, devices).map_err(state_error)?;
        let optimizer_step = resumed_optimizer_step(&trainer_state).map_err(state_error)?;
        model.network = load_trainable(model.network, &ckpt.path.join(TRAINABLE_FILE))?;
        let opt_file = ckpt.path.join(OPTIMIZER_FILE);
        if opt_file.is_file() {
            optimizer = AdamW::load(adam, optimizer_step, &opt_file, &request.device)?;
        }
    }
    if model.dtype == DType::F16 {
        optimizer.loss_scaler = Some(resumed_loss_scaler(&trainer_state));
    }
    let replica_devices: Vec<Device> = request
        .replica_devices
        .iter()
        .map(|d| d.clone().autodiff())
        .collect();
    let mut replicas = Replicas::new(&model, &replica_devices);
    let device_schedule = if recipe.lora_dropout > 0.0 {
        Schedule::Sequential
    } else {
        Schedule::Concurrent
    };
    let trainable_count = trainable_numel(&model.network);
    let plan = TrainPlan {
        stage_samples: stages.iter().map(Vec::len).collect(),
        stage_steps: stage_steps.clone(),
        total_steps,
        val_samples: val_samples.len(),
        dropped_too_long,
        truncated,
        skipped: skipped.len(),
        trainable_params: trainable_count,
        total_params,
        resumed_from_step: trainer_state.step,
    };
    observer.started(&plan);
    let mut metrics = if trainer_state.step > 0 {
        MetricsLog::resume(&run.metrics_path(), trainer_state.step)?
    } else {
        MetricsLog::create(&run.metrics_path())?
    };

    // The loop.
    // The sample order of the current (stage, epoch), shuffled once per epoch.
    let mut order_of: Option<((usize, usize), Vec<usize>)> = None;
    let mut window_loss = 0.0;
    let mut window_steps = 0usize;
    let mut window_tokens = 0usize;
    let mut window_start = Instant::now();
    while trainer_state.step < total_steps {
        let pos = trainer_state.data.clone();
        let stage = pos.stage;
        let samples = &stages[stage];
        let mb_per_epoch = stage_micro[stage];
        let steps_before: usize = stage_steps[..stage].iter().sum();
        let step_in_stage = trainer_state.step - steps_before;
        if step_in_stage >= stage_steps[stage] {
            // Next stage: fresh optimizer and schedule.
            trainer_state.data = DataPosition {
                stage: stage + 1,
                epoch: 0,
                next_micro_batch: 0,
            };
            let scaler = optimizer.loss_scaler.take();
            optimizer = AdamW::new(adam);
            optimizer.loss_scaler = scaler;
            continue;
        }
        if pos.next_micro_batch >= mb_per_epoch {
            trainer_state.data.epoch += 1;
            trainer_state.data.next_micro_batch = 0;
            continue;
        }
        let schedule = LrSchedule::from_recipe(recipe, stage_steps[stage]);
        let lr = schedule.lr(step_in_stage);
        if order_of
            .as_ref()
            .is_none_or(|(key, _)| *key != (stage, pos.epoch))
        {
            let order = epoch_order(samples.len(), recipe.seed, stage, pos.epoch);
            order_of = Some(((stage, pos.epoch), order));
        }
        let order = &order_of.as_ref().expect("set just above").1;
        let first = pos.next_micro_batch;
        let last = (first + accumulation).min(mb_per_epoch);
        let micro: Vec<Vec<&TrainSample>> = (first..last)
            .map(|m| {
                order[m * batch_size..((m + 1) * batch_size).min(samples.len())]
                    .iter()
                    .map(|&i| &samples[i])
                    .collect()
            })
            .collect();
        let step_tokens: usize = micro.iter().flatten().map(|s| s.supervised_tokens()).sum();
        let input_tokens: usize = micro.iter().flatten().map(|s| s.ids.len()).sum();
        let step_start = Instant::now();
        let seed = recipe.seed;
        let step_index = trainer_state.step;
        let batcher = Batcher::of(&model);
        let make_batch = |k: usize| {
            batcher
                .batch(&micro[k], &image_options)
                .map_err(TrainError::from)
        };
        let seed_of = |k: usize| micro_batch_seed(seed, step_index, k);
        let (updated, outcome) = if devices > 1 {
            parallel_step(
                model,
                &mut replicas,
                &mut optimizer,
                micro.len(),
                step_tokens,
                &make_batch,
                lr,
                recipe.max_grad_norm,
                &seed_of,
                device_schedule,
                |path| groups.of_path(path),
            )?
        } else {
            accumulate_and_step(
                model,
                &mut optimizer,
                micro.len(),
                step_tokens,
                make_batch,
                lr,
                recipe.max_grad_norm,
                seed_of,
                |path| groups.of_path(path),
            )?
        };
        model = updated;
        let (step_loss, grad_norm) = (outcome.loss, outcome.grad_norm);

        trainer_state.step += 1;
        trainer_state.data.next_micro_batch = last;
        // A count read back from a checkpoint: it saturates rather than overflows.
        trainer_state.tokens_seen = trainer_state.tokens_seen.saturating_add(step_tokens as u64);
        trainer_state.epoch = pos.epoch as f64 + last as f64 / mb_per_epoch as f64;
        trainer_state.loss_history.push(LossRecord {
            step: trainer_state.step,
            loss: step_loss,
        });
        trainer_state
            .extra
            .insert("optimizer_step".into(), optimizer.step.into());
        if devices > 1 {
            trainer_state.extra.insert("devices".into(), devices.into());
        }
        if let Some(scaler) = &optimizer.loss_scaler {
            trainer_state.extra.insert(
                LOSS_SCALER_KEY.into(),
                serde_json::to_value(scaler).expect("a loss scaler serializes"),
            );
        }
        let elapsed = step_start.elapsed().as_secs_f64();
        observer.step(&StepReport {
            step: trainer_state.step,
            total_steps,
            loss: step_loss,
            lr,
            grad_norm,
            tokens_per_s: input_tokens as f64 / elapsed.max(1e-9),
        });
        window_loss += step_loss;
        window_steps += 1;
        window_tokens += input_tokens;

        let finished = trainer_state.step == total_steps;
        let log_now = finished
            || (recipe.logging_steps > 0
                && trainer_state.step.is_multiple_of(recipe.logging_steps));
        let save_now = finished
            || (recipe.save_steps > 0 && trainer_state.step.is_multiple_of(recipe.save_steps));
        let val_loss = if save_now && !val_samples.is_empty() {
            let v = evaluate(&model, &val_samples, batch_size, &image_options)?;
            observer.message(&format!(
                "step {}: validation loss {v:.4}",
                trainer_state.step
            ));
            Some(v)
        } else {
            None
        };
        // A validation result always gets its row, even between logging steps.
        if log_now || val_loss.is_some() {
            metrics.append(&MetricRow {
                step: trainer_state.step,
                epoch: trainer_state.epoch,
                loss: window_loss / window_steps.max(1) as f64,
                lr,
                grad_norm,
                tokens_per_s: window_tokens as f64 / window_start.elapsed().as_secs_f64().max(1e-9),
                peak_memory_mib: peak_rss_mib(),
                val_loss,
                loss_scale: optimizer.loss_scaler.as_ref().map(|s| s.scale),
                skipped_steps: optimizer.loss_scaler.as_ref().map(|s| s.skipped_steps),
            })?;
            window_loss = 0.0;
            window_steps = 0;
            window_tokens = 0;
            window_start = Instant::now();
        }
        if save_now {
            let model_ref = &model.network;
            let optimizer_ref = &optimizer;
            let path = run.save_checkpoint(trainer_state.step, &trainer_state, |dir| {
                save_trainable(model_ref, &dir.join(TRAINABLE_FILE)).map_err(|e| e.to_string())?;
                optimizer_ref
                    .save(&dir.join(OPTIMIZER_FILE))
                    .map_err(|e| e.to_string())
            })?;
            observer.message(&format!("saved {}", path.display()));
        }
    }

    // Export.
    let val_loss = if val_samples.is_empty() {
        None
    } else {
        Some(evaluate(&model, &val_samples, batch_size, &image_options)?)
    };
    let adapter_dir = if let Some(settings) = &lora {
        let dir = run.adapter_dir();
        save_peft_adapter(
            model.network.family_mut(),
            settings,
            &request.model_dir,
            &dir,
        )?;
        if model.quantization.is_some() {
            model = dense_base_with_adapters(model, request, &load)?;
            if model.quantization.is_some() {
                observer.message(
                    "the base folder is stored quantized: the merged model writes the adapted \
                     layers dense (they are quantized again when it loads) and keeps the others \
                     as they are stored",
                );
            }
        }
        merge_lora(model.network.family_mut());
        Some(dir)
    } else {
        None
    };
    let model_dir = run.model_dir();
    save_model_dir(&model, &model_dir, recipe.max_shard_bytes())?;
    observer.message(&format!("model written to {}", model_dir.display()));
    let rows = read_metrics(&run.metrics_path())?;
    if let Err(e) = plot_loss_curve(&rows, &run.loss_plot_path()) {
        observer.message(&format!("loss plot not written: {e}"));
    }
    Ok(TrainSummary {
        plan,
        losses: trainer_state.loss_history,
        val_loss,
        model_dir,
        adapter_dir,
        peak_memory_mib: peak_rss_mib(),
        wall_s: started.elapsed().as_secs_f64(),
    })
}

/// The dense base of a QLoRA run, loaded on the host, with the trained adapters of `trained`
/// moved onto it: merging into the checkpoint's own values (not the quantized ones) gives the
/// model transformers would get from PEFT's merge over the unquantized base. The quantized
/// model is dropped first, so the host holds one base at a time.
fn dense_base_with_adapters(
    trained: Model,
    request: &TrainRequest,
    load: &LoadOptions,
) -> Result<Model, TrainError> {
    let host = Device::flex();
    let mut adapters = HashMap::new();
    let mut network = trained.network;
    network.family_mut().for_each_linear(&mut |path, linear| {
        if let Some(adapter) = linear.lora.take() {
            adapters.insert(path.to_string(), adapter.valid().to_device(&host));
        }
    });
    drop(network);
    let dense = LoadOptions {
        quantize: None,
        ..load.clone()
    };
    let mut model = Model::load_with(&request.model_dir, &host, &dense)?;
    model
        .network
        .family_mut()
        .for_each_linear(&mut |path, linear| {
            linear.lora = adapters.remove(path);
        });
    Ok(model)
}

/// Checks that a checkpoint's data position lies inside this run's plan (stage, steps taken,
/// micro-batch within the epoch) before the loop indexes with it.
fn check_resume_position(
    state: &crate::train::run_dir::TrainerState,
    stage_steps: &[usize],
    stage_micro: &[usize],
) -> Result<(), String> {
    let pos = &state.data;
    let Some(&micro) = stage_micro.get(pos.stage) else {
        return Err(format!(
            "data.stage {} is past the run's {} stage(s)",
            pos.stage,
            stage_micro.len()
        ));
    };
    let before: usize = stage_steps[..pos.stage].iter().sum();
    let total: usize = stage_steps.iter().sum();
    if state.step < before || state.step > total {
        return Err(format!(
            "step {} does not fall in stage {} (steps {before}..={total})",
            state.step, pos.stage
        ));
    }
    if pos.next_micro_batch > micro {
        return Err(format!(
            "data.next_micro_batch {} is past the stage's {micro} micro-batches",
            pos.next_micro_batch
        ));
    }
    Ok(())
}

/// The optimizer's step count a checkpoint records (`extra.optimizer_step`, else the trainer's
/// step). Every trainer step is one optimizer step, so it cannot be past the trainer's.
/// A run resumes on as many devices as it was trained on: the device count sets the global
/// batch (micro-batches per step), so another count would change what a step means.
fn check_resume_devices(
    state: &crate::train::run_dir::TrainerState,
    devices: usize,
) -> Result<(), String> {
    let saved = match state.extra.get("devices") {
        None => 1,
        Some(value) => value
            .as_u64()
            .filter(|&n| (1..=1024).contains(&n))
            .ok_or_else(|| format!("extra.devices is {value}, not a device count"))?
            as usize,
    };
    if saved != devices {
        return Err(format!(
            "this run was trained on {saved} device(s) and resumes on {devices}: the global \
             batch would change; resume with {saved} device(s) in --devices"
        ));
    }
    Ok(())
}

fn resumed_optimizer_step(state: &crate::train::run_dir::TrainerState) -> Result<u64, String> {
    let trainer_step = state.step as u64;
    match state.extra.get("optimizer_step") {
        None => Ok(trainer_step),
        Some(value) => match value.as_u64() {
            Some(step) if step <= trainer_step => Ok(step),
            _ => Err(format!(
                "extra.optimizer_step {value} is not a step count of at most the checkpoint's \
                 step {trainer_step}"
            )),
        },
    }
}
