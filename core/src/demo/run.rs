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
//!    one model per ablation from the base model (same recipe, same epochs), evaluate every
//!    model and the base model on the domain's test tasks;
//! 6. `report`: `report.json`, `report.md`, `report.html`, loss curves under `plots/`.
//!
//! Every image is used at its drawn size, 112×112, in training, synthesis and evaluation alike
//! (the paper's evaluation would upscale it to 224², four times the tokens).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use web_time::Instant;

use burn::tensor::{DType, Device};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::domains::{
    DomainKind, Split, benchmark_tasks, generate_samples, write_domain, write_task_files,
};
use crate::data::conversation::read_conversations;
use crate::eval::benchmark::{ReadOptions, read_benchmark};
use crate::eval::custom_task::EvalTask;
use crate::eval::runner::{EvalOptions, run_eval};
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
                target_test_images: 40,
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
            ("seed", self.seed.to_string()),
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

/// The report's sentence on the judge's held-out score (trained in the run, or from the
/// prebuilt models' `build.json`), if the judge's summary has one.
fn judge_score_line(judge: &Value) -> Option<String> {
    let score = judge
        .get("held_out")
        .or_else(|| judge.get("build").and_then(|b| b.get("held_out")))?;
    let accuracy = score["accuracy"].as_f64()?;
    let part = |key: &str| {
        score[key]
            .as_f64()
            .map_or("–".to_string(), |v| format!("{v:.1} %"))
    };
    Some(format!(
        "The judge answers {accuracy:.1} % of {} held-out general-domain triplets right ({} of the consistent ones Yes, {} of the inconsistent ones No).\n\n",
        score["examples"],
        part("yes_recall"),
        part("no_recall"),
    ))
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

/// What a finished demo reports.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DemoReport {
    /// `report.json`'s content.
    pub json: Value,
    /// `report.md`'s content (also printed).
    pub markdown: String,
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
    let mut table: BTreeMap<String, BTreeMap<String, Value>> = BTreeMap::new();
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
        let tasks = benchmark_tasks(*kind);
        for ablation in Ablation::ALL {
            if assembled[ablation.key()].get("skipped").is_some() {
                continue;
            }
            let model = if ablation == Ablation::GeneralBase {
                base_model.clone()
            } else {
                let mode = datasets
                    .iter()
                    .find(|(a, _, _)| *a == ablation)
                    .map_or(AssemblyMode::Single, |(_, _, m)| *m);
                let files = output_files(
                    &work
                        .join("assembled")
                        .join(format!("{}.json", ablation.key())),
                    mode,
                );
                let trained = demo.stage(&format!("{name}/train/{}", ablation.key()), |d| {
                    let recipe = d.recipe(
                        d.scale.post_epochs,
                        &[("learning_rate", d.scale.post_learning_rate.to_string())],
                    )?;
                    d.train(
                        &format!("{name}-{}", ablation.key()),
                        &base_model,
                        files,
                        Some(train_dir.clone()),
                        mode == AssemblyMode::TwoStage,
                        recipe,
                    )
                })?;
                model_of(&trained)
            };
            let scores = demo.stage(&format!("{name}/eval/{}", ablation.key()), |d| {
                let loaded = d.load(&model)?;
                let mut scores = serde_json::Map::new();
                for task in &tasks {
                    let yaml = test_dir.join(format!("{}.yaml", task.name));
                    let eval_task = EvalTask::from_arg(&yaml.display().to_string())
                        .map_err(|e| e.to_string())?;
                    let read = ReadOptions {
                        images_dir: None,
                        required_fields: eval_task.required_fields(),
                        limit: None,
                    };
                    let rows =
                        read_benchmark(&test_dir.join(format!("{}.jsonl", task.name)), &read)
                            .map_err(|e| e.to_string())?;
                    let opts = EvalOptions {
                        batch_size: d.scale.batch_size,
                        limit: None,
                        max_new_tokens: None,
                        pixels: Some((DEMO_PIXELS, DEMO_PIXELS)),
                    };
                    let out = d
                        .out
                        .join("evals")
                        .join(name)
                        .join(ablation.key())
                        .join(&task.name);
                    let observer = &mut *d.observer;
                    let summary = run_eval(
                        &loaded,
                        &eval_task,
                        &rows,
                        &out,
                        &opts,
                        &mut |done, total| observer.progress(done, total),
                    )
                    .map_err(|e| e.to_string())?;
                    let main = summary.scores.first().map(|(_, v)| *v);
                    scores.insert(
                        task.name.clone(),
                        json!({"score": main, "metric": summary.metric, "all": summary.results}),
                    );
                }
                Ok(Value::Object(scores))
            })?;
            table
                .entry(name.to_string())
                .or_default()
                .insert(ablation.key().to_string(), scores);
        }
    }

    // 6. Report.
    let report = build_report(&demo, &domains, &table, started.elapsed().as_secs_f64());
    write_json_atomic(&demo.out.join("report.json"), &report.json)
        .map_err(|e| stage_error("report")(e.to_string()))?;
    write_atomic(&demo.out.join("report.md"), report.markdown.as_bytes())
        .map_err(|e| stage_error("report")(e.to_string()))?;
    let html = report_html(&demo, &domains, &report);
    write_atomic(&demo.out.join("report.html"), html.as_bytes())
        .map_err(|e| stage_error("report")(e.to_string()))?;
    Ok(report)
}

