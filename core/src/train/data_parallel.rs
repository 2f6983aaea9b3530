//! Data-parallel training over several devices (`train --devices D1,D2,…`).
//!
//! The first device holds the master model and the optimizer; every other device holds a
//! replica with the same parameter ids. An optimizer step of `N` devices takes
//! `gradient_accumulation_steps × N` micro-batches: micro-batch `k` runs on device `k mod N`,
//! each device sums the gradients of its micro-batches, and the sums are brought to the first
//! device and added in device order before clipping and AdamW (so the global batch, the
//! token normalisation of the loss and the clipping norm are those of one device accumulating
//! the same micro-batches). The updated trainable weights are then copied to the replicas.
//!
//! Why not Burn's distributed ops: in Burn 0.22.1 the collective (`all_reduce`) is
//! implemented by CUDA and the remote backend only; on flex it is `unimplemented!()` and on
//! wgpu cubecl's server answers `no_device_transport` (see ARCHITECTURE.md). The reduction
//! here is the same sum, done by moving gradients to the first device, which every backend
//! can do, in a fixed order, so a run is deterministic and resumes bit-identically.

use std::collections::HashMap;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::tensor::{Device, Tensor, TensorData};

use super::optimizer::{AdamW, ParamGroup, clip_factor, global_grad_norm};
use super::recompute::recomputed_pass;
use super::trainer::{StepOutcome, TrainError};
use crate::models::layers::tensor_to_vec;
use crate::models::{Model, TokenBatch};

/// Builds micro-batch `k` of the step (host data; any device takes it).
pub type MicroBatchFn<'a> =
    dyn Fn(usize) -> Result<(TokenBatch, Vec<Vec<i64>>), TrainError> + Sync + 'a;

/// The replicas of the master model on the other devices of a data-parallel run.
pub struct Replicas {
    models: Vec<Model>,
}

impl Replicas {
    /// Copies `master` (trainable parts already attached) onto each of `devices` (autodiff
    /// devices), keeping parameter ids.
    pub fn new(master: &Model, devices: &[Device]) -> Self {
        let models = devices
            .iter()
            .map(|device| master.with_network(master.network.clone().fork(device), device.clone()))
            .collect();
        Self { models }
    }

    /// Devices in the run: the master's and the replicas'.
    pub fn device_count(&self) -> usize {
        1 + self.models.len()
    }

    /// Copies the master's trainable parameters (after an optimizer step, or a resume) to
    /// every replica; frozen weights never change and are not copied again.
    pub fn sync_trainable(&mut self, master: &Model) {
        if self.models.is_empty() {
            return;
        }
        let mut collect = CollectTrainable(HashMap::new());
        master.network.visit(&mut collect);
        for replica in &mut self.models {
            let mut copy = CopyTrainable {
                values: &collect.0,
                device: replica.device.clone(),
            };
            replica.network = replica.network.clone().map(&mut copy);
        }
    }
}

/// The master's trainable parameters, read back to the host (any backend takes them).
struct CollectTrainable(HashMap<ParamId, TensorData>);

impl ModuleVisitor for CollectTrainable {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if param.is_require_grad() {
            self.0.insert(param.id, param.val().detach().into_data());
        }
    }
}

/// Replaces a replica's trainable parameters by the master's values (new leaves that
/// require gradients).
struct CopyTrainable<'a> {
    values: &'a HashMap<ParamId, TensorData>,
    device: Device,
}

impl ModuleMapper for CopyTrainable<'_> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let Some(data) = self.values.get(&param.id) else {
            return param;
        };
        let (id, _, mapper) = param.consume();
        let value = Tensor::<D>::from_data(data.clone(), &self.device).require_grad();
        Param::from_mapped_value(id, value, mapper)
    }
}

/// The gradient sum of one device over its micro-batches, and each micro-batch's loss.
type DeviceGrads = (GradientsParams, Vec<(usize, f64)>);

/// Forward and backward of the micro-batches `k ≡ device (mod devices)` on `model`: each
/// one's summed loss divided by `step_tokens` (the supervised tokens of the whole step)
/// before its backward pass, the gradients summed. With `seed_of`, the device generator is
/// seeded before each micro-batch; the loss is multiplied by `loss_scale` before backward
/// (f16 training; [`apply_gradients`] divides it out). One device is `device` 0 of 1.
#[allow(clippy::too_many_arguments)]
pub(crate) fn device_pass(
    model: &Model,
    device: usize,
    devices: usize,
    micro_batches: usize,
    step_tokens: usize,
    make_batch: &MicroBatchFn<'_>,
    seed_of: Option<&(dyn Fn(usize) -> u64 + Sync)>,
    loss_scale: f64,
) -> Result<DeviceGrads, TrainError> {
    let mut accumulator = GradientsAccumulator::new();
    let ks: Vec<usize> = (device..micro_batches).step_by(devices).collect();
    let mut losses = Vec::with_capacity(ks.len());
    for &k in &ks {
        if let Some(seed_of) = seed_of {
            model.device.seed(seed_of(k));
        }
        let (batch, labels) = make_batch(k)?;
        let seed = seed_of.map(|seed_of| seed_of(k));
        let (loss, grads) =
            micro_batch_gradients(model, &batch, &labels, step_tokens, loss_scale, seed)?;
        losses.push(loss);
        accumulator.accumulate(&model.network, grads);
    }
    // One read-back per device and step, as one device does for its step.
    let values = if losses.is_empty() {
        Vec::new()
    } else {
        tensor_to_vec(Tensor::cat(losses, 0).inner())
    };
    let losses = ks
        .into_iter()
        .zip(values)
        .map(|(k, l)| (k, f64::from(l)))
        .collect();
    Ok((accumulator.grads(), losses))
}

