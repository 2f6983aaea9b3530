//! `adamllm`: the command line over adamllm-core. Argument parsing and printing only; every
//! computation lives in the core library that the web page also uses.

mod bench;
mod bench_kernels;
mod bench_memory;
mod bench_synth;
mod bench_train;
mod demo_cmd;
mod merge_cmd;
mod progress;
mod quantize_cmd;
mod synth_cmd;
mod train_cmd;

use std::path::PathBuf;
use std::process::ExitCode;

use adamllm::data::conversation::{Conversation, Message, Role};
use adamllm::device::{DeviceChoice, SelectedDevice, list_adapters, select_device};
#[cfg(feature = "benchmark-files")]
use adamllm::eval::BenchmarkTask;
#[cfg(feature = "benchmark-files")]
use adamllm::eval::benchmark::{BenchmarkRow, ReadOptions, read_benchmark};
#[cfg(feature = "benchmark-files")]
use adamllm::eval::custom_task::EvalTask;
#[cfg(feature = "benchmark-files")]
use adamllm::eval::hf_layout;
#[cfg(feature = "benchmark-files")]
use adamllm::eval::runner::{
    EvalError, EvalOptions, Suite, render_results_table, run_eval, run_eval_shard, run_suite,
};
use adamllm::eval::score_predictions_file;
use adamllm::generation::{GenerationOptions, PromptInput, generate};
use adamllm::io::write_json_atomic;
use adamllm::loss::{encode_dataset, mean_loss};
use adamllm::models::image::ImageOptions;
use adamllm::models::prompt::LabelMode;
use adamllm::models::registry::{family_of_preset, preset_names};
use adamllm::models::{LoadOptions, Model};
use adamllm::precision::{DTypeChoice, DtypeSupport, resolve_dtype};
use adamllm::quantize::Quantization;
use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};

/// Domain-specific post-training of multimodal LLMs (AdaMLLM), on any GPU API or the CPU.
#[derive(Parser)]
#[command(name = "adamllm", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Device and precision flags shared by every command that runs a model.
#[derive(Args, Clone, Debug)]
pub struct DeviceArgs {
    /// auto (a real GPU, else CPU), cpu, wgpu (default adapter, CPU adapters included),
    /// vulkan, metal or dx12.
    #[arg(long, default_value = "auto", value_parser = parse_device)]
    pub device: DeviceChoice,
    /// Float precision of weights and activations: auto (the checkpoint's half precision
    /// where the device computes it, else f32; the default), f32, f16 or bf16 (CPU only).
    /// For `train`, the dtype of the frozen base (the recipe's `dtype`, default f32).
    #[arg(long, value_parser = parse_dtype)]
    pub dtype: Option<DTypeChoice>,
    /// Chat template by name, overriding the model family's own prompt: qwen2_vl, chatml,
    /// llama3 (= llava_next_llama3), llava_llama_3 (the AdaMLLM authors' LLaVA prompt) or
    /// folder (the model folder's Jinja template).
    #[arg(long)]
    pub template: Option<String>,
    /// Weight-only quantization of the linear layers: q8 or q4 (blocks of 32, f32 scales;
    /// embedding and LM head stay in --dtype). generate, loss, eval, synthesize and filter;
    /// for train, the recipe's `quantize` (LoRA over the quantized base: QLoRA); for
    /// quantize, the stored format. A folder written by `adamllm quantize` loads quantized
    /// without it.
    #[arg(long, value_parser = parse_quantization)]
    pub quantize: Option<Quantization>,
}

fn parse_quantization(s: &str) -> Result<Quantization, String> {
    s.parse()
}

fn parse_device(s: &str) -> Result<DeviceChoice, String> {
    s.parse()
}

fn parse_dtype(s: &str) -> Result<DTypeChoice, String> {
    s.parse()
}

impl DeviceArgs {
    /// Selects the device and checks the dtype against it.
    pub fn select(&self) -> Result<SelectedDevice> {
        self.refuse_quantization()?;
        self.select_quantizable()
    }

