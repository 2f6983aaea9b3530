//! The Qwen2 language model inside Qwen2-VL: embeddings, decoder layers with grouped-query
//! attention (q/k/v biases) and multimodal RoPE, SwiGLU MLP, RMSNorm, and the LM head.
//!
//! Ports `Qwen2VLModel`, `Qwen2VLDecoderLayer`, `Qwen2VLAttention` and `Qwen2MLP`
//! (transformers 4.47 `modeling_qwen2_vl.py`).

use burn::module::{Module, Param};
use burn::tensor::activation::{silu, softmax};
use burn::tensor::{Int, Tensor};

use super::config::Qwen2VlConfig;
use crate::io::FileError;
use crate::models::layers::{Linear, RmsNorm, WeightLoader, apply_rotary};

/// Keys and values of earlier positions for one layer, `[batch, kv_heads, len, head_dim]`.
#[derive(Debug, Clone)]
pub struct LayerCache {
    /// Cached keys (after rotary).
    pub keys: Tensor<4>,
    /// Cached values.
    pub values: Tensor<4>,
}

/// The KV cache of a whole model (one entry per decoder layer).
#[derive(Debug, Clone, Default)]
pub struct KvCache {
    /// Per-layer caches, empty before the first forward.
    pub layers: Vec<Option<LayerCache>>,
}

impl KvCache {
    /// Number of cached positions.
    pub fn len(&self) -> usize {
        self.layers
            .first()
            .and_then(|l| l.as_ref())
            .map_or(0, |l| l.keys.dims()[2])
    }

    /// Whether nothing is cached yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Keeps only the given batch rows (for dropping finished sequences).
    pub fn select_rows(&mut self, rows: Tensor<1, Int>) {
        for layer in self.layers.iter_mut().flatten() {
            layer.keys = layer.keys.clone().select(0, rows.clone());
            layer.values = layer.values.clone().select(0, rows.clone());
        }
    }
}

/// Rotary tables and attention mask for one forward pass.
#[derive(Debug, Clone)]
pub struct AttentionInputs {
    /// `[batch, 1, len, head_dim]`.
    pub cos: Tensor<4>,
    /// `[batch, 1, len, head_dim]`.
    pub sin: Tensor<4>,
    /// Additive mask `[batch, 1, len, cached + len]` (0 or a large negative).
    pub mask: Tensor<4>,
}

/// transformers: `Qwen2VLAttention` (GQA with q/k/v biases and M-RoPE).
#[derive(Module, Debug)]
pub struct Attention {
    /// Query projection.
    pub q_proj: Linear,
    /// Key projection.
    pub k_proj: Linear,
    /// Value projection.
    pub v_proj: Linear,
    /// Output projection (no bias).
    pub o_proj: Linear,
    /// Query heads.
    pub num_heads: usize,
    /// Key/value heads.
    pub num_kv_heads: usize,
    /// Head width.
    pub head_dim: usize,
}

impl Attention {
    /// `x`: `[batch, len, hidden]`.
    pub fn forward(
        &self,
        x: Tensor<3>,
        inputs: &AttentionInputs,
        cache: Option<&mut Option<LayerCache>>,
    ) -> Tensor<3> {
        let [b, l, _] = x.dims();
        let (h, kvh, d) = (self.num_heads, self.num_kv_heads, self.head_dim);
        let q = self
            .q_proj
            .forward(x.clone())
            .reshape([b, l, h, d])
            .swap_dims(1, 2);
        let k = self
            .k_proj
            .forward(x.clone())
            .reshape([b, l, kvh, d])
            .swap_dims(1, 2);
        let v = self
            .v_proj
            .forward(x)
            .reshape([b, l, kvh, d])
            .swap_dims(1, 2);
        let q = apply_rotary(q, inputs.cos.clone(), inputs.sin.clone());
        let k = apply_rotary(k, inputs.cos.clone(), inputs.sin.clone());
        let (k, v) = match cache {
            Some(slot) => {
                let (k, v) = match slot.take() {
                    Some(prev) => (
                        Tensor::cat(vec![prev.keys, k], 2),
                        Tensor::cat(vec![prev.values, v], 2),
                    ),
                    None => (k, v),
                };
                *slot = Some(LayerCache {
                    keys: k.clone(),
                    values: v.clone(),
                });
                (k, v)
            }
            None => (k, v),
        };
        let k = repeat_kv(k, h / kvh);
        let v = repeat_kv(v, h / kvh);
        let scores = q.matmul(k.swap_dims(2, 3)) * (1.0 / (d as f64).sqrt()) + inputs.mask.clone();
        let probs = softmax(scores, 3);
        let out = probs.matmul(v).swap_dims(1, 2).reshape([b, l, h * d]);
        self.o_proj.forward(out)
    }
}

