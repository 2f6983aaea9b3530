//! `adamllm pipeline --config pipeline.yaml`: synthesize → filter → assemble → train in one
//! run folder, resumable stage by stage.
//!
//! ```yaml
//! data: image_caption_pairs.json   # paths are relative to this file's folder
//! images: images
//! synthesizer: models/synthesizer
//! judge: models/judge
//! out: runs/biomed
//! mode: single                     # single | two-stage | caption-only | synthetic-only
//! seed: 0
//! batch_size: 8
//! max_new_tokens: 512
//! judge_format: auto               # auto | chat | plain
//! judge_shots: 6                   # worked examples in the judge prompt (0-6)
//! judge_instructions: true         # open the judge prompt with its instructions
//! train:                           # optional; without it the pipeline stops after assembly
//!   model: models/base
//!   config: recipes/portable-lora.yaml
//!   overrides: {max_steps: 200}
//! ```
//!
//! Run folder: `synthesis/` (the synthesize output), `filtered_task_pairs.jsonl` (+ labels),
//! the assembled file(s), `train/` (the trainer's run folder) and `pipeline_state.json`,
//! which lists finished stages and the digest of the config they were made with. A rerun
//! skips finished stages and resumes the unfinished one (the generation caches and the
//! trainer's checkpoints); a changed config is refused rather than mixed with old outputs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use burn::tensor::{DType, Device};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::SynthError;
use super::assemble::{ASSEMBLED_FILE, AssemblyMode, output_files, run_assemble};
use super::judge::{FilterOptions, JudgePromptFormat, run_filter};
use super::pairs::read_caption_pairs;
use super::synthesize::{
    GenerationProgress, SYNTHESIS_MAX_NEW_TOKENS, SynthesizeOptions, TRIPLETS_FILE, run_synthesis,
};
use crate::io::{FileError, read_json_file, write_json_atomic};
use crate::models::Model;
use crate::train::recipe::TrainRecipe;
use crate::train::run_dir::RUN_JSON;
use crate::train::trainer::{TrainObserver, TrainRequest, train};

/// State file of a pipeline run folder.
pub const PIPELINE_STATE_FILE: &str = "pipeline_state.json";
/// The filter's output inside the run folder.
pub const FILTERED_FILE: &str = "filtered_task_pairs.jsonl";

/// The train section of a pipeline config.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineTrain {
    /// Base model folder to post-train.
    pub model: PathBuf,
    /// Recipe YAML (optional).
    #[serde(default)]
    pub config: Option<PathBuf>,
    /// Recipe keys overriding the recipe.
    #[serde(default)]
    pub overrides: BTreeMap<String, serde_yaml_ng::Value>,
}

fn default_mode() -> String {
    "single".into()
}
fn default_batch() -> usize {
    8
}
fn default_max_new() -> usize {
    SYNTHESIS_MAX_NEW_TOKENS
}
fn default_judge_instructions() -> bool {
    true
}

fn default_shots() -> usize {
    6
}
fn default_format() -> String {
    "auto".into()
}

/// `pipeline.yaml`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// `image_caption_pairs.json`.
    pub data: PathBuf,
    /// Folder the pairs' image paths are relative to.
    pub images: PathBuf,
    /// Synthesizer model folder.
    pub synthesizer: PathBuf,
    /// Judge model folder.
    pub judge: PathBuf,
    /// Run folder.
    pub out: PathBuf,
    /// Assembly mode.
    #[serde(default = "default_mode")]
    pub mode: String,
    /// Seed of template draws and caption placement.
    #[serde(default)]
    pub seed: u64,
    /// Prompts per generation call.
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    /// Synthesis budget.
    #[serde(default = "default_max_new")]
    pub max_new_tokens: usize,
    /// `chat` or `plain` judge prompt.
    #[serde(default = "default_format")]
    pub judge_format: String,
    /// Worked examples in the judge prompt (0 to 6).
    #[serde(default = "default_shots")]
    pub judge_shots: usize,
    /// Whether the judge prompt opens with the instructions (true by default; false for a
    /// judge tuned on the bare triplet layout).
    #[serde(default = "default_judge_instructions")]
    pub judge_instructions: bool,
    /// Post-training (optional).
    #[serde(default)]
    pub train: Option<PipelineTrain>,
}

