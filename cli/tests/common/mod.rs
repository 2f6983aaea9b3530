//! Helpers shared by the CLI test binaries: running `adamllm` and checking its failures.
#![allow(dead_code)] // each test binary uses a different subset

use std::process::{Command, Output};

/// The `adamllm` binary with a runtime dir for wgpu.
pub fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_adamllm"));
    c.env("XDG_RUNTIME_DIR", "/tmp");
    c
}

/// Runs `adamllm` with `args` to completion.
pub fn run(args: &[&str]) -> Output {
    bin().args(args).output().expect("binary runs")
}

/// Its stderr as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

/// Its stdout as text.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}

/// Asserts success, showing stderr otherwise.
pub fn ok(o: &Output) {
    assert!(o.status.success(), "command failed: {}", stderr(o));
}

/// Asserts a non-zero exit whose stderr holds every needle and no panic.
pub fn expect_failure(o: &Output, needles: &[&str]) {
    assert!(!o.status.success(), "expected failure: {}", stderr(o));
    let e = stderr(o);
    for n in needles {
        assert!(e.contains(n), "stderr lacks {n:?}: {e}");
    }
    assert!(!e.contains("panicked"), "panic instead of an error: {e}");
}
