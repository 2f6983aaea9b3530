//! The CLIP vision tower of LLaVA-NeXT and its two-layer projector.
//!
//! Ports `CLIPVisionEmbeddings`, `CLIPVisionTransformer` / `CLIPEncoderLayer` /
//! `CLIPAttention` / `CLIPMLP` (transformers 4.47 `modeling_clip.py`) and
//! `LlavaNextMultiModalProjector` (`modeling_llava_next.py`). Every crop is encoded on its own
//! (full attention within a crop); the tower runs only as many layers as the selected feature
//! layer needs.

use burn::module::{Module, Param};
use burn::tensor::{DType, Tensor};

use super::config::ClipVisionConfig;
use crate::io::FileError;
use crate::models::layers::{
    LayerNorm, Linear, WeightLoader, activation_by_name, in_dtype, softmax_f32, tensor_from_vec,
};

/// transformers: `CLIPAttention` (q/k/v/out with biases, q scaled before the product).
#[derive(Module, Debug)]
pub struct ClipAttention {
    /// Query projection.
    pub q_proj: Linear,
    /// Key projection.
    pub k_proj: Linear,
    /// Value projection.
    pub v_proj: Linear,
    /// Output projection.
    pub out_proj: Linear,
    /// Heads.
    pub num_heads: usize,
}

impl ClipAttention {
    /// `x`: `[crops, tokens, E]`.
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let [n, t, e] = x.dims();
        let h = self.num_heads;
        let d = e / h;
        let split = |y: Tensor<3>| y.reshape([n, t, h, d]).swap_dims(1, 2);
        let q = split(self.q_proj.forward(x.clone()) * (1.0 / (d as f64).sqrt()));
        let k = split(self.k_proj.forward(x.clone()));
        let v = split(self.v_proj.forward(x));
        let probs = softmax_f32(q.matmul(k.swap_dims(2, 3)), 3);
        let out = probs.matmul(v).swap_dims(1, 2).reshape([n, t, e]);
        self.out_proj.forward(out)
    }
}

/// transformers: `CLIPMLP` (fc1 → activation → fc2).
#[derive(Module, Debug)]
pub struct ClipMlp {
    /// `[E, mlp]`.
    pub fc1: Linear,
    /// `[mlp, E]`.
    pub fc2: Linear,
    /// Activation name (`quick_gelu`).
    pub act: String,
}

/// transformers: `CLIPEncoderLayer` (pre-norm attention and MLP).
#[derive(Module, Debug)]
pub struct ClipLayer {
    /// Norm before attention.
    pub layer_norm1: LayerNorm,
    /// Attention.
    pub self_attn: ClipAttention,
    /// Norm before the MLP.
    pub layer_norm2: LayerNorm,
    /// MLP.
    pub mlp: ClipMlp,
}

impl ClipLayer {
    /// One residual layer over `[crops, tokens, E]`.
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let x = x.clone() + self.self_attn.forward(self.layer_norm1.forward(x));
        let h = self.mlp.fc1.forward(self.layer_norm2.forward(x.clone()));
        x + self.mlp.fc2.forward(activation_by_name(&self.mlp.act, h))
    }
}

/// transformers: `CLIPVisionTransformer` (embeddings, `pre_layrnorm`, encoder, and the
/// `post_layernorm` that only the pooled CLS output uses — kept for export, never run here).
#[derive(Module, Debug)]
pub struct ClipVisionTower {
    /// The patch Conv2d as a matmul over `[C·P·P]` rows: `[C·P·P, E]`, no bias.
    pub patch_embedding: Linear,
    /// `[E]`.
    pub class_embedding: Param<Tensor<1>>,
    /// `[patches + 1, E]`.
    pub position_embedding: Param<Tensor<2>>,
    /// The norm before the encoder (transformers spells it `pre_layrnorm`).
    pub pre_layrnorm: LayerNorm,
    /// Encoder layers.
    pub layers: Vec<ClipLayer>,
    /// The norm of the pooled output.
    pub post_layernorm: LayerNorm,
    /// Side of a patch.
    pub patch_size: usize,
    /// Side of a crop.
    pub image_size: usize,
}

