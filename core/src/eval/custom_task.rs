//! What `adamllm eval --task` names: one of the eight built-in benchmarks, or a user's own
//! task described by a small YAML file, plus how either builds its prompt and is scored.
//!
//! # Prompts (facts taken from the authors' evaluation code)
//!
//! Source: `vllm_inference/utils/task.py` and `vllm_inference/inference_vlm.py` of
//! `bigai-ai/QA-Synthesizer` (the AdaMLLM repository), for `model_type = qwen2_vl`:
//!
//! * the user text is the row's `input` field verbatim (`BaseHFTask.get_raw_question`);
//!   nothing is prepended or appended: the benchmark rows are already templated (a PMC-VQA
//!   `input` holds the question, `The choices are:` and the lettered options);
//! * the messages are Qwen2-VL's default system prompt (`You are a helpful assistant.`)
//!   and one user turn whose content is the image first, then the text, rendered with the
//!   chat template and `add_generation_prompt=True`;
//! * the image is converted to RGB and sized with `min_pixels = 224 * 224`,
//!   `max_pixels = 1280 * 28 * 28`;
//! * decoding is greedy (`temperature=0`), special tokens are skipped when decoding, no
//!   extra stop strings (the model's end-of-turn token ends generation);
//! * at most 1024 new tokens, 256 for Food101, FoodSeg103 and Nutrition5K ("to avoid too
//!   much repetitive output");
//! * `syn_id` is the row's 0-based index in the test split.
//!
//! # Custom task files
//!
//! ```yaml
//! name: my-radiology-qa          # shown in results
//! prompt_field: question         # the user text
//! label_field: answer            # the reference
//! options_fields: [A, B, C, D]   # multiple_choice only: fields holding the option texts
//! metric: multiple_choice        # see below
//! vocabulary: classes.txt        # or an inline list; one class name per line in a file
//! max_new_tokens: 256            # default 1024
//! ```
//!
//! Metrics: `llava_med_open_closed` (rows also need `answer_type`, `OPEN` or `CLOSED`),
//! `multiple_choice` (either `options_fields`, the label being one of those field names or
//! one option's text, or a `vocabulary`, the label being a class name, as Food101),
//! `multi_label_f1` and `multi_label_recall` (a `vocabulary`; the label is a list of class
//! names), `rouge_l`, `exact_match` and `exact_match_normalized`. Scores are percentages;
//! the first five are computed exactly as the corresponding built-in tasks compute them.
//! Unknown keys are an error. The image, when rows have one, is the `image` field.

use std::cmp::Reverse;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::benchmark::{BenchmarkRow, IMAGE_FIELD};
use super::metrics::exact_match::{exact_match, exact_match_normalized};
use super::metrics::multi_label::LabelConfusion;
use super::metrics::multiple_choice::{ChoiceOption, parse_multiple_choice};
use super::metrics::rouge::rouge_l;
use super::python_text::{python_len, python_lower};
use super::score::json_type_name;
use super::score::score_rows;
use super::tasks::{BenchmarkTask, MetricKind};

/// Max new tokens of the paper's evaluation, except for the three food tasks below.
pub const DEFAULT_MAX_NEW_TOKENS: usize = 1024;
/// Max new tokens for Food101, FoodSeg103 and Nutrition5K.
pub const SHORT_ANSWER_MAX_NEW_TOKENS: usize = 256;
/// The field the built-in tasks take the user text from.
pub const BUILTIN_PROMPT_FIELD: &str = "input";
/// The field the built-in tasks take the reference from.
pub const BUILTIN_LABEL_FIELD: &str = "label";
/// The field LLaVA-Med scoring reads the question kind from.
pub const ANSWER_TYPE_FIELD: &str = "answer_type";

/// How a custom task is scored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
pub enum CustomMetric {
    /// LLaVA-Med open-question recall and closed-question (yes/no) accuracy.
    #[serde(rename = "llava_med_open_closed")]
    LlavaMedOpenClosed,
    /// Accuracy of the parsed multiple-choice answer.
    #[serde(rename = "multiple_choice")]
    MultipleChoice,
    /// Per-row F1 of the class names found in the answer.
    #[serde(rename = "multi_label_f1")]
    MultiLabelF1,
    /// Per-row recall of the class names found in the answer.
    #[serde(rename = "multi_label_recall")]
    MultiLabelRecall,
    /// ROUGE-L F-measure (PyPI `rouge` 1.0.1).
    #[serde(rename = "rouge_l")]
    RougeL,
    /// The answer equals the label exactly.
    #[serde(rename = "exact_match")]
    ExactMatch,
    /// The answer equals the label after lower-casing, dropping punctuation and mapping
    /// yes/no synonyms.
    #[serde(rename = "exact_match_normalized")]
    ExactMatchNormalized,
}

