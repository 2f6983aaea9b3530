//! `adamllm demo`: flags, one progress view, the printed table. The demo itself is
//! `adamllm::demo::run`.

use std::path::{Path, PathBuf};

use adamllm::demo::budget::check_budget;
use adamllm::demo::run::{
    BUILD_GENERAL_IMAGES, DemoObserver, DemoOptions, DemoReport, GeneralSource, PrebuiltModels,
    run_demo,
};
use adamllm::io::{write_atomic, write_json_atomic};
use adamllm::models::checkpoint::SINGLE_FILE;
use adamllm::train::trainer::TrainObserver;
use anyhow::{Context, Result, bail};
use clap::Args;

use crate::DeviceArgs;
use crate::progress::{self, StageBar};

/// Flags of `adamllm demo`.
#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Target domain: biomed, food or both.
    #[arg(long, default_value = "both", value_parser = ["biomed", "food", "both"])]
    pub domain: String,
    /// Output folder (data, runs, evaluations, report.md/json/html).
    #[arg(long, default_value = "adamllm-demo")]
    pub out: PathBuf,
    /// Smaller data and one epoch per training: a smoke test.
    #[arg(long)]
    pub quick: bool,
    /// Seed of the domains, the models and every draw.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Use --out even though it holds other files or another demo run (only the demo's own
    /// outputs are ever replaced).
    #[arg(long)]
    pub force: bool,
    /// Train the general base model, synthesizer and judge in the run (at the run's scale)
    /// instead of starting from the committed ones that `adamllm demo-models` built.
    #[arg(long)]
    pub train_general: bool,
    /// Run every post-training row with this many seeds (--seed, --seed + 1, …); the report
    /// gives each cell as mean ± standard deviation, and a claim holds only beyond it.
    #[arg(long, default_value_t = 1)]
    pub seeds: usize,
    /// Time budget in minutes: a run estimated to take longer (at the reference machine's
    /// measured speed) is refused before it starts, saying how many seeds fit.
    #[arg(long, default_value_t = 60.0)]
    pub max_minutes: f64,
    #[command(flatten)]
    pub device: DeviceArgs,
}

/// Flags of `adamllm demo-models`.
#[derive(Args, Debug)]
pub struct DemoModelsArgs {
    /// Folder the three safetensors files (base, synthesizer, judge) and build.json go to.
    #[arg(long, default_value = "cli/assets/demo-models")]
    pub out: PathBuf,
    /// Working folder (general data, training runs); a rerun resumes it.
    #[arg(long, default_value = "adamllm-demo-models")]
    pub work: PathBuf,
    /// Seed of the general domain and the trainings.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Tune the synthesizer on every question an image has under both hints (the paper's
    /// multi-round seed conversations) instead of the first one.
    #[arg(long)]
    pub all_seed_questions: bool,
    /// General-domain images to train on (the committed models: 1000).
    #[arg(long, default_value_t = BUILD_GENERAL_IMAGES, value_parser = clap::value_parser!(usize))]
    pub general_images: usize,
    /// Use --work even though it holds other files or another run.
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub device: DeviceArgs,
}

/// The committed general-domain models (`adamllm demo-models`, see `cli/assets/demo-models/build.json`).
pub const PREBUILT: PrebuiltModels<'static> = PrebuiltModels {
    base: include_bytes!("../assets/demo-models/base.safetensors"),
    synthesizer: include_bytes!("../assets/demo-models/synthesizer.safetensors"),
    judge: include_bytes!("../assets/demo-models/judge.safetensors"),
    build: include_str!("../assets/demo-models/build.json"),
};

/// Selects the device and runs the demo (or the general models' build) under one progress
/// view per stage.
fn run_with_progress(
    options: &DemoOptions,
    out: &Path,
    force: bool,
    device: &DeviceArgs,
    prebuilt: Option<PrebuiltModels<'_>>,
) -> Result<DemoReport> {
    let selected = device.select()?;
    eprintln!("device: {}", selected.description);
    let mut view = StageBar {
        bar: progress::styled(
            0,
            "{prefix:>28} [{elapsed_precise}] {wide_bar} {pos}/{len} {msg} (ETA {eta})",
        ),
    };
    let mut report = run_demo(options, out, force, &selected.device, prebuilt, &mut view)?;
    view.bar.finish_and_clear();
    report.json["device"] = serde_json::Value::String(selected.description);
    Ok(report)
}

impl DemoObserver for StageBar {
    fn stage(&mut self, name: &str, reused: bool) {
        self.begin(name, reused);
    }

    fn progress(&mut self, done: usize, total: usize) {
        self.bar.set_length(total as u64);
        self.bar.set_position(done as u64);
    }

    fn trainer(&mut self) -> &mut dyn TrainObserver {
        self
    }
}

/// Runs `adamllm demo`.
pub fn run(args: DemoArgs) -> Result<()> {
    let domains = match args.domain.as_str() {
        "both" => vec!["biomed".to_string(), "food".to_string()],
        one => vec![one.to_string()],
    };
    let options = DemoOptions {
        domains,
        quick: args.quick,
        seed: args.seed,
        general: if args.train_general {
            GeneralSource::Train
        } else {
            GeneralSource::Prebuilt
        },
        seeds: args.seeds,
    };
    let estimate = check_budget(&options, args.max_minutes)?;
    eprintln!(
        "estimated time: about {:.0} min with {} seed{} (at the 2-core CPU speed of BENCHMARKS.md; a resumed run takes less)",
        estimate.total_seconds() / 60.0,
        options.seeds,
        if options.seeds == 1 { "" } else { "s" }
    );
    let report = run_with_progress(
        &options,
        &args.out,
        args.force,
        &args.device,
        Some(PREBUILT),
    )?;
    println!("{}", report.markdown);
    eprintln!(
        "report: {0}/report.md, {0}/report.json, {0}/report.html",
        args.out.display()
    );
    Ok(())
}

/// Runs `adamllm demo-models`: the general stages at the build scale in `--work`, then the
/// three models' weights copied to `--out` with a `build.json` saying how they were made.
pub fn build_models(args: DemoModelsArgs) -> Result<()> {
    let options = DemoOptions {
        domains: Vec::new(),
        quick: false,
        seed: args.seed,
        general: GeneralSource::Build {
            all_seed_questions: args.all_seed_questions,
            general_images: args.general_images,
        },
        seeds: 1,
    };
    let report = run_with_progress(&options, &args.work, args.force, &args.device, None)?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("{}: cannot create", args.out.display()))?;
    let mut models = serde_json::Map::new();
    for name in ["base", "synthesizer", "judge"] {
        let stage = &report.json["stages"][name];
        let from = PathBuf::from(stage["model"].as_str().unwrap_or_default()).join(SINGLE_FILE);
        let bytes =
            std::fs::read(&from).with_context(|| format!("{}: cannot read", from.display()))?;
        if bytes.is_empty() {
            bail!("{}: empty", from.display());
        }
        let to = args.out.join(format!("{name}.safetensors"));
        write_atomic(&to, &bytes)?;
        models.insert(name.into(), stage.clone());
    }
    let build = serde_json::json!({
        "command": std::env::args().collect::<Vec<_>>(),
        "device": report.json["device"],
        "options": options,
        "scale": report.json["scale"],
        "seconds": report.json["seconds"],
        "models": models,
        "general_data": report.json["stages"]["data"],
    });
    write_json_atomic(&args.out.join("build.json"), &build)?;
    eprintln!(
        "wrote {0}/base.safetensors, {0}/synthesizer.safetensors, {0}/judge.safetensors, {0}/build.json",
        args.out.display()
    );
    Ok(())
}
