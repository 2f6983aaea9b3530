//! Reading a JSON Lines predictions file into rows, each with the line it came from.

use std::path::Path;

use serde_json::Value;

use super::error::{RowLocation, ScoreError};

/// Reads the rows of a JSONL predictions file with their line numbers. Blank lines are
/// skipped; a UTF-8 byte-order mark at the start is ignored.
pub fn read_prediction_rows(path: &Path) -> Result<Vec<(RowLocation, Value)>, ScoreError> {
    let bytes = std::fs::read(path).map_err(|source| ScoreError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut rows = Vec::new();
    for (index, raw_line) in bytes.split(|&byte| byte == b'\n').enumerate() {
        let location = RowLocation::FileLine {
            path: path.to_path_buf(),
            line: index + 1,
        };
        let mut raw_line = raw_line.strip_suffix(b"\r").unwrap_or(raw_line);
        if index == 0 {
            raw_line = raw_line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(raw_line);
        }
        let Ok(line) = std::str::from_utf8(raw_line) else {
            return Err(ScoreError::InvalidUtf8 { location });
        };
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Value>(line) {
            Ok(value) => rows.push((location, value)),
            Err(error) => {
                return Err(ScoreError::MalformedJson {
                    location,
                    message: json_error_message(&error),
                });
            }
        }
    }
    if rows.is_empty() {
        return Err(ScoreError::EmptyFile {
            path: path.to_path_buf(),
        });
    }
    Ok(rows)
}

/// serde_json's message with its position rewritten as a column (each line is parsed on
/// its own, so its "line 1" would mislead).
fn json_error_message(error: &serde_json::Error) -> String {
    let full = error.to_string();
    let position = format!(" at line {} column {}", error.line(), error.column());
    let message = full.strip_suffix(&position).unwrap_or(&full);
    format!("{message} (column {})", error.column())
}
