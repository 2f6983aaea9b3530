//! Fused ops with hand-written WGSL kernels on the wgpu path (`shaders/`), registered through
//! burn's backend-extension API.
//!
//! Each op is one method of [`FusedOps`]. Its routing per backend:
//! - **Cube** (wgpu: Vulkan, Metal, DX12): the WGSL kernel in `shaders/` ([`cube`]) for f32
//!   tensors, and f16 where the device has `shader-f16`; other dtypes take the composite ops.
//! - **Fusion** (burn's lazy fusion over Cube, what `Device::wgpu` is): the kernel is registered as
//!   an opaque custom operation. Fusion still fuses the element-wise ops before and after it, but
//!   not across it (see ARCHITECTURE.md).
//! - **Flex** (CPU): the composite ops ([`composite`]), the same maths written with burn's
//!   primitive ops.
//! - **Autodiff**: a hand-written backward ([`autodiff`]) that calls the inner backend's backward
//!   kernel, so training on wgpu runs the fused kernels in both directions.
//!
//! The `Tensor`-level functions here are what the model calls. [`set_fused_ops`] turns the fused
//! path off process-wide (benchmarks compare both); the `composite_*` functions are the plain
//! tensor-op versions the tests use as the reference.

// The extension needs burn's `extension` and `template` features, which the native build has.
// The browser build (`web` feature) runs the composite ops.
#[cfg(feature = "native")]
mod autodiff;
#[cfg(feature = "native")]
pub mod composite;
#[cfg(feature = "native")]
mod cube;

use std::sync::atomic::{AtomicU8, Ordering};

#[cfg(feature = "native")]
use burn::backend::tensor::{FloatTensor, IntTensor};
#[cfg(feature = "native")]
use burn::backend::{Backend, Dispatch, backend_extension};
use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::models::layers::rotate_half;

#[cfg(feature = "native")]
/// Backend ops with a fused kernel on the wgpu path and a composite fallback elsewhere.
#[backend_extension(Cube, Fusion, Flex, Autodiff)]
pub trait FusedOps: Backend {
    /// RMSNorm over the last dimension: `weight · x / sqrt(mean(x²) + eps)` (`weight`: `[dim]`).
    #[fusion(dtype = x, shape = x)]
    fn fused_rms_norm(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        eps: f64,
    ) -> FloatTensor<Self> {
        composite::rms_norm::<Self>(x, weight, eps)
    }

    /// The input gradient of [`FusedOps::fused_rms_norm`] given the output gradient `grad`.
    #[fusion(dtype = x, shape = x)]
    fn fused_rms_norm_backward(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        eps: f64,
    ) -> FloatTensor<Self> {
        composite::rms_norm_input_grad::<Self>(x, weight, grad, eps)
    }

    /// Rotate-half rotary embedding `x·cos + rotate_half(x)·sin` for `x` `[a, heads, len, dim]`
    /// and tables `[a, 1, len, dim]`.
    #[fusion(dtype = x, shape = x)]
    fn fused_rotary(
        x: FloatTensor<Self>,
        cos: FloatTensor<Self>,
        sin: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        composite::rotary::<Self>(x, cos, sin)
    }

    /// The input gradient of [`FusedOps::fused_rotary`] given the output gradient `grad`:
    /// `grad·cos + rotate_halfᵀ(grad·sin)`.
    #[fusion(dtype = grad, shape = grad)]
    fn fused_rotary_backward(
        grad: FloatTensor<Self>,
        cos: FloatTensor<Self>,
        sin: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        composite::rotary_input_grad::<Self>(grad, cos, sin)
    }

    /// Summed cross-entropy of the logits `hidden · weight` (`[n, h] · [h, vocab]`) against
    /// `targets` (`[n, 1]`), computed `chunk` rows at a time: the `[n, vocab]` logits never exist
    /// at once, in the forward pass or (through the autodiff backward) the backward pass.
    #[fusion(default)]
    fn chunked_linear_cross_entropy(
        hidden: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        targets: IntTensor<Self>,
        chunk: usize,
    ) -> FloatTensor<Self> {
        composite::linear_cross_entropy::<Self>(hidden, weight, targets, chunk).0
    }
}

