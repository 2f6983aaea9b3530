//! Llama text models (transformers `LlamaForCausalLM`): Meta-Llama-3-8B is the paper's
//! consistency judge, and the Llama 3 language model sits inside LLaVA-NeXT.
//!
//! The decoder is the shared [`crate::models::decoder`] without q/k/v biases (unless
//! `attention_bias`), with 1-D rotary positions at `rope_theta` and `llama3` scaling when the
//! config asks for it. Prompts use the folder's own chat template (Llama 3 Instruct's, say);
//! a base model without one reads plain text only, as the paper's judge does.
//!
//! - [`config`]: `LlamaConfig`; [`presets`]: `adamllm init` shapes.

pub mod config;
pub mod presets;

use std::path::Path;

use burn::module::Module;
use burn::tensor::{Device, Tensor};

use self::config::LlamaConfig;
use crate::io::FileError;
use crate::models::batch::{ForwardError, TokenBatch};
use crate::models::checkpoint::CheckpointReader;
use crate::models::decoder::TextModel;
use crate::models::export::{default_layout, is_adapter_path, text_checkpoint_name};
use crate::models::family::{
    Family, FamilyNetwork, KeyLayout, LoadModelError, LoadOptions, Model, Part,
};
use crate::models::files::ModelFiles;
use crate::models::layers::Linear;
use crate::models::prompt::{EndOfText, Processor, choose_template, tokenizer_from_files};

/// The network: the language model alone.
#[derive(Module, Debug)]
pub struct LlamaModel {
    /// `model.*` + `lm_head`.
    pub text: TextModel,
}

impl FamilyNetwork for LlamaModel {
    fn text(&self) -> &TextModel {
        &self.text
    }

    fn text_mut(&mut self) -> &mut TextModel {
        &mut self.text
    }

    fn has_vision(&self) -> bool {
        false
    }

    fn merge_images(
        &self,
        embeds: Tensor<3>,
        _batch: &TokenBatch,
    ) -> Result<Tensor<3>, ForwardError> {
        Ok(embeds)
    }

    fn for_each_linear(&mut self, f: &mut dyn FnMut(&str, &mut Linear)) {
        self.text.for_each_linear("text", f);
    }

    fn freeze(&mut self, part: Part) {
        if part == Part::LanguageModel {
            self.text = self.text.clone().no_grad();
        }
    }

    fn part_of(&self, _path: &str) -> Part {
        Part::LanguageModel
    }

    fn no_decay(&self, path: &str) -> bool {
        path.ends_with(".bias")
    }

    fn checkpoint_key(&self, path: &str, dims: &[usize]) -> Option<(String, KeyLayout)> {
        if is_adapter_path(path) {
            return None;
        }
        let name = text_checkpoint_name(path, "")?;
        Some((name, default_layout(path, dims)))
    }
}

/// Reads and checks a Llama `config.json`; errors name the file and key.
pub fn read_config(files: &ModelFiles) -> Result<LlamaConfig, FileError> {
    let config: LlamaConfig = files.read_json("config.json")?;
    config
        .validate()
        .map_err(|(key, message)| FileError::key(&files.path("config.json"), key, message))?;
    Ok(config)
}

/// The vocabulary size the checkpoint's embedding has (`prefix` + `model.embed_tokens.weight`):
/// released checkpoints that added tokens (a pad, an `<image>`) may disagree with the config.
pub fn checkpoint_vocab(reader: &CheckpointReader, prefix: &str, config_vocab: usize) -> usize {
    reader
        .shape(&format!("{prefix}model.embed_tokens.weight"))
        .and_then(|s| s.first().copied())
        .unwrap_or(config_vocab)
}

/// The prompt rules of a Llama folder: its tokenizer, its chat template (or `template`), the
/// Llama 3 turn end `<|eot_id|>` and document end `<|end_of_text|>` when the tokenizer has
/// them; no images.
pub fn text_processor(
    files: &ModelFiles,
    config: &LlamaConfig,
    template: Option<&str>,
) -> Result<Processor, FileError> {
    let tokenizer = tokenizer_from_files(files, "tokenizer.json")?;
    let template = choose_template(files, template, None)?;
    let end_of_text = ["<|end_of_text|>", "</s>", "<|endoftext|>"]
        .iter()
        .find_map(|t| {
            tokenizer.token_to_id(t).map(|id| EndOfText {
                text: (*t).into(),
                id,
            })
        });
    let pad_id = config
        .pad_token_id
        .or(end_of_text.as_ref().map(|e| e.id))
        .or_else(|| config.eos_token_ids().first().copied())
        .unwrap_or(0);
    Ok(Processor {
        turn_end_id: tokenizer
            .token_to_id("<|eot_id|>")
            .or_else(|| tokenizer.token_to_id("<|im_end|>")),
        tokenizer,
        template,
        images: None,
        image_token: None,
        pad_id,
        end_of_text,
        max_positions: config.max_position_embeddings,
        folder: files.root().display().to_string(),
    })
}

/// The Llama family's loader.
pub struct LlamaFamily;

/// The registered Llama family.
pub static FAMILY: LlamaFamily = LlamaFamily;

impl Family for LlamaFamily {
    fn name(&self) -> &'static str {
        "llama"
    }

    fn describe(&self) -> &'static str {
        "Llama: LlamaForCausalLM (Llama 3, the paper's judge)"
    }

    fn model_types(&self) -> &'static [&'static str] {
        &["llama"]
    }

    fn architectures(&self) -> &'static [&'static str] {
        &["LlamaForCausalLM"]
    }

    fn load(
        &self,
        files: &ModelFiles,
        device: &Device,
        options: &LoadOptions,
    ) -> Result<Model, LoadModelError> {
        let mut config = read_config(files)?;
        let processor = text_processor(files, &config, options.template.as_deref())?;
        let reader = CheckpointReader::open(files)?;
        config.vocab_size = checkpoint_vocab(&reader, "", config.vocab_size);
        let mut loader = options.weight_loader(&reader, device);
        let text = TextModel::load(&config.decoder_config(), &mut loader, "")?;
        let rope = config
            .rope()
            .map_err(|(key, message)| FileError::key(&files.path("config.json"), key, message))?;
        let spec = config.model_spec(self.name(), &config.model_type, rope);
        let network = crate::models::Network::Llama(LlamaModel { text });
        Model::assemble(network, spec, processor, files, device, options)
    }

    fn presets(&self) -> &'static [(&'static str, &'static str)] {
        presets::PRESETS
    }

    fn write_preset(&self, name: &str, out: &Path, seed: u64) -> Result<usize, FileError> {
        presets::write_preset(name, out, seed)
    }
}
