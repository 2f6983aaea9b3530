//! The family layer: one [`Model`] type that every stage (generation, loss, training,
//! evaluation, synthesis, the judge, the demo, the page) uses, whatever architecture the
//! folder holds.
//!
//! A family supplies three things, each behind a seam:
//! - a loader ([`Family`]): recognises its `config.json` and builds the model from a folder;
//! - its network ([`FamilyNetwork`], one variant of [`super::Network`]): how images enter the
//!   embeddings, the rotary positions, the module groups (vision tower / projector / language
//!   model) and the Hugging Face names of its parameters;
//! - its prompt rules: a [`Processor`] (chat template, image token, image processor).
//!
//! Everything else — the decoder stack, the KV cache, masks, rotary tables, the chunked
//! cross-entropy, generation, training, export — is shared and lives here or beside it.

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::tensor::{DType, Device, Int, Tensor, TensorData};

use super::batch::{ForwardError, ForwardOutput, TokenBatch};
use super::checkpoint::CheckpointReader;
use super::decoder::{AttentionInputs, KvCache, TextModel};
use super::files::ModelFiles;
use super::image::{ImageOptions, ImageProcessorError, ProcessedImage, load_and_process_with};
use super::layers::{Linear, WeightLoader, tensor_from_vec};
use super::prompt::{IGNORE_INDEX, Processor};
use super::qwen2_vl::config::GenerationConfig;
use super::rope::{RopePositions, RopeSpec, rope_tables, sequential_positions};
use crate::io::FileError;
use crate::precision::{
    DTypeChoice, DtypeSupport, UnsupportedDtype, checkpoint_dtype, resolve_dtype,
};
use crate::quantize::Quantization;

/// Additive mask value for disallowed attention (finite so fully masked rows stay finite).
const MASKED: f32 = -1.0e9;

/// The module groups a recipe can freeze, give their own learning rate, or adapt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The vision encoder (Qwen2-VL's patch embedding and blocks, CLIP, ...).
    VisionTower,
    /// What maps vision features into the language model (Qwen2-VL's merger, LLaVA's
    /// projector and `image_newline`).
    Projector,
    /// The language model (embeddings, decoder, head).
    LanguageModel,
}

/// How a parameter's values are rearranged between our layout and the checkpoint's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyLayout {
    /// Stored as is.
    Same,
    /// Our `[in, out]` linear weight is PyTorch's `[out, in]`.
    Transposed,
    /// Transposed, then viewed with this shape (a convolution kernel: `[out, C, (T,) P, P]`).
    TransposedAs(Vec<usize>),
}

/// What a family's network provides to the shared model code. Object-safe: [`super::Network`]
/// hands out `&dyn FamilyNetwork` for whichever family it holds.
pub trait FamilyNetwork {
    /// The language model.
    fn text(&self) -> &TextModel;
    /// The language model, mutably (freezing, LoRA).
    fn text_mut(&mut self) -> &mut TextModel;
    /// Whether the network has a vision encoder.
    fn has_vision(&self) -> bool;
    /// Puts the images of `batch` into its token embeddings `[batch, len, hidden]`.
    fn merge_images(
        &self,
        embeds: Tensor<3>,
        batch: &TokenBatch,
    ) -> Result<Tensor<3>, ForwardError>;
    /// The rotary positions of every row (1-D positions unless the family has its own rule).
    fn positions(&self, batch: &TokenBatch) -> Vec<RopePositions> {
        batch.mask.iter().map(|m| sequential_positions(m)).collect()
    }
    /// Calls `f` with the module path and layer of every linear layer, in a fixed order.
    fn for_each_linear(&mut self, f: &mut dyn FnMut(&str, &mut Linear));
    /// Stops gradients into `part`.
    fn freeze(&mut self, part: Part);
    /// The group the parameter (or module) at `path` belongs to.
    fn part_of(&self, path: &str) -> Part;
    /// Whether the parameter at `path` is exempt from weight decay: biases and `nn.LayerNorm`
    /// parameters, as transformers' `Trainer.get_decay_parameter_names` decides.
    fn no_decay(&self, path: &str) -> bool;
    /// The checkpoint key and layout of the parameter at `path` (with its dims), `None` for
    /// parameters outside the dense checkpoint (LoRA adapters).
    fn checkpoint_key(&self, path: &str, dims: &[usize]) -> Option<(String, KeyLayout)>;
    /// The `config.json` to write when exporting, if it differs from the folder's (a folder in
    /// another layout is exported in the Hugging Face one).
    fn export_config(&self) -> Option<serde_json::Value> {
        None
    }
}

