//! AdamW with decoupled weight decay, as PyTorch's `torch.optim.AdamW` computes it, with
//! global-norm gradient clipping (`torch.nn.utils.clip_grad_norm_`) and parameter groups
//! (learning-rate multiplier, weight decay on/off) chosen by module path.
//!
//! Written here rather than taken from burn-optim because the trainer needs three things
//! burn's optimizer does not give: state keyed by stable parameter *paths* (so a resumed run
//! reloads it exactly, whatever `ParamId`s the fresh model got), the clipping factor of the
//! *global* gradient norm, and PyTorch's exact order of operations.

use std::collections::BTreeMap;
use std::path::Path;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::tensor::Tensor;

use crate::io::FileError;
use crate::models::checkpoint::{CheckpointReader, NamedTensor, StorageDtype, write_safetensors};
use crate::models::layers::{tensor_from_vec, tensor_to_vec};
use crate::models::paths::ModulePath;
use crate::precision::LossScaler;

/// AdamW hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWSettings {
    /// β₁ (PyTorch default 0.9).
    pub beta1: f64,
    /// β₂ (PyTorch default 0.999).
    pub beta2: f64,
    /// ε (PyTorch default 1e-8).
    pub eps: f64,
    /// Decoupled weight decay.
    pub weight_decay: f64,
}

impl Default for AdamWSettings {
    fn default() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }
}

/// How one parameter is optimized.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ParamGroup {
    /// Multiplier of the step's learning rate.
    pub lr_multiplier: f64,
    /// Whether weight decay applies.
    pub decay: bool,
}

/// The first and second moment of one parameter, flattened.
struct Moments {
    exp_avg: Tensor<1>,
    exp_avg_sq: Tensor<1>,
}

/// AdamW state: the step count and the moments of every parameter that has had a gradient.
pub struct AdamW {
    /// Hyper-parameters.
    pub settings: AdamWSettings,
    /// Optimizer steps taken.
    pub step: u64,
    moments: BTreeMap<String, Moments>,
    /// Dynamic loss scaling (f16 training); `None` trains unscaled.
    pub loss_scaler: Option<LossScaler>,
}

/// Collects `(path, id)` of every trainable float parameter.
struct TrainableParams {
    path: ModulePath,
    out: Vec<(String, ParamId)>,
}

impl ModuleVisitor for TrainableParams {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.path.enter(name, container_type);
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.exit();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if param.val().is_require_grad() {
            self.out.push((self.path.joined(), param.id));
        }
    }
}

/// Module paths and ids of the trainable parameters of `module`.
pub fn trainable_params<M: Module>(module: &M) -> Vec<(String, ParamId)> {
    let mut v = TrainableParams {
        path: ModulePath::new(),
        out: Vec::new(),
    };
    module.visit(&mut v);
    v.out
}

/// Counts the values of trainable parameters.
struct TrainableCount(usize);

impl ModuleVisitor for TrainableCount {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let value = param.val();
        if value.is_require_grad() {
            self.0 += value.shape().num_elements();
        }
    }
}

/// Number of trainable parameter values of `module`.
pub fn trainable_numel<M: Module>(module: &M) -> usize {
    let mut v = TrainableCount(0);
    module.visit(&mut v);
    v.0
}

/// Sums `g²` over every gradient of `module`'s parameters.
struct SquaredNorm<'a> {
    grads: &'a GradientsParams,
    parts: Vec<Tensor<1>>,
}

impl ModuleVisitor for SquaredNorm<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(g) = self.grads.get::<D>(param.id) {
            self.parts.push(g.square().sum());
        }
    }
}

/// The global L2 norm of all gradients (`clip_grad_norm_`'s `total_norm`), read back to the
/// host in one transfer.
pub fn global_grad_norm<M: Module>(module: &M, grads: &GradientsParams) -> f64 {
    let mut v = SquaredNorm {
        grads,
        parts: Vec::new(),
    };
    module.visit(&mut v);
    if v.parts.is_empty() {
        return 0.0;
    }
    let total = Tensor::cat(v.parts, 0).sum();
    (tensor_to_vec(total)[0] as f64).sqrt()
}

