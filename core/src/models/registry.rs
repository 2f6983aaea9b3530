//! The registration of the model families: which network each holds (one variant of
//! [`Network`]) and which loader reads which `config.json`.
//!
//! Adding a family is its folder under `core/src/models/` plus three lines here: its variant,
//! its arm in [`Network::family`] / [`Network::family_mut`], and its entry in [`FAMILIES`].
//! Every stage, the CLI and the page then pick it up through [`super::Model`].

use burn::module::Module;
use serde::Deserialize;

use super::family::{Family, FamilyNetwork};
use super::files::ModelFiles;
use crate::io::FileError;

/// The network of any family, as one Burn module (training, freezing and export visit it like
/// any module; [`super::paths::ModulePath`] leaves the variant out of parameter paths).
// A model holds one network, never a collection of them: the variants' size difference costs
// nothing, and Burn's derive does not see through a `Box`.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum Network {
    /// Qwen2-VL (and plain Qwen2 text models).
    Qwen2Vl(super::qwen2_vl::Qwen2VlModel),
    /// Llama text models.
    Llama(super::llama::LlamaModel),
    /// LLaVA-NeXT (CLIP + projector + Llama).
    LlavaNext(super::llava_next::LlavaNextModel),
}

impl Network {
    /// The family network behind the shared seam.
    pub fn family(&self) -> &dyn FamilyNetwork {
        match self {
            Self::Qwen2Vl(m) => m,
            Self::Llama(m) => m,
            Self::LlavaNext(m) => m,
        }
    }

    /// The same, mutably.
    pub fn family_mut(&mut self) -> &mut dyn FamilyNetwork {
        match self {
            Self::Qwen2Vl(m) => m,
            Self::Llama(m) => m,
            Self::LlavaNext(m) => m,
        }
    }
}

/// Every family, in the order detection tries them.
pub static FAMILIES: [&dyn Family; 3] = [
    &super::qwen2_vl::FAMILY,
    &super::llama::FAMILY,
    &super::llava_next::FAMILY,
];

/// The two `config.json` keys that decide the family.
#[derive(Deserialize)]
struct ConfigHead {
    #[serde(default)]
    model_type: Option<String>,
    #[serde(default)]
    architectures: Option<Vec<String>>,
}

/// `qwen2_vl, qwen2 (Qwen2-VL ...), llama (...)` for messages.
pub fn supported_families() -> String {
    FAMILIES
        .iter()
        .map(|f| format!("{} ({})", f.model_types().join(", "), f.describe()))
        .collect::<Vec<_>>()
        .join("; ")
}

/// The family that loads a folder: by `model_type`, else by `architectures`. A config with
/// neither is read as Qwen2-VL (the only family before the family layer, whose configs may
/// omit it).
pub fn family_of(files: &ModelFiles) -> Result<&'static dyn Family, FileError> {
    let path = files.path("config.json");
    let head: ConfigHead = files.read_json("config.json")?;
    if let Some(model_type) = &head.model_type {
        return FAMILIES
            .iter()
            .copied()
            .find(|f| f.model_types().contains(&model_type.as_str()))
            .ok_or_else(|| {
                FileError::key(
                    &path,
                    "model_type",
                    format!(
                        "no model family handles {model_type:?}{}; supported: {}",
                        head.architectures
                            .as_ref()
                            .map(|a| format!(" (architectures {a:?})"))
                            .unwrap_or_default(),
                        supported_families()
                    ),
                )
            });
    }
    match &head.architectures {
        Some(archs) => FAMILIES
            .iter()
            .copied()
            .find(|f| {
                archs
                    .iter()
                    .any(|a| f.architectures().contains(&a.as_str()))
            })
            .ok_or_else(|| {
                FileError::key(
                    &path,
                    "architectures",
                    format!(
                        "no model family handles {archs:?}; supported: {}",
                        supported_families()
                    ),
                )
            }),
        None => Ok(&super::qwen2_vl::FAMILY),
    }
}

/// The family with a preset of this name.
pub fn family_of_preset(name: &str) -> Option<&'static dyn Family> {
    FAMILIES
        .iter()
        .copied()
        .find(|f| f.presets().iter().any(|(p, _)| *p == name))
}

/// Every preset name, for messages.
pub fn preset_names() -> Vec<&'static str> {
    FAMILIES
        .iter()
        .flat_map(|f| f.presets().iter().map(|(p, _)| *p))
        .collect()
}

/// What a folder's `config.json` says about its size, whatever the family (read before any
/// weight is loaded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigSummary {
    /// The family that loads it.
    pub family: &'static str,
    /// `model_type` (the family's name when absent).
    pub model_type: String,
    /// Decoder layers of the language model.
    pub layers: usize,
    /// Width of the language model.
    pub hidden_size: usize,
    /// Vocabulary of the language model.
    pub vocab_size: usize,
}

impl ConfigSummary {
    /// Reads the summary (language-model keys at the top level, or under `text_config`).
    pub fn read(files: &ModelFiles) -> Result<Self, FileError> {
        let family = family_of(files)?;
        let raw: serde_json::Value = files.read_json("config.json")?;
        let text = raw.get("text_config").unwrap_or(&raw);
        let number = |key: &str| {
            text.get(key)
                .or_else(|| raw.get(key))
                .and_then(serde_json::Value::as_u64)
                .unwrap_or(0) as usize
        };
        Ok(Self {
            family: family.name(),
            model_type: raw
                .get("model_type")
                .and_then(serde_json::Value::as_str)
                .unwrap_or(family.name())
                .to_string(),
            layers: number("num_hidden_layers"),
            hidden_size: number("hidden_size"),
            vocab_size: number("vocab_size"),
        })
    }
}