impl PipelineConfig {
    /// Reads a config; relative paths are taken from the file's folder. Errors name the file
    /// (and the key or line).
    pub fn from_file(path: &Path) -> Result<Self, FileError> {
        let text = std::fs::read_to_string(path).map_err(|e| FileError::io(path, e))?;
        let mut config: Self = serde_yaml_ng::from_str(&text).map_err(|e| match e.location() {
            Some(at) => FileError::line(path, at.line(), e.to_string()),
            None => FileError::new(path, e.to_string()),
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        for p in [
            &mut config.data,
            &mut config.images,
            &mut config.synthesizer,
            &mut config.judge,
            &mut config.out,
        ] {
            *p = base.join(&*p);
        }
        if let Some(t) = &mut config.train {
            t.model = base.join(&t.model);
            if let Some(c) = &mut t.config {
                *c = base.join(&*c);
            }
        }
        config.mode().map_err(|m| FileError::key(path, "mode", m))?;
        config
            .judge_format()
            .map_err(|m| FileError::key(path, "judge_format", m))?;
        if config.batch_size == 0 {
            return Err(FileError::key(path, "batch_size", "must be at least 1"));
        }
        if let Some(t) = &config.train {
            t.recipe().map_err(|m| FileError::key(path, "train", m))?;
        }
        Ok(config)
    }

    /// The assembly mode.
    pub fn mode(&self) -> Result<AssemblyMode, String> {
        self.mode.parse()
    }

    /// The judge prompt format.
    pub fn judge_format(&self) -> Result<JudgePromptFormat, String> {
        JudgePromptFormat::parse(&self.judge_format).map_err(|e| format!("judge_format: {e}"))
    }

    /// Digest of the settings (finished stages are reused only under the same digest).
    pub fn digest(&self) -> String {
        use sha2::{Digest, Sha256};
        let text = serde_json::to_string(self).unwrap_or_default();
        crate::train::recipe::hex(&Sha256::digest(text.as_bytes()))
    }

    /// Where the assembled file(s) go.
    pub fn assembled_files(&self) -> Vec<PathBuf> {
        output_files(
            &self.out.join(ASSEMBLED_FILE),
            self.mode().unwrap_or(AssemblyMode::Single),
        )
    }
}

impl PipelineTrain {
    /// The recipe: the YAML file with the overrides applied.
    pub fn recipe(&self) -> Result<TrainRecipe, String> {
        let overrides: Vec<(String, String)> = self
            .overrides
            .iter()
            .map(|(k, v)| {
                let text = match v {
                    serde_yaml_ng::Value::String(s) => s.clone(),
                    other => serde_yaml_ng::to_string(other)
                        .unwrap_or_default()
                        .trim()
                        .to_string(),
                };
                (k.clone(), text)
            })
            .collect();
        TrainRecipe::load(self.config.as_deref(), &overrides)
    }
}

/// The pipeline's stages in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// `adamllm synthesize`.
    Synthesize,
    /// `adamllm filter`.
    Filter,
    /// `adamllm assemble`.
    Assemble,
    /// `adamllm train`.
    Train,
}

impl Stage {
    /// Every stage in order.
    pub const ALL: [Self; 4] = [Self::Synthesize, Self::Filter, Self::Assemble, Self::Train];

    /// Display name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Synthesize => "synthesize",
            Self::Filter => "filter",
            Self::Assemble => "assemble",
            Self::Train => "train",
        }
    }
}

/// `pipeline_state.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PipelineState {
    /// Digest of the config the outputs belong to.
    pub config_digest: String,
    /// Finished stages with their summaries.
    pub finished: BTreeMap<String, Value>,
}

/// Receives what the pipeline does.
pub trait PipelineObserver {
    /// A stage begins (`reused` when it was already finished and is skipped).
    fn stage(&mut self, _stage: Stage, _reused: bool) {}
    /// Generation progress of the synthesize and filter stages.
    fn progress(&mut self, _stage: Stage, _progress: GenerationProgress) {}
    /// A stage finished with its summary.
    fn finished(&mut self, _stage: Stage, _summary: &Value) {}
    /// The observer of the train stage.
    fn trainer(&mut self) -> &mut dyn TrainObserver;
}

/// What the pipeline did, stage by stage.
pub type PipelineSummary = BTreeMap<String, Value>;

fn to_value<T: Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

/// Reads a run folder's `pipeline_state.json` (a fresh state when there is none). A state
/// written for another config (`digest`) is refused, naming the file.
pub fn read_pipeline_state(path: &Path, digest: &str) -> Result<PipelineState, SynthError> {
    if !path.is_file() {
        return Ok(PipelineState {
            config_digest: digest.to_string(),
            finished: BTreeMap::new(),
        });
    }
    let state: PipelineState = read_json_file(path)?;
    if state.config_digest != digest {
        return Err(SynthError::Resume {
            path: path.to_path_buf(),
            message: "the run folder holds a pipeline run with another config; use another \
                      `out`, or delete the folder to start over"
                .into(),
        });
    }
    Ok(state)
}

