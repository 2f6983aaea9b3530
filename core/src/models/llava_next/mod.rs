//! LLaVA-NeXT (transformers `LlavaNextForConditionalGeneration`) with a Llama language model:
//! the paper's visual-instruction synthesizer (`AdaptLLM/visual-instruction-synthesizer`) and
//! its LLaVA-v1.6-8B backbone. Also loads the original LLaVA repository's layout
//! (`LlavaLlamaForCausalLM`, `model.mm_projector.*`, ...) and transformers ≥ 4.52's key names,
//! by renaming keys on load.
//!
//! - [`config`]: `LlavaNextConfig` (+ the original layout's conversion);
//! - [`vision`]: CLIP and the projector; [`image_processor`]: anyres preprocessing;
//! - [`presets`]: `adamllm init` shapes.
//!
//! The prompt is the authors' `llava_llama_3` conversation when the tokenizer is Llama 3's,
//! else the folder's chat template; the image token id comes from the config (128008 in the
//! AdaMLLM checkpoints, 128256 in llava-hf's) and must be a token of the tokenizer.

pub mod config;
pub mod image_processor;
pub mod presets;
pub mod vision;

use std::path::Path;
use std::sync::Arc;

use burn::module::{Module, Param};
use burn::tensor::{DType, Device, Tensor};
use serde_json::Value;

use self::config::{LlavaNextConfig, from_original, newer_key_to_hf, original_key_to_hf};
use self::image_processor::{AnyresConfig, select_best_resolution};
use self::vision::{ClipVisionTower, Projector};
use crate::io::FileError;
use crate::models::batch::{ForwardError, TokenBatch, scatter_features};
use crate::models::chat::ChatTemplate;
use crate::models::checkpoint::CheckpointReader;
use crate::models::decoder::TextModel;
use crate::models::export::{default_layout, is_adapter_path, text_checkpoint_name};
use crate::models::family::{
    Family, FamilyNetwork, KeyLayout, LoadModelError, LoadOptions, Model, Part,
};
use crate::models::files::ModelFiles;
use crate::models::image::ProcessedImage;
use crate::models::layers::{Linear, in_dtype};
use crate::models::llama::checkpoint_vocab;
use crate::models::prompt::{
    EndOfText, ImageToken, Processor, choose_template, tokenizer_from_files,
};

/// The network: CLIP tower, projector, `image_newline` and the Llama language model.
#[derive(Module, Debug)]
pub struct LlavaNextModel {
    /// `vision_tower.vision_model.*`.
    pub vision: ClipVisionTower,
    /// `multi_modal_projector.*`.
    pub projector: Projector,
    /// `image_newline` `[hidden]`: appended after every row of an image's grid features.
    pub image_newline: Param<Tensor<1>>,
    /// `language_model.model.*` + `language_model.lm_head`.
    pub text: TextModel,
    /// The config (HF form).
    #[module(skip)]
    pub config: LlavaNextConfig,
    /// The folder was in another layout: export writes this `config.json` instead.
    #[module(skip)]
    pub converted_config: Option<Value>,
}

/// transformers `unpad_image` rows/columns kept of a `[rows, cols]` feature grid for an image
/// of `(height, width)`: `(row range, column range)`.
pub fn unpad_ranges(grid: [usize; 2], image_size: [usize; 2]) -> ([usize; 2], [usize; 2]) {
    let (ch, cw) = (grid[0], grid[1]);
    let (oh, ow) = (image_size[0] as f64, image_size[1] as f64);
    // int(round(x, 7)) as Python computes it for these magnitudes.
    let round7 = |x: f64| ((x * 1e7).round() / 1e7) as usize;
    if ow / oh > cw as f64 / ch as f64 {
        let new_h = round7(oh * (cw as f64 / ow));
        let pad = (ch - new_h.min(ch)) / 2;
        ([pad, ch - pad], [0, cw])
    } else {
        let new_w = round7(ow * (ch as f64 / oh));
        let pad = (cw - new_w.min(cw)) / 2;
        ([0, ch], [pad, cw - pad])
    }
}

