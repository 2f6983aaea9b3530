//! Multiple-choice answer parsing (MMMU style), as used by PMC-VQA and Food101.
//!
//! 1. The characters `, . ! ? ; : '` are stripped from both ends of the response, one
//!    character after another in that order, and the result is padded with one space on
//!    each side.
//! 2. Candidates are the choices `c` for which `(c)` occurs in the response; if none, those
//!    for which ` c ` occurs; if still none and the padded response is longer than five
//!    characters, those whose option text, lower-cased, occurs in the lower-cased response.
//! 3. Without candidates the answer is drawn with `random.Random(seed).choice(choices)`
//!    (see [`PythonRandom`]).
//! 4. With several candidates the one whose last occurrence (of `(c)`, ` c ` or the option
//!    text, by the kind of match) starts latest wins; ties go to the earlier candidate.

use super::super::python_random::PythonRandom;
use super::super::python_text::{python_len, python_lower};

/// Characters stripped from both ends of a response, in stripping order.
const STRIPPED_END_CHARACTERS: [char; 7] = [',', '.', '!', '?', ';', ':', '\''];

/// A padded response must be longer than this many characters for option texts to be
/// searched.
const MIN_LENGTH_FOR_OPTION_TEXT_MATCH: usize = 5;

/// One answer option.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChoiceOption<'a> {
    /// The choice as the model is asked to name it (`"A"`, or `"17"` for Food101).
    pub choice: &'a str,
    /// The option's text (`"Left lung"`, `"apple pie"`).
    pub text: &'a str,
}

/// How the parsed choice was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChoiceMatch {
    /// `(c)` occurs in the response.
    Parenthesized,
    /// ` c ` occurs in the padded response.
    SpaceDelimited,
    /// The option text occurs in the response (case-insensitive).
    OptionText,
    /// Nothing matched; the choice was drawn at random from the seed.
    Random,
}

/// The parsed answer: the index of the chosen option and how it was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParsedChoice {
    /// Index into the options slice.
    pub index: usize,
    /// How the choice was found.
    pub matched_by: ChoiceMatch,
}

impl ParsedChoice {
    /// Whether the choice was drawn at random (the reference's `random_selected`).
    pub fn random_selected(&self) -> bool {
        self.matched_by == ChoiceMatch::Random
    }
}

