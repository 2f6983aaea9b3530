//! `adamllm bench train`: training throughput and peak memory, and the memory soak run.

use std::process::Command;
use std::time::Instant;

use adamllm::burn::tensor::DType;
use adamllm::device::{DeviceChoice, select_device};
use adamllm::models::registry::family_of_preset;
use adamllm::models::{LoadOptions, Model, TokenBatch};
use adamllm::precision::{DTypeChoice, LossScaler};
use adamllm::quantize::Quantization;
use adamllm::train::data_parallel::{Replicas, Schedule, parallel_step};
use adamllm::train::optimizer::{AdamW, AdamWSettings, ParamGroup, trainable_numel};
use adamllm::train::recipe::TrainRecipe;
use adamllm::train::trainer::{
    accumulate_and_step, current_rss_mib, peak_rss_mib, prepare_trainable,
};
use anyhow::{Context, Result, bail};
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};

/// Size of the synthetic workload.
#[derive(Debug, Clone, Copy)]
pub struct TrainShape {
    /// Sequences per step.
    pub batch: usize,
    /// Tokens per sequence.
    pub seq_len: usize,
    /// Untimed steps.
    pub warmup: usize,
    /// Timed steps.
    pub steps: usize,
}

/// One result line.
#[derive(Debug, Serialize, Deserialize)]
pub struct TrainRow {
    bench: String,
    framework: String,
    preset: String,
    mode: String,
    device: String,
    adapter: String,
    parameters: usize,
    trainable_params: usize,
    batch: usize,
    pub(crate) seq_len: usize,
    steps: usize,
    tokens_per_s: f64,
    pub(crate) step_ms: f64,
    pub(crate) peak_rss_mib: f64,
    /// Whether the fused ops ran (absent in PyTorch rows).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    fused_ops: Option<bool>,
}

/// A mode as given: `lora` or `full`, optionally with the base's dtype, `gc` for gradient
/// checkpointing and `q8`/`q4` for a quantized base (`lora:bf16`, `lora:bf16:gc`,
/// `lora:f16:gc:q4`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Mode<'a> {
    pub(crate) kind: &'a str,
    pub(crate) dtype: DType,
    pub(crate) gradient_checkpointing: bool,
    pub(crate) quantize: Option<Quantization>,
}

fn parse_mode(mode: &str) -> Result<Mode<'_>> {
    let mut parts = mode.split(':');
    let kind = parts.next().unwrap_or(mode);
    let mut parsed = Mode {
        kind,
        dtype: DType::F32,
        gradient_checkpointing: false,
        quantize: None,
    };
    for part in parts {
        if part == "gc" {
            parsed.gradient_checkpointing = true;
            continue;
        }
        if let Ok(q) = part.parse::<Quantization>() {
            parsed.quantize = Some(q);
            continue;
        }
        let choice: DTypeChoice = part
            .parse()
            .map_err(|e| anyhow::anyhow!("mode {mode:?}: {e} (or gc, q8, q4)"))?;
        parsed.dtype = choice
            .exact()
            .with_context(|| format!("mode {mode:?}: name the dtype (f32, f16 or bf16)"))?;
    }
    Ok(parsed)
}

/// A mode as given, checked whole: its parts and its kind (`full` or `lora`).
pub(crate) fn check_mode(mode: &str) -> Result<Mode<'_>> {
    let parsed = parse_mode(mode)?;
    recipe_for(parsed)?;
    Ok(parsed)
}

fn recipe_for(mode: Mode<'_>) -> Result<TrainRecipe> {
    let pairs: Vec<(&str, &str)> = match mode.kind {
        "full" => vec![
            ("finetuning_type", "full"),
            ("freeze_vision_tower", "false"),
            ("freeze_multi_modal_projector", "false"),
        ],
        "lora" => vec![
            ("finetuning_type", "lora"),
            ("lora_rank", "8"),
            ("lora_alpha", "16"),
        ],
        other => bail!("unknown mode {other:?}; expected full or lora"),
    };
    let mut pairs: Vec<(String, String)> = pairs
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    pairs.push((
        "gradient_checkpointing".into(),
        mode.gradient_checkpointing.to_string(),
    ));
    if let Some(q) = mode.quantize {
        pairs.push(("quantize".into(), q.to_string()));
    }
    TrainRecipe::load(None, &pairs).map_err(anyhow::Error::msg)
}

/// A preset model loaded for training with its synthetic batch.
struct Workload {
    model: Model,
    batch: TokenBatch,
    labels: Vec<Vec<i64>>,
    adapter: String,
    parameters: usize,
    /// Keeps the model folder alive.
    _dir: tempfile::TempDir,
}

