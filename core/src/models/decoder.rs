//! The decoder-only language model shared by the families: token embeddings, pre-norm decoder
//! layers with grouped-query attention and rotary positions, a SwiGLU MLP, RMSNorm, and the LM
//! head. Qwen2 (inside Qwen2-VL) and Llama (alone, and inside LLaVA-NeXT) differ only in which
//! projections carry a bias and in their rotary frequencies, which the caller's
//! [`AttentionInputs`] carry.
//!
//! Ports `LlamaModel` / `LlamaDecoderLayer` / `LlamaAttention` / `LlamaMLP`
//! (transformers 4.47 `modeling_llama.py`) and `Qwen2VLModel` / `Qwen2VLDecoderLayer` /
//! `Qwen2VLAttention` / `Qwen2MLP` (`modeling_qwen2_vl.py`).

use burn::module::{Module, Param};
use burn::tensor::activation::silu;
use burn::tensor::{DType, Int, Tensor};

use crate::io::FileError;
use crate::models::init::{Init, LayoutEntry};
use crate::models::layers::{Linear, RmsNorm, WeightLoader, apply_rotary, in_dtype, softmax_f32};

/// The shapes and bias choices of a decoder, from the family's config.
#[derive(Debug, Clone, PartialEq)]
pub struct DecoderConfig {
    /// Embedding rows (and LM head columns).
    pub vocab_size: usize,
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Width of the SwiGLU MLP.
    pub intermediate_size: usize,
    /// Decoder layers.
    pub num_layers: usize,
    /// Query heads.
    pub num_heads: usize,
    /// Key/value heads.
    pub num_kv_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// Epsilon of the RMS norms.
    pub rms_norm_eps: f64,
    /// Bias on q/k/v (Qwen2: yes; Llama: `attention_bias`).
    pub qkv_bias: bool,
    /// Bias on the output projection (Llama: `attention_bias`; Qwen2: no).
    pub o_bias: bool,
    /// Bias on the MLP projections (Llama `mlp_bias`).
    pub mlp_bias: bool,
    /// Whether the LM head is the embedding matrix.
    pub tie_word_embeddings: bool,
}

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

/// transformers: `LlamaAttention` / `Qwen2VLAttention` (GQA, rotary positions from the
/// caller's tables: 1-D for Llama, M-RoPE for Qwen2-VL).
#[derive(Module, Debug)]
pub struct Attention {
    /// Query projection.
    pub q_proj: Linear,
    /// Key projection.
    pub k_proj: Linear,
    /// Value projection.
    pub v_proj: Linear,
    /// Output projection.
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
        let probs = softmax_f32(scores, 3);
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

/// transformers: `LlamaMLP` / `Qwen2MLP` (SwiGLU: `down(silu(gate(x)) · up(x))`).
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

/// transformers: `LlamaDecoderLayer` / `Qwen2VLDecoderLayer`.
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

/// transformers: `LlamaModel` / `Qwen2VLModel` plus the `lm_head` of the causal-LM wrapper.
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
    /// Loads `{prefix}model.*` and `{prefix}lm_head.*` (prefix `""` for a plain causal LM,
    /// `"language_model."` inside LLaVA-NeXT).
    pub fn load(
        cfg: &DecoderConfig,
        w: &mut WeightLoader<'_>,
        prefix: &str,
    ) -> Result<Self, FileError> {
        let hd = cfg.hidden_size;
        let (heads, kv, d) = (cfg.num_heads, cfg.num_kv_heads, cfg.head_dim);
        let im = cfg.intermediate_size;
        let norm = |w: &mut WeightLoader<'_>, name: &str| -> Result<RmsNorm, FileError> {
            Ok(RmsNorm {
                weight: Param::from_tensor(w.tensor(name, [hd])?),
                eps: cfg.rms_norm_eps,
            })
        };
        let embed_tokens = w.tensor(
            &format!("{prefix}model.embed_tokens.weight"),
            [cfg.vocab_size, hd],
        )?;
        let mut layers = Vec::with_capacity(cfg.num_layers);
        for i in 0..cfg.num_layers {
            let p = format!("{prefix}model.layers.{i}");
            layers.push(DecoderLayer {
                input_layernorm: norm(w, &format!("{p}.input_layernorm.weight"))?,
                self_attn: Attention {
                    q_proj: w.linear(
                        &format!("{p}.self_attn.q_proj"),
                        hd,
                        heads * d,
                        cfg.qkv_bias,
                    )?,
                    k_proj: w.linear(&format!("{p}.self_attn.k_proj"), hd, kv * d, cfg.qkv_bias)?,
                    v_proj: w.linear(&format!("{p}.self_attn.v_proj"), hd, kv * d, cfg.qkv_bias)?,
                    o_proj: w.linear(
                        &format!("{p}.self_attn.o_proj"),
                        heads * d,
                        hd,
                        cfg.o_bias,
                    )?,
                    num_heads: heads,
                    num_kv_heads: kv,
                    head_dim: d,
                },
                post_attention_layernorm: norm(w, &format!("{p}.post_attention_layernorm.weight"))?,
                mlp: Mlp {
                    gate_proj: w.linear(&format!("{p}.mlp.gate_proj"), hd, im, cfg.mlp_bias)?,
                    up_proj: w.linear(&format!("{p}.mlp.up_proj"), hd, im, cfg.mlp_bias)?,
                    down_proj: w.linear(&format!("{p}.mlp.down_proj"), im, hd, cfg.mlp_bias)?,
                },
            });
        }
        let final_norm = norm(w, &format!("{prefix}model.norm.weight"))?;
        // Tied checkpoints omit lm_head.weight; an untied config without it is an error.
        let head = format!("{prefix}lm_head");
        let lm_head = if cfg.tie_word_embeddings && !w.contains(&format!("{head}.weight")) {
            None
        } else {
            Some(w.dense_linear(&head, hd, cfg.vocab_size, false)?)
        };
        Ok(Self {
            embed_tokens: Param::from_tensor(embed_tokens),
            layers,
            norm: final_norm,
            lm_head,
        })
    }

    /// Calls `f` with the module path (`{prefix}.layers.0.self_attn.q_proj`) and layer of every
    /// linear layer, in a fixed order (the head last).
    pub fn for_each_linear(&mut self, prefix: &str, f: &mut dyn FnMut(&str, &mut Linear)) {
        for (i, layer) in self.layers.iter_mut().enumerate() {
            let p = format!("{prefix}.layers.{i}");
            let a = &mut layer.self_attn;
            f(&format!("{p}.self_attn.q_proj"), &mut a.q_proj);
            f(&format!("{p}.self_attn.k_proj"), &mut a.k_proj);
            f(&format!("{p}.self_attn.v_proj"), &mut a.v_proj);
            f(&format!("{p}.self_attn.o_proj"), &mut a.o_proj);
            let m = &mut layer.mlp;
            f(&format!("{p}.mlp.gate_proj"), &mut m.gate_proj);
            f(&format!("{p}.mlp.up_proj"), &mut m.up_proj);
            f(&format!("{p}.mlp.down_proj"), &mut m.down_proj);
        }
        if let Some(head) = self.lm_head.as_mut() {
            f(&format!("{prefix}.lm_head"), head);
        }
    }

    /// Looks up token embeddings `[batch, len, hidden]` in `dtype` (the model's compute dtype;
    /// a trainable table is kept in f32).
    pub fn embed(&self, ids: Tensor<2, Int>, dtype: DType) -> Tensor<3> {
        in_dtype(
            burn::tensor::module::embedding(self.embed_tokens.val(), ids),
            dtype,
        )
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
            None => {
                let table = in_dtype(self.embed_tokens.val(), hidden.dtype());
                burn::tensor::module::linear(hidden, table.transpose(), None)
            }
        }
    }
}