impl CustomMetric {
    /// The name used in task files and result files.
    pub fn name(self) -> &'static str {
        match self {
            Self::LlavaMedOpenClosed => "llava_med_open_closed",
            Self::MultipleChoice => "multiple_choice",
            Self::MultiLabelF1 => "multi_label_f1",
            Self::MultiLabelRecall => "multi_label_recall",
            Self::RougeL => "rouge_l",
            Self::ExactMatch => "exact_match",
            Self::ExactMatchNormalized => "exact_match_normalized",
        }
    }

    /// The task-level score keys, in output order (the built-in tasks' keys where the
    /// metric is theirs).
    pub fn score_keys(self) -> &'static [&'static str] {
        match self {
            Self::LlavaMedOpenClosed => MetricKind::LlavaMedOpenRecallClosedAccuracy.score_keys(),
            Self::MultipleChoice => MetricKind::MultipleChoiceAccuracy.score_keys(),
            Self::MultiLabelF1 => MetricKind::MultiLabelF1.score_keys(),
            Self::MultiLabelRecall => MetricKind::MultiLabelRecall.score_keys(),
            Self::RougeL => MetricKind::RougeLF.score_keys(),
            Self::ExactMatch => &["exact_match"],
            Self::ExactMatchNormalized => &["exact_match_normalized"],
        }
    }

    fn uses_vocabulary(self) -> bool {
        matches!(
            self,
            Self::MultipleChoice | Self::MultiLabelF1 | Self::MultiLabelRecall
        )
    }
}

/// A user-defined evaluation task (see the module docs for the file format).
#[derive(Clone, Debug, PartialEq)]
pub struct CustomTask {
    /// Task name, shown in results.
    pub name: String,
    /// The field holding the user text.
    pub prompt_field: String,
    /// The field holding the reference answer.
    pub label_field: String,
    /// Fields holding option texts (multiple choice); empty when unused.
    pub options_fields: Vec<String>,
    /// How answers are scored.
    pub metric: CustomMetric,
    /// Class names in id order, for the metrics that use one.
    pub vocabulary: Option<Vec<String>>,
    /// Generation budget.
    pub max_new_tokens: usize,
}

/// The YAML layout of a task file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TaskFile {
    name: String,
    prompt_field: String,
    label_field: String,
    #[serde(default)]
    options_fields: Vec<String>,
    metric: CustomMetric,
    #[serde(default)]
    vocabulary: Option<serde_yaml_ng::Value>,
    #[serde(default)]
    max_new_tokens: Option<usize>,
}

/// Errors of task names, task files and prompt building.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    /// Neither a built-in task nor a task file.
    #[error(
        "unknown task {name:?}; known tasks: {known}, the suites all-biomed and all-food, \
         or a task file ending in .yaml or .yml"
    )]
    UnknownTask {
        /// The name given.
        name: String,
        /// The built-in task names, comma-separated.
        known: String,
    },
    /// A task or vocabulary file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A task file is not valid (bad YAML, an unknown or missing key, a bad value).
    #[error("task file {}: {message}", path.display())]
    Invalid {
        /// The task file.
        path: PathBuf,
        /// What is wrong (names the key).
        message: String,
    },
    /// A benchmark row cannot be turned into a prompt.
    #[error("benchmark row {index}: {message}")]
    Row {
        /// The row's 0-based index (`syn_id`).
        index: usize,
        /// What is wrong (names the field).
        message: String,
    },
}

