//! Qwen2-VL (transformers `Qwen2VLForConditionalGeneration`): one implementation for the
//! built-in tiny presets and for real checkpoints such as Qwen2-VL-2B-Instruct.
//!
//! - [`config`]: `config.json` / `generation_config.json`.
//! - [`image_processor`] + [`resample`]: `Qwen2VLImageProcessor` (PIL-exact bicubic resize).
//! - [`processor`]: ChatML rendering, tokenization, image-pad expansion and labels.
//! - [`vision`]: the vision tower; [`text`]: the language model; [`rope`]: M-RoPE positions.
//! - [`weights`]: the checkpoint key layout, random initialization and export.

pub mod config;
pub mod export;
pub mod image_processor;
pub mod presets;
pub mod processor;
pub mod resample;
pub mod rope;
pub mod text;
pub mod vision;
pub mod weights;

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::tensor::{DType, Device, Int, Tensor, TensorData};

use self::config::{GenerationConfig, Qwen2VlConfig};
use self::image_processor::ProcessedImage;
use self::processor::{IGNORE_INDEX, Qwen2VlProcessor};
use self::rope::{
    RopePositions, VisionTokenIds, inverse_frequencies, mrope_tables, rope_positions, section_axes,
};
use self::text::{AttentionInputs, KvCache, TextModel};
use self::vision::VisionTower;
use crate::io::FileError;
use crate::models::checkpoint::CheckpointReader;
use crate::models::files::ModelFiles;
use crate::models::layers::{WeightLoader, tensor_from_vec};

/// Additive mask value for disallowed attention (finite so fully masked rows stay finite).
const MASKED: f32 = -1.0e9;

/// The network: vision tower + language model.
#[derive(Module, Debug)]
pub struct Qwen2VlModel {
    /// `visual.*` (absent for a text-only Qwen2 model).
    pub vision: Option<VisionTower>,
    /// `model.*` + `lm_head`.
    pub text: TextModel,
}

/// A model folder loaded for use: network, config, processor and generation defaults.
pub struct Qwen2Vl {
    /// The network.
    pub model: Qwen2VlModel,
    /// `config.json`.
    pub config: Qwen2VlConfig,
    /// Tokenizer and prompt rules.
    pub processor: Qwen2VlProcessor,
    /// `generation_config.json` (defaults when absent).
    pub generation: GenerationConfig,
    /// Where it was loaded from.
    pub dir: PathBuf,
    /// Device the weights live on.
    pub device: Device,
    /// Float dtype of the weights and activations.
    pub dtype: DType,
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
}

impl Qwen2Vl {
    /// Loads a model folder in Hugging Face layout onto `device`, in f32 or f16.
    pub fn load(dir: &Path, device: &Device, dtype: DType) -> Result<Self, LoadModelError> {
        Self::load_files(&ModelFiles::Dir(dir.to_path_buf()), device, dtype)
    }

    /// Loads a model folder held on disk or in memory (the browser page) onto `device`.
    pub fn load_files(
        files: &ModelFiles,
        device: &Device,
        dtype: DType,
    ) -> Result<Self, LoadModelError> {
        if !files.is_present() {
            return Err(LoadModelError::MissingDir(files.root()));
        }
        let config = Qwen2VlConfig::from_model_files(files)?;
        let processor = Qwen2VlProcessor::from_model_files(files, &config)?;
        let generation = GenerationConfig::from_model_files(files)?;
        let reader = CheckpointReader::open(files)?;
        let mut loader = WeightLoader::new(&reader, device, dtype);
        let vision = if config.is_text_only() {
            None
        } else {
            Some(VisionTower::load(&config.vision_config, &mut loader)?)
        };
        let text = TextModel::load(&config, &mut loader)?;
        Ok(Self {
            model: Qwen2VlModel { vision, text },
            config,
            processor,
            generation,
            dir: files.root(),
            device: device.clone(),
            dtype,
        })
    }

    /// The model folder as recorded in run and result files (absolute when it resolves).
    pub fn dir_record(&self) -> String {
        std::fs::canonicalize(&self.dir)
            .unwrap_or_else(|_| self.dir.clone())
            .display()
            .to_string()
    }

