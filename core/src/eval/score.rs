//! Scoring a predictions file (or rows) for one benchmark: the entry point of
//! `adamllm score --task TASK --predictions FILE.jsonl`.
//!
//! A predictions file is JSON Lines, one object per benchmark example, holding the
//! benchmark's fields (see [`BenchmarkTask::required_fields`]), the model's answer in
//! `pred`, and optionally the 0-based example index `syn_id` (default: the row's 0-based
//! position). Blank lines are skipped.
//!
//! Task scores are percentages averaged over rows, computed exactly as the AdaMLLM
//! reference scorers compute them; the per-row results carry the same keys as the
//! reference's per-row output.

use std::path::Path;

use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{Map, Value, json};

use super::error::{RowLocation, ScoreError};
use super::metrics::llava_med::{closed_answer_hit, normalize_for_scoring, open_answer_overlap};
use super::metrics::multi_label::{LabelConfusion, parse_class_mentions};
use super::metrics::multiple_choice::{ChoiceMatch, ChoiceOption, parse_multiple_choice};
use super::metrics::rouge::rouge_l;
use super::predictions_file::read_prediction_rows;
use super::tasks::{BenchmarkTask, MetricKind, describe_row_task, description_mentions};

/// The PMC-VQA answer letters, which are also the names of the option fields.
const PMC_VQA_CHOICES: [&str; 4] = ["A", "B", "C", "D"];

/// The score of one task over a set of predictions.
#[derive(Clone, Debug, PartialEq)]
pub struct TaskScore {
    /// Task name (`"VQA_RAD"`, ...).
    pub task: String,
    /// Number of rows scored.
    pub test_num: usize,
    /// Task-level scores in output order (`"acc"`, or `"OPEN recall"` and
    /// `"CLOSED yes/no accuracy"`, ...), as percentages.
    pub metrics: Vec<(String, f64)>,
    /// Name of the metric kind (see [`MetricKind::name`]).
    pub metric_kind: String,
    /// One JSON object per row, with the reference's per-row keys (`syn_id` plus the row
    /// score and what was parsed from the prediction).
    pub per_row: Vec<Value>,
}

impl TaskScore {
    /// The task-level score named `key`.
    pub fn metric(&self, key: &str) -> Option<f64> {
        self.metrics
            .iter()
            .find(|(name, _)| name == key)
            .map(|(_, value)| *value)
    }

    /// `{"task", "test_num", <score keys>..., "metric"}` as a JSON value. Key order in the
    /// value depends on serde_json's `preserve_order` feature; serialize the `TaskScore`
    /// itself for a fixed order.
    pub fn to_json(&self) -> Value {
        let mut object = Map::new();
        object.insert("task".to_owned(), json!(self.task));
        object.insert("test_num".to_owned(), json!(self.test_num));
        for (key, value) in &self.metrics {
            object.insert(key.clone(), json!(value));
        }
        object.insert("metric".to_owned(), json!(self.metric_kind));
        Value::Object(object)
    }
}

impl Serialize for TaskScore {
    /// Serializes as [`TaskScore::to_json`] does, always in that key order.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.metrics.len() + 3))?;
        map.serialize_entry("task", &self.task)?;
        map.serialize_entry("test_num", &self.test_num)?;
        for (key, value) in &self.metrics {
            map.serialize_entry(key, value)?;
        }
        map.serialize_entry("metric", &self.metric_kind)?;
        map.end()
    }
}

/// Reads a JSONL predictions file and scores it for `task`.
pub fn score_predictions_file(task: BenchmarkTask, path: &Path) -> Result<TaskScore, ScoreError> {
    let rows = read_prediction_rows(path)?;
    let located: Vec<(RowLocation, &Value)> = rows
        .iter()
        .map(|(location, value)| (location.clone(), value))
        .collect();
    score_located_rows(task, &located)
}

/// The alternative string-match scores, for comparison with harnesses such as lmms-eval that
/// score by (normalized) exact match instead of the paper's metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AlternativeMetric {
    /// `pred == label`.
    ExactMatch,
    /// Equal after lower-casing, removing punctuation and mapping yes/no synonyms.
    ExactMatchNormalized,
}

