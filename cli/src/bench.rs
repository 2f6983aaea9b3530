//! `adamllm bench`: throughput figures for BENCHMARKS.md (JSON lines + a table).
//! Timings are medians over repeats after a warm-up run; nothing here is asserted in tests.

use std::path::PathBuf;
use std::time::Instant;

use adamllm::burn::tensor::DType;
use adamllm::device::{DeviceChoice, select_device};
use adamllm::generation::{GenerationOptions, PromptInput, generate};
use adamllm::models::image::ImageOptions;
use adamllm::models::layers::tensor_to_vec;
use adamllm::models::registry::{family_of_preset, preset_names};
use adamllm::models::{LoadOptions, Model, TokenBatch};
use adamllm::precision::DTypeChoice;
use adamllm::quantize::Quantization;
use anyhow::Result;
use clap::Subcommand;
use serde::Serialize;

use crate::bench_train::TrainShape;

/// What to benchmark.
#[derive(Subcommand)]
pub enum BenchCommand {
    /// Prefill and decode tokens/s of the built-in presets, and peak memory while loading.
    Forward {
        /// Presets to run (comma-separated): any `adamllm init` preset (tiny, small, qwen2vl-2b, llama-tiny, llama-small, llama3-8b, llava-next-tiny, llava-next-small, llava-next-8b).
        #[arg(long, default_value = "tiny,small")]
        presets: String,
        /// Devices to run (comma-separated): cpu, wgpu, auto, vulkan, ...
        #[arg(long, default_value = "cpu,wgpu")]
        devices: String,
        /// Text tokens in the prompt (one image is added on top).
        #[arg(long, default_value_t = 128)]
        prompt_tokens: usize,
        /// Tokens generated for the decode figure.
        #[arg(long, default_value_t = 32)]
        new_tokens: usize,
        /// Prompts per batch.
        #[arg(long, default_value_t = 1)]
        batch: usize,
        /// Timed repeats (median reported).
        #[arg(long, default_value_t = 3)]
        repeats: usize,
        /// Weight dtype: f32, f16, bf16 (CPU) or auto (the preset's own: bf16 for the real
        /// shapes, where the device computes it).
        #[arg(long, default_value = "f32")]
        dtype: DTypeChoice,
        /// Weight-only quantization of the linear layers: q8 or q4 (default: dense).
        #[arg(long)]
        quantize: Option<Quantization>,
    },
    /// Evaluation throughput (examples/s): batched generation against one prompt at a time,
    /// on a synthetic VQA_RAD-style benchmark (one 224×168 image and a short question per row).
    Eval {
        /// Presets (comma-separated): any `adamllm init` preset (tiny, small, qwen2vl-2b, llama-tiny, llama-small, llama3-8b, llava-next-tiny, llava-next-small, llava-next-8b).
        #[arg(long, default_value = "tiny,small")]
        presets: String,
        /// Devices (comma-separated): cpu, wgpu, auto, vulkan, ...
        #[arg(long, default_value = "cpu")]
        devices: String,
        /// Benchmark rows.
        #[arg(long, default_value_t = 16)]
        rows: usize,
        /// Batch sizes to compare (comma-separated).
        #[arg(long, default_value = "1,8")]
        batches: String,
        /// Most new tokens per answer.
        #[arg(long, default_value_t = 32)]
        max_new_tokens: usize,
    },
    /// Synthesis throughput (images/s, generated tokens/s): batched against one image at a
    /// time, on random-weight presets and procedurally drawn slides with captions.
    Synth {
        /// Presets (comma-separated): any `adamllm init` preset (tiny, small, qwen2vl-2b, llama-tiny, llama-small, llama3-8b, llava-next-tiny, llava-next-small, llava-next-8b).
        #[arg(long, default_value = "tiny,small")]
        presets: String,
        /// Devices (comma-separated): cpu, wgpu, auto, vulkan, ...
        #[arg(long, default_value = "cpu,wgpu")]
        devices: String,
        /// Image-caption pairs.
        #[arg(long, default_value_t = 16)]
        rows: usize,
        /// Batch sizes to compare (comma-separated).
        #[arg(long, default_value = "1,8")]
        batches: String,
        /// New tokens per image.
        #[arg(long, default_value_t = 64)]
        max_new_tokens: usize,
    },
    /// Each fused op (RMSNorm, rotary embedding, chunked cross-entropy) against its composite
    /// tensor-op version: median milliseconds forward and forward + backward, on the shapes of
    /// the presets (`tokens` rows).
    Kernels {
        /// Presets whose shapes to use (comma-separated): tiny, small, qwen2vl-2b.
        #[arg(long, default_value = "tiny,small")]
        presets: String,
        /// Devices (comma-separated): cpu, wgpu, auto, vulkan, ...
        #[arg(long, default_value = "cpu,wgpu")]
        devices: String,
        /// Token rows per op (batch × sequence length).
        #[arg(long, default_value_t = 1024)]
        tokens: usize,
        /// Timed repeats (median reported).
        #[arg(long, default_value_t = 5)]
        repeats: usize,
    },
    /// Training tokens/s and peak memory of the presets, full fine-tuning and LoRA. Each
    /// configuration runs in its own process so its peak memory is its own. The workload
    /// matches `bench/torch_train.py`: random text-only sequences, every token supervised,
    /// AdamW, clipping at 1.0.
    Train {
        /// Presets (comma-separated): any `adamllm init` preset (tiny, small, qwen2vl-2b, llama-tiny, llama-small, llama3-8b, llava-next-tiny, llava-next-small, llava-next-8b).
        #[arg(long, default_value = "tiny,small")]
        presets: String,
        /// Modes (comma-separated): full (every weight trains), lora (r 8, α 16 on the
        /// language model's q,k,v,o,gate,up,down; the rest frozen); `lora:bf16`, `full:f16`,
        /// ...: the same over a half-precision base (trainable weights in f32); a `:gc` suffix
        /// (`lora:bf16:gc`) recomputes each decoder layer in backward (gradient checkpointing,
        /// which `adamllm train` does by default); `:q8` / `:q4` quantizes the frozen base
        /// (`lora:f16:gc:q4`: QLoRA).
        #[arg(long, default_value = "full,lora")]
        modes: String,
        /// Devices (comma-separated): cpu, wgpu, auto, vulkan, ...; `a+b` is one data-parallel
        /// configuration over both (`cpu+cpu`: two replicas on the CPU), one micro-batch of
        /// --batch sequences per device and step.
        #[arg(long, default_value = "cpu,wgpu")]
        devices: String,
        /// Fused ops (`adamllm::kernels`) on, off, or both (comma-separated) to compare.
        #[arg(long, default_value = "on")]
        fused_ops: String,
        /// Sequences per step.
        #[arg(long, default_value_t = 4)]
        batch: usize,
        /// Tokens per sequence.
        #[arg(long, default_value_t = 256)]
        seq_len: usize,
        /// Untimed steps first.
        #[arg(long, default_value_t = 3)]
        warmup: usize,
        /// Timed steps.
        #[arg(long, default_value_t = 10)]
        steps: usize,
        /// Soak run instead: this many steps on one configuration, printing the resident
        /// memory every `--soak-every` steps (memory must not grow).
        #[arg(long)]
        soak: Option<usize>,
        /// Report interval of the soak run.
        #[arg(long, default_value_t = 500)]
        soak_every: usize,
        /// Run the one configuration given in this process (used internally).
        #[arg(long, hide = true)]
        single: bool,
    },
    /// Peak memory of training and generation configurations, each in its own process,
    /// with PyTorch's peak for the same step beside it (`--torch PYTHON`) where it runs here.
    Memory {
        /// Presets (comma-separated): any `adamllm init` preset (tiny, small, qwen2vl-2b, llama-tiny, llama-small, llama3-8b, llava-next-tiny, llava-next-small, llava-next-8b).
        #[arg(long, default_value = "tiny")]
        presets: String,
        /// Configurations (comma-separated): `train:MODE` with a `bench train` mode
        /// (`train:lora:bf16:gc`, `train:lora:f16:gc:q4`, `train:full:f32`), or
        /// `generate:DTYPE[:q8|q4]` (`generate:bf16`, `generate:f16:q4`).
        #[arg(long, default_value = "train:lora:bf16:gc,generate:bf16:q8")]
        configs: String,
        /// Devices (comma-separated): cpu, wgpu, auto, vulkan, ...
        #[arg(long, default_value = "cpu")]
        devices: String,
        /// Text tokens per training sequence or generation prompt (batch 1).
        #[arg(long, default_value_t = 512)]
        tokens: usize,
        /// Tokens decoded by a generation configuration.
        #[arg(long, default_value_t = 8)]
        new_tokens: usize,
        /// A Python with current torch, transformers 4.47.1 and peft (`bash
        /// bench/torch-venv.sh` prints one): PyTorch's peak for each configuration it can run.
        #[arg(long)]
        torch: Option<PathBuf>,
        /// Also append the rows (JSON lines) to this file.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Run the one generation configuration given in this process (used internally).
        #[arg(long, hide = true)]
        single: bool,
    },
}

