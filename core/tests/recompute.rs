//! Gradient checkpointing (`gradient_checkpointing: true`): the backward pass that recomputes
//! each decoder layer gives the loss and gradients of the one-graph pass on every family's
//! parity fixture, for LoRA, full fine-tuning (gradients reach the vision tower through the
//! embeddings) and freeze-the-lower-layers, on flex (and one of them on wgpu). With LoRA
//! dropout, the recomputed layers draw the masks of the first forward: the gradient is that of
//! the loss the pass reports.

mod common;

use std::collections::HashMap;

use adamllm::burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use adamllm::burn::optim::GradientsParams;
use adamllm::burn::tensor::{DType, Tensor};
use adamllm::models::layers::tensor_to_vec;
use adamllm::models::{Model, TokenBatch};
use adamllm::train::data_parallel::micro_batch_gradients;
use adamllm::train::recipe::TrainRecipe;
use adamllm::train::trainer::prepare_trainable;
use common::{case_input, fixture, test_devices};

/// Every family's parity fixture with a supervised case (images where the family has them).
const FIXTURES: [(&str, &str); 3] = [
    ("qwen2vl/cfg_b", "one_image"),
    ("llama/cfg_a", "chat"),
    ("llava_next/cfg_a", "one_image"),
];

fn recipe(pairs: &[(&str, &str)]) -> TrainRecipe {
    let pairs: Vec<(String, String)> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    TrainRecipe::load(None, &pairs).unwrap()
}

/// The fixture loaded for training as `pairs` say, with its supervised batch.
fn training_model(
    dir: &std::path::Path,
    case: &str,
    device: &adamllm::burn::tensor::Device,
    pairs: &[(&str, &str)],
) -> (Model, TokenBatch, Vec<Vec<i64>>) {
    let mut model = Model::load(dir, &device.clone().autodiff(), DType::F32).unwrap();
    prepare_trainable(&mut model, &recipe(pairs));
    let (prompt, labels) = case_input(&model, dir, case);
    let batch = TokenBatch::from_sequences(
        vec![(prompt.ids, prompt.images)],
        model.processor.pad_id,
        false,
    );
    (model, batch, vec![labels])
}

/// Each trainable parameter's id and gradient values (`None`: it got none), in module order.
type ParamGradients = Vec<(ParamId, Option<Vec<f32>>)>;

/// Reads back each trainable parameter's gradient.
struct ReadGradients<'a> {
    grads: &'a GradientsParams,
    out: ParamGradients,
}

impl ModuleVisitor for ReadGradients<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if param.is_require_grad() {
            let grad = self.grads.get::<D>(param.id).map(tensor_to_vec);
            self.out.push((param.id, grad));
        }
    }
}

/// The loss and every trainable parameter's gradient, with or without recomputation.
fn loss_and_gradients(
    model: &mut Model,
    batch: &TokenBatch,
    labels: &[Vec<i64>],
    recompute: bool,
    seed: Option<u64>,
) -> (f32, ParamGradients) {
    model.gradient_checkpointing = recompute;
    let tokens = labels[0].iter().skip(1).filter(|&&l| l >= 0).count();
    let (loss, grads) = micro_batch_gradients(model, batch, labels, tokens, 1.0, seed).unwrap();
    let mut read = ReadGradients {
        grads: &grads,
        out: Vec::new(),
    };
    model.network.visit(&mut read);
    (tensor_to_vec(loss.inner())[0], read.out)
}

