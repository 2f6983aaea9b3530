//! `adamllm demo`: the paper's pipeline and ablations on the built-in procedural domains, on
//! the tiny preset, end to end.
//!
//! Stages (each recorded in `demo_state.json` when finished, so a rerun resumes):
//!
//! 1. `data`: the general seed domain (train) and each target domain (train and test) are
//!    drawn and written under `data/`;
//! 2. `base`: a general base model — the tiny preset trained on the general domain's captions
//!    and question–answer pairs (`runs/base`);
//! 3. `synthesizer`: `synth seed` on the general domain (each image's first question asked
//!    under both hints), then the base model tuned on it with `mask_mode: synthesizer`
//!    (`runs/synthesizer`);
//! 4. `judge`: the base model tuned to answer the consistency prompt (0 worked examples) on
//!    general-domain triplets, consistent ones labelled Yes and ones with another question's
//!    short answer labelled No (`runs/judge`);
//!
//!    Stages 2–4 only use the general domain. By default ([`GeneralSource::Prebuilt`]) they
//!    write the committed models that `adamllm demo-models` ([`GeneralSource::Build`]: the same
//!    stages on more general images and epochs) made, as the paper starts from released
//!    checkpoints; [`GeneralSource::Train`] runs them at the run's own scale.
//! 5. per target domain: synthesize → filter → rules → assemble the ablation datasets, train
//!    one model per ablation from the base model (same recipe, same epochs; each row once per
//!    seed of `--seeds`), evaluate every model and the base model on the domain's test tasks;
//! 6. `report` ([`super::report`]): `report.json`, `report.md`, `report.html`, a bar chart per
//!    domain and the loss curves under `plots/`.
//!
//! Every image is used at its drawn size, 112×112, in training, synthesis and evaluation alike
//! (the paper's evaluation would upscale it to 224², four times the tokens).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use web_time::Instant;

use burn::tensor::{DType, Device};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::budget::check_seeds;
use super::domains::{
    DomainKind, Split, benchmark_tasks, generate_samples, write_domain, write_task_files,
};
pub use super::report::DemoReport;
use super::report::{ReportInput, ScoreTable, write_report};
use super::seeds::{combine_seed_scores, post_seeds, seed_suffix};
use crate::data::conversation::read_conversations;
use crate::eval::benchmark::{ReadOptions, read_benchmark};
use crate::eval::custom_task::EvalTask;
use crate::eval::runner::{EvalOptions, EvalSummary, run_eval};
use crate::io::{FileError, read_json_file, write_atomic, write_json_atomic};
use crate::models::Model;
use crate::models::checkpoint::SINGLE_FILE;
use crate::models::qwen2_vl::presets::{Preset, init_model_dir, write_preset_files};
use crate::synth::assemble::{AssemblyMode, output_files, run_assemble};
use crate::synth::judge::{FilterOptions, judge_prompt_text, judge_triplets, run_filter};
use crate::synth::pairs::read_caption_pairs;
use crate::synth::rules::{RULE_TASKS_FILE, run_rules};
use crate::synth::seed::{
    SEED_DEV_FILE, SEED_TRAIN_FILE, SeedInputs, SeedOptions, build_seed_set, qa_rounds,
};
use crate::synth::synthesize::{
    GenerationProgress, SynthesizeOptions, TRIPLETS_FILE, run_synthesis,
};
use crate::synth::triplets::Triplet;
use crate::train::recipe::TrainRecipe;
use crate::train::run_dir::RUN_JSON;
use crate::train::trainer::{TrainObserver, TrainRequest, train};

/// State file of a demo folder.
pub const DEMO_STATE_FILE: &str = "demo_state.json";
/// Image area used everywhere in the demo: the domains' own 112² (16 image tokens), in
/// training, synthesis and evaluation alike.
pub const DEMO_PIXELS: usize = 112 * 112;
/// Synthesis budget of the demo (the first triplet comes within the first rounds).
pub const DEMO_SYNTHESIS_TOKENS: usize = 256;
/// Folders the demo creates (and, with `--force` over an earlier demo, replaces).
pub const DEMO_FOLDERS: [&str; 4] = ["data", "runs", "evals", "plots"];
/// Files the demo writes at the top of its folder.
pub const DEMO_FILES: [&str; 4] = [DEMO_STATE_FILE, "report.json", "report.md", "report.html"];

/// What to run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DemoOptions {
    /// Target domains (biomed, food).
    pub domains: Vec<String>,
    /// Smaller data and fewer epochs (a smoke test in well under 2 minutes).
    pub quick: bool,
    /// Seed of the domains, the models and the draws.
    pub seed: u64,
    /// Where the general-domain models (base, synthesizer, judge) come from.
    #[serde(default)]
    pub general: GeneralSource,
    /// Seeds of each post-training row (`seed`, `seed + 1`, …): the report gives every cell
    /// as mean ± standard deviation over them, and a claim holds only beyond that spread.
    #[serde(default = "one_seed")]
    pub seeds: usize,
}

fn one_seed() -> usize {
    1
}

/// Where a demo's general-domain models (base, synthesizer, judge) come from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GeneralSource {
    /// The committed models that `adamllm demo-models` built (passed to [`run_demo`] as
    /// [`PrebuiltModels`]); the demo's time then goes to the target domains.
    #[default]
    Prebuilt,
    /// Trained in the run, at the run's scale.
    Train,
    /// `adamllm demo-models`: only the general stages, at the long build scale (no target
    /// domain); `all_seed_questions` tunes the synthesizer on every question an image has
    /// under both hints instead of the first one.
    Build {
        /// Every paired question in a seed conversation, not only the first.
        all_seed_questions: bool,
        /// General-domain images ([`BUILD_GENERAL_IMAGES`] for the committed models).
        #[serde(default = "build_general_images")]
        general_images: usize,
    },
}

/// General-domain images of the committed general models' build.
pub const BUILD_GENERAL_IMAGES: usize = 1000;

fn build_general_images() -> usize {
    BUILD_GENERAL_IMAGES
}