/// The facts about a loaded model that every stage needs, whatever its family.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelSpec {
    /// The family's name (`qwen2_vl`, `llama`, `llava_next`).
    pub family: &'static str,
    /// `model_type` of `config.json`.
    pub model_type: String,
    /// Vocabulary rows of the embedding and head.
    pub vocab_size: usize,
    /// Width of the language model.
    pub hidden_size: usize,
    /// Longest sequence the model accepts.
    pub max_positions: usize,
    /// Rotary frequencies and axes of the language model.
    pub rope: RopeSpec,
    /// End-of-sequence ids of `config.json`.
    pub eos_token_ids: Vec<u32>,
}

/// How a folder is loaded.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadOptions {
    /// Float dtype of the weights and activations; `auto` is resolved against the checkpoint
    /// and the device by [`Model::load_files`] before a family sees it.
    pub dtype: DTypeChoice,
    /// A `--template` name overriding the family's default chat template.
    pub template: Option<String>,
    /// Weight-only quantization of the linear layers (`--quantize`); `None` keeps them dense.
    pub quantize: Option<Quantization>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            dtype: DTypeChoice::F32,
            template: None,
            quantize: None,
        }
    }
}

impl LoadOptions {
    /// Exactly `dtype`, with the default template.
    pub fn dtype(dtype: DType) -> Self {
        Self {
            dtype: DTypeChoice::of(dtype),
            ..Self::default()
        }
    }

    /// A loader reading `reader` onto `device` in these options' dtype and quantization.
    pub fn weight_loader<'a>(
        &self,
        reader: &'a CheckpointReader,
        device: &Device,
    ) -> WeightLoader<'a> {
        WeightLoader::new(reader, device, self.weight_dtype()).with_quantization(self.quantize)
    }

    /// The dtype a family loads weights in (f32 for an unresolved `auto`).
    pub fn weight_dtype(&self) -> DType {
        self.dtype.exact().unwrap_or(DType::F32)
    }
}

