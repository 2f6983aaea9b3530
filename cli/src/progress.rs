//! Progress bars (indicatif) for long CLI jobs.

use indicatif::{ProgressBar, ProgressStyle};

/// A bar over `len` items with rate and ETA; hidden when stderr is not a terminal.
pub fn bar(len: u64, label: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template(
            "{prefix:>8} [{elapsed_precise}] {wide_bar} {pos}/{len} ({per_sec}, ETA {eta})",
        )
        .expect("valid template"),
    );
    bar.set_prefix(label.to_string());
    bar
}