/// The main score of a task for an ablation, if evaluated.
fn score(
    table: &BTreeMap<String, BTreeMap<String, Value>>,
    domain: &str,
    ablation: Ablation,
    task: &str,
    key: &str,
) -> Option<f64> {
    table.get(domain)?.get(ablation.key())?.get(task)?["all"][key].as_f64()
}

/// The task-level score names of a demo task (from its task file).
fn demo_task_score_keys(out: &Path, domain: &str, task: &str) -> Vec<&'static str> {
    let yaml = out
        .join("data")
        .join(format!("{domain}-test"))
        .join(format!("{task}.yaml"));
    EvalTask::from_arg(&yaml.display().to_string())
        .map(|t| t.score_keys().to_vec())
        .unwrap_or_else(|_| vec!["score"])
}

fn build_report(
    demo: &Demo<'_>,
    domains: &[DomainKind],
    table: &BTreeMap<String, BTreeMap<String, Value>>,
    seconds: f64,
) -> DemoReport {
    let state = &demo.state;
    let mut md = String::from("# adamllm demo report\n\n");
    let general = match state.options.as_ref().map(|o| o.general) {
        Some(GeneralSource::Train) => "trained in this run",
        Some(GeneralSource::Build { .. }) => "built at the `adamllm demo-models` scale",
        _ => "the committed ones `adamllm demo-models` built",
    };
    md.push_str(&format!(
        "Tiny preset (Qwen2-VL architecture, ~0.2M parameters), {} run, seed {}, images at 112×112; general base, synthesizer and judge: {general}.\n\n",
        if state.options.as_ref().is_some_and(|o| o.quick) { "`--quick`" } else { "full" },
        demo.seed
    ));
    if let Some(line) = state.finished.get("judge").and_then(judge_score_line) {
        md.push_str(&line);
    }
    let mut findings = Vec::new();
    for kind in domains {
        let name = kind.name();
        // One column per task-level score (VQA tasks have a closed and an open score).
        let columns: Vec<(String, String, &'static str)> = benchmark_tasks(*kind)
            .into_iter()
            .flat_map(|task| {
                let keys = demo_task_score_keys(&demo.out, name, &task.name);
                keys.into_iter()
                    .map(move |key| (task.name.clone(), key.to_string(), task.imitates))
            })
            .collect();
        md.push_str(&format!("## {name}\n\n| ablation |"));
        for (task, key, imitates) in &columns {
            md.push_str(&format!(" {task} {key} ({imitates}) |"));
        }
        md.push_str(" mean |\n| --- |");
        for _ in &columns {
            md.push_str(" ---: |");
        }
        md.push_str(" ---: |\n");
        let mut means = BTreeMap::new();
        let mut row_scores: BTreeMap<Ablation, Vec<Option<f64>>> = BTreeMap::new();
        for ablation in Ablation::ALL {
            md.push_str(&format!("| {} |", ablation.label()));
            let values: Vec<Option<f64>> = columns
                .iter()
                .map(|(task, key, _)| score(table, name, ablation, task, key))
                .collect();
            for v in &values {
                md.push_str(&match v {
                    Some(v) => format!(" {v:.1} |"),
                    None => " – |".into(),
                });
            }
            let present: Vec<f64> = values.iter().flatten().copied().collect();
            let mean =
                (!present.is_empty()).then(|| present.iter().sum::<f64>() / present.len() as f64);
            if let Some(m) = mean {
                means.insert(ablation, m);
            }
            md.push_str(&mean.map_or(" – |\n".into(), |m| format!(" {m:.1} |\n")));
            row_scores.insert(ablation, values);
        }
        md.push('\n');
        let cmp = |a: Ablation, b: Ablation, claim: &str| -> Option<String> {
            let (x, y) = (means.get(&a)?, means.get(&b)?);
            let verdict = if (x - y).abs() < 1e-9 {
                "a tie here"
            } else if x > y {
                "holds"
            } else {
                "does NOT hold here"
            };
            Some(format!("- {name}: {claim}: {verdict} ({x:.1} vs {y:.1})"))
        };
        let per_task: Vec<(String, Option<f64>, Option<f64>)> = columns
            .iter()
            .zip(&row_scores[&Ablation::PaperMethod])
            .zip(&row_scores[&Ablation::GeneralBase])
            .map(|(((task, key, _), paper), base)| (format!("{task} {key}"), *paper, *base))
            .collect();
        findings.extend(
            [
                cmp(
                    Ablation::PaperMethod,
                    Ablation::GeneralBase,
                    "post-training beats the general base",
                ),
                every_task_finding(name, &per_task),
                cmp(
                    Ablation::SynthesizerUnfiltered,
                    Ablation::RulesSingle,
                    "synthesizer tasks beat rule-based tasks",
                ),
                cmp(
                    Ablation::PaperMethod,
                    Ablation::TwoStage,
                    "single stage beats two stages",
                ),
                cmp(
                    Ablation::PaperMethod,
                    Ablation::SynthesizerUnfiltered,
                    "the filter helps",
                ),
            ]
            .into_iter()
            .flatten(),
        );
        if let Some(filter) = state.finished.get(&format!("{name}/filter")) {
            findings.extend(degenerate_filter_note(name, filter));
        }
        if let Some(assembled) = state.finished.get(&format!("{name}/assemble")) {
            for ablation in Ablation::ALL {
                if let Some(reason) = assembled[ablation.key()]["skipped"].as_str() {
                    md.push_str(&format!(
                        "Not trained: {} ({reason}).\n\n",
                        ablation.label()
                    ));
                }
            }
        }
        if let Some(filter) = state.finished.get(&format!("{name}/filter")) {
            md.push_str(&format!("Filter labels: {}. ", filter["labels"]));
        }
        if let Some(synth) = state.finished.get(&format!("{name}/synthesize")) {
            md.push_str(&format!(
                "Synthesis: {} of {} images gave a triplet.\n\n",
                synth["with_triplet"], synth["rows"]
            ));
        }
    }
    md.push_str("## How the paper's claims fare here (means over each domain's tasks; the every-task line goes task by task)\n\n");
    for f in &findings {
        md.push_str(f);
        md.push('\n');
    }
    md.push_str(&format!(
        "\nThe order is reported as measured; the demo is not tuned to agree with the paper.\n\nTime: {:.0} s over all stages ({seconds:.0} s in this invocation; stages: {}).\n",
        state.seconds.values().sum::<f64>(),
        state
            .seconds
            .iter()
            .map(|(k, v)| format!("{k} {v:.0} s"))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    let json = json!({
        "options": state.options,
        "scale": demo.scale,
        "table": table,
        "findings": findings,
        "stages": state.finished,
        "seconds": state.seconds,
        "invocation_seconds": seconds,
    });
    DemoReport { json, markdown: md }
}

/// The per-task check of "the paper's row beats the general base on every task": `tasks` holds
/// (column, paper's row score, general base score); `None` when a score is missing.
fn every_task_finding(
    domain: &str,
    tasks: &[(String, Option<f64>, Option<f64>)],
) -> Option<String> {
    let scored: Vec<(&str, f64, f64)> = tasks
        .iter()
        .map(|(column, paper, base)| Some((column.as_str(), (*paper)?, (*base)?)))
        .collect::<Option<_>>()?;
    let claim = format!("{domain}: the paper's row beats the general base on every task");
    let not_above: Vec<String> = scored
        .iter()
        .filter(|(_, paper, base)| paper <= base)
        .map(|(column, paper, base)| format!("{column} {paper:.1} vs {base:.1}"))
        .collect();
    if not_above.is_empty() {
        let (column, paper, base) = scored
            .iter()
            .min_by(|a, b| (a.1 - a.2).total_cmp(&(b.1 - b.2)))?;
        Some(format!(
            "- {claim}: holds (smallest gain {:.1} points, {column})",
            paper - base
        ))
    } else {
        Some(format!(
            "- {claim}: does NOT hold here (not above the base: {})",
            not_above.join(", ")
        ))
    }
}

/// A finding line when the filter kept no triplet or every triplet: then the paper's row is
/// trained on the same data as another row, and the claims that compare them say nothing
/// about filtering.
fn degenerate_filter_note(domain: &str, filter: &Value) -> Option<String> {
    let labels = &filter["labels"];
    let count = |label: &str| labels[label].as_u64().unwrap_or(0);
    let triplets = count("yes") + count("no") + count("open") + count("unparsed");
    let kept = filter["kept"].as_u64().unwrap_or_else(|| count("yes"));
    if triplets == 0 {
        Some(format!(
            "- {domain}: the synthesizer wrote no triplet, so every synthetic row trained on the captions alone (the caption-only data)"
        ))
    } else if kept == 0 {
        Some(format!(
            "- {domain}: the judge kept none of the {triplets} triplets, so the paper's row trained on the captions alone (the caption-only data) and two stages had nothing to train: \"the filter helps\" here compares captions alone with captions plus the unfiltered tasks"
        ))
    } else if kept == triplets {
        Some(format!(
            "- {domain}: the judge kept all {triplets} triplets, so the filtered and unfiltered rows trained on the same data"
        ))
    } else {
        None
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The report's markdown (headings, tables, lists) as HTML. Raw HTML in it is shown as text,
/// never interpreted: the report quotes what models wrote.
fn markdown_html(markdown: &str) -> String {
    use pulldown_cmark::{Event, Options, Parser, html::push_html};
    let events = Parser::new_ext(markdown, Options::ENABLE_TABLES).map(|event| match event {
        Event::Html(text) | Event::InlineHtml(text) => Event::Text(text),
        other => other,
    });
    let mut html = String::new();
    push_html(&mut html, events);
    html
}

/// `report.html`: the tables, the loss curves, and sample images with their caption,
/// synthesized triplet and judge label. Self-contained apart from relative image links.
fn report_html(demo: &Demo<'_>, domains: &[DomainKind], report: &DemoReport) -> String {
    let mut html = String::from(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>adamllm demo report</title>\
         <style>body{font-family:sans-serif;max-width:70em;margin:auto}table{border-collapse:collapse}\
         td,th{border:1px solid #ccc;padding:4px 8px}img.sample{width:112px;image-rendering:pixelated}\
         .plots img{width:320px}</style></head><body>",
    );
    html.push_str(&markdown_html(&report.markdown));
    html.push_str("<h2>Loss curves</h2><div class=\"plots\">");
    for summary in demo.state.finished.values() {
        if let Some(plot) = summary.get("plot").and_then(Value::as_str) {
            html.push_str(&format!(
                "<figure><img src=\"{0}\"><figcaption>{0}</figcaption></figure>",
                escape(plot)
            ));
        }
    }
    html.push_str("</div>");
    for kind in domains {
        let name = kind.name();
        let filtered = demo
            .out
            .join("runs")
            .join(name)
            .join("filtered_task_pairs.jsonl");
        let Ok(text) = std::fs::read_to_string(&filtered) else {
            continue;
        };
        html.push_str(&format!("<h2>{name}: samples</h2><table><tr><th>image</th><th>caption</th><th>synthesized triplet</th><th>judge</th></tr>"));
        for line in text.lines().take(8) {
            let Ok(row) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            let image = row["images"][0].as_str().unwrap_or_default();
            let caption = row["messages"][1]["content"].as_str().unwrap_or_default();
            let qa = &row["collected_QA"];
            let triplet = if qa.is_object() {
                format!(
                    "<b>Q:</b> {}<br><b>informative:</b> {}<br><b>precise:</b> {}",
                    escape(qa["Q"].as_str().unwrap_or_default()),
                    escape(qa["informative_A"].as_str().unwrap_or_default()),
                    escape(qa["precise_A"].as_str().unwrap_or_default())
                )
            } else {
                "<i>no triplet in the output</i>".into()
            };
            html.push_str(&format!(
                "<tr><td><img class=\"sample\" src=\"data/{name}-train/{}\"></td><td>{}</td><td>{triplet}</td><td>{}</td></tr>",
                escape(image),
                escape(caption),
                escape(row["consistency"].as_str().unwrap_or_default())
            ));
        }
        html.push_str("</table>");
    }
    html.push_str("</body></html>\n");
    html
}

/// Reads a finished demo's state (for tests and tools).
pub fn read_state(out: &Path) -> Result<DemoState, FileError> {
    read_json_file(&out.join(DEMO_STATE_FILE))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::trainer::Quiet;

    #[test]
    fn report_markdown_becomes_html_tables_and_quoted_html_stays_text() {
        let html = markdown_html(
            "## biomed\n\n| ablation | acc |\n| --- | ---: |\n| caption only | 25.0 |\n\n\
             - a claim: holds <img src=\"http://x\">\n",
        );
        assert!(html.contains("<h2>biomed</h2>"), "{html}");
        assert!(
            html.contains("<table>") && html.contains("<th>ablation</th>"),
            "{html}"
        );
        assert!(
            html.contains("<td style=\"text-align: right\">25.0</td>"),
            "{html}"
        );
        assert!(html.contains("<li>a claim: holds &lt;img"), "{html}");
        assert!(!html.contains("<img"), "{html}");
    }

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

    #[test]
    fn the_judge_score_line_reads_a_trained_or_a_prebuilt_summary() {
        let score = json!({"examples": 400, "accuracy": 91.0, "yes_recall": 97.0, "no_recall": 85.0, "labels": {}});
        let expected = "The judge answers 91.0 % of 400 held-out general-domain triplets right (97.0 % of the consistent ones Yes, 85.0 % of the inconsistent ones No).\n\n";
        assert_eq!(
            judge_score_line(&json!({"held_out": score})).as_deref(),
            Some(expected)
        );
        assert_eq!(
            judge_score_line(&json!({"prebuilt": true, "build": {"held_out": score}})).as_deref(),
            Some(expected)
        );
        // No held-out images (a tiny general set): no recall to print, and no line without a score.
        let empty = json!({"held_out": {"examples": 0, "accuracy": null}});
        assert_eq!(judge_score_line(&empty), None);
        assert_eq!(
            judge_score_line(&json!({"prebuilt": true, "build": {}})),
            None
        );
    }

    #[test]
    fn every_task_finding_names_the_tasks_not_above_the_base() {
        let row =
            |column: &str, paper: f64, base: f64| (column.to_string(), Some(paper), Some(base));
        let mixed = [
            row("vqa OPEN", 10.0, 0.0),
            row("vqa CLOSED", 7.5, 12.5),
            row("mcq acc", 20.0, 20.0),
        ];
        assert_eq!(
            every_task_finding("biomed", &mixed).unwrap(),
            "- biomed: the paper's row beats the general base on every task: does NOT hold \
             here (not above the base: vqa CLOSED 7.5 vs 12.5, mcq acc 20.0 vs 20.0)"
        );
        let better = [row("dish acc", 30.0, 7.5), row("recipe rl", 18.4, 11.0)];
        assert_eq!(
            every_task_finding("food", &better).unwrap(),
            "- food: the paper's row beats the general base on every task: holds (smallest gain \
             7.4 points, recipe rl)"
        );
        let missing = [
            row("dish acc", 30.0, 7.5),
            ("recipe rl".into(), None, Some(11.0)),
        ];
        assert_eq!(every_task_finding("food", &missing), None);
    }

    #[test]
    fn degenerate_filters_are_called_out() {
        let filter = |yes: u64, no: u64, none: u64| json!({"kept": yes, "labels": {"yes": yes, "no": no, "open": 0, "unparsed": 0, "no_triplet": none}});
        let none_kept = degenerate_filter_note("food", &filter(0, 87, 113)).unwrap();
        assert!(none_kept.contains("kept none of the 87"), "{none_kept}");
        let all_kept = degenerate_filter_note("food", &filter(19, 0, 101)).unwrap();
        assert!(all_kept.contains("kept all 19"), "{all_kept}");
        let no_triplet = degenerate_filter_note("biomed", &filter(0, 0, 120)).unwrap();
        assert!(no_triplet.contains("wrote no triplet"), "{no_triplet}");
        assert_eq!(degenerate_filter_note("food", &filter(5, 7, 3)), None);
    }
}