    /// [`Self::select`] for a command where `--quantize` applies (one that loads a model to
    /// run or to train LoRA over).
    pub fn select_quantizable(&self) -> Result<SelectedDevice> {
        let selected = select_device(self.device)?;
        self.check_dtype(&selected)?;
        Ok(selected)
    }

    /// Refuses `--quantize` where the command loads no model to quantize (`train` takes it as
    /// its recipe's `quantize`).
    pub fn refuse_quantization(&self) -> Result<()> {
        if let Some(q) = self.quantize {
            bail!(
                "--quantize {q}: generate, loss, eval, synthesize and filter load a quantized \
                 model, train a quantized base (QLoRA) and quantize writes one; this command \
                 does none of these"
            );
        }
        Ok(())
    }

    /// Refuses `--dtype f16` or `bf16` on a device without that arithmetic, naming the
    /// alternative (every device of `train --devices` is checked, so no replica computes in
    /// another precision).
    pub fn check_dtype(&self, selected: &SelectedDevice) -> Result<()> {
        if let Some(choice) = self.dtype {
            let support = DtypeSupport::of(&selected.device);
            resolve_dtype(choice, None, support, &selected.description)?;
        }
        Ok(())
    }
}

#[derive(Subcommand)]
enum Command {
    /// The whole method on built-in procedural domains (tiny model, minutes on a laptop
    /// CPU): base model, synthesizer, judge, synthesize -> filter -> assemble, ablations,
    /// evaluation, report.
    Demo(demo_cmd::DemoArgs),
    /// Build the demo's general-domain models (base, synthesizer, judge) that `adamllm demo`
    /// starts from: general data, long trainings, weights written to cli/assets/demo-models.
    DemoModels(demo_cmd::DemoModelsArgs),
    /// Synthesizer data: `synth seed` builds the synthesizer's tuning set.
    Synth {
        #[command(subcommand)]
        what: synth_cmd::SynthCommand,
    },
    /// Write task triplets for image-caption pairs with a synthesizer (or, with --rules, the
    /// manual-rule baseline) -> syn_task_triplets.jsonl.
    Synthesize(synth_cmd::SynthesizeArgs),
    /// Judge each triplet's consistency with a text-only model -> filtered_task_pairs.jsonl.
    Filter(synth_cmd::FilterArgs),
    /// Mix caption tasks and kept synthetic tasks into training data.
    Assemble(synth_cmd::AssembleArgs),
    /// Run synthesize -> filter -> assemble -> train from one YAML file, resumable.
    Pipeline {
        /// pipeline.yaml.
        #[arg(long)]
        config: PathBuf,
        #[command(flatten)]
        device: DeviceArgs,
    },
    /// Show the device `--device` resolves to and every adapter wgpu sees.
    Info {
        #[command(flatten)]
        device: DeviceArgs,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Write a random-weight model folder (Hugging Face layout) of a built-in shape.
    Init {
        /// Output folder.
        #[arg(long)]
        out: PathBuf,
        /// A built-in shape: tiny, small, qwen2vl-2b (Qwen2-VL); llama-tiny, llama-small,
        /// llama3-8b (Llama 3); llava-next-tiny, llava-next-small, llava-next-8b (LLaVA-NeXT).
        /// The real-size ones are stored in bf16.
        #[arg(long, default_value = "tiny")]
        preset: String,
        /// Seed of the random weights.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Overwrite a folder that already holds a model.
        #[arg(long)]
        force: bool,
    },
    /// Generate a reply to one prompt (with optional images).
    Generate {
        /// Model folder, or a model id in the Hugging Face cache (`org/name[@revision]`).
        #[arg(long)]
        model: PathBuf,
        /// Image file; repeat for several. `<image>` in the prompt marks where each goes
        /// (default: all images before the text).
        #[arg(long)]
        image: Vec<PathBuf>,
        /// The user message.
        #[arg(long)]
        prompt: String,
        /// System message (default: the model's template's, e.g. Qwen2-VL's default system
        /// prompt or the AdaMLLM LLaVA system prompt).
        #[arg(long)]
        system: Option<String>,
        /// Most tokens to generate.
        #[arg(long, default_value_t = 128)]
        max_new_tokens: usize,
        /// 0 = greedy.
        #[arg(long, default_value_t = 0.0)]
        temperature: f64,
        /// Nucleus sampling mass.
        #[arg(long, default_value_t = 1.0)]
        top_p: f64,
        /// Top-k sampling (0 = off).
        #[arg(long, default_value_t = 0)]
        top_k: usize,
        /// Sampling seed.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Print a JSON object (text, token ids, finish reason) instead of the text.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        device: DeviceArgs,
    },
    /// Mean cross-entropy per supervised token over a ShareGPT/LLaVA dataset (JSON output).
    Loss {
        /// Model folder, or a model id in the Hugging Face cache (`org/name[@revision]`).
        #[arg(long)]
        model: PathBuf,
        /// Dataset file (.json array or .jsonl).
        #[arg(long)]
        data: PathBuf,
        /// Folder image paths are relative to (default: the dataset's folder).
        #[arg(long)]
        images: Option<PathBuf>,
        /// Examples per forward pass.
        #[arg(long, default_value_t = 1)]
        batch_size: usize,
        #[command(flatten)]
        device: DeviceArgs,
    },
    /// Score benchmark predictions with the paper's metrics (no model needed).
    Score {
        /// VQA_RAD, SLAKE, PathVQA, PMC-VQA, Food101, FoodSeg103, Nutrition5K or Recipe1M, or
        /// a custom task file (.yaml).
        #[arg(long)]
        task: String,
        /// JSONL rows with the benchmark fields and `pred`.
        #[arg(long)]
        predictions: PathBuf,
        /// Also write the result JSON here.
        #[arg(long)]
        out: Option<PathBuf>,
        /// `paper` (the task's own metric, default), or `exact_match` /
        /// `exact_match_normalized` for comparison with exact-match harnesses (lmms-eval).
        #[arg(long, default_value = "paper")]
        metric: String,
    },
    #[cfg(feature = "benchmark-files")]
    /// Generate answers for a benchmark with the paper's settings and score them.
    Eval {
        /// Model folder, or a model id in the Hugging Face cache (`org/name[@revision]`).
        #[arg(long)]
        model: PathBuf,
        /// A task name (VQA_RAD, SLAKE, PathVQA, PMC-VQA, Food101, FoodSeg103, Nutrition5K,
        /// Recipe1M), a suite (all-biomed, all-food) or a custom task file (.yaml).
        #[arg(long)]
        task: String,
        /// Benchmark: a .jsonl, .parquet or .arrow file, a `datasets` save_to_disk folder, a
        /// parquet-branch config folder, or a benchmark repo folder holding several tasks
        /// (`vqa_rad/`, `SLAKE/`, ... or `<task>.jsonl|.parquet`; what a suite reads).
        #[arg(long)]
        data: PathBuf,
        /// Folder image paths are relative to (default: the benchmark file's folder).
        #[arg(long)]
        images: Option<PathBuf>,
        /// Output folder (predictions.jsonl, results.json, results.md). Reruns resume.
        #[arg(long)]
        out: PathBuf,
        /// Prompts per generation batch.
        #[arg(long, default_value_t = 1)]
        batch_size: usize,
        /// Evaluate only the first N rows.
        #[arg(long)]
        limit: Option<usize>,
        /// Override the task's max new tokens (paper: 1024; 256 for Food101, FoodSeg103,
        /// Nutrition5K).
        #[arg(long)]
        max_new_tokens: Option<usize>,
        /// Smallest image area in pixels (default: the paper's 224·224).
        #[arg(long)]
        min_pixels: Option<usize>,
        /// Largest image area in pixels (default: the paper's 1280·28·28).
        #[arg(long)]
        max_pixels: Option<usize>,
        /// Answer only shard K/N (the rows whose index is K mod N) into
        /// `<out>/shards/K-of-N/`; `adamllm merge <out>` scores the whole set.
        #[arg(long, value_parser = synth_cmd::parse_shard)]
        shard: Option<adamllm::shard::Shard>,
        #[command(flatten)]
        device: DeviceArgs,
    },
    /// Merge the shards of a `synthesize`, `filter` or `eval` job run with `--shard K/N`
    /// into the files one unsharded run writes (no model needed). Refuses a set with a
    /// missing, unfinished, repeated or foreign shard.
    Merge {
        /// The `--out` the shards were given.
        out: PathBuf,
    },
    /// Write a quantized copy of a model folder (--quantize q8|q4: linear layers as integer
    /// blocks, the rest in --dtype) that every command loads as it is, without --quantize.
    Quantize(quantize_cmd::QuantizeArgs),
    /// Post-train a model (full, freeze or LoRA; single- or multi-stage) into a run folder.
    Train(train_cmd::TrainArgs),
    /// Benchmarks (figures for BENCHMARKS.md).
    Bench {
        #[command(subcommand)]
        what: bench::BenchCommand,
    },
}

/// Points a missing or unusable `XDG_RUNTIME_DIR` at a private folder of this user's. The
/// Vulkan driver's Wayland probe (libwayland-client) otherwise prints `error: XDG_RUNTIME_DIR
/// is invalid or not set in the environment.` when adapters are listed on a headless machine,
/// although nothing is wrong and no window is ever opened. Must run before any thread starts.
#[cfg(target_os = "linux")]
fn give_wayland_a_runtime_dir() {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    let usable = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .is_some_and(|dir| dir.is_absolute() && dir.is_dir());
    if usable {
        return;
    }
    let Ok(uid) = std::fs::metadata("/proc/self").map(|m| m.uid()) else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("adamllm-runtime-{uid}"));
    let _ = std::fs::DirBuilder::new().mode(0o700).create(&dir);
    let ours = std::fs::symlink_metadata(&dir)
        .is_ok_and(|m| m.is_dir() && m.uid() == uid && m.mode() & 0o077 == 0);
    if ours {
        // SAFETY: called first thing in `main`, before any other thread exists.
        unsafe { std::env::set_var("XDG_RUNTIME_DIR", &dir) };
    }
}

