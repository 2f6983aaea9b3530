//! Reading a synthesizer's output: turns, question–answer pairs and task triplets.
//!
//! The synthesizer continues a conversation whose first round is the image and its caption
//! and whose next user turn is left open, so its output (special tokens kept) reads
//!
//! ```text
//! Answer with a precise response.\nIs the lesion round?<|im_end|>\n
//! <|im_start|>assistant\nYes.<|im_end|>\n
//! <|im_start|>user\nAnswer with an informative response.\nIs the lesion round?<|im_end|>\n
//! <|im_start|>assistant\nIts border is smooth and circular, so yes.<|im_end|>\n
//! <|im_start|>user\n...
//! ```
//!
//! The first turn has no role header (the prompt opened it). A turn without its closing
//! `<|im_end|>` was cut off by the token limit and is dropped; user turns without a hint line,
//! and turns out of order, are skipped. A triplet is the first question asked under both hints
//! (same text once the hint is removed and whitespace trimmed).

use serde::{Deserialize, Serialize};

/// The hint line asking for a short answer.
pub const PRECISE_HINT: &str = "Answer with a precise response.";
/// The hint line asking for an answer with reasoning.
pub const INFORMATIVE_HINT: &str = "Answer with an informative response.";

use crate::models::chat::{CHATML_MARKERS, LLAMA3_MARKERS, TurnMarkers};

/// The turn markers a synthesizer's output uses: Llama 3's when it holds them (a LLaVA-NeXT
/// synthesizer), ChatML's otherwise (Qwen2-VL). The filter reads synthesis files without the
/// synthesizer, so the text itself decides.
pub fn detect_markers(generated: &str) -> TurnMarkers {
    if generated.contains(LLAMA3_MARKERS.end) || generated.contains(LLAMA3_MARKERS.start) {
        LLAMA3_MARKERS
    } else {
        CHATML_MARKERS
    }
}

/// Which answer style a question asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Hint {
    /// [`PRECISE_HINT`].
    Precise,
    /// [`INFORMATIVE_HINT`].
    Informative,
}

/// One complete turn of the output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Turn {
    /// `user` or `assistant` (the first, header-less turn is `user`).
    pub role: String,
    /// Text between the header and `<|im_end|>`.
    pub content: String,
}

/// Splits generated text into complete turns (markers detected from the text). The trailing
/// unfinished turn is dropped.
pub fn split_turns(generated: &str) -> Vec<Turn> {
    split_turns_with(generated, detect_markers(generated))
}

/// [`split_turns`] with given turn markers.
pub fn split_turns_with(generated: &str, markers: TurnMarkers) -> Vec<Turn> {
    let mut turns = Vec::new();
    for (index, segment) in generated.split(markers.start).enumerate() {
        let Some(end) = segment.find(markers.end) else {
            continue; // cut off by the token limit (or empty)
        };
        let body = &segment[..end];
        let (role, content) = if index == 0 {
            ("user", body)
        } else {
            match body.split_once(markers.header_end) {
                Some((role, content)) => (role.trim(), content),
                None => continue,
            }
        };
        turns.push(Turn {
            role: role.to_string(),
            content: content.to_string(),
        });
    }
    turns
}

/// A question with its hint and answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HintedAnswer {
    /// The hint the question carried.
    pub hint: Hint,
    /// The question, hint removed, trimmed.
    pub question: String,
    /// The answer, trimmed.
    pub answer: String,
}

/// Removes a leading hint line (either hint, anywhere on the first line or alone on it).
fn strip_hint(user: &str) -> Option<(Hint, String)> {
    let text = user.trim();
    for (hint, line) in [
        (Hint::Precise, PRECISE_HINT),
        (Hint::Informative, INFORMATIVE_HINT),
    ] {
        if let Some(rest) = text.strip_prefix(line) {
            let question = rest.trim();
            if question.is_empty() {
                return None;
            }
            return Some((hint, question.to_string()));
        }
    }
    None
}

/// Pairs each hinted user turn with the assistant turn that follows it.
pub fn hinted_answers(turns: &[Turn]) -> Vec<HintedAnswer> {
    let mut out = Vec::new();
    let mut i = 0;
    while i + 1 < turns.len() {
        let (user, next) = (&turns[i], &turns[i + 1]);
        if user.role == "user" && next.role == "assistant" {
            if let Some((hint, question)) = strip_hint(&user.content) {
                let answer = next.content.trim();
                if !answer.is_empty() {
                    out.push(HintedAnswer {
                        hint,
                        question,
                        answer: answer.to_string(),
                    });
                }
            }
            i += 2;
        } else {
            i += 1;
        }
    }
    out
}

