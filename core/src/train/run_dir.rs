//! The run directory: what a training run writes, and how it is resumed.
//!
//! ```text
//! RUN_DIR/
//!   run.json                  fingerprints of model, recipe and data; creation time; command lines
//!   .lock                     held while a trainer uses the folder (OS file lock)
//!   metrics.jsonl             one row per logging step (see `metrics_log`)
//!   loss_curve.png            written at the end (see `plot`)
//!   checkpoints/
//!     step-000500/            a complete checkpoint: trainer_state.json + the trainer's tensors
//!     step-001000/
//!     .tmp-step-001500/       a checkpoint being written; never read, removed when found
//!   model/                    the final HF-layout model
//!   adapter/                  the final PEFT adapter (LoRA runs)
//! ```
//!
//! A checkpoint is first written in full into `checkpoints/.tmp-step-N/`, every file synced,
//! then renamed to `checkpoints/step-N/` in one step, so a crash or kill leaves either the
//! complete checkpoint or none: a folder named `step-N` is always whole. Older checkpoints
//! beyond `save_total_limit` are deleted only once the new one is in place.
//!
//! Resuming compares the fingerprints stored in `run.json` with those of the current command
//! and refuses, naming what differs, rather than continuing a run with another model, recipe or
//! data.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::io::{FileError, read_json_file, write_json_atomic};

/// Name of the run description file.
pub const RUN_JSON: &str = "run.json";
/// Name of the trainer state file inside each checkpoint.
pub const TRAINER_STATE_JSON: &str = "trainer_state.json";
/// Prefix of unfinished checkpoint folders (and of anything else half-written).
pub const TMP_PREFIX: &str = ".tmp-";
const LOCK_FILE: &str = ".lock";
const RUN_FORMAT: u32 = 1;

/// Contents of `run.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunInfo {
    /// Layout version of this file (1).
    pub format: u32,
    /// The adamllm version that created the run.
    pub adamllm_version: String,
    /// Creation time, seconds since the Unix epoch.
    pub created_unix_s: u64,
    /// Creation time, ISO 8601 in UTC.
    pub created: String,
    /// The command line that created the run.
    pub command_line: Vec<String>,
    /// Identity of the base model.
    pub model_fingerprint: String,
    /// Identity of the recipe ([`super::recipe::TrainRecipe::fingerprint`]).
    pub recipe_fingerprint: String,
    /// Identity of the training data.
    pub data_fingerprint: String,
    /// Every later resume of this run, oldest first.
    #[serde(default)]
    pub resumes: Vec<ResumeRecord>,
}

/// One resume of a run, recorded in `run.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResumeRecord {
    /// When, seconds since the Unix epoch.
    pub time_unix_s: u64,
    /// When, ISO 8601 in UTC.
    pub time: String,
    /// The command line of the resumed process.
    pub command_line: Vec<String>,
    /// The checkpoint step training continued from; `None` when none had been saved yet and
    /// training restarted from step 0.
    pub from_step: Option<usize>,
}

/// Where the data loader stands, so a resumed run sees the same samples in the same order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataPosition {
    /// Index of the current stage (0 for single-stage runs).
    pub stage: usize,
    /// Index of the current epoch within the stage.
    pub epoch: usize,
    /// Index, in this epoch's order, of the next micro-batch to train on.
    pub next_micro_batch: usize,
}

/// The loss of one optimizer step.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LossRecord {
    /// Optimizer step (1-based: the loss of the step that brought the count to `step`).
    pub step: usize,
    /// Mean loss over the step's supervised tokens.
    pub loss: f64,
}

/// Host-side training state stored in each checkpoint as `trainer_state.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TrainerState {
    /// Optimizer steps completed.
    pub step: usize,
    /// Optimizer steps the run will make in all.
    pub total_steps: usize,
    /// Epochs completed, fractional (as transformers logs it).
    pub epoch: f64,
    /// Where the data loader stands.
    pub data: DataPosition,
    /// Random generator state words (shuffling, dropout), restored as they are.
    pub rng_state: Vec<u64>,
    /// Every step's loss so far.
    pub loss_history: Vec<LossRecord>,
    /// Supervised tokens trained on so far.
    #[serde(default)]
    pub tokens_seen: u64,
    /// Anything else the training loop wants back on resume.
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// One of the three identities a resume must match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FingerprintKind {
    /// The base model (`--model`).
    Model,
    /// The recipe (`--config` file and `--flags`).
    Recipe,
    /// The training data (`--data` files and images).
    Data,
}