impl AlternativeMetric {
    /// Its name, also the score key.
    pub fn name(self) -> &'static str {
        match self {
            Self::ExactMatch => "exact_match",
            Self::ExactMatchNormalized => "exact_match_normalized",
        }
    }

    /// Parses `exact_match` / `exact_match_normalized`.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "exact_match" => Some(Self::ExactMatch),
            "exact_match_normalized" => Some(Self::ExactMatchNormalized),
            _ => None,
        }
    }
}

/// Scores a predictions file of `task` with an alternative metric: the percentage of rows
/// whose `pred` matches the `label` (a list label matches when the prediction equals its items
/// joined by `", "`). Returns `{"task", "test_num", "metric", <metric name>}`.
pub fn score_predictions_file_with(
    task: BenchmarkTask,
    path: &Path,
    metric: AlternativeMetric,
) -> Result<Value, ScoreError> {
    let rows = read_prediction_rows(path)?;
    let mut hits = 0.0;
    for (location, row) in &rows {
        let text = |field: &'static str| -> Result<String, ScoreError> {
            match row.get(field) {
                None => Err(ScoreError::MissingField {
                    location: location.clone(),
                    field,
                    task: task.name(),
                }),
                Some(Value::String(s)) => Ok(s.clone()),
                Some(Value::Array(items)) if field == "label" => Ok(items
                    .iter()
                    .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
                    .collect::<Vec<_>>()
                    .join(", ")),
                Some(Value::Null) if field == "pred" => Ok(String::new()),
                Some(other) => Err(ScoreError::WrongFieldType {
                    location: location.clone(),
                    field,
                    expected: "a string",
                    found: json_type_name(other),
                }),
            }
        };
        let (pred, label) = (text("pred")?, text("label")?);
        hits += match metric {
            AlternativeMetric::ExactMatch => super::exact_match(&pred, &label),
            AlternativeMetric::ExactMatchNormalized => super::exact_match_normalized(&pred, &label),
        };
    }
    Ok(serde_json::json!({
        "task": task.name(),
        "test_num": rows.len(),
        "metric": metric.name(),
        metric.name(): 100.0 * hits / rows.len() as f64,
    }))
}

/// Scores already-parsed prediction rows for `task`; errors name the 1-based row.
pub fn score_rows(task: BenchmarkTask, rows: &[Value]) -> Result<TaskScore, ScoreError> {
    let located: Vec<(RowLocation, &Value)> = rows
        .iter()
        .enumerate()
        .map(|(index, value)| (RowLocation::Row { number: index + 1 }, value))
        .collect();
    score_located_rows(task, &located)
}

/// Task-level scores and per-row results of one scoring pass.
type Scored = (Vec<(String, f64)>, Vec<Value>);

fn score_located_rows(
    task: BenchmarkTask,
    rows: &[(RowLocation, &Value)],
) -> Result<TaskScore, ScoreError> {
    if rows.is_empty() {
        return Err(ScoreError::NoRows);
    }
    let rows: Vec<Row<'_>> = rows
        .iter()
        .enumerate()
        .map(|(index, (location, value))| Row::new(task, location, value, index))
        .collect::<Result<_, _>>()?;

    let (metrics, per_row) = match task.metric() {
        MetricKind::LlavaMedOpenRecallClosedAccuracy => score_llava_med(&rows)?,
        MetricKind::MultipleChoiceAccuracy => score_multiple_choice(task, &rows)?,
        MetricKind::MultiLabelF1 | MetricKind::MultiLabelRecall => score_multi_label(task, &rows)?,
        MetricKind::RougeLF => score_rouge_l(&rows)?,
    };
    Ok(TaskScore {
        task: task.name().to_owned(),
        test_num: rows.len(),
        metrics,
        metric_kind: task.metric().name().to_owned(),
        per_row,
    })
}

