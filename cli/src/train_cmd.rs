//! `adamllm train`: argument handling and the progress bar; the loop is
//! `adamllm::train::trainer`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use adamllm::data::dataset_info::DatasetLayout;
use adamllm::device::select_devices;
use adamllm::models::files::ModelFiles;
use adamllm::train::llamafactory::{
    EXPORT_CONFIG_FILE, ExportRequest, export_llamafactory, is_llamafactory_config,
    read_llamafactory_config,
};
use adamllm::train::recipe::{TrainRecipe, is_recipe_key, normalize_key};
use adamllm::train::trainer::{StepReport, TrainObserver, TrainPlan, TrainRequest, train};
use anyhow::{Result, bail};
use clap::Args;
use indicatif::ProgressBar;

use crate::DeviceArgs;

/// Flags of `adamllm train` (recipe keys are taken out of the command line before clap sees
/// it; see [`split_recipe_flags`]).
#[derive(Args, Debug)]
#[command(after_help = recipe_help())]
pub struct TrainArgs {
    /// Base model: a folder (Hugging Face layout) or a model id cached by the Hugging Face
    /// tools (`org/name[@revision]`). Default: a LLaMA-Factory config's `model_name_or_path`.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Training data (ShareGPT `messages`+`images` or LLaVA `conversations`+`image`, JSON or
    /// JSONL); repeat for several files. Default: a LLaMA-Factory config's `dataset`.
    #[arg(long)]
    pub data: Vec<PathBuf>,
    /// Run the --data files as consecutive stages (the two-stage baseline) instead of one
    /// shuffled mix.
    #[arg(long)]
    pub stages: bool,
    /// Validation data (instead of a val_size split).
    #[arg(long)]
    pub val_data: Option<PathBuf>,
    /// Folder image paths are relative to (default: each dataset's folder).
    #[arg(long)]
    pub images: Option<PathBuf>,
    /// Run folder (checkpoints, metrics.jsonl, loss_curve.png, model/, adapter/). Default: a
    /// LLaMA-Factory config's `output_dir`.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// YAML recipe (LLaMA-Factory key names), or a LLaMA-Factory SFT config (its model,
    /// datasets through `dataset_info.json`, and output folder too); flags override its keys.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Write the run as a LLaMA-Factory config (DIR/train.yaml + DIR/dataset_info.json)
    /// instead of training.
    #[arg(long, value_name = "DIR")]
    pub export_llamafactory: Option<PathBuf>,
    /// Continue the run in --out from its newest checkpoint.
    #[arg(long)]
    pub resume: bool,
    /// Skip samples with missing images or no assistant turn (listed in skipped.jsonl).
    #[arg(long)]
    pub skip_bad: bool,
    /// Print the step losses as JSON at the end as well.
    #[arg(long)]
    pub json: bool,
    /// Data-parallel training over several devices, e.g. `wgpu:0,wgpu:1` (`cpu,cpu` runs two
    /// replicas on the CPU): a step takes gradient_accumulation_steps micro-batches per device,
    /// their gradients summed on the first device. Instead of --device.
    #[arg(long, conflicts_with = "device")]
    pub devices: Option<String>,
    #[command(flatten)]
    pub device: DeviceArgs,
}

fn recipe_help() -> String {
    format!(
        "Every recipe key also works as a flag (--learning-rate 1e-4, --lora-rank 16, ...):\n  {}",
        TrainRecipe::keys()
            .iter()
            .map(|k| format!("--{}", k.replace('_', "-")))
            .collect::<Vec<_>>()
            .join(" ")
    )
}

/// Takes `--<recipe-key> value` / `--<recipe-key>=value` pairs out of the arguments after
/// `train`. A key without a value (followed by another flag or nothing) means `true`.
pub fn split_recipe_flags(args: Vec<String>) -> (Vec<String>, Vec<(String, String)>) {
    // Only the `train` subcommand takes recipe flags (`adamllm train ...`).
    let train_at = 1;
    if args.get(train_at).map(String::as_str) != Some("train") {
        return (args, Vec::new());
    }
    let mut rest = args[..=train_at].to_vec();
    let mut overrides = Vec::new();
    let mut i = train_at + 1;
    while i < args.len() {
        let a = &args[i];
        let (flag, inline) = match a.split_once('=') {
            Some((f, v)) if a.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (a.clone(), None),
        };
        if flag.starts_with("--") && flag != "--config" && is_recipe_key(&flag) {
            let key = normalize_key(&flag);
            if let Some(v) = inline {
                overrides.push((key, v));
                i += 1;
            } else if i + 1 < args.len() && !args[i + 1].starts_with("--") {
                overrides.push((key, args[i + 1].clone()));
                i += 2;
            } else {
                overrides.push((key, "true".into()));
                i += 1;
            }
        } else {
            rest.push(a.clone());
            i += 1;
        }
    }
    (rest, overrides)
}

