//! Exact-match scores, for comparing with harnesses such as lmms-eval that report them.
//!
//! These are not used by the AdaMLLM task scores; they are alternatives a caller can
//! compute on the same predictions.

use super::super::python_text::{python_lower, split_python_whitespace};

/// Words treated as "yes" by [`exact_match_normalized`].
const YES_SYNONYMS: [&str; 6] = ["yes", "yeah", "yep", "true", "correct", "right"];

/// Words treated as "no" by [`exact_match_normalized`].
const NO_SYNONYMS: [&str; 5] = ["no", "nope", "false", "incorrect", "wrong"];

/// 1.0 when the prediction equals the reference character for character, else 0.0
/// (lmms-eval's `exact_match` without options).
pub fn exact_match(prediction: &str, reference: &str) -> f64 {
    if prediction == reference { 1.0 } else { 0.0 }
}

/// 1.0 when the two answers agree after [`normalize_for_exact_match`], else 0.0.
pub fn exact_match_normalized(prediction: &str, reference: &str) -> f64 {
    exact_match(
        &normalize_for_exact_match(prediction),
        &normalize_for_exact_match(reference),
    )
}

/// Lower-cases, turns punctuation into spaces, collapses whitespace, and maps a
/// single-word yes/no synonym (`"Yeah."`, `"False"`) to `"yes"` / `"no"`.
pub fn normalize_for_exact_match(answer: &str) -> String {
    let without_punctuation: String = python_lower(answer)
        .chars()
        .map(|c| if is_punctuation(c) { ' ' } else { c })
        .collect();
    let collapsed = split_python_whitespace(&without_punctuation)
        .collect::<Vec<_>>()
        .join(" ");
    if YES_SYNONYMS.contains(&collapsed.as_str()) {
        "yes".to_owned()
    } else if NO_SYNONYMS.contains(&collapsed.as_str()) {
        "no".to_owned()
    } else {
        collapsed
    }
}

/// ASCII punctuation plus the common typographic quotes, dashes and ellipsis.
fn is_punctuation(c: char) -> bool {
    c.is_ascii_punctuation()
        || matches!(
            c,
            '\u{2018}'
                | '\u{2019}'
                | '\u{201c}'
                | '\u{201d}'
                | '\u{2013}'
                | '\u{2014}'
                | '\u{2026}'
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_match_is_character_exact() {
        assert_eq!(exact_match("Yes", "Yes"), 1.0);
        assert_eq!(exact_match("Yes", "yes"), 0.0);
        assert_eq!(exact_match("yes ", "yes"), 0.0);
    }

    #[test]
    fn normalized_match_ignores_case_punctuation_and_synonyms() {
        assert_eq!(exact_match_normalized("Yes.", "yes"), 1.0);
        assert_eq!(exact_match_normalized("Yeah!", "yes"), 1.0);
        assert_eq!(exact_match_normalized("False", "No"), 1.0);
        assert_eq!(exact_match_normalized("  Left   lung. ", "left lung"), 1.0);
        assert_eq!(exact_match_normalized("x-ray", "x ray"), 1.0);
        assert_eq!(exact_match_normalized("yes, it is", "yes"), 0.0);
        assert_eq!(exact_match_normalized("\u{201c}no\u{201d}", "no"), 1.0);
    }
}