/// A synthesized task: an instruction with an informative and a precise answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Triplet {
    /// The question.
    pub instruction: String,
    /// The answer with reasoning.
    pub informative_answer: String,
    /// The short answer.
    pub precise_answer: String,
}

/// The first question asked under both hints, with its two answers (the first answer of each
/// kind when a question repeats).
pub fn first_triplet(answers: &[HintedAnswer]) -> Option<Triplet> {
    let question = &answers
        .iter()
        .find(|a| {
            answers
                .iter()
                .any(|b| b.hint != a.hint && b.question == a.question)
        })?
        .question;
    let first_of = |hint: Hint| {
        answers
            .iter()
            .find(|x| x.hint == hint && &x.question == question)
            .map(|x| x.answer.clone())
    };
    Some(Triplet {
        instruction: question.clone(),
        informative_answer: first_of(Hint::Informative)?,
        precise_answer: first_of(Hint::Precise)?,
    })
}

/// Parses a synthesizer's output straight to its triplet, if any.
pub fn triplet_from_output(generated: &str) -> Option<Triplet> {
    first_triplet(&hinted_answers(&split_turns(generated)))
}

/// Words and phrases that mark a sentence as stating the answer.
pub const ANSWER_INDICATORS: [&str; 7] = [
    "could be",
    "so",
    "thus",
    "therefore",
    "final",
    "answer",
    "result",
];

/// Whether `text` contains an answer indicator as whole words (case-insensitive), so "so"
/// matches "so the answer" but not "also".
pub fn has_answer_indicator(text: &str) -> bool {
    let words: Vec<String> = text
        .to_lowercase()
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect();
    ANSWER_INDICATORS.iter().any(|indicator| {
        let parts: Vec<&str> = indicator.split(' ').collect();
        words
            .windows(parts.len())
            .any(|w| w.iter().zip(&parts).all(|(a, b)| a == b))
    })
}

/// The last sentence of `text` (split after `.`, `!` or `?`; trailing empty pieces ignored).
pub fn last_sentence(text: &str) -> &str {
    let trimmed = text.trim_end();
    let body = trimmed.trim_end_matches(['.', '!', '?']);
    match body.rfind(['.', '!', '?']) {
        Some(i) => trimmed[i + 1..].trim(),
        None => trimmed.trim(),
    }
}

/// How a kept triplet becomes a training target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetForm {
    /// The informative answer already ends by stating the answer.
    Informative,
    /// The precise answer reads as a conclusion: informative + " " + precise.
    InformativeThenPrecise,
    /// Neither: the informative answer as reasoning, then the precise answer as the final
    /// answer, through a chain-of-thought template.
    ChainOfThought,
}