/// Parses a model response against `options` (see the module docs); `seed` is the row's
/// `syn_id`. Returns `None` only when `options` is empty.
pub fn parse_multiple_choice(
    response: &str,
    options: &[ChoiceOption<'_>],
    seed: i128,
) -> Option<ParsedChoice> {
    if options.is_empty() {
        return None;
    }
    let mut stripped = response;
    for character in STRIPPED_END_CHARACTERS {
        stripped = stripped.trim_matches(character);
    }
    let padded = format!(" {stripped} ");

    let parenthesized: Vec<String> = options.iter().map(|o| format!("({})", o.choice)).collect();
    let mut candidates = matching_indices(&padded, &parenthesized);
    let mut matched_by = ChoiceMatch::Parenthesized;
    let mut haystack = padded.clone();
    let mut needles = parenthesized;

    if candidates.is_empty() {
        needles = options.iter().map(|o| format!(" {} ", o.choice)).collect();
        candidates = matching_indices(&padded, &needles);
        matched_by = ChoiceMatch::SpaceDelimited;
    }
    if candidates.is_empty() && python_len(&padded) > MIN_LENGTH_FOR_OPTION_TEXT_MATCH {
        haystack = python_lower(&padded);
        needles = options.iter().map(|o| python_lower(o.text)).collect();
        candidates = matching_indices(&haystack, &needles);
        matched_by = ChoiceMatch::OptionText;
    }

    let index = match candidates.as_slice() {
        [] => {
            let indices: Vec<usize> = (0..options.len()).collect();
            let drawn = PythonRandom::from_int_seed(seed)
                .choice(&indices)
                .copied()?;
            return Some(ParsedChoice {
                index: drawn,
                matched_by: ChoiceMatch::Random,
            });
        }
        [only] => *only,
        several => latest_occurrence(&haystack, &needles, several)?,
    };
    Some(ParsedChoice { index, matched_by })
}

/// Indices of the needles that occur in `haystack`, in order.
fn matching_indices(haystack: &str, needles: &[String]) -> Vec<usize> {
    needles
        .iter()
        .enumerate()
        .filter(|(_, needle)| haystack.contains(needle.as_str()))
        .map(|(index, _)| index)
        .collect()
}

/// The candidate whose needle's last occurrence starts latest; the first such candidate on
/// ties (`numpy.argmax`). Byte offsets order occurrences the same way Python's code-point
/// offsets do.
fn latest_occurrence(haystack: &str, needles: &[String], candidates: &[usize]) -> Option<usize> {
    let mut best: Option<(usize, usize)> = None;
    for &candidate in candidates {
        let needle = needles.get(candidate)?;
        let start = haystack.rfind(needle.as_str())?;
        if best.is_none_or(|(_, best_start)| start > best_start) {
            best = Some((candidate, start));
        }
    }
    best.map(|(candidate, _)| candidate)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LETTERS: [&str; 4] = ["A", "B", "C", "D"];

    fn options<'a>(texts: &'a [&'a str; 4]) -> Vec<ChoiceOption<'a>> {
        LETTERS
            .iter()
            .zip(texts)
            .map(|(choice, text)| ChoiceOption { choice, text })
            .collect()
    }

    fn parse(response: &str, texts: &[&str; 4], seed: i128) -> (&'static str, bool) {
        let parsed = parse_multiple_choice(response, &options(texts), seed).unwrap();
        (LETTERS[parsed.index], parsed.random_selected())
    }

    const TEXTS: [&str; 4] = ["Liver mass", "CT scan", "Normal", "Nodule"];

    #[test]
    fn parenthesized_beats_bare_letters() {
        assert_eq!(parse("The answer is (B) not A", &TEXTS, 0), ("B", false));
        assert_eq!(parse("(A) and (C)", &TEXTS, 0), ("C", false));
        assert_eq!(parse("(C) and (A)", &TEXTS, 0), ("A", false));
    }

    #[test]
    fn bare_letters_need_spaces_and_latest_wins() {
        assert_eq!(parse("A and D", &TEXTS, 0), ("D", false));
        assert_eq!(parse("Answer: C.", &TEXTS, 0), ("C", false));
        assert_eq!(parse("B", &TEXTS, 0), ("B", false));
    }

    #[test]
    fn option_text_needs_more_than_five_characters() {
        assert_eq!(parse("Normal or CT scan", &TEXTS, 0), ("B", false));
        // " ct " alone is 4 characters once padded: no text search, random draw.
        let (_, random) = parse("ct", &["ct", "x", "y", "z"], 0);
        assert!(random);
    }

    #[test]
    fn ties_go_to_the_earlier_option() {
        // "nodule" and "nodule x" both start at the same offset.
        let texts = ["nodule x", "nodule", "q", "r"];
        assert_eq!(parse("it is nodule x", &texts, 0), ("A", false));
        let texts = ["nodule", "nodule x", "q", "r"];
        assert_eq!(parse("it is nodule x", &texts, 0), ("A", false));
    }

    #[test]
    fn unparseable_answers_fall_back_to_seeded_choice() {
        // CPython: random.Random(0).choice("ABCD") == "D", Random(1) -> "B", Random(2) -> "A".
        assert_eq!(parse("I am not sure", &TEXTS, 0), ("D", true));
        assert_eq!(parse("", &TEXTS, 1), ("B", true));
        assert_eq!(parse("none", &TEXTS, 2), ("A", true));
    }

    #[test]
    fn end_characters_are_stripped_in_order() {
        // "'A," -> strip(",") -> "'A" -> ... -> strip("'") -> "A".
        assert_eq!(parse("'A,", &TEXTS, 0), ("A", false));
        // "'.A": "." is stripped before "'", so the "." survives: " .A " has no " A ".
        let (_, random) = parse("'.A", &TEXTS, 3);
        assert!(random);
    }

    #[test]
    fn no_options_is_none() {
        assert_eq!(parse_multiple_choice("A", &[], 0), None);
    }
}