/// The loss of one micro-batch divided by `step_tokens` (detached) and the gradients of that
/// loss times `loss_scale`: from one graph over the whole forward pass, or, when the model
/// has `gradient_checkpointing`, with each decoder layer recomputed
/// ([`recomputed_pass`]; `seed` then seeds each layer's dropout masks).
pub fn micro_batch_gradients(
    model: &Model,
    batch: &TokenBatch,
    labels: &[Vec<i64>],
    step_tokens: usize,
    loss_scale: f64,
    seed: Option<u64>,
) -> Result<(Tensor<1>, GradientsParams), TrainError> {
    if model.gradient_checkpointing {
        Ok(recomputed_pass(
            model,
            batch,
            labels,
            step_tokens,
            loss_scale,
            seed,
        )?)
    } else {
        full_graph_pass(model, batch, labels, step_tokens, loss_scale)
    }
}

/// [`micro_batch_gradients`] from one graph over the whole forward pass.
fn full_graph_pass(
    model: &Model,
    batch: &TokenBatch,
    labels: &[Vec<i64>],
    step_tokens: usize,
    loss_scale: f64,
) -> Result<(Tensor<1>, GradientsParams), TrainError> {
    let (loss_sum, _) = model.loss_sum(batch, labels)?;
    let loss = loss_sum / step_tokens.max(1) as f64;
    let reported = loss.clone().detach();
    let scaled = if loss_scale == 1.0 {
        loss
    } else {
        loss * loss_scale
    };
    let grads = GradientsParams::from_grads(scaled.backward(), &model.network);
    Ok((reported, grads))
}

/// How the devices of a step run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Schedule {
    /// Each device in its own thread.
    Concurrent,
    /// One micro-batch after another, each seeded first (dropout draws from a
    /// backend-wide generator, which concurrent devices would share).
    Sequential,
}

/// One optimizer step of a data-parallel run (see the module docs). `seed_of(k)` seeds the
/// device generator before micro-batch `k` when `schedule` is sequential.
#[allow(clippy::too_many_arguments)]
pub fn parallel_step(
    model: Model,
    replicas: &mut Replicas,
    optimizer: &mut AdamW,
    micro_batches: usize,
    step_tokens: usize,
    make_batch: &MicroBatchFn<'_>,
    lr: f64,
    max_grad_norm: f64,
    seed_of: &(dyn Fn(usize) -> u64 + Sync),
    schedule: Schedule,
    group_of: impl Fn(&str) -> ParamGroup,
) -> Result<(Model, StepOutcome), TrainError> {
    let devices = replicas.device_count();
    let loss_scale = optimizer.loss_scale();
    let pass = |m: &Model, d: usize| {
        let seed = (schedule == Schedule::Sequential).then_some(seed_of);
        device_pass(
            m,
            d,
            devices,
            micro_batches,
            step_tokens,
            make_batch,
            seed,
            loss_scale,
        )
    };
    let results: Vec<Result<DeviceGrads, TrainError>> = match schedule {
        Schedule::Sequential => std::iter::once(&model)
            .chain(&replicas.models)
            .enumerate()
            .map(|(d, m)| pass(m, d))
            .collect(),
        Schedule::Concurrent => std::thread::scope(|scope| {
            let handles: Vec<_> = replicas
                .models
                .iter()
                .enumerate()
                .map(|(i, m)| {
                    let pass = &pass;
                    scope.spawn(move || pass(m, i + 1))
                })
                .collect();
            let mut results = vec![pass(&model, 0)];
            for handle in handles {
                results.push(
                    handle
                        .join()
                        .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
                );
            }
            results
        }),
    };
    let mut accumulator = GradientsAccumulator::new();
    let mut losses = Vec::with_capacity(micro_batches);
    for result in results {
        let (grads, device_losses) = result?;
        let grads = grads.to_device(&model.device, &model.network);
        accumulator.accumulate(&model.network, grads);
        losses.extend(device_losses);
    }
    losses.sort_by_key(|(k, _)| *k);
    let loss = losses.iter().map(|(_, l)| l).sum();
    let (model, grad_norm) = apply_gradients(
        model,
        accumulator.grads(),
        optimizer,
        lr,
        max_grad_norm,
        group_of,
    );
    replicas.sync_trainable(&model);
    Ok((model, StepOutcome { loss, grad_norm }))
}

/// Clips the step's summed gradients by their global norm and applies AdamW; returns the
/// updated model and the norm before clipping. With loss scaling, the norm is unscaled first,
/// and a step whose gradients overflowed (a non-finite norm) is skipped, as the scaler says.
pub(crate) fn apply_gradients(
    mut model: Model,
    grads: GradientsParams,
    optimizer: &mut AdamW,
    lr: f64,
    max_grad_norm: f64,
    group_of: impl Fn(&str) -> ParamGroup,
) -> (Model, f64) {
    let loss_scale = optimizer.loss_scale();
    let grad_norm = global_grad_norm(&model.network, &grads) / loss_scale;
    if let Some(scaler) = optimizer.loss_scaler.as_mut()
        && !scaler.update(grad_norm)
    {
        return (model, grad_norm);
    }
    let scale = clip_factor(grad_norm, max_grad_norm) / loss_scale;
    model.network = optimizer.step(model.network, grads, lr, scale, group_of);
    (model, grad_norm)
}