/// The paper's rule for choosing the target form of a triplet.
pub fn target_form(triplet: &Triplet) -> TargetForm {
    if has_answer_indicator(last_sentence(&triplet.informative_answer)) {
        TargetForm::Informative
    } else if has_answer_indicator(&triplet.precise_answer) {
        TargetForm::InformativeThenPrecise
    } else {
        TargetForm::ChainOfThought
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn turn(role: &str, content: &str) -> String {
        format!("<|im_start|>{role}\n{content}<|im_end|>\n")
    }

    fn output(first_user: &str, rest: &[(&str, &str)]) -> String {
        let mut s = format!("{first_user}<|im_end|>\n");
        for (role, content) in rest {
            s.push_str(&turn(role, content));
        }
        s
    }

    #[test]
    fn hints_in_either_order_pair_into_one_triplet() {
        let text = output(
            "Answer with an informative response.\nHow many nuclei are dark?",
            &[
                ("assistant", "Two of the five nuclei stain dark, so two."),
                (
                    "user",
                    "Answer with a precise response.\nHow many nuclei are dark?",
                ),
                ("assistant", "Two"),
            ],
        );
        let t = triplet_from_output(&text).unwrap();
        assert_eq!(t.instruction, "How many nuclei are dark?");
        assert_eq!(
            t.informative_answer,
            "Two of the five nuclei stain dark, so two."
        );
        assert_eq!(t.precise_answer, "Two");
    }

    #[test]
    fn first_question_under_both_hints_wins_and_whitespace_is_trimmed() {
        let text = output(
            "Answer with a precise response.\nIs it round?",
            &[
                ("assistant", "Yes"),
                ("user", "Answer with a precise response.\n  What colour?  "),
                ("assistant", "  Purple. "),
                ("user", "Answer with an informative response.\nWhat colour?"),
                ("assistant", "The stain is purple."),
                ("user", "Answer with an informative response.\nIs it round?"),
                ("assistant", "Its outline is a circle, thus yes."),
                // A repeated question keeps its first answers.
                ("user", "Answer with a precise response.\nWhat colour?"),
                ("assistant", "Violet"),
            ],
        );
        let t = triplet_from_output(&text).unwrap();
        assert_eq!(t.instruction, "Is it round?");
        assert_eq!(t.precise_answer, "Yes");
        let answers = hinted_answers(&split_turns(&text));
        assert_eq!(answers[1].question, "What colour?");
        assert_eq!(answers[1].answer, "Purple.");
    }

    #[test]
    fn truncated_missing_and_one_sided_questions_give_no_triplet() {
        // The informative answer was cut off by the token limit.
        let cut = format!(
            "{}{}",
            output(
                "Answer with a precise response.\nIs it round?",
                &[
                    ("assistant", "Yes"),
                    ("user", "Answer with an informative response.\nIs it round?"),
                ]
            ),
            "<|im_start|>assistant\nIts outline is"
        );
        assert_eq!(split_turns(&cut).len(), 3);
        assert!(triplet_from_output(&cut).is_none());
        // A question under one hint only; a user turn without a hint; an empty answer.
        let one_sided = output(
            "Answer with a precise response.\nIs it round?",
            &[
                ("assistant", "Yes"),
                ("user", "Describe it."),
                ("assistant", "A circle."),
                ("user", "Answer with an informative response.\nIs it big?"),
                ("assistant", "   "),
            ],
        );
        assert_eq!(hinted_answers(&split_turns(&one_sided)).len(), 1);
        assert!(triplet_from_output(&one_sided).is_none());
        assert!(triplet_from_output("").is_none());
        assert!(triplet_from_output("no special tokens at all").is_none());
    }

    #[test]
    fn llama3_turns_of_a_llava_synthesizer_parse_alike() {
        // What the authors' LLaVA-NeXT synthesizer writes after the open user header.
        let text = "Answer with a precise response.\nIs it round?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nYes<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nAnswer with an informative response.\nIs it round?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nIts outline is a circle, so yes.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nAnswer with";
        assert_eq!(detect_markers(text), LLAMA3_MARKERS);
        let turns = split_turns(text);
        assert_eq!(turns.len(), 4);
        assert_eq!(turns[1].role, "assistant");
        assert_eq!(turns[1].content, "Yes");
        let t = triplet_from_output(text).unwrap();
        assert_eq!(t.instruction, "Is it round?");
        assert_eq!(t.precise_answer, "Yes");
        assert_eq!(t.informative_answer, "Its outline is a circle, so yes.");
        assert_eq!(detect_markers("A<|im_end|>"), CHATML_MARKERS);
    }

    #[test]
    fn answer_indicator_rule() {
        assert!(has_answer_indicator("So the answer is B"));
        assert!(has_answer_indicator("It could be a lymphocyte."));
        assert!(!has_answer_indicator("It is also purple."));
        // A phrase indicator needs its words next to each other.
        assert!(!has_answer_indicator("Could a cell be this big?"));
        assert_eq!(last_sentence("First part. Second part."), "Second part.");
        assert_eq!(last_sentence("Only one"), "Only one");
        let t = |informative: &str, precise: &str| Triplet {
            instruction: "q".into(),
            informative_answer: informative.into(),
            precise_answer: precise.into(),
        };
        assert_eq!(
            target_form(&t(
                "The border is smooth. Therefore it is benign.",
                "Benign"
            )),
            TargetForm::Informative
        );
        // An indicator only in an earlier sentence does not count.
        assert_eq!(
            target_form(&t("So we look closer. The border is smooth.", "Benign")),
            TargetForm::ChainOfThought
        );
        assert_eq!(
            target_form(&t("The border is smooth.", "The final diagnosis is benign")),
            TargetForm::InformativeThenPrecise
        );
    }
}
