//! The benchmark task registry: names, metrics, and the fields a prediction row needs.

use std::fmt;
use std::str::FromStr;

use serde_json::{Map, Value};

use super::error::UnknownTaskError;
use super::vocab;

/// One of the AdaMLLM evaluation benchmarks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BenchmarkTask {
    /// VQA-RAD (radiology VQA; open and yes/no questions).
    VqaRad,
    /// SLAKE (radiology VQA; open and yes/no questions).
    Slake,
    /// PathVQA (pathology VQA; open and yes/no questions).
    PathVqa,
    /// PMC-VQA (biomedical four-way multiple choice).
    PmcVqa,
    /// Food-101 (101-way dish classification, asked as multiple choice).
    Food101,
    /// FoodSeg103 (ingredients on the image; F1).
    FoodSeg103,
    /// Nutrition5K (ingredients on the image; recall).
    Nutrition5K,
    /// Recipe1M (recipe generation; ROUGE-L).
    Recipe1M,
}

/// How a task is scored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MetricKind {
    /// LLaVA-Med: unigram recall on open questions and yes/no accuracy on closed ones.
    LlavaMedOpenRecallClosedAccuracy,
    /// Accuracy of the parsed multiple-choice answer.
    MultipleChoiceAccuracy,
    /// Per-row F1 of the named classes, averaged.
    MultiLabelF1,
    /// Per-row recall of the named classes, averaged.
    MultiLabelRecall,
    /// Summary-level ROUGE-L F-measure, averaged.
    RougeLF,
}

/// The JSON shape a task's `label` field has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LabelShape {
    /// A string.
    Text,
    /// An array of class-name strings.
    ClassNames,
}

impl BenchmarkTask {
    /// Every task, in the order they are listed to users.
    pub const ALL: [Self; 8] = [
        Self::VqaRad,
        Self::Slake,
        Self::PathVqa,
        Self::PmcVqa,
        Self::Food101,
        Self::FoodSeg103,
        Self::Nutrition5K,
        Self::Recipe1M,
    ];

    /// The task's name as used on the command line and in result files.
    pub fn name(self) -> &'static str {
        match self {
            Self::VqaRad => "VQA_RAD",
            Self::Slake => "SLAKE",
            Self::PathVqa => "PathVQA",
            Self::PmcVqa => "PMC-VQA",
            Self::Food101 => "Food101",
            Self::FoodSeg103 => "FoodSeg103",
            Self::Nutrition5K => "Nutrition5K",
            Self::Recipe1M => "Recipe1M",
        }
    }

    /// How the task is scored.
    pub fn metric(self) -> MetricKind {
        match self {
            Self::VqaRad | Self::Slake | Self::PathVqa => {
                MetricKind::LlavaMedOpenRecallClosedAccuracy
            }
            Self::PmcVqa | Self::Food101 => MetricKind::MultipleChoiceAccuracy,
            Self::FoodSeg103 => MetricKind::MultiLabelF1,
            Self::Nutrition5K => MetricKind::MultiLabelRecall,
            Self::Recipe1M => MetricKind::RougeLF,
        }
    }

    /// Fields every row of this task must have (`syn_id` is optional everywhere).
    pub fn required_fields(self) -> &'static [&'static str] {
        match self.metric() {
            MetricKind::LlavaMedOpenRecallClosedAccuracy => &["label", "answer_type", "pred"],
            MetricKind::MultipleChoiceAccuracy if self == Self::PmcVqa => {
                &["label", "A", "B", "C", "D", "pred"]
            }
            _ => &["label", "pred"],
        }
    }

    /// The JSON shape of the task's `label`.
    pub fn label_shape(self) -> LabelShape {
        match self {
            Self::FoodSeg103 | Self::Nutrition5K => LabelShape::ClassNames,
            _ => LabelShape::Text,
        }
    }

    /// The class vocabulary labels are drawn from, for the food classification tasks.
    pub fn vocabulary(self) -> Option<&'static vocab::Vocabulary> {
        match self {
            Self::Food101 => Some(vocab::food101()),
            Self::FoodSeg103 => Some(vocab::foodseg103()),
            Self::Nutrition5K => Some(vocab::nutrition5k()),
            _ => None,
        }
    }

    /// The known task names, comma-separated.
    pub fn known_names() -> String {
        Self::ALL.map(Self::name).join(", ")
    }
}

impl fmt::Display for BenchmarkTask {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.name())
    }
}

impl FromStr for BenchmarkTask {
    type Err = UnknownTaskError;

    /// Accepts the exact names, and also any spelling that differs only in case, `-` or
    /// `_` (`pmc_vqa`, `vqa-rad`).
    fn from_str(name: &str) -> Result<Self, Self::Err> {
        let loose = |text: &str| -> String {
            text.chars()
                .filter(|c| !matches!(c, '-' | '_'))
                .flat_map(char::to_lowercase)
                .collect()
        };
        Self::ALL
            .into_iter()
            .find(|task| task.name() == name)
            .or_else(|| {
                Self::ALL
                    .into_iter()
                    .find(|task| loose(task.name()) == loose(name))
            })
            .ok_or_else(|| UnknownTaskError {
                name: name.to_owned(),
                known: Self::known_names(),
            })
    }
}

