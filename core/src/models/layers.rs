//! Building blocks shared by model families, written on Burn's tensor API.
//!
//! This module and [`WeightLoader`] are the thin layer between our models and Burn: a Burn
//! upgrade should mostly touch these files. Weights are kept in the orientation our matmuls
//! want (`Linear` holds `[in, out]`); the loader transposes Hugging Face's `[out, in]`.

use std::collections::BTreeSet;

use burn::module::{Module, Param};
use burn::tensor::activation;
use burn::tensor::{DType, Device, Tensor, TensorData};

use super::checkpoint::CheckpointReader;
use crate::io::FileError;
use crate::models::quantized_store;
use crate::quantize::{BLOCK, Quantization, is_quantized};

/// Creates a float tensor from row-major values on `device` with `dtype`.
pub fn tensor_from_vec<const D: usize>(
    values: Vec<f32>,
    shape: [usize; D],
    device: &Device,
    dtype: DType,
) -> Tensor<D> {
    Tensor::from_data(TensorData::new(values, shape), (device, dtype))
}

/// `t` in `dtype` (itself when it already is). Trainable weights are kept in f32 over a
/// half-precision base and meet the activations through this cast; its backward pass casts the
/// gradient back to f32.
pub fn in_dtype<const D: usize>(t: Tensor<D>, dtype: DType) -> Tensor<D> {
    if t.dtype() == dtype { t } else { t.cast(dtype) }
}

/// Softmax over `dim` computed in f32 and returned in the input's dtype (transformers' eager
/// attention: `softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)`).
pub fn softmax_f32<const D: usize>(x: Tensor<D>, dim: usize) -> Tensor<D> {
    let dtype = x.dtype();
    in_dtype(activation::softmax(in_dtype(x, DType::F32), dim), dtype)
}

/// Reads a float tensor back as f32 values (row-major).
pub fn tensor_to_vec<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("f32 tensor data")
}

/// Reads a float tensor back as f32 values without blocking (the only way on WebGPU in a
/// browser, where a readback completes in a later turn of the event loop).
pub async fn tensor_to_vec_async<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data_async()
        .await
        .expect("tensor readback")
        .convert::<f32>()
        .try_into_vec::<f32>()
        .expect("f32 tensor data")
}

/// Loads named tensors from a checkpoint onto a device, tracking which keys were used.
pub struct WeightLoader<'a> {
    reader: &'a CheckpointReader,
    device: Device,
    dtype: DType,
    quantization: Option<Quantization>,
    used: BTreeSet<String>,
}

impl<'a> WeightLoader<'a> {
    /// A loader putting tensors on `device` in `dtype` (F32 or F16).
    pub fn new(reader: &'a CheckpointReader, device: &Device, dtype: DType) -> Self {
        Self {
            reader,
            device: device.clone(),
            dtype,
            quantization: None,
            used: BTreeSet::new(),
        }
    }

    /// The same loader quantizing the weights of [`Self::linear`] layers (`None`: dense).
    pub fn with_quantization(mut self, quantization: Option<Quantization>) -> Self {
        self.quantization = quantization;
        self
    }