impl CustomTask {
    /// Reads a task file; a vocabulary file is resolved against the task file's folder.
    pub fn from_file(path: &Path) -> Result<Self, TaskError> {
        let text = std::fs::read_to_string(path).map_err(|source| TaskError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let folder = path.parent().unwrap_or(Path::new(""));
        Self::from_yaml(&text, path, folder)
    }

    /// Parses task-file text; `path` names it in errors and `folder` is where a vocabulary
    /// file path is resolved.
    pub fn from_yaml(text: &str, path: &Path, folder: &Path) -> Result<Self, TaskError> {
        let invalid = |message: String| TaskError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        let file: TaskFile =
            serde_yaml_ng::from_str(text).map_err(|error| invalid(error.to_string()))?;
        for (key, value) in [
            ("name", &file.name),
            ("prompt_field", &file.prompt_field),
            ("label_field", &file.label_field),
        ] {
            if value.trim().is_empty() {
                return Err(invalid(format!("`{key}` must not be empty")));
            }
        }
        let vocabulary = match file.vocabulary {
            None => None,
            Some(value) => Some(read_vocabulary(value, path, folder)?),
        };
        if vocabulary.is_some() && !file.metric.uses_vocabulary() {
            return Err(invalid(format!(
                "`vocabulary` is not used by metric `{}` (only by multiple_choice, \
                 multi_label_f1 and multi_label_recall)",
                file.metric.name()
            )));
        }
        if !file.options_fields.is_empty() && file.metric != CustomMetric::MultipleChoice {
            return Err(invalid(format!(
                "`options_fields` is only used by metric `multiple_choice`, not `{}`",
                file.metric.name()
            )));
        }
        match file.metric {
            CustomMetric::MultipleChoice => {
                match (file.options_fields.is_empty(), vocabulary.is_some()) {
                    (true, false) => {
                        return Err(invalid(
                            "metric `multiple_choice` needs `options_fields` or `vocabulary`"
                                .to_owned(),
                        ));
                    }
                    (false, true) => {
                        return Err(invalid(
                            "give `options_fields` or `vocabulary` for multiple_choice, not both"
                                .to_owned(),
                        ));
                    }
                    _ => {}
                }
            }
            CustomMetric::MultiLabelF1 | CustomMetric::MultiLabelRecall if vocabulary.is_none() => {
                return Err(invalid(format!(
                    "metric `{}` needs a `vocabulary`",
                    file.metric.name()
                )));
            }
            _ => {}
        }
        let max_new_tokens = file.max_new_tokens.unwrap_or(DEFAULT_MAX_NEW_TOKENS);
        if max_new_tokens == 0 {
            return Err(invalid("`max_new_tokens` must be at least 1".to_owned()));
        }
        Ok(Self {
            name: file.name,
            prompt_field: file.prompt_field,
            label_field: file.label_field,
            options_fields: file.options_fields,
            metric: file.metric,
            vocabulary,
            max_new_tokens,
        })
    }

    /// Fields every benchmark row of this task must have.
    pub fn required_fields(&self) -> Vec<String> {
        let mut fields = vec![self.prompt_field.clone(), self.label_field.clone()];
        fields.extend(self.options_fields.iter().cloned());
        if self.metric == CustomMetric::LlavaMedOpenClosed {
            fields.push(ANSWER_TYPE_FIELD.to_owned());
        }
        fields
    }
}

/// A `vocabulary` value: an inline list of names, or a file with one name per line.
fn read_vocabulary(
    value: serde_yaml_ng::Value,
    path: &Path,
    folder: &Path,
) -> Result<Vec<String>, TaskError> {
    let invalid = |message: String| TaskError::Invalid {
        path: path.to_path_buf(),
        message,
    };
    let names: Vec<String> = match value {
        serde_yaml_ng::Value::String(file) => {
            let file = folder.join(file);
            let text = std::fs::read_to_string(&file).map_err(|source| TaskError::Io {
                path: file.clone(),
                source,
            })?;
            text.lines()
                .map(|line| line.trim_end_matches('\r'))
                .filter(|line| !line.trim().is_empty())
                .map(str::to_owned)
                .collect()
        }
        serde_yaml_ng::Value::Sequence(items) => items
            .into_iter()
            .enumerate()
            .map(|(position, item)| match item {
                serde_yaml_ng::Value::String(name) => Ok(name),
                _ => Err(invalid(format!(
                    "`vocabulary` item {} must be a string",
                    position + 1
                ))),
            })
            .collect::<Result<_, _>>()?,
        _ => {
            return Err(invalid(
                "`vocabulary` must be a list of class names or a file path".to_owned(),
            ));
        }
    };
    if names.is_empty() {
        return Err(invalid("`vocabulary` is empty".to_owned()));
    }
    if names.iter().any(|name| name.is_empty()) {
        return Err(invalid("`vocabulary` has an empty class name".to_owned()));
    }
    Ok(names)
}

/// The task an evaluation runs: a built-in benchmark or a custom task.
#[derive(Clone, Debug, PartialEq)]
pub enum EvalTask {
    /// One of the paper's eight benchmarks.
    Builtin(BenchmarkTask),
    /// A task file.
    Custom(CustomTask),
}

impl EvalTask {
    /// A built-in task name (any case, `-` or `_`), or a path ending in `.yaml` / `.yml`.
    pub fn from_arg(arg: &str) -> Result<Self, TaskError> {
        let lower = arg.to_ascii_lowercase();
        if lower.ends_with(".yaml") || lower.ends_with(".yml") {
            return CustomTask::from_file(Path::new(arg)).map(Self::Custom);
        }
        arg.parse::<BenchmarkTask>()
            .map(Self::Builtin)
            .map_err(|error| TaskError::UnknownTask {
                name: error.name,
                known: error.known,
            })
    }

    /// The task's name.
    pub fn name(&self) -> &str {
        match self {
            Self::Builtin(task) => task.name(),
            Self::Custom(task) => &task.name,
        }
    }

    /// The paper's generation budget: 1024 new tokens, 256 for Food101, FoodSeg103 and
    /// Nutrition5K; a custom task's own setting.
    pub fn max_new_tokens(&self) -> usize {
        match self {
            Self::Builtin(
                BenchmarkTask::Food101 | BenchmarkTask::FoodSeg103 | BenchmarkTask::Nutrition5K,
            ) => SHORT_ANSWER_MAX_NEW_TOKENS,
            Self::Builtin(_) => DEFAULT_MAX_NEW_TOKENS,
            Self::Custom(task) => task.max_new_tokens,
        }
    }

