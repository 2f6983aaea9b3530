//! `adamllm synthesize --rules`: the manual-rule baseline. Tasks come from the caption text
//! alone, with no model: yes/no questions about words the caption does or does not use,
//! fill-in-the-blank on a caption sentence, and multiple choice among caption words and
//! words of other captions.
//!
//! One task per pair (the synthesizer also gives at most one), its kind and words drawn with
//! CPython's `Random` from the pair's `syn_id` and the user seed. Rows use the layout of
//! `filtered_task_pairs.jsonl` with a ready `task` and `consistency: "yes"`, so `adamllm
//! assemble --tasks rule_task_pairs.jsonl` swaps them in for the synthesizer's tasks.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::{Value, json};

use super::SynthError;
use super::pairs::CaptionPairs;
use super::synthesize::SKIPPED_FILE;
use super::templates::{TrainingTask, task_seed};
use crate::eval::PythonRandom;
use crate::io::{write_json_atomic, write_jsonl_atomic};

/// Output file of the rule-based baseline.
pub const RULE_TASKS_FILE: &str = "rule_task_pairs.jsonl";

/// Words too common to ask about.
const STOPWORDS: [&str; 48] = [
    "about", "above", "after", "again", "along", "also", "among", "around", "because", "been",
    "before", "being", "below", "between", "both", "each", "from", "have", "having", "here",
    "image", "into", "more", "most", "other", "over", "picture", "seen", "shown", "shows", "some",
    "such", "than", "that", "their", "them", "then", "there", "these", "they", "this", "those",
    "through", "under", "very", "were", "which", "with",
];

/// The kinds of rule-based tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleKind {
    /// "Is there X?" for a caption word → Yes.
    YesPresent,
    /// "Is there X?" for another caption's word → No.
    NoAbsent,
    /// A caption sentence with one word blanked → the word.
    FillBlank,
    /// Four words, one from the caption → its letter and word.
    MultipleChoice,
}

/// Content words of a text: lower-case alphabetic words of 4+ letters, not stopwords, in
/// order of first use.
pub fn content_words(text: &str) -> Vec<String> {
    let mut seen = BTreeSet::new();
    text.split(|c: char| !c.is_alphabetic())
        .map(str::to_lowercase)
        .filter(|w| w.chars().count() >= 4 && !STOPWORDS.contains(&w.as_str()))
        .filter(|w| seen.insert(w.clone()))
        .collect()
}

