//! `config.json` of LLaVA-NeXT: transformers' `LlavaNextConfig` (with a CLIP `vision_config`
//! and a Llama `text_config`), and the original LLaVA repository's `LlavaLlamaForCausalLM`
//! layout (`model_type: llava_llama`, `mm_*` keys) converted to it on load.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::models::llama::config::LlamaConfig;

fn default_image_token_index() -> u32 {
    32000
}
fn default_projector_act() -> String {
    "gelu".into()
}
fn default_feature_layer() -> i64 {
    -2
}
fn default_strategy() -> String {
    "default".into()
}
/// LLaVA-NeXT's pinpoints (height, width).
pub fn default_pinpoints() -> Vec<[usize; 2]> {
    vec![[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]
}
fn default_model_type() -> String {
    "llava_next".into()
}
fn default_image_seq_length() -> usize {
    576
}

/// transformers `CLIPVisionConfig` (its own defaults for keys a config leaves out).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClipVisionConfig {
    /// Width of the encoder.
    #[serde(default = "clip_hidden")]
    pub hidden_size: usize,
    /// Width of the MLP.
    #[serde(default = "clip_intermediate")]
    pub intermediate_size: usize,
    /// Encoder layers.
    #[serde(default = "clip_layers")]
    pub num_hidden_layers: usize,
    /// Attention heads.
    #[serde(default = "clip_heads")]
    pub num_attention_heads: usize,
    /// Image channels.
    #[serde(default = "clip_channels")]
    pub num_channels: usize,
    /// Side of the (square) input in pixels.
    #[serde(default = "clip_image_size")]
    pub image_size: usize,
    /// Side of a patch in pixels.
    #[serde(default = "clip_patch_size")]
    pub patch_size: usize,
    /// MLP activation (`quick_gelu`).
    #[serde(default = "clip_act")]
    pub hidden_act: String,
    /// Epsilon of the layer norms.
    #[serde(default = "clip_eps")]
    pub layer_norm_eps: f64,
    /// Standard deviation of random initialization.
    #[serde(default = "clip_init")]
    pub initializer_range: f64,
    /// `clip_vision_model`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_type: Option<String>,
}

fn clip_hidden() -> usize {
    768
}
fn clip_intermediate() -> usize {
    3072
}
fn clip_layers() -> usize {
    12
}
fn clip_heads() -> usize {
    12
}
fn clip_channels() -> usize {
    3
}
fn clip_image_size() -> usize {
    224
}
fn clip_patch_size() -> usize {
    32
}
fn clip_act() -> String {
    "quick_gelu".into()
}
fn clip_eps() -> f64 {
    1e-5
}
fn clip_init() -> f64 {
    0.02
}

impl ClipVisionConfig {
    /// OpenAI CLIP ViT-L/14 at 336 px (`openai/clip-vit-large-patch14-336`), the tower of every
    /// LLaVA-NeXT checkpoint the paper uses and `LlavaNextConfig`'s default.
    pub fn clip_vit_large_336() -> Self {
        Self {
            hidden_size: 1024,
            intermediate_size: 4096,
            num_hidden_layers: 24,
            num_attention_heads: 16,
            num_channels: 3,
            image_size: 336,
            patch_size: 14,
            hidden_act: "quick_gelu".into(),
            layer_norm_eps: 1e-5,
            initializer_range: 0.02,
            model_type: Some("clip_vision_model".into()),
        }
    }

    /// Patches per side of a crop.
    pub fn grid(&self) -> usize {
        self.image_size / self.patch_size.max(1)
    }

    /// Positions of the embedding table (patches + CLS).
    pub fn num_positions(&self) -> usize {
        self.grid() * self.grid() + 1
    }

    /// Values of one flattened patch (`C·P·P`).
    pub fn patch_dim(&self) -> usize {
        self.num_channels * self.patch_size * self.patch_size
    }
}

/// Keys transformers may write under two names: (parent, key, alias).
pub const CONFIG_ALIASES: &[(&str, &str, &str)] = &[("", "image_token_index", "image_token_id")];

