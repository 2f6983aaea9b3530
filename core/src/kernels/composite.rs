//! The fused ops written with burn's primitive backend ops: the fallback on backends without a
//! kernel (Flex, and non-f32 tensors on Cube) and the maths the WGSL kernels implement.

use burn::backend::tensor::{FloatTensor, IndexingUpdateOp, IntTensor};
use burn::backend::{Backend, Scalar, Shape, Slice, TensorMetadata};
use burn::tensor::{DType, FloatDType};

/// `x` in `dtype` (itself when it already is).
fn cast_to<B: Backend>(x: FloatTensor<B>, dtype: DType) -> FloatTensor<B> {
    if x.dtype() == dtype {
        x
    } else {
        B::float_cast(x, FloatDType::from(dtype))
    }
}

/// `[1, …, 1, dim]`: a per-channel vector shaped to broadcast against a rank-`rank` tensor.
fn channel_shape(rank: usize, dim: usize) -> Shape {
    let mut dims = vec![1; rank];
    dims[rank - 1] = dim;
    Shape::from(dims)
}

/// `1 / sqrt(mean(x²) + eps)` over the last dimension, kept as a size-1 dimension.
pub fn inverse_rms<B: Backend>(x: FloatTensor<B>, eps: f64) -> FloatTensor<B> {
    let last = x.shape().num_dims() - 1;
    let mean_square = B::float_mean_dim(B::float_mul(x.clone(), x), last);
    B::float_recip(B::float_sqrt(B::float_add_scalar(
        mean_square,
        Scalar::from(eps),
    )))
}

/// `weight · x / sqrt(mean(x²) + eps)` over the last dimension.
pub fn rms_norm<B: Backend>(x: FloatTensor<B>, weight: FloatTensor<B>, eps: f64) -> FloatTensor<B> {
    let shape = x.shape();
    let rank = shape.num_dims();
    let weight = B::float_reshape(weight, channel_shape(rank, shape[rank - 1]));
    let inv = inverse_rms::<B>(x.clone(), eps);
    B::float_mul(B::float_mul(x, inv), weight)
}

/// `dx = r·g − x·r³·mean(g·x)` with `g = grad · weight`, `r = 1 / sqrt(mean(x²) + eps)`.
pub fn rms_norm_input_grad<B: Backend>(
    x: FloatTensor<B>,
    weight: FloatTensor<B>,
    grad: FloatTensor<B>,
    eps: f64,
) -> FloatTensor<B> {
    let shape = x.shape();
    let rank = shape.num_dims();
    let weight = B::float_reshape(weight, channel_shape(rank, shape[rank - 1]));
    let inv = inverse_rms::<B>(x.clone(), eps);
    let g = B::float_mul(grad, weight);
    let projection = B::float_mean_dim(B::float_mul(g.clone(), x.clone()), rank - 1);
    let inv_cubed = B::float_mul(B::float_mul(inv.clone(), inv.clone()), inv.clone());
    B::float_sub(
        B::float_mul(g, inv),
        B::float_mul(x, B::float_mul(inv_cubed, projection)),
    )
}

/// The weight gradient of RMSNorm: `Σ_rows grad · x / sqrt(mean(x²) + eps)` (`[dim]`).
pub fn rms_norm_weight_grad<B: Backend>(
    x: FloatTensor<B>,
    grad: FloatTensor<B>,
    eps: f64,
) -> FloatTensor<B> {
    let shape = x.shape();
    let dim = shape[shape.num_dims() - 1];
    let rows = shape.num_elements() / dim.max(1);
    let inv = inverse_rms::<B>(x.clone(), eps);
    let product = B::float_mul(B::float_mul(grad, x), inv);
    let summed = B::float_sum_dim(B::float_reshape(product, Shape::from(vec![rows, dim])), 0);
    B::float_reshape(summed, Shape::from(vec![dim]))
}

/// transformers `rotate_half` on primitives: `[x1, x2] → [-x2, x1]` over the last dimension.
fn rotate_half<B: Backend>(x: FloatTensor<B>) -> FloatTensor<B> {
    let shape = x.shape();
    let rank = shape.num_dims();
    let half = (shape[rank - 1] / 2) as isize;
    let range = |start: isize, end: Option<isize>| {
        let mut slices = vec![
            Slice {
                start: 0,
                end: None,
                step: 1
            };
            rank
        ];
        slices[rank - 1] = Slice {
            start,
            end,
            step: 1,
        };
        slices
    };
    let x1 = B::float_slice(x.clone(), &range(0, Some(half)));
    let x2 = B::float_slice(x, &range(half, None));
    B::float_cat(vec![B::float_neg(x2), x1], rank - 1)
}

/// `x·cos + rotate_half(x)·sin`.
pub fn rotary<B: Backend>(
    x: FloatTensor<B>,
    cos: FloatTensor<B>,
    sin: FloatTensor<B>,
) -> FloatTensor<B> {
    B::float_add(
        B::float_mul(x.clone(), cos),
        B::float_mul(rotate_half::<B>(x), sin),
    )
}

/// The input gradient of [`rotary`]: `grad·cos + rotate_halfᵀ(grad·sin)`, where
/// `rotate_halfᵀ(y) = -rotate_half(y)`.
pub fn rotary_input_grad<B: Backend>(
    grad: FloatTensor<B>,
    cos: FloatTensor<B>,
    sin: FloatTensor<B>,
) -> FloatTensor<B> {
    B::float_sub(
        B::float_mul(grad.clone(), cos),
        rotate_half::<B>(B::float_mul(grad, sin)),
    )
}