    /// Ids that end generation: the config's eos ids, generation_config's, and `<|im_end|>`.
    pub fn stop_token_ids(&self) -> Vec<u32> {
        let mut ids = self.config.eos_token_ids();
        if let Some(g) = &self.generation.eos_token_id {
            ids.extend(g.to_vec());
        }
        ids.extend(self.processor.im_end_id);
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    fn vision_tokens(&self) -> VisionTokenIds {
        VisionTokenIds {
            vision_start: self.config.vision_start_token_id,
            image_pad: self.config.image_token_id,
        }
    }
}

/// A batch of token sequences (already padded to one length) with their images.
#[derive(Debug, Clone)]
pub struct TokenBatch {
    /// `[batch][len]` ids.
    pub ids: Vec<Vec<u32>>,
    /// `[batch][len]`: false on padding.
    pub mask: Vec<Vec<bool>>,
    /// Images of each row in order.
    pub images: Vec<Vec<ProcessedImage>>,
}

impl TokenBatch {
    /// Pads sequences on the left (generation) or right (training) with `pad_id`.
    pub fn from_sequences(
        sequences: Vec<(Vec<u32>, Vec<ProcessedImage>)>,
        pad_id: u32,
        left_pad: bool,
    ) -> Self {
        let len = sequences.iter().map(|(s, _)| s.len()).max().unwrap_or(0);
        let mut ids = Vec::with_capacity(sequences.len());
        let mut mask = Vec::with_capacity(sequences.len());
        let mut images = Vec::with_capacity(sequences.len());
        for (seq, imgs) in sequences {
            let pad = len - seq.len();
            let (mut row, mut m) = (Vec::with_capacity(len), Vec::with_capacity(len));
            if left_pad {
                row.extend(std::iter::repeat_n(pad_id, pad));
                m.extend(std::iter::repeat_n(false, pad));
            }
            m.extend(std::iter::repeat_n(true, seq.len()));
            row.extend(seq);
            if !left_pad {
                row.extend(std::iter::repeat_n(pad_id, pad));
                m.extend(std::iter::repeat_n(false, pad));
            }
            ids.push(row);
            mask.push(m);
            images.push(imgs);
        }
        Self { ids, mask, images }
    }

    /// Rows × length.
    pub fn dims(&self) -> (usize, usize) {
        (self.ids.len(), self.ids.first().map_or(0, Vec::len))
    }
}

/// Output of a full forward pass.
pub struct ForwardOutput {
    /// Final hidden states `[batch, len, hidden]` (after the last norm).
    pub hidden: Tensor<3>,
    /// Per-row M-RoPE positions used.
    pub positions: Vec<RopePositions>,
}

/// Errors of a forward pass that depend on the inputs.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// Images given to a text-only model.
    #[error("the model is text-only (model_type qwen2) but the input holds {images} image(s)")]
    NoVisionTower {
        /// Images in the input.
        images: usize,
    },
    /// Image pads and image tokens disagree.
    #[error("the prompt holds {pads} image-pad tokens but its images give {tokens} image tokens")]
    ImageTokenMismatch {
        /// `<|image_pad|>` tokens in the ids.
        pads: usize,
        /// Tokens produced by the vision tower.
        tokens: usize,
    },
    /// Longer than `max_position_embeddings`.
    #[error("the sequence has {len} tokens but the model accepts at most {max}")]
    TooLong {
        /// Sequence length.
        len: usize,
        /// Limit.
        max: usize,
    },
}