impl LlavaNextModel {
    /// The packed features of one image (`[tokens, hidden]`): the base crop's features, then
    /// the grid crops' features arranged as the image, unpadded, each row closed by
    /// `image_newline`.
    // transformers: LlavaNextForConditionalGeneration.pack_image_features (one image)
    fn pack(&self, features: Tensor<3>, image: &ProcessedImage) -> Result<Tensor<2>, ForwardError> {
        let [n, t, hidden] = features.dims();
        let g = self.config.vision_config.grid();
        if t != g * g {
            return Err(ForwardError::Unsupported(format!(
                "vision_feature_select_strategy {:?} gives {t} features per crop; anyres packing needs {} (transformers 4.47 refuses it too)",
                self.config.vision_feature_select_strategy,
                g * g
            )));
        }
        let base = features.clone().narrow(0, 0, 1).reshape([t, hidden]);
        let crop = self.config.vision_config.image_size;
        let [bh, bw] = select_best_resolution(image.image_size, &self.config.image_grid_pinpoints);
        let (nph, npw) = (bh / crop, bw / crop);
        if n != 1 + nph * npw {
            return Err(ForwardError::Unsupported(format!(
                "an image of {}x{} needs {} crops but {} were given",
                image.image_size[1],
                image.image_size[0],
                1 + nph * npw,
                n
            )));
        }
        let grid = features
            .narrow(0, 1, n - 1)
            .reshape([nph, npw, g, g, hidden])
            .permute([4, 0, 2, 1, 3])
            .reshape([hidden, nph * g, npw * g]);
        let (rows, cols) = unpad_ranges([nph * g, npw * g], image.image_size);
        let (h, w) = (rows[1] - rows[0], cols[1] - cols[0]);
        let grid = grid.narrow(1, rows[0], h).narrow(2, cols[0], w);
        let newline = in_dtype(self.image_newline.val(), grid.dtype())
            .reshape([hidden, 1, 1])
            .expand([hidden, h, 1]);
        let grid = Tensor::cat(vec![grid, newline], 2)
            .reshape([hidden, h * (w + 1)])
            .transpose();
        Ok(Tensor::cat(vec![base, grid], 0))
    }
}

impl LlavaNextModel {
    /// The packed features of several images (`[Σ tokens, hidden]`, in order): every crop
    /// through CLIP up to the feature layer, the projector, then [`Self::pack`] per image.
    // transformers: LlavaNextForConditionalGeneration.get_image_features + pack_image_features
    pub fn image_features(
        &self,
        images: &[&ProcessedImage],
        dtype: DType,
    ) -> Result<Tensor<2>, ForwardError> {
        let crops: usize = images.iter().map(|i| i.num_patches).sum();
        let mut pixels = Vec::with_capacity(crops * images.first().map_or(0, |i| i.patch_dim));
        for img in images {
            pixels.extend_from_slice(&img.pixel_values);
        }
        let layers = self
            .config
            .vision_layers_used()
            .map_err(ForwardError::Unsupported)?;
        let hidden = self.vision.hidden_state(&pixels, crops, layers, dtype);
        let [_, positions, _] = hidden.dims();
        let selected = if self.config.vision_feature_select_strategy == "default" {
            hidden.narrow(1, 1, positions - 1)
        } else {
            hidden
        };
        let features = self.projector.forward(selected);
        let mut packed = Vec::with_capacity(images.len());
        let mut start = 0;
        for img in images {
            packed.push(self.pack(features.clone().narrow(0, start, img.num_patches), img)?);
            start += img.num_patches;
        }
        Ok(Tensor::cat(packed, 0))
    }
}

impl FamilyNetwork for LlavaNextModel {
    fn text(&self) -> &TextModel {
        &self.text
    }

    fn text_mut(&mut self) -> &mut TextModel {
        &mut self.text
    }

    fn has_vision(&self) -> bool {
        true
    }

    // transformers: LlavaNextForConditionalGeneration.get_image_features + forward
    fn merge_images(
        &self,
        embeds: Tensor<3>,
        batch: &TokenBatch,
    ) -> Result<Tensor<3>, ForwardError> {
        let images = batch.all_images();
        let token = self.config.image_token_index;
        let pads = batch.count_token(token);
        let expected: usize = images.iter().map(|i| i.tokens).sum();
        if pads != expected {
            return Err(ForwardError::ImageTokenMismatch {
                pads,
                tokens: expected,
            });
        }
        if images.is_empty() {
            return Ok(embeds);
        }
        let packed = self.image_features(&images, embeds.dtype())?;
        let tokens = packed.dims()[0];
        if tokens != pads {
            return Err(ForwardError::ImageTokenMismatch { pads, tokens });
        }
        Ok(scatter_features(embeds, batch, token, packed))
    }

