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

/// Prints a line above the bar, or to stderr when the bar is hidden (stderr is not a
/// terminal), so messages reach logs and tests too.
pub fn say(bar: &ProgressBar, text: impl AsRef<str>) {
    if bar.is_hidden() {
        eprintln!("{}", text.as_ref());
    } else {
        bar.println(text.as_ref());
    }
}