/// Loads a fresh preset model for training and makes the synthetic batch.
fn setup(preset_name: &str, mode: &str, device_name: &str, shape: TrainShape) -> Result<Workload> {
    let family = family_of_preset(preset_name)
        .ok_or_else(|| anyhow::anyhow!("unknown preset {preset_name:?}"))?;
    let tmp = tempfile::tempdir()?;
    let parameters = family.write_preset(preset_name, tmp.path(), 0)?;
    // The peak should cover loading and training (as bench/torch_train.py's does), not the
    // generation of the random weights that the PyTorch side reads from disk.
    crate::bench::reset_peak_rss();
    // The first device of a data-parallel configuration (`cpu+cpu`) holds the master model.
    let first = device_name.split('+').next().unwrap_or(device_name).trim();
    let choice: DeviceChoice = first.parse().map_err(anyhow::Error::msg)?;
    let selected = select_device(choice)?;
    let mode = parse_mode(mode)?;
    let options = LoadOptions {
        quantize: mode.quantize,
        ..LoadOptions::dtype(mode.dtype)
    };
    let mut model = Model::load_with(tmp.path(), &selected.device.clone().autodiff(), &options)?;
    let vocab = model
        .processor
        .tokenizer
        .get_vocab_size(true)
        .min(model.spec.vocab_size);
    prepare_trainable(&mut model, &recipe_for(mode)?);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let high = vocab.saturating_sub(100).max(1) as u32;
    let sequences: Vec<Vec<u32>> = (0..shape.batch)
        .map(|_| {
            (0..shape.seq_len)
                .map(|_| rng.random_range(0..high))
                .collect()
        })
        .collect();
    let labels = sequences
        .iter()
        .map(|s| s.iter().map(|&t| t as i64).collect())
        .collect();
    let batch = TokenBatch::from_sequences(
        sequences.into_iter().map(|s| (s, Vec::new())).collect(),
        model.processor.pad_id,
        false,
    );
    Ok(Workload {
        model,
        batch,
        labels,
        adapter: selected.description,
        parameters,
        _dir: tmp,
    })
}

/// One optimizer step: one micro-batch per device (the same batch each time).
fn step(
    model: Model,
    replicas: &mut Replicas,
    optimizer: &mut AdamW,
    batch: &TokenBatch,
    labels: &[Vec<i64>],
    tokens: usize,
) -> Result<Model> {
    let group = |_: &str| ParamGroup {
        lr_multiplier: 1.0,
        decay: true,
    };
    if replicas.device_count() > 1 {
        let devices = replicas.device_count();
        let (model, _) = parallel_step(
            model,
            replicas,
            optimizer,
            devices,
            tokens * devices,
            &|_| Ok((batch.clone(), labels.to_vec())),
            1e-4,
            1.0,
            &|_| 0,
            Schedule::Concurrent,
            group,
        )?;
        return Ok(model);
    }
    let (model, _) = accumulate_and_step(
        model,
        optimizer,
        1,
        tokens,
        |_| Ok((batch.clone(), labels.to_vec())),
        1e-4,
        1.0,
        |_| 0,
        group,
    )?;
    Ok(model)
}

/// The replicas of a data-parallel configuration (`cpu+cpu`: every device after the first).
fn replicas_for(model: &Model, device: &str) -> Result<Replicas> {
    let mut devices = Vec::new();
    for name in device.split('+').skip(1) {
        let choice: DeviceChoice = name.trim().parse().map_err(anyhow::Error::msg)?;
        devices.push(select_device(choice)?.device.autodiff());
    }
    Ok(Replicas::new(model, &devices))
}

/// Runs one configuration in this process, with the process's fused-ops setting.
pub fn single(preset: &str, mode: &str, device: &str, shape: TrainShape) -> Result<TrainRow> {
    let Workload {
        mut model,
        batch,
        labels,
        adapter,
        parameters,
        _dir,
    } = setup(preset, mode, device, shape)?;
    let mut replicas = replicas_for(&model, device)?;
    let devices = replicas.device_count();
    let trainable = trainable_numel(&model.network);
    let mut optimizer = AdamW::new(AdamWSettings::default());
    if model.dtype == DType::F16 {
        optimizer.loss_scaler = Some(LossScaler::default());
    }
    // Every token but the first is a supervised target (labels are shifted by one).
    let tokens = shape.batch * (shape.seq_len - 1);
    // Untimed warm-up steps, then the timed ones.
    let mut t = Instant::now();
    for i in 0..shape.warmup + shape.steps {
        if i == shape.warmup {
            t = Instant::now();
        }
        model = step(
            model,
            &mut replicas,
            &mut optimizer,
            &batch,
            &labels,
            tokens,
        )?;
    }
    // The last step's parameter update has been read back by the next loss at the latest;
    // read one weight so the final update is finished too.
    let _ = adamllm::models::layers::tensor_to_vec(model.text().norm.weight.val());
    let seconds = t.elapsed().as_secs_f64();
    Ok(TrainRow {
        bench: "train".into(),
        framework: "adamllm".into(),
        preset: preset.into(),
        mode: mode.into(),
        device: device.into(),
        adapter,
        parameters,
        trainable_params: trainable,
        batch: shape.batch,
        seq_len: shape.seq_len,
        steps: shape.steps,
        tokens_per_s: (devices * shape.batch * shape.seq_len * shape.steps) as f64 / seconds,
        step_ms: seconds * 1e3 / shape.steps as f64,
        peak_rss_mib: peak_rss_mib().unwrap_or(f64::NAN),
        fused_ops: Some(adamllm::kernels::fused_ops_enabled()),
    })
}