/// Rows `start..end` of a rank-2 tensor, as slices.
fn row_range(start: usize, end: usize) -> [Slice; 2] {
    [
        Slice {
            start: start as isize,
            end: Some(end as isize),
            step: 1,
        },
        Slice {
            start: 0,
            end: None,
            step: 1,
        },
    ]
}

/// Summed cross-entropy of `hidden · weight` (`[n, h] · [h, vocab]`) against `targets`
/// (`[n, 1]`), `chunk` rows at a time so that only `[chunk, vocab]` logits exist at once.
/// Whatever the inputs' dtype, the logits are upcast and the results are f32.
/// Returns the sum (`[1]`), each row's log-sum-exp (`[n, 1]`), which the backward pass reuses,
/// and, when all rows fit in one chunk, that chunk's logits (the backward pass then needs no
/// second matmul; they are no bigger than a chunk).
pub fn linear_cross_entropy<B: Backend>(
    hidden: FloatTensor<B>,
    weight: FloatTensor<B>,
    targets: IntTensor<B>,
    chunk: usize,
) -> (FloatTensor<B>, FloatTensor<B>, Option<FloatTensor<B>>) {
    let rows = hidden.shape()[0];
    let mut total: Option<FloatTensor<B>> = None;
    let mut log_sum_exps = Vec::new();
    let mut single_chunk_logits = None;
    for start in (0..rows).step_by(chunk.max(1)) {
        let range = row_range(start, (start + chunk).min(rows));
        // Half-precision logits are upcast: the log-sum-exp and the sum run in f32.
        let logits = cast_to::<B>(
            B::float_matmul(B::float_slice(hidden.clone(), &range), weight.clone()),
            DType::F32,
        );
        if rows <= chunk {
            single_chunk_logits = Some(logits.clone());
        }
        let max = B::float_max_dim(logits.clone(), 1);
        let shifted = B::float_exp(B::float_sub(logits.clone(), max.clone()));
        let log_sum_exp = B::float_add(B::float_log(B::float_sum_dim(shifted, 1)), max);
        let target_logit = B::float_gather(1, logits, B::int_slice(targets.clone(), &range));
        let part = B::float_sum(B::float_sub(log_sum_exp.clone(), target_logit));
        total = Some(match total {
            Some(sum) => B::float_add(sum, part),
            None => part,
        });
        log_sum_exps.push(log_sum_exp);
    }
    let total = total.expect("linear_cross_entropy needs at least one row");
    (total, B::float_cat(log_sum_exps, 0), single_chunk_logits)
}

/// Gradients of [`linear_cross_entropy`]'s sum for `hidden` (`[n, h]`) and, when
/// `weight_grad_needed` (a trainable head), `weight` (`[h, vocab]`), scaled by the upstream
/// gradient `grad` (`[1]`). Each chunk's logits are recomputed (or taken from `saved_logits`
/// when there is one chunk):
/// `dlogits = grad · (softmax − onehot(target))`, computed in f32 and cast to `hidden`'s dtype
/// for the two matmuls.
#[allow(clippy::too_many_arguments)]
pub fn linear_cross_entropy_grads<B: Backend>(
    hidden: FloatTensor<B>,
    weight: FloatTensor<B>,
    targets: IntTensor<B>,
    log_sum_exp: FloatTensor<B>,
    saved_logits: Option<FloatTensor<B>>,
    grad: FloatTensor<B>,
    chunk: usize,
    weight_grad_needed: bool,
) -> (FloatTensor<B>, Option<FloatTensor<B>>) {
    let rows = hidden.shape()[0];
    let dtype = hidden.dtype();
    let grad = cast_to::<B>(B::float_reshape(grad, Shape::from(vec![1, 1])), DType::F32);
    let weight_t = B::float_transpose(weight.clone());
    let mut hidden_grads = Vec::new();
    let mut weight_grad: Option<FloatTensor<B>> = None;
    for start in (0..rows).step_by(chunk.max(1)) {
        let end = (start + chunk).min(rows);
        let range = row_range(start, end);
        let h = B::float_slice(hidden.clone(), &range);
        let logits = match (&saved_logits, rows <= chunk) {
            (Some(logits), true) => logits.clone(),
            _ => cast_to::<B>(B::float_matmul(h.clone(), weight.clone()), DType::F32),
        };
        let lse = B::float_slice(log_sum_exp.clone(), &range);
        let probs = B::float_exp(B::float_sub(logits, lse));
        let t = B::int_slice(targets.clone(), &range);
        let minus_one = B::float_neg(B::float_ones(
            Shape::from(vec![end - start, 1]),
            &probs.device(),
            probs.dtype().into(),
        ));
        let dlogits = cast_to::<B>(
            B::float_mul(
                B::float_scatter(1, probs, t, minus_one, IndexingUpdateOp::Add),
                grad.clone(),
            ),
            dtype,
        );
        hidden_grads.push(B::float_matmul(dlogits.clone(), weight_t.clone()));
        if weight_grad_needed {
            let part = B::float_matmul(B::float_transpose(h), dlogits);
            weight_grad = Some(match weight_grad {
                Some(sum) => B::float_add(sum, part),
                None => part,
            });
        }
    }
    (B::float_cat(hidden_grads, 0), weight_grad)
}
