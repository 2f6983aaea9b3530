//! The Qwen2-VL vision tower: patch embedding, 2D-rotary ViT blocks and the 2×2 patch merger.
//!
//! Ports `Qwen2VisionTransformerPretrainedModel` (transformers 4.47 `modeling_qwen2_vl.py`).
//! Attention is full within each image and never crosses images: the tower runs attention
//! image by image, which is what transformers' `cu_seqlens` block mask computes.

use burn::module::Module;
use burn::tensor::{DType, Device, Tensor};

use super::config::VisionConfig;
use crate::io::FileError;
use crate::models::layers::{
    LayerNorm, Linear, WeightLoader, activation_by_name, apply_rotary, softmax_f32, tensor_from_vec,
};

/// `[rows, cols]` of an image in patches, plus frames (`grid_thw` in transformers).
pub type GridThw = [usize; 3];

/// transformers: `VisionAttention` (qkv → 2D rotary → softmax attention → proj).
#[derive(Module, Debug)]
pub struct VisionAttention {
    /// Fused query/key/value projection `[E, 3E]`.
    pub qkv: Linear,
    /// Output projection `[E, E]`.
    pub proj: Linear,
    /// Attention heads.
    pub num_heads: usize,
}

impl VisionAttention {
    /// `x`: `[n, E]` patches of one image; `cos`/`sin`: `[n, 1, head_dim]`.
    pub fn forward(&self, x: Tensor<2>, cos: Tensor<3>, sin: Tensor<3>) -> Tensor<2> {
        let [n, e] = x.dims();
        let h = self.num_heads;
        let d = e / h;
        let qkv = self.qkv.forward(x).reshape([n, 3, h, d]);
        let q = qkv.clone().narrow(1, 0, 1).reshape([n, h, d]);
        let k = qkv.clone().narrow(1, 1, 1).reshape([n, h, d]);
        let v = qkv.narrow(1, 2, 1).reshape([n, h, d]);
        let q = apply_rotary(q, cos.clone(), sin.clone()).swap_dims(0, 1);
        let k = apply_rotary(k, cos, sin).swap_dims(0, 1);
        let v = v.swap_dims(0, 1);
        let scores = q.matmul(k.swap_dims(1, 2)) * (1.0 / (d as f64).sqrt());
        let probs = softmax_f32(scores, 2);
        let out = probs.matmul(v).swap_dims(0, 1).reshape([n, e]);
        self.proj.forward(out)
    }
}

/// transformers: `VisionMlp` (fc1 → activation → fc2).
#[derive(Module, Debug)]
pub struct VisionMlp {
    /// `[E, mlp]`.
    pub fc1: Linear,
    /// `[mlp, E]`.
    pub fc2: Linear,
    /// Activation name (`quick_gelu`).
    pub act: String,
}

impl VisionMlp {
    /// Applies the MLP row-wise.
    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        self.fc2
            .forward(activation_by_name(&self.act, self.fc1.forward(x)))
    }
}

/// transformers: `Qwen2VLVisionBlock` (pre-norm attention and MLP with residuals).
#[derive(Module, Debug)]
pub struct VisionBlock {
    /// Norm before attention.
    pub norm1: LayerNorm,
    /// Norm before the MLP.
    pub norm2: LayerNorm,
    /// Self-attention.
    pub attn: VisionAttention,
    /// Feed-forward.
    pub mlp: VisionMlp,
}

impl VisionBlock {
    /// One block over the patches of one image.
    pub fn forward(&self, x: Tensor<2>, cos: Tensor<3>, sin: Tensor<3>) -> Tensor<2> {
        let x = x.clone() + self.attn.forward(self.norm1.forward(x), cos, sin);
        x.clone() + self.mlp.forward(self.norm2.forward(x))
    }
}

/// transformers: `PatchMerger` (LayerNorm, fold 2×2 patches, MLP with exact GELU).
#[derive(Module, Debug)]
pub struct PatchMerger {
    /// `ln_q`.
    pub ln_q: LayerNorm,
    /// `mlp.0`: `[E·m², E·m²]`.
    pub fc1: Linear,
    /// `mlp.2`: `[E·m², hidden]`.
    pub fc2: Linear,
}

impl PatchMerger {
    /// `[n, E]` → `[n / m², hidden]`.
    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        let [n, e] = x.dims();
        let folded_width = self.fc1.weight.dims()[0];
        let x = self
            .ln_q
            .forward(x)
            .reshape([n * e / folded_width, folded_width]);
        self.fc2
            .forward(burn::tensor::activation::gelu(self.fc1.forward(x)))
    }
}

/// transformers: `Qwen2VisionTransformerPretrainedModel`.
#[derive(Module, Debug)]
pub struct VisionTower {
    /// The Conv3d patch embedding as a matmul over `[C·T·P·P]` rows: `[1176, E]`, no bias.
    pub patch_embed: Linear,
    /// Transformer blocks.
    pub blocks: Vec<VisionBlock>,
    /// Patch merger.
    pub merger: PatchMerger,
    /// Side of the merged square (2).
    pub spatial_merge_size: usize,
    /// Width of one attention head.
    pub head_dim: usize,
}