/// transformers `LlavaNextConfig`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LlavaNextConfig {
    /// `["LlavaNextForConditionalGeneration"]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub architectures: Option<Vec<String>>,
    /// `"llava_next"`.
    #[serde(default = "default_model_type")]
    pub model_type: String,
    /// Id of the image placeholder token (128008 in the AdaMLLM checkpoints, 128256 in
    /// llava-hf's): always read, never assumed.
    #[serde(default = "default_image_token_index", alias = "image_token_id")]
    pub image_token_index: u32,
    /// Projector activation (exact `gelu`).
    #[serde(default = "default_projector_act")]
    pub projector_hidden_act: String,
    /// Which hidden state of the vision tower feeds the projector (`-2`: the penultimate).
    #[serde(default = "default_feature_layer")]
    pub vision_feature_layer: i64,
    /// `default` (drop the CLS token) or `full`.
    #[serde(default = "default_strategy")]
    pub vision_feature_select_strategy: String,
    /// Anyres grid resolutions, `[height, width]` each.
    #[serde(default = "default_pinpoints")]
    pub image_grid_pinpoints: Vec<[usize; 2]>,
    /// Features of one crop (576 for CLIP-L/336). transformers 4.47 takes prompts with fewer
    /// image tokens than this for its legacy unexpanded path, so exports keep it right.
    #[serde(default = "default_image_seq_length")]
    pub image_seq_length: usize,
    /// The vision tower (CLIP-L/336 when absent).
    #[serde(default = "ClipVisionConfig::clip_vit_large_336")]
    pub vision_config: ClipVisionConfig,
    /// The language model (Llama defaults for keys left out).
    #[serde(default)]
    pub text_config: LlamaConfig,
    /// Whether the LM head shares the embedding matrix (also read from `text_config`).
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// Storage dtype, informational.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub torch_dtype: Option<String>,
    /// transformers version, informational.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transformers_version: Option<String>,
}

impl LlavaNextConfig {
    /// How many vision layers run: `hidden_states[vision_feature_layer]` is the output after
    /// that many layers (index 0 is the embeddings).
    pub fn vision_layers_used(&self) -> Result<usize, String> {
        let n = self.vision_config.num_hidden_layers as i64;
        let idx = if self.vision_feature_layer < 0 {
            n + 1 + self.vision_feature_layer
        } else {
            self.vision_feature_layer
        };
        if idx < 0 || idx > n {
            return Err(format!(
                "{} is outside the vision tower's {} hidden states",
                self.vision_feature_layer,
                n + 1
            ));
        }
        Ok(idx as usize)
    }

    /// Whether the LM head is tied (either flag).
    pub fn tied(&self) -> bool {
        self.tie_word_embeddings || self.text_config.tie_word_embeddings
    }

    /// Checks what the model relies on; returns the offending key and a message.
    pub fn validate(&self) -> Result<(), (String, String)> {
        self.text_config
            .validate()
            .map_err(|(k, m)| (format!("text_config.{k}"), m))?;
        let v = &self.vision_config;
        {
            use crate::limits::*;
            all_at_most(&[
                ("vision_config.hidden_size", v.hidden_size, MAX_WIDTH),
                (
                    "vision_config.intermediate_size",
                    v.intermediate_size,
                    MAX_WIDTH,
                ),
                (
                    "vision_config.num_hidden_layers",
                    v.num_hidden_layers,
                    MAX_LAYERS,
                ),
                (
                    "vision_config.num_attention_heads",
                    v.num_attention_heads,
                    MAX_HEADS,
                ),
                ("vision_config.num_channels", v.num_channels, MAX_FACTOR),
                ("vision_config.image_size", v.image_size, MAX_IMAGE_EDGE),
                ("vision_config.patch_size", v.patch_size, MAX_IMAGE_EDGE),
                ("image_seq_length", self.image_seq_length, MAX_POSITIONS),
                (
                    "image_grid_pinpoints (count)",
                    self.image_grid_pinpoints.len(),
                    1024,
                ),
            ])?;
            for &[h, w] in &self.image_grid_pinpoints {
                all_at_most(&[
                    ("image_grid_pinpoints", h, MAX_IMAGE_EDGE),
                    ("image_grid_pinpoints", w, MAX_IMAGE_EDGE),
                ])?;
            }
        }
        if v.num_attention_heads == 0 || !v.hidden_size.is_multiple_of(v.num_attention_heads) {
            return Err((
                "vision_config.num_attention_heads".into(),
                format!(
                    "hidden_size {} is not divisible by num_attention_heads {}",
                    v.hidden_size, v.num_attention_heads
                ),
            ));
        }
        if v.image_size == 0 {
            return Err((
                "vision_config.image_size".into(),
                "must be positive (the tower's crop size)".into(),
            ));
        }
        if v.patch_size == 0 || !v.image_size.is_multiple_of(v.patch_size) {
            return Err((
                "vision_config.patch_size".into(),
                format!(
                    "image_size {} is not a multiple of patch_size {}",
                    v.image_size, v.patch_size
                ),
            ));
        }
        if !matches!(v.hidden_act.as_str(), "quick_gelu" | "gelu") {
            return Err((
                "vision_config.hidden_act".into(),
                format!("unsupported activation {:?}", v.hidden_act),
            ));
        }
        if !matches!(
            self.projector_hidden_act.as_str(),
            "gelu" | "quick_gelu" | "silu"
        ) {
            return Err((
                "projector_hidden_act".into(),
                format!("unsupported activation {:?}", self.projector_hidden_act),
            ));
        }
        if !matches!(
            self.vision_feature_select_strategy.as_str(),
            "default" | "full"
        ) {
            return Err((
                "vision_feature_select_strategy".into(),
                format!(
                    "expected \"default\" or \"full\", found {:?}",
                    self.vision_feature_select_strategy
                ),
            ));
        }
        self.vision_layers_used()
            .map_err(|m| ("vision_feature_layer".to_string(), m))?;
        if self.image_grid_pinpoints.is_empty()
            || self
                .image_grid_pinpoints
                .iter()
                .any(|[h, w]| *h == 0 || *w == 0 || h % v.image_size != 0 || w % v.image_size != 0)
        {
            return Err((
                "image_grid_pinpoints".into(),
                format!(
                    "every pinpoint must be a positive multiple of the crop size {}",
                    v.image_size
                ),
            ));
        }
        if self.image_token_index as usize >= self.text_config.vocab_size {
            return Err((
                "image_token_index".into(),
                format!(
                    "id {} is outside the vocabulary ({})",
                    self.image_token_index, self.text_config.vocab_size
                ),
            ));
        }
        Ok(())
    }
}

