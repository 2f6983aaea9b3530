//! `config.json` of a Llama model (transformers `LlamaConfig`), also the `text_config` of
//! LLaVA-NeXT: transformers' defaults for missing keys, unknown keys tolerated, `rope_scaling`
//! of type `default`, `linear` or `llama3`.

use serde::{Deserialize, Serialize};

use crate::models::decoder::DecoderConfig;
use crate::models::qwen2_vl::config::EosTokenIds;
use crate::models::rope::{Llama3Scaling, RopeSpec, inverse_frequencies, llama3_scaled};

fn default_model_type() -> String {
    "llama".into()
}
fn default_vocab_size() -> usize {
    32000
}
fn default_hidden_size() -> usize {
    4096
}
fn default_intermediate_size() -> usize {
    11008
}
fn default_layers() -> usize {
    32
}
fn default_heads() -> usize {
    32
}
fn default_act() -> String {
    "silu".into()
}
fn default_max_positions() -> usize {
    2048
}
fn default_initializer_range() -> f64 {
    0.02
}
fn default_rms_norm_eps() -> f64 {
    1e-6
}
fn default_rope_theta() -> f64 {
    10000.0
}
fn default_bos() -> Option<u32> {
    Some(1)
}
fn default_eos() -> Option<EosTokenIds> {
    Some(EosTokenIds::One(2))
}

/// `rope_scaling` of a Llama config (`type` is the older spelling of `rope_type`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LlamaRopeScaling {
    /// `default`, `linear` or `llama3` (others are refused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_type: Option<String>,
    /// The older key for `rope_type`.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Scaling factor (`linear`, `llama3`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub factor: Option<f64>,
    /// `llama3`: below this many wavelengths per original context, frequencies are divided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub low_freq_factor: Option<f64>,
    /// `llama3`: above this, frequencies are kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub high_freq_factor: Option<f64>,
    /// `llama3`: the context the model was pre-trained with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_max_position_embeddings: Option<f64>,
}

impl LlamaRopeScaling {
    /// `rope_type`, else `type`, else `default`.
    pub fn name(&self) -> &str {
        self.rope_type
            .as_deref()
            .or(self.kind.as_deref())
            .unwrap_or("default")
    }
}

/// transformers `LlamaConfig`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LlamaConfig {
    /// `["LlamaForCausalLM"]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub architectures: Option<Vec<String>>,
    /// `"llama"`.
    #[serde(default = "default_model_type")]
    pub model_type: String,
    /// Vocabulary rows of the embedding and head (the checkpoint's tensor shapes win).
    #[serde(default = "default_vocab_size")]
    pub vocab_size: usize,
    /// Width of the model.
    #[serde(default = "default_hidden_size")]
    pub hidden_size: usize,
    /// Width of the SwiGLU MLP.
    #[serde(default = "default_intermediate_size")]
    pub intermediate_size: usize,
    /// Decoder layers.
    #[serde(default = "default_layers")]
    pub num_hidden_layers: usize,
    /// Query heads.
    #[serde(default = "default_heads")]
    pub num_attention_heads: usize,
    /// Key/value heads; `null` means the query heads.
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    /// Width of one head; `null` means `hidden_size / num_attention_heads`.
    #[serde(default)]
    pub head_dim: Option<usize>,
    /// MLP activation (`silu`).
    #[serde(default = "default_act")]
    pub hidden_act: String,
    /// Longest sequence.
    #[serde(default = "default_max_positions")]
    pub max_position_embeddings: usize,
    /// Standard deviation of random initialization.
    #[serde(default = "default_initializer_range")]
    pub initializer_range: f64,
    /// Epsilon of the RMS norms.
    #[serde(default = "default_rms_norm_eps")]
    pub rms_norm_eps: f64,
    /// Whether the head shares the embedding matrix.
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// RoPE base (500000 for Llama 3).
    #[serde(default = "default_rope_theta")]
    pub rope_theta: f64,
    /// RoPE scaling (`llama3` for Llama 3.1 / 3.2).
    #[serde(default)]
    pub rope_scaling: Option<LlamaRopeScaling>,
    /// Bias on q/k/v/o.
    #[serde(default)]
    pub attention_bias: bool,
    /// Bias on the MLP projections.
    #[serde(default)]
    pub mlp_bias: bool,
    /// Tensor-parallel slices of the original pre-training (only 1 is supported).
    #[serde(default)]
    pub pretraining_tp: Option<usize>,
    /// Beginning-of-sequence id.
    #[serde(default = "default_bos")]
    pub bos_token_id: Option<u32>,
    /// End-of-sequence id(s).
    #[serde(default = "default_eos")]
    pub eos_token_id: Option<EosTokenIds>,
    /// Padding id.
    #[serde(default)]
    pub pad_token_id: Option<u32>,
    /// Storage dtype, informational.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub torch_dtype: Option<String>,
    /// transformers version that wrote the file, informational.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transformers_version: Option<String>,
}

impl Default for LlamaConfig {
    fn default() -> Self {
        serde_json::from_str("{}").expect("defaults")
    }
}