/// Runs every configuration, each in a child process, and prints a table.
pub fn all(
    presets: &str,
    modes: &str,
    devices: &str,
    fused_ops: &str,
    shape: TrainShape,
) -> Result<()> {
    let exe = std::env::current_exe()?;
    let mut rows: Vec<TrainRow> = Vec::new();
    for preset in presets.split(',').map(str::trim) {
        for device in devices.split(',').map(str::trim) {
            for (mode, fused) in modes
                .split(',')
                .map(str::trim)
                .flat_map(|m| fused_ops.split(',').map(move |f| (m, f.trim())))
            {
                let out = Command::new(&exe)
                    .args([
                        "bench",
                        "train",
                        "--single",
                        "--presets",
                        preset,
                        "--modes",
                        mode,
                    ])
                    .args(["--devices", device])
                    .args(["--fused-ops", fused])
                    .args(["--batch", &shape.batch.to_string()])
                    .args(["--seq-len", &shape.seq_len.to_string()])
                    .args(["--warmup", &shape.warmup.to_string()])
                    .args(["--steps", &shape.steps.to_string()])
                    .output()
                    .context("running a benchmark child process")?;
                if !out.status.success() {
                    bail!(
                        "{preset}/{mode}/{device}/fused {fused}: {}",
                        String::from_utf8_lossy(&out.stderr)
                    );
                }
                let line = String::from_utf8_lossy(&out.stdout);
                let row: TrainRow = serde_json::from_str(line.trim())
                    .with_context(|| format!("child output {line:?}"))?;
                println!("{}", serde_json::to_string(&row)?);
                rows.push(row);
            }
        }
    }
    eprintln!(
        "\n{:<6} {:<5} {:<6} {:<5} {:>11} {:>11} {:>10} {:>9} {:>9}",
        "preset",
        "mode",
        "device",
        "fused",
        "params",
        "trainable",
        "tokens/s",
        "step ms",
        "peak MiB"
    );
    for r in &rows {
        eprintln!(
            "{:<6} {:<5} {:<8} {:<5} {:>11} {:>11} {:>10.1} {:>9.1} {:>9.0}",
            r.preset,
            r.mode,
            r.device,
            match r.fused_ops {
                Some(true) => "on",
                Some(false) => "off",
                None => "-",
            },
            r.parameters,
            r.trainable_params,
            r.tokens_per_s,
            r.step_ms,
            r.peak_rss_mib
        );
    }
    Ok(())
}

/// The soak run: `total` steps, resident memory printed every `every` steps as JSON lines.
pub fn soak(
    preset: &str,
    mode: &str,
    device: &str,
    shape: TrainShape,
    total: usize,
    every: usize,
) -> Result<()> {
    let Workload {
        mut model,
        batch,
        labels,
        adapter,
        _dir,
        ..
    } = setup(preset, mode, device, shape)?;
    let mut optimizer = AdamW::new(AdamWSettings::default());
    let tokens = shape.batch * (shape.seq_len - 1);
    let mut replicas = replicas_for(&model, device)?;
    let t = Instant::now();
    for s in 1..=total {
        model = step(
            model,
            &mut replicas,
            &mut optimizer,
            &batch,
            &labels,
            tokens,
        )?;
        if s % every.max(1) == 0 || s == 1 {
            println!(
                "{}",
                serde_json::json!({"bench": "soak", "preset": preset, "mode": mode,
                    "device": device, "adapter": adapter, "step": s,
                    "rss_mib": current_rss_mib(), "peak_rss_mib": peak_rss_mib(),
                    "seconds": t.elapsed().as_secs_f64()})
            );
        }
    }
    Ok(())
}