/// The safetensors files of the committed general-domain models (all three share the tiny
/// preset's config and tokenizer).
#[derive(Debug, Clone, Copy)]
pub struct PrebuiltModels<'a> {
    /// The general base model.
    pub base: &'a [u8],
    /// The visual-instruction synthesizer tuned from it on the general seed set.
    pub synthesizer: &'a [u8],
    /// The consistency judge tuned from it.
    pub judge: &'a [u8],
    /// Their `build.json` (how `adamllm demo-models` made them); each model's entry (steps,
    /// losses, the judge's held-out score) goes into its stage summary and the report.
    pub build: &'a str,
}

/// Sizes and epochs of one demo run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DemoScale {
    /// General-domain training images.
    pub general_images: usize,
    /// Target-domain training images (image-caption pairs).
    pub target_train_images: usize,
    /// Target-domain test images.
    pub target_test_images: usize,
    /// Epochs of the base model on the general domain.
    pub base_epochs: f64,
    /// Epochs of synthesizer tuning.
    pub synthesizer_epochs: f64,
    /// Epochs of judge tuning.
    pub judge_epochs: f64,
    /// Epochs of every post-training ablation.
    pub post_epochs: f64,
    /// Batch size of training and generation.
    pub batch_size: usize,
    /// Peak learning rate of the general trainings (base, judge).
    pub learning_rate: f64,
    /// Peak learning rate of every post-training ablation: the general base has never seen
    /// a target-domain word (its first loss on the captions is ~9 nats), and at 2e-3 it had
    /// not learned them in six epochs (measured: 4e-3 raised food ingredient F1 from 20.8 to
    /// 28.0 and biomed OPEN recall from 7.5 to 19.2 for caption-only training).
    pub post_learning_rate: f64,
    /// Seed conversations keep every question an image has under both hints (else the first).
    pub all_seed_questions: bool,
}

impl DemoScale {
    /// The scale of a run with these options.
    pub fn of(options: &DemoOptions) -> Self {
        match options.general {
            GeneralSource::Build {
                all_seed_questions,
                general_images,
            } => Self {
                general_images,
                target_train_images: 0,
                target_test_images: 0,
                base_epochs: 4.0,
                synthesizer_epochs: 8.0,
                judge_epochs: 3.0,
                post_epochs: 0.0,
                batch_size: 8,
                learning_rate: 2e-3,
                post_learning_rate: 0.0,
                all_seed_questions,
            },
            _ => Self::new(options.quick),
        }
    }

    /// The scale of a full or `--quick` run.
    pub fn new(quick: bool) -> Self {
        if quick {
            Self {
                general_images: 48,
                target_train_images: 32,
                target_test_images: 12,
                base_epochs: 1.0,
                synthesizer_epochs: 2.0,
                judge_epochs: 1.0,
                post_epochs: 1.0,
                batch_size: 8,
                learning_rate: 3e-3,
                post_learning_rate: 3e-3,
                all_seed_questions: false,
            }
        } else {
            Self {
                general_images: 160,
                target_train_images: 200,
                // One answer moves a score by half a point (at 40 rows it moved it 2.5).
                target_test_images: 200,
                base_epochs: 3.0,
                synthesizer_epochs: 10.0,
                judge_epochs: 6.0,
                post_epochs: 6.0,
                batch_size: 8,
                learning_rate: 2e-3,
                post_learning_rate: 4e-3,
                all_seed_questions: false,
            }
        }
    }
}

/// One row of the ablation table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Ablation {
    /// The general base model, no post-training.
    GeneralBase,
    /// Caption tasks only.
    CaptionOnly,
    /// Rule-based tasks, single stage.
    RulesSingle,
    /// Synthesizer tasks without the filter, single stage.
    SynthesizerUnfiltered,
    /// Filtered synthesizer tasks, captions then tasks (two stages).
    TwoStage,
    /// The paper's method: filtered synthesizer tasks, single stage.
    PaperMethod,
}

impl Ablation {
    /// Table order.
    pub const ALL: [Self; 6] = [
        Self::GeneralBase,
        Self::CaptionOnly,
        Self::RulesSingle,
        Self::SynthesizerUnfiltered,
        Self::TwoStage,
        Self::PaperMethod,
    ];

    /// Folder name.
    pub fn key(self) -> &'static str {
        match self {
            Self::GeneralBase => "general_base",
            Self::CaptionOnly => "caption_only",
            Self::RulesSingle => "rules_single",
            Self::SynthesizerUnfiltered => "synthesizer_unfiltered",
            Self::TwoStage => "two_stage",
            Self::PaperMethod => "paper_method",
        }
    }

    /// Row label.
    pub fn label(self) -> &'static str {
        match self {
            Self::GeneralBase => "general base (no post-training)",
            Self::CaptionOnly => "caption only",
            Self::RulesSingle => "rule-based tasks, single stage",
            Self::SynthesizerUnfiltered => "synthesizer, no filter, single stage",
            Self::TwoStage => "synthesizer + filter, two stages",
            Self::PaperMethod => "synthesizer + filter, single stage (paper)",
        }
    }
}

/// `demo_state.json`: options and the summaries of finished stages.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DemoState {
    /// The options the folder belongs to.
    pub options: Option<DemoOptions>,
    /// Finished stages by name, with their summaries.
    pub finished: BTreeMap<String, Value>,
    /// Seconds spent per stage (summed over resumed runs).
    pub seconds: BTreeMap<String, f64>,
}

/// Receives what the demo does.
pub trait DemoObserver {
    /// A stage starts (`reused`: finished by an earlier run).
    fn stage(&mut self, _name: &str, _reused: bool) {}
    /// Progress of the current stage (rows, steps).
    fn progress(&mut self, _done: usize, _total: usize) {}
    /// The observer of training stages.
    fn trainer(&mut self) -> &mut dyn TrainObserver;
}

/// Why the demo stopped.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// The output folder cannot be used (names it and says why).
    #[error("{path}: {message}")]
    Folder {
        /// The folder.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// A stage failed.
    #[error("demo stage {stage}: {message}")]
    Stage {
        /// The stage.
        stage: String,
        /// The error.
        message: String,
    },
}