#[cfg(feature = "native")]
impl FusedOps for burn::backend::Flex {}

const UNSET: u8 = 0;
const ON: u8 = 1;
const OFF: u8 = 2;
static FUSED_OPS: AtomicU8 = AtomicU8::new(UNSET);

/// Turns the fused ops on or off for the whole process (default: on, unless the environment
/// variable `ADAMLLM_FUSED_OPS=0`). Off, the model runs the composite tensor ops everywhere.
pub fn set_fused_ops(enabled: bool) {
    FUSED_OPS.store(if enabled { ON } else { OFF }, Ordering::Relaxed);
}

/// Whether the model uses the fused ops (see [`set_fused_ops`]).
pub fn fused_ops_enabled() -> bool {
    match FUSED_OPS.load(Ordering::Relaxed) {
        ON => true,
        OFF => false,
        _ => {
            let enabled = std::env::var("ADAMLLM_FUSED_OPS").as_deref() != Ok("0");
            set_fused_ops(enabled);
            enabled
        }
    }
}

/// RMSNorm over the last dimension (transformers `Qwen2RMSNorm`), fused where the backend has it.
pub fn rms_norm<const D: usize>(x: Tensor<D>, weight: Tensor<1>, eps: f64) -> Tensor<D> {
    if !fused_ops_enabled() {
        return composite_rms_norm(x, weight, eps);
    }
    #[cfg(feature = "native")]
    return Tensor::from_dispatch(<Dispatch as FusedOps>::fused_rms_norm(
        x.into_dispatch(),
        weight.into_dispatch(),
        eps,
    ));
    #[cfg(not(feature = "native"))]
    composite_rms_norm(x, weight, eps)
}

/// RMSNorm written with tensor ops: the reference for the fused kernel.
pub fn composite_rms_norm<const D: usize>(x: Tensor<D>, weight: Tensor<1>, eps: f64) -> Tensor<D> {
    let rms = (x.clone().square().mean_dim(D - 1) + eps).sqrt();
    (x / rms) * weight.unsqueeze()
}

/// Rotary embedding in rotate-half form, `x·cos + rotate_half(x)·sin`, fused where the backend
/// has it. `x` is `[a, heads, len, dim]` with tables `[a, 1, len, dim]` (the LM), or
/// `[patches, heads, dim]` with tables `[patches, 1, dim]` (the vision tower); other shapes take
/// the composite ops.
pub fn rotary<const D: usize>(x: Tensor<D>, cos: Tensor<D>, sin: Tensor<D>) -> Tensor<D> {
    if !fused_ops_enabled() {
        return composite_rotary(x, cos, sin);
    }
    let x_dims = x.dims();
    let table_dims = cos.dims();
    let (x4, table4) = match D {
        4 => (
            [x_dims[0], x_dims[1], x_dims[2], x_dims[3]],
            [table_dims[0], table_dims[1], table_dims[2], table_dims[3]],
        ),
        3 => (
            [x_dims[0], x_dims[1], 1, x_dims[2]],
            [table_dims[0], table_dims[1], 1, table_dims[2]],
        ),
        _ => return composite_rotary(x, cos, sin),
    };
    let tables_match = table4 == [x4[0], 1, x4[2], x4[3]] && sin.dims() == table_dims;
    if !tables_match || x4[3] % 2 != 0 {
        return composite_rotary(x, cos, sin);
    }
    #[cfg(feature = "native")]
    if D == 4 {
        // Already the kernel's layout: no reshape, which would copy a strided view.
        return Tensor::from_dispatch(<Dispatch as FusedOps>::fused_rotary(
            x.into_dispatch(),
            cos.into_dispatch(),
            sin.into_dispatch(),
        ));
    }
    #[cfg(feature = "native")]
    return Tensor::<4>::from_dispatch(<Dispatch as FusedOps>::fused_rotary(
        x.reshape(x4).into_dispatch(),
        cos.reshape(table4).into_dispatch(),
        sin.reshape(table4).into_dispatch(),
    ))
    .reshape(x_dims);
    #[cfg(not(feature = "native"))]
    composite_rotary(x, cos, sin)
}

