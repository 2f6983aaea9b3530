//! Writing a (trained) model back to disk in Hugging Face layout, whatever its family.
//!
//! The inverse of loading: every parameter of the network is visited with its module path
//! (`vision.blocks.0.attn.qkv.weight`), renamed by the family to the key transformers uses
//! (`visual.blocks.0.attn.qkv.weight`) and put back into PyTorch's layout (linear weights
//! `[out, in]`, patch embeddings as convolution kernels). LoRA adapter parameters are not part
//! of the dense checkpoint: merge them first ([`crate::train::lora::merge_lora`]) or export
//! them as a PEFT adapter.

use std::path::Path;

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::Tensor;

use super::Network;
use super::family::{KeyLayout, Model};
use super::paths::ModulePath;
use crate::io::FileError;
use crate::models::checkpoint::{NamedTensor, StorageDtype, write_safetensors};
use crate::models::layers::{tensor_to_vec, transpose_2d};

/// File name of a single-file checkpoint.
pub const MODEL_FILE: &str = "model.safetensors";

/// Collects `(path, dims, values)` of the float parameters `keep` accepts.
struct Collector<F: Fn(&str) -> bool> {
    path: ModulePath,
    keep: F,
    out: Vec<(String, Vec<usize>, Vec<f32>)>,
}

impl<F: Fn(&str) -> bool> ModuleVisitor for Collector<F> {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.path.enter(name, container_type);
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.exit();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let path = self.path.joined();
        if !(self.keep)(&path) {
            return;
        }
        let tensor = param.val();
        let dims = tensor.dims().to_vec();
        let values = tensor_to_vec(tensor);
        self.out.push((path, dims, values));
    }
}

/// Every parameter of `module` with its module path, dims and values (host copies).
pub fn parameters_by_path<M: Module>(module: &M) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    parameters_where(module, |_| true)
}

/// Like [`parameters_by_path`], reading back only the parameters whose path `keep` accepts.
pub fn parameters_where<M: Module>(
    module: &M,
    keep: impl Fn(&str) -> bool,
) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let mut collector = Collector {
        path: ModulePath::new(),
        keep,
        out: Vec::new(),
    };
    module.visit(&mut collector);
    collector.out
}

/// The dense checkpoint tensors of a network under transformers' keys and shapes.
pub fn checkpoint_tensors(network: &Network) -> Vec<NamedTensor> {
    let family = network.family();
    parameters_by_path(network)
        .into_iter()
        .filter_map(|(path, dims, values)| {
            let (name, layout) = family.checkpoint_key(&path, &dims)?;
            Some(match layout {
                KeyLayout::Same => NamedTensor {
                    name,
                    shape: dims,
                    values,
                },
                KeyLayout::Transposed => NamedTensor {
                    name,
                    shape: vec![dims[1], dims[0]],
                    values: transpose_2d(&values, dims[0], dims[1]),
                },
                KeyLayout::TransposedAs(shape) => NamedTensor {
                    name,
                    shape,
                    values: transpose_2d(&values, dims[0], dims[1]),
                },
            })
        })
        .collect()
}

/// Files of a model folder that describe it without holding weights (copied on export).
fn is_weight_file(name: &str) -> bool {
    name.ends_with(".safetensors")
        || name.ends_with(".bin")
        || name == "model.safetensors.index.json"
        || name == "pytorch_model.bin.index.json"
}

/// Writes `model` as a Hugging Face model folder at `out`: the non-weight files of the folder
/// it was loaded from (config, tokenizer, processor, chat template, generation config) and
/// one `model.safetensors` in the model's dtype (a bf16 model exports bf16). The folder loads
/// with every `adamllm` command and with transformers' `from_pretrained`. Each file is written
/// atomically.
pub fn save_model_dir(model: &Model, out: &Path) -> Result<(), FileError> {
    std::fs::create_dir_all(out).map_err(|e| FileError::io(out, e))?;
    let entries = std::fs::read_dir(&model.dir).map_err(|e| FileError::io(&model.dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| FileError::io(&model.dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !entry.path().is_file() || is_weight_file(&name) {
            continue;
        }
        let bytes = std::fs::read(entry.path()).map_err(|e| FileError::io(&entry.path(), e))?;
        crate::io::write_atomic(&out.join(&name), &bytes)?;
    }
    if let Some(config) = model.net().export_config() {
        crate::io::write_json_atomic(&out.join("config.json"), &config)?;
    }
    let tensors = checkpoint_tensors(&model.network);
    write_safetensors(
        &out.join(MODEL_FILE),
        &tensors,
        StorageDtype::of(model.dtype),
    )
}

/// The checkpoint name of a language-model path under `prefix` (`""` for a causal LM,
/// `"language_model."` inside LLaVA-NeXT): `text.embed_tokens` → `model.embed_tokens.weight`,
/// `text.lm_head.weight` → `lm_head.weight`, `text.layers.0...` → `model.layers.0...`; `None`
/// for paths outside the language model.
pub fn text_checkpoint_name(path: &str, prefix: &str) -> Option<String> {
    if path == "text.embed_tokens" {
        return Some(format!("{prefix}model.embed_tokens.weight"));
    }
    if let Some(rest) = path.strip_prefix("text.lm_head") {
        return Some(format!("{prefix}lm_head{rest}"));
    }
    path.strip_prefix("text.")
        .map(|rest| format!("{prefix}model.{rest}"))
}

/// Whether a path belongs to a LoRA adapter (not part of the dense checkpoint).
pub fn is_adapter_path(path: &str) -> bool {
    path.split('.').any(|part| part == "lora")
}

/// The usual layout of a parameter: every 2-D `.weight` is a linear layer's (transposed); the
/// rest (biases, norms, bare parameters such as the token embedding) are stored as they are.
pub fn default_layout(path: &str, dims: &[usize]) -> KeyLayout {
    if dims.len() == 2 && path.ends_with(".weight") {
        KeyLayout::Transposed
    } else {
        KeyLayout::Same
    }
}

/// The transformers name of a linear layer's module path (for PEFT adapter keys).
pub fn module_checkpoint_name(family: &dyn super::FamilyNetwork, module_path: &str) -> String {
    family
        .checkpoint_key(&format!("{module_path}.weight"), &[1, 1])
        .map(|(name, _)| name.strip_suffix(".weight").unwrap_or(&name).to_string())
        .unwrap_or_else(|| module_path.to_string())
}
