//! Instruction templates that turn a kept triplet into a training task.
//!
//! The answer-indicator rule ([`super::triplets::target_form`]) decides the form:
//! * QA: the target is the informative answer (or informative + " " + precise) and the
//!   question is wrapped in one of [`QA_TEMPLATES`];
//! * chain of thought: one of [`COT_TEMPLATES`] asks for reasoning and a final answer, and its
//!   response places the informative answer as the reasoning and the precise answer last.
//!
//! The template is drawn per task with CPython's `random.Random(seed)` (the paper draws with
//! `Random(syn_id)`), where the seed is the task's `syn_id` mixed with a user seed (0 keeps
//! `syn_id` itself). The wording of every template is this project's own.

use serde::{Deserialize, Serialize};

use super::triplets::{TargetForm, Triplet, target_form};
use crate::eval::PythonRandom;

/// Question wrappers for QA-form tasks (`{question}` is replaced).
pub const QA_TEMPLATES: [&str; 30] = [
    "{question}",
    "{question}",
    "Question: {question}\nAnswer:",
    "Q: {question}\nA:",
    "Look at the image and answer the question.\n{question}",
    "{question}\nAnswer using what the image shows.",
    "Here is a question about the picture: {question}",
    "Study the image, then respond: {question}",
    "Based on the image, {question_lower}",
    "From what you can see, {question_lower}",
    "Please answer this about the image: {question}",
    "Inspect the picture carefully. {question}",
    "Answer the following visual question.\nQuestion: {question}",
    "Given the image above, {question_lower}",
    "I'd like to know: {question}",
    "Use the visual evidence to answer.\n{question}",
    "Examine the image and reply to this: {question}",
    "Consider the image. {question}",
    "Can you help with this image? {question}",
    "Task: answer a question about the image.\nInput: {question}\nOutput:",
    "{question} Explain briefly.",
    "{question}\nGive a well-supported answer.",
    "Observe the details in the image. {question}",
    "A question for you about this image:\n{question}",
    "Reply based on the picture.\n\n{question}",
    "What would you say? {question}",
    "{question}\nRefer to the image when answering.",
    "With reference to the image: {question}",
    "Answer as a careful observer would.\n{question}",
    "Take a look. {question}",
];

/// Chain-of-thought templates: (instruction, response), with `{question}`, `{reasoning}` and
/// `{answer}` replaced.
pub const COT_TEMPLATES: [(&str, &str); 24] = [
    (
        "{question}\nThink it through step by step, then give the answer.",
        "{reasoning}\nSo the answer is: {answer}",
    ),
    (
        "{question} Reason about the image before answering.",
        "{reasoning}\nTherefore, the answer is {answer}",
    ),
    (
        "Question: {question}\nShow your reasoning first.",
        "Reasoning: {reasoning}\nAnswer: {answer}",
    ),
    (
        "{question}\nExplain what you see, then state a short answer.",
        "{reasoning}\nShort answer: {answer}",
    ),
    (
        "Look closely at the image. {question} Walk through your thinking.",
        "{reasoning}\nFinal answer: {answer}",
    ),
    (
        "{question}\nLet's work this out carefully.",
        "{reasoning}\nThus: {answer}",
    ),
    (
        "Answer the question below with an explanation and a conclusion.\n{question}",
        "Explanation: {reasoning}\nConclusion: {answer}",
    ),
    (
        "{question}\nDescribe the relevant evidence, then answer concisely.",
        "Evidence: {reasoning}\nAnswer: {answer}",
    ),
    (
        "Q: {question}\nThink aloud before you answer.",
        "{reasoning}\nThe answer is therefore {answer}",
    ),
    (
        "{question} First justify, then answer.",
        "{reasoning}\nHence, {answer}",
    ),
    (
        "Using the image, reason your way to an answer: {question}",
        "{reasoning}\nMy final answer: {answer}",
    ),
    (
        "{question}\nGive the reasoning and end with the answer on its own line.",
        "{reasoning}\n{answer}",
    ),
    (
        "Solve this visual question step by step.\n{question}",
        "Step by step: {reasoning}\nResult: {answer}",
    ),
    (
        "{question}\nWhy? Explain, then answer.",
        "{reasoning}\nSo: {answer}",
    ),
    (
        "Consider the image carefully and answer with reasons.\nQuestion: {question}",
        "{reasoning}\nAnswer: {answer}",
    ),
    (
        "{question}\nBefore answering, note what in the image supports it.",
        "What the image shows: {reasoning}\nAnswer: {answer}",
    ),
    (
        "Think about this question and the picture: {question}",
        "{reasoning}\nIn short, {answer}",
    ),
    (
        "{question}\nProvide a rationale followed by the final answer.",
        "Rationale: {reasoning}\nFinal answer: {answer}",
    ),
    (
        "Work out the answer from the image: {question}",
        "{reasoning}\nThe result: {answer}",
    ),
    (
        "{question}\nAnswer in two parts: your reasoning, then the answer.",
        "Part 1 (reasoning): {reasoning}\nPart 2 (answer): {answer}",
    ),
    (
        "Here is a question that needs some thought. {question}",
        "{reasoning}\nTaking all this into account, the answer is {answer}",
    ),
    (
        "{question}\nExplain how the image leads to your answer.",
        "{reasoning}\nThis leads to the answer: {answer}",
    ),
    (
        "Reason step by step using the picture, and finish with a brief answer.\n{question}",
        "{reasoning}\nBrief answer: {answer}",
    ),
    (
        "{question} Please include your reasoning.",
        "{reasoning}\nAnswer: {answer}",
    ),
];

