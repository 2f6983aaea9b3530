//! Qwen2-VL configuration files: `config.json` and `generation_config.json`.
//!
//! Mirrors `transformers.Qwen2VLConfig` / `Qwen2VLVisionConfig` as transformers 4.47 writes
//! them: unknown keys are tolerated, missing keys take transformers' defaults, and the special
//! token ids default to the real Qwen2-VL ids when a checkpoint leaves them out.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::io::{FileError, read_json_file};
use crate::models::files::ModelFiles;

fn default_vocab_size() -> usize {
    152064
}
fn default_hidden_size() -> usize {
    8192
}
fn default_intermediate_size() -> usize {
    29568
}
fn default_num_hidden_layers() -> usize {
    80
}
fn default_num_attention_heads() -> usize {
    64
}
fn default_hidden_act() -> String {
    "silu".to_string()
}
fn default_max_position_embeddings() -> usize {
    32768
}
fn default_initializer_range() -> f64 {
    0.02
}
fn default_rms_norm_eps() -> f64 {
    1e-5
}
fn default_rope_theta() -> f64 {
    1_000_000.0
}
fn default_true() -> bool {
    true
}
fn default_bos() -> Option<u32> {
    Some(151643)
}
fn default_eos() -> Option<EosTokenIds> {
    Some(EosTokenIds::One(151645))
}
fn default_vision_start() -> u32 {
    151652
}
fn default_vision_end() -> u32 {
    151653
}
fn default_vision_token() -> u32 {
    151654
}
fn default_image_token() -> u32 {
    151655
}
fn default_video_token() -> u32 {
    151656
}

/// One id or a list of ids, as HF configs write `eos_token_id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum EosTokenIds {
    /// A single end-of-sequence id.
    One(u32),
    /// Several ids, any of which ends generation.
    Many(Vec<u32>),
}

impl EosTokenIds {
    /// The ids as a list.
    pub fn to_vec(&self) -> Vec<u32> {
        match self {
            EosTokenIds::One(id) => vec![*id],
            EosTokenIds::Many(ids) => ids.clone(),
        }
    }
}

/// `rope_scaling` of a Qwen2-VL config: multimodal RoPE with its section split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RopeScaling {
    /// `"mrope"` in Qwen2-VL checkpoints (transformers may also write `rope_type: "default"`).
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// transformers 4.47 adds `rope_type` when it validates the config.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_type: Option<String>,
    /// Sizes (in rotary frequency pairs) of the temporal, height and width sections.
    pub mrope_section: Vec<usize>,
}

/// `vision_config` of Qwen2-VL (transformers `Qwen2VLVisionConfig`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VisionConfig {
    /// Number of vision transformer blocks.
    #[serde(default = "default_vision_depth")]
    pub depth: usize,
    /// Width of the vision transformer.
    #[serde(default = "default_vision_embed_dim")]
    pub embed_dim: usize,
    /// Output width of the patch merger (= the language model's hidden size).
    #[serde(default = "default_hidden_size_vision")]
    pub hidden_size: usize,
    /// Activation of the vision MLP (`quick_gelu` in Qwen2-VL).
    #[serde(default = "default_vision_act")]
    pub hidden_act: String,
    /// MLP width as a multiple of `embed_dim`.
    #[serde(default = "default_mlp_ratio")]
    pub mlp_ratio: f64,
    /// Attention heads of the vision transformer.
    #[serde(default = "default_vision_heads")]
    pub num_heads: usize,
    /// Image channels (transformers 4.47 writes `in_chans`).
    #[serde(default = "default_in_channels", alias = "in_chans")]
    pub in_channels: usize,
    /// Spatial patch size in pixels.
    #[serde(default = "default_patch_size")]
    pub patch_size: usize,
    /// Side of the square of patches the merger folds into one token.
    #[serde(default = "default_merge_size")]
    pub spatial_merge_size: usize,
    /// Frames per temporal patch.
    #[serde(default = "default_temporal_patch_size")]
    pub temporal_patch_size: usize,
}

fn default_vision_depth() -> usize {
    32
}
fn default_vision_embed_dim() -> usize {
    1280
}
fn default_hidden_size_vision() -> usize {
    3584
}
fn default_vision_act() -> String {
    "quick_gelu".to_string()
}
fn default_mlp_ratio() -> f64 {
    4.0
}
fn default_vision_heads() -> usize {
    16
}
fn default_in_channels() -> usize {
    3
}
fn default_patch_size() -> usize {
    14
}
fn default_merge_size() -> usize {
    2
}
fn default_temporal_patch_size() -> usize {
    2
}

impl Default for VisionConfig {
    fn default() -> Self {
        serde_json::from_str("{}").expect("defaults")
    }
}