#[derive(Serialize)]
struct ForwardRow {
    bench: &'static str,
    preset: String,
    parameters: usize,
    device: String,
    adapter: String,
    dtype: &'static str,
    /// `q8`/`q4`, or null for dense weights.
    quantize: Option<String>,
    batch: usize,
    prompt_tokens: usize,
    prefill_tokens_per_s: f64,
    decode_tokens_per_s: f64,
    load_seconds: f64,
    peak_rss_mib_after_load: f64,
    /// The peak after prefill and decode too.
    peak_rss_mib: f64,
}

/// Peak resident memory of this process so far (Linux `VmHWM`), in MiB (0 where unknown).
pub fn peak_rss_mib() -> f64 {
    adamllm::train::trainer::peak_rss_mib().unwrap_or(0.0)
}

/// Resets the process's peak-memory mark (`VmHWM`) to its current resident size (Linux:
/// `/proc/self/clear_refs` ← 5), so a later [`peak_rss_mib`] leaves out what came before:
/// the train benchmark calls it after writing its random model folder, so its peak counts
/// loading and training as the PyTorch script's does, not the folder's generation.
/// Elsewhere it does nothing.
pub fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Median of the timings (the upper middle one for an even count).
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Runs a bench subcommand.
pub fn run(cmd: BenchCommand) -> Result<()> {
    match cmd {
        BenchCommand::Kernels {
            presets,
            devices,
            tokens,
            repeats,
        } => crate::bench_kernels::bench_kernels(&presets, &devices, tokens, repeats)?,
        BenchCommand::Eval {
            presets,
            devices,
            rows,
            batches,
            max_new_tokens,
        } => bench_eval(&presets, &devices, rows, &batches, max_new_tokens)?,
        BenchCommand::Synth {
            presets,
            devices,
            rows,
            batches,
            max_new_tokens,
        } => crate::bench_synth::bench_synth(&presets, &devices, rows, &batches, max_new_tokens)?,
        BenchCommand::Memory {
            presets,
            configs,
            devices,
            tokens,
            new_tokens,
            torch,
            out,
            single,
        } => {
            let shape = crate::bench_memory::MemoryShape { tokens, new_tokens };
            if single {
                let row =
                    crate::bench_memory::single_generate(&presets, &configs, &devices, shape)?;
                println!("{}", serde_json::to_string(&row)?);
            } else {
                crate::bench_memory::all(
                    &presets,
                    &configs,
                    &devices,
                    shape,
                    torch.as_deref(),
                    out.as_deref(),
                )?;
            }
        }
        BenchCommand::Train {
            presets,
            modes,
            devices,
            fused_ops,
            batch,
            seq_len,
            warmup,
            steps,
            soak,
            soak_every,
            single,
        } => {
            let shape = TrainShape {
                batch,
                seq_len,
                warmup,
                steps,
            };
            let fused = |v: &str| -> Result<bool> {
                match v.trim() {
                    "on" => Ok(true),
                    "off" => Ok(false),
                    other => anyhow::bail!("--fused-ops: expected on or off, got {other:?}"),
                }
            };
            if let Some(total) = soak {
                adamllm::kernels::set_fused_ops(fused(&fused_ops)?);
                return crate::bench_train::soak(
                    &presets, &modes, &devices, shape, total, soak_every,
                );
            }
            if single {
                adamllm::kernels::set_fused_ops(fused(&fused_ops)?);
                let row = crate::bench_train::single(&presets, &modes, &devices, shape)?;
                println!("{}", serde_json::to_string(&row)?);
                return Ok(());
            }
            for v in fused_ops.split(',') {
                fused(v)?;
            }
            crate::bench_train::all(&presets, &modes, &devices, &fused_ops, shape)?;
        }
        BenchCommand::Forward {
            presets,
            devices,
            prompt_tokens,
            new_tokens,
            batch,
            repeats,
            dtype,
            quantize,
        } => {
            let mut rows = Vec::new();
            let tmp = tempfile::tempdir()?;
            for preset_name in presets.split(',') {
                let dir = tmp.path().join(preset_name.trim());
                let parameters = write_preset(preset_name.trim(), &dir)?;
                for device_name in devices.split(',') {
                    let choice: DeviceChoice =
                        device_name.trim().parse().map_err(anyhow::Error::msg)?;
                    let selected = select_device(choice)?;
                    // The peak counts this configuration's loading, not the folder's writing
                    // or an earlier configuration's weights.
                    reset_peak_rss();
                    let t0 = Instant::now();
                    let options = LoadOptions {
                        dtype,
                        template: None,
                        quantize,
                    };
                    let model = Model::load_with(&dir, &selected.device, &options)?;
                    let load_seconds = t0.elapsed().as_secs_f64();
                    let peak = peak_rss_mib();
                    let prompt = bench_prompt(&model, prompt_tokens)?;
                    let prompts: Vec<PromptInput> = (0..batch).map(|_| prompt.clone()).collect();
                    let tokens = prompt.ids.len() * batch;
                    let time_prefill = || -> Result<f64> {
                        let t = Instant::now();
                        let b = TokenBatch::from_sequences(
                            prompts
                                .iter()
                                .map(|p| (p.ids.clone(), p.images.clone()))
                                .collect(),
                            model.processor.pad_id,
                            true,
                        );
                        let out = model.forward(&b, None)?;
                        let l = b.dims().1;
                        // Read one value back so the device has really finished.
                        let _ = tensor_to_vec(model.text().logits(out.hidden.narrow(1, l - 1, 1)));
                        Ok(t.elapsed().as_secs_f64())
                    };
                    time_prefill()?; // warm-up (shader compilation on wgpu)
                    let prefill = median(
                        (0..repeats)
                            .map(|_| time_prefill())
                            .collect::<Result<_>>()?,
                    );
                    let options = GenerationOptions {
                        max_new_tokens: new_tokens,
                        ignore_eos: true,
                        ..Default::default()
                    };
                    generate(&model, &prompts, &options)?; // warm-up
                    let total = median(
                        (0..repeats)
                            .map(|_| -> Result<f64> {
                                let t = Instant::now();
                                generate(&model, &prompts, &options)?;
                                Ok(t.elapsed().as_secs_f64())
                            })
                            .collect::<Result<_>>()?,
                    );
                    let decode_time = (total - prefill).max(1e-9);
                    rows.push(ForwardRow {
                        bench: "forward",
                        preset: preset_name.trim().to_string(),
                        parameters,
                        device: choice.to_string(),
                        adapter: selected.description.clone(),
                        dtype: adamllm::precision::dtype_name(model.dtype),
                        quantize: quantize.map(|q| q.to_string()),
                        batch,
                        prompt_tokens: prompt.ids.len(),
                        prefill_tokens_per_s: tokens as f64 / prefill,
                        decode_tokens_per_s: ((new_tokens - 1) * batch) as f64 / decode_time,
                        load_seconds,
                        peak_rss_mib_after_load: peak,
                        peak_rss_mib: peak_rss_mib(),
                    });
                    println!("{}", serde_json::to_string(rows.last().expect("row"))?);
                }
            }
            eprintln!(
                "\n{:<6} {:<6} {:>11} {:>6} {:>14} {:>14} {:>10}",
                "preset", "device", "params", "batch", "prefill tok/s", "decode tok/s", "load s"
            );
            for r in &rows {
                eprintln!(
                    "{:<6} {:<6} {:>11} {:>6} {:>14.1} {:>14.1} {:>10.2}",
                    r.preset,
                    r.device,
                    r.parameters,
                    r.batch,
                    r.prefill_tokens_per_s,
                    r.decode_tokens_per_s,
                    r.load_seconds
                );
            }
        }
    }
    Ok(())
}