/// Mean of `values` as the reference computes it (left-to-right sum, then division);
/// 0 for no values.
fn mean(values: &[f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.iter().fold(0.0, |sum, value| sum + value) / values.len() as f64
}

/// VQA_RAD, SLAKE, PathVQA.
fn score_llava_med(rows: &[Row<'_>]) -> Result<Scored, ScoreError> {
    let mut open_recalls = Vec::new();
    let mut closed_hits = Vec::new();
    let mut per_row = Vec::with_capacity(rows.len());
    for row in rows {
        let label = normalize_for_scoring(row.text("label")?);
        let answer_type = row.text("answer_type")?;
        let prediction = normalize_for_scoring(row.text("pred")?);
        let score = match answer_type {
            "OPEN" => {
                let recall = open_answer_overlap(&prediction, &label).recall;
                open_recalls.push(recall);
                // The reference stores an integer 0 when the overlap is degenerate.
                let shown = if recall == 0.0 {
                    json!(0)
                } else {
                    json!(recall * 100.0)
                };
                json!({ "recall": shown })
            }
            "CLOSED" => {
                let hit = closed_answer_hit(&prediction, &label);
                closed_hits.push(if hit { 1.0 } else { 0.0 });
                json!({ "yes/no accuracy": if hit { 100 } else { 0 } })
            }
            other => {
                return Err(ScoreError::UnknownAnswerType {
                    location: row.location.clone(),
                    found: other.to_owned(),
                });
            }
        };
        per_row.push(json!({ "syn_id": row.syn_id_json()?, "score": score }));
    }
    let metrics = vec![
        ("OPEN recall".to_owned(), mean(&open_recalls) * 100.0),
        (
            "CLOSED yes/no accuracy".to_owned(),
            mean(&closed_hits) * 100.0,
        ),
    ];
    Ok((metrics, per_row))
}

/// PMC-VQA and Food101.
fn score_multiple_choice(task: BenchmarkTask, rows: &[Row<'_>]) -> Result<Scored, ScoreError> {
    let food101_choices: Vec<(String, &str)> = task
        .vocabulary()
        .map(|vocabulary| {
            vocabulary
                .entries()
                .iter()
                .map(|entry| (entry.id.to_string(), entry.name.as_str()))
                .collect()
        })
        .unwrap_or_default();

    let mut accuracies = Vec::with_capacity(rows.len());
    let mut per_row = Vec::with_capacity(rows.len());
    for row in rows {
        let label = row.text("label")?;
        let prediction = row.text("pred")?;
        let seed = row.syn_id()?;

        let (options, label_index): (Vec<ChoiceOption<'_>>, usize) =
            if task == BenchmarkTask::PmcVqa {
                let mut options = Vec::with_capacity(PMC_VQA_CHOICES.len());
                for choice in PMC_VQA_CHOICES {
                    options.push(ChoiceOption {
                        choice,
                        text: row.text(choice)?,
                    });
                }
                let label_index = PMC_VQA_CHOICES
                    .iter()
                    .position(|choice| *choice == label)
                    .ok_or_else(|| row.unknown_label(label))?;
                (options, label_index)
            } else {
                let options = food101_choices
                    .iter()
                    .map(|(choice, text)| ChoiceOption { choice, text })
                    .collect();
                let label_index = row.class_id(label)?;
                (options, label_index as usize)
            };

        let parsed = parse_multiple_choice(prediction, &options, seed);
        let correct = parsed.is_some_and(|parsed| parsed.index == label_index);
        let accuracy = if correct { 100 } else { 0 };
        accuracies.push(f64::from(accuracy));

        // Food101 reports an option-text match as the class id (a number) and every other
        // kind of match as the choice string, as the reference does.
        let pred_option = match parsed {
            None => Value::Null,
            Some(parsed)
                if task == BenchmarkTask::Food101
                    && parsed.matched_by == ChoiceMatch::OptionText =>
            {
                json!(parsed.index)
            }
            Some(parsed) => options
                .get(parsed.index)
                .map_or(Value::Null, |option| json!(option.choice)),
        };
        per_row.push(json!({
            "syn_id": row.syn_id_json()?,
            "acc": accuracy,
            "pred_option": pred_option,
            "random_selected": parsed.is_some_and(|parsed| parsed.random_selected()),
        }));
    }
    Ok((vec![("acc".to_owned(), mean(&accuracies))], per_row))
}

/// FoodSeg103 (F1) and Nutrition5K (recall).
fn score_multi_label(task: BenchmarkTask, rows: &[Row<'_>]) -> Result<Scored, ScoreError> {
    let Some(vocabulary) = task.vocabulary() else {
        return Ok((Vec::new(), Vec::new()));
    };
    let (first, last) = vocabulary.id_bounds().unwrap_or((0, 0));
    let key = task
        .metric()
        .score_keys()
        .first()
        .copied()
        .unwrap_or("score");

    let mut scores = Vec::with_capacity(rows.len());
    let mut per_row = Vec::with_capacity(rows.len());
    for row in rows {
        let label_ids = row
            .class_names("label")?
            .into_iter()
            .map(|name| row.class_id(name))
            .collect::<Result<Vec<u32>, _>>()?;
        let mut predicted_ids = parse_class_mentions(row.text("pred")?, vocabulary);
        predicted_ids.sort_unstable();

        let confusion = LabelConfusion::between(&label_ids, &predicted_ids, first, last);
        let score = if task.metric() == MetricKind::MultiLabelF1 {
            confusion.f1()
        } else {
            confusion.recall()
        } * 100.0;
        scores.push(score);
        per_row.push(json!({
            "syn_id": row.syn_id_json()?,
            key: score,
            "pred_classes_on_image": predicted_ids,
        }));
    }
    Ok((vec![(key.to_owned(), mean(&scores))], per_row))
}

/// Recipe1M.
fn score_rouge_l(rows: &[Row<'_>]) -> Result<Scored, ScoreError> {
    let mut scores = Vec::with_capacity(rows.len());
    let mut per_row = Vec::with_capacity(rows.len());
    for row in rows {
        // A null prediction or label makes the reference raise, which scores 0.
        let label = row.nullable_text("label")?;
        let prediction = row.nullable_text("pred")?;
        let score = match (prediction, label) {
            (Some(prediction), Some(label)) => {
                rouge_l(prediction, label).map_or(0.0, |scores| scores.f * 100.0)
            }
            _ => 0.0,
        };
        scores.push(score);
        per_row.push(json!({ "syn_id": row.syn_id_json()?, "rl": score }));
    }
    Ok((vec![("rl".to_owned(), mean(&scores))], per_row))
}

/// A prediction row being scored, with what its error messages need.
struct Row<'a> {
    task: BenchmarkTask,
    location: &'a RowLocation,
    fields: &'a Map<String, Value>,
    /// 0-based position, the default `syn_id`.
    index: usize,
}

impl<'a> Row<'a> {
    fn new(
        task: BenchmarkTask,
        location: &'a RowLocation,
        value: &'a Value,
        index: usize,
    ) -> Result<Self, ScoreError> {
        let Value::Object(fields) = value else {
            return Err(ScoreError::NotAnObject {
                location: location.clone(),
                found: json_type_name(value),
            });
        };
        let row = Self {
            task,
            location,
            fields,
            index,
        };
        row.reject_foreign_fields()?;
        for field in task.required_fields() {
            row.field(field)?;
        }
        Ok(row)
    }

    /// Fields that only another benchmark's rows carry mean the file is from that task.
    fn reject_foreign_fields(&self) -> Result<(), ScoreError> {
        let foreign = if self.task.metric() != MetricKind::LlavaMedOpenRecallClosedAccuracy
            && self.fields.contains_key("answer_type")
        {
            Some("it has an `answer_type` field")
        } else if self.task != BenchmarkTask::PmcVqa
            && PMC_VQA_CHOICES
                .iter()
                .all(|key| self.fields.contains_key(*key))
        {
            Some("it has option fields A, B, C and D")
        } else {
            None
        };
        match (foreign, describe_row_task(self.fields)) {
            (Some(problem), Some(looks_like)) => Err(ScoreError::WrongTask {
                location: self.location.clone(),
                task: self.task.name(),
                problem: problem.to_owned(),
                looks_like,
            }),
            _ => Ok(()),
        }
    }

    /// Replaces `error` by a [`ScoreError::WrongTask`] when the row looks like another
    /// task's.
    fn or_wrong_task(&self, problem: String, error: ScoreError) -> ScoreError {
        match describe_row_task(self.fields) {
            Some(looks_like) if !description_mentions(&looks_like, self.task) => {
                ScoreError::WrongTask {
                    location: self.location.clone(),
                    task: self.task.name(),
                    problem,
                    looks_like,
                }
            }
            _ => error,
        }
    }

    fn field(&self, name: &'static str) -> Result<&'a Value, ScoreError> {
        self.fields.get(name).ok_or_else(|| {
            self.or_wrong_task(
                format!("it has no `{name}` field"),
                ScoreError::MissingField {
                    location: self.location.clone(),
                    field: name,
                    task: self.task.name(),
                },
            )
        })
    }

    fn wrong_type(&self, name: &'static str, expected: &'static str, found: &Value) -> ScoreError {
        let found = json_type_name(found);
        self.or_wrong_task(
            format!("its `{name}` is {found}, not {expected}"),
            ScoreError::WrongFieldType {
                location: self.location.clone(),
                field: name,
                expected,
                found,
            },
        )
    }

    fn text(&self, name: &'static str) -> Result<&'a str, ScoreError> {
        let value = self.field(name)?;
        value
            .as_str()
            .ok_or_else(|| self.wrong_type(name, "a string", value))
    }

    /// A string field that may be `null` (`None`).
    fn nullable_text(&self, name: &'static str) -> Result<Option<&'a str>, ScoreError> {
        match self.field(name)? {
            Value::Null => Ok(None),
            Value::String(text) => Ok(Some(text)),
            other => Err(self.wrong_type(name, "a string or null", other)),
        }
    }

    fn class_names(&self, name: &'static str) -> Result<Vec<&'a str>, ScoreError> {
        const EXPECTED: &str = "an array of class-name strings";
        let value = self.field(name)?;
        let Value::Array(items) = value else {
            return Err(self.wrong_type(name, EXPECTED, value));
        };
        items
            .iter()
            .map(|item| {
                item.as_str()
                    .ok_or_else(|| self.wrong_type(name, EXPECTED, item))
            })
            .collect()
    }

    /// The vocabulary id of a label name.
    fn class_id(&self, label: &str) -> Result<u32, ScoreError> {
        self.task
            .vocabulary()
            .and_then(|vocabulary| vocabulary.id_of(label))
            .ok_or_else(|| self.unknown_label(label))
    }

    fn unknown_label(&self, label: &str) -> ScoreError {
        self.or_wrong_task(
            format!(
                "its label {label:?} is not in the {} vocabulary",
                self.task.name()
            ),
            ScoreError::UnknownLabel {
                location: self.location.clone(),
                task: self.task.name(),
                label: label.to_owned(),
            },
        )
    }

    /// The row's `syn_id`, or its 0-based position when absent or null.
    fn syn_id(&self) -> Result<i128, ScoreError> {
        match self.fields.get("syn_id") {
            None | Some(Value::Null) => Ok(self.index as i128),
            Some(value) => value
                .as_i64()
                .map(i128::from)
                .or_else(|| value.as_u64().map(i128::from))
                .ok_or_else(|| ScoreError::InvalidSynId {
                    location: self.location.clone(),
                    found: value.to_string(),
                }),
        }
    }

    fn syn_id_json(&self) -> Result<Value, ScoreError> {
        let syn_id = self.syn_id()?;
        Ok(i64::try_from(syn_id)
            .map(Value::from)
            .or_else(|_| u64::try_from(syn_id).map(Value::from))
            .unwrap_or(Value::Null))
    }
}

/// The JSON type of a value, for messages ("a string", "an array", ...).
pub(crate) fn json_type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    /// A predictions file in the temp directory, removed on drop.
    struct TempPredictions {
        path: PathBuf,
    }

    impl TempPredictions {
        fn new(name: &str, contents: &[u8]) -> Self {
            let path = std::env::temp_dir()
                .join(format!("adamllm-score-{}-{name}.jsonl", std::process::id()));
            std::fs::write(&path, contents).unwrap();
            Self { path }
        }
    }

    impl Drop for TempPredictions {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.path);
        }
    }

    fn file_error(task: BenchmarkTask, name: &str, contents: &str) -> (String, ScoreError) {
        let file = TempPredictions::new(name, contents.as_bytes());
        let error = score_predictions_file(task, &file.path).unwrap_err();
        let message = error.to_string();
        assert!(
            message.contains(&file.path.display().to_string())
                || matches!(error, ScoreError::NoRows),
            "message does not name the file: {message}"
        );
        (message, error)
    }

    #[test]
    fn missing_field_names_line_and_field() {
        let (message, error) = file_error(
            BenchmarkTask::Recipe1M,
            "missing",
            "{\"label\": \"Title: x.\", \"pred\": \"x\"}\n{\"label\": \"Title: y.\"}\n",
        );
        assert!(
            matches!(error, ScoreError::MissingField { field: "pred", .. }),
            "{error:?}"
        );
        assert!(message.contains("line 2"), "{message}");
        assert!(message.contains("`pred`"), "{message}");
    }

    #[test]
    fn unknown_label_names_line_and_label() {
        let (message, error) = file_error(
            BenchmarkTask::Food101,
            "label",
            "{\"label\": \"pizza\", \"pred\": \"pizza\"}\n{\"label\": \"pizzza\", \"pred\": \"x\"}\n",
        );
        assert!(
            matches!(error, ScoreError::UnknownLabel { .. }),
            "{error:?}"
        );
        assert!(
            message.contains("line 2") && message.contains("\"pizzza\""),
            "{message}"
        );

        let (message, _) = file_error(
            BenchmarkTask::FoodSeg103,
            "classes",
            "{\"label\": [\"pork\", \"unobtainium\"], \"pred\": \"pork\"}\n",
        );
        assert!(
            message.contains("line 1") && message.contains("unobtainium"),
            "{message}"
        );

        let (message, _) = file_error(
            BenchmarkTask::PmcVqa,
            "letter",
            "{\"label\": \"E\", \"A\": \"a\", \"B\": \"b\", \"C\": \"c\", \"D\": \"d\", \"pred\": \"A\"}\n",
        );
        assert!(
            message.contains("line 1") && message.contains("\"E\""),
            "{message}"
        );
    }

    #[test]
    fn malformed_json_names_line() {
        let (message, error) = file_error(
            BenchmarkTask::Recipe1M,
            "malformed",
            "{\"label\": \"a\", \"pred\": \"a\"}\n\n{\"label\": \"a\", \"pred\": }\n",
        );
        assert!(
            matches!(error, ScoreError::MalformedJson { .. }),
            "{error:?}"
        );
        assert!(
            message.contains("line 3") && message.contains("column"),
            "{message}"
        );
        assert!(!message.contains("line 1 "), "{message}");
    }

    #[test]
    fn empty_or_blank_file_is_an_error() {
        for (name, contents) in [("empty", ""), ("blank", "\n  \n\r\n")] {
            let (message, error) = file_error(BenchmarkTask::Slake, name, contents);
            assert!(matches!(error, ScoreError::EmptyFile { .. }), "{error:?}");
            assert!(message.contains("has no rows"), "{message}");
        }
    }

    #[test]
    fn file_of_another_task_is_recognised() {
        let foodseg_row = "{\"label\": [\"pork\", \"king oyster mushroom\"], \"pred\": \"pork\"}\n";
        let (message, error) = file_error(BenchmarkTask::VqaRad, "foodseg-as-vqa", foodseg_row);
        assert!(matches!(error, ScoreError::WrongTask { .. }), "{error:?}");
        assert!(message.contains("line 1"), "{message}");
        assert!(message.contains("`answer_type`"), "{message}");
        assert!(message.contains("look like FoodSeg103"), "{message}");

        let vqa_row = "{\"label\": \"yes\", \"answer_type\": \"CLOSED\", \"pred\": \"yes\"}\n";
        let (message, _) = file_error(BenchmarkTask::Food101, "vqa-as-food", vqa_row);
        assert!(message.contains("VQA_RAD, SLAKE or PathVQA"), "{message}");
        let (message, _) = file_error(BenchmarkTask::Recipe1M, "vqa-as-recipe", vqa_row);
        assert!(message.contains("VQA_RAD, SLAKE or PathVQA"), "{message}");

        let pmc_row = "{\"label\": \"A\", \"A\": \"a\", \"B\": \"b\", \"C\": \"c\", \"D\": \"d\", \"pred\": \"A\"}\n";
        let (message, _) = file_error(BenchmarkTask::Food101, "pmc-as-food", pmc_row);
        assert!(message.contains("look like PMC-VQA"), "{message}");

        let food_row = "{\"label\": \"bruschetta\", \"pred\": \"bruschetta\"}\n";
        let (message, _) = file_error(BenchmarkTask::Nutrition5K, "food-as-nutrition", food_row);
        assert!(message.contains("look like Food101"), "{message}");
    }

    #[test]
    fn wrong_types_are_named() {
        let (message, error) = file_error(BenchmarkTask::Slake, "not-object", "[1, 2]\n");
        assert!(matches!(error, ScoreError::NotAnObject { .. }), "{error:?}");
        assert!(
            message.contains("line 1") && message.contains("an array"),
            "{message}"
        );

        let (message, _) = file_error(
            BenchmarkTask::Slake,
            "pred-number",
            "{\"label\": \"yes\", \"answer_type\": \"CLOSED\", \"pred\": 3}\n",
        );
        assert!(
            message.contains("`pred` must be a string, found a number"),
            "{message}"
        );

        let (message, _) = file_error(
            BenchmarkTask::Slake,
            "answer-type",
            "{\"label\": \"yes\", \"answer_type\": \"closed\", \"pred\": \"yes\"}\n",
        );
        assert!(
            message.contains("`answer_type`") && message.contains("\"closed\""),
            "{message}"
        );

        let (message, _) = file_error(
            BenchmarkTask::PmcVqa,
            "syn-id",
            "{\"label\": \"A\", \"A\": \"a\", \"B\": \"b\", \"C\": \"c\", \"D\": \"d\", \"pred\": \"?\", \"syn_id\": \"7\"}\n",
        );
        assert!(message.contains("`syn_id` must be an integer"), "{message}");
    }

    #[test]
    fn unreadable_inputs() {
        let missing = std::env::temp_dir().join("adamllm-score-does-not-exist.jsonl");
        let error = score_predictions_file(BenchmarkTask::Recipe1M, &missing).unwrap_err();
        assert!(matches!(error, ScoreError::Io { .. }), "{error:?}");
        assert!(
            error
                .to_string()
                .contains("adamllm-score-does-not-exist.jsonl")
        );

        let file = TempPredictions::new("utf8", b"{\"label\": \"a\", \"pred\": \"a\"}\n\xff\xfe\n");
        let error = score_predictions_file(BenchmarkTask::Recipe1M, &file.path).unwrap_err();
        assert!(error.to_string().contains("line 2") && error.to_string().contains("UTF-8"));
    }

    #[test]
    fn row_slices_report_row_numbers() {
        assert!(matches!(
            score_rows(BenchmarkTask::Recipe1M, &[]),
            Err(ScoreError::NoRows)
        ));
        let rows = [json!({"label": "a", "pred": "a"}), json!({"label": "a"})];
        let message = score_rows(BenchmarkTask::Recipe1M, &rows)
            .unwrap_err()
            .to_string();
        assert!(
            message.starts_with("row 2: missing field `pred`"),
            "{message}"
        );
    }

    #[test]
    fn null_recipe_prediction_scores_zero_and_bom_is_ignored() {
        let file = TempPredictions::new(
            "null-pred",
            "\u{feff}{\"label\": \"Title: soup.\", \"pred\": null}\r\n{\"label\": \"Title: soup.\", \"pred\": \"Title: soup.\"}\r\n"
                .as_bytes(),
        );
        let score = score_predictions_file(BenchmarkTask::Recipe1M, &file.path).unwrap();
        assert_eq!(score.test_num, 2);
        assert_eq!(score.per_row[0]["rl"], json!(0.0));
        assert_eq!(score.per_row[1]["syn_id"], json!(1));
        assert!((score.metric("rl").unwrap() - 49.9999997500).abs() < 1e-6);
    }

    #[test]
    fn syn_id_defaults_to_row_position_for_the_random_fallback() {
        let row = |syn_id: Option<u64>| {
            let mut row =
                json!({"label": "A", "A": "a1", "B": "b1", "C": "c1", "D": "d1", "pred": "?"});
            if let Some(syn_id) = syn_id {
                row["syn_id"] = json!(syn_id);
            }
            row
        };
        let implicit =
            score_rows(BenchmarkTask::PmcVqa, &[row(None), row(None), row(None)]).unwrap();
        let explicit = score_rows(
            BenchmarkTask::PmcVqa,
            &[row(Some(0)), row(Some(1)), row(Some(2))],
        )
        .unwrap();
        assert_eq!(implicit.per_row, explicit.per_row);
        // CPython: random.Random(n).choice("ABCD") for n = 0, 1, 2 is D, B, A.
        let picked: Vec<&Value> = implicit.per_row.iter().map(|r| &r["pred_option"]).collect();
        assert_eq!(picked, [&json!("D"), &json!("B"), &json!("A")]);
    }

    #[test]
    fn serialized_score_keeps_key_order() {
        let rows = [json!({"label": "yes", "answer_type": "CLOSED", "pred": "yes"})];
        let score = score_rows(BenchmarkTask::VqaRad, &rows).unwrap();
        let text = serde_json::to_string(&score).unwrap();
        assert_eq!(
            text,
            "{\"task\":\"VQA_RAD\",\"test_num\":1,\"OPEN recall\":0.0,\
             \"CLOSED yes/no accuracy\":100.0,\"metric\":\"llava_med_open_recall_closed_accuracy\"}"
        );
        assert_eq!(score.to_json()["CLOSED yes/no accuracy"], json!(100.0));
    }
}