impl Qwen2Vl {
    /// Embeds a batch: token embeddings with image tokens replaced by the vision tower's output.
    pub fn embed(&self, batch: &TokenBatch) -> Result<Tensor<3>, ForwardError> {
        let image_count: usize = batch.images.iter().map(Vec::len).sum();
        if self.model.vision.is_none() && image_count > 0 {
            return Err(ForwardError::NoVisionTower {
                images: image_count,
            });
        }
        let (b, l) = batch.dims();
        let hidden = self.config.hidden_size;
        let flat_ids: Vec<i64> = batch.ids.iter().flatten().map(|&i| i as i64).collect();
        let ids = Tensor::<2, Int>::from_data(TensorData::new(flat_ids, [b, l]), &self.device);
        let embeds = self.model.text.embed(ids);
        let images: Vec<&ProcessedImage> = batch.images.iter().flatten().collect();
        let pads: usize = batch
            .ids
            .iter()
            .zip(&batch.mask)
            .map(|(r, m)| {
                r.iter()
                    .zip(m)
                    .filter(|(id, real)| **real && **id == self.config.image_token_id)
                    .count()
            })
            .sum();
        let merge = self.config.vision_config.spatial_merge_size;
        let tokens: usize = images.iter().map(|i| i.num_merged_tokens(merge)).sum();
        if pads != tokens {
            return Err(ForwardError::ImageTokenMismatch { pads, tokens });
        }
        if images.is_empty() {
            return Ok(embeds);
        }
        let patch_dim = self.config.vision_config.patch_dim();
        let rows: usize = images.iter().map(|i| i.num_patches).sum();
        let mut pixels = Vec::with_capacity(rows * patch_dim);
        for img in &images {
            pixels.extend_from_slice(&img.pixel_values);
        }
        let pixels = tensor_from_vec(pixels, [rows, patch_dim], &self.device, self.dtype);
        let grids: Vec<[usize; 3]> = images.iter().map(|i| i.grid_thw).collect();
        let vision = self
            .model
            .vision
            .as_ref()
            .ok_or(ForwardError::NoVisionTower {
                images: images.len(),
            })?;
        let image_embeds = vision.forward(pixels, &grids);
        // Row p of the result takes text row p, or image token k (stored after the b·l text rows).
        let mut index = Vec::with_capacity(b * l);
        let mut next_image_token = 0i64;
        for (r, row) in batch.ids.iter().enumerate() {
            for (t, id) in row.iter().enumerate() {
                if batch.mask[r][t] && *id == self.config.image_token_id {
                    index.push((b * l) as i64 + next_image_token);
                    next_image_token += 1;
                } else {
                    index.push((r * l + t) as i64);
                }
            }
        }
        let index = Tensor::<1, Int>::from_data(TensorData::new(index, [b * l]), &self.device);
        let combined = Tensor::cat(vec![embeds.reshape([b * l, hidden]), image_embeds], 0);
        Ok(combined.select(0, index).reshape([b, l, hidden]))
    }

    /// M-RoPE positions of every row of a batch.
    pub fn positions(&self, batch: &TokenBatch) -> Vec<RopePositions> {
        let merge = self.config.vision_config.spatial_merge_size;
        batch
            .ids
            .iter()
            .zip(&batch.mask)
            .zip(&batch.images)
            .map(|((ids, mask), imgs)| {
                let grids: Vec<[usize; 3]> = imgs.iter().map(|i| i.grid_thw).collect();
                rope_positions(ids, mask, &grids, merge, self.vision_tokens())
            })
            .collect()
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
        let head_dim = self.config.head_dim();
        let inv = inverse_frequencies(head_dim, self.config.rope_theta);
        let axes = section_axes(&self.config.mrope_section(), head_dim);
        let (cos, sin) = mrope_tables(positions, &inv, &axes, &self.device, self.dtype);
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

    /// Full forward pass over a batch (optionally filling a KV cache for generation).
    pub fn forward(
        &self,
        batch: &TokenBatch,
        cache: Option<&mut KvCache>,
    ) -> Result<ForwardOutput, ForwardError> {
        let (_, l) = batch.dims();
        if l > self.config.max_position_embeddings {
            return Err(ForwardError::TooLong {
                len: l,
                max: self.config.max_position_embeddings,
            });
        }
        let embeds = self.embed(batch)?;
        let positions = self.positions(batch);
        let axes: Vec<[Vec<i64>; 3]> = positions.iter().map(|p| p.axes.clone()).collect();
        let inputs = self.attention_inputs(&axes, &batch.mask, 0);
        let hidden = self.model.text.decode(embeds, &inputs, cache);
        Ok(ForwardOutput { hidden, positions })
    }

    /// Vocabulary logits `[batch, len, vocab]` of a batch.
    pub fn logits(&self, batch: &TokenBatch) -> Result<Tensor<3>, ForwardError> {
        let out = self.forward(batch, None)?;
        Ok(self.model.text.logits(out.hidden))
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
        let (b, l) = batch.dims();
        let out = self.forward(batch, None)?;
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
            return Ok((Tensor::zeros([1], (&self.device, self.dtype)), 0));
        }
        let hidden = out.hidden.reshape([b * l, self.config.hidden_size]);
        let rows = Tensor::<1, Int>::from_data(TensorData::new(rows, [n]), &self.device);
        let picked = hidden.select(0, rows);
        let sum = match self.model.text.head_weight() {
            Some(weight) => crate::kernels::linear_cross_entropy_sum(picked, weight, &targets),
            None => crate::kernels::cross_entropy_sum(
                self.model.text.logits(picked),
                crate::kernels::target_column(&targets, &self.device),
            ),
        };
        Ok((sum, n))
    }
}