impl VisionConfig {
    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.embed_dim / self.num_heads
    }
    /// Hidden width of the vision MLP.
    pub fn mlp_hidden_dim(&self) -> usize {
        (self.embed_dim as f64 * self.mlp_ratio) as usize
    }
    /// Length of one flattened patch row (`C × T × P × P`, 1176 for Qwen2-VL).
    pub fn patch_dim(&self) -> usize {
        self.in_channels * self.temporal_patch_size * self.patch_size * self.patch_size
    }
    /// Width of the merger's input (`embed_dim × merge²`).
    pub fn merger_hidden_dim(&self) -> usize {
        self.embed_dim * self.spatial_merge_size * self.spatial_merge_size
    }
}

/// `config.json` of a Qwen2-VL checkpoint (transformers `Qwen2VLConfig`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Qwen2VlConfig {
    /// Always `["Qwen2VLForConditionalGeneration"]` for the checkpoints we write.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub architectures: Option<Vec<String>>,
    /// `"qwen2_vl"`.
    #[serde(default = "default_model_type")]
    pub model_type: String,
    /// Vocabulary rows of the embedding and LM head.
    #[serde(default = "default_vocab_size")]
    pub vocab_size: usize,
    /// Width of the language model.
    #[serde(default = "default_hidden_size")]
    pub hidden_size: usize,
    /// Width of the SwiGLU MLP.
    #[serde(default = "default_intermediate_size")]
    pub intermediate_size: usize,
    /// Decoder layers.
    #[serde(default = "default_num_hidden_layers")]
    pub num_hidden_layers: usize,
    /// Query heads.
    #[serde(default = "default_num_attention_heads")]
    pub num_attention_heads: usize,
    /// Key/value heads (grouped-query attention); `null` means the same as the query heads.
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    /// Activation of the MLP (`silu`).
    #[serde(default = "default_hidden_act")]
    pub hidden_act: String,
    /// Longest sequence the model accepts.
    #[serde(default = "default_max_position_embeddings")]
    pub max_position_embeddings: usize,
    /// Standard deviation used by random initialization.
    #[serde(default = "default_initializer_range")]
    pub initializer_range: f64,
    /// Epsilon of the RMS norms.
    #[serde(default = "default_rms_norm_eps")]
    pub rms_norm_eps: f64,
    /// Whether generation keeps a KV cache.
    #[serde(default = "default_true")]
    pub use_cache: bool,
    /// Whether the LM head shares the embedding matrix.
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// RoPE base.
    #[serde(default = "default_rope_theta")]
    pub rope_theta: f64,
    /// Sliding-window attention (unused by Qwen2-VL checkpoints; refused when true).
    #[serde(default)]
    pub use_sliding_window: bool,
    /// Multimodal RoPE sections.
    #[serde(default)]
    pub rope_scaling: Option<RopeScaling>,
    /// Vision tower settings.
    #[serde(default)]
    pub vision_config: VisionConfig,
    /// Beginning-of-sequence id.
    #[serde(default = "default_bos")]
    pub bos_token_id: Option<u32>,
    /// End-of-sequence id(s).
    #[serde(default = "default_eos")]
    pub eos_token_id: Option<EosTokenIds>,
    /// `<|vision_start|>`.
    #[serde(default = "default_vision_start")]
    pub vision_start_token_id: u32,
    /// `<|vision_end|>`.
    #[serde(default = "default_vision_end")]
    pub vision_end_token_id: u32,
    /// `<|vision_pad|>`.
    #[serde(default = "default_vision_token")]
    pub vision_token_id: u32,
    /// `<|image_pad|>`: one per merged image token.
    #[serde(default = "default_image_token")]
    pub image_token_id: u32,
    /// `<|video_pad|>`.
    #[serde(default = "default_video_token")]
    pub video_token_id: u32,
    /// Storage dtype of the checkpoint (`"bfloat16"`, `"float32"`, ...), informational.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub torch_dtype: Option<String>,
    /// transformers version that wrote the file, informational.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transformers_version: Option<String>,
}

fn default_model_type() -> String {
    "qwen2_vl".to_string()
}

/// Keys transformers may write under two names: (parent, key, alias).
pub const CONFIG_ALIASES: &[(&str, &str, &str)] = &[("vision_config", "in_channels", "in_chans")];

impl Qwen2VlConfig {
    /// Reads and checks `config.json`; errors name the file and the offending key.
    pub fn from_file(path: &Path) -> Result<Self, FileError> {
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("config.json");
        let config: Self = ModelFiles::Dir(dir).read_config_json(name, CONFIG_ALIASES)?;
        config
            .validate()
            .map_err(|(key, message)| FileError::key(path, key, message))?;
        Ok(config)
    }

