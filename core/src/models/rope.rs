//! Rotary position embeddings shared by the families, in transformers' rotate-half
//! convention: positions on up to three axes (Qwen2-VL's M-RoPE; one axis for everyone else),
//! inverse frequencies (default, or Llama 3's `llama3` scaling), and the cos/sin tables.
//!
//! transformers 4.47: `modeling_rope_utils._compute_default_rope_parameters`,
//! `_compute_llama3_parameters`, `LlamaRotaryEmbedding`, `Qwen2VLRotaryEmbedding`.

use burn::tensor::{DType, Device, Tensor};

use crate::models::layers::tensor_from_vec;

/// Position ids of one sequence on the three rotary axes (temporal, height, width for M-RoPE;
/// 1-D families use equal axes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RopePositions {
    /// `[3][len]`; padded positions hold 1, as transformers leaves them.
    pub axes: [Vec<i64>; 3],
    /// The position the next generated token takes (max over real positions + 1).
    pub next_position: i64,
}

/// How a family turns positions into rotary angles.
#[derive(Debug, Clone, PartialEq)]
pub struct RopeSpec {
    /// One inverse frequency per rotary pair (`head_dim / 2`).
    pub inv_freq: Vec<f32>,
    /// For each of the `head_dim` channels, the position axis that drives it.
    pub axes: Vec<usize>,
}

impl RopeSpec {
    /// 1-D rotary positions (every channel on axis 0) with these frequencies.
    pub fn one_dimensional(inv_freq: Vec<f32>) -> Self {
        let head_dim = inv_freq.len() * 2;
        Self {
            inv_freq,
            axes: vec![0; head_dim],
        }
    }
}

/// `rope_scaling` of type `llama3` (Llama 3.1 / 3.2).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Llama3Scaling {
    /// `factor` (8 in Llama 3.1/3.2).
    pub factor: f64,
    /// `low_freq_factor` (1).
    pub low_freq_factor: f64,
    /// `high_freq_factor` (4).
    pub high_freq_factor: f64,
    /// `original_max_position_embeddings` (8192).
    pub original_max_position_embeddings: f64,
}

/// transformers `_compute_llama3_parameters`: long wavelengths are divided by `factor`, short
/// ones kept, and the band between them interpolated; in f32 as torch computes it.
pub fn llama3_scaled(inv_freq: &[f32], s: &Llama3Scaling) -> Vec<f32> {
    let factor = s.factor as f32;
    let (low, high) = (s.low_freq_factor as f32, s.high_freq_factor as f32);
    let old = s.original_max_position_embeddings as f32;
    let low_wavelen = (s.original_max_position_embeddings / s.low_freq_factor) as f32;
    let high_wavelen = (s.original_max_position_embeddings / s.high_freq_factor) as f32;
    inv_freq
        .iter()
        .map(|&f| {
            let wavelen = (2.0 * std::f64::consts::PI) as f32 / f;
            if wavelen > low_wavelen {
                f / factor
            } else if wavelen < high_wavelen {
                f
            } else {
                let smooth = (old / wavelen - low) / (high - low);
                (1.0 - smooth) * f / factor + smooth * f
            }
        })
        .collect()
}

/// 1-D positions of a (possibly left-padded) row: the index among its real tokens, as
/// transformers derives `position_ids` from the attention mask (padding holds 1).
pub fn sequential_positions(mask: &[bool]) -> RopePositions {
    let mut axis = Vec::with_capacity(mask.len());
    let mut next = 0i64;
    for &real in mask {
        if real {
            axis.push(next);
            next += 1;
        } else {
            axis.push(1);
        }
    }
    RopePositions {
        axes: [axis.clone(), axis.clone(), axis],
        next_position: next,
    }
}

/// Inverse frequencies of the LM rotary embedding, computed in f32 as transformers does.
pub fn inverse_frequencies(head_dim: usize, theta: f64) -> Vec<f32> {
    (0..head_dim / 2)
        .map(|i| 1.0f32 / (theta as f32).powf((2 * i) as f32 / head_dim as f32))
        .collect()
}

/// For each of the `head_dim` channels, which axis (0 = t, 1 = h, 2 = w) drives its angle:
/// the sections split the first half and repeat for the second (`mrope_section * 2`).
pub fn section_axes(mrope_section: &[usize], head_dim: usize) -> Vec<usize> {
    let mut axes = Vec::with_capacity(head_dim);
    for _ in 0..2 {
        for (axis, &n) in mrope_section.iter().enumerate() {
            axes.extend(std::iter::repeat_n(axis % 3, n));
        }
    }
    axes.truncate(head_dim);
    axes
}

/// Cos/sin tables `[batch, 1, len, head_dim]` for the given per-row positions.
pub fn rope_tables(
    rows: &[[Vec<i64>; 3]],
    inv_freq: &[f32],
    axes: &[usize],
    device: &Device,
    dtype: DType,
) -> (Tensor<4>, Tensor<4>) {
    let batch = rows.len();
    let len = rows.first().map_or(0, |r| r[0].len());
    let head_dim = axes.len();
    let half = inv_freq.len();
    let mut cos = Vec::with_capacity(batch * len * head_dim);
    let mut sin = Vec::with_capacity(batch * len * head_dim);
    for row in rows {
        for i in 0..len {
            for (d, &axis) in axes.iter().enumerate() {
                let angle = row[axis].get(i).copied().unwrap_or(0) as f32 * inv_freq[d % half];
                cos.push(angle.cos());
                sin.push(angle.sin());
            }
        }
    }
    (
        tensor_from_vec(cos, [batch, 1, len, head_dim], device, dtype),
        tensor_from_vec(sin, [batch, 1, len, head_dim], device, dtype),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_repeat_for_both_halves() {
        assert_eq!(section_axes(&[2, 1, 1], 8), vec![0, 0, 1, 2, 0, 0, 1, 2]);
    }

    #[test]
    fn sequential_positions_skip_padding() {
        let p = sequential_positions(&[false, false, true, true, true]);
        assert_eq!(p.axes[0], vec![1, 1, 0, 1, 2]);
        assert_eq!(p.axes[1], p.axes[0]);
        assert_eq!(p.next_position, 3);
    }

    #[test]
    fn llama3_scaling_keeps_high_divides_low_and_blends_between() {
        let s = Llama3Scaling {
            factor: 8.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 64.0,
        };
        // wavelengths 2π/f: ~6.3 (< 16: kept), ~31.4 (blended), ~628 (> 64: divided).
        let inv = [1.0f32, 0.2, 0.01];
        let out = llama3_scaled(&inv, &s);
        assert_eq!(out[0], 1.0);
        assert_eq!(out[2], 0.01 / 8.0);
        let wavelen = (2.0 * std::f64::consts::PI) as f32 / 0.2;
        let smooth = (64.0 / wavelen - 1.0) / 3.0;
        assert_eq!(out[1], (1.0 - smooth) * 0.2 / 8.0 + smooth * 0.2);
        assert!(out[1] > 0.2 / 8.0 && out[1] < 0.2);
    }
}