/// The factor `clip_grad_norm_` multiplies gradients by: `max_norm / (norm + 1e-6)`, at most 1.
/// A `max_norm` ≤ 0 disables clipping.
pub fn clip_factor(norm: f64, max_norm: f64) -> f64 {
    if max_norm <= 0.0 {
        return 1.0;
    }
    (max_norm / (norm + 1e-6)).min(1.0)
}

struct StepMapper<'a, G: Fn(&str) -> ParamGroup> {
    optimizer: &'a mut AdamW,
    grads: &'a mut GradientsParams,
    lr: f64,
    grad_scale: f64,
    group_of: G,
    path: ModulePath,
}

impl<G: Fn(&str) -> ParamGroup> ModuleMapper for StepMapper<'_, G> {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.path.enter(name, container_type);
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.exit();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let (id, tensor, mapper) = param.consume();
        let Some(grad) = self.grads.remove::<D>(id) else {
            return Param::from_mapped_value(id, tensor, mapper);
        };
        let path = self.path.joined();
        let group = (self.group_of)(&path);
        let s = self.optimizer.settings;
        let lr = self.lr * group.lr_multiplier;
        let t = self.optimizer.step as i32;
        let dims = grad.dims();
        let numel: usize = dims.iter().product();

        let mut p = tensor.clone().inner();
        let grad = if self.grad_scale != 1.0 {
            grad * self.grad_scale
        } else {
            grad
        };
        let (exp_avg, exp_avg_sq) = match self.optimizer.moments.remove(&path) {
            Some(m) => (m.exp_avg.reshape(dims), m.exp_avg_sq.reshape(dims)),
            None => (grad.zeros_like(), grad.zeros_like()),
        };
        // torch.optim.adamw._single_tensor_adamw, in its order of operations.
        if group.decay && s.weight_decay != 0.0 {
            p = p * (1.0 - lr * s.weight_decay);
        }
        let exp_avg = exp_avg.clone() + (grad.clone() - exp_avg) * (1.0 - s.beta1);
        let exp_avg_sq = exp_avg_sq * s.beta2 + grad.clone() * grad * (1.0 - s.beta2);
        let bias_correction1 = 1.0 - s.beta1.powi(t);
        let bias_correction2 = 1.0 - s.beta2.powi(t);
        let step_size = lr / bias_correction1;
        let denom = exp_avg_sq.clone().sqrt() / bias_correction2.sqrt() + s.eps;
        p = p - exp_avg.clone() / denom * step_size;

        self.optimizer.moments.insert(
            path,
            Moments {
                exp_avg: exp_avg.reshape([numel]),
                exp_avg_sq: exp_avg_sq.reshape([numel]),
            },
        );
        Param::from_mapped_value(id, leaf_like(p, &tensor), mapper)
    }
}

/// A new parameter value from `value` (computed without autodiff) standing in for `param`: a
/// graph leaf with `param`'s checkpointing strategy and gradient requirement.
pub(crate) fn leaf_like<const D: usize>(value: Tensor<D>, param: &Tensor<D>) -> Tensor<D> {
    let mut leaf = autodiff_like(value, param);
    if param.is_require_grad() {
        leaf = leaf.require_grad();
    }
    leaf
}

/// `value` (computed without autodiff) on `reference`'s autodiff device, with its
/// checkpointing strategy (tensors of different strategies cannot meet in one op), as a
/// constant: it requires no gradient.
pub(crate) fn autodiff_like<const D: usize>(value: Tensor<D>, reference: &Tensor<D>) -> Tensor<D> {
    let lifted = Tensor::from_inner(value);
    match reference.gradient_checkpointing_strategy() {
        Some(strategy) => lifted.with_gradient_checkpointing_strategy(strategy),
        None => lifted,
    }
}