impl MetricKind {
    /// A stable name for result files.
    pub fn name(self) -> &'static str {
        match self {
            Self::LlavaMedOpenRecallClosedAccuracy => "llava_med_open_recall_closed_accuracy",
            Self::MultipleChoiceAccuracy => "multiple_choice_accuracy",
            Self::MultiLabelF1 => "multi_label_f1",
            Self::MultiLabelRecall => "multi_label_recall",
            Self::RougeLF => "rouge_l_f",
        }
    }

    /// The task-level score keys this metric produces, in output order.
    pub fn score_keys(self) -> &'static [&'static str] {
        match self {
            Self::LlavaMedOpenRecallClosedAccuracy => &["OPEN recall", "CLOSED yes/no accuracy"],
            Self::MultipleChoiceAccuracy => &["acc"],
            Self::MultiLabelF1 => &["f1"],
            Self::MultiLabelRecall => &["recall"],
            Self::RougeLF => &["rl"],
        }
    }
}

impl fmt::Display for MetricKind {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.name())
    }
}

/// Which benchmark a prediction row looks like, judged from its fields (for error
/// messages when a file of one task is scored as another). `None` when nothing stands out.
pub fn describe_row_task(row: &Map<String, Value>) -> Option<String> {
    if row.contains_key("answer_type") {
        return Some("VQA_RAD, SLAKE or PathVQA".to_owned());
    }
    if ["A", "B", "C", "D"]
        .iter()
        .all(|key| row.contains_key(*key))
    {
        return Some(BenchmarkTask::PmcVqa.name().to_owned());
    }
    match row.get("label")? {
        Value::Array(names) => {
            let names: Vec<&str> = names.iter().filter_map(Value::as_str).collect();
            let all_in = |vocabulary: &vocab::Vocabulary| {
                names.iter().all(|name| vocabulary.id_of(name).is_some())
            };
            let description = match (all_in(vocab::foodseg103()), all_in(vocab::nutrition5k())) {
                (true, false) => "FoodSeg103",
                (false, true) => "Nutrition5K",
                _ => "FoodSeg103 or Nutrition5K",
            };
            Some(description.to_owned())
        }
        Value::String(label) => {
            if vocab::food101().id_of(label).is_some() {
                Some(BenchmarkTask::Food101.name().to_owned())
            } else if label.starts_with("Title:") || label.contains("Ingredients:") {
                Some(BenchmarkTask::Recipe1M.name().to_owned())
            } else {
                None
            }
        }
        _ => None,
    }
}

/// Whether `description` (from [`describe_row_task`]) names `task`.
pub(crate) fn description_mentions(description: &str, task: BenchmarkTask) -> bool {
    description
        .split([',', ' '])
        .any(|word| word == task.name())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_round_trip() {
        for task in BenchmarkTask::ALL {
            assert_eq!(task.name().parse::<BenchmarkTask>(), Ok(task));
            assert_eq!(task.to_string(), task.name());
        }
        assert_eq!("pmc_vqa".parse(), Ok(BenchmarkTask::PmcVqa));
        assert_eq!("vqa-rad".parse(), Ok(BenchmarkTask::VqaRad));
    }

    #[test]
    fn unknown_name_lists_known_ones() {
        let error = "MMMU".parse::<BenchmarkTask>().unwrap_err();
        let message = error.to_string();
        assert!(message.contains("\"MMMU\""), "{message}");
        for task in BenchmarkTask::ALL {
            assert!(message.contains(task.name()), "{message}");
        }
    }

    #[test]
    fn registry_facts() {
        assert_eq!(BenchmarkTask::Nutrition5K.metric().score_keys(), ["recall"]);
        assert_eq!(
            BenchmarkTask::PmcVqa.required_fields(),
            ["label", "A", "B", "C", "D", "pred"]
        );
        assert_eq!(
            BenchmarkTask::FoodSeg103.label_shape(),
            LabelShape::ClassNames
        );
        assert!(BenchmarkTask::Recipe1M.vocabulary().is_none());
    }

    #[test]
    fn rows_are_recognised() {
        let row = |value: Value| value.as_object().cloned().unwrap();
        let closed = row(json!({"label": "yes", "answer_type": "CLOSED", "pred": "yes"}));
        assert_eq!(
            describe_row_task(&closed).as_deref(),
            Some("VQA_RAD, SLAKE or PathVQA")
        );
        let seg = row(json!({"label": ["pork", "king oyster mushroom"], "pred": ""}));
        assert_eq!(
            describe_row_task(&row(json!({"label": ["pork"]}))).as_deref(),
            Some("FoodSeg103 or Nutrition5K")
        );
        assert_eq!(describe_row_task(&seg).as_deref(), Some("FoodSeg103"));
        let food = row(json!({"label": "bruschetta", "pred": ""}));
        assert_eq!(describe_row_task(&food).as_deref(), Some("Food101"));
        assert!(description_mentions(
            "VQA_RAD, SLAKE or PathVQA",
            BenchmarkTask::Slake
        ));
        assert!(!description_mentions("FoodSeg103", BenchmarkTask::Food101));
    }
}