/// transformers `repeat_kv`: each key/value head serves `n_rep` query heads.
fn repeat_kv(x: Tensor<4>, n_rep: usize) -> Tensor<4> {
    if n_rep == 1 {
        return x;
    }
    let [b, kvh, t, d] = x.dims();
    x.unsqueeze_dim::<5>(2)
        .expand([b, kvh, n_rep, t, d])
        .reshape([b, kvh * n_rep, t, d])
}

/// transformers: `Qwen2MLP` (SwiGLU: `down(silu(gate(x)) · up(x))`).
#[derive(Module, Debug)]
pub struct Mlp {
    /// Gate projection.
    pub gate_proj: Linear,
    /// Up projection.
    pub up_proj: Linear,
    /// Down projection.
    pub down_proj: Linear,
}

impl Mlp {
    /// Applies the MLP to the last dimension.
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        self.down_proj
            .forward(silu(self.gate_proj.forward(x.clone())) * self.up_proj.forward(x))
    }
}

/// transformers: `Qwen2VLDecoderLayer`.
#[derive(Module, Debug)]
pub struct DecoderLayer {
    /// Norm before attention.
    pub input_layernorm: RmsNorm,
    /// Attention.
    pub self_attn: Attention,
    /// Norm before the MLP.
    pub post_attention_layernorm: RmsNorm,
    /// MLP.
    pub mlp: Mlp,
}

impl DecoderLayer {
    /// One pre-norm residual layer.
    pub fn forward(
        &self,
        x: Tensor<3>,
        inputs: &AttentionInputs,
        cache: Option<&mut Option<LayerCache>>,
    ) -> Tensor<3> {
        let x = x.clone()
            + self
                .self_attn
                .forward(self.input_layernorm.forward(x), inputs, cache);
        x.clone() + self.mlp.forward(self.post_attention_layernorm.forward(x))
    }
}

/// transformers: `Qwen2VLModel` plus the `lm_head` of `Qwen2VLForConditionalGeneration`.
#[derive(Module, Debug)]
pub struct TextModel {
    /// `[vocab, hidden]`.
    pub embed_tokens: Param<Tensor<2>>,
    /// Decoder layers.
    pub layers: Vec<DecoderLayer>,
    /// Final norm.
    pub norm: RmsNorm,
    /// Untied LM head `[hidden, vocab]`; `None` when tied to the embeddings.
    pub lm_head: Option<Linear>,
}