impl AdamW {
    /// A fresh optimizer.
    pub fn new(settings: AdamWSettings) -> Self {
        Self {
            settings,
            step: 0,
            moments: BTreeMap::new(),
            loss_scaler: None,
        }
    }

    /// One optimizer step: every parameter of `module` with a gradient in `grads` is updated
    /// with learning rate `lr × group.lr_multiplier` after its gradient is multiplied by
    /// `grad_scale` (the clipping factor).
    pub fn step<M: Module>(
        &mut self,
        module: M,
        mut grads: GradientsParams,
        lr: f64,
        grad_scale: f64,
        group_of: impl Fn(&str) -> ParamGroup,
    ) -> M {
        self.step += 1;
        let mut mapper = StepMapper {
            optimizer: self,
            grads: &mut grads,
            lr,
            grad_scale,
            group_of,
            path: ModulePath::new(),
        };
        module.map(&mut mapper)
    }

    /// The factor the loss is multiplied by before backward (1 without loss scaling).
    pub fn loss_scale(&self) -> f64 {
        self.loss_scaler.as_ref().map_or(1.0, |s| s.scale)
    }

    /// Number of parameters with state.
    pub fn len(&self) -> usize {
        self.moments.len()
    }

    /// Whether no parameter has state yet.
    pub fn is_empty(&self) -> bool {
        self.moments.is_empty()
    }

    /// Writes the moments as safetensors (`<path>.exp_avg`, `<path>.exp_avg_sq`, f32).
    pub fn save(&self, file: &Path) -> Result<(), FileError> {
        let mut tensors = Vec::with_capacity(2 * self.moments.len());
        for (path, m) in &self.moments {
            for (suffix, t) in [("exp_avg", &m.exp_avg), ("exp_avg_sq", &m.exp_avg_sq)] {
                let values = tensor_to_vec(t.clone());
                tensors.push(NamedTensor {
                    name: format!("{path}.{suffix}"),
                    shape: vec![values.len()],
                    values,
                });
            }
        }
        write_safetensors(file, &tensors, StorageDtype::F32)
    }

