//! Qwen2-VL (transformers `Qwen2VLForConditionalGeneration`), and plain Qwen2 text models
//! (`Qwen2ForCausalLM`): one implementation for the built-in tiny presets and for real
//! checkpoints such as Qwen2-VL-2B-Instruct.
//!
//! - [`config`]: `config.json` / `generation_config.json`.
//! - [`image_processor`]: `Qwen2VLImageProcessor` (PIL-exact bicubic resize).
//! - [`processor`]: the prompt rules (ChatML, image-pad expansion) on the shared processor.
//! - [`vision`]: the vision tower; [`rope`]: M-RoPE positions; the language model is the shared
//!   [`crate::models::decoder`].
//! - [`weights`]: the checkpoint key layout and random initialization; [`presets`]: `init`.

pub mod config;
pub mod image_processor;
pub mod presets;
pub mod processor;
pub mod rope;
pub mod vision;
pub mod weights;

use std::path::Path;

use burn::module::Module;
use burn::tensor::{DType, Device, Tensor};

use self::config::Qwen2VlConfig;
use self::rope::{VisionTokenIds, rope_positions};
use self::vision::VisionTower;
use crate::io::FileError;
use crate::models::batch::{ForwardError, TokenBatch, scatter_features};
use crate::models::checkpoint::CheckpointReader;
use crate::models::decoder::{DecoderConfig, TextModel};
use crate::models::export::{default_layout, is_adapter_path, text_checkpoint_name};
use crate::models::family::{
    Family, FamilyNetwork, KeyLayout, LoadModelError, LoadOptions, Model, ModelSpec, Part,
};
use crate::models::files::ModelFiles;
use crate::models::layers::{Linear, tensor_from_vec};
use crate::models::rope::{RopePositions, RopeSpec, inverse_frequencies, section_axes};

pub use crate::models::resample;

/// The network: vision tower + language model.
#[derive(Module, Debug)]
pub struct Qwen2VlModel {
    /// `visual.*` (absent for a text-only Qwen2 model).
    pub vision: Option<VisionTower>,
    /// `model.*` + `lm_head`.
    pub text: TextModel,
    /// `config.json`.
    #[module(skip)]
    pub config: Qwen2VlConfig,
}

/// The decoder shapes of a Qwen2 / Qwen2-VL config (q/k/v biases, no output or MLP bias).
pub fn decoder_config(cfg: &Qwen2VlConfig) -> DecoderConfig {
    DecoderConfig {
        vocab_size: cfg.vocab_size,
        hidden_size: cfg.hidden_size,
        intermediate_size: cfg.intermediate_size,
        num_layers: cfg.num_hidden_layers,
        num_heads: cfg.num_attention_heads,
        num_kv_heads: cfg.num_key_value_heads(),
        head_dim: cfg.head_dim(),
        rms_norm_eps: cfg.rms_norm_eps,
        qkv_bias: true,
        o_bias: false,
        mlp_bias: false,
        tie_word_embeddings: cfg.tie_word_embeddings,
    }
}

impl FamilyNetwork for Qwen2VlModel {
    fn text(&self) -> &TextModel {
        &self.text
    }

    fn text_mut(&mut self) -> &mut TextModel {
        &mut self.text
    }

    fn has_vision(&self) -> bool {
        self.vision.is_some()
    }

    // transformers: Qwen2VLForConditionalGeneration.forward (image embeds into inputs_embeds)
    fn merge_images(
        &self,
        embeds: Tensor<3>,
        batch: &TokenBatch,
    ) -> Result<Tensor<3>, ForwardError> {
        let images = batch.all_images();
        let merge = self.config.vision_config.spatial_merge_size;
        let pads = batch.count_token(self.config.image_token_id);
        let tokens: usize = images.iter().map(|i| i.num_merged_tokens(merge)).sum();
        if pads != tokens {
            return Err(ForwardError::ImageTokenMismatch { pads, tokens });
        }
        let Some(vision) = self.vision.as_ref() else {
            return Ok(embeds);
        };
        if images.is_empty() {
            return Ok(embeds);
        }
        let device = embeds.device();
        let dtype = embeds.dtype();
        let patch_dim = self.config.vision_config.patch_dim();
        let rows: usize = images.iter().map(|i| i.num_patches).sum();
        let mut pixels = Vec::with_capacity(rows * patch_dim);
        for img in &images {
            pixels.extend_from_slice(&img.pixel_values);
        }
        let pixels = tensor_from_vec(pixels, [rows, patch_dim], &device, dtype);
        let grids: Vec<[usize; 3]> = images.iter().map(|i| i.grid_thw).collect();
        let image_embeds = vision.forward(pixels, &grids);
        Ok(scatter_features(
            embeds,
            batch,
            self.config.image_token_id,
            image_embeds,
        ))
    }