/// Errors of model loading.
#[derive(Debug, thiserror::Error)]
pub enum LoadModelError {
    /// A file of the model folder is missing or malformed.
    #[error(transparent)]
    File(#[from] FileError),
    /// The folder itself is missing.
    #[error("{0}: model folder not found")]
    MissingDir(PathBuf),
    /// A model id did not resolve in the Hugging Face cache.
    #[error(transparent)]
    Hub(#[from] super::hub::HubError),
    /// The dtype asked for cannot be computed on the device.
    #[error(transparent)]
    Dtype(#[from] UnsupportedDtype),
}

/// The quantization a folder loads with: a quantized folder's own (`--quantize` may repeat
/// it, not change it: its dense weights are gone), else what was asked for.
fn quantization_to_load(
    files: &ModelFiles,
    asked: Option<Quantization>,
) -> Result<Option<Quantization>, FileError> {
    let stored = super::quantized_store::stored_quantization(files)?;
    match (stored, asked) {
        (Some(stored), Some(asked)) if stored != asked => Err(FileError::key(
            &files.path("config.json"),
            "quantization_config.bits",
            format!(
                "the folder is stored in {stored}, and --quantize {asked} cannot re-quantize it; \
                 drop --quantize, or quantize the unquantized checkpoint"
            ),
        )),
        (Some(stored), _) => Ok(Some(stored)),
        (None, asked) => Ok(asked),
    }
}

/// A family's loader and built-in shapes.
pub trait Family: Sync {
    /// The family's name (`qwen2_vl`).
    fn name(&self) -> &'static str;
    /// A line for listings (`Qwen2-VL (Qwen2VLForConditionalGeneration), Qwen2 text`).
    fn describe(&self) -> &'static str;
    /// `model_type` values this family loads.
    fn model_types(&self) -> &'static [&'static str];
    /// `architectures` values this family loads.
    fn architectures(&self) -> &'static [&'static str];
    /// Loads a folder whose config this family handles.
    fn load(
        &self,
        files: &ModelFiles,
        device: &Device,
        options: &LoadOptions,
    ) -> Result<Model, LoadModelError>;
    /// The built-in shapes (`adamllm init --preset`), with a description each.
    fn presets(&self) -> &'static [(&'static str, &'static str)];
    /// Writes a random-weight folder of preset `name`; returns its parameter count.
    fn write_preset(&self, name: &str, out: &Path, seed: u64) -> Result<usize, FileError>;
}

/// A model folder loaded for use: network, prompt rules and generation defaults.
pub struct Model {
    /// The network (a Burn module).
    pub network: super::Network,
    /// Facts every stage needs.
    pub spec: ModelSpec,
    /// Tokenizer, chat template and image processor.
    pub processor: Processor,
    /// `generation_config.json` (defaults when absent).
    pub generation: GenerationConfig,
    /// Where it was loaded from.
    pub dir: PathBuf,
    /// Device the weights live on.
    pub device: Device,
    /// Float dtype of the weights and activations.
    pub dtype: DType,
    /// Why `dtype` differs from the checkpoint's, when `auto` had to convert.
    pub dtype_note: Option<String>,
    /// How the linear layers' weights are quantized (`None`: dense, in `dtype`).
    pub quantization: Option<Quantization>,
    /// Whether training recomputes each decoder layer's activations during the backward pass
    /// instead of keeping them (transformers' `gradient_checkpointing_enable()`; see
    /// [`crate::train::recompute`]). Off when loaded; the trainer sets it from the recipe.
    pub gradient_checkpointing: bool,
}

impl Model {
    /// Loads a model folder (family detected from `config.json`) or a cached model id onto
    /// `device`.
    pub fn load(dir: &Path, device: &Device, dtype: DType) -> Result<Self, LoadModelError> {
        Self::load_with(dir, device, &LoadOptions::dtype(dtype))
    }

    /// [`Self::load`] with a chosen template. `dir` may be a model id (`org/name[@revision]`)
    /// cached by the Hugging Face tools (see [`super::hub`]).
    pub fn load_with(
        dir: &Path,
        device: &Device,
        options: &LoadOptions,
    ) -> Result<Self, LoadModelError> {
        let dir = super::hub::resolve_model_path(dir)?;
        Self::load_files(&ModelFiles::Dir(dir), device, options)
    }

    /// Loads a model folder held on disk or in memory (the browser page).
    pub fn load_files(
        files: &ModelFiles,
        device: &Device,
        options: &LoadOptions,
    ) -> Result<Self, LoadModelError> {
        if !files.is_present() {
            return Err(LoadModelError::MissingDir(files.root()));
        }
        let family = super::registry::family_of(files)?;
        let resolved = resolve_dtype(
            options.dtype,
            checkpoint_dtype(files),
            DtypeSupport::of(device),
            &format!("{device:?}"),
        )?;
        let options = LoadOptions {
            dtype: DTypeChoice::of(resolved.dtype),
            quantize: quantization_to_load(files, options.quantize)?,
            ..options.clone()
        };
        let mut model = family.load(files, device, &options)?;
        model.dtype_note = resolved.note;
        Ok(model)
    }

    /// A loaded model from its parts; reads `generation_config.json` (defaults when absent).
    pub fn assemble(
        network: super::Network,
        spec: ModelSpec,
        processor: Processor,
        files: &ModelFiles,
        device: &Device,
        options: &LoadOptions,
    ) -> Result<Self, LoadModelError> {
        Ok(Self {
            network,
            spec,
            processor,
            generation: GenerationConfig::from_model_files(files)?,
            dir: files.root(),
            device: device.clone(),
            dtype: options.weight_dtype(),
            dtype_note: None,
            quantization: options.quantize,
            gradient_checkpointing: false,
        })
    }

