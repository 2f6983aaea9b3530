//! LLaVA-Med answer normalization, reproduced with its quirks.
//!
//! The VQA_RAD, SLAKE and PathVQA scorers normalize both the reference answer and the
//! prediction before comparing them. The rules, in order:
//!
//! 1. For each punctuation mark `p` of [`PUNCTUATION_MARKS`], in that order: when the
//!    *original* text contains `p` followed by a space, a space followed by `p`, or a
//!    digit-comma-digit run anywhere, every `p` is deleted from the working copy;
//!    otherwise every `p` is replaced by a space.
//! 2. Periods not followed by a digit are deleted, but only the first
//!    [`PERIOD_DELETION_LIMIT`] of them (the reference passes the regex flag value 32 in
//!    the position of the replacement count).
//! 3. The text is lower-cased and split on whitespace; number words become digits
//!    (`none` and `zero` become `0`, `one`..`ten` become `1`..`10`), the articles
//!    `a`, `an`, `the` are dropped, contractions are restored (`dont` → `don't`), the
//!    words are joined with single spaces and every remaining comma is deleted.
//!
//! "Digit" means Unicode category `Nd`, as Python's `\d` does.

use super::python_text::{is_python_regex_digit, python_lower, split_python_whitespace};
use super::vocab::llava_med_contractions;

/// Punctuation marks handled by step 1, in processing order.
pub const PUNCTUATION_MARKS: [char; 21] = [
    ';', '/', '[', ']', '"', '{', '}', '(', ')', '=', '+', '\\', '_', '-', '>', '<', '@', '`', ',',
    '?', '!',
];

/// How many periods step 2 deletes at most.
pub const PERIOD_DELETION_LIMIT: usize = 32;

/// Number words and the digits they become.
const NUMBER_WORDS: [(&str, &str); 12] = [
    ("none", "0"),
    ("zero", "0"),
    ("one", "1"),
    ("two", "2"),
    ("three", "3"),
    ("four", "4"),
    ("five", "5"),
    ("six", "6"),
    ("seven", "7"),
    ("eight", "8"),
    ("nine", "9"),
    ("ten", "10"),
];

/// Words dropped by step 3.
const ARTICLES: [&str; 3] = ["a", "an", "the"];

/// Normalizes an answer the way LLaVA-Med's `normalize_word` does (see the module docs).
///
/// The benchmark scorers lower-case the text before calling this; the function lower-cases
/// again itself in step 3, as the reference does.
pub fn normalize_llava_med_answer(text: &str) -> String {
    let without_punctuation = handle_punctuation(text);
    let without_periods = delete_periods_not_before_digit(&without_punctuation);
    let lowered = python_lower(&without_periods);
    let contractions = llava_med_contractions();

    let words: Vec<&str> = split_python_whitespace(&lowered)
        .map(|word| number_word_digit(word).unwrap_or(word))
        .filter(|word| !ARTICLES.contains(word))
        .map(|word| contractions.get(word).map_or(word, String::as_str))
        .collect();
    words.join(" ").replace(',', "")
}

/// Step 1: delete or blank out each punctuation mark, deciding per mark from the original
/// text.
fn handle_punctuation(original: &str) -> String {
    let delete_all = contains_digit_comma_digit(original);
    let mut working = original.to_owned();
    for mark in PUNCTUATION_MARKS {
        let delete = delete_all || touches_space(original, mark);
        working = if delete {
            working.replace(mark, "")
        } else {
            working.replace(mark, " ")
        };
    }
    working
}

/// Whether `text` contains `mark + " "` or `" " + mark`.
fn touches_space(text: &str, mark: char) -> bool {
    let mut previous: Option<char> = None;
    for current in text.chars() {
        if let Some(before) = previous
            && ((before == mark && current == ' ') || (before == ' ' && current == mark))
        {
            return true;
        }
        previous = Some(current);
    }
    false
}

/// Whether `text` matches the regex `(\d)(,)(\d)` somewhere.
fn contains_digit_comma_digit(text: &str) -> bool {
    let chars: Vec<char> = text.chars().collect();
    chars.windows(3).any(|window| {
        is_python_regex_digit(window[0]) && window[1] == ',' && is_python_regex_digit(window[2])
    })
}