impl TextModel {
    /// Loads `model.*` and `lm_head.*`.
    pub fn load(cfg: &Qwen2VlConfig, w: &mut WeightLoader<'_>) -> Result<Self, FileError> {
        let hd = cfg.hidden_size;
        let (heads, kv, d) = (
            cfg.num_attention_heads,
            cfg.num_key_value_heads(),
            cfg.head_dim(),
        );
        let norm = |w: &mut WeightLoader<'_>, name: &str| -> Result<RmsNorm, FileError> {
            Ok(RmsNorm {
                weight: Param::from_tensor(w.tensor(name, [hd])?),
                eps: cfg.rms_norm_eps,
            })
        };
        let embed_tokens = w.tensor("model.embed_tokens.weight", [cfg.vocab_size, hd])?;
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for i in 0..cfg.num_hidden_layers {
            let p = format!("model.layers.{i}");
            layers.push(DecoderLayer {
                input_layernorm: norm(w, &format!("{p}.input_layernorm.weight"))?,
                self_attn: Attention {
                    q_proj: w.linear(&format!("{p}.self_attn.q_proj"), hd, heads * d, true)?,
                    k_proj: w.linear(&format!("{p}.self_attn.k_proj"), hd, kv * d, true)?,
                    v_proj: w.linear(&format!("{p}.self_attn.v_proj"), hd, kv * d, true)?,
                    o_proj: w.linear(&format!("{p}.self_attn.o_proj"), heads * d, hd, false)?,
                    num_heads: heads,
                    num_kv_heads: kv,
                    head_dim: d,
                },
                post_attention_layernorm: norm(w, &format!("{p}.post_attention_layernorm.weight"))?,
                mlp: Mlp {
                    gate_proj: w.linear(
                        &format!("{p}.mlp.gate_proj"),
                        hd,
                        cfg.intermediate_size,
                        false,
                    )?,
                    up_proj: w.linear(
                        &format!("{p}.mlp.up_proj"),
                        hd,
                        cfg.intermediate_size,
                        false,
                    )?,
                    down_proj: w.linear(
                        &format!("{p}.mlp.down_proj"),
                        cfg.intermediate_size,
                        hd,
                        false,
                    )?,
                },
            });
        }
        let final_norm = norm(w, "model.norm.weight")?;
        // Tied checkpoints omit lm_head.weight; an untied config without it is an error.
        let lm_head = if cfg.tie_word_embeddings && !w.contains("lm_head.weight") {
            None
        } else {
            Some(w.linear("lm_head", hd, cfg.vocab_size, false)?)
        };
        Ok(Self {
            embed_tokens: Param::from_tensor(embed_tokens),
            layers,
            norm: final_norm,
            lm_head,
        })
    }

    /// Looks up token embeddings `[batch, len, hidden]`.
    pub fn embed(&self, ids: Tensor<2, Int>) -> Tensor<3> {
        burn::tensor::module::embedding(self.embed_tokens.val(), ids)
    }

    /// Runs the decoder stack and the final norm over input embeddings.
    pub fn decode(
        &self,
        mut x: Tensor<3>,
        inputs: &AttentionInputs,
        mut cache: Option<&mut KvCache>,
    ) -> Tensor<3> {
        if let Some(c) = cache.as_deref_mut()
            && c.layers.len() != self.layers.len()
        {
            c.layers = vec![None; self.layers.len()];
        }
        for (i, layer) in self.layers.iter().enumerate() {
            let slot = cache.as_deref_mut().map(|c| &mut c.layers[i]);
            x = layer.forward(x, inputs, slot);
        }
        self.norm.forward(x)
    }

    /// The LM head as a plain `[hidden, vocab]` weight (tied: the embedding table transposed),
    /// or `None` when it has a bias or an adapter. The chunked cross-entropy multiplies by it.
    pub fn head_weight(&self) -> Option<Tensor<2>> {
        match &self.lm_head {
            Some(head) if head.bias.is_none() && head.lora.is_none() => Some(head.weight.val()),
            Some(_) => None,
            None => Some(self.embed_tokens.val().transpose()),
        }
    }

    /// Projects hidden states to vocabulary logits.
    pub fn logits<const D: usize>(&self, hidden: Tensor<D>) -> Tensor<D> {
        match &self.lm_head {
            Some(head) => head.forward(hidden),
            None => burn::tensor::module::linear(hidden, self.embed_tokens.val().transpose(), None),
        }
    }
}
