//! Text generation: greedy or sampled (temperature, top-k, top-p, seed), KV cache, stop
//! tokens, `max_new_tokens`, and several prompts in one batch with left padding.

use burn::tensor::{Int, Tensor, TensorData};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::models::decoder::KvCache;
use crate::models::image::ProcessedImage;
use crate::models::layers::tensor_to_vec_async;
use crate::models::{ForwardError, Model, TokenBatch};

/// Decoding settings.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationOptions {
    /// Upper bound on generated tokens per prompt.
    pub max_new_tokens: usize,
    /// 0 means greedy; otherwise logits are divided by it before sampling.
    pub temperature: f64,
    /// Nucleus mass kept when sampling (1.0 keeps all).
    pub top_p: f64,
    /// Keep only the k most likely tokens when sampling (0 keeps all).
    pub top_k: usize,
    /// Seed of the sampler.
    pub seed: u64,
    /// Extra ids that end generation (the model's own stop ids apply unless `ignore_eos`).
    pub extra_stop_ids: Vec<u32>,
    /// Replaces the model's own stop ids (`extra_stop_ids` still apply). Synthesis uses it
    /// to write several turns: it stops at `<|endoftext|>` only, not at `<|im_end|>`.
    pub stop_ids: Option<Vec<u32>>,
    /// Generate exactly `max_new_tokens` (benchmarks).
    pub ignore_eos: bool,
}

impl Default for GenerationOptions {
    fn default() -> Self {
        Self {
            max_new_tokens: 128,
            temperature: 0.0,
            top_p: 1.0,
            top_k: 0,
            seed: 0,
            extra_stop_ids: Vec::new(),
            stop_ids: None,
            ignore_eos: false,
        }
    }
}

/// Why a sequence ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// A stop token was produced (it is not included in the output).
    Stop,
    /// `max_new_tokens` was reached.
    Length,
}

/// One generated continuation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Generated {
    /// New token ids (stop token excluded).
    pub token_ids: Vec<u32>,
    /// Why it ended.
    pub finish_reason: FinishReason,
    /// Prompt length in tokens.
    pub prompt_tokens: usize,
}

/// A prompt ready for generation: ids (image pads expanded) and its processed images.
#[derive(Debug, Clone)]
pub struct PromptInput {
    /// Token ids.
    pub ids: Vec<u32>,
    /// Images in order.
    pub images: Vec<ProcessedImage>,
}

/// Generates continuations for several prompts in one left-padded batch.
pub fn generate(
    model: &Model,
    prompts: &[PromptInput],
    options: &GenerationOptions,
) -> Result<Vec<Generated>, ForwardError> {
    pollster::block_on(generate_async(model, prompts, options))
}