#[test]
fn recomputed_layers_give_the_full_graph_gradients() {
    let modes: [(&str, &[(&str, &str)]); 3] = [
        ("lora", &[("finetuning_type", "lora")]),
        (
            "full",
            &[
                ("finetuning_type", "full"),
                ("freeze_vision_tower", "false"),
                ("freeze_multi_modal_projector", "false"),
            ],
        ),
        (
            "freeze",
            &[
                ("finetuning_type", "freeze"),
                ("freeze_trainable_layers", "1"),
            ],
        ),
    ];
    for (device_name, selected) in test_devices() {
        for (dir, case) in FIXTURES {
            for (mode, pairs) in modes {
                // Lavapipe takes minutes for the whole grid: on wgpu, one family and the mode
                // whose gradients reach every part (the vision tower through the embeddings).
                if device_name == "wgpu" && (dir != "qwen2vl/cfg_b" || mode != "full") {
                    continue;
                }
                let at = format!("{dir} {mode} on {device_name}");
                let (mut model, batch, labels) =
                    training_model(&fixture(dir), case, &selected.device, pairs);
                let (full_loss, full) =
                    loss_and_gradients(&mut model, &batch, &labels, false, None);
                let (loss, recomputed) =
                    loss_and_gradients(&mut model, &batch, &labels, true, None);
                assert!(
                    (full_loss - loss).abs() <= 1e-6 * full_loss.abs(),
                    "{at}: loss {loss} vs {full_loss}"
                );
                assert!(!full.is_empty(), "{at}: nothing trains");
                let mut compared = 0;
                for ((id, a), (_, b)) in full.iter().zip(&recomputed) {
                    match (a, b) {
                        (Some(a), Some(b)) => {
                            let scale = a.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
                            let diff = common::max_abs_diff(a, b);
                            assert!(diff <= 2e-5 * scale, "{at}: param {id}: {diff} of {scale}");
                            compared += 1;
                        }
                        (None, None) => {}
                        _ => panic!("{at}: param {id} has a gradient in one pass only"),
                    }
                }
                // LoRA's B starts at zero, so A's gradients are zero but present.
                assert!(compared >= full.len() / 2, "{at}: {compared} compared");
            }
        }
    }
}

/// Moves each trainable parameter by `step` times its entry in `direction`.
struct Shift<'a> {
    direction: &'a HashMap<ParamId, Vec<f32>>,
    step: f32,
}

impl ModuleMapper for Shift<'_> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let Some(d) = self.direction.get(&param.id) else {
            return param;
        };
        let (id, value, mapper) = param.consume();
        let shape = value.shape();
        let device = value.device();
        let moved: Vec<f32> = tensor_to_vec(value.clone().inner())
            .iter()
            .zip(d)
            .map(|(v, d)| v + self.step * d)
            .collect();
        let data = adamllm::burn::tensor::TensorData::new(moved, shape);
        let moved = Tensor::<D>::from_data(data, &device).require_grad();
        Param::from_mapped_value(id, moved, mapper)
    }
}

#[test]
fn dropout_masks_of_the_recomputed_layers_are_those_of_the_first_forward() {
    let dir = fixture("qwen2vl/cfg_b");
    let device = adamllm::burn::tensor::Device::flex();
    let pairs = [("finetuning_type", "lora"), ("lora_dropout", "0.5")];
    let (mut model, batch, labels) = training_model(&dir, "one_image", &device, &pairs);
    let seed = Some(7);
    // Start away from LoRA's zero B, where every A gradient vanishes.
    let (_, grads) = loss_and_gradients(&mut model, &batch, &labels, true, seed);
    let direction: HashMap<ParamId, Vec<f32>> = grads
        .into_iter()
        .filter_map(|(id, g)| Some((id, g?)))
        .collect();
    model.network = model.network.clone().map(&mut Shift {
        direction: &direction,
        step: -0.5,
    });
    let (loss, grads) = loss_and_gradients(&mut model, &batch, &labels, true, seed);
    let gradient: HashMap<ParamId, Vec<f32>> = grads
        .into_iter()
        .filter_map(|(id, g)| Some((id, g?)))
        .collect();
    let norm: f64 = gradient
        .values()
        .flatten()
        .map(|g| f64::from(*g) * f64::from(*g))
        .sum::<f64>()
        .sqrt();
    assert!(norm > 0.0);
    // The central difference of the reported loss along the unit gradient direction (whose
    // slope is the gradient's norm), with the same seed on both sides.
    let eps = 1e-3 / norm as f32;
    let mut at = |step: f32| {
        let mut shifted = model.network.clone().map(&mut Shift {
            direction: &gradient,
            step,
        });
        std::mem::swap(&mut model.network, &mut shifted);
        let (l, _) = loss_and_gradients(&mut model, &batch, &labels, true, seed);
        std::mem::swap(&mut model.network, &mut shifted);
        f64::from(l)
    };
    let numeric = (at(eps) - at(-eps)) / (2.0 * f64::from(eps) * norm);
    assert!(
        (numeric - norm).abs() <= 0.02 * norm,
        "loss {loss}: slope {numeric} along the gradient, whose norm is {norm}"
    );
}
