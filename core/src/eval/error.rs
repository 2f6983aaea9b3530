//! Errors of benchmark scoring, each naming where in the input the problem is.

use std::fmt;
use std::path::PathBuf;

/// Where a prediction row came from: a line of a JSONL file, or a position in a slice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RowLocation {
    /// 1-based line of a predictions file.
    FileLine {
        /// The predictions file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
    },
    /// 1-based position in the rows given to [`score_rows`](super::score::score_rows).
    Row {
        /// 1-based row number.
        number: usize,
    },
}

impl fmt::Display for RowLocation {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::FileLine { path, line } => write!(formatter, "{}, line {line}", path.display()),
            Self::Row { number } => write!(formatter, "row {number}"),
        }
    }
}

/// Why a predictions file or row set could not be scored.
#[derive(Debug, thiserror::Error)]
pub enum ScoreError {
    /// The predictions file could not be read.
    #[error("cannot read predictions file {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// The predictions file has no rows (it is empty or blank).
    #[error("predictions file {} has no rows", path.display())]
    EmptyFile {
        /// The file.
        path: PathBuf,
    },

    /// No rows were given to score.
    #[error("no prediction rows to score")]
    NoRows,

    /// A line is not valid UTF-8.
    #[error("{location}: line is not valid UTF-8")]
    InvalidUtf8 {
        /// Where.
        location: RowLocation,
    },

    /// A line is not valid JSON.
    #[error("{location}: malformed JSON: {message}")]
    MalformedJson {
        /// Where.
        location: RowLocation,
        /// The parser's message (with the column).
        message: String,
    },

    /// A row is valid JSON but not an object.
    #[error("{location}: expected a JSON object, found {found}")]
    NotAnObject {
        /// Where.
        location: RowLocation,
        /// The JSON type found.
        found: &'static str,
    },

    /// A field the task needs is absent.
    #[error("{location}: missing field `{field}` (required by {task})")]
    MissingField {
        /// Where.
        location: RowLocation,
        /// The missing field.
        field: &'static str,
        /// The task being scored.
        task: &'static str,
    },

    /// A field has the wrong JSON type.
    #[error("{location}: field `{field}` must be {expected}, found {found}")]
    WrongFieldType {
        /// Where.
        location: RowLocation,
        /// The field.
        field: &'static str,
        /// What the task needs.
        expected: &'static str,
        /// What was found (a JSON type name).
        found: &'static str,
    },

    /// The rows belong to another benchmark.
    #[error(
        "{location}: this is not a {task} predictions file ({problem}); the rows look like {looks_like}"
    )]
    WrongTask {
        /// Where the mismatch was noticed.
        location: RowLocation,
        /// The task being scored.
        task: &'static str,
        /// What is wrong with the row for this task.
        problem: String,
        /// The task (or tasks) the row looks like.
        looks_like: String,
    },

    /// A label is not in the task's vocabulary (or not one of its choices).
    #[error("{location}: label {label:?} is not in the {task} vocabulary")]
    UnknownLabel {
        /// Where.
        location: RowLocation,
        /// The task being scored.
        task: &'static str,
        /// The label.
        label: String,
    },

    /// `syn_id` is not an integer.
    #[error("{location}: field `syn_id` must be an integer, found {found}")]
    InvalidSynId {
        /// Where.
        location: RowLocation,
        /// The value found, as JSON.
        found: String,
    },

    /// `answer_type` is neither `OPEN` nor `CLOSED`.
    #[error("{location}: field `answer_type` must be \"OPEN\" or \"CLOSED\", found {found:?}")]
    UnknownAnswerType {
        /// Where.
        location: RowLocation,
        /// The value found.
        found: String,
    },
}

/// A task name that is not one of the benchmarks.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown task {name:?}; known tasks: {known}")]
pub struct UnknownTaskError {
    /// The name given.
    pub name: String,
    /// The known task names, comma-separated.
    pub known: String,
}
