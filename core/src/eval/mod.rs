//! Benchmark scoring: turns a model's predictions on the AdaMLLM evaluation tasks into the
//! numbers the paper reports, reproducing the reference scorers exactly (quirks included).
//!
//! | task | metric | score keys |
//! |---|---|---|
//! | `VQA_RAD`, `SLAKE`, `PathVQA` | LLaVA-Med open recall / closed accuracy | `OPEN recall`, `CLOSED yes/no accuracy` |
//! | `PMC-VQA`, `Food101` | multiple-choice accuracy | `acc` |
//! | `FoodSeg103` | multi-label F1 | `f1` |
//! | `Nutrition5K` | multi-label recall | `recall` |
//! | `Recipe1M` | ROUGE-L F | `rl` |
//!
//! Start with [`score_predictions_file`] or [`score_rows`]; the metrics are usable on their
//! own from [`metrics`].
//!
//! This module only refers to its own items (`super::` paths), so it can be compiled on its
//! own.

#[cfg(feature = "benchmark-files")]
pub mod benchmark;
#[cfg(feature = "benchmark-files")]
pub mod custom_task;
pub mod error;
#[cfg(feature = "benchmark-files")]
pub mod hf_layout;
pub mod metrics;
pub mod normalize;
pub mod predictions_file;
pub mod python_random;
pub mod python_text;
#[cfg(feature = "benchmark-files")]
pub mod runner;
pub mod score;
pub mod tasks;
pub mod vocab;

pub use error::{RowLocation, ScoreError, UnknownTaskError};
pub use metrics::exact_match::{exact_match, exact_match_normalized};
pub use metrics::llava_med::{TokenOverlap, closed_answer_hit, open_answer_overlap};
pub use metrics::multi_label::{LabelConfusion, parse_class_mentions};
pub use metrics::multiple_choice::{
    ChoiceMatch, ChoiceOption, ParsedChoice, parse_multiple_choice,
};
pub use metrics::rouge::{RougeError, RougeL, rouge_l};
pub use normalize::normalize_llava_med_answer;
pub use predictions_file::read_prediction_rows;
pub use python_random::PythonRandom;
pub use score::{
    AlternativeMetric, TaskScore, score_predictions_file, score_predictions_file_with, score_rows,
};
pub use tasks::{BenchmarkTask, LabelShape, MetricKind};
