//! Built-in LLaVA-NeXT shapes for `adamllm init`: random-weight folders in transformers'
//! `LlavaNextForConditionalGeneration` layout with the tiny Llama 3 tokenizer, the authors'
//! image token (`<|reserved_special_token_4|>`), a CLIP tower and the anyres processor.
//! The tiny and small shapes scale the image geometry down (56 / 112-pixel crops, the real
//! pinpoints scaled alike) so that an image costs tens of tokens, not thousands.

use std::path::Path;

use serde_json::json;

use super::config::{ClipVisionConfig, LlavaNextConfig, default_pinpoints};
use crate::io::{FileError, write_json_atomic};
use crate::models::decoder::decoder_layout;
use crate::models::init::{Init, LayoutEntry, write_preset_checkpoint};
use crate::models::llama::presets::{
    preset_config as llama_preset, tiny_llama_token, write_llama_files,
};

/// The LLaVA-NeXT presets.
pub const PRESETS: &[(&str, &str)] = &[
    (
        "llava-next-tiny",
        "LLaVA-NeXT shape (CLIP + projector + Llama 3), ~0.2M parameters, 56-pixel crops (tests)",
    ),
    (
        "llava-next-small",
        "LLaVA-NeXT shape, ~31M parameters, 112-pixel crops (benchmarks)",
    ),
    (
        "llava-next-8b",
        "the shapes of LLaVA-NeXT-Llama3-8B (the paper's synthesizer), 8,354,752,512 parameters, bf16",
    ),
];

/// The image token of the presets (the AdaMLLM checkpoints' choice).
pub const PRESET_IMAGE_TOKEN: &str = "<|reserved_special_token_4|>";

/// The config of a LLaVA-NeXT preset.
pub fn preset_config(name: &str) -> Option<LlavaNextConfig> {
    let (text_preset, vision) = match name {
        "llava-next-tiny" => (
            "llama-tiny",
            ClipVisionConfig {
                hidden_size: 32,
                intermediate_size: 64,
                num_hidden_layers: 2,
                num_attention_heads: 4,
                image_size: 56,
                ..ClipVisionConfig::clip_vit_large_336()
            },
        ),
        "llava-next-small" => (
            "llama-small",
            ClipVisionConfig {
                hidden_size: 256,
                intermediate_size: 1024,
                num_hidden_layers: 6,
                num_attention_heads: 4,
                image_size: 112,
                ..ClipVisionConfig::clip_vit_large_336()
            },
        ),
        "llava-next-8b" => ("llama3-8b", ClipVisionConfig::clip_vit_large_336()),
        _ => return None,
    };
    let text_config = llama_preset(text_preset)?;
    let scale = |v: usize| v * vision.image_size / 336;
    let pinpoints = default_pinpoints()
        .into_iter()
        .map(|[h, w]| [scale(h), scale(w)])
        .collect();
    Some(LlavaNextConfig {
        architectures: Some(vec!["LlavaNextForConditionalGeneration".into()]),
        model_type: "llava_next".into(),
        image_token_index: tiny_llama_token(PRESET_IMAGE_TOKEN),
        projector_hidden_act: "gelu".into(),
        vision_feature_layer: -2,
        vision_feature_select_strategy: "default".into(),
        image_grid_pinpoints: pinpoints,
        image_seq_length: vision.grid() * vision.grid(),
        vision_config: vision,
        tie_word_embeddings: false,
        torch_dtype: text_config.torch_dtype.clone(),
        transformers_version: Some("4.47.1".into()),
        text_config,
    })
}

