//! LoRA: attaching adapters to named linear layers, merging them into the dense weights and
//! exporting them as a PEFT adapter.
//!
//! The adapter layer itself is [`crate::models::layers::LoraAdapter`]. Initialization follows
//! PEFT's default (`init_lora_weights=True`): `A` Kaiming-uniform with `a = √5`, i.e.
//! uniform in `±1/√in`, and `B` zero, so a fresh adapter leaves the model unchanged.

use std::path::Path;

use burn::module::Param;
use burn::tensor::{Device, Tensor};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::json;

use crate::io::{FileError, write_json_atomic};
use crate::models::checkpoint::{NamedTensor, StorageDtype, write_safetensors};
use crate::models::layers::{Linear, LoraAdapter, tensor_from_vec, tensor_to_vec, transpose_2d};
use crate::models::qwen2_vl::Qwen2VlModel;
use crate::models::qwen2_vl::export::transformers_name;

/// File names of a PEFT adapter folder.
pub const ADAPTER_CONFIG: &str = "adapter_config.json";
/// PEFT's adapter weights file.
pub const ADAPTER_WEIGHTS: &str = "adapter_model.safetensors";

/// LoRA settings.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraSettings {
    /// Rank `r`.
    pub rank: usize,
    /// `α` (the scale is `α / r`).
    pub alpha: f64,
    /// Dropout on the adapter input.
    pub dropout: f64,
    /// Module names to wrap (last path component: `q_proj`, `qkv`, ...).
    pub targets: Vec<String>,
}

/// Calls `f` with the module path (`text.layers.0.self_attn.q_proj`) of every linear layer of
/// the model, in a fixed order.
pub fn for_each_linear(model: &mut Qwen2VlModel, mut f: impl FnMut(&str, &mut Linear)) {
    if let Some(vision) = model.vision.as_mut() {
        f("vision.patch_embed", &mut vision.patch_embed);
        for (i, block) in vision.blocks.iter_mut().enumerate() {
            let p = format!("vision.blocks.{i}");
            f(&format!("{p}.attn.qkv"), &mut block.attn.qkv);
            f(&format!("{p}.attn.proj"), &mut block.attn.proj);
            f(&format!("{p}.mlp.fc1"), &mut block.mlp.fc1);
            f(&format!("{p}.mlp.fc2"), &mut block.mlp.fc2);
        }
        f("vision.merger.fc1", &mut vision.merger.fc1);
        f("vision.merger.fc2", &mut vision.merger.fc2);
    }
    for (i, layer) in model.text.layers.iter_mut().enumerate() {
        let p = format!("text.layers.{i}");
        let a = &mut layer.self_attn;
        f(&format!("{p}.self_attn.q_proj"), &mut a.q_proj);
        f(&format!("{p}.self_attn.k_proj"), &mut a.k_proj);
        f(&format!("{p}.self_attn.v_proj"), &mut a.v_proj);
        f(&format!("{p}.self_attn.o_proj"), &mut a.o_proj);
        let m = &mut layer.mlp;
        f(&format!("{p}.mlp.gate_proj"), &mut m.gate_proj);
        f(&format!("{p}.mlp.up_proj"), &mut m.up_proj);
        f(&format!("{p}.mlp.down_proj"), &mut m.down_proj);
    }
    if let Some(head) = model.text.lm_head.as_mut() {
        f("text.lm_head", head);
    }
}

/// Whether the linear layer at `path` is a LoRA target: the last component of its
/// transformers name (`q_proj`, `qkv`, `fc1`; the merger's layers are `0` and `2`) is listed,
/// as PEFT matches `target_modules` names. The patch embedding (a Conv3d in transformers,
/// which PEFT's LoRA cannot wrap) never is.
pub fn is_target(path: &str, targets: &[String]) -> bool {
    if path == "vision.patch_embed" {
        return false;
    }
    let name = transformers_name(path);
    let last = name.rsplit('.').next().unwrap_or(&name);
    targets.iter().any(|t| t == last)
}