/// A known vision tower of the original LLaVA layout (`mm_vision_tower`), by hub name.
fn known_tower(name: &str) -> Option<ClipVisionConfig> {
    let mut c = ClipVisionConfig::clip_vit_large_336();
    match name.trim_start_matches('/') {
        "openai/clip-vit-large-patch14-336" => Some(c),
        "openai/clip-vit-large-patch14" => {
            c.image_size = 224;
            Some(c)
        }
        _ => None,
    }
}

/// Converts an original LLaVA repository config (`LlavaLlamaForCausalLM`, `mm_*` keys, the
/// Llama keys at the top level) to `LlavaNextConfig`, as transformers' conversion script
/// (`convert_llava_next_weights_to_hf.py`) does. `image_token_index` is the caller's (the
/// original code inserts images by a negative index, not a vocabulary token). The tower is
/// taken from `mm_vision_tower` (a known CLIP name) or, for towers without a hub config, from a
/// `mm_vision_tower_config` object.
pub fn from_original(
    raw: &Value,
    image_token_index: u32,
) -> Result<LlavaNextConfig, (String, String)> {
    let text: LlamaConfig =
        serde_json::from_value(raw.clone()).map_err(|e| (String::new(), e.to_string()))?;
    let get = |k: &str| raw.get(k).and_then(Value::as_str).unwrap_or("");
    let tower = get("mm_vision_tower");
    let vision_config = match raw.get("mm_vision_tower_config") {
        Some(v) => serde_json::from_value(v.clone())
            .map_err(|e| ("mm_vision_tower_config".to_string(), e.to_string()))?,
        None => known_tower(tower).ok_or_else(|| {
            (
                "mm_vision_tower".to_string(),
                format!(
                    "{tower:?} is not a known vision tower (openai/clip-vit-large-patch14-336, openai/clip-vit-large-patch14); add its CLIPVisionConfig as mm_vision_tower_config"
                ),
            )
        })?,
    };
    for (key, expected) in [
        ("mm_projector_type", "mlp2x_gelu"),
        ("image_aspect_ratio", "anyres"),
        ("mm_patch_merge_type", "spatial_unpad"),
    ] {
        let found = get(key);
        if found != expected {
            return Err((
                key.to_string(),
                format!("only {expected:?} is supported, found {found:?}"),
            ));
        }
    }
    let strategy = match get("mm_vision_select_feature") {
        "patch" | "" => "default",
        "cls_patch" => "full",
        other => {
            return Err((
                "mm_vision_select_feature".into(),
                format!("expected \"patch\" or \"cls_patch\", found {other:?}"),
            ));
        }
    };
    let pinpoints: Vec<[usize; 2]> = match raw.get("image_grid_pinpoints") {
        Some(v) => serde_json::from_value(v.clone())
            .map_err(|e| ("image_grid_pinpoints".to_string(), e.to_string()))?,
        None => default_pinpoints(),
    };
    Ok(LlavaNextConfig {
        architectures: Some(vec!["LlavaNextForConditionalGeneration".into()]),
        model_type: "llava_next".into(),
        image_token_index,
        projector_hidden_act: "gelu".into(),
        vision_feature_layer: raw
            .get("mm_vision_select_layer")
            .and_then(Value::as_i64)
            .unwrap_or(-2),
        vision_feature_select_strategy: strategy.into(),
        image_grid_pinpoints: pinpoints,
        image_seq_length: vision_config.grid() * vision_config.grid(),
        vision_config,
        tie_word_embeddings: text.tie_word_embeddings,
        torch_dtype: text.torch_dtype.clone(),
        transformers_version: None,
        text_config: LlamaConfig {
            architectures: Some(vec!["LlamaForCausalLM".into()]),
            model_type: "llama".into(),
            ..text
        },
    })
}