    /// The name of the metric, as recorded in result files.
    pub fn metric_name(&self) -> &str {
        match self {
            Self::Builtin(task) => task.metric().name(),
            Self::Custom(task) => task.metric.name(),
        }
    }

    /// The task-level score keys, in output order.
    pub fn score_keys(&self) -> &'static [&'static str] {
        match self {
            Self::Builtin(task) => task.metric().score_keys(),
            Self::Custom(task) => task.metric.score_keys(),
        }
    }

    /// The field holding the user text.
    pub fn prompt_field(&self) -> &str {
        match self {
            Self::Builtin(_) => BUILTIN_PROMPT_FIELD,
            Self::Custom(task) => &task.prompt_field,
        }
    }

    /// The field holding the reference answer.
    pub fn label_field(&self) -> &str {
        match self {
            Self::Builtin(_) => BUILTIN_LABEL_FIELD,
            Self::Custom(task) => &task.label_field,
        }
    }

    /// Fields every benchmark row must have (before predictions are added). Built-in
    /// tasks also need an image.
    pub fn required_fields(&self) -> Vec<String> {
        match self {
            Self::Builtin(task) => {
                let mut fields = vec![BUILTIN_PROMPT_FIELD.to_owned()];
                fields.extend(
                    task.required_fields()
                        .iter()
                        .filter(|field| **field != "pred")
                        .map(|field| (*field).to_owned()),
                );
                fields.push(IMAGE_FIELD.to_owned());
                fields
            }
            Self::Custom(task) => task.required_fields(),
        }
    }

    /// The user message for a row: its prompt field, verbatim.
    pub fn user_text(&self, row: &BenchmarkRow) -> Result<String, TaskError> {
        let field = self.prompt_field();
        match row.fields.get(field) {
            Some(Value::String(text)) => Ok(text.clone()),
            None => Err(TaskError::Row {
                index: row.index,
                message: format!("missing field `{field}` (the prompt of {})", self.name()),
            }),
            Some(other) => Err(TaskError::Row {
                index: row.index,
                message: format!(
                    "field `{field}` must be a string, found {}",
                    json_type_name(other)
                ),
            }),
        }
    }

    /// Scores prediction rows (benchmark fields + `pred`, optional `syn_id`): a JSON object
    /// with `task`, `test_num`, the score keys and `metric`.
    pub fn score(&self, rows: &[Value]) -> Result<Value, String> {
        match self {
            Self::Builtin(task) => score_rows(*task, rows)
                .map(|score| score.to_json())
                .map_err(|error| error.to_string()),
            Self::Custom(task) => score_custom(task, rows),
        }
    }
}

/// Scores prediction rows of a custom task: `{"task", "test_num", <score keys>, "metric"}`.
/// Errors name the 1-based row and the field.
pub fn score_custom(task: &CustomTask, rows: &[Value]) -> Result<Value, String> {
    if rows.is_empty() {
        return Err("no prediction rows to score".to_owned());
    }
    let rows: Vec<PredictionRow<'_>> = rows
        .iter()
        .enumerate()
        .map(|(position, value)| match value {
            Value::Object(fields) => Ok(PredictionRow { position, fields }),
            other => Err(format!(
                "row {}: expected a JSON object, found {}",
                position + 1,
                json_type_name(other)
            )),
        })
        .collect::<Result<_, _>>()?;

    let scores: Vec<(String, f64)> = match task.metric {
        CustomMetric::LlavaMedOpenClosed => score_llava_med(task, &rows)?,
        CustomMetric::MultipleChoice => {
            let accuracies = rows
                .iter()
                .map(|row| multiple_choice_accuracy(task, row))
                .collect::<Result<Vec<_>, _>>()?;
            vec![("acc".to_owned(), mean(&accuracies))]
        }
        CustomMetric::MultiLabelF1 | CustomMetric::MultiLabelRecall => {
            let scores = rows
                .iter()
                .map(|row| multi_label_score(task, row))
                .collect::<Result<Vec<_>, _>>()?;
            vec![(task.metric.score_keys()[0].to_owned(), mean(&scores))]
        }
        CustomMetric::RougeL => {
            let scores = rows
                .iter()
                .map(|row| {
                    // A null answer or label scores 0, as the reference's exception handler does.
                    let label = row.nullable_text(&task.label_field)?;
                    let prediction = row.nullable_text("pred")?;
                    Ok(match (prediction, label) {
                        (Some(prediction), Some(label)) => {
                            rouge_l(prediction, label).map_or(0.0, |scores| scores.f * 100.0)
                        }
                        _ => 0.0,
                    })
                })
                .collect::<Result<Vec<_>, String>>()?;
            vec![("rl".to_owned(), mean(&scores))]
        }
        CustomMetric::ExactMatch | CustomMetric::ExactMatchNormalized => {
            let compare: fn(&str, &str) -> f64 = if task.metric == CustomMetric::ExactMatch {
                exact_match
            } else {
                exact_match_normalized
            };
            let scores = rows
                .iter()
                .map(|row| {
                    let label = row.text(&task.label_field)?;
                    let prediction = row.text("pred")?;
                    Ok(compare(prediction, label) * 100.0)
                })
                .collect::<Result<Vec<_>, String>>()?;
            vec![(task.metric.score_keys()[0].to_owned(), mean(&scores))]
        }
    };

    let mut result = Map::new();
    result.insert("task".to_owned(), json!(task.name));
    result.insert("test_num".to_owned(), json!(rows.len()));
    for (key, value) in scores {
        result.insert(key, json!(value));
    }
    result.insert("metric".to_owned(), json!(task.metric.name()));
    Ok(Value::Object(result))
}

