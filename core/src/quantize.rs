//! Weight-only quantization (`--quantize q8|q4`): the linear layers of a loaded model keep
//! their weights as block-wise symmetric integers with one f32 scale per block, and dequantize
//! inside the matmul.
//!
//! Which weights: every `Linear` a family loads through [`crate::models::layers::WeightLoader`]
//! (attention and MLP projections of the decoder and the vision tower, the multimodal
//! projector). The token embedding and the LM head stay in the model's float dtype: a lookup
//! into a quantized table dequantizes the whole table on every call in Burn 0.22.1, and the
//! chunked cross-entropy multiplies by the head's dense weight.
//!
//! The scheme is Burn's (`QuantScheme`): `Q8S` (values in ±127) or `Q4S` (±7), packed into
//! `u32` words, blocks of [`BLOCK`] consecutive output features of one input row, f32 scales.
//! F32 scales and `u32` packing are what WGSL (every wgpu device, the browser included) can
//! read. The CPU backend stores the values unpacked, one byte each, so on the CPU `q4` holds as
//! much memory as `q8` and only changes the rounding; on wgpu `q4` is half of `q8`.

use std::fmt;
use std::str::FromStr;

use burn::tensor::quantization::{QuantScheme, QuantStore, QuantValue, ScaleDtype};
use burn::tensor::{DType, Tensor};
use serde::{Deserialize, Serialize};

/// Output features sharing one scale (GGUF's `Q8_0`/`Q4_0` and Burn's examples use 32). A
/// layer whose width is not a multiple of it stays dense (every released model's widths are
/// multiples; only tiny test shapes are not).
pub const BLOCK: usize = 32;

/// A weight-only quantization a user asks for (`--quantize`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", try_from = "String")]
pub enum Quantization {
    /// 8-bit symmetric integers (±127), one scale per block.
    Q8,
    /// 4-bit symmetric integers (±7), one scale per block.
    Q4,
}

impl Quantization {
    /// Every accepted spelling, for error messages.
    pub const NAMES: [&'static str; 2] = ["q8", "q4"];

    /// Bits per value (LLaMA-Factory's `quantization_bit`).
    pub fn bits(self) -> u8 {
        match self {
            Self::Q8 => 8,
            Self::Q4 => 4,
        }
    }

    /// Burn's value type for this choice.
    fn value(self) -> QuantValue {
        match self {
            Self::Q8 => QuantValue::Q8S,
            Self::Q4 => QuantValue::Q4S,
        }
    }

    /// Burn's scheme: blocks of [`BLOCK`] consecutive values, packed into `u32`, f32 scales.
    pub fn scheme(self) -> QuantScheme {
        QuantScheme::default()
            .with_value(self.value())
            .with_store(QuantStore::PackedU32(0))
            .per_block([BLOCK as u8], ScaleDtype::F32)
    }

    /// Whether a `[in, out]` weight can be quantized: its rows are whole blocks.
    pub fn applies_to(out_features: usize) -> bool {
        out_features.is_multiple_of(BLOCK)
    }

    /// Quantizes a `[in, out]` f32 weight (min-max calibration per block); a weight whose rows
    /// are not whole blocks is returned as it is.
    pub fn quantize(self, weight: Tensor<2>) -> Tensor<2> {
        if !Self::applies_to(weight.dims()[1]) {
            return weight;
        }
        let weight = if weight.dtype() == DType::F32 {
            weight
        } else {
            weight.cast(DType::F32)
        };
        weight.quantize_dynamic(&self.scheme())
    }
}

/// Whether `t` holds quantized values.
pub fn is_quantized<const D: usize>(t: &Tensor<D>) -> bool {
    matches!(t.dtype(), DType::QFloat(_))
}

impl Quantization {
    /// The quantization of a tensor's dtype (`None`: a float tensor, or quantized values
    /// other than ours).
    pub fn of_dtype(dtype: DType) -> Option<Self> {
        match dtype {
            DType::QFloat(scheme) => match scheme.value {
                QuantValue::Q8S => Some(Self::Q8),
                QuantValue::Q4S => Some(Self::Q4),
                _ => None,
            },
            _ => None,
        }
    }
}

impl FromStr for Quantization {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "q8" | "int8" => Ok(Self::Q8),
            "q4" | "int4" => Ok(Self::Q4),
            other => Err(format!(
                "unknown quantization {other:?}; expected one of {}",
                Self::NAMES.join(", ")
            )),
        }
    }
}

impl TryFrom<String> for Quantization {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl fmt::Display for Quantization {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Q8 => "q8",
            Self::Q4 => "q4",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::layers::{tensor_from_vec, tensor_to_vec};
    use burn::tensor::Device;

    #[test]
    fn only_whole_blocks_are_quantized() {
        let device = Device::flex();
        let narrow = tensor_from_vec(vec![0.5; 2 * 48], [2, 48], &device, DType::F32);
        assert_eq!(Quantization::Q8.quantize(narrow).dtype(), DType::F32);
        let wide = tensor_from_vec(vec![0.5; 2 * 64], [2, 64], &device, DType::F16);
        assert!(is_quantized(&Quantization::Q8.quantize(wide)));
    }

    #[test]
    fn spellings_parse_and_unknown_ones_are_named() {
        assert_eq!("q8".parse::<Quantization>(), Ok(Quantization::Q8));
        assert_eq!("int4".parse::<Quantization>(), Ok(Quantization::Q4));
        let err = "q3".parse::<Quantization>().unwrap_err();
        assert!(err.contains("\"q3\"") && err.contains("q8, q4"), "{err}");
        assert_eq!(Quantization::Q4.to_string(), "q4");
    }

    /// Each block's largest magnitude maps to the top code, so every value comes back within
    /// half a step (max/127 for q8, max/7 for q4) of itself.
    #[test]
    fn round_trip_error_is_at_most_half_a_step_per_block() {
        let device = Device::flex();
        let (rows, cols) = (3, 64);
        let values: Vec<f32> = (0..rows * cols)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 17.0 * if i % 64 < 32 { 1.0 } else { 0.01 })
            .collect();
        for (q, levels) in [(Quantization::Q8, 127.0f32), (Quantization::Q4, 7.0)] {
            let w = tensor_from_vec(values.clone(), [rows, cols], &device, DType::F32);
            let quantized = q.quantize(w);
            assert!(is_quantized(&quantized), "{q}");
            let back = tensor_to_vec(quantized.dequantize());
            for (block, (orig, got)) in values.chunks(32).zip(back.chunks(32)).enumerate() {
                let peak = orig.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                let step = peak / levels;
                for (a, b) in orig.iter().zip(got) {
                    assert!(
                        (a - b).abs() <= step * 0.5 + 1e-6,
                        "{q} block {block}: {a} came back as {b} (step {step})"
                    );
                }
            }
        }
    }
}