impl LlamaConfig {
    /// Key/value heads, resolving `null`.
    pub fn num_key_value_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    /// Width of one head.
    pub fn head_dim(&self) -> usize {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads.max(1))
    }

    /// Every id that ends generation.
    pub fn eos_token_ids(&self) -> Vec<u32> {
        self.eos_token_id
            .as_ref()
            .map(EosTokenIds::to_vec)
            .unwrap_or_default()
    }

    /// Checks what the model relies on; returns the offending key (relative to this config)
    /// and a message.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let bad = |k: &str, m: String| Err((k.to_string(), m));
        crate::limits::DecoderSizes {
            vocab_size: self.vocab_size,
            hidden_size: self.hidden_size,
            intermediate_size: self.intermediate_size,
            num_hidden_layers: self.num_hidden_layers,
            num_attention_heads: self.num_attention_heads,
            num_key_value_heads: self.num_key_value_heads(),
            head_dim: self.head_dim(),
            max_position_embeddings: self.max_position_embeddings,
        }
        .check()?;
        if self.num_attention_heads == 0 || self.hidden_size == 0 {
            return bad(
                "num_attention_heads",
                "hidden_size and num_attention_heads must be positive".into(),
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
        let d = self.head_dim();
        if d == 0 || !d.is_multiple_of(2) {
            return bad(
                "head_dim",
                format!("the head width {d} must be even and positive"),
            );
        }
        if self.head_dim.is_none() && !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return bad(
                "num_attention_heads",
                format!(
                    "hidden_size {} is not divisible by num_attention_heads {}",
                    self.hidden_size, self.num_attention_heads
                ),
            );
        }
        if self.hidden_act != "silu" {
            return bad(
                "hidden_act",
                format!("only \"silu\" is supported, found {:?}", self.hidden_act),
            );
        }
        if self.pretraining_tp.unwrap_or(1) != 1 {
            return bad(
                "pretraining_tp",
                "only pretraining_tp = 1 is supported".into(),
            );
        }
        self.rope().map(|_| ())
    }

    /// The facts every stage needs of a model whose language model this is.
    pub fn model_spec(
        &self,
        family: &'static str,
        model_type: &str,
        rope: RopeSpec,
    ) -> crate::models::ModelSpec {
        crate::models::ModelSpec {
            family,
            model_type: model_type.to_string(),
            vocab_size: self.vocab_size,
            hidden_size: self.hidden_size,
            max_positions: self.max_position_embeddings,
            rope,
            eos_token_ids: self.eos_token_ids(),
        }
    }

    /// The decoder shapes.
    pub fn decoder_config(&self) -> DecoderConfig {
        DecoderConfig {
            vocab_size: self.vocab_size,
            hidden_size: self.hidden_size,
            intermediate_size: self.intermediate_size,
            num_layers: self.num_hidden_layers,
            num_heads: self.num_attention_heads,
            num_kv_heads: self.num_key_value_heads(),
            head_dim: self.head_dim(),
            rms_norm_eps: self.rms_norm_eps,
            qkv_bias: self.attention_bias,
            o_bias: self.attention_bias,
            mlp_bias: self.mlp_bias,
            tie_word_embeddings: self.tie_word_embeddings,
        }
    }

    /// The rotary frequencies (1-D positions): default, `linear` (divided by `factor`) or
    /// `llama3`; any other scaling is a named error.
    pub fn rope(&self) -> Result<RopeSpec, (String, String)> {
        let base = inverse_frequencies(self.head_dim(), self.rope_theta);
        let Some(scaling) = &self.rope_scaling else {
            return Ok(RopeSpec::one_dimensional(base));
        };
        let missing = |k: &str| {
            (
                format!("rope_scaling.{k}"),
                format!("required by rope_type {:?}", scaling.name()),
            )
        };
        let inv = match scaling.name() {
            "default" => base,
            "linear" => {
                let factor = scaling.factor.ok_or_else(|| missing("factor"))? as f32;
                base.iter().map(|f| f / factor).collect()
            }
            "llama3" => llama3_scaled(
                &base,
                &Llama3Scaling {
                    factor: scaling.factor.ok_or_else(|| missing("factor"))?,
                    low_freq_factor: scaling
                        .low_freq_factor
                        .ok_or_else(|| missing("low_freq_factor"))?,
                    high_freq_factor: scaling
                        .high_freq_factor
                        .ok_or_else(|| missing("high_freq_factor"))?,
                    original_max_position_embeddings: scaling
                        .original_max_position_embeddings
                        .ok_or_else(|| missing("original_max_position_embeddings"))?,
                },
            ),
            other => {
                return Err((
                    "rope_scaling.rope_type".into(),
                    format!("{other:?} is not supported (default, linear and llama3 are)"),
                ));
            }
        };
        Ok(RopeSpec::one_dimensional(inv))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_transformers_and_validation_names_keys() {
        let c = LlamaConfig::default();
        assert_eq!(
            (c.vocab_size, c.hidden_size, c.num_key_value_heads()),
            (32000, 4096, 32)
        );
        assert_eq!(c.head_dim(), 128);
        let mut bad: LlamaConfig = serde_json::from_str(
            r#"{"hidden_size": 64, "num_attention_heads": 4, "num_key_value_heads": 3}"#,
        )
        .unwrap();
        assert_eq!(bad.validate().unwrap_err().0, "num_key_value_heads");
        bad.num_key_value_heads = Some(2);
        bad.rope_scaling = Some(serde_json::from_str(r#"{"type": "yarn", "factor": 4}"#).unwrap());
        assert_eq!(bad.validate().unwrap_err().0, "rope_scaling.rope_type");
        bad.rope_scaling =
            Some(serde_json::from_str(r#"{"rope_type": "llama3", "factor": 8}"#).unwrap());
        assert_eq!(
            bad.validate().unwrap_err().0,
            "rope_scaling.low_freq_factor"
        );
    }
}