fn stage_error(stage: &str) -> impl Fn(String) -> DemoError + '_ {
    move |message| DemoError::Stage {
        stage: stage.to_string(),
        message,
    }
}

/// Checks the output folder: a new or empty folder, the folder of the same demo (resumed), or
/// with `force` an earlier demo's folder (its demo outputs are replaced; nothing else is
/// touched) or a folder without demo outputs. Returns the state to continue from.
pub fn prepare_folder(
    out: &Path,
    options: &DemoOptions,
    force: bool,
) -> Result<DemoState, DemoError> {
    let folder_error = |message: String| DemoError::Folder {
        path: out.to_path_buf(),
        message,
    };
    let state_path = out.join(DEMO_STATE_FILE);
    let fresh = DemoState {
        options: Some(options.clone()),
        ..DemoState::default()
    };
    if !out.exists() {
        std::fs::create_dir_all(out).map_err(|e| folder_error(format!("cannot create: {e}")))?;
        return Ok(fresh);
    }
    if !out.is_dir() {
        return Err(folder_error("exists and is not a folder".into()));
    }
    if state_path.is_file() {
        let state: DemoState =
            read_json_file(&state_path).map_err(|e| folder_error(e.to_string()))?;
        if state.options.as_ref() == Some(options) {
            return Ok(state);
        }
        if !force {
            return Err(folder_error(format!(
                "holds a demo run with other options ({}); use another --out, or --force to \
                 replace that run's outputs",
                serde_json::to_string(&state.options).unwrap_or_default()
            )));
        }
        for name in DEMO_FOLDERS {
            let path = out.join(name);
            if path.exists() {
                std::fs::remove_dir_all(&path)
                    .map_err(|e| folder_error(format!("cannot remove {name}/: {e}")))?;
            }
        }
        for name in DEMO_FILES {
            let _ = std::fs::remove_file(out.join(name));
        }
        return Ok(fresh);
    }
    let entries: Vec<String> = std::fs::read_dir(out)
        .map_err(|e| folder_error(format!("cannot read: {e}")))?
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    if entries.is_empty() {
        return Ok(fresh);
    }
    if !force {
        return Err(folder_error(format!(
            "is not empty and holds no demo run ({} entries, e.g. {:?}); use another --out, or \
             --force to add the demo's folders next to them",
            entries.len(),
            entries.first().cloned().unwrap_or_default()
        )));
    }
    let clashes: Vec<&str> = DEMO_FOLDERS
        .iter()
        .chain(DEMO_FILES.iter())
        .copied()
        .filter(|name| entries.iter().any(|e| e == name))
        .collect();
    if !clashes.is_empty() {
        return Err(folder_error(format!(
            "holds {clashes:?}, which the demo would overwrite, and they are not from a demo \
             run; use another --out"
        )));
    }
    Ok(fresh)
}

/// A demo in progress: folder, state and settings.
struct Demo<'a> {
    out: PathBuf,
    state: DemoState,
    scale: DemoScale,
    seed: u64,
    device: Device,
    observer: &'a mut dyn DemoObserver,
}

