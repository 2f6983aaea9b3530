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

/// The transformers name of one of our module or parameter paths:
/// `text.layers.0.self_attn.q_proj` → `model.layers.0.self_attn.q_proj`,
/// `vision.merger.fc1.bias` → `visual.merger.mlp.0.bias`, `text.lm_head.weight` →
/// `lm_head.weight`, `vision.patch_embed.weight` → `visual.patch_embed.proj.weight`, and the
/// bare token-embedding parameter `text.embed_tokens` → `model.embed_tokens.weight`. Used for
/// dense checkpoints and for PEFT adapter keys alike.
pub fn transformers_name(path: &str) -> String {
    if path == "text.embed_tokens" {
        return "model.embed_tokens.weight".into();
    }
    if let Some(rest) = path.strip_prefix("vision.patch_embed") {
        return format!("visual.patch_embed.proj{rest}");
    }
    if let Some(rest) = path.strip_prefix("text.lm_head") {
        return format!("lm_head{rest}");
    }
    if let Some(rest) = path.strip_prefix("text.") {
        return format!("model.{rest}");
    }
    if let Some(rest) = path.strip_prefix("vision.") {
        let rest = rest.replacen("merger.fc1", "merger.mlp.0", 1).replacen(
            "merger.fc2",
            "merger.mlp.2",
            1,
        );
        return format!("visual.{rest}");
    }
    path.to_string()
}

/// The checkpoint key and layout of a parameter path with its dims, or `None` for parameters
/// that are not part of a dense checkpoint (LoRA adapters).
fn checkpoint_key(path: &str, dims: &[usize]) -> Option<(String, Layout)> {
    if path.split('.').any(|part| part == "lora") {
        return None;
    }
    let layout = if path == "vision.patch_embed.weight" {
        Layout::PatchKernel
    } else if dims.len() == 2 && path.ends_with(".weight") {
        // Every 2-D `.weight` is a linear layer's (the token embedding's path has no `.weight`).
        Layout::Transposed
    } else {
        Layout::Same
    };
    Some((transformers_name(path), layout))
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
            let (name, layout) = checkpoint_key(&path, &dims)?;
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
            checkpoint_key("vision.merger.fc1.weight", &[8, 8])
                .unwrap()
                .0,
            "visual.merger.mlp.0.weight"
        );
        assert_eq!(
            checkpoint_key("vision.blocks.3.attn.qkv.bias", &[8])
                .unwrap()
                .0,
            "visual.blocks.3.attn.qkv.bias"
        );
        assert_eq!(
            checkpoint_key("text.layers.1.self_attn.q_proj.weight", &[8, 8])
                .unwrap()
                .0,
            "model.layers.1.self_attn.q_proj.weight"
        );
        assert_eq!(
            checkpoint_key("text.lm_head.weight", &[8, 8]).unwrap().0,
            "lm_head.weight"
        );
        assert_eq!(
            checkpoint_key("vision.patch_embed.weight", &[1176, 8]).unwrap(),
            (
                "visual.patch_embed.proj.weight".to_string(),
                Layout::PatchKernel
            )
        );
        assert!(checkpoint_key("text.layers.0.self_attn.q_proj.lora.a", &[8, 2]).is_none());
        // A bare `Param` field has no `.weight` in its module path.
        assert_eq!(
            checkpoint_key("text.embed_tokens", &[768, 8]).unwrap(),
            ("model.embed_tokens.weight".to_string(), Layout::Same)
        );
        assert_eq!(
            checkpoint_key("text.layers.1.self_attn.q_proj.weight", &[8, 8])
                .unwrap()
                .1,
            Layout::Transposed
        );
    }
}
