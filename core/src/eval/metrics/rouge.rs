//! ROUGE-L F-measure exactly as PyPI `rouge` 1.0.1 computes `rouge-l` `f` (the Recipe1M
//! metric), quirks included.
//!
//! * Text is split into sentences on `.`; empty pieces are dropped *before* whitespace is
//!   collapsed, so a piece made only of spaces survives as an empty sentence whose single
//!   word is the empty string. Sentences are split into words on single spaces after
//!   collapsing whitespace (Python's definition of whitespace).
//! * No sentences on either side is an error (the package raises; the scorer gives 0).
//! * The score is summary-level: for every reference sentence and every hypothesis
//!   sentence, one longest common subsequence is reconstructed (walking back through the
//!   DP table, going up only when the cell above is strictly larger than the cell to the
//!   left). The *words* of all reconstructed subsequences are collected into one set; its
//!   size is `llcs`. `m` and `n` are the numbers of distinct words of the reference and the
//!   hypothesis. `r = llcs / m`, `p = llcs / n`, `f = 2·(p·r) / (p + r + 1e-8)`.
//! * The package reconstructs recursively, one Python frame per step, so a walk longer
//!   than the interpreter's recursion budget raises `RecursionError` (and the scorer gives
//!   0). [`RECON_FRAME_BUDGET`] reproduces that limit for the reference harness.

use std::collections::HashSet;

use super::super::python_text::split_python_whitespace;

/// CPython's default recursion limit.
pub const CPYTHON_RECURSION_LIMIT: usize = 1000;

/// Python frames on the stack when the package's recursive `_recon` is first entered from
/// the reference harness: the harness's five (module, `evaluate`, its list comprehension,
/// `evaluate_entry`, `metric.rouge`) and the package's six (`get_scores`, `_get_scores`,
/// the metric lambda, `rouge_l_summary_level`, `_union_lcs`, `_recon_lcs`).
pub const REFERENCE_FRAMES_BEFORE_RECON: usize = 11;

/// Nested `_recon` frames the reference can afford: a reconstruction walk of `s` steps uses
/// `s + 1` frames, and more than this raises `RecursionError`.
pub const RECON_FRAME_BUDGET: usize = CPYTHON_RECURSION_LIMIT - REFERENCE_FRAMES_BEFORE_RECON;

/// Largest DP table (cells) built for one sentence pair; beyond it the pair is refused
/// rather than allocating without bound. The reference would need tens of gigabytes of
/// Python dict for such a pair.
pub const MAX_LCS_TABLE_CELLS: usize = 1 << 25;

/// Why the package would raise (or we refuse) instead of returning a score.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RougeError {
    /// The hypothesis has no sentences (`"Hypothesis is empty."`).
    #[error("the hypothesis has no sentences")]
    EmptyHypothesis,
    /// The reference has no sentences (`"Reference is empty."`).
    #[error("the reference has no sentences")]
    EmptyReference,
    /// The LCS reconstruction would exceed CPython's recursion limit.
    #[error("LCS reconstruction needs {frames} nested calls, over the budget of {budget}")]
    RecursionLimit {
        /// Frames the walk would use.
        frames: usize,
        /// The budget it exceeds.
        budget: usize,
    },
    /// A sentence pair too long to score (see [`MAX_LCS_TABLE_CELLS`]).
    #[error("sentence pair too long: its LCS table would have {cells} cells")]
    TooLong {
        /// Cells the table would need.
        cells: usize,
    },
}

/// Summary-level ROUGE-L scores, each in `0..=1` (F slightly below 1 for identical texts,
/// because of the `1e-8` smoothing term).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RougeL {
    /// Shared words over distinct hypothesis words.
    pub precision: f64,
    /// Shared words over distinct reference words.
    pub recall: f64,
    /// `2·(p·r)/(p + r + 1e-8)`.
    pub f: f64,
}

/// ROUGE-L of `hypothesis` (the prediction) against `reference` (the label), with the
/// reference harness's recursion limit ([`RECON_FRAME_BUDGET`]).
pub fn rouge_l(hypothesis: &str, reference: &str) -> Result<RougeL, RougeError> {
    rouge_l_with_frame_budget(hypothesis, reference, Some(RECON_FRAME_BUDGET))
}

/// ROUGE-L with an explicit recursion budget in `_recon` frames; `None` scores any length
/// (as the package would with an unlimited stack).
pub fn rouge_l_with_frame_budget(
    hypothesis: &str,
    reference: &str,
    frame_budget: Option<usize>,
) -> Result<RougeL, RougeError> {
    let hypothesis_sentences = sentences(hypothesis);
    let reference_sentences = sentences(reference);
    if hypothesis_sentences.is_empty() {
        return Err(RougeError::EmptyHypothesis);
    }
    if reference_sentences.is_empty() {
        return Err(RougeError::EmptyReference);
    }

    let hypothesis_words: Vec<Vec<&str>> = hypothesis_sentences.iter().map(|s| words(s)).collect();
    let reference_words: Vec<Vec<&str>> = reference_sentences.iter().map(|s| words(s)).collect();
    let distinct_reference = distinct_count(&reference_words);
    let distinct_hypothesis = distinct_count(&hypothesis_words);

    let mut table = Vec::new();
    let mut union: HashSet<&str> = HashSet::new();
    for reference_sentence in &reference_words {
        for hypothesis_sentence in &hypothesis_words {
            let subsequence = reconstruct_lcs(
                reference_sentence,
                hypothesis_sentence,
                frame_budget,
                &mut table,
            )?;
            union.extend(subsequence);
        }
    }

    let shared = union.len() as f64;
    let recall = shared / distinct_reference as f64;
    let precision = shared / distinct_hypothesis as f64;
    let f = 2.0 * ((precision * recall) / (precision + recall + 1e-8));
    Ok(RougeL {
        precision,
        recall,
        f,
    })
}