    fn positions(&self, batch: &TokenBatch) -> Vec<RopePositions> {
        let merge = self.config.vision_config.spatial_merge_size;
        let tokens = VisionTokenIds {
            vision_start: self.config.vision_start_token_id,
            image_pad: self.config.image_token_id,
        };
        batch
            .ids
            .iter()
            .zip(&batch.mask)
            .zip(&batch.images)
            .map(|((ids, mask), imgs)| {
                let grids: Vec<[usize; 3]> = imgs.iter().map(|i| i.grid_thw).collect();
                rope_positions(ids, mask, &grids, merge, tokens)
            })
            .collect()
    }

    fn for_each_linear(&mut self, f: &mut dyn FnMut(&str, &mut Linear)) {
        if let Some(vision) = self.vision.as_mut() {
            f("vision.patch_embed", &mut vision.patch_embed);
            for (i, block) in vision.blocks.iter_mut().enumerate() {
                let p = format!("vision.blocks.{i}");
                f(&format!("{p}.attn.qkv"), &mut block.attn.qkv);
                f(&format!("{p}.attn.proj"), &mut block.attn.proj);
                f(&format!("{p}.mlp.fc1"), &mut block.mlp.fc1);
                f(&format!("{p}.mlp.fc2"), &mut block.mlp.fc2);
            }
            f("vision.merger.fc1", &mut vision.merger.fc1);
            f("vision.merger.fc2", &mut vision.merger.fc2);
        }
        self.text.for_each_linear("text", f);
    }

    fn freeze(&mut self, part: Part) {
        match part {
            Part::VisionTower => {
                if let Some(vision) = self.vision.as_mut() {
                    vision.patch_embed = vision.patch_embed.clone().no_grad();
                    vision.blocks = vision
                        .blocks
                        .clone()
                        .into_iter()
                        .map(|b| b.no_grad())
                        .collect();
                }
            }
            Part::Projector => {
                if let Some(vision) = self.vision.as_mut() {
                    vision.merger = vision.merger.clone().no_grad();
                }
            }
            Part::LanguageModel => self.text = self.text.clone().no_grad(),
        }
    }

    fn part_of(&self, path: &str) -> Part {
        if path.starts_with("vision.merger") {
            Part::Projector
        } else if path.starts_with("vision.") {
            Part::VisionTower
        } else {
            Part::LanguageModel
        }
    }

    fn no_decay(&self, path: &str) -> bool {
        path.ends_with(".bias")
            || (path.starts_with("vision.")
                && (path.contains(".norm1.")
                    || path.contains(".norm2.")
                    || path.contains(".ln_q.")))
    }

    fn checkpoint_key(&self, path: &str, dims: &[usize]) -> Option<(String, KeyLayout)> {
        if is_adapter_path(path) {
            return None;
        }
        if path == "vision.patch_embed.weight" {
            let v = &self.config.vision_config;
            let shape = vec![
                dims[1],
                v.in_channels,
                v.temporal_patch_size,
                v.patch_size,
                v.patch_size,
            ];
            return Some((transformers_name(path), KeyLayout::TransposedAs(shape)));
        }
        Some((transformers_name(path), default_layout(path, dims)))
    }
}

/// The transformers name of one of our module or parameter paths:
/// `text.layers.0.self_attn.q_proj` → `model.layers.0.self_attn.q_proj`,
/// `vision.merger.fc1.bias` → `visual.merger.mlp.0.bias`, `text.lm_head.weight` →
/// `lm_head.weight`, `vision.patch_embed.weight` → `visual.patch_embed.proj.weight`, and the
/// bare token-embedding parameter `text.embed_tokens` → `model.embed_tokens.weight`.
pub fn transformers_name(path: &str) -> String {
    if let Some(name) = text_checkpoint_name(path, "") {
        return name;
    }
    if let Some(rest) = path.strip_prefix("vision.patch_embed") {
        return format!("visual.patch_embed.proj{rest}");
    }
    if let Some(rest) = path.strip_prefix("vision.") {
        let rest = rest.replacen("merger.fc1", "merger.mlp.0", 1).replacen(
            "merger.fc2",
            "merger.mlp.2",
            1,
        );
        return format!("visual.{rest}");
    }
    path.to_string()
}

