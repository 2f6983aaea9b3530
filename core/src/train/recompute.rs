//! Layer-wise recomputation ("gradient checkpointing"): the backward pass of one micro-batch
//! that keeps only each decoder layer's input instead of every activation of every layer.
//!
//! transformers' `model.gradient_checkpointing_enable()` wraps each decoder layer in
//! `torch.utils.checkpoint`; LLaMA-Factory turns it on unless `disable_gradient_checkpointing`.
//! Burn 0.22.1 has no per-module checkpoint, and its own
//! `gradient_checkpointing()` strategy recomputes only element-wise ops (every matmul output
//! and attention score is still kept), so the layers are recomputed here by hand:
//!
//! 1. The decoder runs once without a graph (each layer's parameters detached), keeping the
//!    `[batch, len, hidden]` input of every layer.
//! 2. The final norm, LM head and loss run with a graph from the last hidden state, made a
//!    leaf; their backward gives the head's gradients and the gradient of that hidden state.
//! 3. From the last layer to the first, the layer runs again with a graph from its saved
//!    input; the backward of `sum(output · upstream gradient)` gives the layer's parameter
//!    gradients and the gradient of its input, which the layer below receives.
//! 4. When the embeddings themselves carry a graph (a trainable vision tower, projector or
//!    embedding table), the same product sends the last gradient into them.
//!
//! So at most one layer's activations and attention scores are alive at a time, for about
//! one extra forward pass. The gradients equal the full graph's (the same ops on the same
//! values; only the order of a few sums differs). Dropout draws its masks from the device
//! generator, which is seeded per layer before both of that layer's forwards, so the recomputed
//! layer sees the masks of the first pass.

use burn::module::Module;
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::tensor::Tensor;

use super::optimizer::{autodiff_like, trainable_numel};
use crate::models::{ForwardError, Model, TokenBatch};

/// Seed of the dropout masks of decoder layer `layer` within a micro-batch seeded `seed`.
fn layer_seed(seed: u64, layer: usize) -> u64 {
    seed ^ (layer as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// The loss and gradients of one micro-batch with each decoder layer recomputed during the
/// backward pass. As the full-graph pass: the summed loss is divided by `step_tokens`, the
/// gradients are those of that loss times `loss_scale`, and the returned loss (detached) is
/// not scaled. `seed`, when given, seeds the dropout masks.
pub(crate) fn recomputed_pass(
    model: &Model,
    batch: &TokenBatch,
    labels: &[Vec<i64>],
    step_tokens: usize,
    loss_scale: f64,
    seed: Option<u64>,
) -> Result<(Tensor<1>, GradientsParams), ForwardError> {
    let text = model.text();
    let layers = &text.layers;
    let (embeds, inputs, _) = model.decoder_inputs(batch)?;
    let reseed = |layer: usize| {
        if let Some(seed) = seed {
            model.device.seed(layer_seed(seed, layer));
        }
    };
    // Layers below the lowest trainable one need a backward only to reach trainable embeddings.
    let first_backward = if embeds.is_tracked() {
        0
    } else {
        layers
            .iter()
            .position(|layer| trainable_numel(layer) > 0)
            .unwrap_or(layers.len())
    };

    let mut layer_inputs = Vec::with_capacity(layers.len());
    let mut hidden = embeds.clone().detach();
    for (i, layer) in layers.iter().enumerate() {
        reseed(i);
        let next = layer
            .clone()
            .no_grad()
            .forward(hidden.clone(), &inputs, None);
        layer_inputs.push(hidden);
        hidden = next;
    }

    let mut accumulator = GradientsAccumulator::new();
    let last = hidden.require_grad();
    let (sum, _) = model.loss_sum_of_hidden(text.norm.forward(last.clone()), labels);
    let loss = sum / step_tokens.max(1) as f64;
    let reported = loss.clone().detach();
    let scaled = if loss_scale == 1.0 {
        loss
    } else {
        loss * loss_scale
    };
    let grads = scaled.backward();
    let mut upstream = last.grad(&grads);
    accumulator.accumulate(
        &model.network,
        GradientsParams::from_grads(grads, &model.network),
    );

    for i in (first_backward..layers.len()).rev() {
        let Some(gradient) = upstream.take() else {
            break;
        };
        reseed(i);
        let input = layer_inputs[i].clone().require_grad();
        let output = layers[i].forward(input.clone(), &inputs, None);
        let gradient = autodiff_like(gradient, &output);
        let grads = (output * gradient).sum().backward();
        upstream = input.grad(&grads);
        accumulator.accumulate(
            &model.network,
            GradientsParams::from_grads(grads, &model.network),
        );
    }
    if embeds.is_tracked()
        && let Some(gradient) = upstream
    {
        let gradient = autodiff_like(gradient, &embeds);
        let grads = (embeds * gradient).sum().backward();
        accumulator.accumulate(
            &model.network,
            GradientsParams::from_grads(grads, &model.network),
        );
    }
    Ok((reported, accumulator.grads()))
}
