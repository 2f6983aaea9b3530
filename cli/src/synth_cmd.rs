//! `adamllm synth seed`, `synthesize`, `filter`, `assemble` and `pipeline`: argument
//! handling and progress bars over `adamllm::synth`.

use std::path::PathBuf;

use adamllm::shard::Shard;
use adamllm::synth::assemble::{AssemblyMode, run_assemble};
use adamllm::synth::judge::{
    FilterOptions, JudgeLabel, JudgePromptFormat, run_filter, run_filter_shard,
};
use adamllm::synth::pairs::read_caption_pairs;
use adamllm::synth::pipeline::{PipelineConfig, PipelineObserver, Stage, run_pipeline};
use adamllm::synth::rules::run_rules;
use adamllm::synth::seed::{SeedInputs, SeedOptions, build_seed_set};
use adamllm::synth::synthesize::{
    GenerationProgress, SYNTHESIS_MAX_NEW_TOKENS, SynthesizeOptions, run_synthesis,
    run_synthesis_shard,
};
use adamllm::train::trainer::TrainObserver;
use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use indicatif::ProgressBar;

use crate::progress::{StageBar, say};
use crate::{DeviceArgs, load_model};

/// `adamllm synth …`.
#[derive(Subcommand, Debug)]
pub enum SynthCommand {
    /// Build the synthesizer's tuning set from general seed data (captions, precise and
    /// informative question-answer files, ShareGPT).
    Seed(SeedArgs),
}

/// Flags of `adamllm synth seed`.
#[derive(Args, Debug)]
pub struct SeedArgs {
    /// Captions (ShareGPT: `<image>` + instruction → caption).
    #[arg(long)]
    pub captions: PathBuf,
    /// Question-answer rounds with short answers, same images.
    #[arg(long)]
    pub precise: PathBuf,
    /// Question-answer rounds with reasoned answers, same images.
    #[arg(long)]
    pub informative: PathBuf,
    /// Folder the image paths are relative to.
    #[arg(long)]
    pub images: PathBuf,
    /// Output folder (synthesizer_train.json, synthesizer_dev.json, blank.png, ...).
    #[arg(long)]
    pub out: PathBuf,
    /// Percentage of images replaced by a blank image.
    #[arg(long, default_value_t = 10.0)]
    pub blank_percent: f64,
    /// Share of conversations held out as the dev split.
    #[arg(long, default_value_t = 0.1)]
    pub dev_fraction: f64,
    /// Seed of the shuffles and blank-image draws.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// Flags of `adamllm synthesize`.
#[derive(Args, Debug)]
pub struct SynthesizeArgs {
    /// Synthesizer model folder (a VLM tuned with `synth seed` data).
    #[arg(long, required_unless_present = "rules")]
    pub synthesizer: Option<PathBuf>,
    /// Derive tasks from the caption text by rules instead (the manual-rule baseline).
    #[arg(long, conflicts_with = "synthesizer")]
    pub rules: bool,
    /// image_caption_pairs.json (ShareGPT, JSON or JSONL).
    #[arg(long)]
    pub data: PathBuf,
    /// Folder the image paths are relative to (default: the data file's folder).
    #[arg(long)]
    pub images: Option<PathBuf>,
    /// Output folder (syn_task_triplets.jsonl or rule_task_pairs.jsonl, skipped.jsonl).
    #[arg(long)]
    pub out: PathBuf,
    /// Images per generation call.
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    /// Most new tokens per image.
    #[arg(long, default_value_t = SYNTHESIS_MAX_NEW_TOKENS)]
    pub max_new_tokens: usize,
    /// Synthesize only the first N usable pairs.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Seed of the rule-based draws.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Smallest image area in pixels (default: the model's preprocessor_config.json).
    #[arg(long)]
    pub min_pixels: Option<usize>,
    /// Largest image area in pixels (default: the model's preprocessor_config.json).
    #[arg(long)]
    pub max_pixels: Option<usize>,
    /// Synthesize only shard K/N (the rows whose index is K mod N) into
    /// `<out>/shards/K-of-N/`; `adamllm merge <out>` writes the output once all N finished.
    #[arg(long, value_parser = parse_shard, conflicts_with = "rules")]
    pub shard: Option<Shard>,
    #[command(flatten)]
    pub device: DeviceArgs,
}

/// Flags of `adamllm filter`.
#[derive(Args, Debug)]
pub struct FilterArgs {
    /// Judge model folder (any model adamllm loads, used text-only).
    #[arg(long)]
    pub judge: PathBuf,
    /// syn_task_triplets.jsonl.
    #[arg(long = "in")]
    pub input: PathBuf,
    /// Output file (filtered_task_pairs.jsonl); label counts go beside it.
    #[arg(long)]
    pub out: PathBuf,
    /// Prompts per generation call.
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    /// auto (chat when the judge has a chat template, else plain), chat (the judge's chat
    /// template) or plain (no template, the tokenizer's BOS first: base models, as the paper's
    /// Llama-3-8B judge).
    #[arg(long, default_value = "auto", value_parser = ["auto", "chat", "plain"])]
    pub prompt_format: String,
    /// Worked examples in the judge prompt (0-6; fewer for judges with short context).
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u8).range(0..=6))]
    pub shots: u8,
    /// Leave the instructions out of the judge prompt (for a judge tuned on the bare
    /// question / detailed answer / short answer layout, like `adamllm demo`'s).
    #[arg(long)]
    pub no_instructions: bool,
    /// Judge only shard K/N (the rows whose position is K mod N) into `<out>.shards/K-of-N/`;
    /// `adamllm merge <out>` writes the output once all N finished.
    #[arg(long, value_parser = parse_shard)]
    pub shard: Option<Shard>,
    #[command(flatten)]
    pub device: DeviceArgs,
}

