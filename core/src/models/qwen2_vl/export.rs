//! Writing a (trained) model back to disk in Hugging Face layout.
//!
//! The inverse of [`super::Qwen2Vl::load`]: every parameter of [`super::Qwen2VlModel`] is
//! visited with its module path (`vision.blocks.0.attn.qkv.weight`), renamed to the key
//! transformers' `Qwen2VLForConditionalGeneration` uses (`visual.blocks.0.attn.qkv.weight`)
//! and put back into PyTorch's layout (linear weights `[out, in]`, the patch embedding as the
//! Conv3d kernel `[E, C, T, P, P]`). LoRA adapter parameters are not part of the dense
//! checkpoint: merge them first ([`crate::train::lora::merge_lora`]) or export them as a
//! PEFT adapter.

use std::path::Path;

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::Tensor;

use super::config::Qwen2VlConfig;
use super::{Qwen2Vl, Qwen2VlModel};
use crate::io::FileError;
use crate::models::checkpoint::{NamedTensor, StorageDtype, write_safetensors};
use crate::models::layers::{tensor_to_vec, transpose_2d};

/// File name of a single-file checkpoint.
pub const MODEL_FILE: &str = "model.safetensors";

/// How a parameter's values are rearranged for the checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// Stored as is.
    Same,
    /// `[in, out]` → `[out, in]`.
    Transposed,
    /// `[C·T·P·P, E]` → `[E, C, T, P, P]`.
    PatchKernel,
}

/// The checkpoint key and layout of a model parameter path, or `None` for parameters that are
/// not part of a dense checkpoint (LoRA adapters).
fn checkpoint_key(path: &str) -> Option<(String, Layout)> {
    if path.split('.').any(|part| part == "lora") {
        return None;
    }
    if path == "text.embed_tokens" {
        return Some(("model.embed_tokens.weight".into(), Layout::Same));
    }
    if path == "vision.patch_embed.weight" {
        return Some(("visual.patch_embed.proj.weight".into(), Layout::PatchKernel));
    }
    let name = if let Some(rest) = path.strip_prefix("vision.") {
        let rest = rest.replacen("merger.fc1.", "merger.mlp.0.", 1).replacen(
            "merger.fc2.",
            "merger.mlp.2.",
            1,
        );
        format!("visual.{rest}")
    } else if let Some(rest) = path.strip_prefix("text.lm_head.") {
        format!("lm_head.{rest}")
    } else if let Some(rest) = path.strip_prefix("text.") {
        format!("model.{rest}")
    } else {
        path.to_string()
    };
    // Every 2-D `.weight` is a linear layer's except the token embedding.
    let layout = Layout::Same;
    Some((name, layout))
}

/// Collects `(path, dims, values)` of the float parameters `keep` accepts.
struct Collector<F: Fn(&str) -> bool> {
    path: Vec<String>,
    keep: F,
    out: Vec<(String, Vec<usize>, Vec<f32>)>,
}

impl<F: Fn(&str) -> bool> ModuleVisitor for Collector<F> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let path = self.path.join(".");
        if !(self.keep)(&path) {
            return;
        }
        let tensor = param.val();
        let dims = tensor.dims().to_vec();
        let values = tensor_to_vec(tensor);
        self.out.push((path, dims, values));
    }
}

/// Every parameter of `model` with its module path, dims and values (host copies).
pub fn parameters_by_path(model: &Qwen2VlModel) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    parameters_where(model, |_| true)
}

/// Like [`parameters_by_path`], reading back only the parameters whose path `keep` accepts.
pub fn parameters_where(
    model: &Qwen2VlModel,
    keep: impl Fn(&str) -> bool,
) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let mut collector = Collector {
        path: Vec::new(),
        keep,
        out: Vec::new(),
    };
    model.visit(&mut collector);
    collector.out
}

/// The dense checkpoint tensors of `model` under transformers' keys and shapes.
pub fn checkpoint_tensors(model: &Qwen2VlModel, cfg: &Qwen2VlConfig) -> Vec<NamedTensor> {
    let v = &cfg.vision_config;
    parameters_by_path(model)
        .into_iter()
        .filter_map(|(path, dims, values)| {
            let (name, mut layout) = checkpoint_key(&path)?;
            if layout == Layout::Same
                && dims.len() == 2
                && name.ends_with(".weight")
                && name != "model.embed_tokens.weight"
            {
                layout = Layout::Transposed;
            }
            Some(match layout {
                Layout::Same => NamedTensor {
                    name,
                    shape: dims,
                    values,
                },
                Layout::Transposed => NamedTensor {
                    name,
                    shape: vec![dims[1], dims[0]],
                    values: transpose_2d(&values, dims[0], dims[1]),
                },
                Layout::PatchKernel => NamedTensor {
                    name,
                    shape: vec![
                        dims[1],
                        v.in_channels,
                        v.temporal_patch_size,
                        v.patch_size,
                        v.patch_size,
                    ],
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
/// one `model.safetensors` in f32. The folder loads with every `adamllm` command and with
/// transformers' `from_pretrained`. Each file is written atomically.
pub fn save_model_dir(model: &Qwen2Vl, out: &Path) -> Result<(), FileError> {
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
    let tensors = checkpoint_tensors(&model.model, &model.config);
    write_safetensors(&out.join(MODEL_FILE), &tensors, StorageDtype::F32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_paths_map_to_transformers_keys() {
        assert_eq!(
            checkpoint_key("vision.merger.fc1.weight").unwrap().0,
            "visual.merger.mlp.0.weight"
        );
        assert_eq!(
            checkpoint_key("vision.blocks.3.attn.qkv.bias").unwrap().0,
            "visual.blocks.3.attn.qkv.bias"
        );
        assert_eq!(
            checkpoint_key("text.layers.1.self_attn.q_proj.weight")
                .unwrap()
                .0,
            "model.layers.1.self_attn.q_proj.weight"
        );
        assert_eq!(
            checkpoint_key("text.lm_head.weight").unwrap().0,
            "lm_head.weight"
        );
        assert_eq!(
            checkpoint_key("vision.patch_embed.weight").unwrap(),
            (
                "visual.patch_embed.proj.weight".to_string(),
                Layout::PatchKernel
            )
        );
        assert!(checkpoint_key("text.layers.0.self_attn.q_proj.lora.a").is_none());
        // A bare `Param` field has no `.weight` in its module path.
        assert_eq!(
            checkpoint_key("text.embed_tokens").unwrap().0,
            "model.embed_tokens.weight"
        );
    }
}