    /// Reads moments written by [`AdamW::save`] onto `device` (the inner, non-autodiff one).
    pub fn load(
        settings: AdamWSettings,
        step: u64,
        file: &Path,
        device: &burn::tensor::Device,
    ) -> Result<Self, FileError> {
        let reader = CheckpointReader::open_files(&[file.to_path_buf()])?;
        let mut moments = BTreeMap::new();
        let mut names = reader.names();
        names.sort();
        for name in names.iter().filter(|n| n.ends_with(".exp_avg")) {
            let path = name.trim_end_matches(".exp_avg").to_string();
            let sq_name = format!("{path}.exp_avg_sq");
            let n = reader.shape(name).map_or(0, |s| s.iter().product());
            if !reader.contains(&sq_name) {
                return Err(FileError::new(file, format!("{sq_name} is missing")));
            }
            let load = |key: &str| -> Result<Tensor<1>, FileError> {
                let values = reader.read_f32(key, &[n])?;
                Ok(tensor_from_vec(
                    values,
                    [n],
                    device,
                    burn::tensor::DType::F32,
                ))
            };
            moments.insert(
                path,
                Moments {
                    exp_avg: load(name)?,
                    exp_avg_sq: load(&sq_name)?,
                },
            );
        }
        Ok(Self {
            settings,
            step,
            moments,
            loss_scaler: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{DType, Device};

    #[derive(Module, Debug)]
    struct Toy {
        w: Param<Tensor<2>>,
        bias: Param<Tensor<1>>,
    }

    /// Three steps against `torch.optim.AdamW` (torch 1.13; lr 1e-2, weight decay 0.1 on `w`
    /// only, PyTorch's default betas and eps), with gradients set by hand.
    #[test]
    fn adamw_matches_pytorch() {
        let device = Device::flex().autodiff();
        let mut toy = Toy {
            w: Param::from_tensor(tensor_from_vec(
                vec![0.5, -1.25, 2.0, 0.0, 0.75, -0.3],
                [2, 3],
                &device,
                DType::F32,
            )),
            bias: Param::from_tensor(tensor_from_vec(
                vec![0.1, -0.2, 0.3],
                [3],
                &device,
                DType::F32,
            )),
        };
        let grads: [([f32; 6], [f32; 3]); 3] = [
            ([0.3, -0.1, 0.0, 1.5, -2.0, 0.25], [0.5, 0.0, -1.0]),
            ([0.2, 0.4, -0.6, 0.0, 1.0, -0.5], [0.25, -0.75, 0.1]),
            ([-1.0, 0.05, 0.3, 0.7, 0.0, 2.0], [-0.5, 0.5, 0.5]),
        ];
        let expected: [([f64; 6], [f64; 3]); 3] = [
            (
                [
                    0.4895000159740448,
                    -1.2387499809265137,
                    1.9980000257492065,
                    -0.010000000707805157,
                    0.7592499852180481,
                    -0.30970001220703125,
                ],
                [
                    0.09000000357627869,
                    -0.20000000298023224,
                    0.3100000023841858,
                ],
            ),
            (
                [
                    0.47930699586868286,
                    -1.2431063652038574,
                    2.003443479537964,
                    -0.016690583899617195,
                    0.7611541152000427,
                    -0.3057292699813843,
                ],
                [0.08067820966243744, -0.1925586313009262, 0.3159264922142029],
            ),
            (
                [
                    0.4822954833507538,
                    -1.246926188468933,
                    2.0037264823913574,
                    -0.024070359766483307,
                    0.7624517679214478,
                    -0.310814768075943,
                ],
                [
                    0.07957037538290024,
                    -0.19131797552108765,
                    0.31717950105667114,
                ],
            ),
        ];
        let mut adamw = AdamW::new(AdamWSettings {
            weight_decay: 0.1,
            ..AdamWSettings::default()
        });
        for ((gw, gb), (ew, eb)) in grads.iter().zip(&expected) {
            let cw = tensor_from_vec(gw.to_vec(), [2, 3], &device, DType::F32);
            let cb = tensor_from_vec(gb.to_vec(), [3], &device, DType::F32);
            let loss = (toy.w.val() * cw).sum() + (toy.bias.val() * cb).sum();
            let g = GradientsParams::from_grads(loss.backward(), &toy);
            toy = adamw.step(toy, g, 1e-2, 1.0, |path| ParamGroup {
                lr_multiplier: 1.0,
                decay: path == "w",
            });
            let w = tensor_to_vec(toy.w.val());
            let b = tensor_to_vec(toy.bias.val());
            for (got, want) in w.iter().zip(ew).chain(b.iter().zip(eb)) {
                assert!((*got as f64 - want).abs() < 2e-7, "{got} vs {want}");
            }
        }
        // Saved and reloaded moments continue identically.
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("opt.safetensors");
        adamw.save(&file).unwrap();
        let back = AdamW::load(adamw.settings, adamw.step, &file, &Device::flex()).unwrap();
        assert_eq!(back.len(), 2);
        for (k, m) in &adamw.moments {
            let n = &back.moments[k];
            assert_eq!(
                tensor_to_vec(m.exp_avg.clone()),
                tensor_to_vec(n.exp_avg.clone())
            );
            assert_eq!(
                tensor_to_vec(m.exp_avg_sq.clone()),
                tensor_to_vec(n.exp_avg_sq.clone())
            );
        }
    }

    #[test]
    fn clip_factor_matches_clip_grad_norm() {
        assert_eq!(clip_factor(0.5, 1.0), 1.0);
        assert!((clip_factor(4.0, 1.0) - 1.0 / (4.0 + 1e-6)).abs() < 1e-15);
        assert_eq!(clip_factor(100.0, 0.0), 1.0);
    }
}