/// Logit elements one cross-entropy chunk may hold (`rows × vocab`): 64 Mi floats, 256 MiB in
/// f32; Qwen2-VL's 151,936-token vocabulary gives 441 rows a chunk. Each chunk streams the whole
/// LM head once per matmul, so small chunks are slow on the CPU: 27-row chunks (a 16 MiB budget)
/// made the 2B-shaped cross-entropy 3.8× slower than the unchunked one on flex.
pub const CROSS_ENTROPY_CHUNK_ELEMENTS: usize = 1 << 26;

/// Summed cross-entropy of the logits `hidden · weight` (`hidden` `[n, h]`, `weight`
/// `[h, vocab]`) against `targets` (`n` token ids). With fused ops on, the logits are computed
/// a chunk of rows at a time and recomputed in the backward pass, so peak memory holds
/// [`CROSS_ENTROPY_CHUNK_ELEMENTS`] logits instead of `n × vocab` (twice, with the softmax).
pub fn linear_cross_entropy_sum(
    hidden: Tensor<2>,
    weight: Tensor<2>,
    targets: &[i64],
) -> Tensor<1> {
    let targets = target_column(targets, &hidden.device());
    // An f32 master head over half-precision hidden states computes in theirs.
    let weight = crate::models::layers::in_dtype(weight, hidden.dtype());
    if !fused_ops_enabled() {
        return composite_linear_cross_entropy_sum(hidden, weight, targets);
    }
    #[cfg(feature = "native")]
    {
        let vocab = weight.dims()[1].max(1);
        let chunk = (CROSS_ENTROPY_CHUNK_ELEMENTS / vocab).max(1);
        Tensor::<1>::from_dispatch(<Dispatch as FusedOps>::chunked_linear_cross_entropy(
            hidden.into_dispatch(),
            weight.into_dispatch(),
            targets.into_dispatch(),
            chunk,
        ))
        .reshape([1])
    }
    #[cfg(not(feature = "native"))]
    composite_linear_cross_entropy_sum(hidden, weight, targets)
}

/// Token ids as the `[n, 1]` column that `gather` takes.
pub fn target_column(targets: &[i64], device: &Device) -> Tensor<2, Int> {
    Tensor::from_data(
        TensorData::new(targets.to_vec(), [targets.len(), 1]),
        device,
    )
}

/// Summed cross-entropy of `[n, vocab]` logits against `targets` (`[n, 1]`).
pub fn cross_entropy_sum(logits: Tensor<2>, targets: Tensor<2, Int>) -> Tensor<1> {
    let logits = crate::models::layers::in_dtype(logits, burn::tensor::DType::F32);
    let log_probs = burn::tensor::activation::log_softmax(logits, 1);
    log_probs.gather(1, targets).neg().sum().reshape([1])
}

/// Summed cross-entropy written with tensor ops over the full `[n, vocab]` logits: the reference
/// for [`linear_cross_entropy_sum`]. `targets` is `[n, 1]`.
pub fn composite_linear_cross_entropy_sum(
    hidden: Tensor<2>,
    weight: Tensor<2>,
    targets: Tensor<2, Int>,
) -> Tensor<1> {
    cross_entropy_sum(hidden.matmul(weight), targets)
}

/// Rotary embedding written with tensor ops: the reference for the fused kernel.
pub fn composite_rotary<const D: usize>(x: Tensor<D>, cos: Tensor<D>, sin: Tensor<D>) -> Tensor<D> {
    x.clone() * cos + rotate_half(x) * sin
}

#[cfg(test)]
mod tests;