    /// The device tensors go to.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Whether the checkpoint has `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.reader.contains(name)
    }

    /// A tensor of exactly `shape`.
    pub fn tensor<const D: usize>(
        &mut self,
        name: &str,
        shape: [usize; D],
    ) -> Result<Tensor<D>, FileError> {
        let values = self.reader.read_f32(name, &shape)?;
        self.used.insert(name.to_string());
        Ok(tensor_from_vec(values, shape, &self.device, self.dtype))
    }

    /// A `[out, in]` PyTorch linear weight, returned as `[in, out]`.
    pub fn linear_weight(
        &mut self,
        name: &str,
        out_features: usize,
        in_features: usize,
    ) -> Result<Tensor<2>, FileError> {
        self.linear_weight_in(name, out_features, in_features, self.dtype)
    }

    fn linear_weight_in(
        &mut self,
        name: &str,
        out_features: usize,
        in_features: usize,
        dtype: DType,
    ) -> Result<Tensor<2>, FileError> {
        let values = self.reader.read_f32(name, &[out_features, in_features])?;
        self.used.insert(name.to_string());
        let transposed = transpose_2d(&values, out_features, in_features);
        Ok(tensor_from_vec(
            transposed,
            [in_features, out_features],
            &self.device,
            dtype,
        ))
    }

    /// A `nn.Linear` at `prefix` (`prefix.weight`, and `prefix.bias` when `bias`), its weight
    /// quantized when the loader quantizes (the bias stays in the float dtype).
    pub fn linear(
        &mut self,
        prefix: &str,
        in_features: usize,
        out_features: usize,
        bias: bool,
    ) -> Result<Linear, FileError> {
        let quantization = self
            .quantization
            .filter(|_| Quantization::applies_to(out_features));
        self.linear_quantized(prefix, in_features, out_features, bias, quantization)
    }

    fn bias(
        &mut self,
        prefix: &str,
        out_features: usize,
        present: bool,
    ) -> Result<Option<Param<Tensor<1>>>, FileError> {
        if !present {
            return Ok(None);
        }
        let bias = self.tensor(&format!("{prefix}.bias"), [out_features])?;
        Ok(Some(Param::from_tensor(bias)))
    }

    /// A `nn.Linear` at `prefix` kept in the float dtype whatever the loader's quantization
    /// (the LM head: the chunked cross-entropy multiplies by its dense weight).
    pub fn dense_linear(
        &mut self,
        prefix: &str,
        in_features: usize,
        out_features: usize,
        bias: bool,
    ) -> Result<Linear, FileError> {
        self.linear_quantized(prefix, in_features, out_features, bias, None)
    }

    /// A `nn.Linear` at `prefix` whose weight is quantized with `quantization` (dense when
    /// `None`).
    fn linear_quantized(
        &mut self,
        prefix: &str,
        in_features: usize,
        out_features: usize,
        bias: bool,
        quantization: Option<Quantization>,
    ) -> Result<Linear, FileError> {
        let name = format!("{prefix}.weight");
        let stored_values = format!("{prefix}.{}", quantized_store::VALUES_SUFFIX);
        let weight = match quantization {
            _ if self.reader.contains(&stored_values) => {
                if quantization.is_none() && self.quantization.is_some() {
                    return Err(FileError::tensor(
                        &self.reader.file_of(&stored_values),
                        &stored_values,
                        "this layer is kept in the float dtype (an LM head, or a layer narrower \
                         than a block), but the folder stores it quantized",
                    ));
                }
                let weight = self.stored_weight(prefix, in_features, out_features)?;
                Param::from_tensor(weight).set_require_grad(false)
            }
            None => Param::from_tensor(self.linear_weight(&name, out_features, in_features)?),
            Some(q) => {
                // Quantized from the checkpoint's values, never from a half-precision
                // rounding of them.
                let weight = self.linear_weight_in(&name, out_features, in_features, DType::F32)?;
                Param::from_tensor(q.quantize(weight)).set_require_grad(false)
            }
        };
        Ok(Linear {
            weight,
            bias: self.bias(prefix, out_features, bias)?,
            lora: None,
        })
    }

    /// The quantized `[in, out]` weight of the linear layer at `prefix` of a quantized
    /// folder, from its stored values and scales.
    fn stored_weight(
        &mut self,
        prefix: &str,
        in_features: usize,
        out_features: usize,
    ) -> Result<Tensor<2>, FileError> {
        let values_name = format!("{prefix}.{}", quantized_store::VALUES_SUFFIX);
        let scales_name = format!("{prefix}.{}", quantized_store::SCALES_SUFFIX);
        let file = self.reader.file_of(&values_name);
        let Some(q) = self.reader.stored_quantization() else {
            return Err(FileError::tensor(
                &file,
                &values_name,
                "a quantized weight, but config.json has no quantization_config saying how it \
                 is stored",
            ));
        };
        if !Quantization::applies_to(out_features) {
            return Err(FileError::tensor(
                &file,
                &values_name,
                format!("{out_features} output features are not whole blocks of {BLOCK}"),
            ));
        }
        let (dtype, shape) = quantized_store::values_layout(q, in_features, out_features);
        let values = self.reader.read_bytes(&values_name, dtype, &shape)?;
        let scales_shape = quantized_store::scales_shape(in_features, out_features);
        let scales = self.reader.read_f32(&scales_name, &scales_shape)?;
        if let Some(bad) = scales.iter().find(|s| !s.is_finite() || **s < 0.0) {
            return Err(FileError::tensor(
                &self.reader.file_of(&scales_name),
                &scales_name,
                format!("holds the scale {bad}; block scales are finite and not negative"),
            ));
        }
        self.used.insert(values_name);
        self.used.insert(scales_name);
        Ok(quantized_store::tensor_from_stored(
            q,
            &values,
            &scales,
            [in_features, out_features],
            &self.device,
        ))
    }

    /// A `nn.LayerNorm` at `prefix` (`prefix.weight`, `prefix.bias`).
    pub fn layer_norm(
        &mut self,
        prefix: &str,
        dim: usize,
        eps: f64,
    ) -> Result<LayerNorm, FileError> {
        Ok(LayerNorm {
            weight: Param::from_tensor(self.tensor(&format!("{prefix}.weight"), [dim])?),
            bias: Param::from_tensor(self.tensor(&format!("{prefix}.bias"), [dim])?),
            eps,
        })
    }

    /// Checkpoint keys never read (informational; extra keys are not an error).
    pub fn unused_keys(&self) -> Vec<String> {
        self.reader
            .names()
            .into_iter()
            .filter(|n| !self.used.contains(n))
            .collect()
    }
}