impl VisionTower {
    /// Loads `visual.*` from a checkpoint.
    pub fn load(cfg: &VisionConfig, w: &mut WeightLoader<'_>) -> Result<Self, FileError> {
        let e = cfg.embed_dim;
        let patch_dim = cfg.patch_dim();
        // Conv3d weight [E, C, T, P, P] flattens to [E, C·T·P·P] in the processor's row order.
        let conv = w.tensor::<5>(
            "visual.patch_embed.proj.weight",
            [
                e,
                cfg.in_channels,
                cfg.temporal_patch_size,
                cfg.patch_size,
                cfg.patch_size,
            ],
        )?;
        let patch_embed = Linear::new(conv.reshape([e, patch_dim]).transpose(), None);
        let mut blocks = Vec::with_capacity(cfg.depth);
        for i in 0..cfg.depth {
            let p = format!("visual.blocks.{i}");
            blocks.push(VisionBlock {
                norm1: w.layer_norm(&format!("{p}.norm1"), e, 1e-6)?,
                norm2: w.layer_norm(&format!("{p}.norm2"), e, 1e-6)?,
                attn: VisionAttention {
                    qkv: w.linear(&format!("{p}.attn.qkv"), e, 3 * e, true)?,
                    proj: w.linear(&format!("{p}.attn.proj"), e, e, true)?,
                    num_heads: cfg.num_heads,
                },
                mlp: VisionMlp {
                    fc1: w.linear(&format!("{p}.mlp.fc1"), e, cfg.mlp_hidden_dim(), true)?,
                    fc2: w.linear(&format!("{p}.mlp.fc2"), cfg.mlp_hidden_dim(), e, true)?,
                    act: cfg.hidden_act.clone(),
                },
            });
        }
        let folded = cfg.merger_hidden_dim();
        let merger = PatchMerger {
            ln_q: w.layer_norm("visual.merger.ln_q", e, 1e-6)?,
            fc1: w.linear("visual.merger.mlp.0", folded, folded, true)?,
            fc2: w.linear("visual.merger.mlp.2", folded, cfg.hidden_size, true)?,
        };
        Ok(Self {
            patch_embed,
            blocks,
            merger,
            spatial_merge_size: cfg.spatial_merge_size,
            head_dim: cfg.head_dim(),
        })
    }

    /// Encodes the patches of several images (`pixel_values` rows in processor order, `grids`
    /// in the same order) into merged image tokens `[Σ t·h·w / m², hidden]`.
    pub fn forward(&self, pixel_values: Tensor<2>, grids: &[GridThw]) -> Tensor<2> {
        let device = pixel_values.device();
        let dtype = pixel_values.dtype();
        let x = self.patch_embed.forward(pixel_values);
        let mut outputs = Vec::with_capacity(grids.len());
        let mut start = 0;
        for grid in grids {
            let n = grid[0] * grid[1] * grid[2];
            let mut xi = x.clone().narrow(0, start, n);
            start += n;
            let (cos, sin) =
                vision_rotary_tables(grid, self.spatial_merge_size, self.head_dim, &device, dtype);
            for block in &self.blocks {
                xi = block.forward(xi, cos.clone(), sin.clone());
            }
            outputs.push(self.merger.forward(xi));
        }
        Tensor::cat(outputs, 0)
    }
}

/// (row, column) of every patch in the order the processor emits them: merge blocks in
/// raster order, and the `m×m` patches inside each block in raster order; repeated per frame.
/// transformers: `Qwen2VisionTransformerPretrainedModel.rot_pos_emb` (its `hpos_ids`/`wpos_ids`).
pub fn patch_positions(grid: &GridThw, merge: usize) -> Vec<(usize, usize)> {
    let [t, h, w] = *grid;
    let mut out = Vec::with_capacity(t * h * w);
    for _ in 0..t {
        for bh in 0..h / merge {
            for bw in 0..w / merge {
                for ih in 0..merge {
                    for iw in 0..merge {
                        out.push((bh * merge + ih, bw * merge + iw));
                    }
                }
            }
        }
    }
    out
}

/// Cos/sin tables `[n, 1, head_dim]` of the vision 2D rotary embedding
/// (transformers `VisionRotaryEmbedding` with dim = head_dim / 2, theta 10000, and
/// `apply_rotary_pos_emb_vision`): the first quarter of the frequencies follow the row, the
/// second quarter the column, and the table is repeated for the rotate-half pairs.
pub fn vision_rotary_tables(
    grid: &GridThw,
    merge: usize,
    head_dim: usize,
    device: &Device,
    dtype: DType,
) -> (Tensor<3>, Tensor<3>) {
    let rot_dim = head_dim / 2;
    let inv_freq: Vec<f32> = (0..rot_dim / 2)
        .map(|i| 1.0f32 / 10000f32.powf((2 * i) as f32 / rot_dim as f32))
        .collect();
    let positions = patch_positions(grid, merge);
    let n = positions.len();
    let mut cos = Vec::with_capacity(n * head_dim);
    let mut sin = Vec::with_capacity(n * head_dim);
    for (row, col) in positions {
        let angles: Vec<f32> = inv_freq
            .iter()
            .map(|f| row as f32 * f)
            .chain(inv_freq.iter().map(|f| col as f32 * f))
            .collect();
        for _ in 0..2 {
            cos.extend(angles.iter().map(|a| a.cos()));
            sin.extend(angles.iter().map(|a| a.sin()));
        }
    }
    (
        tensor_from_vec(cos, [n, 1, head_dim], device, dtype),
        tensor_from_vec(sin, [n, 1, head_dim], device, dtype),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patch_order_groups_merge_blocks() {
        let p = patch_positions(&[1, 2, 4], 2);
        assert_eq!(
            p,
            vec![
                (0, 0),
                (0, 1),
                (1, 0),
                (1, 1),
                (0, 2),
                (0, 3),
                (1, 2),
                (1, 3)
            ]
        );
        assert_eq!(patch_positions(&[2, 2, 2], 2).len(), 8);
    }
}