/// Sentences: pieces between periods, non-empty before whitespace is collapsed.
fn sentences(text: &str) -> Vec<String> {
    text.split('.')
        .filter(|piece| !piece.is_empty())
        .map(|piece| split_python_whitespace(piece).collect::<Vec<_>>().join(" "))
        .collect()
}

/// Words of a collapsed sentence: split on single spaces (an empty sentence is one empty
/// word).
fn words(sentence: &str) -> Vec<&str> {
    sentence.split(' ').collect()
}

fn distinct_count(sentences: &[Vec<&str>]) -> usize {
    sentences.iter().flatten().collect::<HashSet<_>>().len()
}

/// One LCS of `x` (reference words) and `y` (hypothesis words), reconstructed the way the
/// package does, as the list of its words.
fn reconstruct_lcs<'a>(
    x: &[&'a str],
    y: &[&str],
    frame_budget: Option<usize>,
    table: &mut Vec<u32>,
) -> Result<Vec<&'a str>, RougeError> {
    let (rows, columns) = (x.len(), y.len());
    if let Some(budget) = frame_budget {
        // Every step lowers i or j or both, and the walk ends when either reaches 0: it
        // takes at least min(rows, columns) steps.
        let fewest_frames = rows.min(columns) + 1;
        if fewest_frames > budget {
            return Err(RougeError::RecursionLimit {
                frames: fewest_frames,
                budget,
            });
        }
    }
    let width = columns + 1;
    let cells = (rows + 1).saturating_mul(width);
    if cells > MAX_LCS_TABLE_CELLS {
        return Err(RougeError::TooLong { cells });
    }

    table.clear();
    table.resize(cells, 0);
    for i in 1..=rows {
        for j in 1..=columns {
            table[i * width + j] = if x[i - 1] == y[j - 1] {
                table[(i - 1) * width + j - 1] + 1
            } else {
                table[(i - 1) * width + j].max(table[i * width + j - 1])
            };
        }
    }

    let mut subsequence = Vec::new();
    let (mut i, mut j) = (rows, columns);
    let mut frames = 1_usize;
    while i > 0 && j > 0 {
        if x[i - 1] == y[j - 1] {
            subsequence.push(x[i - 1]);
            i -= 1;
            j -= 1;
        } else if table[(i - 1) * width + j] > table[i * width + j - 1] {
            i -= 1;
        } else {
            j -= 1;
        }
        frames += 1;
    }
    if let Some(budget) = frame_budget
        && frames > budget
    {
        return Err(RougeError::RecursionLimit { frames, budget });
    }
    subsequence.reverse();
    Ok(subsequence)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Vectors from `core/tests/gen_rouge_vectors.py` (PyPI `rouge` 1.0.1).
    const VECTORS: &str = include_str!("../../../../tests/data/rouge_l_vectors.json");

    #[test]
    fn matches_pypi_rouge_vectors() {
        let document: serde_json::Value = serde_json::from_str(VECTORS).unwrap();
        let vectors = document["vectors"].as_array().unwrap();
        assert!(vectors.len() > 300);
        for (index, vector) in vectors.iter().enumerate() {
            let hypothesis = vector["hyp"].as_str().unwrap();
            let reference = vector["ref"].as_str().unwrap();
            let ours = rouge_l(hypothesis, reference);
            match vector["f"].as_f64() {
                None => assert!(
                    ours.is_err(),
                    "vector {index}: expected an error, got {ours:?}"
                ),
                Some(f) => {
                    let ours = ours.unwrap_or_else(|e| panic!("vector {index}: {e}"));
                    let p = vector["p"].as_f64().unwrap();
                    let r = vector["r"].as_f64().unwrap();
                    assert!(
                        (ours.f - f).abs() <= 1e-12,
                        "vector {index}: f {} vs {f}",
                        ours.f
                    );
                    assert!((ours.precision - p).abs() <= 1e-12, "vector {index}: p");
                    assert!((ours.recall - r).abs() <= 1e-12, "vector {index}: r");
                }
            }
        }
    }

    #[test]
    fn empty_sides_are_errors() {
        assert_eq!(rouge_l("", "a"), Err(RougeError::EmptyHypothesis));
        assert_eq!(rouge_l("a", "..."), Err(RougeError::EmptyReference));
        // A piece of spaces is a sentence with one empty word: a score, not an error.
        assert_eq!(rouge_l(" ", "a").map(|s| s.f), Ok(0.0));
    }

    #[test]
    fn recursion_budget_boundary() {
        let reference = "r0 r1 r2 r3 r4";
        let fits = (0..988)
            .map(|i| format!("h{i}"))
            .collect::<Vec<_>>()
            .join(" ");
        let too_long = (0..989)
            .map(|i| format!("h{i}"))
            .collect::<Vec<_>>()
            .join(" ");
        assert!(rouge_l(&fits, reference).is_ok());
        assert!(matches!(
            rouge_l(&too_long, reference),
            Err(RougeError::RecursionLimit { .. })
        ));
        assert!(rouge_l_with_frame_budget(&too_long, reference, None).is_ok());
    }

    #[test]
    fn identical_texts_score_just_below_one() {
        let score = rouge_l("the cat sat", "the cat sat").unwrap();
        assert_eq!(score.f, 2.0 * (1.0 / (2.0 + 1e-8)));
    }
}