struct Bar {
    bar: ProgressBar,
}

impl TrainObserver for Bar {
    fn started(&mut self, plan: &TrainPlan) {
        self.bar.set_length(plan.total_steps as u64);
        self.bar.set_position(plan.resumed_from_step as u64);
        self.bar.reset_eta();
        crate::progress::say(
            &self.bar,
            format!(
                "{} samples in {} stage(s), {} validation; {} optimizer steps; {} of {} parameters trainable{}{}{}",
                plan.stage_samples.iter().sum::<usize>(),
                plan.stage_samples.len(),
                plan.val_samples,
                plan.total_steps,
                plan.trainable_params,
                plan.total_params,
                if plan.resumed_from_step > 0 {
                    format!("; resuming after step {}", plan.resumed_from_step)
                } else {
                    String::new()
                },
                if plan.dropped_too_long > 0 {
                    format!(
                        "; {} dropped (cutoff_len inside image tokens)",
                        plan.dropped_too_long
                    )
                } else {
                    String::new()
                },
                if plan.skipped > 0 {
                    format!("; {} skipped (see skipped.jsonl)", plan.skipped)
                } else {
                    String::new()
                },
            ),
        );
    }

    fn step(&mut self, r: &StepReport) {
        self.bar.set_position(r.step as u64);
        self.bar.set_message(format!(
            "loss {:.4} lr {:.2e} {:.0} tok/s",
            r.loss, r.lr, r.tokens_per_s
        ));
    }

    fn message(&mut self, text: &str) {
        crate::progress::say(&self.bar, text);
    }
}

/// What a LLaMA-Factory config adds to the flags (nothing for an adamllm recipe).
#[derive(Default)]
struct ConfigRun {
    model: Option<PathBuf>,
    data: Vec<PathBuf>,
    layouts: BTreeMap<PathBuf, DatasetLayout>,
    val_data: Option<PathBuf>,
    images_dir: Option<PathBuf>,
    output_dir: Option<PathBuf>,
}

/// The recipe and, for a LLaMA-Factory config, the run it describes; warnings are printed.
fn read_config(
    config: Option<&Path>,
    overrides: &[(String, String)],
) -> Result<(TrainRecipe, ConfigRun)> {
    let Some(path) = config
        .filter(|p| std::fs::read_to_string(p).is_ok_and(|text| is_llamafactory_config(&text)))
    else {
        let recipe = TrainRecipe::load(config, overrides).map_err(anyhow::Error::msg)?;
        return Ok((recipe, ConfigRun::default()));
    };
    let lf = read_llamafactory_config(path)?;
    for warning in &lf.warnings {
        eprintln!("warning: {}: {warning}", path.display());
    }
    let mut recipe = lf.recipe;
    for (key, value) in overrides {
        recipe
            .apply_override(key, value)
            .map_err(anyhow::Error::msg)?;
    }
    recipe
        .validate()
        .map_err(|e| anyhow::anyhow!("{} (after command-line overrides): {e}", path.display()))?;
    let run = ConfigRun {
        model: lf.model,
        data: lf.data,
        layouts: lf.layouts,
        val_data: lf.val_data,
        images_dir: lf.images_dir,
        output_dir: lf.output_dir,
    };
    Ok((recipe, run))
}

/// The LLaMA-Factory template of a model family's own prompt, where the two agree.
fn family_template(model: &Path) -> Option<&'static str> {
    let dir = adamllm::models::hub::resolve_model_path(model).ok()?;
    let family = adamllm::models::registry::family_of(&ModelFiles::Dir(dir)).ok()?;
    (family.name() == "qwen2_vl").then_some("qwen2_vl")
}