/// A training task: one user instruction and the response to train on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrainingTask {
    /// The user turn (without `<image>`).
    pub instruction: String,
    /// The assistant turn.
    pub response: String,
}

/// The seed of a task's template draw: `syn_id` itself for seed 0 (as the paper), else the
/// user seed in the high bits.
pub fn task_seed(syn_id: usize, seed: u64) -> i128 {
    (i128::from(seed) << 64) + syn_id as i128
}

/// Lower-cases the first letter (for templates that continue a sentence).
fn lower_first(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

fn fill_question(template: &str, question: &str) -> String {
    template
        .replace("{question_lower}", &lower_first(question))
        .replace("{question}", question)
}

/// Turns a kept triplet into its training task (the paper's answer-indicator rule, then a
/// template drawn with `Random(task_seed(syn_id, seed))`).
pub fn training_task(triplet: &Triplet, syn_id: usize, seed: u64) -> TrainingTask {
    let mut random = PythonRandom::from_int_seed(task_seed(syn_id, seed));
    let question = triplet.instruction.trim();
    let informative = triplet.informative_answer.trim();
    let precise = triplet.precise_answer.trim();
    match target_form(triplet) {
        TargetForm::Informative | TargetForm::InformativeThenPrecise => {
            let template = random
                .choice(&QA_TEMPLATES)
                .copied()
                .unwrap_or("{question}");
            let response = if target_form(triplet) == TargetForm::Informative {
                informative.to_string()
            } else {
                format!("{informative} {precise}")
            };
            TrainingTask {
                instruction: fill_question(template, question),
                response,
            }
        }
        TargetForm::ChainOfThought => {
            let (instruction, response) = random
                .choice(&COT_TEMPLATES)
                .copied()
                .unwrap_or(("{question}", "{reasoning}\n{answer}"));
            TrainingTask {
                instruction: fill_question(instruction, question),
                response: response
                    .replace("{reasoning}", informative)
                    .replace("{answer}", precise),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn triplet(informative: &str, precise: &str) -> Triplet {
        Triplet {
            instruction: "What stain is used?".into(),
            informative_answer: informative.into(),
            precise_answer: precise.into(),
        }
    }

    #[test]
    fn forms_follow_the_answer_indicator_rule() {
        // The informative answer ends by stating the answer: it is the whole target.
        let t = training_task(&triplet("Pink cytoplasm. So it is H&E.", "H&E"), 3, 0);
        assert_eq!(t.response, "Pink cytoplasm. So it is H&E.");
        // The precise answer reads as a conclusion: appended.
        let t = training_task(&triplet("Pink cytoplasm.", "Thus H&E."), 3, 0);
        assert_eq!(t.response, "Pink cytoplasm. Thus H&E.");
        // Neither: chain of thought with the precise answer last.
        let t = training_task(&triplet("Pink cytoplasm, blue nuclei.", "H&E"), 3, 0);
        let reasoning_at = t.response.find("Pink cytoplasm, blue nuclei.");
        assert!(reasoning_at.is_some(), "{t:?}");
        assert!(t.response.ends_with("H&E"), "{t:?}");
        assert!(reasoning_at < t.response.rfind("H&E"), "{t:?}");
        assert!(
            t.instruction.contains("What stain is used?")
                || t.instruction.contains("what stain is used?")
        );
    }

    #[test]
    fn draws_are_seeded_by_id_and_seed() {
        let tr = triplet("Pink cytoplasm, blue nuclei.", "H&E");
        let draws: Vec<TrainingTask> = (0..40).map(|id| training_task(&tr, id, 0)).collect();
        let again: Vec<TrainingTask> = (0..40).map(|id| training_task(&tr, id, 0)).collect();
        assert_eq!(draws, again);
        let distinct: std::collections::BTreeSet<&str> =
            draws.iter().map(|t| t.instruction.as_str()).collect();
        assert!(distinct.len() > 10, "templates barely vary: {distinct:?}");
        let other_seed: Vec<TrainingTask> = (0..40).map(|id| training_task(&tr, id, 9)).collect();
        assert_ne!(draws, other_seed);
        // Seed 0 draws with Random(syn_id), as the paper: CPython's
        // Random(5).choice(range(24)) is 19.
        assert_eq!(
            PythonRandom::from_int_seed(task_seed(5, 0)).choice(&(0..24).collect::<Vec<_>>()),
            Some(&19)
        );
    }

    #[test]
    fn templates_keep_every_placeholder() {
        for template in QA_TEMPLATES {
            assert!(template.contains("{question"), "{template}");
        }
        for (instruction, response) in COT_TEMPLATES {
            assert!(instruction.contains("{question}"), "{instruction}");
            assert!(
                response.contains("{reasoning}") && response.contains("{answer}"),
                "{response}"
            );
        }
    }
}