/// [`generate`] for async callers: logits are read back with an await between steps, which
/// is what WebGPU in a browser needs (a blocking readback there never completes).
pub async fn generate_async(
    model: &Model,
    prompts: &[PromptInput],
    options: &GenerationOptions,
) -> Result<Vec<Generated>, ForwardError> {
    if prompts.is_empty() {
        return Ok(Vec::new());
    }
    let mut stop_ids = if options.ignore_eos {
        Vec::new()
    } else if let Some(ids) = &options.stop_ids {
        ids.clone()
    } else {
        model.stop_token_ids()
    };
    stop_ids.extend(&options.extra_stop_ids);
    let longest = prompts.iter().map(|p| p.ids.len()).max().unwrap_or(0);
    let limit = model.spec.max_positions;
    if longest + options.max_new_tokens > limit {
        return Err(ForwardError::TooLong {
            len: longest + options.max_new_tokens,
            max: limit,
        });
    }
    let pad = model.processor.pad_id;
    let batch = TokenBatch::from_sequences(
        prompts
            .iter()
            .map(|p| (p.ids.clone(), p.images.clone()))
            .collect(),
        pad,
        true,
    );
    let (b, l) = batch.dims();
    let mut cache = KvCache::default();
    let out = model.forward(&batch, Some(&mut cache))?;
    let mut next_pos: Vec<i64> = out.positions.iter().map(|p| p.next_position).collect();
    let last = out.hidden.narrow(1, l - 1, 1);
    let mut logits = model
        .text()
        .logits(last)
        .reshape([b, model.spec.vocab_size]);
    let mut key_mask = batch.mask.clone();
    let mut rng = ChaCha8Rng::seed_from_u64(options.seed);
    let mut results: Vec<Generated> = prompts
        .iter()
        .map(|p| Generated {
            token_ids: Vec::new(),
            finish_reason: FinishReason::Length,
            prompt_tokens: p.ids.len(),
        })
        .collect();
    let mut done = vec![false; b];
    for step in 0..options.max_new_tokens {
        let host = tensor_to_vec_async(logits).await;
        let vocab = model.spec.vocab_size;
        let mut chosen = Vec::with_capacity(b);
        for r in 0..b {
            let row = &host[r * vocab..(r + 1) * vocab];
            let token = if done[r] {
                pad
            } else {
                pick_token(row, options, &mut rng)
            };
            if !done[r] {
                if stop_ids.contains(&token) {
                    done[r] = true;
                    results[r].finish_reason = FinishReason::Stop;
                } else {
                    results[r].token_ids.push(token);
                }
            }
            chosen.push(token);
        }
        if done.iter().all(|d| *d) || step + 1 == options.max_new_tokens {
            break;
        }
        // One decode step for every row (finished rows feed padding that nobody reads).
        for m in key_mask.iter_mut() {
            m.push(true);
        }
        let positions: Vec<[Vec<i64>; 3]> = next_pos
            .iter()
            .map(|p| [vec![*p], vec![*p], vec![*p]])
            .collect();
        for p in next_pos.iter_mut() {
            *p += 1;
        }
        let cached = cache.len();
        let inputs = model.attention_inputs(&positions, &key_mask, cached);
        let ids: Vec<i64> = chosen.iter().map(|&t| t as i64).collect();
        let ids = Tensor::<2, Int>::from_data(TensorData::new(ids, [b, 1]), &model.device);
        let embeds = model.text().embed(ids, model.dtype);
        let hidden = model.text().decode(embeds, &inputs, Some(&mut cache));
        logits = model
            .text()
            .logits(hidden)
            .reshape([b, model.spec.vocab_size]);
    }
    Ok(results)
}

/// Chooses the next token from one row of logits.
pub fn pick_token(logits: &[f32], options: &GenerationOptions, rng: &mut ChaCha8Rng) -> u32 {
    if options.temperature <= 0.0 {
        return argmax(logits) as u32;
    }
    let t = options.temperature as f32;
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
    if options.top_k > 0 {
        order.truncate(options.top_k);
    }
    let max = logits[order[0]] / t;
    let weights: Vec<f64> = order
        .iter()
        .map(|&i| ((logits[i] / t - max) as f64).exp())
        .collect();
    let total: f64 = weights.iter().sum();
    // Nucleus: the smallest prefix whose mass reaches top_p.
    let mut keep = weights.len();
    if options.top_p < 1.0 {
        let mut acc = 0.0;
        for (i, w) in weights.iter().enumerate() {
            acc += w / total;
            if acc >= options.top_p {
                keep = i + 1;
                break;
            }
        }
    }
    let kept_total: f64 = weights[..keep].iter().sum();
    let u = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * kept_total;
    let mut acc = 0.0;
    for (i, w) in weights[..keep].iter().enumerate() {
        acc += w;
        if u < acc {
            return order[i] as u32;
        }
    }
    order[keep - 1] as u32
}

/// Index of the largest value (first one on ties, as `torch.argmax` on CPU).
pub fn argmax(values: &[f32]) -> usize {
    let mut best = 0;
    for (i, v) in values.iter().enumerate() {
        if *v > values[best] {
            best = i;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_and_sampling_choices() {
        let logits = [0.1f32, 2.0, 1.9, -3.0];
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let greedy = GenerationOptions::default();
        assert_eq!(pick_token(&logits, &greedy, &mut rng), 1);
        let top1 = GenerationOptions {
            temperature: 1.0,
            top_k: 1,
            ..Default::default()
        };
        assert_eq!(pick_token(&logits, &top1, &mut rng), 1);
        let nucleus = GenerationOptions {
            temperature: 0.7,
            top_p: 0.5,
            ..Default::default()
        };
        for _ in 0..50 {
            assert_eq!(pick_token(&logits, &nucleus, &mut rng), 1);
        }
        let wide = GenerationOptions {
            temperature: 1.0,
            ..Default::default()
        };
        let mut seen = [0usize; 4];
        for _ in 0..2000 {
            seen[pick_token(&logits, &wide, &mut rng) as usize] += 1;
        }
        assert!(
            seen[1] > 600 && seen[2] > 500 && seen[0] > 100 && seen[3] < 30,
            "{seen:?}"
        );
    }
}
