//! `adamllm assemble`: caption tasks + kept synthetic tasks → training data.
//!
//! Every usable image–caption pair gives a caption task (its own instruction → its caption).
//! A task row for the same `syn_id` gives at most one synthetic task:
//! * a row with `task` (`{instruction, response}`, the rule-based baseline) is used as it is
//!   when its `consistency` is `yes`;
//! * a row with `collected_QA` (`filtered_task_pairs.jsonl`) is kept when its judge label is
//!   yes (`consistency`, or `pred` stripped + lower-cased when that field is absent) and
//!   turned into a task by [`super::templates::training_task`];
//! * any other row is a synthesis row (`syn_task_triplets.jsonl`, the no-filter ablation):
//!   its triplet, when it has one, is used unjudged.
//!
//! Modes:
//! * `single` (the paper's method): one conversation per image, the caption task and the
//!   synthetic task as two rounds, the caption round first or last drawn with CPython's
//!   `Random(seed)` from the example's `syn_id`; images without a kept task keep the caption
//!   round alone;
//! * `two-stage`: `<stem>_stage1_caption.json` (caption tasks) and
//!   `<stem>_stage2_synthetic.json` (synthetic tasks), for `adamllm train --stages`;
//! * `caption-only` and `synthetic-only`: one of the two kinds.
//!
//! Output: a JSON array of ShareGPT rows `{"messages": [...], "images": [path]}`, `<image>\n`
//! at the start of the first user turn, paths as in the pairs file (relative to its images
//! folder).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::{Map, Value, json};

use super::SynthError;
use super::judge::{JudgeLabel, row_triplet};
use super::pairs::{CaptionPair, CaptionPairs, image_path};
use super::templates::{TrainingTask, task_seed, training_task};
use super::triplets::Triplet;
use crate::data::conversation::IMAGE_PLACEHOLDER;
use crate::eval::PythonRandom;
use crate::io::{FileError, write_json_atomic};

/// The default output name of single-stage data.
pub const ASSEMBLED_FILE: &str = "image_caption_and_synthetic_task.json";

/// What the assembled data holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AssemblyMode {
    /// Caption and synthetic task in one conversation per image (the paper's method).
    Single,
    /// Two files: captions, then synthetic tasks.
    TwoStage,
    /// Caption tasks only.
    CaptionOnly,
    /// Synthetic tasks only.
    SyntheticOnly,
}

impl AssemblyMode {
    /// Every mode with its command-line name.
    pub const ALL: [(Self, &'static str); 4] = [
        (Self::Single, "single"),
        (Self::TwoStage, "two-stage"),
        (Self::CaptionOnly, "caption-only"),
        (Self::SyntheticOnly, "synthetic-only"),
    ];

    /// The command-line name.
    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(mode, _)| *mode == self)
            .map_or("single", |(_, name)| name)
    }
}

impl std::str::FromStr for AssemblyMode {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        Self::ALL
            .iter()
            .find(|(_, name)| *name == text)
            .map(|(mode, _)| *mode)
            .ok_or_else(|| {
                format!(
                    "unknown mode {text:?}; expected one of {}",
                    Self::ALL.map(|(_, n)| n).join(", ")
                )
            })
    }
}

/// Counts of an assembly.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AssemblySummary {
    /// Mode name.
    pub mode: String,
    /// Usable image–caption pairs.
    pub pairs: usize,
    /// Pairs with a kept synthetic task.
    pub with_synthetic_task: usize,
    /// Task rows read.
    pub task_rows: usize,
    /// Task rows not kept (judge label other than yes, or no triplet).
    pub tasks_not_kept: usize,
    /// Task rows whose `syn_id` is not a usable pair (ignored).
    pub tasks_without_pair: usize,
    /// Pairs left out because their image is missing or unreadable.
    pub pairs_without_image: usize,
    /// Examples written per file.
    pub files: Vec<(PathBuf, usize)>,
}

/// One assembled training example.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AssembledExample {
    /// ShareGPT messages (`role`, `content`).
    pub messages: Vec<Value>,
    /// The image path.
    pub images: Vec<String>,
}