/// Runs every unfinished stage of `config` on `device`.
pub fn run_pipeline(
    config: &PipelineConfig,
    device: &Device,
    observer: &mut dyn PipelineObserver,
) -> Result<PipelineSummary, SynthError> {
    let mode = config.mode().map_err(SynthError::Invalid)?;
    let format = config.judge_format().map_err(SynthError::Invalid)?;
    std::fs::create_dir_all(&config.out).map_err(|e| FileError::io(&config.out, e))?;
    let state_path = config.out.join(PIPELINE_STATE_FILE);
    let mut state = read_pipeline_state(&state_path, &config.digest())?;
    // Models are checked before any work starts.
    for (role, dir) in [
        ("synthesizer", &config.synthesizer),
        ("judge", &config.judge),
    ] {
        if !dir.join("config.json").is_file() {
            return Err(SynthError::Invalid(format!(
                "{role} {}: not a model folder (no config.json)",
                dir.display()
            )));
        }
    }
    let synthesis_dir = config.out.join("synthesis");
    let filtered = config.out.join(FILTERED_FILE);
    let pairs = read_caption_pairs(&config.data)?;
    let stages: Vec<Stage> = Stage::ALL
        .into_iter()
        .filter(|s| *s != Stage::Train || config.train.is_some())
        .collect();
    for stage in stages {
        if state.finished.contains_key(stage.name()) {
            observer.stage(stage, true);
            continue;
        }
        observer.stage(stage, false);
        let summary = match stage {
            Stage::Synthesize => {
                let model = load(&config.synthesizer, device, "synthesizer")?;
                let options = SynthesizeOptions {
                    batch_size: config.batch_size,
                    max_new_tokens: config.max_new_tokens,
                    limit: None,
                    min_pixels: None,
                    max_pixels: None,
                };
                to_value(&run_synthesis(
                    &model,
                    &pairs,
                    &config.data,
                    &config.images,
                    &synthesis_dir,
                    &options,
                    &mut |p| observer.progress(stage, p),
                )?)
            }
            Stage::Filter => {
                let judge = load(&config.judge, device, "judge")?;
                let options = FilterOptions {
                    batch_size: config.batch_size,
                    format,
                    shots: config.judge_shots.min(6),
                    instructions: config.judge_instructions,
                };
                to_value(&run_filter(
                    &judge,
                    &synthesis_dir.join(TRIPLETS_FILE),
                    &filtered,
                    &options,
                    &mut |p| observer.progress(stage, p),
                )?)
            }
            Stage::Assemble => to_value(&run_assemble(
                &pairs,
                &config.images,
                &filtered,
                mode,
                config.seed,
                &config.out.join(ASSEMBLED_FILE),
            )?),
            Stage::Train => {
                let Some(t) = &config.train else { continue };
                let recipe = t.recipe().map_err(SynthError::Invalid)?;
                let out = config.out.join("train");
                let request = TrainRequest {
                    model_dir: t.model.clone(),
                    data: config.assembled_files(),
                    layouts: Default::default(),
                    stages: mode == AssemblyMode::TwoStage,
                    val_data: None,
                    images_dir: Some(config.images.clone()),
                    resume: out.join(RUN_JSON).is_file(),
                    out,
                    recipe,
                    device: device.clone(),
                    replica_devices: Vec::new(),
                    skip_bad: true,
                };
                let summary = train(&request, observer.trainer())
                    .map_err(|e| SynthError::Invalid(format!("train stage: {e}")))?;
                json!({
                    "steps": summary.plan.total_steps,
                    "final_loss": summary.losses.last().map(|l| l.loss),
                    "model_dir": summary.model_dir,
                    "adapter_dir": summary.adapter_dir,
                    "wall_s": summary.wall_s,
                })
            }
        };
        observer.finished(stage, &summary);
        state.finished.insert(stage.name().to_string(), summary);
        write_json_atomic(&state_path, &state)?;
    }
    Ok(state.finished)
}

/// Loads a model folder, naming its role in the error.
fn load(dir: &Path, device: &Device, role: &str) -> Result<Model, SynthError> {
    Model::load(dir, device, DType::F32)
        .map_err(|e| SynthError::Invalid(format!("cannot load the {role} model: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_paths_are_relative_to_the_file_and_keys_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pipeline.yaml");
        std::fs::write(
            &path,
            "data: pairs.json\nimages: imgs\nsynthesizer: s\njudge: j\nout: run\nmode: two-stage\n\
             train:\n  model: base\n  overrides: {max_steps: 3, learning_rate: 0.001}\n",
        )
        .unwrap();
        let config = PipelineConfig::from_file(&path).unwrap();
        assert_eq!(config.data, dir.path().join("pairs.json"));
        assert_eq!(
            config.train.as_ref().unwrap().model,
            dir.path().join("base")
        );
        assert_eq!(config.mode().unwrap(), AssemblyMode::TwoStage);
        assert_eq!(config.assembled_files().len(), 2);
        let recipe = config.train.as_ref().unwrap().recipe().unwrap();
        assert_eq!(recipe.max_steps, Some(3));
        assert!(config.judge_instructions, "instructions are on by default");
        std::fs::write(
            &path,
            "data: a\nimages: b\nsynthesizer: s\njudge: j\nout: o\njudge_instructions: false\n",
        )
        .unwrap();
        assert!(!PipelineConfig::from_file(&path).unwrap().judge_instructions);
        std::fs::write(
            &path,
            "data: a\nimages: b\nsynthesizer: s\njudge: j\nout: o\nmode: three\n",
        )
        .unwrap();
        let error = PipelineConfig::from_file(&path).unwrap_err().to_string();
        assert!(
            error.contains("pipeline.yaml") && error.contains("mode"),
            "{error}"
        );
        std::fs::write(
            &path,
            "data: a\nimages: b\nsynthesizer: s\njudge: j\nout: o\nbatch: 3\n",
        )
        .unwrap();
        let error = PipelineConfig::from_file(&path).unwrap_err().to_string();
        assert!(error.contains("batch"), "{error}");
    }
}