    fn for_each_linear(&mut self, f: &mut dyn FnMut(&str, &mut Linear)) {
        f("vision.patch_embedding", &mut self.vision.patch_embedding);
        for (i, layer) in self.vision.layers.iter_mut().enumerate() {
            let p = format!("vision.layers.{i}");
            let a = &mut layer.self_attn;
            f(&format!("{p}.self_attn.q_proj"), &mut a.q_proj);
            f(&format!("{p}.self_attn.k_proj"), &mut a.k_proj);
            f(&format!("{p}.self_attn.v_proj"), &mut a.v_proj);
            f(&format!("{p}.self_attn.out_proj"), &mut a.out_proj);
            f(&format!("{p}.mlp.fc1"), &mut layer.mlp.fc1);
            f(&format!("{p}.mlp.fc2"), &mut layer.mlp.fc2);
        }
        f("projector.linear_1", &mut self.projector.linear_1);
        f("projector.linear_2", &mut self.projector.linear_2);
        self.text.for_each_linear("text", f);
    }

    fn freeze(&mut self, part: Part) {
        match part {
            Part::VisionTower => self.vision = self.vision.clone().no_grad(),
            Part::Projector => {
                self.projector = self.projector.clone().no_grad();
                self.image_newline = self.image_newline.clone().set_require_grad(false);
            }
            Part::LanguageModel => self.text = self.text.clone().no_grad(),
        }
    }

    fn part_of(&self, path: &str) -> Part {
        if path.starts_with("vision.") {
            Part::VisionTower
        } else if path.starts_with("projector.") || path == "image_newline" {
            Part::Projector
        } else {
            Part::LanguageModel
        }
    }

    fn no_decay(&self, path: &str) -> bool {
        path.ends_with(".bias")
            || (path.starts_with("vision.")
                && ["layer_norm", "layrnorm", "layernorm"]
                    .iter()
                    .any(|n| path.contains(n)))
    }

    fn checkpoint_key(&self, path: &str, dims: &[usize]) -> Option<(String, KeyLayout)> {
        if is_adapter_path(path) {
            return None;
        }
        if let Some(name) = text_checkpoint_name(path, "language_model.") {
            return Some((name, default_layout(path, dims)));
        }
        let v = &self.config.vision_config;
        let vm = "vision_tower.vision_model";
        let name = match path {
            "vision.patch_embedding.weight" => {
                let shape = vec![dims[1], v.num_channels, v.patch_size, v.patch_size];
                return Some((
                    format!("{vm}.embeddings.patch_embedding.weight"),
                    KeyLayout::TransposedAs(shape),
                ));
            }
            "vision.class_embedding" => format!("{vm}.embeddings.class_embedding"),
            "vision.position_embedding" => format!("{vm}.embeddings.position_embedding.weight"),
            "image_newline" => "image_newline".into(),
            _ => {
                if let Some(rest) = path.strip_prefix("vision.layers.") {
                    format!("{vm}.encoder.layers.{rest}")
                } else if let Some(rest) = path.strip_prefix("vision.") {
                    format!("{vm}.{rest}")
                } else if let Some(rest) = path.strip_prefix("projector.") {
                    format!("multi_modal_projector.{rest}")
                } else {
                    path.to_string()
                }
            }
        };
        Some((name, default_layout(path, dims)))
    }

    fn export_config(&self) -> Option<Value> {
        self.converted_config.clone()
    }
}

/// Which key layout a checkpoint uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyStyle {
    /// transformers 4.4x (`language_model.model.*`).
    Hf,
    /// The original LLaVA repository (`model.mm_projector.*`).
    Original,
    /// transformers ≥ 4.52 (`model.language_model.*`).
    Newer,
}

fn key_style(reader: &CheckpointReader) -> KeyStyle {
    if reader.contains("model.mm_projector.0.weight") {
        KeyStyle::Original
    } else if reader.contains("model.language_model.embed_tokens.weight") {
        KeyStyle::Newer
    } else {
        KeyStyle::Hf
    }
}

/// The id and text of the image token: `image_token_index` of the config, which must be a token
/// of the tokenizer (and agree with `processor_config.json`'s `image_token` when it names one).
fn image_token(
    files: &ModelFiles,
    tokenizer: &tokenizers::Tokenizer,
    id: u32,
) -> Result<ImageToken, FileError> {
    let text = tokenizer.id_to_token(id).ok_or_else(|| {
        FileError::key(
            &files.path("config.json"),
            "image_token_index",
            format!("id {id} is not a token of tokenizer.json"),
        )
    })?;
    if files.exists("processor_config.json") {
        let v: Value = files.read_json("processor_config.json")?;
        if let Some(named) = v.get("image_token").and_then(Value::as_str)
            && named != text
        {
            return Err(FileError::key(
                &files.path("processor_config.json"),
                "image_token",
                format!(
                    "{named:?} disagrees with config.json's image_token_index {id}, which is {text:?} in tokenizer.json"
                ),
            ));
        }
    }
    Ok(ImageToken {
        id,
        prompt_text: text,
        wrapper_ids: Vec::new(),
    })
}