/// Attaches fresh adapters (seeded) to every target layer; returns how many were attached.
pub fn attach_lora(
    model: &mut Qwen2VlModel,
    settings: &LoraSettings,
    seed: u64,
    device: &Device,
) -> usize {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x4c6f_5241);
    let mut count = 0;
    let dtype = model.text.embed_tokens.val().dtype();
    for_each_linear(model, |path, linear| {
        if !is_target(path, &settings.targets) {
            return;
        }
        let (fan_in, fan_out) = (linear.in_features(), linear.out_features());
        let bound = 1.0 / (fan_in as f64).sqrt();
        let a: Vec<f32> = (0..fan_in * settings.rank)
            .map(|_| rng.random_range(-bound..bound) as f32)
            .collect();
        linear.lora = Some(LoraAdapter {
            a: Param::from_tensor(tensor_from_vec(a, [fan_in, settings.rank], device, dtype)),
            b: Param::from_tensor(Tensor::zeros([settings.rank, fan_out], (device, dtype))),
            dropout: burn::nn::DropoutConfig::new(settings.dropout).init(),
            scale: settings.alpha / settings.rank as f64,
        });
        count += 1;
    });
    count
}

/// Adds every adapter's `(α/r)·A·B` into its dense weight and removes the adapters.
pub fn merge_lora(model: &mut Qwen2VlModel) {
    for_each_linear(model, |_, linear| {
        if let Some(lora) = linear.lora.take() {
            let merged = linear.weight.val() + lora.delta_weight();
            linear.weight = Param::from_tensor(merged.detach());
        }
    });
}

/// The adapters as PEFT names them: `base_model.model.<key>.lora_A.weight` (`[r, in]`) and
/// `...lora_B.weight` (`[out, r]`).
pub fn peft_tensors(model: &mut Qwen2VlModel) -> Vec<NamedTensor> {
    let mut out = Vec::new();
    for_each_linear(model, |path, linear| {
        let Some(lora) = &linear.lora else { return };
        let key = format!("base_model.model.{}", transformers_name(path));
        let [fan_in, r] = lora.a.dims();
        let [_, fan_out] = lora.b.dims();
        out.push(NamedTensor {
            name: format!("{key}.lora_A.weight"),
            shape: vec![r, fan_in],
            values: transpose_2d(&tensor_to_vec(lora.a.val()), fan_in, r),
        });
        out.push(NamedTensor {
            name: format!("{key}.lora_B.weight"),
            shape: vec![fan_out, r],
            values: transpose_2d(&tensor_to_vec(lora.b.val()), r, fan_out),
        });
    });
    out
}

/// Writes a PEFT adapter folder (`adapter_config.json` + `adapter_model.safetensors`) that
/// `peft.PeftModel.from_pretrained(base, dir)` loads.
pub fn save_peft_adapter(
    model: &mut Qwen2VlModel,
    settings: &LoraSettings,
    base_model_dir: &Path,
    out: &Path,
) -> Result<(), FileError> {
    std::fs::create_dir_all(out).map_err(|e| FileError::io(out, e))?;
    let tensors = peft_tensors(model);
    write_safetensors(&out.join(ADAPTER_WEIGHTS), &tensors, StorageDtype::F32)?;
    let base = std::fs::canonicalize(base_model_dir).unwrap_or(base_model_dir.to_path_buf());
    let config = json!({
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "r": settings.rank,
        "lora_alpha": settings.alpha,
        "lora_dropout": settings.dropout,
        "target_modules": settings.targets,
        "bias": "none",
        "fan_in_fan_out": false,
        "inference_mode": true,
        "base_model_name_or_path": base.to_string_lossy(),
        "modules_to_save": null,
        "init_lora_weights": true,
        "use_rslora": false,
        "use_dora": false,
        "layers_to_transform": null,
        "layers_pattern": null,
        "rank_pattern": {},
        "alpha_pattern": {},
        "revision": null
    });
    write_json_atomic(&out.join(ADAPTER_CONFIG), &config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peft_prefixes() {
        assert_eq!(
            transformers_name("text.layers.2.mlp.down_proj"),
            "model.layers.2.mlp.down_proj"
        );
        assert_eq!(
            transformers_name("vision.merger.fc2"),
            "visual.merger.mlp.2"
        );
        assert!(is_target(
            "text.layers.0.self_attn.q_proj",
            &["q_proj".to_string()]
        ));
        assert!(!is_target(
            "vision.blocks.0.attn.qkv",
            &["q_proj".to_string()]
        ));
        // transformers calls the merger's layers mlp.0 / mlp.2, so `fc1` (PEFT) means the
        // vision blocks' fc1 only.
        let fc1 = ["fc1".to_string()];
        assert!(is_target("vision.blocks.1.mlp.fc1", &fc1));
        assert!(!is_target("vision.merger.fc1", &fc1));
        assert!(!is_target(
            "vision.patch_embed",
            &["patch_embed".to_string()]
        ));
    }
}