/// Writes a random-weight folder of any family's preset; returns its parameter count.
pub fn write_preset(name: &str, dir: &std::path::Path) -> Result<usize> {
    let family = family_of_preset(name).ok_or_else(|| {
        anyhow::anyhow!(
            "unknown preset {name:?}; expected one of {}",
            preset_names().join(", ")
        )
    })?;
    Ok(family.write_preset(name, dir, 0)?)
}

/// A prompt of about `text_tokens` text tokens plus, for a model with a vision tower, one
/// 112×84 synthetic image.
pub(crate) fn bench_prompt(model: &Model, text_tokens: usize) -> Result<PromptInput> {
    let img = image::RgbImage::from_fn(112, 84, |x, y| {
        image::Rgb([(x * 2) as u8, (y * 3) as u8, ((x + y) % 256) as u8])
    });
    let processed: Vec<_> = if model.processor.images.is_some() {
        vec![model.process_image(
            &image::DynamicImage::ImageRgb8(img),
            &ImageOptions::default(),
        )?]
    } else {
        Vec::new()
    };
    let words = "the stained tissue shows round nuclei near the border of the sample ";
    let mut text = String::new();
    while model
        .processor
        .tokenizer
        .encode(text.as_str(), false)
        .map_err(anyhow::Error::msg)?
        .len()
        < text_tokens
    {
        text.push_str(words);
    }
    let conv = adamllm::data::conversation::Conversation::user_prompt(
        &text,
        processed
            .iter()
            .map(|_| std::path::PathBuf::from("synthetic.png"))
            .collect(),
    );
    let ids = if model.processor.template.is_some() {
        model
            .processor
            .encode(
                &conv,
                &processed,
                true,
                adamllm::models::prompt::LabelMode::AssistantTurns,
            )?
            .ids
    } else {
        model.processor.encode_plain(&text)?
    };
    Ok(PromptInput {
        ids,
        images: processed,
    })
}

