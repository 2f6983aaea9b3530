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
use crate::models::export::module_checkpoint_name;
use crate::models::hub::model_id_of;
use crate::models::layers::{LoraAdapter, in_dtype, tensor_from_vec, tensor_to_vec, transpose_2d};
use crate::models::{FamilyNetwork, Part};
use crate::quantize::is_quantized;

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
    /// The parts adapters may go in (the language model, plus unfrozen towers).
    pub parts: Vec<Part>,
}

/// Whether the linear layer at `path` is a LoRA target: it lies in a part the settings adapt
/// (the language model; the vision tower and projector only when the recipe trains them, as
/// LLaMA-Factory excludes frozen towers from `lora_target`) and the last component of its
/// transformers name (`q_proj`, `qkv`, `fc1`; Qwen2-VL's merger layers are `0` and `2`) is
/// listed, as PEFT matches `target_modules` names. Patch embeddings (convolutions in
/// transformers, which PEFT's LoRA cannot wrap) never are.
pub fn is_target(net: &dyn FamilyNetwork, path: &str, settings: &LoraSettings) -> bool {
    if path.ends_with("patch_embed") || path.ends_with("patch_embedding") {
        return false;
    }
    if !settings.parts.contains(&net.part_of(path)) {
        return false;
    }
    let name = module_checkpoint_name(net, path);
    let last = name.rsplit('.').next().unwrap_or(&name);
    settings.targets.iter().any(|t| t == last)
}

/// Attaches fresh f32 adapters (seeded) to every target layer; returns how many were attached.
pub fn attach_lora(
    net: &mut dyn FamilyNetwork,
    settings: &LoraSettings,
    seed: u64,
    device: &Device,
) -> usize {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x4c6f_5241);
    let mut count = 0;
    // Adapters are trainable: kept in f32 whatever the base's dtype (master weights).
    let dtype = burn::tensor::DType::F32;
    let mut targets = Vec::new();
    net.for_each_linear(&mut |path, _| targets.push(path.to_string()));
    let targets: std::collections::HashSet<String> = targets
        .into_iter()
        .filter(|p| is_target(&*net, p, settings))
        .collect();
    net.for_each_linear(&mut |path, linear| {
        if !targets.contains(path) {
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

/// Adds every adapter's `(α/r)·A·B` into its dense weight (a quantized weight dequantized
/// first) and removes the adapters.
pub fn merge_lora(net: &mut dyn FamilyNetwork) {
    net.for_each_linear(&mut |_, linear| {
        if let Some(lora) = linear.lora.take() {
            // A base stored quantized (a quantized folder) merges into its dequantized values.
            let weight = linear.weight.val();
            let weight = if is_quantized(&weight) {
                weight.dequantize()
            } else {
                weight
            };
            let merged = weight.clone() + in_dtype(lora.delta_weight(), weight.dtype());
            linear.weight = Param::from_tensor(merged.detach());
        }
    });
}

/// The adapters as PEFT names them: `base_model.model.<key>.lora_A.weight` (`[r, in]`) and
/// `...lora_B.weight` (`[out, r]`).
pub fn peft_tensors(net: &mut dyn FamilyNetwork) -> Vec<NamedTensor> {
    let mut adapted = Vec::new();
    net.for_each_linear(&mut |path, linear| {
        if linear.lora.is_some() {
            adapted.push(path.to_string());
        }
    });
    let names: std::collections::HashMap<String, String> = adapted
        .into_iter()
        .map(|p| {
            let name = module_checkpoint_name(&*net, &p);
            (p, name)
        })
        .collect();
    let mut out = Vec::new();
    net.for_each_linear(&mut |path, linear| {
        let Some(lora) = &linear.lora else { return };
        let key = format!("base_model.model.{}", names[path]);
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

/// PEFT's `target_modules` for the adapters attached: the short names (`q_proj`, ...) when
/// they pick exactly the adapted layers, else every adapted layer's full name (PEFT matches
/// a listed name against the end of each module path, so a short `q_proj` would also wrap a
/// frozen CLIP tower's `q_proj`).
pub fn peft_target_modules(net: &mut dyn FamilyNetwork, settings: &LoraSettings) -> Vec<String> {
    let mut adapted = Vec::new();
    let mut others = Vec::new();
    net.for_each_linear(&mut |path, linear| {
        if linear.lora.is_some() {
            adapted.push(path.to_string());
        } else {
            others.push(path.to_string());
        }
    });
    let short = |p: &String| {
        let name = module_checkpoint_name(&*net, p);
        name.rsplit('.').next().unwrap_or(&name).to_string()
    };
    let collides = others
        .iter()
        .filter(|p| !p.ends_with("patch_embed") && !p.ends_with("patch_embedding"))
        .any(|p| settings.targets.contains(&short(p)));
    if collides {
        adapted
            .iter()
            .map(|p| module_checkpoint_name(&*net, p))
            .collect()
    } else {
        settings.targets.clone()
    }
}

/// Writes a PEFT adapter folder (`adapter_config.json` + `adapter_model.safetensors`) that
/// `peft.PeftModel.from_pretrained(base, dir)` loads.
pub fn save_peft_adapter(
    model: &mut dyn FamilyNetwork,
    settings: &LoraSettings,
    base_model_dir: &Path,
    out: &Path,
) -> Result<(), FileError> {
    std::fs::create_dir_all(out).map_err(|e| FileError::io(out, e))?;
    let tensors = peft_tensors(model);
    let target_modules = peft_target_modules(model, settings);
    write_safetensors(&out.join(ADAPTER_WEIGHTS), &tensors, StorageDtype::F32)?;
    // A model given by hub id is named by it (and its revision), as PEFT writes it.
    let (base, revision) = match model_id_of(base_model_dir) {
        Some(id) => (id.repo.clone(), id.revision.clone()),
        None => (
            std::fs::canonicalize(base_model_dir)
                .unwrap_or(base_model_dir.to_path_buf())
                .to_string_lossy()
                .into_owned(),
            None,
        ),
    };
    let config = json!({
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "r": settings.rank,
        "lora_alpha": settings.alpha,
        "lora_dropout": settings.dropout,
        "target_modules": target_modules,
        "bias": "none",
        "fan_in_fan_out": false,
        "inference_mode": true,
        "base_model_name_or_path": base,
        "modules_to_save": null,
        "init_lora_weights": true,
        "use_rslora": false,
        "use_dora": false,
        "layers_to_transform": null,
        "layers_pattern": null,
        "rank_pattern": {},
        "alpha_pattern": {},
        "revision": revision
    });
    write_json_atomic(&out.join(ADAPTER_CONFIG), &config)
}
