//! `adamllm bench memory`: the peak memory of training and generation configurations, each
//! measured in a fresh child process, with PyTorch's peak for the same step beside it where
//! `--torch PYTHON` is given and PyTorch can run that configuration on this machine.
//!
//! A configuration is `train:MODE` (a `bench train` mode: `train:lora:bf16:gc`,
//! `train:lora:f16:gc:q4`) or `generate:DTYPE[:q8|q4]` (`generate:bf16`, `generate:f16:q4`:
//! load, prefill the prompt, decode `--new-tokens`). The peak is the child's `VmHWM` on flex
//! (and on wgpu, where lavapipe's buffers are host memory too; a real GPU's pool is not in it),
//! counted from loading on, not from writing the random-weight folder.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use adamllm::device::{DeviceChoice, select_device};
use adamllm::generation::{GenerationOptions, generate};
use adamllm::models::registry::family_of_preset;
use adamllm::models::{LoadOptions, Model};
use adamllm::precision::DTypeChoice;
use adamllm::quantize::Quantization;
use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

use crate::bench::{peak_rss_mib, reset_peak_rss, write_preset};
use crate::bench_train::TrainRow;

/// What one configuration runs.
#[derive(Debug, Clone, PartialEq)]
enum Job {
    /// One training step of a `bench train` mode.
    Train(String),
    /// Load, prefill and decode in a dtype, optionally quantized.
    Generate {
        dtype: DTypeChoice,
        quantize: Option<Quantization>,
    },
}

/// Parses a configuration (`train:lora:bf16:gc`, `generate:f16:q8`).
fn parse_config(config: &str) -> Result<Job> {
    let (job, rest) = config.split_once(':').unwrap_or((config, ""));
    match job {
        "train" if !rest.is_empty() => {
            crate::bench_train::check_mode(rest)?;
            Ok(Job::Train(rest.to_string()))
        }
        "generate" => {
            let mut dtype = DTypeChoice::F32;
            let mut quantize = None;
            for part in rest.split(':').filter(|p| !p.is_empty()) {
                if let Ok(q) = part.parse::<Quantization>() {
                    quantize = Some(q);
                } else {
                    dtype = part
                        .parse()
                        .map_err(|e| anyhow::anyhow!("config {config:?}: {e} (or q8, q4)"))?;
                }
            }
            Ok(Job::Generate { dtype, quantize })
        }
        _ => bail!(
            "config {config:?}: expected train:MODE (train:lora:bf16:gc) or \
             generate:DTYPE[:q8|q4] (generate:bf16:q4)"
        ),
    }
}

/// The workload every configuration of one run shares.
#[derive(Debug, Clone, Copy)]
pub struct MemoryShape {
    /// Text tokens per training sequence or generation prompt.
    pub tokens: usize,
    /// Tokens decoded by a generation configuration.
    pub new_tokens: usize,
}

/// One result line (JSON) of `bench memory`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MemoryRow {
    bench: String,
    framework: String,
    /// The framework's version (`torch 2.x, transformers 4.47.1` for PyTorch rows).
    version: String,
    preset: String,
    config: String,
    device: String,
    tokens: usize,
    /// Seconds the measured work took (one training step, or prefill + decode).
    seconds: f64,
    peak_rss_mib: f64,
}

impl MemoryRow {
    /// A row of ours for `[preset, config, device]`.
    fn ours(names: [&str; 3], tokens: usize, seconds: f64, peak_rss_mib: f64) -> Self {
        let [preset, config, device] = names;
        Self {
            bench: "memory".into(),
            framework: "adamllm".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            preset: preset.into(),
            config: config.into(),
            device: device.into(),
            tokens,
            seconds,
            peak_rss_mib,
        }
    }
}

/// Runs one generation configuration in this process and returns its row.
pub fn single_generate(
    preset: &str,
    config: &str,
    device: &str,
    shape: MemoryShape,
) -> Result<MemoryRow> {
    let Job::Generate { dtype, quantize } = parse_config(config)? else {
        bail!("config {config:?} is not a generation configuration");
    };
    let tmp = tempfile::tempdir()?;
    write_preset(preset, tmp.path())?;
    reset_peak_rss();
    let choice: DeviceChoice = device.parse().map_err(anyhow::Error::msg)?;
    let selected = select_device(choice)?;
    let options = LoadOptions {
        dtype,
        template: None,
        quantize,
    };
    let model = Model::load_with(tmp.path(), &selected.device, &options)?;
    let prompt = crate::bench::bench_prompt(&model, shape.tokens)?;
    let t = Instant::now();
    let options = GenerationOptions {
        max_new_tokens: shape.new_tokens,
        ignore_eos: true,
        ..Default::default()
    };
    generate(&model, std::slice::from_ref(&prompt), &options)?;
    let seconds = t.elapsed().as_secs_f64();
    Ok(MemoryRow::ours(
        [preset, config, device],
        prompt.ids.len(),
        seconds,
        peak_rss_mib(),
    ))
}