/// Transposes a row-major `[rows, cols]` matrix.
pub fn transpose_2d(values: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0; values.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = values[r * cols + c];
        }
    }
    out
}

/// A dense layer `y = x·W + b` with `W` stored `[in, out]` (PyTorch `nn.Linear`), plus an
/// optional low-rank adapter while training with LoRA.
#[derive(Module, Debug)]
pub struct Linear {
    /// `[in, out]`.
    pub weight: Param<Tensor<2>>,
    /// `[out]`.
    pub bias: Option<Param<Tensor<1>>>,
    /// A LoRA adapter added to the output (only while training; merged on export).
    pub lora: Option<LoraAdapter>,
}

impl Linear {
    /// A plain dense layer from its weight (`[in, out]`) and optional bias.
    pub fn new(weight: Tensor<2>, bias: Option<Tensor<1>>) -> Self {
        Self {
            weight: Param::from_tensor(weight),
            bias: bias.map(Param::from_tensor),
            lora: None,
        }
    }

    /// Applies the layer to the last dimension of `x`, in `x`'s dtype (an f32 master weight
    /// over half-precision activations is cast to theirs; a quantized weight is dequantized
    /// to it inside the matmul). An adapter sees `x` in its own dtype, as PEFT casts the input
    /// to `lora_A`'s, and its output is cast back.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let dtype = x.dtype();
        let weight = self.weight.val();
        let weight = if is_quantized(&weight) {
            weight
        } else {
            in_dtype(weight, dtype)
        };
        let bias = self.bias.as_ref().map(|b| in_dtype(b.val(), dtype));
        match &self.lora {
            None => burn::tensor::module::linear(x, weight, bias),
            Some(lora) => {
                let dense = burn::tensor::module::linear(x.clone(), weight, bias);
                let adapter_dtype = lora.a.val().dtype();
                dense + in_dtype(lora.forward(in_dtype(x, adapter_dtype)), dtype)
            }
        }
    }

    /// Input width.
    pub fn in_features(&self) -> usize {
        self.weight.dims()[0]
    }

    /// Output width.
    pub fn out_features(&self) -> usize {
        self.weight.dims()[1]
    }
}

/// A LoRA adapter `(α/r)·(dropout(x)·A)·B` with `A: [in, r]`, `B: [r, out]` (PEFT
/// `lora.Linear`, which stores them transposed as `lora_A.weight: [r, in]`,
/// `lora_B.weight: [out, r]`). Two thin matmuls: the backward pass never builds a
/// weight-sized gradient for the frozen dense weight.
#[derive(Module, Debug)]
pub struct LoraAdapter {
    /// Down projection `[in, r]`.
    pub a: Param<Tensor<2>>,
    /// Up projection `[r, out]`, zero at initialization.
    pub b: Param<Tensor<2>>,
    /// Dropout on the adapter's input (PEFT `lora_dropout`); off outside training.
    pub dropout: burn::nn::Dropout,
    /// `α / r`.
    pub scale: f64,
}

impl LoraAdapter {
    /// The adapter's contribution to the layer output.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let x = self.dropout.forward(x);
        let down = burn::tensor::module::linear(x, self.a.val(), None);
        burn::tensor::module::linear(down, self.b.val(), None) * self.scale
    }

    /// Rank `r`.
    pub fn rank(&self) -> usize {
        self.a.dims()[1]
    }

    /// The dense update `(α/r)·A·B` (`[in, out]`) the adapter adds to the weight.
    pub fn delta_weight(&self) -> Tensor<2> {
        self.a.val().matmul(self.b.val()) * self.scale
    }
}

/// Root-mean-square norm (transformers `Qwen2RMSNorm`): `w · x / sqrt(mean(x²) + eps)`.
#[derive(Module, Debug)]
pub struct RmsNorm {
    /// Per-channel scale.
    pub weight: Param<Tensor<1>>,
    /// Added to the mean square.
    pub eps: f64,
}