/// The original layout's image token: `<|reserved_special_token_4|>` (the authors' choice for
/// their vLLM runs) or `<image>`, whichever the tokenizer has.
fn original_image_token(
    files: &ModelFiles,
    tokenizer: &tokenizers::Tokenizer,
) -> Result<u32, FileError> {
    ["<|reserved_special_token_4|>", "<image>"]
        .iter()
        .find_map(|t| tokenizer.token_to_id(t))
        .ok_or_else(|| {
            FileError::new(
                &files.path("tokenizer.json"),
                "an original-layout LLaVA folder needs an image token in its tokenizer (<|reserved_special_token_4|> or <image>)",
            )
        })
}

/// The LLaVA-NeXT prompt rules of a folder.
fn llava_processor(
    files: &ModelFiles,
    config: &LlavaNextConfig,
    tokenizer: tokenizers::Tokenizer,
    template: Option<&str>,
) -> Result<Processor, FileError> {
    let token = image_token(files, &tokenizer, config.image_token_index)?;
    let llama3 = tokenizer.token_to_id("<|start_header_id|>").is_some();
    let template = choose_template(files, template, llama3.then_some(ChatTemplate::LlavaLlama3))?;
    let mut num_additional = 0;
    if files.exists("processor_config.json") {
        let v: Value = files.read_json("processor_config.json")?;
        num_additional = v
            .get("num_additional_image_tokens")
            .and_then(Value::as_u64)
            .unwrap_or(0) as usize;
        crate::limits::at_most(
            "num_additional_image_tokens",
            num_additional,
            crate::limits::MAX_FACTOR,
        )
        .map_err(|(key, m)| FileError::key(&files.path("processor_config.json"), key, m))?;
    }
    let pp = if files.exists("preprocessor_config.json") {
        Some(files.read_text("preprocessor_config.json")?)
    } else {
        None
    };
    let images = AnyresConfig::from_json(
        pp.as_deref(),
        &config.image_grid_pinpoints,
        config.vision_config.patch_size,
        config.vision_feature_select_strategy == "default",
        num_additional,
    )
    .map_err(|e| FileError::new(&files.path("preprocessor_config.json"), e))?;
    if pp.is_some() && images.crop != config.vision_config.image_size {
        return Err(FileError::key(
            &files.path("preprocessor_config.json"),
            "crop_size",
            format!(
                "{} differs from the vision tower's image_size {} in config.json",
                images.crop, config.vision_config.image_size
            ),
        ));
    }
    let end_of_text = ["<|end_of_text|>", "</s>"].iter().find_map(|t| {
        tokenizer.token_to_id(t).map(|id| EndOfText {
            text: (*t).into(),
            id,
        })
    });
    let vocab = config.text_config.vocab_size as u32;
    let pad_id = config
        .text_config
        .pad_token_id
        .filter(|p| *p < vocab)
        .or(end_of_text.as_ref().map(|e| e.id))
        .unwrap_or(0);
    Ok(Processor {
        turn_end_id: tokenizer.token_to_id("<|eot_id|>"),
        tokenizer,
        template,
        images: Some(Arc::new(images)),
        image_token: Some(token),
        pad_id,
        end_of_text,
        max_positions: config.text_config.max_position_embeddings,
        folder: files.root().display().to_string(),
    })
}

/// Reads the config of a folder in either layout; returns it with the converted `config.json`
/// when the folder was in the original layout.
fn read_config(
    files: &ModelFiles,
    tokenizer: &tokenizers::Tokenizer,
) -> Result<(LlavaNextConfig, Option<Value>), FileError> {
    let path = files.path("config.json");
    let raw: Value = files.read_config_json("config.json", config::CONFIG_ALIASES)?;
    let original = raw.get("model_type").and_then(Value::as_str) == Some("llava_llama");
    let (config, converted) = if original {
        let id = original_image_token(files, tokenizer)?;
        let c = from_original(&raw, id).map_err(|(k, m)| FileError::key(&path, k, m))?;
        let json = serde_json::to_value(&c).map_err(|e| FileError::new(&path, e.to_string()))?;
        (c, Some(json))
    } else {
        let c: LlavaNextConfig = serde_json::from_value(raw)
            .map_err(|e| FileError::new(&path, format!("invalid LLaVA-NeXT config: {e}")))?;
        (c, None)
    };
    Ok((config, converted))
}

