//! The checkpoint key layout of Qwen2-VL (transformers 4.47 names and PyTorch shapes),
//! and random initialization as transformers' `_init_weights` does it.

use super::config::Qwen2VlConfig;
use crate::models::checkpoint::NamedTensor;
pub use crate::models::init::{Init, LayoutEntry, random_tensors};

/// Every key a checkpoint of this config holds, in a stable order.
pub fn checkpoint_layout(cfg: &Qwen2VlConfig) -> Vec<LayoutEntry> {
    let std = cfg.initializer_range;
    let mut out = Vec::new();
    let mut push =
        |name: String, shape: Vec<usize>, init: Init| out.push(LayoutEntry { name, shape, init });
    let v = &cfg.vision_config;
    let e = v.embed_dim;
    push(
        "visual.patch_embed.proj.weight".into(),
        vec![
            e,
            v.in_channels,
            v.temporal_patch_size,
            v.patch_size,
            v.patch_size,
        ],
        Init::Normal(std),
    );
    for i in 0..v.depth {
        let p = format!("visual.blocks.{i}");
        for n in ["norm1", "norm2"] {
            push(format!("{p}.{n}.weight"), vec![e], Init::Ones);
            push(format!("{p}.{n}.bias"), vec![e], Init::Zeros);
        }
        push(
            format!("{p}.attn.qkv.weight"),
            vec![3 * e, e],
            Init::Normal(std),
        );
        push(format!("{p}.attn.qkv.bias"), vec![3 * e], Init::Zeros);
        push(
            format!("{p}.attn.proj.weight"),
            vec![e, e],
            Init::Normal(std),
        );
        push(format!("{p}.attn.proj.bias"), vec![e], Init::Zeros);
        let m = v.mlp_hidden_dim();
        push(format!("{p}.mlp.fc1.weight"), vec![m, e], Init::Normal(std));
        push(format!("{p}.mlp.fc1.bias"), vec![m], Init::Zeros);
        push(format!("{p}.mlp.fc2.weight"), vec![e, m], Init::Normal(std));
        push(format!("{p}.mlp.fc2.bias"), vec![e], Init::Zeros);
    }
    let f = v.merger_hidden_dim();
    push("visual.merger.ln_q.weight".into(), vec![e], Init::Ones);
    push("visual.merger.ln_q.bias".into(), vec![e], Init::Zeros);
    push(
        "visual.merger.mlp.0.weight".into(),
        vec![f, f],
        Init::Normal(std),
    );
    push("visual.merger.mlp.0.bias".into(), vec![f], Init::Zeros);
    push(
        "visual.merger.mlp.2.weight".into(),
        vec![v.hidden_size, f],
        Init::Normal(std),
    );
    push(
        "visual.merger.mlp.2.bias".into(),
        vec![v.hidden_size],
        Init::Zeros,
    );

    out.extend(crate::models::decoder::decoder_layout(
        &super::decoder_config(cfg),
        "",
        std,
    ));
    out
}

/// Total parameter count of a config.
pub fn parameter_count(cfg: &Qwen2VlConfig) -> usize {
    checkpoint_layout(cfg)
        .iter()
        .map(|e| e.shape.iter().product::<usize>())
        .sum()
}

/// Random weights for a config, deterministic in `seed`.
pub fn random_weights(cfg: &Qwen2VlConfig, seed: u64) -> Vec<NamedTensor> {
    random_tensors(checkpoint_layout(cfg), seed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_of_a_real_2b_config_has_the_expected_size() {
        // Qwen2-VL-2B-Instruct's published shape: ~2.21B parameters, tied embeddings.
        let cfg: Qwen2VlConfig = serde_json::from_str(
            r#"{"hidden_size": 1536, "intermediate_size": 8960, "num_hidden_layers": 28,
                "num_attention_heads": 12, "num_key_value_heads": 2, "vocab_size": 151936,
                "tie_word_embeddings": true, "rope_theta": 1000000.0,
                "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]},
                "vision_config": {"depth": 32, "embed_dim": 1280, "hidden_size": 1536,
                  "mlp_ratio": 4, "num_heads": 16}}"#,
        )
        .unwrap();
        cfg.validate().unwrap();
        let n = parameter_count(&cfg);
        assert!((2_200_000_000..2_220_000_000).contains(&n), "{n}");
        let layout = checkpoint_layout(&cfg);
        assert!(layout.iter().all(|e| e.name != "lm_head.weight"));
        assert_eq!(layout.len(), 1 + 32 * 12 + 6 + 1 + 28 * 12 + 1);
    }
}