/// Reads the synthetic task of every kept row of a tasks file. Errors name the file and line.
pub fn read_kept_tasks(
    path: &Path,
    seed: u64,
) -> Result<(BTreeMap<usize, TrainingTask>, usize, usize), FileError> {
    let text = std::fs::read_to_string(path).map_err(|e| FileError::io(path, e))?;
    let mut kept = BTreeMap::new();
    let (mut rows, mut not_kept) = (0, 0);
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let row: Map<String, Value> = serde_json::from_str(line)
            .map_err(|e| FileError::line(path, i + 1, format!("malformed JSON object: {e}")))?;
        let syn_id = row
            .get("syn_id")
            .and_then(Value::as_u64)
            .ok_or_else(|| FileError::line(path, i + 1, "missing integer `syn_id`"))?
            as usize;
        rows += 1;
        let task = task_of_row(&row, syn_id, seed)
            .map_err(|message| FileError::line(path, i + 1, message))?;
        match task {
            Some(task) => {
                kept.entry(syn_id).or_insert(task);
            }
            None => not_kept += 1,
        }
    }
    Ok((kept, rows, not_kept))
}

/// The kept task of one row, `None` when it is not kept.
fn task_of_row(
    row: &Map<String, Value>,
    syn_id: usize,
    seed: u64,
) -> Result<Option<TrainingTask>, String> {
    let judged_yes = || match row.get("consistency").and_then(Value::as_str) {
        Some(label) => label == JudgeLabel::Yes.as_str(),
        None => {
            row.get("pred")
                .and_then(Value::as_str)
                .map(JudgeLabel::parse)
                == Some(JudgeLabel::Yes)
        }
    };
    if let Some(task) = row.get("task") {
        let task: TrainingTask = serde_json::from_value(task.clone())
            .map_err(|e| format!("`task` must be {{instruction, response}}: {e}"))?;
        return Ok(judged_yes().then_some(task));
    }
    if let Some(qa) = row.get("collected_QA") {
        let field = |key: &str| {
            qa.get(key)
                .and_then(Value::as_str)
                .map(str::to_string)
                .ok_or(format!("`collected_QA.{key}` must be a string"))
        };
        let triplet = Triplet {
            instruction: field("Q")?,
            informative_answer: field("informative_A")?,
            precise_answer: field("precise_A")?,
        };
        return Ok(judged_yes().then(|| training_task(&triplet, syn_id, seed)));
    }
    Ok(row_triplet(row).map(|triplet| training_task(&triplet, syn_id, seed)))
}

/// Whether the caption round goes first for an example (CPython `Random` on a seed derived
/// from `syn_id` and the user seed, apart from the template draw's seed).
pub fn caption_first(syn_id: usize, seed: u64) -> bool {
    let placement_seed = task_seed(syn_id, seed) + (1i128 << 100);
    PythonRandom::from_int_seed(placement_seed).choice(&[true, false]) == Some(&true)
}

fn round(user: &str, assistant: &str) -> [Value; 2] {
    [
        json!({"role": "user", "content": user}),
        json!({"role": "assistant", "content": assistant}),
    ]
}

/// Builds one example from rounds (user, assistant): `<image>\n` opens the first user turn.
fn example(pair: &CaptionPair, rounds: &[(&str, &str)]) -> AssembledExample {
    let mut messages = Vec::new();
    for (index, (user, assistant)) in rounds.iter().enumerate() {
        let user = if index == 0 {
            format!("{IMAGE_PLACEHOLDER}\n{user}")
        } else {
            (*user).to_string()
        };
        messages.extend(round(&user, assistant));
    }
    AssembledExample {
        messages,
        images: vec![pair.image.display().to_string()],
    }
}

/// Assembles examples for `mode` (for `TwoStage`, the two stages in order).
pub fn assemble_examples(
    pairs: &CaptionPairs,
    tasks: &BTreeMap<usize, TrainingTask>,
    mode: AssemblyMode,
    seed: u64,
) -> Vec<Vec<AssembledExample>> {
    let caption = |pair: &CaptionPair| example(pair, &[(&pair.instruction, &pair.caption)]);
    let synthetic = |pair: &CaptionPair| {
        tasks
            .get(&pair.syn_id)
            .map(|task| example(pair, &[(&task.instruction, &task.response)]))
    };
    let captions: Vec<AssembledExample> = pairs.pairs.iter().map(caption).collect();
    let synthetics: Vec<AssembledExample> = pairs.pairs.iter().filter_map(synthetic).collect();
    match mode {
        AssemblyMode::CaptionOnly => vec![captions],
        AssemblyMode::SyntheticOnly => vec![synthetics],
        AssemblyMode::TwoStage => vec![captions, synthetics],
        AssemblyMode::Single => vec![
            pairs
                .pairs
                .iter()
                .map(|pair| {
                    let caption_round = (pair.instruction.as_str(), pair.caption.as_str());
                    match tasks.get(&pair.syn_id) {
                        None => example(pair, &[caption_round]),
                        Some(task) => {
                            let task_round = (task.instruction.as_str(), task.response.as_str());
                            if caption_first(pair.syn_id, seed) {
                                example(pair, &[caption_round, task_round])
                            } else {
                                example(pair, &[task_round, caption_round])
                            }
                        }
                    }
                })
                .collect(),
        ],
    }
}

