//! Backward passes of the fused ops, so that training calls the inner backend's fused kernels in
//! both directions (pattern: burn's `examples/custom-wgpu-kernel/src/backward.rs`).

use burn::backend::Backend;
use burn::backend::autodiff::{
    Autodiff,
    checkpoint::{base::Checkpointer, strategy::CheckpointStrategy},
    grads::Gradients,
    ops::{Backward, Ops, OpsKind},
};
use burn::backend::tensor::{FloatTensor, IntTensor};

use super::FusedOps;
use super::composite;

/// Gradients of RMSNorm for `x` (fused kernel) and `weight` (a sum over rows).
#[derive(Debug)]
struct RmsNormBackward;

impl<B: Backend + FusedOps> Backward<B, 2> for RmsNormBackward {
    type State = (FloatTensor<B>, FloatTensor<B>, f64);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x, node_weight] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let (x, weight, eps) = ops.state;
        if let Some(node) = node_weight {
            let weight_grad = composite::rms_norm_weight_grad::<B>(x.clone(), grad.clone(), eps);
            grads.register::<B>(node.id, weight_grad);
        }
        if let Some(node) = node_x {
            grads.register::<B>(node.id, B::fused_rms_norm_backward(x, weight, grad, eps));
        }
    }
}

/// Gradient of the rotary embedding for `x` (the tables are constants and get no gradient).
#[derive(Debug)]
struct RotaryBackward;

impl<B: Backend + FusedOps> Backward<B, 1> for RotaryBackward {
    type State = (FloatTensor<B>, FloatTensor<B>);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let (cos, sin) = ops.state;
        if let Some(node) = node_x {
            grads.register::<B>(node.id, B::fused_rotary_backward(grad, cos, sin));
        }
    }
}

/// Gradients of the chunked cross-entropy for the hidden states and the head weight, recomputing
/// each chunk's logits from the saved log-sum-exp.
#[derive(Debug)]
struct CrossEntropyBackward;

impl<B: Backend + FusedOps> Backward<B, 2> for CrossEntropyBackward {
    /// Hidden states, head weight, targets, log-sum-exp per row, the logits when they were one
    /// chunk, and the chunk size.
    type State = (
        FloatTensor<B>,
        FloatTensor<B>,
        IntTensor<B>,
        FloatTensor<B>,
        Option<FloatTensor<B>>,
        usize,
    );

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_hidden, node_weight] = ops.parents;
        let grad = grads.consume::<B>(&ops.node);
        let (hidden, weight, targets, log_sum_exp, saved_logits, chunk) = ops.state;
        let (hidden_grad, weight_grad) = composite::linear_cross_entropy_grads::<B>(
            hidden,
            weight,
            targets,
            log_sum_exp,
            saved_logits,
            grad,
            chunk,
            node_weight.is_some(),
        );
        if let Some(node) = node_hidden {
            grads.register::<B>(node.id, hidden_grad);
        }
        if let (Some(node), Some(weight_grad)) = (node_weight, weight_grad) {
            grads.register::<B>(node.id, weight_grad);
        }
    }
}

impl<B: Backend + FusedOps, C: CheckpointStrategy> FusedOps for Autodiff<B, C> {
    fn chunked_linear_cross_entropy(
        hidden: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        targets: IntTensor<Self>,
        chunk: usize,
    ) -> FloatTensor<Self> {
        match CrossEntropyBackward
            .prepare::<C>([hidden.node(), weight.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let hidden = hidden.primitive().clone();
                let weight = weight.primitive().clone();
                let (sum, log_sum_exp, logits) = composite::linear_cross_entropy::<B>(
                    hidden.clone(),
                    weight.clone(),
                    targets.clone(),
                    chunk,
                );
                prep.finish((hidden, weight, targets, log_sum_exp, logits, chunk), sum)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::chunked_linear_cross_entropy(
                hidden.into_primitive(),
                weight.into_primitive(),
                targets,
                chunk,
            )),
        }
    }

    fn fused_rms_norm(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        eps: f64,
    ) -> FloatTensor<Self> {
        match RmsNormBackward
            .prepare::<C>([x.node(), weight.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let x = x.primitive().clone();
                let weight = weight.primitive().clone();
                let out = B::fused_rms_norm(x.clone(), weight.clone(), eps);
                prep.finish((x, weight, eps), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::fused_rms_norm(
                x.into_primitive(),
                weight.into_primitive(),
                eps,
            )),
        }
    }

    fn fused_rotary(
        x: FloatTensor<Self>,
        cos: FloatTensor<Self>,
        sin: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        let cos = cos.into_primitive();
        let sin = sin.into_primitive();
        match RotaryBackward
            .prepare::<C>([x.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let out = B::fused_rotary(x.into_primitive(), cos.clone(), sin.clone());
                prep.finish((cos, sin), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::fused_rotary(x.into_primitive(), cos, sin)),
        }
    }
}