/// A prediction row being scored.
struct PredictionRow<'a> {
    /// 0-based position in the rows given.
    position: usize,
    fields: &'a Map<String, Value>,
}

impl PredictionRow<'_> {
    fn error(&self, message: String) -> String {
        format!("row {}: {message}", self.position + 1)
    }

    fn field(&self, name: &str) -> Result<&Value, String> {
        self.fields
            .get(name)
            .ok_or_else(|| self.error(format!("missing field `{name}`")))
    }

    fn text(&self, name: &str) -> Result<&str, String> {
        match self.field(name)? {
            Value::String(text) => Ok(text),
            other => Err(self.error(format!(
                "field `{name}` must be a string, found {}",
                json_type_name(other)
            ))),
        }
    }

    fn nullable_text(&self, name: &str) -> Result<Option<&str>, String> {
        match self.field(name)? {
            Value::Null => Ok(None),
            _ => self.text(name).map(Some),
        }
    }

    /// The row's `syn_id` (seed of the random multiple-choice fallback); default: its
    /// position.
    fn syn_id(&self) -> Result<i128, String> {
        match self.fields.get("syn_id") {
            None => Ok(self.position as i128),
            Some(value) => value
                .as_i64()
                .map(i128::from)
                .or_else(|| value.as_u64().map(i128::from))
                .ok_or_else(|| {
                    self.error(format!("field `syn_id` must be an integer, found {value}"))
                }),
        }
    }
}