/// Sentences of a caption (split after `.`, `!`, `?`), trimmed, non-empty.
fn sentences(text: &str) -> Vec<&str> {
    text.split_inclusive(['.', '!', '?'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect()
}

/// Replaces the first whole-word, case-insensitive use of `word` in `sentence` by `___`.
fn blank_out(sentence: &str, word: &str) -> Option<String> {
    let lower = sentence.to_lowercase();
    let mut start = 0;
    while let Some(found) = lower[start..].find(word) {
        let at = start + found;
        let end = at + word.len();
        let before = lower[..at].chars().next_back();
        let after = lower[end..].chars().next();
        let whole =
            !before.is_some_and(char::is_alphabetic) && !after.is_some_and(char::is_alphabetic);
        // Lower-casing can change byte lengths; only blank when the offsets line up.
        if whole && sentence.is_char_boundary(at) && sentence.is_char_boundary(end) {
            return Some(format!("{}___{}", &sentence[..at], &sentence[end..]));
        }
        start = end;
    }
    None
}

/// The rule task of one caption, or `None` when the caption has no usable word.
/// `vocabulary` is every content word of the dataset (distractors come from it).
pub fn rule_task(
    caption: &str,
    vocabulary: &[String],
    syn_id: usize,
    seed: u64,
) -> Option<(RuleKind, TrainingTask)> {
    let mut random = PythonRandom::from_int_seed(task_seed(syn_id, seed));
    let words = content_words(caption);
    if words.is_empty() {
        return None;
    }
    let own: BTreeSet<&str> = words.iter().map(String::as_str).collect();
    let others: Vec<&String> = vocabulary
        .iter()
        .filter(|w| !own.contains(w.as_str()))
        .collect();
    let kinds = [
        RuleKind::YesPresent,
        RuleKind::NoAbsent,
        RuleKind::FillBlank,
        RuleKind::MultipleChoice,
    ];
    let first = random.randbelow(kinds.len() as u64) as usize;
    // Try the drawn kind, then the next ones, until one is possible for this caption.
    for offset in 0..kinds.len() {
        let kind = kinds[(first + offset) % kinds.len()];
        let task = match kind {
            RuleKind::YesPresent => {
                let word = random.choice(&words)?;
                Some(TrainingTask {
                    instruction: format!("Does the image show {word}? Answer yes or no."),
                    response: "Yes".into(),
                })
            }
            RuleKind::NoAbsent => random.choice(&others).map(|word| TrainingTask {
                instruction: format!("Does the image show {word}? Answer yes or no."),
                response: "No".into(),
            }),
            RuleKind::FillBlank => {
                let candidates: Vec<(String, &str)> = sentences(caption)
                    .into_iter()
                    .flat_map(|s| content_words(s).into_iter().map(move |w| (w, s)))
                    .collect();
                random.choice(&candidates).and_then(|(word, sentence)| {
                    Some(TrainingTask {
                        instruction: format!(
                            "Fill in the blank so that the sentence describes the image:\n{}",
                            blank_out(sentence, word)?
                        ),
                        response: word.clone(),
                    })
                })
            }
            RuleKind::MultipleChoice => {
                if others.len() < 3 {
                    None
                } else {
                    let answer = random.choice(&words)?.clone();
                    let mut options = vec![answer.clone()];
                    let mut pool: Vec<&String> = others.clone();
                    random.shuffle(&mut pool);
                    options.extend(pool.into_iter().take(3).cloned());
                    random.shuffle(&mut options);
                    let letters = ["A", "B", "C", "D"];
                    let listed: Vec<String> = options
                        .iter()
                        .zip(letters)
                        .map(|(o, l)| format!("{l}. {o}"))
                        .collect();
                    let at = options.iter().position(|o| *o == answer)?;
                    Some(TrainingTask {
                        instruction: format!(
                            "Which of these appears in the image?\n{}\nAnswer with the option's letter.",
                            listed.join("\n")
                        ),
                        response: format!("{}. {answer}", letters[at]),
                    })
                }
            }
        };
        if let Some(task) = task {
            return Some((kind, task));
        }
    }
    None
}

/// Counts of a rule-based run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RulesSummary {
    /// Rows in the input file.
    pub input_rows: usize,
    /// Tasks written.
    pub tasks: usize,
    /// Usable pairs whose caption gave no task.
    pub without_task: usize,
    /// Rows left out (see `skipped.jsonl`).
    pub skipped: usize,
    /// The output file.
    pub output: PathBuf,
}

/// Writes `rule_task_pairs.jsonl`, `skipped.jsonl` and `rules_summary.json` in `out_dir`.
pub fn run_rules(
    pairs: &CaptionPairs,
    out_dir: &Path,
    seed: u64,
) -> Result<RulesSummary, SynthError> {
    let mut vocabulary: Vec<String> = pairs
        .pairs
        .iter()
        .flat_map(|p| content_words(&p.caption))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    vocabulary.sort();
    let mut rows = Vec::with_capacity(pairs.pairs.len());
    let mut without_task = 0;
    for pair in &pairs.pairs {
        let Some((kind, task)) = rule_task(&pair.caption, &vocabulary, pair.syn_id, seed) else {
            without_task += 1;
            continue;
        };
        let mut row = pair.row.clone();
        row.insert("syn_id".into(), json!(pair.syn_id));
        row.insert("pred".into(), Value::Null);
        row.insert("consistency".into(), json!("yes"));
        row.insert("source".into(), json!("rules"));
        row.insert("rule".into(), json!(kind));
        row.insert("task".into(), json!(task));
        rows.push(row);
    }
    if rows.is_empty() {
        return Err(SynthError::Invalid(
            "no caption gave a rule-based task (captions need words of 4+ letters)".into(),
        ));
    }
    std::fs::create_dir_all(out_dir).map_err(|e| crate::io::FileError::io(out_dir, e))?;
    let output = out_dir.join(RULE_TASKS_FILE);
    write_jsonl_atomic(&output, &rows)?;
    write_jsonl_atomic(&out_dir.join(SKIPPED_FILE), &pairs.skipped)?;
    let summary = RulesSummary {
        input_rows: pairs.total_rows,
        tasks: rows.len(),
        without_task,
        skipped: pairs.skipped.len(),
        output,
    };
    write_json_atomic(&out_dir.join("rules_summary.json"), &summary)?;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_words_skip_short_and_common_words() {
        assert_eq!(
            content_words("The image shows three round nuclei, with pink Cytoplasm around nuclei."),
            ["three", "round", "nuclei", "pink", "cytoplasm"]
        );
        assert_eq!(
            blank_out("Three round nuclei.", "round").unwrap(),
            "Three ___ nuclei."
        );
        assert_eq!(blank_out("Groundwork.", "round"), None);
    }

    /// The word a yes/no task asks about ("Does the image show WORD? ...").
    fn asked(task: &TrainingTask) -> &str {
        let word = task.instruction.split(' ').nth(4).unwrap();
        word.trim_end_matches('?')
    }

    #[test]
    fn every_kind_is_well_formed_and_seeded() {
        let vocabulary: Vec<String> = ["basil", "tomato", "noodle", "salmon", "pepper", "nuclei"]
            .map(String::from)
            .to_vec();
        let caption = "A plate of noodle soup. Fresh basil leaves float on top.";
        let mut kinds = BTreeSet::new();
        for id in 0..60 {
            let (kind, task) = rule_task(caption, &vocabulary, id, 0).unwrap();
            assert_eq!(rule_task(caption, &vocabulary, id, 0).unwrap().1, task);
            kinds.insert(format!("{kind:?}"));
            match kind {
                RuleKind::YesPresent => {
                    assert_eq!(task.response, "Yes");
                    assert!(caption.to_lowercase().contains(asked(&task)), "{task:?}");
                }
                RuleKind::NoAbsent => {
                    assert_eq!(task.response, "No");
                    assert!(!caption.to_lowercase().contains(asked(&task)), "{task:?}");
                }
                RuleKind::FillBlank => {
                    let sentence = task.instruction.lines().nth(1).unwrap();
                    let filled = sentence.replacen("___", &task.response, 1);
                    assert!(
                        caption.to_lowercase().contains(&filled.to_lowercase()),
                        "{task:?}"
                    );
                }
                RuleKind::MultipleChoice => {
                    let (letter, word) = task.response.split_once(". ").unwrap();
                    assert!(
                        task.instruction.contains(&format!("{letter}. {word}\n")),
                        "{task:?}"
                    );
                    assert!(caption.to_lowercase().contains(word), "{task:?}");
                    assert_eq!(task.instruction.matches("\n").count(), 5, "{task:?}");
                }
            }
        }
        assert_eq!(kinds.len(), 4, "{kinds:?}");
        assert!(rule_task("A b c.", &vocabulary, 0, 0).is_none());
    }
}