/// The HF key of an original LLaVA checkpoint key (`model.mm_projector.0.weight` →
/// `multi_modal_projector.linear_1.weight`, ...), `None` for keys with no HF counterpart.
pub fn original_key_to_hf(key: &str) -> Option<String> {
    if let Some(rest) = key.strip_prefix("model.vision_tower.vision_tower.") {
        return Some(format!("vision_tower.{rest}"));
    }
    if let Some(rest) = key.strip_prefix("model.mm_projector.0.") {
        return Some(format!("multi_modal_projector.linear_1.{rest}"));
    }
    if let Some(rest) = key.strip_prefix("model.mm_projector.2.") {
        return Some(format!("multi_modal_projector.linear_2.{rest}"));
    }
    if key == "model.image_newline" {
        return Some("image_newline".into());
    }
    if let Some(rest) = key.strip_prefix("lm_head.") {
        return Some(format!("language_model.lm_head.{rest}"));
    }
    key.strip_prefix("model.")
        .map(|rest| format!("language_model.model.{rest}"))
}

/// The 4.47 key of a checkpoint saved by transformers ≥ 4.52 (`model.language_model.*`,
/// `model.vision_tower.*`, `model.multi_modal_projector.*`, a top-level `lm_head`).
pub fn newer_key_to_hf(key: &str) -> Option<String> {
    if let Some(rest) = key.strip_prefix("model.language_model.") {
        return Some(format!("language_model.model.{rest}"));
    }
    if let Some(rest) = key.strip_prefix("lm_head.") {
        return Some(format!("language_model.lm_head.{rest}"));
    }
    key.strip_prefix("model.").map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_feature_layers() {
        let c: LlavaNextConfig =
            serde_json::from_str(r#"{"text_config": {"vocab_size": 128256}}"#).unwrap();
        assert_eq!(c.vision_config.hidden_size, 1024);
        assert_eq!(c.vision_layers_used().unwrap(), 23);
        assert_eq!(c.image_grid_pinpoints[4], [336, 1008]);
        // A partial vision_config takes CLIPVisionConfig's defaults for what it leaves out.
        let p: LlavaNextConfig = serde_json::from_str(
            r#"{"vision_config": {"hidden_size": 32}, "vision_feature_layer": -1}"#,
        )
        .unwrap();
        assert_eq!(
            (p.vision_config.hidden_size, p.vision_config.patch_size),
            (32, 32)
        );
        assert_eq!(p.vision_layers_used().unwrap(), 12);
        let mut bad = c.clone();
        bad.image_token_index = 200_000;
        assert_eq!(bad.validate().unwrap_err().0, "image_token_index");
        bad.image_token_index = 128_008;
        bad.vision_feature_layer = -30;
        assert_eq!(bad.validate().unwrap_err().0, "vision_feature_layer");
    }

    #[test]
    fn original_keys_map_to_transformers() {
        for (a, b) in [
            (
                "model.embed_tokens.weight",
                "language_model.model.embed_tokens.weight",
            ),
            (
                "model.layers.3.mlp.up_proj.weight",
                "language_model.model.layers.3.mlp.up_proj.weight",
            ),
            ("model.norm.weight", "language_model.model.norm.weight"),
            ("lm_head.weight", "language_model.lm_head.weight"),
            (
                "model.mm_projector.0.bias",
                "multi_modal_projector.linear_1.bias",
            ),
            (
                "model.mm_projector.2.weight",
                "multi_modal_projector.linear_2.weight",
            ),
            ("model.image_newline", "image_newline"),
            (
                "model.vision_tower.vision_tower.vision_model.pre_layrnorm.weight",
                "vision_tower.vision_model.pre_layrnorm.weight",
            ),
        ] {
            assert_eq!(original_key_to_hf(a).unwrap(), b);
        }
        assert_eq!(
            newer_key_to_hf("model.language_model.layers.0.self_attn.q_proj.weight").unwrap(),
            "language_model.model.layers.0.self_attn.q_proj.weight"
        );
        assert_eq!(
            newer_key_to_hf("model.image_newline").unwrap(),
            "image_newline"
        );
    }
}