/// Left-to-right mean, 0 for no values (as the built-in scores compute it).
fn mean(values: &[f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.iter().fold(0.0, |sum, value| sum + value) / values.len() as f64
}

/// LLaVA-Med scoring through the built-in VQA_RAD scorer, so both agree exactly.
fn score_llava_med(
    task: &CustomTask,
    rows: &[PredictionRow<'_>],
) -> Result<Vec<(String, f64)>, String> {
    let mut mapped = Vec::with_capacity(rows.len());
    for row in rows {
        mapped.push(json!({
            "label": row.text(&task.label_field)?,
            "answer_type": row.text(ANSWER_TYPE_FIELD)?,
            "pred": row.text("pred")?,
            // Checked by the built-in scorer, which names the row.
            "syn_id": row.fields.get("syn_id").cloned().unwrap_or(json!(row.position)),
        }));
    }
    let score = score_rows(BenchmarkTask::VqaRad, &mapped).map_err(|error| error.to_string())?;
    Ok(score.metrics)
}

/// 100 when the parsed choice is the label's, else 0.
fn multiple_choice_accuracy(task: &CustomTask, row: &PredictionRow<'_>) -> Result<f64, String> {
    let label = row.text(&task.label_field)?;
    let prediction = row.text("pred")?;
    let seed = row.syn_id()?;
    let (choice_names, texts, label_index): (Vec<String>, Vec<&str>, usize) =
        if let Some(vocabulary) = &task.vocabulary {
            // Food101 style: the choices are the class ids, the option texts the names.
            let label_index = vocabulary_id(vocabulary, label).ok_or_else(|| {
                row.error(format!(
                    "label {label:?} is not in the {} vocabulary",
                    task.name
                ))
            })?;
            (
                (0..vocabulary.len()).map(|id| id.to_string()).collect(),
                vocabulary.iter().map(String::as_str).collect(),
                label_index,
            )
        } else {
            // PMC-VQA style: the choices are the option field names.
            let texts = task
                .options_fields
                .iter()
                .map(|field| row.text(field))
                .collect::<Result<Vec<_>, _>>()?;
            let label_index = task
                .options_fields
                .iter()
                .position(|field| field == label)
                .or_else(|| texts.iter().position(|text| *text == label))
                .ok_or_else(|| {
                    row.error(format!(
                        "label {label:?} is neither an option name ({}) nor an option text",
                        task.options_fields.join(", ")
                    ))
                })?;
            (task.options_fields.clone(), texts, label_index)
        };
    let options: Vec<ChoiceOption<'_>> = choice_names
        .iter()
        .zip(&texts)
        .map(|(choice, text)| ChoiceOption {
            choice: choice.as_str(),
            text,
        })
        .collect();
    let parsed = parse_multiple_choice(prediction, &options, seed);
    Ok(
        if parsed.is_some_and(|parsed| parsed.index == label_index) {
            100.0
        } else {
            0.0
        },
    )
}

/// Per-row F1 or recall (×100) of the class names in the answer.
fn multi_label_score(task: &CustomTask, row: &PredictionRow<'_>) -> Result<f64, String> {
    let Some(vocabulary) = task.vocabulary.as_ref().filter(|names| !names.is_empty()) else {
        return Err(format!("task {} has no vocabulary", task.name));
    };
    let names: Vec<&str> = match row.field(&task.label_field)? {
        Value::String(name) => vec![name.as_str()],
        Value::Array(items) => items
            .iter()
            .map(|item| {
                item.as_str().ok_or_else(|| {
                    row.error(format!(
                        "field `{}` must hold class-name strings, found {}",
                        task.label_field,
                        json_type_name(item)
                    ))
                })
            })
            .collect::<Result<_, _>>()?,
        other => {
            return Err(row.error(format!(
                "field `{}` must be a list of class names, found {}",
                task.label_field,
                json_type_name(other)
            )));
        }
    };
    let label_ids = names
        .iter()
        .map(|name| {
            vocabulary_id(vocabulary, name)
                .map(|id| id as u32)
                .ok_or_else(|| {
                    row.error(format!(
                        "label {name:?} is not in the {} vocabulary",
                        task.name
                    ))
                })
        })
        .collect::<Result<Vec<u32>, _>>()?;
    let predicted_ids = class_mentions(row.text("pred")?, vocabulary);
    let last = (vocabulary.len() - 1) as u32;
    let confusion = LabelConfusion::between(&label_ids, &predicted_ids, 0, last);
    let score = if task.metric == CustomMetric::MultiLabelF1 {
        confusion.f1()
    } else {
        confusion.recall()
    };
    Ok(score * 100.0)
}

/// The id of a class name; a repeated name gives its last id (as inverting a Python dict
/// does, and as the built-in vocabularies do).
fn vocabulary_id(vocabulary: &[String], name: &str) -> Option<usize> {
    vocabulary.iter().rposition(|entry| entry == name)
}

/// Class ids named in `response`, by the built-in multi-label rule: lower-case the
/// response, walk the names longest first (equal lengths in id order), and when a name
/// occurs, record its id and delete every occurrence of it.
fn class_mentions(response: &str, vocabulary: &[String]) -> Vec<u32> {
    let mut by_length: Vec<usize> = (0..vocabulary.len()).collect();
    by_length.sort_by_key(|&id| Reverse(python_len(&vocabulary[id])));
    let mut remaining = python_lower(response);
    let mut found = Vec::new();
    for id in by_length {
        let name = python_lower(&vocabulary[id]);
        if remaining.contains(name.as_str()) {
            found.push(id as u32);
            remaining = remaining.replace(name.as_str(), "");
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<CustomTask, TaskError> {
        CustomTask::from_yaml(yaml, Path::new("task.yaml"), Path::new("."))
    }

    #[test]
    fn task_file_parses() {
        let task = parse(
            "name: demo\nprompt_field: question\nlabel_field: answer\n\
             options_fields: [A, B, C]\nmetric: multiple_choice\nmax_new_tokens: 64\n",
        )
        .unwrap();
        assert_eq!(task.name, "demo");
        assert_eq!(task.options_fields, ["A", "B", "C"]);
        assert_eq!(task.metric, CustomMetric::MultipleChoice);
        assert_eq!(task.max_new_tokens, 64);
        assert_eq!(
            task.required_fields(),
            ["question", "answer", "A", "B", "C"]
        );

        let task = parse(
            "name: seg\nprompt_field: input\nlabel_field: label\nmetric: multi_label_f1\n\
             vocabulary:\n  - rice\n  - egg tart\n",
        )
        .unwrap();
        assert_eq!(
            task.vocabulary,
            Some(vec!["rice".to_owned(), "egg tart".to_owned()])
        );
        assert_eq!(task.max_new_tokens, DEFAULT_MAX_NEW_TOKENS);
    }

    #[test]
    fn vocabulary_file_is_read_beside_the_task_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("classes.txt"), "rice\r\n\negg\n").unwrap();
        let path = dir.path().join("task.yml");
        std::fs::write(
            &path,
            "name: n\nprompt_field: input\nlabel_field: label\nmetric: multi_label_recall\n\
             vocabulary: classes.txt\n",
        )
        .unwrap();
        let task = EvalTask::from_arg(path.to_str().unwrap()).unwrap();
        let EvalTask::Custom(task) = task else {
            panic!("not a custom task")
        };
        assert_eq!(
            task.vocabulary,
            Some(vec!["rice".to_owned(), "egg".to_owned()])
        );

        std::fs::remove_file(dir.path().join("classes.txt")).unwrap();
        let message = EvalTask::from_arg(path.to_str().unwrap())
            .unwrap_err()
            .to_string();
        assert!(message.contains("classes.txt"), "{message}");
    }

    #[test]
    fn unknown_key_is_named() {
        let message = parse(
            "name: demo\nprompt_field: q\nlabel_field: a\nmetric: exact_match\nprompt_feild: x\n",
        )
        .unwrap_err()
        .to_string();
        assert!(message.contains("task.yaml"), "{message}");
        assert!(message.contains("`prompt_feild`"), "{message}");
    }

    #[test]
    fn invalid_task_files_are_explained() {
        let cases = [
            ("name: d\nprompt_field: q\nlabel_field: a\n", "metric"),
            (
                "name: d\nprompt_field: q\nlabel_field: a\nmetric: bleu\n",
                "bleu",
            ),
            (
                "name: d\nprompt_field: q\nlabel_field: a\nmetric: multiple_choice\n",
                "needs `options_fields` or `vocabulary`",
            ),
            (
                "name: d\nprompt_field: q\nlabel_field: a\nmetric: multi_label_f1\n",
                "needs a `vocabulary`",
            ),
            (
                "name: d\nprompt_field: q\nlabel_field: a\nmetric: rouge_l\nvocabulary: [x]\n",
                "not used by metric `rouge_l`",
            ),
            (
                "name: d\nprompt_field: q\nlabel_field: a\nmetric: exact_match\nmax_new_tokens: 0\n",
                "at least 1",
            ),
            (
                "name: ''\nprompt_field: q\nlabel_field: a\nmetric: exact_match\n",
                "`name` must not be empty",
            ),
            (
                "name: d\nprompt_field: q\nlabel_field: a\nmetric: multi_label_f1\nvocabulary: [x, 3]\n",
                "item 2 must be a string",
            ),
        ];
        for (yaml, expected) in cases {
            let message = parse(yaml).unwrap_err().to_string();
            assert!(message.contains(expected), "{yaml:?}: {message}");
        }
    }

    #[test]
    fn builtin_tasks_from_arguments() {
        let task = EvalTask::from_arg("pmc_vqa").unwrap();
        assert_eq!(task.name(), "PMC-VQA");
        assert_eq!(task.max_new_tokens(), 1024);
        assert_eq!(
            task.required_fields(),
            ["input", "label", "A", "B", "C", "D", "image"]
        );
        assert_eq!(EvalTask::from_arg("Food101").unwrap().max_new_tokens(), 256);
        assert_eq!(
            EvalTask::from_arg("FoodSeg103").unwrap().max_new_tokens(),
            256
        );
        assert_eq!(
            EvalTask::from_arg("Nutrition5K").unwrap().max_new_tokens(),
            256
        );
        assert_eq!(
            EvalTask::from_arg("Recipe1M").unwrap().max_new_tokens(),
            1024
        );
        assert_eq!(
            EvalTask::from_arg("SLAKE").unwrap().required_fields(),
            ["input", "label", "answer_type", "image"]
        );

        let message = EvalTask::from_arg("MMMU").unwrap_err().to_string();
        for task in BenchmarkTask::ALL {
            assert!(message.contains(task.name()), "{message}");
        }
        assert!(message.contains(".yaml"), "{message}");

        let message = EvalTask::from_arg("/nonexistent/task.yaml")
            .unwrap_err()
            .to_string();
        assert!(message.contains("/nonexistent/task.yaml"), "{message}");
    }

    #[test]
    fn user_text_is_the_prompt_field_verbatim() {
        let row = |fields: Value| BenchmarkRow {
            index: 4,
            fields: fields.as_object().cloned().unwrap(),
            image: None,
        };
        let task = EvalTask::Builtin(BenchmarkTask::PmcVqa);
        let text = "Question: Which organ?\nThe choices are:\n(A) liver\n(B) lung";
        assert_eq!(
            task.user_text(&row(json!({ "input": text }))).unwrap(),
            text
        );
        let message = task
            .user_text(&row(json!({"question": "x"})))
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("row 4") && message.contains("`input`"),
            "{message}"
        );
        let message = task
            .user_text(&row(json!({"input": 3})))
            .unwrap_err()
            .to_string();
        assert!(message.contains("must be a string"), "{message}");
    }

    fn custom(metric: CustomMetric) -> CustomTask {
        CustomTask {
            name: "demo".to_owned(),
            prompt_field: "q".to_owned(),
            label_field: "a".to_owned(),
            options_fields: Vec::new(),
            metric,
            vocabulary: None,
            max_new_tokens: 16,
        }
    }

    #[test]
    fn exact_match_scores() {
        let rows = [
            json!({"a": "Yes", "pred": "yes."}),
            json!({"a": "left lung", "pred": "Left lung"}),
            json!({"a": "no", "pred": "no"}),
            json!({"a": "no", "pred": "maybe"}),
        ];
        let strict = score_custom(&custom(CustomMetric::ExactMatch), &rows).unwrap();
        assert_eq!(strict["exact_match"], json!(25.0));
        assert_eq!(strict["test_num"], json!(4));
        assert_eq!(strict["metric"], json!("exact_match"));
        let loose = score_custom(&custom(CustomMetric::ExactMatchNormalized), &rows).unwrap();
        assert_eq!(loose["exact_match_normalized"], json!(75.0));

        let message =
            score_custom(&custom(CustomMetric::ExactMatch), &[json!({"a": "x"})]).unwrap_err();
        assert!(
            message.contains("row 1") && message.contains("`pred`"),
            "{message}"
        );
    }

    #[test]
    fn llava_med_matches_the_builtin_scorer() {
        let rows = [
            json!({"a": "no", "answer_type": "CLOSED", "pred": "normal"}),
            json!({"a": "left lung", "answer_type": "OPEN", "pred": "the left lung"}),
        ];
        let custom_score = score_custom(&custom(CustomMetric::LlavaMedOpenClosed), &rows).unwrap();
        let builtin_rows: Vec<Value> = rows
            .iter()
            .map(|row| json!({"label": row["a"], "answer_type": row["answer_type"], "pred": row["pred"]}))
            .collect();
        let builtin = score_rows(BenchmarkTask::VqaRad, &builtin_rows).unwrap();
        for key in CustomMetric::LlavaMedOpenClosed.score_keys() {
            assert_eq!(
                custom_score[*key],
                json!(builtin.metric(key).unwrap()),
                "{key}"
            );
        }
    }

    #[test]
    fn multiple_choice_with_option_fields_and_with_a_vocabulary() {
        let task = CustomTask {
            options_fields: vec!["A".to_owned(), "B".to_owned()],
            ..custom(CustomMetric::MultipleChoice)
        };
        let rows = [
            json!({"a": "B", "A": "liver", "B": "lung", "pred": "(B)"}),
            json!({"a": "lung", "A": "liver", "B": "lung", "pred": "It is the lung."}),
            json!({"a": "A", "A": "liver", "B": "lung", "pred": "(B)"}),
        ];
        let score = score_custom(&task, &rows).unwrap();
        assert!(
            (score["acc"].as_f64().unwrap() - 200.0 / 3.0).abs() < 1e-9,
            "{score}"
        );
        let message =
            score_custom(&task, &[json!({"a": "C", "A": "x", "B": "y", "pred": ""})]).unwrap_err();
        assert!(message.contains("\"C\""), "{message}");

        let task = CustomTask {
            vocabulary: Some(vec!["apple pie".to_owned(), "ramen".to_owned()]),
            ..custom(CustomMetric::MultipleChoice)
        };
        let rows = [
            json!({"a": "ramen", "pred": "a bowl of ramen"}),
            json!({"a": "ramen", "pred": "(0)"}),
        ];
        assert_eq!(score_custom(&task, &rows).unwrap()["acc"], json!(50.0));
        let message = score_custom(&task, &[json!({"a": "sushi", "pred": ""})]).unwrap_err();
        assert!(
            message.contains("\"sushi\"") && message.contains("vocabulary"),
            "{message}"
        );
    }

    #[test]
    fn multi_label_uses_the_longest_names_first() {
        let task = CustomTask {
            vocabulary: Some(vec![
                "egg".to_owned(),
                "egg tart".to_owned(),
                "tea".to_owned(),
            ]),
            ..custom(CustomMetric::MultiLabelF1)
        };
        assert_eq!(
            class_mentions("Egg Tart and TEA", task.vocabulary.as_ref().unwrap()),
            [1, 2]
        );
        let rows = [
            json!({"a": ["egg tart"], "pred": "an egg tart"}),
            json!({"a": ["egg", "tea"], "pred": "tea"}),
            json!({"a": [], "pred": "nothing"}),
        ];
        let score = score_custom(&task, &rows).unwrap();
        // 100, 2·1/(2·1 + 0 + 1) = 2/3, and 100 for empty-vs-empty (zero division → 1).
        let expected = (100.0 + 200.0 / 3.0 + 100.0) / 3.0;
        assert!(
            (score["f1"].as_f64().unwrap() - expected).abs() < 1e-9,
            "{score}"
        );

        let recall = CustomTask {
            metric: CustomMetric::MultiLabelRecall,
            ..task.clone()
        };
        let score = score_custom(&recall, &rows[1..2]).unwrap();
        assert_eq!(score["recall"], json!(50.0));

        let message = score_custom(&task, &[json!({"a": ["coffee"], "pred": ""})]).unwrap_err();
        assert!(message.contains("\"coffee\""), "{message}");
    }

    #[test]
    fn rouge_l_scores_null_as_zero() {
        let rows = [
            json!({"a": "Title: soup.", "pred": null}),
            json!({"a": "Title: soup.", "pred": "Title: soup."}),
        ];
        let score = score_custom(&custom(CustomMetric::RougeL), &rows).unwrap();
        assert!(
            (score["rl"].as_f64().unwrap() - 49.9999997500).abs() < 1e-6,
            "{score}"
        );
    }
}
