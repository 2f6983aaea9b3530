//! Golden tests of benchmark scoring: every per-row score, every parsed option and every
//! task-level number of the golden cases must be reproduced within 1e-9.
//!
//! The golden cases (`<task>.jsonl`, `<task>.per_row.jsonl`, `<task>.expected.json`) are
//! read from the repository copy in `tests/data/golden/metrics/`, and also from the shared
//! originals in `../shared/golden/metrics/` (next to the repository) when present.

use std::path::{Path, PathBuf};

use adamllm::eval::{BenchmarkTask, TaskScore, score_predictions_file};
use serde_json::Value;

const TOLERANCE: f64 = 1e-9;

fn golden_dirs() -> Vec<PathBuf> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let repository_copy = manifest.join("../tests/data/golden/metrics");
    assert!(
        repository_copy.is_dir(),
        "missing golden cases at {}",
        repository_copy.display()
    );
    let mut dirs = vec![repository_copy];
    let shared = manifest.join("../../shared/golden/metrics");
    if shared.is_dir() {
        dirs.push(shared);
    }
    dirs
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

fn read_jsonl(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()));
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .enumerate()
        .map(|(index, line)| {
            serde_json::from_str(line)
                .unwrap_or_else(|error| panic!("{} line {}: {error}", path.display(), index + 1))
        })
        .collect()
}

/// Compares `actual` with `expected` field by field; numbers within [`TOLERANCE`], other
/// values (strings, booleans, the JSON type of parsed options) exactly. Returns how many
/// numbers were compared.
fn assert_same(expected: &Value, actual: &Value, context: &str) -> usize {
    match (expected, actual) {
        (Value::Number(expected), Value::Number(actual)) => {
            let (expected, actual) = (expected.as_f64().unwrap(), actual.as_f64().unwrap());
            assert!(
                (expected - actual).abs() <= TOLERANCE,
                "{context}: expected {expected}, got {actual}"
            );
            1
        }
        (Value::Array(expected), Value::Array(actual)) => {
            assert_eq!(expected.len(), actual.len(), "{context}: array length");
            expected
                .iter()
                .zip(actual)
                .enumerate()
                .map(|(index, (e, a))| assert_same(e, a, &format!("{context}[{index}]")))
                .sum()
        }
        (Value::Object(expected), Value::Object(actual)) => {
            let mut expected_keys: Vec<&String> = expected.keys().collect();
            let mut actual_keys: Vec<&String> = actual.keys().collect();
            expected_keys.sort();
            actual_keys.sort();
            assert_eq!(expected_keys, actual_keys, "{context}: keys");
            expected
                .iter()
                .map(|(key, e)| assert_same(e, &actual[key], &format!("{context}.{key}")))
                .sum()
        }
        _ => {
            assert_eq!(expected, actual, "{context}");
            0
        }
    }
}

fn assert_task_totals(expected: &Value, score: &TaskScore, context: &str) -> usize {
    let expected = expected.as_object().expect("expected.json is an object");
    assert_eq!(
        expected["task"].as_str(),
        Some(score.task.as_str()),
        "{context}: task"
    );
    assert_eq!(
        expected["test_num"].as_u64(),
        Some(score.test_num as u64),
        "{context}: test_num"
    );
    let mut checked = 1;
    for (key, value) in expected {
        if key == "task" || key == "test_num" {
            continue;
        }
        let ours = score
            .metric(key)
            .unwrap_or_else(|| panic!("{context}: no task score {key:?}"));
        let theirs = value.as_f64().expect("task scores are numbers");
        assert!(
            (ours - theirs).abs() <= TOLERANCE,
            "{context}: {key}: expected {theirs}, got {ours}"
        );
        checked += 1;
    }
    assert_eq!(
        score.metrics.len(),
        expected.len() - 2,
        "{context}: extra task scores"
    );
    // The JSON form carries the same numbers.
    let json = score.to_json();
    assert_eq!(json["task"], expected["task"], "{context}: to_json task");
    assert_eq!(
        json["test_num"], expected["test_num"],
        "{context}: to_json test_num"
    );
    assert!(json["metric"].is_string(), "{context}: to_json metric");
    checked
}

fn check_task(task: BenchmarkTask) {
    let mut checked = 0;
    for dir in golden_dirs() {
        let name = task.name();
        let predictions = dir.join(format!("{name}.jsonl"));
        let context = predictions.display().to_string();
        let score = score_predictions_file(task, &predictions)
            .unwrap_or_else(|error| panic!("{context}: {error}"));

        let expected_rows = read_jsonl(&dir.join(format!("{name}.per_row.jsonl")));
        assert_eq!(score.per_row.len(), expected_rows.len(), "{context}: rows");
        for (index, (expected, actual)) in expected_rows.iter().zip(&score.per_row).enumerate() {
            checked += assert_same(expected, actual, &format!("{context} row {}", index + 1));
        }
        let expected_totals = read_json(&dir.join(format!("{name}.expected.json")));
        checked += assert_task_totals(&expected_totals, &score, &context);
    }
    eprintln!("{}: {checked} golden numbers checked", task.name());
    assert!(checked > 0);
}

#[test]
fn vqa_rad_matches_golden() {
    check_task(BenchmarkTask::VqaRad);
}

#[test]
fn slake_matches_golden() {
    check_task(BenchmarkTask::Slake);
}

#[test]
fn pathvqa_matches_golden() {
    check_task(BenchmarkTask::PathVqa);
}

#[test]
fn pmc_vqa_matches_golden() {
    check_task(BenchmarkTask::PmcVqa);
}

#[test]
fn food101_matches_golden() {
    check_task(BenchmarkTask::Food101);
}

#[test]
fn foodseg103_matches_golden() {
    check_task(BenchmarkTask::FoodSeg103);
}

#[test]
fn nutrition5k_matches_golden() {
    check_task(BenchmarkTask::Nutrition5K);
}

#[test]
fn recipe1m_matches_golden() {
    check_task(BenchmarkTask::Recipe1M);
}

#[test]
fn every_task_has_golden_cases() {
    let dir = &golden_dirs()[0];
    for task in BenchmarkTask::ALL {
        for suffix in ["jsonl", "per_row.jsonl", "expected.json"] {
            let path = dir.join(format!("{}.{suffix}", task.name()));
            assert!(path.is_file(), "missing {}", path.display());
        }
    }
}