fn main() -> ExitCode {
    #[cfg(target_os = "linux")]
    give_wayland_a_runtime_dir();
    adamllm::limits::quiet_caught_parser_panics();
    let (args, recipe_overrides) = train_cmd::split_recipe_flags(std::env::args().collect());
    let cli = Cli::parse_from(args);
    match run(cli, &recipe_overrides) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn load_model(dir: &std::path::Path, device: &DeviceArgs) -> Result<(Model, SelectedDevice)> {
    let selected = device.select_quantizable()?;
    let options = LoadOptions {
        dtype: device.dtype.unwrap_or_default(),
        template: device.template.clone(),
        quantize: device.quantize,
    };
    let model = Model::load_with(dir, &selected.device, &options)?;
    if let Some(note) = &model.dtype_note {
        eprintln!("note: {note}");
    }
    Ok((model, selected))
}

/// `adamllm init`: a random-weight folder of any family's preset.
fn init_command(out: &std::path::Path, preset: &str, seed: u64, force: bool) -> Result<()> {
    let Some(family) = family_of_preset(preset) else {
        bail!(
            "--preset {preset:?}: unknown preset; expected one of {}",
            preset_names().join(", ")
        );
    };
    if out.join("config.json").exists() && !force {
        bail!(
            "{}: already holds a model (config.json); pass --force to overwrite it",
            out.display()
        );
    }
    let parameters = family.write_preset(preset, out, seed)?;
    println!(
        "wrote {} ({preset} preset, {} family, {parameters} parameters, seed {seed})",
        out.display(),
        family.name()
    );
    Ok(())
}

/// The benchmark of each of `suite`'s tasks found under `data` (a cloned benchmark repo, its
/// parquet branch, or a folder of `<task>.jsonl|.parquet` files); tasks not there are skipped
/// with a note, and none found is an error naming what was looked for.
#[cfg(feature = "benchmark-files")]
fn locate_suite_tasks(
    data: &std::path::Path,
    suite: Suite,
) -> Result<Vec<(BenchmarkTask, PathBuf)>> {
    if !data.is_dir() {
        bail!(
            "{}: a suite ({}) reads a folder holding its tasks, and this is not a folder",
            data.display(),
            suite.name()
        );
    }
    let mut found = Vec::new();
    let mut missing = Vec::new();
    for task in suite.tasks() {
        match hf_layout::locate_task(data, task) {
            Some(path) => found.push((task, path)),
            None => missing.push(task),
        }
    }
    if found.is_empty() {
        let looked: Vec<String> = missing
            .iter()
            .map(|t| format!("  {}: {}", t.name(), hf_layout::looked_for(*t)))
            .collect();
        bail!(
            "{}: no task of suite {} is here; looked for\n{}",
            data.display(),
            suite.name(),
            looked.join("\n")
        );
    }
    for task in &missing {
        eprintln!(
            "note: {} is not under {} (looked for {}); skipped",
            task.name(),
            data.display(),
            hf_layout::looked_for(*task)
        );
    }
    Ok(found)
}

/// `data` itself, or the task's folder or file inside it when `data` is a repository folder
/// holding several tasks rather than one benchmark.
#[cfg(feature = "benchmark-files")]
fn task_in_repo_folder(data: &std::path::Path, task: BenchmarkTask) -> PathBuf {
    if data.is_dir()
        && !hf_layout::is_dataset_folder(data)
        && let Some(found) = hf_layout::locate_task(data, task)
    {
        return found;
    }
    data.to_path_buf()
}

#[cfg(feature = "benchmark-files")]
#[allow(clippy::too_many_arguments)]
fn eval_command(
    model_dir: &std::path::Path,
    task_arg: &str,
    data: &std::path::Path,
    images: Option<PathBuf>,
    out: &std::path::Path,
    opts: EvalOptions,
    shard: Option<adamllm::shard::Shard>,
    device: &DeviceArgs,
) -> Result<()> {
    // Check the task and the data before loading the model.
    if let Some(suite) = Suite::from_arg(task_arg) {
        if shard.is_some() {
            bail!("--shard takes one task, not the suite {task_arg}: shard each task's run");
        }
        let files = locate_suite_tasks(data, suite)?;
        let (model, _) = load_model(model_dir, device)?;
        let bar = progress::bar(0, "eval");
        let mut load = |t: BenchmarkTask| -> Result<Vec<BenchmarkRow>, EvalError> {
            let file = &files.iter().find(|(x, _)| *x == t).expect("listed").1;
            let read = ReadOptions {
                images_dir: images.clone(),
                required_fields: EvalTask::Builtin(t).required_fields(),
                limit: opts.limit,
            };
            Ok(read_benchmark(file, &read)?)
        };
        let tasks: Vec<BenchmarkTask> = files.iter().map(|(t, _)| *t).collect();
        let summaries = run_suite(
            &model,
            &tasks,
            &mut load,
            out,
            &opts,
            &mut |t, done, total| {
                bar.set_length(total as u64);
                bar.set_position(done as u64);
                bar.set_prefix(t.name().to_string());
            },
        )?;
        bar.finish_and_clear();
        println!("{}", render_results_table(&summaries));
        return Ok(());
    }
    let task = EvalTask::from_arg(task_arg)?;
    let read = ReadOptions {
        images_dir: images,
        required_fields: task.required_fields(),
        limit: opts.limit,
    };
    let data = match &task {
        EvalTask::Builtin(t) => task_in_repo_folder(data, *t),
        _ => data.to_path_buf(),
    };
    let rows = read_benchmark(&data, &read)?;
    let (model, _) = load_model(model_dir, device)?;
    let bar = progress::bar(rows.len() as u64, "eval");
    if let Some(shard) = shard {
        let part = adamllm::eval::runner::EvalShard {
            shard,
            task_arg: task_arg.to_owned(),
            data: data.clone(),
        };
        let (answered, generated) = run_eval_shard(
            &model,
            &task,
            &rows,
            out,
            &opts,
            &part,
            &mut |done, total| {
                bar.set_length(total as u64);
                bar.set_position(done as u64);
            },
        )?;
        bar.finish_and_clear();
        eprintln!("{answered} rows answered ({generated} by this run)");
        synth_cmd::say_shard_done(shard, out);
        return Ok(());
    }
    let summary = run_eval(&model, &task, &rows, out, &opts, &mut |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    })?;
    bar.finish_and_clear();
    eprintln!(
        "{} examples, {:.2} examples/s; predictions in {}",
        summary.examples,
        summary.examples_per_second,
        summary.predictions_path.display()
    );
    println!("{}", serde_json::to_string(&summary.results)?);
    Ok(())
}