/// Every checkpoint key of a LLaVA-NeXT config, with shapes and initializers.
pub fn checkpoint_layout(cfg: &LlavaNextConfig) -> Vec<LayoutEntry> {
    let v = &cfg.vision_config;
    let (e, m, std) = (v.hidden_size, v.intermediate_size, v.initializer_range);
    let te = cfg.text_config.hidden_size;
    let vm = "vision_tower.vision_model";
    let mut out = Vec::new();
    let mut push =
        |name: String, shape: Vec<usize>, init: Init| out.push(LayoutEntry { name, shape, init });
    let norm = |push: &mut dyn FnMut(String, Vec<usize>, Init), p: String| {
        push(format!("{p}.weight"), vec![e], Init::Ones);
        push(format!("{p}.bias"), vec![e], Init::Zeros);
    };
    push(
        format!("{vm}.embeddings.class_embedding"),
        vec![e],
        Init::Normal(std),
    );
    push(
        format!("{vm}.embeddings.patch_embedding.weight"),
        vec![e, v.num_channels, v.patch_size, v.patch_size],
        Init::Normal(std),
    );
    push(
        format!("{vm}.embeddings.position_embedding.weight"),
        vec![v.num_positions(), e],
        Init::Normal(std),
    );
    norm(&mut push, format!("{vm}.pre_layrnorm"));
    for i in 0..v.num_hidden_layers {
        let p = format!("{vm}.encoder.layers.{i}");
        for n in ["q_proj", "k_proj", "v_proj", "out_proj"] {
            push(
                format!("{p}.self_attn.{n}.weight"),
                vec![e, e],
                Init::Normal(std),
            );
            push(format!("{p}.self_attn.{n}.bias"), vec![e], Init::Zeros);
        }
        norm(&mut push, format!("{p}.layer_norm1"));
        push(format!("{p}.mlp.fc1.weight"), vec![m, e], Init::Normal(std));
        push(format!("{p}.mlp.fc1.bias"), vec![m], Init::Zeros);
        push(format!("{p}.mlp.fc2.weight"), vec![e, m], Init::Normal(std));
        push(format!("{p}.mlp.fc2.bias"), vec![e], Init::Zeros);
        norm(&mut push, format!("{p}.layer_norm2"));
    }
    norm(&mut push, format!("{vm}.post_layernorm"));
    let tstd = cfg.text_config.initializer_range;
    push(
        "multi_modal_projector.linear_1.weight".into(),
        vec![te, e],
        Init::Normal(tstd),
    );
    push(
        "multi_modal_projector.linear_1.bias".into(),
        vec![te],
        Init::Zeros,
    );
    push(
        "multi_modal_projector.linear_2.weight".into(),
        vec![te, te],
        Init::Normal(tstd),
    );
    push(
        "multi_modal_projector.linear_2.bias".into(),
        vec![te],
        Init::Zeros,
    );
    // transformers initializes image_newline as randn · hidden^-1/2.
    push(
        "image_newline".into(),
        vec![te],
        Init::Normal(1.0 / (te as f64).sqrt()),
    );
    out.extend(decoder_layout(
        &cfg.text_config.decoder_config(),
        "language_model.",
        tstd,
    ));
    out
}

/// Writes the non-weight files of a LLaVA-NeXT folder: config, tokenizer, generation config,
/// `preprocessor_config.json` and `processor_config.json` (the image token and patch size).
pub fn write_llava_files(out: &Path, cfg: &LlavaNextConfig) -> Result<(), FileError> {
    write_llama_files(out, &cfg.text_config)?;
    write_json_atomic(&out.join("config.json"), cfg)?;
    let crop = cfg.vision_config.image_size;
    write_json_atomic(
        &out.join("preprocessor_config.json"),
        &json!({
            "aspect_ratio_setting": "anyres",
            "crop_size": {"height": crop, "width": crop},
            "do_center_crop": true,
            "do_convert_rgb": true,
            "do_normalize": true,
            "do_pad": true,
            "do_rescale": true,
            "do_resize": true,
            "image_grid_pinpoints": cfg.image_grid_pinpoints,
            "image_mean": [0.48145466, 0.4578275, 0.40821073],
            "image_processor_type": "LlavaNextImageProcessor",
            "image_std": [0.26862954, 0.26130258, 0.27577711],
            "processor_class": "LlavaNextProcessor",
            "resample": 3,
            "rescale_factor": 0.00392156862745098,
            "size": {"shortest_edge": crop}
        }),
    )?;
    write_json_atomic(
        &out.join("processor_config.json"),
        &json!({
            "image_token": PRESET_IMAGE_TOKEN,
            "patch_size": cfg.vision_config.patch_size,
            "processor_class": "LlavaNextProcessor",
            "vision_feature_select_strategy": cfg.vision_feature_select_strategy
        }),
    )
}

/// Writes a random-weight folder of preset `name`; returns its parameter count.
pub fn write_preset(name: &str, out: &Path, seed: u64) -> Result<usize, FileError> {
    let cfg = preset_config(name)
        .ok_or_else(|| FileError::new(out, format!("unknown LLaVA-NeXT preset {name:?}")))?;
    write_llava_files(out, &cfg)?;
    write_preset_checkpoint(out, &checkpoint_layout(&cfg), seed, name == "llava-next-8b")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::init::layout_parameters;

    #[test]
    fn presets_validate_and_the_8b_shape_counts_like_the_release() {
        for (name, _) in PRESETS {
            preset_config(name).unwrap().validate().unwrap();
        }
        let cfg = preset_config("llava-next-8b").unwrap();
        // AdaptLLM/visual-instruction-synthesizer: Llama-3-8B + CLIP-L/336 + projector +
        // image_newline (tests/fixtures/real_shapes.json).
        assert_eq!(layout_parameters(&checkpoint_layout(&cfg)), 8_354_752_512);
    }
}