/// Step 2: delete periods not followed by a digit, at most [`PERIOD_DELETION_LIMIT`].
fn delete_periods_not_before_digit(text: &str) -> String {
    let mut output = String::with_capacity(text.len());
    let mut deleted = 0_usize;
    let mut chars = text.chars().peekable();
    while let Some(current) = chars.next() {
        let next_is_digit = chars
            .peek()
            .is_some_and(|&next| is_python_regex_digit(next));
        if current == '.' && !next_is_digit && deleted < PERIOD_DELETION_LIMIT {
            deleted += 1;
            continue;
        }
        output.push(current);
    }
    output
}

fn number_word_digit(word: &str) -> Option<&'static str> {
    NUMBER_WORDS
        .iter()
        .find(|(number_word, _)| *number_word == word)
        .map(|(_, digit)| *digit)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(text: &str) -> String {
        normalize_llava_med_answer(text)
    }

    #[test]
    fn articles_number_words_and_contractions() {
        assert_eq!(norm("the left lung"), "left lung");
        assert_eq!(
            norm("one two three none zero ten eleven"),
            "1 2 3 0 0 10 eleven"
        );
        assert_eq!(norm("i dont know"), "i don't know");
        assert_eq!(norm("A An THE x"), "x");
    }

    #[test]
    fn punctuation_next_to_space_is_deleted_else_blanked() {
        // "/" touches a space in the original text: every "/" is deleted; "-" does not,
        // so it becomes a space.
        assert_eq!(norm("x-ray / ct"), "x ray ct");
        // No "/" touches a space: "/" becomes a space.
        assert_eq!(norm("t2/flair"), "t2 flair");
        // "-" touches a space in "x - ray/ct" so it is deleted; "/" does not, so it splits.
        assert_eq!(norm("x - ray/ct"), "x ray ct");
        // The decision is taken on the original text, per mark.
        assert_eq!(norm("(yes) nodule"), "yes nodule");
    }

    #[test]
    fn digit_comma_digit_deletes_all_marks() {
        // A "3,000" anywhere makes every mark deleted, not blanked.
        assert_eq!(norm("3,000 t2/flair"), "3000 t2flair");
        assert_eq!(norm("3,000 cells (approx.)"), "3000 cells approx");
        // Without digit-comma-digit, a comma after a word touches a space: deleted.
        assert_eq!(norm("left lung, left lung"), "left lung left lung");
        // A lone comma between words becomes a space.
        assert_eq!(norm("a,b"), "b");
    }

    #[test]
    fn periods_before_digits_survive_and_at_most_32_are_deleted() {
        assert_eq!(norm("1.5 mm."), "1.5 mm");
        assert_eq!(norm("e.g. dont"), "eg don't");
        let many = "a.b.c ".repeat(20); // 40 periods, none before a digit
        let normalized = norm(&many);
        assert_eq!(normalized.matches('.').count(), 8);
        assert!(normalized.starts_with("abc abc"));
        assert!(normalized.ends_with("a.b.c a.b.c a.b.c a.b.c"));
    }

    #[test]
    fn unicode_digits_count_as_digits() {
        // U+0663 ARABIC-INDIC DIGIT THREE: the period before it is kept.
        assert_eq!(norm("x.\u{663}"), "x.\u{663}");
        // U+00B2 SUPERSCRIPT TWO is not a decimal digit: the period goes.
        assert_eq!(norm("x.\u{b2}"), "x\u{b2}");
    }

    #[test]
    fn empty_and_whitespace_only() {
        assert_eq!(norm(""), "");
        assert_eq!(norm(" \t\n"), "");
        assert_eq!(norm("..."), "");
        assert_eq!(norm("the"), "");
    }

    #[test]
    fn capitalised_contraction_keys_never_match() {
        // "Im" is a key of the table, but words are lower-cased first.
        assert_eq!(norm("Im here"), "im here");
    }
}