fn run(cli: Cli, recipe_overrides: &[(String, String)]) -> Result<()> {
    match cli.command {
        Command::Info { device, json } => {
            let selected = device.select()?;
            let adapters = list_adapters();
            if json {
                let v = serde_json::json!({
                    "device": selected.description,
                    "backend": selected.backend,
                    "reason": selected.reason,
                    "f16": selected.supports_f16,
                    "adapters": adapters,
                });
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!("device:  {} [{}]", selected.description, selected.backend);
                println!("reason:  {}", selected.reason);
                println!(
                    "f16:     {}",
                    if selected.supports_f16 { "yes" } else { "no" }
                );
                println!("adapters seen by wgpu ({}):", adapters.len());
                for a in &adapters {
                    println!(
                        "  - {} | {} | {} | f16: {} | max buffer {} MiB | max storage binding {} MiB{}",
                        a.name,
                        a.device_type,
                        a.backend,
                        if a.shader_f16 { "yes" } else { "no" },
                        a.max_buffer_size >> 20,
                        a.max_storage_buffer_binding_size >> 20,
                        if a.is_real_gpu {
                            ""
                        } else {
                            " | CPU-type: never chosen by auto"
                        }
                    );
                }
            }
        }
        Command::Init {
            out,
            preset,
            seed,
            force,
        } => init_command(&out, &preset, seed, force)?,
        Command::Generate {
            model,
            image,
            prompt,
            system,
            max_new_tokens,
            temperature,
            top_p,
            top_k,
            seed,
            json,
            device,
        } => {
            let (model, _) = load_model(&model, &device)?;
            let mut conversation = if prompt.contains("<image>") {
                Conversation {
                    messages: vec![Message {
                        role: Role::User,
                        content: prompt.clone(),
                    }],
                    images: image.clone(),
                }
            } else {
                Conversation::user_prompt(&prompt, image.clone())
            };
            if let Some(s) = system {
                conversation.messages.insert(
                    0,
                    Message {
                        role: Role::System,
                        content: s,
                    },
                );
            }
            let images = image
                .iter()
                .map(|p| model.load_image(p, &ImageOptions::default()))
                .collect::<Result<Vec<_>, _>>()?;
            let encoded = model
                .processor
                .encode(&conversation, &images, true, LabelMode::AssistantTurns)
                .context("--prompt")?;
            let options = GenerationOptions {
                max_new_tokens,
                temperature,
                top_p,
                top_k,
                seed,
                ..Default::default()
            };
            let out = generate(
                &model,
                &[PromptInput {
                    ids: encoded.ids,
                    images,
                }],
                &options,
            )?;
            let g = &out[0];
            let text = model.processor.decode(&g.token_ids)?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({"text": text, "token_ids": g.token_ids,
                        "finish_reason": g.finish_reason, "prompt_tokens": g.prompt_tokens,
                        "dtype": adamllm::precision::dtype_name(model.dtype),
                        "quantize": model.quantization.map(|q| q.to_string())})
                );
            } else {
                println!("{text}");
            }
        }
        Command::Loss {
            model,
            data,
            images,
            batch_size,
            device,
        } => {
            let (model, _) = load_model(&model, &device)?;
            let examples =
                encode_dataset(&model, &data, images.as_deref(), LabelMode::AssistantTurns)?;
            let bar = progress::bar(examples.len() as u64, "loss");
            let report = mean_loss(&model, &examples, batch_size, |n| bar.inc(n as u64))?;
            bar.finish_and_clear();
            println!("{}", serde_json::to_string(&report)?);
        }
        Command::Score {
            task,
            predictions,
            out,
            metric,
        } => {
            #[cfg(feature = "benchmark-files")]
            if task.ends_with(".yaml") || task.ends_with(".yml") {
                // A custom task file: scored by its own metric, as `adamllm eval` does.
                if metric != "paper" {
                    bail!("--metric {metric:?}: a custom task file is scored by its own metric");
                }
                let eval_task = EvalTask::from_arg(&task)?;
                let rows: Vec<serde_json::Value> =
                    adamllm::eval::predictions_file::read_prediction_rows(&predictions)?
                        .into_iter()
                        .map(|(_, row)| row)
                        .collect();
                let score = eval_task
                    .score(&rows)
                    .map_err(|message| anyhow::anyhow!("{}: {message}", predictions.display()))?;
                if let Some(out) = out {
                    write_json_atomic(&out, &score)?;
                }
                println!("{}", serde_json::to_string(&score)?);
                return Ok(());
            }
            let task: adamllm::eval::BenchmarkTask = task.parse()?;
            if metric == "paper" {
                // Printed from the TaskScore itself so the keys keep their documented order.
                let score = score_predictions_file(task, &predictions)?;
                if let Some(out) = out {
                    write_json_atomic(&out, &score)?;
                }
                println!("{}", serde_json::to_string(&score)?);
            } else {
                let Some(alt) = adamllm::eval::AlternativeMetric::from_name(&metric) else {
                    bail!(
                        "--metric {metric:?}: expected paper, exact_match or exact_match_normalized"
                    );
                };
                let score = adamllm::eval::score_predictions_file_with(task, &predictions, alt)?;
                if let Some(out) = out {
                    write_json_atomic(&out, &score)?;
                }
                println!("{}", serde_json::to_string(&score)?);
            }
        }
        #[cfg(feature = "benchmark-files")]
        Command::Eval {
            model,
            task,
            data,
            images,
            out,
            batch_size,
            limit,
            max_new_tokens,
            min_pixels,
            max_pixels,
            shard,
            device,
        } => eval_command(
            &model,
            &task,
            &data,
            images,
            &out,
            EvalOptions {
                batch_size,
                limit,
                max_new_tokens,
                pixels: EvalOptions::pixel_bounds(min_pixels, max_pixels),
            },
            shard,
            &device,
        )?,
        Command::Merge { out } => merge_cmd::run(&out)?,
        Command::Quantize(args) => quantize_cmd::run(&args)?,
        Command::Train(args) => train_cmd::run(args, recipe_overrides)?,
        Command::Synth {
            what: synth_cmd::SynthCommand::Seed(args),
        } => synth_cmd::seed(args)?,
        Command::Synthesize(args) => synth_cmd::synthesize(args)?,
        Command::Demo(args) => demo_cmd::run(args)?,
        Command::DemoModels(args) => demo_cmd::build_models(args)?,
        Command::Filter(args) => synth_cmd::filter(args)?,
        Command::Assemble(args) => synth_cmd::assemble(args)?,
        Command::Pipeline { config, device } => synth_cmd::pipeline(config, device)?,
        Command::Bench { what } => bench::run(what)?,
    }
    Ok(())
}