impl ClipVisionTower {
    /// Loads `{prefix}vision_model.*` (prefix `vision_tower.` in LLaVA-NeXT).
    pub fn load(
        cfg: &ClipVisionConfig,
        w: &mut WeightLoader<'_>,
        prefix: &str,
    ) -> Result<Self, FileError> {
        let p = format!("{prefix}vision_model");
        let e = cfg.hidden_size;
        let conv = w.tensor::<4>(
            &format!("{p}.embeddings.patch_embedding.weight"),
            [e, cfg.num_channels, cfg.patch_size, cfg.patch_size],
        )?;
        let patch_embedding = Linear::new(conv.reshape([e, cfg.patch_dim()]).transpose(), None);
        let class_embedding = w.tensor(&format!("{p}.embeddings.class_embedding"), [e])?;
        let position_embedding = w.tensor(
            &format!("{p}.embeddings.position_embedding.weight"),
            [cfg.num_positions(), e],
        )?;
        let eps = cfg.layer_norm_eps;
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for i in 0..cfg.num_hidden_layers {
            let l = format!("{p}.encoder.layers.{i}");
            let m = cfg.intermediate_size;
            layers.push(ClipLayer {
                layer_norm1: w.layer_norm(&format!("{l}.layer_norm1"), e, eps)?,
                self_attn: ClipAttention {
                    q_proj: w.linear(&format!("{l}.self_attn.q_proj"), e, e, true)?,
                    k_proj: w.linear(&format!("{l}.self_attn.k_proj"), e, e, true)?,
                    v_proj: w.linear(&format!("{l}.self_attn.v_proj"), e, e, true)?,
                    out_proj: w.linear(&format!("{l}.self_attn.out_proj"), e, e, true)?,
                    num_heads: cfg.num_attention_heads,
                },
                layer_norm2: w.layer_norm(&format!("{l}.layer_norm2"), e, eps)?,
                mlp: ClipMlp {
                    fc1: w.linear(&format!("{l}.mlp.fc1"), e, m, true)?,
                    fc2: w.linear(&format!("{l}.mlp.fc2"), m, e, true)?,
                    act: cfg.hidden_act.clone(),
                },
            });
        }
        Ok(Self {
            patch_embedding,
            class_embedding: Param::from_tensor(class_embedding),
            position_embedding: Param::from_tensor(position_embedding),
            pre_layrnorm: w.layer_norm(&format!("{p}.pre_layrnorm"), e, eps)?,
            layers,
            post_layernorm: w.layer_norm(&format!("{p}.post_layernorm"), e, eps)?,
            patch_size: cfg.patch_size,
            image_size: cfg.image_size,
        })
    }

    /// `hidden_states[layers_used]` of crops given as channel-first pixels
    /// (`[crops][C·S·S]` flattened): `[crops, patches + 1, E]`, the CLS token first.
    pub fn hidden_state(
        &self,
        pixels: &[f32],
        crops: usize,
        layers_used: usize,
        dtype: DType,
    ) -> Tensor<3> {
        let device = self.class_embedding.val().device();
        let (p, s) = (self.patch_size, self.image_size);
        let g = s / p;
        let rows = patchify(pixels, crops, s, p);
        let patch_dim = rows.len() / (crops * g * g);
        let rows = tensor_from_vec(rows, [crops * g * g, patch_dim], &device, dtype);
        let e = self.class_embedding.dims()[0];
        let patches = self
            .patch_embedding
            .forward(rows)
            .reshape([crops, g * g, e]);
        let cls = in_dtype(self.class_embedding.val(), dtype)
            .reshape([1, 1, e])
            .expand([crops, 1, e]);
        let positions = in_dtype(self.position_embedding.val(), dtype);
        let x = Tensor::cat(vec![cls, patches], 1) + positions.unsqueeze::<3>();
        let mut x = self.pre_layrnorm.forward(x);
        for layer in self.layers.iter().take(layers_used) {
            x = layer.forward(x);
        }
        x
    }
}

/// Cuts channel-first crops into `P×P` patches in raster order, each flattened as
/// `(channel, y, x)` — the order of the Conv2d kernel's inputs.
pub fn patchify(pixels: &[f32], crops: usize, size: usize, patch: usize) -> Vec<f32> {
    let g = size / patch;
    let channels = pixels.len() / (crops * size * size).max(1);
    let mut out = Vec::with_capacity(pixels.len());
    for n in 0..crops {
        let crop = &pixels[n * channels * size * size..(n + 1) * channels * size * size];
        for gy in 0..g {
            for gx in 0..g {
                for c in 0..channels {
                    for py in 0..patch {
                        let row = c * size * size + (gy * patch + py) * size + gx * patch;
                        out.extend_from_slice(&crop[row..row + patch]);
                    }
                }
            }
        }
    }
    out
}

/// transformers: `LlavaNextMultiModalProjector` (`linear_2(act(linear_1(x)))`).
#[derive(Module, Debug)]
pub struct Projector {
    /// Vision width → text width.
    pub linear_1: Linear,
    /// Text width → text width.
    pub linear_2: Linear,
    /// Activation (`gelu`).
    pub act: String,
}

impl Projector {
    /// Projects `[.., vision E]` features to the language model's width.
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        self.linear_2
            .forward(activation_by_name(&self.act, self.linear_1.forward(x)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patches_follow_the_conv_kernel_order() {
        // One 2-channel 4×4 crop whose value encodes (c, y, x) as c·100 + y·10 + x.
        let mut px = Vec::new();
        for c in 0..2 {
            for y in 0..4 {
                for x in 0..4 {
                    px.push((c * 100 + y * 10 + x) as f32);
                }
            }
        }
        let out = patchify(&px, 1, 4, 2);
        // Patch 1 (row 0, col 1): channel 0 rows (0,2..4), (1,2..4), then channel 1.
        assert_eq!(
            &out[8..16],
            &[2.0, 3.0, 12.0, 13.0, 102.0, 103.0, 112.0, 113.0]
        );
        // Patch 2 starts at (y 2, x 0).
        assert_eq!(out[16], 20.0);
    }
}
