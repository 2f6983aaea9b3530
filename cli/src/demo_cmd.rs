//! `adamllm demo`: flags, one progress view, the printed table. The demo itself is
//! `adamllm::demo::run`.

use std::path::PathBuf;

use adamllm::demo::run::{DemoObserver, DemoOptions, run_demo};
use adamllm::train::trainer::TrainObserver;
use anyhow::Result;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use crate::DeviceArgs;
use crate::progress::StageBar;

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
    #[command(flatten)]
    pub device: DeviceArgs,
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
    };
    let selected = args.device.select()?;
    eprintln!("device: {}", selected.description);
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template(
            "{prefix:>28} [{elapsed_precise}] {wide_bar} {pos}/{len} {msg} (ETA {eta})",
        )
        .expect("valid template"),
    );
    let mut view = StageBar { bar };
    let report = run_demo(&options, &args.out, args.force, &selected.device, &mut view)?;
    view.bar.finish_and_clear();
    println!("{}", report.markdown);
    eprintln!(
        "report: {0}/report.md, {0}/report.json, {0}/report.html",
        args.out.display()
    );
    Ok(())
}