/// `adamllm bench eval`.
fn bench_eval(
    presets: &str,
    devices: &str,
    rows: usize,
    batches: &str,
    max_new_tokens: usize,
) -> Result<()> {
    use adamllm::eval::BenchmarkTask;
    use adamllm::eval::benchmark::{BenchmarkRow, ImageSource};
    use adamllm::eval::custom_task::EvalTask;
    use adamllm::eval::runner::{EvalOptions, run_eval};

    let questions = [
        "Is there a fracture in this image?",
        "Which organ is abnormal?",
        "Is the lesion on the left side?",
        "What imaging modality was used?",
    ];
    let bench_rows: Vec<BenchmarkRow> = (0..rows)
        .map(|i| {
            let img = image::RgbImage::from_fn(224, 168, |x, y| {
                image::Rgb([((x + 7 * i as u32) % 256) as u8, (y * 2 % 256) as u8, 90])
            });
            let mut bytes = std::io::Cursor::new(Vec::new());
            img.write_to(&mut bytes, image::ImageFormat::Png)
                .expect("PNG encoding in memory");
            let mut fields = serde_json::Map::new();
            fields.insert("input".into(), questions[i % questions.len()].into());
            fields.insert(
                "label".into(),
                (if i % 2 == 0 { "yes" } else { "lung" }).into(),
            );
            fields.insert(
                "answer_type".into(),
                (if i % 2 == 0 { "CLOSED" } else { "OPEN" }).into(),
            );
            BenchmarkRow {
                index: i,
                fields,
                image: Some(ImageSource::Bytes {
                    bytes: bytes.into_inner(),
                    name: format!("row {i}"),
                }),
            }
        })
        .collect();
    let task = EvalTask::Builtin(BenchmarkTask::VqaRad);
    let tmp = tempfile::tempdir()?;
    let mut table = Vec::new();
    each_config(presets, devices, batches, tmp.path(), |c| {
        let out = tmp
            .path()
            .join(format!("{}-{}-{}", c.preset, c.device, c.batch));
        let opts = EvalOptions {
            batch_size: c.batch,
            limit: None,
            max_new_tokens: Some(max_new_tokens),
            pixels: None,
        };
        // Warm-up on two rows (shader compilation on wgpu), then the timed run.
        run_eval(
            c.model,
            &task,
            &bench_rows[..2],
            &out.with_extension("warm"),
            &opts,
            &mut |_, _| {},
        )?;
        let summary = run_eval(c.model, &task, &bench_rows, &out, &opts, &mut |_, _| {})?;
        let row = serde_json::json!({
            "bench": "eval", "preset": c.preset, "device": c.device,
            "adapter": c.adapter, "batch": c.batch, "rows": rows,
            "max_new_tokens": max_new_tokens,
            "examples_per_s": summary.examples_per_second,
            "seconds": summary.seconds,
        });
        println!("{row}");
        table.push((
            c.preset.to_string(),
            c.device.to_string(),
            c.batch,
            summary.examples_per_second,
        ));
        Ok(())
    })?;
    eprintln!(
        "\n{:<6} {:<6} {:>6} {:>12}",
        "preset", "device", "batch", "examples/s"
    );
    for (p, d, b, e) in table {
        eprintln!("{p:<6} {d:<6} {b:>6} {e:>12.2}");
    }
    Ok(())
}