    /// The family network as the shared code sees it.
    pub fn net(&self) -> &dyn FamilyNetwork {
        self.network.family()
    }

    /// The language model.
    pub fn text(&self) -> &TextModel {
        self.network.family().text()
    }

    /// The same model with another network (its autodiff-free copy, a trained one, ...).
    pub fn with_network(&self, network: super::Network, device: Device) -> Self {
        Self {
            network,
            spec: self.spec.clone(),
            processor: self.processor.clone(),
            generation: self.generation.clone(),
            dir: self.dir.clone(),
            device,
            dtype: self.dtype,
            dtype_note: self.dtype_note.clone(),
            quantization: self.quantization,
            gradient_checkpointing: self.gradient_checkpointing,
        }
    }

    /// The same model without autodiff (for validation and export during training).
    pub fn valid(&self) -> Self {
        let device = self.text().embed_tokens.val().inner().device();
        self.with_network(self.network.valid(), device)
    }

    /// The model folder as recorded in run and result files (absolute when it resolves).
    pub fn dir_record(&self) -> String {
        std::fs::canonicalize(&self.dir)
            .unwrap_or_else(|_| self.dir.clone())
            .display()
            .to_string()
    }

    /// `record` (a run's identity in its output folder) with `"quantize": "q8"` added when the
    /// weights are quantized, so a run resumes or merges only rows of the same weights.
    pub fn with_quantization_record(&self, mut record: serde_json::Value) -> serde_json::Value {
        if let (Some(q), Some(fields)) = (self.quantization, record.as_object_mut()) {
            fields.insert("quantize".into(), q.to_string().into());
        }
        record
    }