    /// Reads and checks `config.json` of a model folder on disk or in memory, in the diff or
    /// the full form transformers writes (the full form holds both `in_chans` and
    /// `in_channels`).
    pub fn from_model_files(files: &ModelFiles) -> Result<Self, FileError> {
        let config: Self = files.read_config_json("config.json", CONFIG_ALIASES)?;
        config
            .validate()
            .map_err(|(key, message)| FileError::key(&files.path("config.json"), key, message))?;
        Ok(config)
    }

    /// Bounds every size the model is built from (see [`crate::limits`]), before any
    /// arithmetic on them.
    fn check_bounds(&self) -> Result<(), (String, String)> {
        use crate::limits::*;
        DecoderSizes {
            vocab_size: self.vocab_size,
            hidden_size: self.hidden_size,
            intermediate_size: self.intermediate_size,
            num_hidden_layers: self.num_hidden_layers,
            num_attention_heads: self.num_attention_heads,
            num_key_value_heads: self.num_key_value_heads(),
            // head_dim() divides by the head count, which is checked for zero further on.
            head_dim: self.hidden_size / self.num_attention_heads.max(1),
            max_position_embeddings: self.max_position_embeddings,
        }
        .check()?;
        if let Some(r) = &self.rope_scaling {
            at_most(
                "rope_scaling.mrope_section (length)",
                r.mrope_section.len(),
                16,
            )?;
            for &section in &r.mrope_section {
                at_most("rope_scaling.mrope_section", section, MAX_WIDTH)?;
            }
        }
        let v = &self.vision_config;
        all_at_most(&[
            ("vision_config.depth", v.depth, MAX_LAYERS),
            ("vision_config.embed_dim", v.embed_dim, MAX_WIDTH),
            ("vision_config.hidden_size", v.hidden_size, MAX_WIDTH),
            ("vision_config.num_heads", v.num_heads, MAX_HEADS),
            ("vision_config.in_channels", v.in_channels, MAX_FACTOR),
            ("vision_config.patch_size", v.patch_size, MAX_IMAGE_EDGE),
            (
                "vision_config.spatial_merge_size",
                v.spatial_merge_size,
                MAX_FACTOR,
            ),
            (
                "vision_config.temporal_patch_size",
                v.temporal_patch_size,
                MAX_FACTOR,
            ),
        ])?;
        if !(v.mlp_ratio.is_finite() && v.mlp_ratio > 0.0) || v.mlp_hidden_dim() > MAX_WIDTH {
            return Err((
                "vision_config.mlp_ratio".into(),
                format!(
                    "{} must be positive and keep embed_dim x mlp_ratio within {MAX_WIDTH}",
                    v.mlp_ratio
                ),
            ));
        }
        Ok(())
    }

