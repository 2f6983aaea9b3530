//! File helpers shared by every stage: errors that name the file (and line or key), JSON
//! reading, and atomic writes (temp file in the same folder, then rename) so that a crash
//! never leaves a half-written output behind.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

/// An error about one file, always naming it; `location` adds a line or key when known.
#[derive(Debug)]
pub struct FileError {
    /// The file concerned.
    pub path: PathBuf,
    /// `line 3`, `key "hidden_size"`, `tensor "model.norm.weight"`, ... when known.
    pub location: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl FileError {
    /// An error about the file as a whole.
    pub fn new(path: &Path, message: impl Into<String>) -> Self {
        Self {
            path: path.to_path_buf(),
            location: None,
            message: message.into(),
        }
    }

    /// An error at a 1-based line of the file.
    pub fn line(path: &Path, line: usize, message: impl Into<String>) -> Self {
        Self {
            path: path.to_path_buf(),
            location: Some(format!("line {line}")),
            message: message.into(),
        }
    }

    /// An error about one key of a JSON/YAML file.
    pub fn key(path: &Path, key: impl AsRef<str>, message: impl Into<String>) -> Self {
        Self {
            path: path.to_path_buf(),
            location: Some(format!("key `{}`", key.as_ref())),
            message: message.into(),
        }
    }

    /// An error about one tensor of a checkpoint.
    pub fn tensor(path: &Path, name: impl AsRef<str>, message: impl Into<String>) -> Self {
        Self {
            path: path.to_path_buf(),
            location: Some(format!("tensor `{}`", name.as_ref())),
            message: message.into(),
        }
    }

    /// An I/O failure on the file.
    pub fn io(path: &Path, err: std::io::Error) -> Self {
        Self::new(path, err.to_string())
    }
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.location {
            Some(loc) => write!(f, "{}: {loc}: {}", self.path.display(), self.message),
            None => write!(f, "{}: {}", self.path.display(), self.message),
        }
    }
}

impl std::error::Error for FileError {}

/// Reads a JSON file into `T`. Syntax errors report line and column; missing or mistyped
/// fields report serde's description, which names the key.
pub fn read_json_file<T: DeserializeOwned>(path: &Path) -> Result<T, FileError> {
    let text = std::fs::read_to_string(path).map_err(|e| FileError::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| json_error(path, &e))
}

/// Converts a serde_json error into a [`FileError`] with its line.
pub fn json_error(path: &Path, err: &serde_json::Error) -> FileError {
    if err.line() > 0 {
        let msg = err.to_string();
        // serde_json stops at its fixed nesting depth; say which limit that is.
        let msg = match msg.strip_prefix("recursion limit exceeded") {
            Some(rest) => format!(
                "the JSON nests deeper than the limit of {} levels{rest}",
                crate::limits::MAX_JSON_NESTING
            ),
            None => msg,
        };
        // serde_json appends " at line L column C"; keep the column, the line goes in front.
        let msg = msg
            .rsplit_once(" at line ")
            .map(|(head, tail)| {
                let column = tail.split_once("column ").map(|(_, c)| c).unwrap_or("");
                format!("{head} (column {column})")
            })
            .unwrap_or(msg);
        FileError::line(path, err.line(), msg)
    } else {
        FileError::new(path, err.to_string())
    }
}

/// Writes `bytes` to `path` atomically: a temp file in the same folder, fsync, rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), FileError> {
    write_atomic_with(path, |w| w.write_all(bytes))
}

/// Writes `path` atomically through a callback that receives the temp file.
pub fn write_atomic_with(
    path: &Path,
    write: impl FnOnce(&mut std::fs::File) -> std::io::Result<()>,
) -> Result<(), FileError> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| FileError::io(dir, e))?;
    let mut builder = tempfile::Builder::new();
    builder.prefix(".tmp-");
    // tempfile creates 0600 files; results are ordinary files others may read (0644 less the
    // umask, as `File::create` would give).
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(std::fs::Permissions::from_mode(0o644));
    }
    let mut tmp = builder
        .tempfile_in(dir)
        .map_err(|e| FileError::io(dir, e))?;
    write(tmp.as_file_mut()).map_err(|e| FileError::io(path, e))?;
    tmp.as_file()
        .sync_all()
        .map_err(|e| FileError::io(path, e))?;
    tmp.persist(path)
        .map_err(|e| FileError::io(path, e.error))?;
    Ok(())
}

/// JSON lines text: one object a line, each ending in `\n` (the layout of every `.jsonl` we
/// write, shared with the browser page's downloads).
pub fn jsonl_text<T: serde::Serialize>(
    rows: impl IntoIterator<Item = T>,
) -> Result<String, serde_json::Error> {
    let mut text = String::new();
    for row in rows {
        text.push_str(&serde_json::to_string(&row)?);
        text.push('\n');
    }
    Ok(text)
}

/// Pretty JSON text ending in a newline (the layout of every `.json` we write).
pub fn json_text<T: serde::Serialize>(value: &T) -> Result<String, serde_json::Error> {
    let mut text = serde_json::to_string_pretty(value)?;
    text.push('\n');
    Ok(text)
}

/// Writes `rows` as JSON lines ([`jsonl_text`]) atomically.
pub fn write_jsonl_atomic<T: serde::Serialize>(
    path: &Path,
    rows: impl IntoIterator<Item = T>,
) -> Result<(), FileError> {
    let text =
        jsonl_text(rows).map_err(|e| FileError::new(path, format!("cannot serialize: {e}")))?;
    write_atomic(path, text.as_bytes())
}

/// Serializes `value` as pretty JSON ([`json_text`]) and writes it atomically.
pub fn write_json_atomic<T: serde::Serialize>(path: &Path, value: &T) -> Result<(), FileError> {
    let text =
        json_text(value).map_err(|e| FileError::new(path, format!("cannot serialize: {e}")))?;
    write_atomic(path, text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_errors_name_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("config.json");
        std::fs::write(&p, "{\n  \"a\": 1,\n  \"b\": ,\n}").unwrap();
        let err = read_json_file::<serde_json::Value>(&p).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("config.json"), "{text}");
        assert!(text.contains("line 3"), "{text}");
    }

    #[test]
    fn json_nested_past_the_limit_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("state.json");
        let depth = crate::limits::MAX_JSON_NESTING + 1;
        std::fs::write(&p, format!("{}1{}", "[".repeat(depth), "]".repeat(depth))).unwrap();
        let text = read_json_file::<serde_json::Value>(&p)
            .unwrap_err()
            .to_string();
        assert!(
            text.contains("state.json")
                && text.contains("line 1")
                && text.contains("nests deeper than the limit of 127 levels"),
            "{text}"
        );
        let ok = crate::limits::MAX_JSON_NESTING;
        std::fs::write(&p, format!("{}1{}", "[".repeat(ok), "]".repeat(ok))).unwrap();
        read_json_file::<serde_json::Value>(&p).unwrap();
    }

    #[test]
    fn atomic_write_replaces_whole_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("out.json");
        write_json_atomic(&p, &serde_json::json!({"x": 1})).unwrap();
        write_json_atomic(&p, &serde_json::json!({"x": 2})).unwrap();
        let v: serde_json::Value = read_json_file(&p).unwrap();
        assert_eq!(v["x"], 2);
        let leftovers = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(leftovers, 1);
    }
}