/// Flags of `adamllm assemble`.
#[derive(Args, Debug)]
pub struct AssembleArgs {
    /// image_caption_pairs.json.
    #[arg(long)]
    pub captions: PathBuf,
    /// Folder the image paths are relative to (default: the captions file's folder); pairs
    /// whose image is missing there are left out.
    #[arg(long)]
    pub images: Option<PathBuf>,
    /// filtered_task_pairs.jsonl (or syn_task_triplets.jsonl for unfiltered tasks, or
    /// rule_task_pairs.jsonl).
    #[arg(long)]
    pub tasks: PathBuf,
    /// single, two-stage, caption-only or synthetic-only.
    #[arg(long, default_value = "single", value_parser = parse_mode)]
    pub mode: AssemblyMode,
    /// Output file (two-stage writes <stem>_stage1_caption.json and _stage2_synthetic.json).
    #[arg(long)]
    pub out: PathBuf,
    /// Seed of the template draws and caption placement (0 = the paper's Random(syn_id)).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// Parses `--shard K/N`.
pub fn parse_shard(text: &str) -> Result<Shard, String> {
    Shard::parse(text)
}

fn parse_mode(text: &str) -> Result<AssemblyMode, String> {
    text.parse()
}

fn generation_bar(label: &str, unit: &str) -> ProgressBar {
    let bar = crate::progress::styled(
        0,
        &format!(
            "{{prefix:>10}} [{{elapsed_precise}}] {{wide_bar}} {{pos}}/{{len}} {unit} {{msg}} (ETA {{eta}})"
        ),
    );
    bar.set_prefix(label.to_string());
    bar
}

fn show(bar: &ProgressBar, progress: GenerationProgress, unit: &str) {
    bar.set_length(progress.total as u64);
    bar.set_position(progress.done as u64);
    bar.set_message(format!(
        "{:.2} {unit}/s, {:.0} tok/s",
        progress.rows_per_second, progress.tokens_per_second
    ));
}

/// Runs `adamllm synth seed`.
pub fn seed(args: SeedArgs) -> Result<()> {
    let inputs = SeedInputs {
        captions: args.captions,
        precise: args.precise,
        informative: args.informative,
        images: args.images,
    };
    let options = SeedOptions {
        blank_percent: args.blank_percent,
        dev_fraction: args.dev_fraction,
        seed: args.seed,
    };
    let summary = build_seed_set(&inputs, &args.out, &options)?;
    eprintln!(
        "{} train + {} dev conversations ({} with the blank image, {} question-answer rounds); {} skipped; written to {}",
        summary.train,
        summary.dev,
        summary.blank_images,
        summary.rounds,
        summary.skipped,
        args.out.display()
    );
    println!("{}", serde_json::to_string(&summary)?);
    Ok(())
}

/// Runs `adamllm synthesize` (model or rules).
pub fn synthesize(args: SynthesizeArgs) -> Result<()> {
    let pairs = read_caption_pairs(&args.data)?;
    let images = args
        .images
        .clone()
        .unwrap_or_else(|| args.data.parent().map(PathBuf::from).unwrap_or_default());
    if args.rules {
        let summary = run_rules(&pairs, &args.out, args.seed)?;
        eprintln!(
            "{} rule-based tasks from {} rows ({} captions gave none, {} rows skipped); written to {}",
            summary.tasks,
            summary.input_rows,
            summary.without_task,
            summary.skipped,
            summary.output.display()
        );
        println!("{}", serde_json::to_string(&summary)?);
        return Ok(());
    }
    let Some(dir) = &args.synthesizer else {
        bail!("--synthesizer or --rules is required");
    };
    // The model is loaded before anything is written.
    let (model, _) =
        load_model(dir, &args.device).with_context(|| format!("synthesizer {}", dir.display()))?;
    let options = SynthesizeOptions {
        batch_size: args.batch_size,
        max_new_tokens: args.max_new_tokens,
        limit: args.limit,
        min_pixels: args.min_pixels,
        max_pixels: args.max_pixels,
    };
    let bar = generation_bar("synthesize", "images");
    let mut progress = |p| show(&bar, p, "images");
    let summary = match args.shard {
        Some(shard) => run_synthesis_shard(
            &model,
            &pairs,
            &args.data,
            &images,
            &args.out,
            &options,
            shard,
            &mut progress,
        )?,
        None => run_synthesis(
            &model,
            &pairs,
            &args.data,
            &images,
            &args.out,
            &options,
            &mut progress,
        )?,
    };
    bar.finish_and_clear();
    if let Some(shard) = args.shard {
        say_shard_done(shard, &args.out);
    }
    eprintln!(
        "{} rows ({} with a triplet), {} skipped; this run generated {} images at {:.2} images/s, {:.0} tokens/s; written to {}",
        summary.rows,
        summary.with_triplet,
        summary.skipped,
        summary.generated_now,
        summary.images_per_second,
        summary.tokens_per_second,
        summary.output.display()
    );
    println!("{}", serde_json::to_string(&summary)?);
    Ok(())
}

/// Tells where a finished shard's part went and how to merge the set.
pub fn say_shard_done(shard: Shard, out: &std::path::Path) {
    eprintln!(
        "shard {shard} finished; once all {} have, `adamllm merge {}` writes the output",
        shard.count,
        out.display()
    );
}

/// Runs `adamllm filter`.
pub fn filter(args: FilterArgs) -> Result<()> {
    if !args.input.is_file() {
        bail!("{}: file not found", args.input.display());
    }
    let (judge, _) = load_model(&args.judge, &args.device)
        .with_context(|| format!("judge {}", args.judge.display()))?;
    let options = FilterOptions {
        batch_size: args.batch_size,
        format: JudgePromptFormat::parse(&args.prompt_format).map_err(anyhow::Error::msg)?,
        shots: usize::from(args.shots),
        instructions: !args.no_instructions,
    };
    let bar = generation_bar("filter", "rows");
    let mut progress = |p| show(&bar, p, "rows");
    let summary = match args.shard {
        Some(shard) => run_filter_shard(
            &judge,
            &args.input,
            &args.out,
            &options,
            shard,
            &mut progress,
        )?,
        None => run_filter(&judge, &args.input, &args.out, &options, &mut progress)?,
    };
    bar.finish_and_clear();
    if let Some(shard) = args.shard {
        say_shard_done(shard, &args.out);
    }
    eprintln!("{:>10}  {:>6}", "label", "rows");
    for label in JudgeLabel::ALL {
        eprintln!(
            "{:>10}  {:>6}",
            label.as_str(),
            summary.labels.get(label.as_str()).copied().unwrap_or(0)
        );
    }
    eprintln!(
        "kept {} of {}; written to {}",
        summary.kept,
        summary.rows,
        summary.output.display()
    );
    println!("{}", serde_json::to_string(&summary)?);
    Ok(())
}

/// Runs `adamllm assemble`.
pub fn assemble(args: AssembleArgs) -> Result<()> {
    let pairs = read_caption_pairs(&args.captions)?;
    let images = args.images.clone().unwrap_or_else(|| {
        args.captions
            .parent()
            .map(PathBuf::from)
            .unwrap_or_default()
    });
    let summary = run_assemble(
        &pairs,
        &images,
        &args.tasks,
        args.mode,
        args.seed,
        &args.out,
    )?;
    for (path, count) in &summary.files {
        eprintln!("{count} examples -> {}", path.display());
    }
    eprintln!(
        "{} pairs ({} more without a readable image), {} with a kept synthetic task; {} task rows not kept, {} without a usable pair",
        summary.pairs,
        summary.pairs_without_image,
        summary.with_synthetic_task,
        summary.tasks_not_kept,
        summary.tasks_without_pair
    );
    println!("{}", serde_json::to_string(&summary)?);
    Ok(())
}

impl PipelineObserver for StageBar {
    fn stage(&mut self, stage: Stage, reused: bool) {
        let index = Stage::ALL.iter().position(|s| *s == stage).unwrap_or(0) + 1;
        self.begin(&format!("{index}/4 {}", stage.name()), reused);
    }

    fn progress(&mut self, _stage: Stage, progress: GenerationProgress) {
        show(&self.bar, progress, "rows");
    }

    fn finished(&mut self, stage: Stage, summary: &serde_json::Value) {
        say(&self.bar, format!("{:>12}: {summary}", stage.name()));
    }

    fn trainer(&mut self) -> &mut dyn TrainObserver {
        self
    }
}

/// Runs `adamllm pipeline`.
pub fn pipeline(config: PathBuf, device: DeviceArgs) -> Result<()> {
    let config = PipelineConfig::from_file(&config)?;
    let selected = device.select()?;
    let mut view = StageBar {
        bar: generation_bar("pipeline", ""),
    };
    let summary = run_pipeline(&config, &selected.device, &mut view)?;
    view.bar.finish_and_clear();
    println!("{}", serde_json::to_string(&summary)?);
    Ok(())
}