impl FingerprintKind {
    fn describe(self) -> &'static str {
        match self {
            Self::Model => "model (--model)",
            Self::Recipe => "recipe (--config file and recipe --flags)",
            Self::Data => "data (--data files)",
        }
    }
}

/// A fingerprint that differs between `run.json` and the resuming command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FingerprintDifference {
    /// Which identity differs.
    pub kind: FingerprintKind,
    /// The fingerprint recorded in `run.json`.
    pub recorded: String,
    /// The fingerprint of the current command.
    pub current: String,
}

fn short(fp: &str) -> &str {
    fp.get(..12).unwrap_or(fp)
}

fn describe_not_empty(holds_run: bool) -> &'static str {
    if holds_run {
        "already holds a training run"
    } else {
        "is not empty"
    }
}

fn describe_differences(diffs: &[FingerprintDifference]) -> String {
    diffs
        .iter()
        .map(|d| {
            format!(
                "the {} differs (run.json has {}…, this command gives {}…)",
                d.kind.describe(),
                short(&d.recorded),
                short(&d.current)
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Why a run directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum RunDirError {
    /// A file system operation failed.
    #[error("{}: {source}", .path.display())]
    Io {
        /// The path concerned.
        path: PathBuf,
        /// The failure.
        source: std::io::Error,
    },
    /// A JSON file could not be read or written.
    #[error(transparent)]
    File(#[from] FileError),
    /// A new run was asked for in a folder that already has content.
    #[error(
        "{}: {}; pass --resume to continue it, or choose an empty or new output folder",
        .path.display(),
        describe_not_empty(*.holds_run)
    )]
    NotEmpty {
        /// The folder.
        path: PathBuf,
        /// Whether it holds a `run.json`.
        holds_run: bool,
    },
    /// The output path exists and is not a folder.
    #[error("{}: exists and is not a folder", .path.display())]
    NotADirectory {
        /// The path.
        path: PathBuf,
    },
    /// `--resume` on a folder with no run in it.
    #[error("{}: nothing to resume: no run.json there (start a new run without --resume)", .path.display())]
    NothingToResume {
        /// The folder.
        path: PathBuf,
    },
    /// `--resume` with another model, recipe or data than the run was made with.
    #[error(
        "{}: refusing to resume: {}. Resume with the original inputs, or start a new run in another folder",
        .path.display(),
        describe_differences(.differences)
    )]
    FingerprintMismatch {
        /// The run folder.
        path: PathBuf,
        /// Every identity that differs.
        differences: Vec<FingerprintDifference>,
    },
    /// Another process is training in this folder.
    #[error("{}: another adamllm process is using this run folder", .path.display())]
    Busy {
        /// The folder.
        path: PathBuf,
    },
    /// The caller's checkpoint writer failed; nothing was published.
    #[error("{}: writing checkpoint for step {step} failed: {message}", .path.display())]
    CheckpointWrite {
        /// The unfinished checkpoint folder (already removed).
        path: PathBuf,
        /// The step being saved.
        step: usize,
        /// The writer's message.
        message: String,
    },
    /// `save_checkpoint` was given a state whose step differs from the step to save.
    #[error("checkpoint step {step} does not match trainer state step {state_step}")]
    StepMismatch {
        /// The step asked to save.
        step: usize,
        /// `TrainerState::step`.
        state_step: usize,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> RunDirError + '_ {
    move |source| RunDirError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A run folder opened for training. Holds an OS lock on `RUN_DIR/.lock` while alive, so two
/// trainers never write the same folder; the lock dies with the process.
#[derive(Debug)]
pub struct RunDir {
    root: PathBuf,
    save_total_limit: Option<usize>,
    _lock: Option<fs::File>,
}

/// A checkpoint found on disk with its trainer state.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    /// Optimizer step it was saved at.
    pub step: usize,
    /// Its folder.
    pub path: PathBuf,
    /// Its `trainer_state.json`.
    pub state: TrainerState,
}

/// What [`RunDir::create_or_resume`] found or made.
#[derive(Debug)]
pub struct RunState {
    /// The opened folder.
    pub dir: RunDir,
    /// `run.json` as now on disk.
    pub info: RunInfo,
    /// The newest complete checkpoint when resuming one; `None` for a new run, or a resumed
    /// run that had not saved any checkpoint yet (it restarts from step 0).
    pub checkpoint: Option<Checkpoint>,
}

impl RunDir {
    /// Opens `path` for a new run (`resume == false`) or to continue one (`resume == true`).
    ///
    /// A new run needs `path` absent or an empty folder, and writes `run.json` atomically.
    /// A resume needs a `run.json` whose model, recipe and data fingerprints equal the given
    /// ones (otherwise [`RunDirError::FingerprintMismatch`] names each that differs), appends a
    /// [`ResumeRecord`] to `run.json`, removes unfinished checkpoint folders and loads the
    /// newest complete checkpoint.
    pub fn create_or_resume(
        path: &Path,
        resume: bool,
        model_fingerprint: &str,
        recipe_fingerprint: &str,
        data_fingerprint: &str,
    ) -> Result<RunState, RunDirError> {
        let run_json = path.join(RUN_JSON);
        let command_line: Vec<String> = std::env::args().collect();
        let (now_s, now) = now_utc();
        if resume {
            if !run_json.is_file() {
                return Err(RunDirError::NothingToResume {
                    path: path.to_path_buf(),
                });
            }
            let dir = Self::open_locked(path)?;
            let mut info: RunInfo = read_json_file(&run_json)?;
            let differences: Vec<FingerprintDifference> = [
                (
                    FingerprintKind::Model,
                    &info.model_fingerprint,
                    model_fingerprint,
                ),
                (
                    FingerprintKind::Recipe,
                    &info.recipe_fingerprint,
                    recipe_fingerprint,
                ),
                (
                    FingerprintKind::Data,
                    &info.data_fingerprint,
                    data_fingerprint,
                ),
            ]
            .into_iter()
            .filter(|(_, recorded, current)| recorded.as_str() != *current)
            .map(|(kind, recorded, current)| FingerprintDifference {
                kind,
                recorded: recorded.clone(),
                current: current.to_string(),
            })
            .collect();
            if !differences.is_empty() {
                return Err(RunDirError::FingerprintMismatch {
                    path: path.to_path_buf(),
                    differences,
                });
            }
            let checkpoint = match dir.latest_checkpoint() {
                Some((step, ckpt)) => {
                    let state = Self::load_trainer_state(&ckpt)?;
                    Some(Checkpoint {
                        step,
                        path: ckpt,
                        state,
                    })
                }
                None => None,
            };
            info.resumes.push(ResumeRecord {
                time_unix_s: now_s,
                time: now,
                command_line,
                from_step: checkpoint.as_ref().map(|c| c.step),
            });
            write_json_atomic(&run_json, &info)?;
            Ok(RunState {
                dir,
                info,
                checkpoint,
            })
        } else {
            if path.exists() {
                if !path.is_dir() {
                    return Err(RunDirError::NotADirectory {
                        path: path.to_path_buf(),
                    });
                }
                let mut entries = fs::read_dir(path).map_err(io_err(path))?;
                if entries.next().is_some() {
                    return Err(RunDirError::NotEmpty {
                        path: path.to_path_buf(),
                        holds_run: run_json.exists(),
                    });
                }
            }
            fs::create_dir_all(path).map_err(io_err(path))?;
            let dir = Self::open_locked(path)?;
            let info = RunInfo {
                format: RUN_FORMAT,
                adamllm_version: env!("CARGO_PKG_VERSION").to_string(),
                created_unix_s: now_s,
                created: now,
                command_line,
                model_fingerprint: model_fingerprint.to_string(),
                recipe_fingerprint: recipe_fingerprint.to_string(),
                data_fingerprint: data_fingerprint.to_string(),
                resumes: Vec::new(),
            };
            write_json_atomic(&run_json, &info)?;
            Ok(RunState {
                dir,
                info,
                checkpoint: None,
            })
        }
    }

    fn open_locked(path: &Path) -> Result<Self, RunDirError> {
        let ckpts = path.join("checkpoints");
        fs::create_dir_all(&ckpts).map_err(io_err(&ckpts))?;
        let lock_path = path.join(LOCK_FILE);
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io_err(&lock_path))?;
        let lock = match file.try_lock() {
            Ok(()) => Some(file),
            Err(fs::TryLockError::WouldBlock) => {
                return Err(RunDirError::Busy {
                    path: path.to_path_buf(),
                });
            }
            // File systems without locks: go on unprotected rather than refuse to train.
            Err(fs::TryLockError::Error(_)) => None,
        };
        Ok(Self {
            root: path.to_path_buf(),
            save_total_limit: None,
            _lock: lock,
        })
    }

    /// Keep only the newest `limit` checkpoints (`None` keeps all; `Some(0)` is taken as 1).
    pub fn set_save_total_limit(&mut self, limit: Option<usize>) {
        self.save_total_limit = limit.map(|k| k.max(1));
    }

    /// The run folder.
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// `RUN_DIR/run.json`.
    pub fn run_json_path(&self) -> PathBuf {
        self.root.join(RUN_JSON)
    }

    /// `RUN_DIR/checkpoints`.
    pub fn checkpoints_dir(&self) -> PathBuf {
        self.root.join("checkpoints")
    }

    /// `RUN_DIR/metrics.jsonl`.
    pub fn metrics_path(&self) -> PathBuf {
        self.root.join("metrics.jsonl")
    }

    /// `RUN_DIR/loss_curve.png`.
    pub fn loss_plot_path(&self) -> PathBuf {
        self.root.join("loss_curve.png")
    }

    /// `RUN_DIR/model`: the final HF-layout model.
    pub fn model_dir(&self) -> PathBuf {
        self.root.join("model")
    }

    /// `RUN_DIR/adapter`: the final PEFT adapter of a LoRA run.
    pub fn adapter_dir(&self) -> PathBuf {
        self.root.join("adapter")
    }

    /// `RUN_DIR/skipped.jsonl`: samples left out by `--skip-bad`, with reasons.
    pub fn skipped_path(&self) -> PathBuf {
        self.root.join("skipped.jsonl")
    }

    /// The folder name of the checkpoint at `step`: `step-000123`.
    pub fn checkpoint_name(step: usize) -> String {
        format!("step-{step:06}")
    }

    /// Saves a checkpoint for `step` and returns its folder.
    ///
    /// Writes `trainer_state.json` into `checkpoints/.tmp-step-N/`, lets `write_tensors` add
    /// its files there, syncs every file, then renames the folder to `checkpoints/step-N/`.
    /// If `write_tensors` fails, the temporary folder is removed and no checkpoint appears.
    /// A checkpoint already saved for the same step is replaced. Afterwards checkpoints
    /// beyond `save_total_limit` are deleted, oldest first.
    pub fn save_checkpoint(
        &self,
        step: usize,
        state: &TrainerState,
        write_tensors: impl FnOnce(&Path) -> Result<(), String>,
    ) -> Result<PathBuf, RunDirError> {
        if state.step != step {
            return Err(RunDirError::StepMismatch {
                step,
                state_step: state.step,
            });
        }
        let ckpts = self.checkpoints_dir();
        fs::create_dir_all(&ckpts).map_err(io_err(&ckpts))?;
        let name = Self::checkpoint_name(step);
        let tmp = ckpts.join(format!("{TMP_PREFIX}{name}"));
        let done = ckpts.join(&name);
        if tmp.exists() {
            fs::remove_dir_all(&tmp).map_err(io_err(&tmp))?;
        }
        fs::create_dir(&tmp).map_err(io_err(&tmp))?;

        let written = (|| -> Result<(), RunDirError> {
            write_json_atomic(&tmp.join(TRAINER_STATE_JSON), state)?;
            write_tensors(&tmp).map_err(|message| RunDirError::CheckpointWrite {
                path: tmp.clone(),
                step,
                message,
            })?;
            sync_tree(&tmp)?;
            Ok(())
        })();
        if let Err(e) = written {
            let _ = fs::remove_dir_all(&tmp);
            return Err(e);
        }

        if done.exists() {
            // Same step saved before (a resumed run saving again): move the old one aside so the
            // rename below cannot fail on a non-empty target, then drop it.
            let old = ckpts.join(format!("{TMP_PREFIX}old-{name}"));
            if old.exists() {
                fs::remove_dir_all(&old).map_err(io_err(&old))?;
            }
            fs::rename(&done, &old).map_err(io_err(&done))?;
            fs::rename(&tmp, &done).map_err(io_err(&done))?;
            let _ = fs::remove_dir_all(&old);
        } else {
            fs::rename(&tmp, &done).map_err(io_err(&done))?;
        }
        sync_dir(&ckpts);

        if let Some(keep) = self.save_total_limit {
            let all = self.list_checkpoints();
            if all.len() > keep {
                for (s, old) in &all[..all.len() - keep] {
                    if *s != step {
                        fs::remove_dir_all(old).map_err(io_err(old))?;
                    }
                }
                sync_dir(&ckpts);
            }
        }
        Ok(done)
    }

    /// Complete checkpoints, oldest first: `checkpoints/step-N/` folders holding a
    /// `trainer_state.json`. Unfinished `.tmp-*` folders and anything else are ignored.
    pub fn list_checkpoints(&self) -> Vec<(usize, PathBuf)> {
        let Ok(entries) = fs::read_dir(self.checkpoints_dir()) else {
            return Vec::new();
        };
        let mut out: Vec<(usize, PathBuf)> = entries
            .filter_map(Result::ok)
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let digits = name.strip_prefix("step-")?;
                if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                let step: usize = digits.parse().ok()?;
                let path = e.path();
                path.join(TRAINER_STATE_JSON)
                    .is_file()
                    .then_some((step, path))
            })
            .collect();
        out.sort();
        out
    }

    /// The newest complete checkpoint, if any. Unfinished `.tmp-*` leftovers of an interrupted
    /// save are removed on the way (this process holds the folder's lock, so none is in
    /// progress).
    pub fn latest_checkpoint(&self) -> Option<(usize, PathBuf)> {
        self.remove_unfinished();
        self.list_checkpoints().pop()
    }

    /// Deletes `.tmp-*` entries in `checkpoints/`; returns how many were removed.
    pub fn remove_unfinished(&self) -> usize {
        let Ok(entries) = fs::read_dir(self.checkpoints_dir()) else {
            return 0;
        };
        let mut removed = 0;
        for e in entries.filter_map(Result::ok) {
            if e.file_name().to_string_lossy().starts_with(TMP_PREFIX) {
                let p = e.path();
                let ok = if p.is_dir() {
                    fs::remove_dir_all(&p)
                } else {
                    fs::remove_file(&p)
                };
                if ok.is_ok() {
                    removed += 1;
                }
            }
        }
        removed
    }

    /// Reads `trainer_state.json` of a checkpoint folder.
    pub fn load_trainer_state(checkpoint: &Path) -> Result<TrainerState, RunDirError> {
        Ok(read_json_file(&checkpoint.join(TRAINER_STATE_JSON))?)
    }
}