impl Demo<'_> {
    fn save(&self) -> Result<(), DemoError> {
        write_json_atomic(&self.out.join(DEMO_STATE_FILE), &self.state)
            .map_err(|e| stage_error("state")(e.to_string()))
    }

    /// Runs `work` unless the stage finished earlier; records its summary and time.
    fn stage(
        &mut self,
        name: &str,
        work: impl FnOnce(&mut Self) -> Result<Value, String>,
    ) -> Result<Value, DemoError> {
        if let Some(done) = self.state.finished.get(name) {
            self.observer.stage(name, true);
            return Ok(done.clone());
        }
        self.observer.stage(name, false);
        let started = Instant::now();
        let summary = work(self).map_err(stage_error(name))?;
        *self.state.seconds.entry(name.to_string()).or_insert(0.0) +=
            started.elapsed().as_secs_f64();
        self.state
            .finished
            .insert(name.to_string(), summary.clone());
        self.save()?;
        Ok(summary)
    }

    fn recipe(&self, epochs: f64, extra: &[(&str, String)]) -> Result<TrainRecipe, String> {
        self.seeded_recipe(epochs, self.seed, extra)
    }

    /// The demo's training recipe with `seed` (the order of the batches).
    fn seeded_recipe(
        &self,
        epochs: f64,
        seed: u64,
        extra: &[(&str, String)],
    ) -> Result<TrainRecipe, String> {
        let mut keys: Vec<(String, String)> = [
            ("finetuning_type", "full".to_string()),
            ("learning_rate", self.scale.learning_rate.to_string()),
            ("num_train_epochs", epochs.to_string()),
            (
                "per_device_train_batch_size",
                self.scale.batch_size.to_string(),
            ),
            ("lr_scheduler_type", "cosine".to_string()),
            ("warmup_ratio", "0.05".to_string()),
            ("image_min_pixels", DEMO_PIXELS.to_string()),
            ("image_max_pixels", DEMO_PIXELS.to_string()),
            ("freeze_vision_tower", "false".to_string()),
            ("cutoff_len", "1024".to_string()),
            ("save_steps", "0".to_string()),
            ("logging_steps", "5".to_string()),
            ("seed", seed.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        keys.extend(extra.iter().map(|(k, v)| (k.to_string(), v.clone())));
        TrainRecipe::load(None, &keys)
    }

    /// Trains `runs/<name>` from `model` on `data` (resuming an interrupted run); returns the
    /// exported model folder and a summary.
    fn train(
        &mut self,
        name: &str,
        model: &Path,
        data: Vec<PathBuf>,
        images_dir: Option<PathBuf>,
        stages: bool,
        recipe: TrainRecipe,
    ) -> Result<Value, String> {
        let out = self.out.join("runs").join(name);
        let request = TrainRequest {
            model_dir: model.to_path_buf(),
            data,
            layouts: Default::default(),
            stages,
            val_data: None,
            images_dir,
            resume: out.join(RUN_JSON).is_file(),
            out: out.clone(),
            recipe,
            device: self.device.clone(),
            replica_devices: Vec::new(),
            skip_bad: true,
        };
        let summary = train(&request, self.observer.trainer()).map_err(|e| e.to_string())?;
        let plots = self.out.join("plots");
        std::fs::create_dir_all(&plots).map_err(|e| e.to_string())?;
        let plot_name = format!("{}.png", name.replace('/', "-"));
        let _ = std::fs::copy(out.join("loss_curve.png"), plots.join(&plot_name));
        Ok(json!({
            "model": summary.model_dir,
            "steps": summary.plan.total_steps,
            "samples": summary.plan.stage_samples,
            "first_loss": summary.losses.first().map(|l| l.loss),
            "final_loss": summary.losses.last().map(|l| l.loss),
            "plot": format!("plots/{plot_name}"),
        }))
    }

    /// Writes a committed general model to `runs/<name>/model`: the tiny preset's files with
    /// `weights` as its `model.safetensors`.
    fn prebuilt(&mut self, name: &str, weights: &[u8], build: &str) -> Result<Value, String> {
        use sha2::{Digest, Sha256};
        let dir = self.out.join("runs").join(name).join("model");
        write_preset_files(&dir, Preset::Tiny).map_err(|e| e.to_string())?;
        write_atomic(&dir.join(SINGLE_FILE), weights).map_err(|e| e.to_string())?;
        // A damaged or foreign file fails here, named, rather than in a later stage.
        self.load(&dir)
            .map_err(|e| format!("the prebuilt {name} model does not load: {e}"))?;
        let build: Value = serde_json::from_str(build)
            .map_err(|e| format!("the prebuilt models' build.json is not JSON: {e}"))?;
        let mut made = build["models"][name].clone();
        if let Some(fields) = made.as_object_mut() {
            // Paths on the machine that built them.
            fields.remove("model");
            fields.remove("plot");
        }
        Ok(json!({
            "model": dir,
            "prebuilt": true,
            "sha256": format!("{:x}", Sha256::digest(weights)),
            "build": made,
        }))
    }

    fn load(&self, dir: &Path) -> Result<Model, String> {
        Model::load(dir, &self.device, DType::F32).map_err(|e| e.to_string())
    }
}

fn model_of(summary: &Value) -> PathBuf {
    PathBuf::from(summary["model"].as_str().unwrap_or_default())
}

/// Learning rate of synthesizer tuning: the tiny model needs a high one to pick up the
/// hinted multi-turn format within the demo's few epochs.
pub const SYNTHESIZER_LEARNING_RATE: f64 = 1e-2;

/// Learning rate of judge tuning. Measured on the bare-layout prompts at the build scale: at
/// 1e-3 the loss leaves chance after ~1,000 steps (91 % held-out accuracy after 3 epochs); at
/// 3e-3 it only left once the cosine schedule had brought the rate near 5e-4.
pub const JUDGE_LEARNING_RATE: f64 = 1e-3;

/// The general domain's images with their precise and informative rounds (question, answer),
/// read from `precise.json` and `informative.json` (one row per image, same order).
type GeneralRounds = Vec<(Vec<PathBuf>, Vec<(String, String)>, Vec<(String, String)>)>;

fn general_rounds(general: &Path) -> Result<GeneralRounds, String> {
    let read = |name: &str| read_conversations(&general.join(name)).map_err(|e| e.to_string());
    let (precise, informative) = (read("precise.json")?, read("informative.json")?);
    Ok(precise
        .iter()
        .zip(&informative)
        .map(|(p, i)| {
            (
                p.conversation.images.clone(),
                qa_rounds(&p.conversation),
                qa_rounds(&i.conversation),
            )
        })
        .collect())
}

/// The first question of `informative` also asked in `precise`, with both answers.
fn first_paired(
    precise: &[(String, String)],
    informative: &[(String, String)],
) -> Option<(String, String, String)> {
    informative.iter().find_map(|(q, long)| {
        let short = &precise.iter().find(|(pq, _)| pq == q)?.1;
        Some((q.clone(), long.clone(), short.clone()))
    })
}

/// The general domain's question-answer files cut to the first question each image has under
/// both hints (written under `dir`). Each seed conversation is then the caption round plus
/// two hinted rounds: a 2-layer model learns that format in the demo's time budget, where
/// the full 9-round conversations stay unlearned (measured: no triplet from any of 120
/// images after 80 steps).
fn paired_questions(general: &Path, dir: &Path) -> Result<(PathBuf, PathBuf), String> {
    let (mut p_out, mut i_out) = (Vec::new(), Vec::new());
    for (images, precise, informative) in general_rounds(general)? {
        let Some((question, long, short)) = first_paired(&precise, &informative) else {
            continue;
        };
        let row = |answer: &str| {
            json!({"images": images, "messages": [
                {"role": "user", "content": format!("<image>{question}")},
                {"role": "assistant", "content": answer}]})
        };
        p_out.push(row(&short));
        i_out.push(row(&long));
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let (p_path, i_path) = (
        dir.join("paired_precise.json"),
        dir.join("paired_informative.json"),
    );
    write_json_atomic(&p_path, &p_out).map_err(|e| e.to_string())?;
    write_json_atomic(&i_path, &i_out).map_err(|e| e.to_string())?;
    Ok((p_path, i_path))
}

/// One labelled consistency example for the judge.
struct JudgeExample {
    /// Index of the general image the question is about.
    image: usize,
    triplet: Triplet,
    /// `Yes` or `No`.
    label: &'static str,
}

/// Every tenth general image's examples are held out of judge tuning and scored after it.
const JUDGE_HELD_OUT_EVERY: usize = 10;

/// The first two words of a question, lower-cased: its kind ("how many", "what color",
/// "is there"), which fixes the kind of its short answer.
fn question_kind(question: &str) -> String {
    question
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// Judge-tuning examples from the general domain: every question asked under both hints
/// gives a consistent triplet (Yes) and one inconsistent one (No), alternating between two
/// kinds of wrong short answer: one of the same kind as the right one (another count, colour
/// or place; yes for no), the error a synthesizer makes when its reasoning and its short
/// answer drift apart, and the short answer of another kind of question. Neither is
/// mentioned in the reasoning.
fn judge_examples(general: &Path) -> Result<Vec<JudgeExample>, String> {
    let rounds = general_rounds(general)?;
    let all_short: Vec<(String, &String)> = rounds
        .iter()
        .flat_map(|(_, precise, _)| precise.iter().map(|(q, a)| (question_kind(q), a)))
        .collect();
    let mut examples = Vec::new();
    let mut pairs = 0usize;
    for (index, (_, precise, informative)) in rounds.iter().enumerate() {
        for (question, long) in informative {
            let Some((_, short)) = precise.iter().find(|(q, _)| q == question) else {
                continue;
            };
            let yes = Triplet {
                instruction: question.clone(),
                informative_answer: long.clone(),
                precise_answer: short.clone(),
            };
            let kind = question_kind(question);
            let same_kind = pairs.is_multiple_of(2);
            pairs += 1;
            let unmentioned = |a: &str| {
                a.to_lowercase() != short.to_lowercase()
                    && !long.to_lowercase().contains(&a.to_lowercase())
            };
            let flipped = match short.to_lowercase().as_str() {
                "yes" => Some("no".to_string()),
                "no" => Some("yes".to_string()),
                _ => None,
            };
            let wrong = match flipped {
                Some(flipped) if same_kind => Some(flipped),
                _ => (1..all_short.len())
                    .map(|step| &all_short[(index * 7 + step) % all_short.len()])
                    .find(|(k, a)| (*k == kind) == same_kind && unmentioned(a))
                    .map(|(_, a)| (*a).clone()),
            };
            if let Some(wrong) = wrong {
                examples.push(JudgeExample {
                    image: index,
                    triplet: Triplet {
                        precise_answer: wrong,
                        ..yes.clone()
                    },
                    label: "No",
                });
            }
            examples.push(JudgeExample {
                image: index,
                triplet: yes,
                label: "Yes",
            });
        }
    }
    Ok(examples)
}

/// The judge's prompt options in the demo: no worked examples and no instructions, the
/// layout it was tuned on (a 2-layer model does not find the verdict's evidence behind
/// ~150 tokens of instructions; measured in ARCHITECTURE.md).
fn demo_filter_options(batch_size: usize) -> FilterOptions {
    FilterOptions {
        batch_size,
        shots: 0,
        instructions: false,
        ..FilterOptions::default()
    }
}

/// A judge-tuning conversation.
fn judge_conversation(example: &JudgeExample) -> Value {
    let options = demo_filter_options(1);
    json!({"messages": [
        {"role": "user", "content": judge_prompt_text(&example.triplet, options.shots, options.instructions)},
        {"role": "assistant", "content": example.label}]})
}

/// Scores the tuned judge on held-out examples: accuracy and the share of each label it
/// gets right (percent).
fn judge_held_out_score(
    judge: &Model,
    held_out: &[&JudgeExample],
    batch_size: usize,
) -> Result<Value, String> {
    let triplets: Vec<Triplet> = held_out.iter().map(|e| e.triplet.clone()).collect();
    let judgements = judge_triplets(judge, &triplets, &demo_filter_options(batch_size))
        .map_err(|e| e.to_string())?;
    let percent = |label: Option<&str>| {
        let (mut right, mut total) = (0usize, 0usize);
        for (example, judgement) in held_out.iter().zip(&judgements) {
            if label.is_none_or(|l| l == example.label) {
                total += 1;
                right += usize::from(judgement.label.as_str() == example.label.to_lowercase());
            }
        }
        if total == 0 {
            Value::Null
        } else {
            json!(100.0 * right as f64 / total as f64)
        }
    };
    let mut labels: BTreeMap<&str, usize> = BTreeMap::new();
    for judgement in &judgements {
        *labels.entry(judgement.label.as_str()).or_insert(0) += 1;
    }
    Ok(json!({
        "examples": held_out.len(),
        "accuracy": percent(None),
        "yes_recall": percent(Some("Yes")),
        "no_recall": percent(Some("No")),
        "labels": labels,
    }))
}

/// Runs (or resumes) the demo in `out`. `prebuilt` holds the committed general-domain models
/// that [`GeneralSource::Prebuilt`] uses.
pub fn run_demo(
    options: &DemoOptions,
    out: &Path,
    force: bool,
    device: &Device,
    prebuilt: Option<PrebuiltModels<'_>>,
    observer: &mut dyn DemoObserver,
) -> Result<DemoReport, DemoError> {
    let prebuilt = match (options.general, prebuilt) {
        (GeneralSource::Prebuilt, None) => {
            return Err(DemoError::Stage {
                stage: "options".into(),
                message: "this build carries no prebuilt general models; train them in the \
                          run instead (--train-general)"
                    .into(),
            });
        }
        (GeneralSource::Prebuilt, Some(models)) => Some(models),
        _ => None,
    };
    check_seeds(options)?;
    if matches!(options.general, GeneralSource::Build { .. }) && !options.domains.is_empty() {
        return Err(DemoError::Stage {
            stage: "options".into(),
            message: "building the general models takes no target domain".into(),
        });
    }
    let domains: Vec<DomainKind> = options
        .domains
        .iter()
        .map(|name| {
            DomainKind::from_name(name)
                .filter(|kind| *kind != DomainKind::General)
                .ok_or_else(|| DemoError::Stage {
                    stage: "options".into(),
                    message: format!("unknown target domain {name:?}; expected biomed or food"),
                })
        })
        .collect::<Result<_, _>>()?;
    let state = prepare_folder(out, options, force)?;
    let mut demo = Demo {
        out: out.to_path_buf(),
        state,
        scale: DemoScale::of(options),
        seed: options.seed,
        device: device.clone(),
        observer,
    };
    demo.save()?;
    let started = Instant::now();
    let data = demo.out.join("data");

    // 1. Data.
    let scale = demo.scale.clone();
    let seed = demo.seed;
    let domain_list = domains.clone();
    demo.stage("data", |d| {
        let mut counts = serde_json::Map::new();
        let mut splits = vec![(DomainKind::General, Split::Train, scale.general_images)];
        for kind in &domain_list {
            splits.push((*kind, Split::Train, scale.target_train_images));
            splits.push((*kind, Split::Test, scale.target_test_images));
        }
        for (index, (kind, split, count)) in splits.into_iter().enumerate() {
            d.observer.progress(index, 1 + 2 * domain_list.len());
            let samples = generate_samples(kind, split, count, seed);
            let folder = data.join(format!("{}-{}", kind.name(), split.name()));
            write_domain(&samples, &folder, kind, split)
                .map_err(|e| format!("{}: {e}", folder.display()))?;
            if split == Split::Test {
                write_task_files(kind, &folder)
                    .map_err(|e| format!("{}: {e}", folder.display()))?;
            }
            counts.insert(format!("{}-{}", kind.name(), split.name()), json!(count));
        }
        Ok(Value::Object(counts))
    })?;
    let general = data.join("general-train");

    // 2. General base model.
    let base = demo.stage("base", |d| {
        if let Some(models) = prebuilt {
            return d.prebuilt("base", models.base, models.build);
        }
        let init = d.out.join("runs").join("init");
        if !init.join("config.json").is_file() {
            init_model_dir(&init, Preset::Tiny, d.seed, true).map_err(|e| e.to_string())?;
        }
        let recipe = d.recipe(d.scale.base_epochs, &[])?;
        let files = [
            "image_caption_pairs.json",
            "precise.json",
            "informative.json",
        ]
        .map(|f| general.join(f))
        .to_vec();
        d.train("base", &init, files, None, false, recipe)
    })?;
    let base_model = model_of(&base);

    // 3. Synthesizer.
    let synthesizer = demo.stage("synthesizer", |d| {
        if let Some(models) = prebuilt {
            return d.prebuilt("synthesizer", models.synthesizer, models.build);
        }
        let seed_dir = d.out.join("runs").join("synthesizer-data");
        let (precise, informative) = if d.scale.all_seed_questions {
            (
                general.join("precise.json"),
                general.join("informative.json"),
            )
        } else {
            paired_questions(&general, &seed_dir)?
        };
        let inputs = SeedInputs {
            captions: general.join("image_caption_pairs.json"),
            precise,
            informative,
            images: general.clone(),
        };
        let seed_options = SeedOptions {
            seed: d.seed,
            ..SeedOptions::default()
        };
        let seed_summary =
            build_seed_set(&inputs, &seed_dir, &seed_options).map_err(|e| e.to_string())?;
        let recipe = d.recipe(
            d.scale.synthesizer_epochs,
            &[
                ("mask_mode", "synthesizer".into()),
                ("learning_rate", SYNTHESIZER_LEARNING_RATE.to_string()),
            ],
        )?;
        let mut summary = d.train(
            "synthesizer",
            &base_model,
            vec![seed_dir.join(SEED_TRAIN_FILE), seed_dir.join(SEED_DEV_FILE)],
            None,
            false,
            recipe,
        )?;
        summary["seed_set"] = json!(seed_summary);
        Ok(summary)
    })?;
    let synthesizer_model = model_of(&synthesizer);

    // 4. Judge.
    let judge = demo.stage("judge", |d| {
        if let Some(models) = prebuilt {
            return d.prebuilt("judge", models.judge, models.build);
        }
        let examples = judge_examples(&general)?;
        let (held_out, tuning): (Vec<&JudgeExample>, Vec<&JudgeExample>) = examples
            .iter()
            .partition(|e| e.image % JUDGE_HELD_OUT_EVERY == JUDGE_HELD_OUT_EVERY - 1);
        let conversations: Vec<Value> = tuning.iter().map(|e| judge_conversation(e)).collect();
        let file = d.out.join("runs").join("judge-data.json");
        write_json_atomic(&file, &conversations).map_err(|e| e.to_string())?;
        let recipe = d.recipe(
            d.scale.judge_epochs,
            &[("learning_rate", JUDGE_LEARNING_RATE.to_string())],
        )?;
        let mut summary = d.train("judge", &base_model, vec![file], None, false, recipe)?;
        summary["conversations"] = json!(conversations.len());
        let judge = d.load(&model_of(&summary))?;
        summary["held_out"] = judge_held_out_score(&judge, &held_out, d.scale.batch_size)?;
        Ok(summary)
    })?;
    let judge_model = model_of(&judge);

    // 5. Per target domain.
    let mut table = ScoreTable::new();
    let seeds = post_seeds(seed, options.seeds);
    for kind in &domains {
        let name = kind.name();
        let train_dir = data.join(format!("{name}-train"));
        let test_dir = data.join(format!("{name}-test"));
        let pairs_file = train_dir.join("image_caption_pairs.json");
        let work = demo.out.join("runs").join(name);
        let synth_dir = work.join("synthesis");
        let filtered = work.join("filtered_task_pairs.jsonl");
        demo.stage(&format!("{name}/synthesize"), |d| {
            let model = d.load(&synthesizer_model)?;
            let pairs = read_caption_pairs(&pairs_file).map_err(|e| e.to_string())?;
            let options = SynthesizeOptions {
                batch_size: d.scale.batch_size,
                max_new_tokens: DEMO_SYNTHESIS_TOKENS,
                min_pixels: Some(DEMO_PIXELS),
                max_pixels: Some(DEMO_PIXELS),
                ..SynthesizeOptions::default()
            };
            let observer = &mut *d.observer;
            let summary = run_synthesis(
                &model,
                &pairs,
                &pairs_file,
                &train_dir,
                &synth_dir,
                &options,
                &mut |p: GenerationProgress| observer.progress(p.done, p.total),
            )
            .map_err(|e| e.to_string())?;
            Ok(json!(summary))
        })?;
        demo.stage(&format!("{name}/filter"), |d| {
            let model = d.load(&judge_model)?;
            let options = demo_filter_options(d.scale.batch_size);
            let observer = &mut *d.observer;
            let summary = run_filter(
                &model,
                &synth_dir.join(TRIPLETS_FILE),
                &filtered,
                &options,
                &mut |p: GenerationProgress| observer.progress(p.done, p.total),
            )
            .map_err(|e| e.to_string())?;
            Ok(json!(summary))
        })?;
        demo.stage(&format!("{name}/rules"), |d| {
            let pairs = read_caption_pairs(&pairs_file).map_err(|e| e.to_string())?;
            let summary =
                run_rules(&pairs, &work.join("rules"), d.seed).map_err(|e| e.to_string())?;
            Ok(json!(summary))
        })?;
        let datasets: Vec<(Ablation, PathBuf, AssemblyMode)> = vec![
            (
                Ablation::CaptionOnly,
                filtered.clone(),
                AssemblyMode::CaptionOnly,
            ),
            (
                Ablation::RulesSingle,
                work.join("rules").join(RULE_TASKS_FILE),
                AssemblyMode::Single,
            ),
            (
                Ablation::SynthesizerUnfiltered,
                synth_dir.join(TRIPLETS_FILE),
                AssemblyMode::Single,
            ),
            (Ablation::TwoStage, filtered.clone(), AssemblyMode::TwoStage),
            (
                Ablation::PaperMethod,
                filtered.clone(),
                AssemblyMode::Single,
            ),
        ];
        let assembled = demo.stage(&format!("{name}/assemble"), |d| {
            let pairs = read_caption_pairs(&pairs_file).map_err(|e| e.to_string())?;
            let mut summaries = serde_json::Map::new();
            for (ablation, tasks, mode) in &datasets {
                let out = work
                    .join("assembled")
                    .join(format!("{}.json", ablation.key()));
                // A dataset with nothing in it (two stages without a kept task) is reported,
                // and its row left empty, rather than failing the demo.
                let summary = match run_assemble(&pairs, &train_dir, tasks, *mode, d.seed, &out) {
                    Ok(summary) => json!(summary),
                    Err(error) => json!({"skipped": error.to_string()}),
                };
                summaries.insert(ablation.key().into(), summary);
            }
            Ok(Value::Object(summaries))
        })?;
        let rows = DomainRows {
            kind: *kind,
            train_dir,
            test_dir,
            work,
            base_model: base_model.clone(),
        };
        for ablation in Ablation::ALL {
            if assembled[ablation.key()].get("skipped").is_some() {
                continue;
            }
            let mode = datasets
                .iter()
                .find(|(a, _, _)| *a == ablation)
                .map(|(_, _, mode)| *mode);
            let mut evaluations = Vec::new();
            match mode {
                // The general base: one model, evaluated once.
                None => evaluations.push((seed, demo.evaluate(&rows, ablation, "", &base_model)?)),
                Some(mode) => {
                    for (index, row_seed) in seeds.iter().enumerate() {
                        let suffix = seed_suffix(index, *row_seed);
                        let model = demo.post_train(&rows, ablation, mode, &suffix, *row_seed)?;
                        let scores = demo.evaluate(&rows, ablation, &suffix, &model)?;
                        evaluations.push((*row_seed, scores));
                    }
                }
            }
            table.entry(name.to_string()).or_default().insert(
                ablation.key().to_string(),
                combine_seed_scores(&evaluations, mode.is_some()),
            );
        }
    }

    // 6. Report.
    let input = ReportInput {
        out: &demo.out,
        state: &demo.state,
        scale: &demo.scale,
        seed: demo.seed,
        seeds: options.seeds,
    };
    write_report(&input, &domains, &table, started.elapsed().as_secs_f64())
}

/// What the post-training and evaluation of one domain's rows read.
struct DomainRows {
    kind: DomainKind,
    train_dir: PathBuf,
    test_dir: PathBuf,
    /// `runs/<domain>`: the assembled datasets.
    work: PathBuf,
    base_model: PathBuf,
}

impl Demo<'_> {
    /// Trains row `ablation` of a domain with `seed` from the general base (stage
    /// `<domain>/train/<row><suffix>`, folder `runs/<domain>-<row><suffix>`); returns the
    /// exported model folder.
    fn post_train(
        &mut self,
        rows: &DomainRows,
        ablation: Ablation,
        mode: AssemblyMode,
        suffix: &str,
        seed: u64,
    ) -> Result<PathBuf, DemoError> {
        let name = rows.kind.name();
        let files = output_files(
            &rows
                .work
                .join("assembled")
                .join(format!("{}.json", ablation.key())),
            mode,
        );
        let run_name = format!("{name}-{}{}", ablation.key(), suffix.replace('/', "-"));
        let trained = self.stage(&format!("{name}/train/{}{suffix}", ablation.key()), |d| {
            let recipe = d.seeded_recipe(
                d.scale.post_epochs,
                seed,
                &[("learning_rate", d.scale.post_learning_rate.to_string())],
            )?;
            d.train(
                &run_name,
                &rows.base_model,
                files,
                Some(rows.train_dir.clone()),
                mode == AssemblyMode::TwoStage,
                recipe,
            )
        })?;
        Ok(model_of(&trained))
    }

    /// Evaluates `model` on every test task of the domain (stage
    /// `<domain>/eval/<row><suffix>`, predictions under `evals/<domain>/<row><suffix>/`);
    /// returns `{task: {score, metric, all}}`.
    fn evaluate(
        &mut self,
        rows: &DomainRows,
        ablation: Ablation,
        suffix: &str,
        model: &Path,
    ) -> Result<Value, DemoError> {
        let name = rows.kind.name();
        let folder = format!("{}{}", ablation.key(), suffix.replace('/', "-"));
        self.stage(&format!("{name}/eval/{}{suffix}", ablation.key()), |d| {
            let loaded = d.load(model)?;
            let mut scores = serde_json::Map::new();
            for task in benchmark_tasks(rows.kind) {
                let out = d
                    .out
                    .join("evals")
                    .join(name)
                    .join(&folder)
                    .join(&task.name);
                let summary = d.evaluate_task(&loaded, &rows.test_dir, &task.name, &out)?;
                let main = summary.scores.first().map(|(_, v)| *v);
                scores.insert(
                    task.name.clone(),
                    json!({"score": main, "metric": summary.metric, "all": summary.results}),
                );
            }
            Ok(Value::Object(scores))
        })
    }

    /// Runs one test task (`<task>.yaml` and `<task>.jsonl` in `test_dir`) on `model`.
    fn evaluate_task(
        &mut self,
        model: &Model,
        test_dir: &Path,
        task: &str,
        out: &Path,
    ) -> Result<EvalSummary, String> {
        let yaml = test_dir.join(format!("{task}.yaml"));
        let eval_task =
            EvalTask::from_arg(&yaml.display().to_string()).map_err(|e| e.to_string())?;
        let read = ReadOptions {
            images_dir: None,
            required_fields: eval_task.required_fields(),
            limit: None,
        };
        let rows = read_benchmark(&test_dir.join(format!("{task}.jsonl")), &read)
            .map_err(|e| e.to_string())?;
        let options = EvalOptions {
            batch_size: self.scale.batch_size,
            limit: None,
            max_new_tokens: None,
            pixels: Some((DEMO_PIXELS, DEMO_PIXELS)),
        };
        let observer = &mut *self.observer;
        run_eval(
            model,
            &eval_task,
            &rows,
            out,
            &options,
            &mut |done, total| observer.progress(done, total),
        )
        .map_err(|e| e.to_string())
    }
}

/// Reads a finished demo's state (for tests and tools).
pub fn read_state(out: &Path) -> Result<DemoState, FileError> {
    read_json_file(&out.join(DEMO_STATE_FILE))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::trainer::Quiet;

    struct Silent(Quiet);
    impl DemoObserver for Silent {
        fn trainer(&mut self) -> &mut dyn TrainObserver {
            &mut self.0
        }
    }

    fn options(general: GeneralSource) -> DemoOptions {
        DemoOptions {
            domains: vec!["food".into()],
            quick: true,
            seed: 0,
            general,
            seeds: 1,
        }
    }

    #[test]
    fn damaged_prebuilt_weights_are_named_before_any_training() {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("demo");
        let models = PrebuiltModels {
            base: b"not a safetensors file",
            synthesizer: b"",
            judge: b"",
            build: "{}",
        };
        let device = Device::flex();
        let error = run_demo(
            &options(GeneralSource::Prebuilt),
            &out,
            false,
            &device,
            Some(models),
            &mut Silent(Quiet),
        )
        .unwrap_err()
        .to_string();
        assert!(
            error.contains("demo stage base") && error.contains("prebuilt base model"),
            "{error}"
        );
        let state = read_state(&out).unwrap();
        assert!(state.finished.contains_key("data"));
        assert!(!state.finished.contains_key("base"));
        assert!(!out.join("runs").join("base").join("checkpoints").exists());
    }

    #[test]
    fn prebuilt_without_models_and_build_with_domains_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let refusal = |options: DemoOptions, dir: &str| {
            run_demo(
                &options,
                &tmp.path().join(dir),
                false,
                &Device::flex(),
                None,
                &mut Silent(Quiet),
            )
            .unwrap_err()
            .to_string()
        };
        let error = refusal(options(GeneralSource::Prebuilt), "a");
        assert!(error.contains("--train-general"), "{error}");
        let build = options(GeneralSource::Build {
            all_seed_questions: false,
            general_images: 16,
        });
        let error = refusal(build, "b");
        assert!(error.contains("no target domain"), "{error}");
        assert!(!tmp.path().join("a").exists() && !tmp.path().join("b").exists());
    }

    #[test]
    fn judge_examples_pair_each_question_with_both_kinds_of_wrong_answer() {
        let tmp = tempfile::tempdir().unwrap();
        let samples = generate_samples(DomainKind::General, Split::Train, 40, 3);
        write_domain(&samples, tmp.path(), DomainKind::General, Split::Train).unwrap();
        let examples = judge_examples(tmp.path()).unwrap();
        let yes: Vec<&JudgeExample> = examples.iter().filter(|e| e.label == "Yes").collect();
        let no: Vec<&JudgeExample> = examples.iter().filter(|e| e.label == "No").collect();
        assert!(yes.len() >= 40, "{} consistent examples", yes.len());
        // Every wrong answer follows its question's consistent example's image and question,
        // is not the right answer and is not stated in the reasoning.
        for wrong in &no {
            let right = yes
                .iter()
                .find(|y| {
                    y.image == wrong.image && y.triplet.instruction == wrong.triplet.instruction
                })
                .expect("a No without its Yes");
            let answer = wrong.triplet.precise_answer.to_lowercase();
            assert_ne!(answer, right.triplet.precise_answer.to_lowercase());
            let yes_no = ["yes", "no"].contains(&answer.as_str());
            assert!(
                yes_no
                    || !wrong
                        .triplet
                        .informative_answer
                        .to_lowercase()
                        .contains(&answer),
                "{answer:?} is in {:?}",
                wrong.triplet.informative_answer
            );
        }
        // Nearly every question has a wrong answer, and both kinds are used about equally:
        // same kind (a count for a count, yes for no) and another kind.
        assert!(
            no.len() * 10 >= yes.len() * 9,
            "{} of {}",
            no.len(),
            yes.len()
        );
        let kind_of = |a: &str| {
            if a.parse::<usize>().is_ok() {
                "count"
            } else if ["yes", "no"].contains(&a) {
                "yes/no"
            } else {
                "word"
            }
        };
        let same = no
            .iter()
            .filter(|w| {
                let right = yes
                    .iter()
                    .find(|y| y.image == w.image && y.triplet.instruction == w.triplet.instruction)
                    .unwrap();
                kind_of(&w.triplet.precise_answer.to_lowercase())
                    == kind_of(&right.triplet.precise_answer.to_lowercase())
            })
            .count();
        assert!(
            same * 10 >= no.len() * 4 && same * 10 <= no.len() * 8,
            "{same} of {} wrong answers are of the right answer's kind",
            no.len()
        );
    }
}