/// The Qwen2-VL family's loader.
pub struct Qwen2VlFamily;

/// The registered Qwen2-VL family.
pub static FAMILY: Qwen2VlFamily = Qwen2VlFamily;

impl Family for Qwen2VlFamily {
    fn name(&self) -> &'static str {
        "qwen2_vl"
    }

    fn describe(&self) -> &'static str {
        "Qwen2-VL: Qwen2VLForConditionalGeneration, and Qwen2ForCausalLM text models"
    }

    fn model_types(&self) -> &'static [&'static str] {
        &["qwen2_vl", "qwen2"]
    }

    fn architectures(&self) -> &'static [&'static str] {
        &["Qwen2VLForConditionalGeneration", "Qwen2ForCausalLM"]
    }

    fn load(
        &self,
        files: &ModelFiles,
        device: &Device,
        options: &LoadOptions,
    ) -> Result<Model, LoadModelError> {
        let config = Qwen2VlConfig::from_model_files(files)?;
        let processor =
            processor::processor_from_files(files, &config, options.template.as_deref())?;
        let reader = CheckpointReader::open(files)?;
        let mut loader = options.weight_loader(&reader, device);
        let vision = if config.is_text_only() {
            None
        } else {
            Some(VisionTower::load(&config.vision_config, &mut loader)?)
        };
        let text = TextModel::load(&decoder_config(&config), &mut loader, "")?;
        let head_dim = config.head_dim();
        let spec = ModelSpec {
            family: self.name(),
            model_type: config.model_type.clone(),
            vocab_size: config.vocab_size,
            hidden_size: config.hidden_size,
            max_positions: config.max_position_embeddings,
            rope: RopeSpec {
                inv_freq: inverse_frequencies(head_dim, config.rope_theta),
                axes: section_axes(&config.mrope_section(), head_dim),
            },
            eos_token_ids: config.eos_token_ids(),
        };
        let network = crate::models::Network::Qwen2Vl(Qwen2VlModel {
            vision,
            text,
            config,
        });
        Model::assemble(network, spec, processor, files, device, options)
    }

    fn presets(&self) -> &'static [(&'static str, &'static str)] {
        &[
            ("tiny", "Qwen2-VL shape, ~0.2M parameters (tests, the demo)"),
            ("small", "Qwen2-VL shape, ~56M parameters (benchmarks)"),
            (
                "qwen2vl-2b",
                "the shapes of Qwen2-VL-2B-Instruct, 2,208,985,600 parameters, stored in bf16",
            ),
        ]
    }

    fn write_preset(&self, name: &str, out: &Path, seed: u64) -> Result<usize, FileError> {
        let preset: presets::Preset = name.parse().map_err(|e: String| FileError::new(out, e))?;
        let cfg = presets::init_model_dir(out, preset, seed, true)?;
        Ok(weights::parameter_count(&cfg))
    }
}

/// Loads a Qwen2-VL folder as the shared [`Model`] (the family is not detected: the folder must
/// hold a Qwen2-VL or Qwen2 config).
pub fn load_qwen2vl(dir: &Path, device: &Device, dtype: DType) -> Result<Model, LoadModelError> {
    FAMILY.load(
        &ModelFiles::Dir(dir.to_path_buf()),
        device,
        &LoadOptions::dtype(dtype),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_paths_map_to_transformers_keys() {
        assert_eq!(
            transformers_name("vision.merger.fc1.weight"),
            "visual.merger.mlp.0.weight"
        );
        assert_eq!(
            transformers_name("vision.blocks.3.attn.qkv.bias"),
            "visual.blocks.3.attn.qkv.bias"
        );
        assert_eq!(
            transformers_name("text.layers.1.self_attn.q_proj.weight"),
            "model.layers.1.self_attn.q_proj.weight"
        );
        assert_eq!(transformers_name("text.lm_head.weight"), "lm_head.weight");
        assert_eq!(
            transformers_name("vision.patch_embed.weight"),
            "visual.patch_embed.proj.weight"
        );
        // A bare `Param` field has no `.weight` in its module path.
        assert_eq!(
            transformers_name("text.embed_tokens"),
            "model.embed_tokens.weight"
        );
        assert_eq!(
            default_layout("text.layers.1.self_attn.q_proj.weight", &[8, 8]),
            KeyLayout::Transposed
        );
        assert_eq!(
            default_layout("text.embed_tokens", &[768, 8]),
            KeyLayout::Same
        );
        assert!(is_adapter_path("text.layers.0.self_attn.q_proj.lora.a"));
    }
}