/// The LLaVA-NeXT family's loader.
pub struct LlavaNextFamily;

/// The registered LLaVA-NeXT family.
pub static FAMILY: LlavaNextFamily = LlavaNextFamily;

impl Family for LlavaNextFamily {
    fn name(&self) -> &'static str {
        "llava_next"
    }

    fn describe(&self) -> &'static str {
        "LLaVA-NeXT: LlavaNextForConditionalGeneration and the original LlavaLlamaForCausalLM layout"
    }

    fn model_types(&self) -> &'static [&'static str] {
        &["llava_next", "llava_llama"]
    }

    fn architectures(&self) -> &'static [&'static str] {
        &["LlavaNextForConditionalGeneration", "LlavaLlamaForCausalLM"]
    }

    fn load(
        &self,
        files: &ModelFiles,
        device: &Device,
        options: &LoadOptions,
    ) -> Result<Model, LoadModelError> {
        let tokenizer = tokenizer_from_files(files, "tokenizer.json")?;
        let (mut config, converted) = read_config(files, &tokenizer)?;
        let mut reader = CheckpointReader::open(files)?;
        match key_style(&reader) {
            KeyStyle::Original => reader.rename_keys(original_key_to_hf),
            KeyStyle::Newer => reader.rename_keys(newer_key_to_hf),
            KeyStyle::Hf => {}
        }
        config.text_config.vocab_size =
            checkpoint_vocab(&reader, "language_model.", config.text_config.vocab_size);
        config.text_config.tie_word_embeddings = config.tied();
        config
            .validate()
            .map_err(|(k, m)| FileError::key(&files.path("config.json"), k, m))?;
        if !reader.contains("vision_tower.vision_model.embeddings.patch_embedding.weight") {
            return Err(FileError::new(
                &files.root(),
                "the checkpoint holds no vision tower (vision_tower.vision_model.*): a LLaVA-NeXT folder needs its CLIP weights",
            )
            .into());
        }
        let processor = llava_processor(files, &config, tokenizer, options.template.as_deref())?;
        let mut w = options.weight_loader(&reader, device);
        let vision = ClipVisionTower::load(&config.vision_config, &mut w, "vision_tower.")?;
        let (ve, te) = (
            config.vision_config.hidden_size,
            config.text_config.hidden_size,
        );
        let projector = Projector {
            linear_1: w.linear("multi_modal_projector.linear_1", ve, te, true)?,
            linear_2: w.linear("multi_modal_projector.linear_2", te, te, true)?,
            act: config.projector_hidden_act.clone(),
        };
        let image_newline = Param::from_tensor(w.tensor("image_newline", [te])?);
        let text = TextModel::load(
            &config.text_config.decoder_config(),
            &mut w,
            "language_model.",
        )?;
        let rope = config.text_config.rope().map_err(|(k, m)| {
            FileError::key(&files.path("config.json"), format!("text_config.{k}"), m)
        })?;
        let spec = config
            .text_config
            .model_spec(self.name(), &config.model_type, rope);
        let network = crate::models::Network::LlavaNext(LlavaNextModel {
            vision,
            projector,
            image_newline,
            text,
            config,
            converted_config: converted,
        });
        Model::assemble(network, spec, processor, files, device, options)
    }

    fn presets(&self) -> &'static [(&'static str, &'static str)] {
        presets::PRESETS
    }

    fn write_preset(&self, name: &str, out: &Path, seed: u64) -> Result<usize, FileError> {
        presets::write_preset(name, out, seed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unpad_keeps_the_image_rows_or_columns() {
        // 500×333 (w×h) on a 24×48 grid: rows kept 6..30 = 24 (the notes' 24×36 after unpad
        // is in columns for 333×500).
        assert_eq!(unpad_ranges([24, 48], [333, 500]), ([0, 24], [6, 42]));
        // 2000×500 on an 24×72 grid.
        assert_eq!(unpad_ranges([24, 72], [500, 2000]), ([3, 21], [0, 72]));
        // A square grid for a square image keeps everything.
        assert_eq!(unpad_ranges([48, 48], [1000, 1000]), ([0, 48], [0, 48]));
    }
}