    /// Checks the relations between fields that the model relies on.
    /// Returns the offending key and a message.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let bad = |k: &str, m: String| Err((k.to_string(), m));
        self.check_bounds()?;
        if self.model_type != "qwen2_vl" && self.model_type != "qwen2" {
            return bad(
                "model_type",
                format!(
                    "expected \"qwen2_vl\" (or \"qwen2\" for a text-only model), found {:?}",
                    self.model_type
                ),
            );
        }
        if self.num_attention_heads == 0
            || !self.hidden_size.is_multiple_of(self.num_attention_heads)
        {
            return bad(
                "num_attention_heads",
                format!(
                    "hidden_size {} is not divisible by num_attention_heads {}",
                    self.hidden_size, self.num_attention_heads
                ),
            );
        }
        let kv = self.num_key_value_heads();
        if kv == 0 || !self.num_attention_heads.is_multiple_of(kv) {
            return bad(
                "num_key_value_heads",
                format!(
                    "num_attention_heads {} is not a multiple of num_key_value_heads {kv}",
                    self.num_attention_heads
                ),
            );
        }
        if !self.head_dim().is_multiple_of(2) {
            return bad(
                "hidden_size",
                "the attention head width must be even".into(),
            );
        }
        let section: usize = self.mrope_section().iter().sum();
        if section * 2 != self.head_dim() {
            return bad(
                "rope_scaling.mrope_section",
                format!(
                    "sections {:?} sum to {section}, expected head_dim / 2 = {}",
                    self.mrope_section(),
                    self.head_dim() / 2
                ),
            );
        }
        if self.mrope_section().len() != 3 {
            return bad(
                "rope_scaling.mrope_section",
                "expected three sections (temporal, height, width)".into(),
            );
        }
        if self.hidden_act != "silu" {
            return bad(
                "hidden_act",
                format!("only \"silu\" is supported, found {:?}", self.hidden_act),
            );
        }
        if self.use_sliding_window {
            return bad(
                "use_sliding_window",
                "sliding-window attention is not supported".into(),
            );
        }
        if self.is_text_only() {
            // No vision tower, no image tokens to check.
            return Ok(());
        }
        let v = &self.vision_config;
        if v.num_heads == 0
            || !v.embed_dim.is_multiple_of(v.num_heads)
            || !v.head_dim().is_multiple_of(4)
        {
            return bad(
                "vision_config.num_heads",
                format!(
                    "embed_dim {} must split into heads whose width is a multiple of 4",
                    v.embed_dim
                ),
            );
        }
        if !matches!(v.hidden_act.as_str(), "quick_gelu" | "gelu" | "silu") {
            return bad(
                "vision_config.hidden_act",
                format!("unsupported activation {:?}", v.hidden_act),
            );
        }
        if v.hidden_size != self.hidden_size {
            return bad(
                "vision_config.hidden_size",
                format!(
                    "the merger writes {} wide tokens but the language model is {} wide",
                    v.hidden_size, self.hidden_size
                ),
            );
        }
        for (key, id) in [
            ("image_token_id", self.image_token_id),
            ("vision_start_token_id", self.vision_start_token_id),
            ("vision_end_token_id", self.vision_end_token_id),
        ] {
            if id as usize >= self.vocab_size {
                return bad(
                    key,
                    format!("id {id} is outside the vocabulary ({})", self.vocab_size),
                );
            }
        }
        Ok(())
    }

    /// Key/value heads, resolving `null` to the number of query heads.
    pub fn num_key_value_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    /// Width of one attention head of the language model.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// The M-RoPE section sizes; Qwen2-VL's `[16, 24, 24]` when absent.
    pub fn mrope_section(&self) -> Vec<usize> {
        match &self.rope_scaling {
            Some(r) => r.mrope_section.clone(),
            // A text-only Qwen2 model has 1D rotary positions: every rotary pair on the
            // temporal axis. (Text positions are equal on all three axes, so M-RoPE with any
            // section computes the same thing.)
            None if self.is_text_only() => vec![self.head_dim() / 2, 0, 0],
            None => vec![16, 24, 24],
        }
    }

    /// A plain Qwen2 language model (`model_type: qwen2`, no vision tower).
    pub fn is_text_only(&self) -> bool {
        self.model_type == "qwen2"
    }

    /// Every id that ends generation.
    pub fn eos_token_ids(&self) -> Vec<u32> {
        self.eos_token_id
            .as_ref()
            .map(EosTokenIds::to_vec)
            .unwrap_or_default()
    }
}

/// `generation_config.json` (the fields generation uses).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GenerationConfig {
    /// Beginning-of-sequence id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bos_token_id: Option<u32>,
    /// Id(s) that stop generation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eos_token_id: Option<EosTokenIds>,
    /// Padding id for batched generation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pad_token_id: Option<u32>,
    /// Whether the checkpoint's authors sample by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub do_sample: Option<bool>,
    /// Default sampling temperature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// Default nucleus mass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    /// Default top-k.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_k: Option<usize>,
    /// transformers version that wrote the file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transformers_version: Option<String>,
}

impl GenerationConfig {
    /// Reads `generation_config.json`; a missing file gives the default.
    pub fn from_file_or_default(path: &Path) -> Result<Self, FileError> {
        if path.exists() {
            read_json_file(path)
        } else {
            Ok(Self::default())
        }
    }

    /// Reads `generation_config.json` of a model folder; a missing file gives the default.
    pub fn from_model_files(files: &ModelFiles) -> Result<Self, FileError> {
        if files.exists("generation_config.json") {
            files.read_json("generation_config.json")
        } else {
            Ok(Self::default())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_config_takes_transformers_defaults() {
        let c: Qwen2VlConfig = serde_json::from_str(r#"{"unknown_key": 1}"#).unwrap();
        assert_eq!(c.vocab_size, 152064);
        assert_eq!(c.num_key_value_heads(), 64);
        assert_eq!(c.image_token_id, 151655);
        assert_eq!(c.mrope_section(), vec![16, 24, 24]);
        assert_eq!(c.vision_config.patch_dim(), 1176);
        assert_eq!(c.vision_config.mlp_hidden_dim(), 5120);
    }

    #[test]
    fn validation_names_the_key() {
        let mut c: Qwen2VlConfig = serde_json::from_str(
            r#"{"hidden_size": 64, "num_attention_heads": 4, "num_key_value_heads": 3,
                "rope_scaling": {"type": "mrope", "mrope_section": [4, 2, 2]},
                "vision_config": {"hidden_size": 64, "embed_dim": 32, "num_heads": 2}, "vocab_size": 160000}"#,
        )
        .unwrap();
        assert_eq!(c.validate().unwrap_err().0, "num_key_value_heads");
        c.num_key_value_heads = Some(2);
        assert!(c.validate().is_ok());
        c.rope_scaling.as_mut().unwrap().mrope_section = vec![4, 2, 1];
        assert_eq!(c.validate().unwrap_err().0, "rope_scaling.mrope_section");
    }
}