/// The files a mode writes for `--out`.
pub fn output_files(out: &Path, mode: AssemblyMode) -> Vec<PathBuf> {
    match mode {
        AssemblyMode::TwoStage => {
            let stem = out
                .file_stem()
                .map_or("image_caption_and_synthetic_task".into(), |s| {
                    s.to_string_lossy().into_owned()
                });
            vec![
                out.with_file_name(format!("{stem}_stage1_caption.json")),
                out.with_file_name(format!("{stem}_stage2_synthetic.json")),
            ]
        }
        _ => vec![out.to_path_buf()],
    }
}

/// Reads the tasks file, assembles and writes the output file(s) atomically. Pairs whose
/// image is missing or has no readable header (under `images_dir`) are left out, as
/// synthesis leaves them out.
pub fn run_assemble(
    pairs: &CaptionPairs,
    images_dir: &Path,
    tasks_path: &Path,
    mode: AssemblyMode,
    seed: u64,
    out: &Path,
) -> Result<AssemblySummary, SynthError> {
    let (tasks, task_rows, tasks_not_kept) = read_kept_tasks(tasks_path, seed)?;
    let mut usable_pairs = pairs.clone();
    usable_pairs
        .pairs
        .retain(|p| image::image_dimensions(image_path(images_dir, &p.image)).is_ok());
    let pairs_without_image = pairs.pairs.len() - usable_pairs.pairs.len();
    let pairs = &usable_pairs;
    let usable: std::collections::BTreeSet<usize> = pairs.pairs.iter().map(|p| p.syn_id).collect();
    let tasks_without_pair = tasks.keys().filter(|id| !usable.contains(id)).count();
    let with_synthetic_task = tasks.keys().filter(|id| usable.contains(id)).count();
    let stages = assemble_examples(pairs, &tasks, mode, seed);
    let mut files = Vec::new();
    for (path, examples) in output_files(out, mode).into_iter().zip(stages) {
        if examples.is_empty() {
            return Err(SynthError::Invalid(format!(
                "{}: nothing to write ({} mode found no {} task)",
                path.display(),
                mode.name(),
                if mode == AssemblyMode::CaptionOnly {
                    "caption"
                } else {
                    "kept synthetic"
                }
            )));
        }
        write_json_atomic(&path, &examples)?;
        files.push((path, examples.len()));
    }
    Ok(AssemblySummary {
        mode: mode.name().to_string(),
        pairs: pairs.pairs.len(),
        with_synthetic_task,
        task_rows,
        tasks_not_kept,
        tasks_without_pair,
        pairs_without_image,
        files,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::pairs::pair_from_value;

    fn pairs(n: usize) -> CaptionPairs {
        let pairs = (0..n)
            .map(|i| {
                pair_from_value(
                    i,
                    json!({"images": [format!("img{i}.png")], "messages": [
                        {"role": "user", "content": "<image>Describe the dish."},
                        {"role": "assistant", "content": format!("Caption {i}.")}]}),
                )
                .unwrap()
            })
            .collect();
        CaptionPairs {
            pairs,
            skipped: Vec::new(),
            total_rows: n,
        }
    }

    fn tasks(ids: &[usize]) -> BTreeMap<usize, TrainingTask> {
        ids.iter()
            .map(|&i| {
                (
                    i,
                    TrainingTask {
                        instruction: format!("Q{i}?"),
                        response: format!("A{i}."),
                    },
                )
            })
            .collect()
    }

    #[test]
    fn single_stage_places_the_caption_first_or_last_by_seed() {
        let p = pairs(40);
        let t = tasks(&(0..40).filter(|i| i % 4 != 3).collect::<Vec<_>>());
        let examples = assemble_examples(&p, &t, AssemblyMode::Single, 0).remove(0);
        assert_eq!(examples.len(), 40);
        let (mut first, mut last) = (0, 0);
        for (i, example) in examples.iter().enumerate() {
            assert_eq!(example.images, [format!("img{i}.png")]);
            let contents: Vec<&str> = example
                .messages
                .iter()
                .map(|m| m["content"].as_str().unwrap())
                .collect();
            if i % 4 == 3 {
                assert_eq!(
                    contents,
                    ["<image>\nDescribe the dish.", &format!("Caption {i}.")]
                );
                continue;
            }
            assert_eq!(contents.len(), 4);
            if caption_first(i, 0) {
                first += 1;
                assert_eq!(contents[0], "<image>\nDescribe the dish.");
                assert_eq!(contents[2], format!("Q{i}?"));
            } else {
                last += 1;
                assert_eq!(contents[0], format!("<image>\nQ{i}?"));
                assert_eq!(contents[2], "Describe the dish.");
                assert_eq!(contents[3], format!("Caption {i}."));
            }
        }
        assert!(
            first > 5 && last > 5,
            "placement is not mixed: {first} first, {last} last"
        );
        // Determinism: same seed, same data; another seed moves some captions.
        assert_eq!(
            examples,
            assemble_examples(&p, &t, AssemblyMode::Single, 0).remove(0)
        );
        assert_ne!(
            examples,
            assemble_examples(&p, &t, AssemblyMode::Single, 1).remove(0)
        );
    }

    #[test]
    fn other_modes_split_the_two_kinds() {
        let p = pairs(5);
        let t = tasks(&[1, 3]);
        let two = assemble_examples(&p, &t, AssemblyMode::TwoStage, 0);
        assert_eq!((two[0].len(), two[1].len()), (5, 2));
        assert_eq!(two[1][0].messages[0]["content"], "<image>\nQ1?");
        assert_eq!(
            assemble_examples(&p, &t, AssemblyMode::CaptionOnly, 0)[0],
            two[0]
        );
        assert_eq!(
            assemble_examples(&p, &t, AssemblyMode::SyntheticOnly, 0)[0],
            two[1]
        );
        assert_eq!(
            output_files(Path::new("d/data.json"), AssemblyMode::TwoStage),
            [
                PathBuf::from("d/data_stage1_caption.json"),
                PathBuf::from("d/data_stage2_synthetic.json")
            ]
        );
    }

    #[test]
    fn tasks_are_kept_by_judge_label_or_taken_unjudged() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tasks.jsonl");
        let synth = "Answer with a precise response.\nIs it red?<|im_end|>\n<|im_start|>assistant\nYes<|im_end|>\n<|im_start|>user\nAnswer with an informative response.\nIs it red?<|im_end|>\n<|im_start|>assistant\nThe sauce is bright red, so yes.<|im_end|>\n";
        let lines = [
            json!({"syn_id": 0, "pred": " Yes", "consistency": "yes", "collected_QA": {"Q": "Is it red?", "informative_A": "Red sauce, so yes.", "precise_A": "Yes"}}),
            json!({"syn_id": 1, "pred": " No", "consistency": "no", "collected_QA": {"Q": "Is it red?", "informative_A": "Red.", "precise_A": "No"}}),
            json!({"syn_id": 2, "pred": "Yes", "collected_QA": {"Q": "Hot?", "informative_A": "Steam, so hot.", "precise_A": "Yes"}}),
            json!({"syn_id": 3, "pred": synth}),
            json!({"syn_id": 4, "pred": "no turns here"}),
            json!({"syn_id": 5, "consistency": "yes", "task": {"instruction": "Fill in: a ___ dish", "response": "red"}}),
        ];
        let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
        std::fs::write(&path, text).unwrap();
        let (kept, rows, not_kept) = read_kept_tasks(&path, 0).unwrap();
        assert_eq!((rows, not_kept), (6, 2));
        assert_eq!(kept.keys().copied().collect::<Vec<_>>(), [0, 2, 3, 5]);
        assert_eq!(kept[&0].response, "Red sauce, so yes.");
        assert_eq!(kept[&3].response, "The sauce is bright red, so yes.");
        assert_eq!(kept[&5].response, "red");
        std::fs::write(&path, "{\"syn_id\": 0, \"collected_QA\": {\"Q\": 1}}\n").unwrap();
        let error = read_kept_tasks(&path, 0).unwrap_err().to_string();
        assert!(
            error.contains("line 1") && error.contains("collected_QA.Q"),
            "{error}"
        );
    }
}