impl RmsNorm {
    /// Normalizes the last dimension, in f32 whatever `x`'s dtype (as transformers upcasts),
    /// returning `x`'s dtype.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let dtype = x.dtype();
        let normed = crate::kernels::rms_norm(
            in_dtype(x, DType::F32),
            in_dtype(self.weight.val(), DType::F32),
            self.eps,
        );
        in_dtype(normed, dtype)
    }
}

/// Layer norm with affine weight and bias (PyTorch `nn.LayerNorm`, biased variance).
#[derive(Module, Debug)]
pub struct LayerNorm {
    /// Per-channel scale.
    pub weight: Param<Tensor<1>>,
    /// Per-channel shift.
    pub bias: Param<Tensor<1>>,
    /// Added to the variance.
    pub eps: f64,
}

impl LayerNorm {
    /// Normalizes the last dimension, in f32 whatever `x`'s dtype, returning `x`'s dtype.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let dtype = x.dtype();
        let x = in_dtype(x, DType::F32);
        let mean = x.clone().mean_dim(D - 1);
        let centered = x - mean;
        let var = centered.clone().square().mean_dim(D - 1);
        let normed = centered / (var + self.eps).sqrt();
        let weight = in_dtype(self.weight.val(), DType::F32);
        let bias = in_dtype(self.bias.val(), DType::F32);
        in_dtype(normed * weight.unsqueeze() + bias.unsqueeze(), dtype)
    }
}

/// Activation functions by their transformers `ACT2FN` names.
pub fn activation_by_name<const D: usize>(name: &str, x: Tensor<D>) -> Tensor<D> {
    match name {
        // transformers QuickGELUActivation: x · sigmoid(1.702 x)
        "quick_gelu" => x.clone() * activation::sigmoid(x * 1.702),
        "gelu" => activation::gelu(x),
        "silu" | "swish" => activation::silu(x),
        other => panic!("activation {other:?} was accepted by config validation but is unknown"),
    }
}

/// transformers `rotate_half`: `[x1, x2] → [-x2, x1]` over the last dimension.
pub fn rotate_half<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    let last = x.dims()[D - 1];
    let half = last / 2;
    let x1 = x.clone().narrow(D - 1, 0, half);
    let x2 = x.narrow(D - 1, half, half);
    Tensor::cat(vec![x2.neg(), x1], D - 1)
}

/// Rotary embedding in rotate-half form: `x·cos + rotate_half(x)·sin` (the fused kernel on the
/// wgpu path, see [`crate::kernels::rotary`]).
pub fn apply_rotary<const D: usize>(x: Tensor<D>, cos: Tensor<D>, sin: Tensor<D>) -> Tensor<D> {
    crate::kernels::rotary(x, cos, sin)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transpose_is_exact() {
        let m = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        assert_eq!(transpose_2d(&m, 2, 3), vec![1.0, 4.0, 2.0, 5.0, 3.0, 6.0]);
    }

    #[test]
    fn norms_match_hand_computation() {
        let device = Device::flex();
        let x = tensor_from_vec(vec![1.0, 2.0, 3.0, 4.0], [1, 4], &device, DType::F32);
        let w = tensor_from_vec(vec![1.0, 0.5, 2.0, 1.0], [4], &device, DType::F32);
        let rms = RmsNorm {
            weight: Param::from_tensor(w.clone()),
            eps: 1e-6,
        };
        let out = tensor_to_vec(rms.forward(x.clone()));
        let r = ((1.0f32 + 4.0 + 9.0 + 16.0) / 4.0 + 1e-6).sqrt();
        let want = [1.0 / r, 0.5 * 2.0 / r, 2.0 * 3.0 / r, 4.0 / r];
        for (a, b) in out.iter().zip(want) {
            assert!((a - b).abs() < 1e-6);
        }
        let ln = LayerNorm {
            weight: Param::from_tensor(w),
            bias: Param::from_tensor(tensor_from_vec(vec![0.1; 4], [4], &device, DType::F32)),
            eps: 1e-6,
        };
        let out = tensor_to_vec(ln.forward(x));
        let sd = (1.25f32 + 1e-6).sqrt();
        let want = [
            -1.5 / sd + 0.1,
            0.5 * -0.5 / sd + 0.1,
            2.0 * 0.5 / sd + 0.1,
            1.5 / sd + 0.1,
        ];
        for (a, b) in out.iter().zip(want) {
            assert!((a - b).abs() < 1e-5, "{a} {b}");
        }
    }

    #[test]
    fn rotate_half_moves_halves() {
        let device = Device::flex();
        let x = tensor_from_vec(vec![1.0, 2.0, 3.0, 4.0], [1, 4], &device, DType::F32);
        assert_eq!(tensor_to_vec(rotate_half(x)), vec![-3.0, -4.0, 1.0, 2.0]);
    }
}
