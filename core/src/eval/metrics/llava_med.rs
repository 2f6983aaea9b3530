//! LLaVA-Med scoring of open and closed (yes/no) answers, as used by VQA_RAD, SLAKE and
//! PathVQA.
//!
//! Both answers are lower-cased and normalized with [`normalize_llava_med_answer`] first
//! ([`normalize_for_scoring`]).
//!
//! * Closed questions: a hit when the prediction contains `"yes"` or `"no"` as a plain
//!   substring and contains the whole reference as a substring (so `"normal"` answers
//!   `"no"`).
//! * Open questions: both strings are normalized a second time and counted as unigrams.
//!   With prediction counts `C` and reference counts `R`, `tp = Σ C[w]` over words in both
//!   and `fn = Σ R[w]` over reference words missing from the prediction;
//!   `recall = tp / (tp + fn)`, and 0 when either side has no words or `tp == 0`.

use std::collections::HashMap;

use super::super::normalize::normalize_llava_med_answer;
use super::super::python_text::{python_lower, split_python_whitespace};

/// Unigram overlap of a prediction with a reference (LLaVA-Med `calculate_f1score`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TokenOverlap {
    /// `tp / (tp + fp)`.
    pub precision: f64,
    /// `tp / (tp + fn)`; the open-question score.
    pub recall: f64,
    /// Harmonic mean of precision and recall.
    pub f1: f64,
}

impl TokenOverlap {
    const ZERO: Self = Self {
        precision: 0.0,
        recall: 0.0,
        f1: 0.0,
    };
}

/// Lower-cases and normalizes an answer, the first step for both question kinds.
pub fn normalize_for_scoring(answer: &str) -> String {
    normalize_llava_med_answer(&python_lower(answer))
}

/// Whether a closed (yes/no) prediction counts as a hit. Both arguments must already be
/// [`normalize_for_scoring`]-ed.
pub fn closed_answer_hit(normalized_prediction: &str, normalized_reference: &str) -> bool {
    let says_yes_or_no =
        normalized_prediction.contains("yes") || normalized_prediction.contains("no");
    says_yes_or_no && normalized_prediction.contains(normalized_reference)
}

/// Unigram overlap of an open answer. Both arguments must already be
/// [`normalize_for_scoring`]-ed; they are normalized once more here, as the reference does.
pub fn open_answer_overlap(
    normalized_prediction: &str,
    normalized_reference: &str,
) -> TokenOverlap {
    let prediction = word_counts(&normalize_llava_med_answer(normalized_prediction));
    let reference = word_counts(&normalize_llava_med_answer(normalized_reference));
    if prediction.is_empty() || reference.is_empty() {
        return TokenOverlap::ZERO;
    }

    let mut true_positives = 0_usize;
    let mut false_positives = 0_usize;
    for (word, &count) in &prediction {
        if reference.contains_key(word) {
            true_positives += count;
        } else {
            false_positives += count;
        }
    }
    let false_negatives: usize = reference
        .iter()
        .filter(|(word, _)| !prediction.contains_key(*word))
        .map(|(_, &count)| count)
        .sum();
    if true_positives == 0 {
        return TokenOverlap::ZERO;
    }

    let tp = true_positives as f64;
    let precision = tp / (tp + false_positives as f64);
    let recall = tp / (tp + false_negatives as f64);
    TokenOverlap {
        precision,
        recall,
        f1: 2.0 * precision * recall / (precision + recall),
    }
}

/// Lower-cased whitespace-split unigram counts (LLaVA-Med `split_sentence(text, 1)`).
fn word_counts(text: &str) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for word in split_python_whitespace(&python_lower(text)) {
        *counts.entry(word.to_owned()).or_insert(0) += 1;
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn closed(prediction: &str, reference: &str) -> bool {
        closed_answer_hit(
            &normalize_for_scoring(prediction),
            &normalize_for_scoring(reference),
        )
    }

    fn open_recall(prediction: &str, reference: &str) -> f64 {
        open_answer_overlap(
            &normalize_for_scoring(prediction),
            &normalize_for_scoring(reference),
        )
        .recall
    }

    #[test]
    fn closed_answers_use_plain_substrings() {
        assert!(closed("Yes, definitely.", "yes"));
        assert!(closed("normal", "no")); // "normal" contains "no"
        assert!(closed("unknown", "no")); // so does "unknown"
        assert!(!closed("The answer is yes", "no"));
        assert!(!closed("", "yes"));
        assert!(!closed("n/a", "no"));
        assert!(closed("no", "")); // the empty reference is in every string
    }

    #[test]
    fn open_answers_count_prediction_repeats() {
        assert_eq!(open_recall("the left lung, left lung", "left lung"), 1.0);
        // tp counts prediction occurrences: three "x" against reference "x y" (fn = 1).
        assert_eq!(open_recall("x x x", "x y"), 0.75);
        assert_eq!(open_recall("", "liver"), 0.0);
        assert_eq!(open_recall("anything", ""), 0.0);
        assert_eq!(open_recall("kidney", "liver"), 0.0);
    }

    #[test]
    fn open_overlap_reports_precision_and_f1() {
        let overlap = open_answer_overlap("left lung mass", "left lung");
        assert_eq!(overlap.recall, 1.0);
        assert_eq!(overlap.precision, 2.0 / 3.0);
        assert!((overlap.f1 - 0.8).abs() < 1e-12);
    }
}