/// Syncs every file under `dir`, then the folders themselves, so the rename that publishes the
/// checkpoint cannot reach the disk before its contents.
fn sync_tree(dir: &Path) -> Result<(), RunDirError> {
    for e in fs::read_dir(dir).map_err(io_err(dir))? {
        let e = e.map_err(io_err(dir))?;
        let p = e.path();
        let ty = e.file_type().map_err(io_err(&p))?;
        if ty.is_dir() {
            sync_tree(&p)?;
        } else if ty.is_file() {
            fs::File::open(&p)
                .and_then(|f| f.sync_all())
                .map_err(io_err(&p))?;
        }
    }
    sync_dir(dir);
    Ok(())
}

/// Best-effort sync of a folder entry list (not possible on every platform).
fn sync_dir(dir: &Path) {
    if let Ok(f) = fs::File::open(dir) {
        let _ = f.sync_all();
    }
}

/// Now as (Unix seconds, ISO 8601 UTC `YYYY-MM-DDTHH:MM:SSZ`).
fn now_utc() -> (u64, String) {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    (secs, iso8601_utc(secs))
}

/// Formats Unix seconds as `YYYY-MM-DDTHH:MM:SSZ` (proleptic Gregorian calendar).
fn iso8601_utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (h, m, s) = (rem / 3600, (rem % 3600) / 60, rem % 60);
    // Civil date from a day count: shift the epoch to 0000-03-01 so leap days end each
    // 400-year era's years, then split the era into years, months and days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}Z")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(step: usize) -> TrainerState {
        TrainerState {
            step,
            total_steps: 100,
            epoch: step as f64 / 50.0,
            data: DataPosition {
                stage: 0,
                epoch: 0,
                next_micro_batch: step * 4,
            },
            rng_state: vec![u64::MAX, 1, 0xdead_beef],
            loss_history: (1..=step)
                .map(|s| LossRecord {
                    step: s,
                    loss: 1.0 / s as f64,
                })
                .collect(),
            tokens_seen: 1234,
            extra: Default::default(),
        }
    }

    fn new_run(path: &Path) -> RunState {
        RunDir::create_or_resume(path, false, "model-a", "recipe-a", "data-a").unwrap()
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn new_run_writes_run_json() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("run");
        let run = new_run(&root);
        assert!(run.checkpoint.is_none());
        let info: RunInfo = read_json_file(&root.join(RUN_JSON)).unwrap();
        assert_eq!(info, run.info);
        assert_eq!(info.recipe_fingerprint, "recipe-a");
        assert_eq!(info.format, 1);
        assert!(
            info.created.ends_with('Z') && info.created.len() == 20,
            "{}",
            info.created
        );
        assert!(!info.command_line.is_empty());
    }

    #[test]
    fn new_run_refuses_non_empty_folder() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("run");
        drop(new_run(&root));
        let e = RunDir::create_or_resume(&root, false, "m", "r", "d").unwrap_err();
        let msg = e.to_string();
        assert!(
            matches!(
                e,
                RunDirError::NotEmpty {
                    holds_run: true,
                    ..
                }
            ),
            "{msg}"
        );
        assert!(
            msg.contains("already holds a training run") && msg.contains("--resume"),
            "{msg}"
        );

        let other = tmp.path().join("other");
        fs::create_dir(&other).unwrap();
        fs::write(other.join("notes.txt"), "x").unwrap();
        let msg = RunDir::create_or_resume(&other, false, "m", "r", "d")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("is not empty"), "{msg}");

        let empty = tmp.path().join("empty");
        fs::create_dir(&empty).unwrap();
        RunDir::create_or_resume(&empty, false, "m", "r", "d").unwrap();

        let file = tmp.path().join("file");
        fs::write(&file, "x").unwrap();
        let e = RunDir::create_or_resume(&file, false, "m", "r", "d").unwrap_err();
        assert!(matches!(e, RunDirError::NotADirectory { .. }));
    }

    #[test]
    fn resume_refusals_say_what_differs() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("run");
        let e = RunDir::create_or_resume(&root, true, "model-a", "recipe-a", "data-a").unwrap_err();
        assert!(e.to_string().contains("nothing to resume"), "{e}");

        drop(new_run(&root));
        let e = RunDir::create_or_resume(&root, true, "model-a", "recipe-b", "data-a").unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("refusing to resume"), "{msg}");
        assert!(msg.contains("recipe"), "{msg}");
        assert!(
            !msg.contains("model (--model)") && !msg.contains("data (--data"),
            "{msg}"
        );

        let e = RunDir::create_or_resume(&root, true, "model-b", "recipe-a", "data-a").unwrap_err();
        assert!(e.to_string().contains("the model (--model) differs"), "{e}");
        let e = RunDir::create_or_resume(&root, true, "model-b", "recipe-a", "data-b").unwrap_err();
        match e {
            RunDirError::FingerprintMismatch { differences, .. } => {
                let kinds: Vec<_> = differences.iter().map(|d| d.kind).collect();
                assert_eq!(kinds, vec![FingerprintKind::Model, FingerprintKind::Data]);
                assert_eq!(differences[1].recorded, "data-a");
            }
            other => panic!("{other}"),
        }
        // Refusals do not touch run.json.
        let info: RunInfo = read_json_file(&root.join(RUN_JSON)).unwrap();
        assert!(info.resumes.is_empty());
    }

    #[test]
    fn resume_finds_latest_checkpoint_and_records_itself() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("run");
        {
            let run = new_run(&root);
            run.dir.save_checkpoint(10, &state(10), |_| Ok(())).unwrap();
            run.dir.save_checkpoint(20, &state(20), |_| Ok(())).unwrap();
            // A save killed half-way leaves a temp folder behind.
            fs::create_dir_all(root.join("checkpoints/.tmp-step-000030")).unwrap();
            fs::write(
                root.join("checkpoints/.tmp-step-000030/trainer_state.json"),
                "{",
            )
            .unwrap();
        }
        let run = RunDir::create_or_resume(&root, true, "model-a", "recipe-a", "data-a").unwrap();
        let ckpt = run.checkpoint.unwrap();
        assert_eq!(ckpt.step, 20);
        assert_eq!(ckpt.state, state(20));
        assert_eq!(
            names(&root.join("checkpoints")),
            vec!["step-000010", "step-000020"]
        );
        assert_eq!(run.info.resumes.len(), 1);
        assert_eq!(run.info.resumes[0].from_step, Some(20));
        let on_disk: RunInfo = read_json_file(&root.join(RUN_JSON)).unwrap();
        assert_eq!(on_disk.resumes.len(), 1);
    }

    #[test]
    fn resume_before_any_checkpoint_restarts_from_zero() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("run");
        drop(new_run(&root));
        let run = RunDir::create_or_resume(&root, true, "model-a", "recipe-a", "data-a").unwrap();
        assert!(run.checkpoint.is_none());
        assert_eq!(run.info.resumes[0].from_step, None);
    }

    #[test]
    fn second_trainer_on_same_folder_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("run");
        let _held = new_run(&root);
        let e = RunDir::create_or_resume(&root, true, "model-a", "recipe-a", "data-a").unwrap_err();
        assert!(matches!(e, RunDirError::Busy { .. }), "{e}");
    }

    #[test]
    fn checkpoint_holds_state_and_callback_files() {
        let tmp = tempfile::tempdir().unwrap();
        let run = new_run(&tmp.path().join("run"));
        let p = run
            .dir
            .save_checkpoint(123, &state(123), |dir| {
                assert!(
                    dir.file_name()
                        .unwrap()
                        .to_string_lossy()
                        .starts_with(".tmp-")
                );
                fs::write(dir.join("model.safetensors"), b"weights").map_err(|e| e.to_string())?;
                fs::create_dir(dir.join("optimizer")).map_err(|e| e.to_string())?;
                fs::write(dir.join("optimizer/state.bin"), b"moments").map_err(|e| e.to_string())
            })
            .unwrap();
        assert!(p.ends_with("checkpoints/step-000123"));
        assert_eq!(
            names(&p),
            vec!["model.safetensors", "optimizer", "trainer_state.json"]
        );
        assert_eq!(RunDir::load_trainer_state(&p).unwrap(), state(123));
        assert_eq!(run.dir.latest_checkpoint(), Some((123, p)));
    }

    #[test]
    fn failing_callback_leaves_no_visible_checkpoint() {
        let tmp = tempfile::tempdir().unwrap();
        let run = new_run(&tmp.path().join("run"));
        run.dir.save_checkpoint(5, &state(5), |_| Ok(())).unwrap();
        let e = run
            .dir
            .save_checkpoint(10, &state(10), |dir| {
                fs::write(dir.join("model.safetensors"), b"half").unwrap();
                Err("disk full".to_string())
            })
            .unwrap_err();
        assert!(
            e.to_string().contains("disk full") && e.to_string().contains("step 10"),
            "{e}"
        );
        assert_eq!(names(&run.dir.checkpoints_dir()), vec!["step-000005"]);
        assert_eq!(run.dir.latest_checkpoint().unwrap().0, 5);
    }

    #[test]
    fn interrupted_save_is_invisible_and_cleaned() {
        let tmp = tempfile::tempdir().unwrap();
        let run = new_run(&tmp.path().join("run"));
        run.dir.save_checkpoint(1, &state(1), |_| Ok(())).unwrap();
        // Simulate a process killed inside the callback: a complete-looking temp folder.
        let ck = run.dir.checkpoints_dir();
        fs::create_dir(ck.join(".tmp-step-000002")).unwrap();
        fs::write(ck.join(".tmp-step-000002/trainer_state.json"), "{}").unwrap();
        // A step folder without trainer_state.json is not a checkpoint either.
        fs::create_dir(ck.join("step-000003")).unwrap();
        assert_eq!(run.dir.latest_checkpoint().unwrap().0, 1);
        assert_eq!(names(&ck), vec!["step-000001", "step-000003"]);
    }

    #[test]
    fn keeps_last_k_after_publishing_the_new_one() {
        let tmp = tempfile::tempdir().unwrap();
        let mut run = new_run(&tmp.path().join("run"));
        run.dir.set_save_total_limit(Some(2));
        for s in [100, 200, 300] {
            run.dir.save_checkpoint(s, &state(s), |_| Ok(())).unwrap();
        }
        assert_eq!(
            names(&run.dir.checkpoints_dir()),
            vec!["step-000200", "step-000300"]
        );
        // A failed save deletes nothing.
        let _ = run
            .dir
            .save_checkpoint(400, &state(400), |_| Err("boom".into()));
        assert_eq!(
            names(&run.dir.checkpoints_dir()),
            vec!["step-000200", "step-000300"]
        );
        run.dir
            .save_checkpoint(400, &state(400), |_| Ok(()))
            .unwrap();
        assert_eq!(
            names(&run.dir.checkpoints_dir()),
            vec!["step-000300", "step-000400"]
        );
        run.dir.set_save_total_limit(Some(1));
        run.dir
            .save_checkpoint(500, &state(500), |_| Ok(()))
            .unwrap();
        assert_eq!(names(&run.dir.checkpoints_dir()), vec!["step-000500"]);
    }

    #[test]
    fn resaving_a_step_replaces_it() {
        let tmp = tempfile::tempdir().unwrap();
        let run = new_run(&tmp.path().join("run"));
        run.dir
            .save_checkpoint(7, &state(7), |d| {
                fs::write(d.join("a"), "1").map_err(|e| e.to_string())
            })
            .unwrap();
        let mut s = state(7);
        s.tokens_seen = 99;
        let p = run
            .dir
            .save_checkpoint(7, &s, |d| {
                fs::write(d.join("b"), "2").map_err(|e| e.to_string())
            })
            .unwrap();
        assert_eq!(names(&p), vec!["b", "trainer_state.json"]);
        assert_eq!(RunDir::load_trainer_state(&p).unwrap().tokens_seen, 99);
        assert_eq!(names(&run.dir.checkpoints_dir()), vec!["step-000007"]);
    }

    #[test]
    fn step_mismatch_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let run = new_run(&tmp.path().join("run"));
        let e = run
            .dir
            .save_checkpoint(8, &state(7), |_| Ok(()))
            .unwrap_err();
        assert!(matches!(e, RunDirError::StepMismatch { .. }));
        assert!(run.dir.list_checkpoints().is_empty());
    }

    #[test]
    fn f64_values_round_trip_bit_exactly() {
        // serde_json reads floats exactly only with its `float_roundtrip` feature; without it
        // 1/11 comes back one ulp off and a resumed run's state would differ.
        for x in [
            1.0 / 11.0,
            1.0 / 89.0,
            0.1 + 0.2,
            2.0f64.sqrt(),
            1e-300 / 3.0,
            f64::MAX / 7.0,
        ] {
            let back: f64 = serde_json::from_str(&serde_json::to_string(&x).unwrap()).unwrap();
            assert_eq!(
                back.to_bits(),
                x.to_bits(),
                "{x}: enable serde_json's `float_roundtrip` feature"
            );
        }
    }

    #[test]
    fn trainer_state_round_trips_u64_and_extra() {
        let mut s = state(3);
        s.extra
            .insert("sampler".into(), serde_json::json!({"perm_seed": 5}));
        let text = serde_json::to_string(&s).unwrap();
        let back: TrainerState = serde_json::from_str(&text).unwrap();
        assert_eq!(back, s);
        assert_eq!(back.rng_state[0], u64::MAX);
    }

    #[test]
    fn iso_dates() {
        assert_eq!(iso8601_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(iso8601_utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(iso8601_utc(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(iso8601_utc(4_102_444_799), "2099-12-31T23:59:59Z");
    }
}
