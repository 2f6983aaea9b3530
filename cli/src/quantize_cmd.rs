//! `adamllm quantize`: a quantized copy of a model folder (see
//! [`adamllm::models::quantized_store`]) that every command loads without `--quantize`.

use std::path::{Path, PathBuf};

use adamllm::models::export::{parse_shard_size, save_model_dir};
use adamllm::models::files::ModelFiles;
use anyhow::{Result, bail};
use clap::Args;
use serde::Serialize;

use crate::DeviceArgs;

/// Flags of `adamllm quantize`.
#[derive(Args, Debug)]
pub struct QuantizeArgs {
    /// Model folder to quantize, or a model id in the Hugging Face cache.
    #[arg(long)]
    pub model: PathBuf,
    /// Output folder (not the model folder itself).
    #[arg(long)]
    pub out: PathBuf,
    /// Largest weight file, as transformers' `max_shard_size` (5GB, 500MB, 2GiB, bytes).
    #[arg(long, default_value = "5GB")]
    pub max_shard_size: String,
    /// Overwrite a folder that already holds a model.
    #[arg(long)]
    pub force: bool,
    /// `--quantize q8|q4` is required; `--dtype` is the embedding's, LM head's and norms'.
    #[command(flatten)]
    pub device: DeviceArgs,
}

/// What `adamllm quantize` prints as JSON.
#[derive(Serialize)]
struct QuantizeSummary {
    out: String,
    quantize: String,
    dtype: String,
    source_weight_bytes: u64,
    weight_bytes: u64,
}

/// Runs `adamllm quantize`.
pub fn run(args: &QuantizeArgs) -> Result<()> {
    let Some(q) = args.device.quantize else {
        bail!("--quantize q8|q4 is required: it says how the linear layers are stored");
    };
    let max_shard_bytes = parse_shard_size(&args.max_shard_size)
        .map_err(|e| anyhow::anyhow!("--max-shard-size: {e}"))?;
    check_out(&args.model, &args.out, args.force)?;
    let (model, _) = crate::load_model(&args.model, &args.device)?;
    eprintln!("writing {q} weights to {}", args.out.display());
    save_model_dir(&model, &args.out, max_shard_bytes)?;
    let summary = QuantizeSummary {
        out: args.out.display().to_string(),
        quantize: q.to_string(),
        dtype: format!("{:?}", model.dtype).to_lowercase(),
        source_weight_bytes: weight_bytes(&model.dir),
        weight_bytes: weight_bytes(&args.out),
    };
    eprintln!(
        "{}: {:.1} MiB of weights ({:.1} MiB in the source folder)",
        summary.out,
        summary.weight_bytes as f64 / (1 << 20) as f64,
        summary.source_weight_bytes as f64 / (1 << 20) as f64
    );
    println!("{}", serde_json::to_string(&summary)?);
    Ok(())
}

/// Refuses an output folder that is the model folder, or that holds a model without
/// `--force`.
fn check_out(model: &Path, out: &Path, force: bool) -> Result<()> {
    let same = match (std::fs::canonicalize(model), std::fs::canonicalize(out)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if same {
        bail!(
            "--out {}: is the model folder; write the quantized copy to another folder",
            out.display()
        );
    }
    if out.join("config.json").exists() && !force {
        bail!(
            "--out {}: already holds a model (config.json); pass --force to overwrite it",
            out.display()
        );
    }
    Ok(())
}

/// Bytes of the safetensors files of a folder.
fn weight_bytes(dir: &Path) -> u64 {
    let files = ModelFiles::Dir(dir.to_path_buf());
    files
        .names()
        .iter()
        .filter(|name| name.ends_with(".safetensors"))
        .filter_map(|name| files.len(name).ok())
        .sum()
}