/// One configuration of a throughput benchmark: a random-weight preset loaded on a device,
/// and a batch size.
pub struct BenchConfig<'a> {
    /// Preset name.
    pub preset: &'a str,
    /// Device name as given.
    pub device: &'a str,
    /// The adapter it resolved to.
    pub adapter: &'a str,
    /// Batch size.
    pub batch: usize,
    /// The model.
    pub model: &'a Model,
}

/// Calls `run` for every preset × device × batch in the comma-separated lists, each preset
/// written as a random-weight model under `dir` and loaded once per device.
pub fn each_config(
    presets: &str,
    devices: &str,
    batches: &str,
    dir: &std::path::Path,
    mut run: impl FnMut(&BenchConfig<'_>) -> Result<()>,
) -> Result<()> {
    for preset_name in presets.split(',').map(str::trim) {
        let model_dir = dir.join(format!("model-{preset_name}"));
        write_preset(preset_name, &model_dir)?;
        for device_name in devices.split(',').map(str::trim) {
            let choice: DeviceChoice = device_name.parse().map_err(anyhow::Error::msg)?;
            let selected = select_device(choice)?;
            let model = Model::load(&model_dir, &selected.device, DType::F32)?;
            for batch in batches.split(',').map(str::trim) {
                run(&BenchConfig {
                    preset: preset_name,
                    device: device_name,
                    adapter: &selected.description,
                    batch: batch.parse()?,
                    model: &model,
                })?;
            }
        }
    }
    Ok(())
}