/// Every checkpoint key of a decoder under `prefix` (`""`, or `"language_model."`), with
/// PyTorch shapes and initializers, in a stable order: the embedding, then per layer the two
/// norms, q/k/v/o (with the biases the config has) and the MLP, then the final norm and an
/// untied head.
pub fn decoder_layout(cfg: &DecoderConfig, prefix: &str, std: f64) -> Vec<LayoutEntry> {
    let mut out = Vec::new();
    let mut push =
        |name: String, shape: Vec<usize>, init: Init| out.push(LayoutEntry { name, shape, init });
    let h = cfg.hidden_size;
    let (heads, kv, d) = (cfg.num_heads, cfg.num_kv_heads, cfg.head_dim);
    let im = cfg.intermediate_size;
    push(
        format!("{prefix}model.embed_tokens.weight"),
        vec![cfg.vocab_size, h],
        Init::Normal(std),
    );
    for i in 0..cfg.num_layers {
        let p = format!("{prefix}model.layers.{i}");
        push(format!("{p}.input_layernorm.weight"), vec![h], Init::Ones);
        push(
            format!("{p}.post_attention_layernorm.weight"),
            vec![h],
            Init::Ones,
        );
        for (n, out_dim) in [
            ("q_proj", heads * d),
            ("k_proj", kv * d),
            ("v_proj", kv * d),
        ] {
            push(
                format!("{p}.self_attn.{n}.weight"),
                vec![out_dim, h],
                Init::Normal(std),
            );
            if cfg.qkv_bias {
                push(
                    format!("{p}.self_attn.{n}.bias"),
                    vec![out_dim],
                    Init::Zeros,
                );
            }
        }
        push(
            format!("{p}.self_attn.o_proj.weight"),
            vec![h, heads * d],
            Init::Normal(std),
        );
        if cfg.o_bias {
            push(format!("{p}.self_attn.o_proj.bias"), vec![h], Init::Zeros);
        }
        for (n, shape) in [
            ("gate_proj", [im, h]),
            ("up_proj", [im, h]),
            ("down_proj", [h, im]),
        ] {
            push(
                format!("{p}.mlp.{n}.weight"),
                shape.to_vec(),
                Init::Normal(std),
            );
            if cfg.mlp_bias {
                push(format!("{p}.mlp.{n}.bias"), vec![shape[0]], Init::Zeros);
            }
        }
    }
    push(format!("{prefix}model.norm.weight"), vec![h], Init::Ones);
    if !cfg.tie_word_embeddings {
        push(
            format!("{prefix}lm_head.weight"),
            vec![cfg.vocab_size, h],
            Init::Normal(std),
        );
    }
    out
}
