//! Class vocabularies of the food benchmarks and the LLaVA-Med contraction table.
//!
//! These are dataset facts, embedded at compile time from `core/assets/vocab/`:
//!
//! * `food101_classes.txt`: the 101 Food-101 classes, one per line; the line index is the
//!   class label and the option text is the name with `_` replaced by a space.
//! * `foodseg103_classes.tsv`: `id<TAB>name` for FoodSeg103 ids 0..=103; ids 0
//!   (background) and 103 (other ingredients) are not scored, leaving 1..=102.
//! * `nutrition5k_ingredients.txt`: the 555 Nutrition5K ingredients; the line index is the
//!   id. Some names repeat (`deprecated` appears four times).
//! * `llava_med_contractions.tsv`: `word<TAB>contraction` pairs used by LLaVA-Med's answer
//!   normalization.

use std::collections::HashMap;
use std::sync::LazyLock;

const FOOD101_CLASSES: &str = include_str!("../../assets/vocab/food101_classes.txt");
const FOODSEG103_CLASSES: &str = include_str!("../../assets/vocab/foodseg103_classes.tsv");
const NUTRITION5K_INGREDIENTS: &str =
    include_str!("../../assets/vocab/nutrition5k_ingredients.txt");
const LLAVA_MED_CONTRACTIONS: &str = include_str!("../../assets/vocab/llava_med_contractions.tsv");

/// FoodSeg103 ids that are not scored: 0 (background) and 103 (other ingredients).
const FOODSEG103_UNSCORED_IDS: [u32; 2] = [0, 103];

/// One class of a vocabulary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VocabularyEntry {
    /// Class id (the label value the benchmark uses).
    pub id: u32,
    /// Class name as the benchmark writes it.
    pub name: String,
}

/// An ordered class vocabulary: entries in id order plus a name-to-id lookup.
#[derive(Clone, Debug)]
pub struct Vocabulary {
    entries: Vec<VocabularyEntry>,
    id_by_name: HashMap<String, u32>,
}

impl Vocabulary {
    fn from_entries(entries: Vec<VocabularyEntry>) -> Self {
        // Later entries overwrite earlier ones, like inverting a Python dict: a repeated
        // name maps to its last id.
        let id_by_name = entries
            .iter()
            .map(|entry| (entry.name.clone(), entry.id))
            .collect();
        Self {
            entries,
            id_by_name,
        }
    }

    /// All entries in id order.
    pub fn entries(&self) -> &[VocabularyEntry] {
        &self.entries
    }

    /// Number of classes.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the vocabulary has no classes.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The id a label name maps to (exact, case-sensitive); a repeated name gives its last
    /// id.
    pub fn id_of(&self, name: &str) -> Option<u32> {
        self.id_by_name.get(name).copied()
    }

    /// The name of class `id`.
    pub fn name_of(&self, id: u32) -> Option<&str> {
        self.entries
            .iter()
            .find(|entry| entry.id == id)
            .map(|entry| entry.name.as_str())
    }

    /// Smallest and largest id, or `None` for an empty vocabulary.
    pub fn id_bounds(&self) -> Option<(u32, u32)> {
        let first = self.entries.first()?.id;
        let last = self.entries.last()?.id;
        Some((first, last))
    }
}

fn non_empty_lines(text: &str) -> impl Iterator<Item = &str> {
    text.lines()
        .map(|line| line.trim_end_matches('\r'))
        .filter(|line| !line.is_empty())
}

fn numbered_lines(text: &str) -> Vec<VocabularyEntry> {
    non_empty_lines(text)
        .zip(0_u32..)
        .map(|(name, id)| VocabularyEntry {
            id,
            name: name.to_owned(),
        })
        .collect()
}

static FOOD101: LazyLock<Vocabulary> = LazyLock::new(|| {
    let mut entries = numbered_lines(FOOD101_CLASSES);
    for entry in &mut entries {
        entry.name = entry.name.replace('_', " ");
    }
    Vocabulary::from_entries(entries)
});

static FOODSEG103: LazyLock<Vocabulary> = LazyLock::new(|| {
    let entries = non_empty_lines(FOODSEG103_CLASSES)
        .filter_map(|line| {
            let (id, name) = line.split_once('\t')?;
            let id = id.trim().parse::<u32>().ok()?;
            Some(VocabularyEntry {
                id,
                name: name.to_owned(),
            })
        })
        .filter(|entry| !FOODSEG103_UNSCORED_IDS.contains(&entry.id))
        .collect();
    Vocabulary::from_entries(entries)
});

static NUTRITION5K: LazyLock<Vocabulary> =
    LazyLock::new(|| Vocabulary::from_entries(numbered_lines(NUTRITION5K_INGREDIENTS)));

static CONTRACTIONS: LazyLock<HashMap<String, String>> = LazyLock::new(|| {
    non_empty_lines(LLAVA_MED_CONTRACTIONS)
        .filter_map(|line| line.split_once('\t'))
        .map(|(word, contraction)| (word.to_owned(), contraction.to_owned()))
        .collect()
});

/// Food-101: ids 0..=100, names with spaces (`"apple pie"`).
pub fn food101() -> &'static Vocabulary {
    &FOOD101
}

/// FoodSeg103 scored classes: ids 1..=102.
pub fn foodseg103() -> &'static Vocabulary {
    &FOODSEG103
}

/// Nutrition5K ingredients: ids 0..=554.
pub fn nutrition5k() -> &'static Vocabulary {
    &NUTRITION5K
}

/// LLaVA-Med's contraction table (`"dont"` → `"don't"`). Keys are as published, a few with
/// capitals (`"Im"`), which never match the lower-cased words they are applied to.
pub fn llava_med_contractions() -> &'static HashMap<String, String> {
    &CONTRACTIONS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn food101_has_101_classes_with_spaces() {
        let vocab = food101();
        assert_eq!(vocab.len(), 101);
        assert_eq!(vocab.id_bounds(), Some((0, 100)));
        assert_eq!(vocab.name_of(0), Some("apple pie"));
        assert_eq!(vocab.id_of("deviled eggs"), Some(30));
        assert_eq!(vocab.id_of("deviled_eggs"), None);
    }

    #[test]
    fn foodseg103_scores_ids_1_to_102() {
        let vocab = foodseg103();
        assert_eq!(vocab.len(), 102);
        assert_eq!(vocab.id_bounds(), Some((1, 102)));
        assert_eq!(vocab.name_of(1), Some("candy"));
        assert_eq!(vocab.name_of(96), Some("French beans"));
        assert_eq!(vocab.id_of("background"), None);
        assert_eq!(vocab.id_of("other ingredients"), None);
    }

    #[test]
    fn nutrition5k_repeated_name_maps_to_last_id() {
        let vocab = nutrition5k();
        assert_eq!(vocab.len(), 555);
        assert_eq!(vocab.id_bounds(), Some((0, 554)));
        assert_eq!(vocab.name_of(0), Some("cottage cheese"));
        assert_eq!(vocab.id_of("deprecated"), Some(469));
    }

    #[test]
    fn contractions_table_is_complete() {
        let table = llava_med_contractions();
        assert_eq!(table.len(), 120);
        assert_eq!(table.get("dont").map(String::as_str), Some("don't"));
        assert_eq!(table.get("Im").map(String::as_str), Some("I'm"));
    }
}
