//! Multi-label ingredient recognition (FoodSeg103, Nutrition5K): parsing class names out
//! of a free-text response, and F1 / recall over binary class vectors.
//!
//! Parsing lower-cases the response, then walks the vocabulary by name length, longest
//! first (equal lengths keep id order); when a name (lower-cased) occurs in what is left
//! of the response, its id is recorded and every occurrence of the name is deleted, so
//! "egg tart" is not also read as "egg".
//!
//! Scores follow scikit-learn with `zero_division=1`: a ratio whose denominator is zero
//! counts as 1, so an empty label set with an empty prediction scores a perfect 1.

use std::cmp::Reverse;
use std::collections::BTreeSet;

use super::super::python_text::{python_len, python_lower};
use super::super::vocab::Vocabulary;

/// Class ids named in `response`, in the order they were found (not sorted).
pub fn parse_class_mentions(response: &str, vocabulary: &Vocabulary) -> Vec<u32> {
    let mut by_length: Vec<_> = vocabulary.entries().iter().collect();
    // The sort is stable: equal lengths keep id order, as Python's sorted(reverse=True).
    by_length.sort_by_key(|entry| Reverse(python_len(&entry.name)));

    let mut remaining = python_lower(response);
    let mut found = Vec::new();
    for entry in by_length {
        let name = python_lower(&entry.name);
        if remaining.contains(name.as_str()) {
            found.push(entry.id);
            if !name.is_empty() {
                remaining = remaining.replace(name.as_str(), "");
            }
        }
    }
    found
}

/// Confusion counts of two id sets over the inclusive id range `first..=last`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LabelConfusion {
    /// Ids in both sets.
    pub true_positives: usize,
    /// Predicted ids not in the label set.
    pub false_positives: usize,
    /// Label ids not predicted.
    pub false_negatives: usize,
}

impl LabelConfusion {
    /// Counts over `first..=last`; ids outside the range are ignored, as the binary vectors
    /// of the reference cannot hold them. Duplicates count once.
    pub fn between(labels: &[u32], predictions: &[u32], first: u32, last: u32) -> Self {
        let in_range = |ids: &[u32]| -> BTreeSet<u32> {
            ids.iter()
                .copied()
                .filter(|id| (first..=last).contains(id))
                .collect()
        };
        let labels = in_range(labels);
        let predictions = in_range(predictions);
        let true_positives = labels.intersection(&predictions).count();
        Self {
            true_positives,
            false_positives: predictions.len() - true_positives,
            false_negatives: labels.len() - true_positives,
        }
    }

    /// F1 in `0..=1` (scikit-learn `f1_score`, `zero_division=1`):
    /// `2·tp / (2·tp + fp + fn)`, 1 when nothing is labelled or predicted.
    pub fn f1(&self) -> f64 {
        let numerator = 2 * self.true_positives;
        let denominator = numerator + self.false_positives + self.false_negatives;
        if denominator == 0 {
            1.0
        } else {
            numerator as f64 / denominator as f64
        }
    }

    /// Recall in `0..=1` (scikit-learn `recall_score`, `zero_division=1`):
    /// `tp / (tp + fn)`, 1 when nothing is labelled.
    pub fn recall(&self) -> f64 {
        let denominator = self.true_positives + self.false_negatives;
        if denominator == 0 {
            1.0
        } else {
            self.true_positives as f64 / denominator as f64
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::super::vocab::{foodseg103, nutrition5k};
    use super::*;

    fn sorted(mut ids: Vec<u32>) -> Vec<u32> {
        ids.sort_unstable();
        ids
    }

    #[test]
    fn longer_names_are_taken_first_and_removed() {
        let vocab = foodseg103();
        // "king oyster mushroom" must not also count as "oyster mushroom".
        let ids = parse_class_mentions("King Oyster Mushroom and tea", vocab);
        let names: Vec<&str> = ids.iter().filter_map(|&id| vocab.name_of(id)).collect();
        assert_eq!(names, ["king oyster mushroom", "tea"]);
    }

    #[test]
    fn repeated_vocabulary_name_is_found_under_its_first_id() {
        let vocab = nutrition5k();
        let ids = parse_class_mentions("deprecated", vocab);
        assert_eq!(ids, [230]);
        // ...while a label "deprecated" maps to the last id, so the two never agree.
        assert_eq!(vocab.id_of("deprecated"), Some(469));
    }

    #[test]
    fn nothing_found_in_empty_response() {
        assert!(parse_class_mentions("", foodseg103()).is_empty());
        assert_eq!(
            sorted(parse_class_mentions("PORK, GARLIC", foodseg103())),
            [47, 71]
        );
    }

    #[test]
    fn zero_division_counts_as_one() {
        let empty = LabelConfusion::between(&[], &[], 1, 102);
        assert_eq!(empty.f1(), 1.0);
        assert_eq!(empty.recall(), 1.0);
        let nothing_predicted = LabelConfusion::between(&[5], &[], 1, 102);
        assert_eq!(nothing_predicted.f1(), 0.0);
        assert_eq!(nothing_predicted.recall(), 0.0);
        let nothing_labelled = LabelConfusion::between(&[], &[5], 1, 102);
        assert_eq!(nothing_labelled.f1(), 0.0);
        assert_eq!(nothing_labelled.recall(), 1.0);
    }

    #[test]
    fn f1_and_recall_values() {
        let confusion = LabelConfusion::between(&[11], &[11, 44], 1, 102);
        assert_eq!(confusion.f1(), 2.0 / 3.0);
        assert_eq!(confusion.recall(), 1.0);
        // Out-of-range ids are invisible.
        let confusion = LabelConfusion::between(&[0, 7], &[0, 7, 103], 1, 102);
        assert_eq!(confusion.f1(), 1.0);
    }
}
