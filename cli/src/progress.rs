//! Progress bars (indicatif) for long CLI jobs.

use adamllm::train::trainer::{StepReport, TrainObserver, TrainPlan};
use indicatif::{ProgressBar, ProgressStyle};

/// A bar over `len` items drawn with an indicatif `template` (the CLI's templates are
/// constants, so a bad one is a programming error).
pub fn styled(len: u64, template: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(ProgressStyle::with_template(template).expect("valid template"));
    bar
}

/// A bar over `len` items with rate and ETA; hidden when stderr is not a terminal.
pub fn bar(len: u64, label: &str) -> ProgressBar {
    let bar = styled(
        len,
        "{prefix:>8} [{elapsed_precise}] {wide_bar} {pos}/{len} ({per_sec}, ETA {eta})",
    );
    bar.set_prefix(label.to_string());
    bar
}

/// Prints a line above the bar, or to stderr when the bar is hidden (stderr is not a
/// terminal), so messages reach logs and tests too.
pub fn say(bar: &ProgressBar, text: impl AsRef<str>) {
    if bar.is_hidden() {
        eprintln!("{}", text.as_ref());
    } else {
        bar.println(text.as_ref());
    }
}

/// One bar for a multi-stage job (`pipeline`, `demo`): each stage restarts it under its own
/// label, and training stages drive it step by step.
pub struct StageBar {
    /// The bar.
    pub bar: ProgressBar,
}

impl StageBar {
    /// Restarts the bar for a stage; a stage finished by an earlier run is only announced.
    pub fn begin(&self, label: &str, reused: bool) {
        self.bar.set_prefix(label.to_string());
        self.bar.set_position(0);
        self.bar.set_length(0);
        self.bar.set_message("");
        self.bar.reset_eta();
        if reused {
            say(&self.bar, format!("{label}: finished earlier, reused"));
        } else {
            say(&self.bar, format!("{label} ..."));
        }
    }
}

impl TrainObserver for StageBar {
    fn started(&mut self, plan: &TrainPlan) {
        self.bar.set_length(plan.total_steps as u64);
        self.bar.set_position(plan.resumed_from_step as u64);
    }

    fn step(&mut self, report: &StepReport) {
        self.bar.set_position(report.step as u64);
        self.bar.set_message(format!(
            "loss {:.4}, {:.0} tok/s",
            report.loss, report.tokens_per_s
        ));
    }

    fn message(&mut self, text: &str) {
        say(&self.bar, format!("     train: {text}"));
    }
}