/// Runs `adamllm train`.
pub fn run(args: TrainArgs, overrides: &[(String, String)]) -> Result<()> {
    let (recipe, config) = read_config(args.config.as_deref(), overrides)?;
    let from_config = |what: &str, key: &str| {
        anyhow::anyhow!("{what} is required (or `{key}` in a LLaMA-Factory --config)")
    };
    let model = args
        .model
        .or(config.model)
        .ok_or_else(|| from_config("--model", "model_name_or_path"))?;
    let (data, layouts) = if args.data.is_empty() {
        (config.data, config.layouts)
    } else {
        (args.data, BTreeMap::new())
    };
    if data.is_empty() {
        return Err(from_config("--data", "dataset"));
    }
    let out = args
        .out
        .or(config.output_dir)
        .ok_or_else(|| from_config("--out", "output_dir"))?;
    let val_data = args.val_data.or(config.val_data);
    let images_dir = args.images.or(config.images_dir);
    if let Some(dir) = &args.export_llamafactory {
        let request = ExportRequest {
            recipe: &recipe,
            model: &model,
            family_template: family_template(&model),
            data: &data,
            val_data: val_data.as_deref(),
            images_dir: images_dir.as_deref(),
            output_dir: &out,
            stages: args.stages,
        };
        if !layouts.is_empty() {
            bail!(
                "--export-llamafactory writes adamllm's own data files; this run's data already comes from a LLaMA-Factory config"
            );
        }
        for file in export_llamafactory(&request, dir)? {
            println!("wrote {}", file.display());
        }
        println!(
            "run it with: llamafactory-cli train {}",
            dir.join(EXPORT_CONFIG_FILE).display()
        );
        return Ok(());
    }
    // `--dtype` and `--quantize` are the recipe's keys here (taken out with the other recipe
    // flags); every device is checked, so no replica computes in another precision.
    let dtype_args = DeviceArgs {
        dtype: Some(recipe.dtype),
        quantize: recipe.quantize,
        ..args.device.clone()
    };
    let (selected, replica_devices) = match &args.devices {
        Some(list) => {
            let mut devices = select_devices(list).map_err(anyhow::Error::msg)?;
            for device in &devices {
                dtype_args.check_dtype(device)?;
            }
            let first = devices.remove(0);
            (first, devices.into_iter().map(|d| d.device).collect())
        }
        None => (dtype_args.select_quantizable()?, Vec::new()),
    };
    let request = TrainRequest {
        model_dir: model,
        data,
        layouts,
        stages: args.stages,
        val_data,
        images_dir,
        out,
        recipe,
        device: selected.device.clone(),
        replica_devices,
        resume: args.resume,
        skip_bad: args.skip_bad,
    };
    let mut observer = Bar {
        bar: crate::progress::styled(
            0,
            "   train [{elapsed_precise}] {wide_bar} {pos}/{len} steps {msg} (ETA {eta})",
        ),
    };
    let summary = train(&request, &mut observer)?;
    observer.bar.finish_and_clear();
    let last = summary.losses.last().map(|l| l.loss);
    eprintln!(
        "done: {} steps, final loss {}, model in {}{}",
        summary.plan.total_steps,
        last.map_or("-".into(), |l| format!("{l:.4}")),
        summary.model_dir.display(),
        summary
            .adapter_dir
            .as_ref()
            .map(|d| format!(", PEFT adapter in {}", d.display()))
            .unwrap_or_default()
    );
    let mut out = serde_json::json!({
        "steps": summary.plan.total_steps,
        "final_loss": last,
        "val_loss": summary.val_loss,
        "model_dir": summary.model_dir,
        "adapter_dir": summary.adapter_dir,
        "trainable_params": summary.plan.trainable_params,
        "peak_memory_mib": summary.peak_memory_mib,
        "wall_s": summary.wall_s,
    });
    if args.json {
        out["losses"] = serde_json::to_value(&summary.losses)?;
    }
    println!("{}", serde_json::to_string(&out)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn recipe_flags_are_split_out() {
        let (rest, ov) = split_recipe_flags(s(&[
            "adamllm",
            "train",
            "--model",
            "m",
            "--learning-rate",
            "1e-3",
            "--max_steps=5",
            "--train-on-prompt",
            "--out",
            "o",
        ]));
        assert_eq!(rest, s(&["adamllm", "train", "--model", "m", "--out", "o"]));
        assert_eq!(
            ov,
            vec![
                ("learning_rate".to_string(), "1e-3".to_string()),
                ("max_steps".to_string(), "5".to_string()),
                ("train_on_prompt".to_string(), "true".to_string()),
            ]
        );
        // Other commands keep every flag, even with a value spelled "train".
        let other = s(&[
            "adamllm",
            "synthesize",
            "--out",
            "train",
            "--max-steps",
            "3",
        ]);
        assert_eq!(split_recipe_flags(other.clone()), (other, Vec::new()));
    }
}