/// Runs one configuration of ours in a child process.
fn ours(preset: &str, config: &str, device: &str, shape: MemoryShape) -> Result<MemoryRow> {
    let exe = std::env::current_exe()?;
    let mut command = Command::new(&exe);
    match parse_config(config)? {
        Job::Train(mode) => {
            command
                .args(["bench", "train", "--single", "--presets", preset])
                .args(["--modes", &mode, "--devices", device, "--batch", "1"])
                .args(["--seq-len", &shape.tokens.to_string()])
                .args(["--warmup", "0", "--steps", "1"]);
        }
        Job::Generate { .. } => {
            command
                .args(["bench", "memory", "--single", "--presets", preset])
                .args(["--configs", config, "--devices", device])
                .args(["--tokens", &shape.tokens.to_string()])
                .args(["--new-tokens", &shape.new_tokens.to_string()]);
        }
    }
    let out = command
        .output()
        .context("running a benchmark child process")?;
    if !out.status.success() {
        bail!(
            "{preset}/{config}/{device}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let line = String::from_utf8_lossy(&out.stdout);
    let line = line.trim();
    if let Ok(row) = serde_json::from_str::<MemoryRow>(line) {
        return Ok(row);
    }
    let train: TrainRow =
        serde_json::from_str(line).with_context(|| format!("child output {line:?}"))?;
    Ok(MemoryRow::ours(
        [preset, config, device],
        train.seq_len,
        train.step_ms / 1e3,
        train.peak_rss_mib,
    ))
}

/// The PyTorch command for a configuration, where PyTorch runs it here: Qwen2-VL training
/// over a dense base (`bench/torch_train.py`; bitsandbytes' 4/8-bit layers need CUDA).
fn torch_command(python: &Path, model_dir: &Path, preset: &str, config: &str) -> Option<Command> {
    let family = family_of_preset(preset)?;
    let Ok(Job::Train(mode)) = parse_config(config) else {
        return None;
    };
    let mode = crate::bench_train::check_mode(&mode).ok()?;
    if family.name() != "qwen2_vl" || mode.quantize.is_some() {
        return None;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../bench/torch_train.py");
    let mut command = Command::new(python);
    command
        .arg(script)
        .args(["--model", &model_dir.display().to_string()])
        .args([
            "--mode",
            mode.kind,
            "--dtype",
            adamllm::precision::dtype_name(mode.dtype),
        ])
        .args(["--batch", "1", "--warmup-steps", "0", "--steps", "1"]);
    if mode.gradient_checkpointing {
        command.arg("--gradient-checkpointing");
    }
    Some(command)
}

/// PyTorch's row for a configuration (`None` where it cannot run it here).
fn torch_row(
    python: &Path,
    models: &mut ModelFolders,
    preset: &str,
    config: &str,
    shape: MemoryShape,
) -> Result<Option<MemoryRow>> {
    let dir = models.folder(preset)?;
    let Some(mut command) = torch_command(python, &dir, preset, config) else {
        return Ok(None);
    };
    command.args(["--seq-len", &shape.tokens.to_string()]);
    let out = command.output().context("running PyTorch")?;
    if !out.status.success() {
        bail!(
            "PyTorch on {preset}/{config}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let line = String::from_utf8_lossy(&out.stdout);
    let value: serde_json::Value =
        serde_json::from_str(line.trim()).with_context(|| format!("PyTorch output {line:?}"))?;
    let number = |key: &str| value[key].as_f64().unwrap_or(f64::NAN);
    Ok(Some(MemoryRow {
        bench: "memory".into(),
        framework: "pytorch".into(),
        version: format!(
            "torch {}, transformers {}",
            value["torch"].as_str().unwrap_or("?"),
            value["transformers"].as_str().unwrap_or("?")
        ),
        preset: preset.into(),
        config: config.into(),
        device: "cpu".into(),
        tokens: shape.tokens,
        seconds: number("step_ms") / 1e3,
        peak_rss_mib: number("peak_rss_mib"),
    }))
}

/// Random-weight folders of the presets PyTorch reads, written once per run.
struct ModelFolders {
    root: tempfile::TempDir,
    written: Vec<String>,
}

impl ModelFolders {
    fn folder(&mut self, preset: &str) -> Result<PathBuf> {
        let dir = self.root.path().join(preset);
        if !self.written.iter().any(|p| p == preset) {
            write_preset(preset, &dir)?;
            self.written.push(preset.to_string());
        }
        Ok(dir)
    }
}

/// Runs every configuration (ours in child processes; PyTorch's with `torch`), prints each
/// row as JSON and a table, and appends the rows to `out` when given.
pub fn all(
    presets: &str,
    configs: &str,
    devices: &str,
    shape: MemoryShape,
    torch: Option<&Path>,
    out: Option<&Path>,
) -> Result<()> {
    let configs: Vec<&str> = configs.split(',').map(str::trim).collect();
    for config in &configs {
        parse_config(config)?;
    }
    let mut folders = ModelFolders {
        root: tempfile::tempdir()?,
        written: Vec::new(),
    };
    let mut rows = Vec::new();
    for preset in presets.split(',').map(str::trim) {
        for config in &configs {
            for device in devices.split(',').map(str::trim) {
                rows.push(ours(preset, config, device, shape)?);
                emit(rows.last().expect("row"), out)?;
            }
            if let Some(python) = torch
                && let Some(row) = torch_row(python, &mut folders, preset, config, shape)?
            {
                rows.push(row);
                emit(rows.last().expect("row"), out)?;
            }
        }
    }
    print_table(&rows);
    Ok(())
}

/// Prints a row as a JSON line and appends it to `out`.
fn emit(row: &MemoryRow, out: Option<&Path>) -> Result<()> {
    let line = serde_json::to_string(row)?;
    println!("{line}");
    if let Some(path) = out {
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("{}: cannot append", path.display()))?;
        writeln!(file, "{line}").with_context(|| format!("{}: cannot append", path.display()))?;
    }
    Ok(())
}

/// The table of peaks, PyTorch's beside ours where it ran.
fn print_table(rows: &[MemoryRow]) {
    eprintln!(
        "\n{:<12} {:<22} {:<6} {:>7} {:>12} {:>14} {:>9}",
        "preset", "config", "device", "tokens", "adamllm MiB", "PyTorch MiB", "ratio"
    );
    for row in rows.iter().filter(|r| r.framework == "adamllm") {
        let torch = rows
            .iter()
            .find(|t| t.framework == "pytorch" && t.preset == row.preset && t.config == row.config);
        let (torch_text, ratio) = match torch {
            Some(t) => (
                format!("{:.0}", t.peak_rss_mib),
                format!("{:.2}×", row.peak_rss_mib / t.peak_rss_mib),
            ),
            None => ("—".to_string(), "—".to_string()),
        };
        eprintln!(
            "{:<12} {:<22} {:<6} {:>7} {:>12.0} {:>14} {:>9}",
            row.preset, row.config, row.device, row.tokens, row.peak_rss_mib, torch_text, ratio
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configurations_parse_and_bad_ones_are_named() {
        assert_eq!(
            parse_config("train:lora:bf16:gc").unwrap(),
            Job::Train("lora:bf16:gc".into())
        );
        assert_eq!(
            parse_config("generate:f16:q4").unwrap(),
            Job::Generate {
                dtype: DTypeChoice::F16,
                quantize: Some(Quantization::Q4)
            }
        );
        for bad in ["train", "decode:f16", "generate:f17", "train:lora:f17"] {
            let e = parse_config(bad).unwrap_err().to_string();
            assert!(
                e.contains(bad.split(':').next_back().unwrap()),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn pytorch_runs_only_dense_qwen2_vl_training() {
        let python = Path::new("python3");
        let dir = Path::new("/m");
        let args = |preset: &str, config: &str| {
            torch_command(python, dir, preset, config).map(|c| {
                c.get_args()
                    .map(|a| a.to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join(" ")
            })
        };
        let lora = args("qwen2vl-2b", "train:lora:bf16:gc").unwrap();
        assert!(
            lora.contains("--mode lora --dtype bf16") && lora.ends_with("--gradient-checkpointing"),
            "{lora}"
        );
        assert!(args("qwen2vl-2b", "train:lora:f16:gc:q4").is_none());
        assert!(args("llama-tiny", "train:lora:bf16").is_none());
        assert!(args("tiny", "generate:bf16").is_none());
    }
}