    /// Ids that end generation: the config's eos ids, generation_config's, and the turn end.
    pub fn stop_token_ids(&self) -> Vec<u32> {
        let mut ids = self.spec.eos_token_ids.clone();
        if let Some(g) = &self.generation.eos_token_id {
            ids.extend(g.to_vec());
        }
        ids.extend(self.processor.turn_end_id);
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// Decodes and preprocesses an image file for this model (errors name the file).
    pub fn load_image(
        &self,
        path: &Path,
        options: &ImageOptions,
    ) -> Result<ProcessedImage, ImageProcessorError> {
        load_and_process_with(path, self.processor.image_processor()?, options)
    }

    /// Preprocesses a decoded image for this model.
    pub fn process_image(
        &self,
        image: &image::DynamicImage,
        options: &ImageOptions,
    ) -> Result<ProcessedImage, ImageProcessorError> {
        self.processor.image_processor()?.process(image, options)
    }

    /// Embeds a batch: token embeddings with image tokens replaced by the vision features.
    pub fn embed(&self, batch: &TokenBatch) -> Result<Tensor<3>, ForwardError> {
        let images = batch.all_images().len();
        let net = self.net();
        if images > 0 && !net.has_vision() {
            return Err(ForwardError::NoVisionTower {
                model_type: self.spec.model_type.clone(),
                images,
            });
        }
        let vocab = self.spec.vocab_size;
        if let Some(&id) = batch.ids.iter().flatten().find(|&&id| id as usize >= vocab) {
            // A tokenizer (or pad id) that disagrees with config.json: Burn's lookup would
            // read out of bounds.
            return Err(ForwardError::TokenOutOfVocabulary { id, vocab });
        }
        let embeds = net.text().embed(batch.id_tensor(&self.device), self.dtype);
        net.merge_images(embeds, batch)
    }

    /// Rotary tables and a causal + padding mask for `len` new positions after `cached` ones.
    pub fn attention_inputs(
        &self,
        positions: &[[Vec<i64>; 3]],
        key_mask: &[Vec<bool>],
        cached: usize,
    ) -> AttentionInputs {
        let b = positions.len();
        let len = positions.first().map_or(0, |p| p[0].len());
        let total = cached + len;
        let rope = &self.spec.rope;
        let (cos, sin) = rope_tables(
            positions,
            &rope.inv_freq,
            &rope.axes,
            &self.device,
            self.dtype,
        );
        let mut mask = Vec::with_capacity(b * len * total);
        for keys in key_mask {
            for q in 0..len {
                let qpos = cached + q;
                for (k, &real) in keys.iter().enumerate().take(total) {
                    // Padded query rows may see themselves so that softmax stays finite.
                    let allowed = k <= qpos && (real || k == qpos);
                    mask.push(if allowed { 0.0 } else { MASKED });
                }
            }
        }
        let mask = tensor_from_vec(mask, [b, 1, len, total], &self.device, self.dtype);
        AttentionInputs { cos, sin, mask }
    }

    /// What the decoder stack reads for a batch: the input embeddings (images merged in), the
    /// rotary tables and mask, and each row's rotary positions.
    pub fn decoder_inputs(
        &self,
        batch: &TokenBatch,
    ) -> Result<(Tensor<3>, AttentionInputs, Vec<RopePositions>), ForwardError> {
        let (_, l) = batch.dims();
        if l > self.spec.max_positions {
            return Err(ForwardError::TooLong {
                len: l,
                max: self.spec.max_positions,
            });
        }
        let embeds = self.embed(batch)?;
        let positions = self.net().positions(batch);
        let axes: Vec<[Vec<i64>; 3]> = positions.iter().map(|p| p.axes.clone()).collect();
        let inputs = self.attention_inputs(&axes, &batch.mask, 0);
        Ok((embeds, inputs, positions))
    }

    /// Full forward pass over a batch (optionally filling a KV cache for generation).
    pub fn forward(
        &self,
        batch: &TokenBatch,
        cache: Option<&mut KvCache>,
    ) -> Result<ForwardOutput, ForwardError> {
        let (embeds, inputs, positions) = self.decoder_inputs(batch)?;
        let hidden = self.text().decode(embeds, &inputs, cache);
        Ok(ForwardOutput { hidden, positions })
    }

    /// Vocabulary logits `[batch, len, vocab]` of a batch.
    pub fn logits(&self, batch: &TokenBatch) -> Result<Tensor<3>, ForwardError> {
        let out = self.forward(batch, None)?;
        Ok(self.text().logits(out.hidden))
    }

    /// Summed cross-entropy over supervised tokens and their count, with transformers'
    /// shift (position t predicts label t+1). The LM head runs only on supervised positions,
    /// a chunk of them at a time ([`crate::kernels::linear_cross_entropy_sum`]), so neither the
    /// `[tokens × vocab]` logits of a whole batch nor those of all supervised tokens are built.
    pub fn loss_sum(
        &self,
        batch: &TokenBatch,
        labels: &[Vec<i64>],
    ) -> Result<(Tensor<1>, usize), ForwardError> {
        let out = self.forward(batch, None)?;
        Ok(self.loss_sum_of_hidden(out.hidden, labels))
    }

    /// [`Self::loss_sum`] from the final hidden states `[batch, len, hidden]` (after the
    /// final norm).
    pub fn loss_sum_of_hidden(&self, hidden: Tensor<3>, labels: &[Vec<i64>]) -> (Tensor<1>, usize) {
        let [b, l, _] = hidden.dims();
        let mut rows = Vec::new();
        let mut targets = Vec::new();
        for (r, row_labels) in labels.iter().enumerate() {
            for t in 0..l.saturating_sub(1) {
                let target = row_labels.get(t + 1).copied().unwrap_or(IGNORE_INDEX);
                if target != IGNORE_INDEX {
                    rows.push((r * l + t) as i64);
                    targets.push(target);
                }
            }
        }
        let n = rows.len();
        if n == 0 {
            return (Tensor::zeros([1], (&self.device, DType::F32)), 0);
        }
        let hidden = hidden.reshape([b * l, self.spec.hidden_size]);
        let rows = Tensor::<1, Int>::from_data(TensorData::new(rows, [n]), &self.device);
        let picked = hidden.select(0, rows);
        let text = self.text();
        let sum = match text.head_weight() {
            Some(weight) => crate::kernels::linear_cross_entropy_sum(picked, weight, &targets),
            None => crate::kernels::cross_entropy_sum(
                text.logits(picked),
                crate::kernels::target_column(&targets, &self.device),
            ),
        };
        (sum, n)
    }
}
