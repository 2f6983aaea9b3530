//! Where a model's files come from: a folder on disk (CLI) or files held in memory (the
//! browser page, where the user picks a folder and no file system exists).
//!
//! Every loader (config, tokenizer, image processor, checkpoint) reads through
//! [`ModelFiles`], so the CLI and the page load a model with the same code and report the
//! same errors, naming `<folder>/<file>` in both.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::de::DeserializeOwned;

use crate::io::{FileError, json_error};

/// A model folder: on disk, or a set of named files in memory.
#[derive(Clone, Debug)]
pub enum ModelFiles {
    /// A folder on disk.
    Dir(PathBuf),
    /// Files held in memory, keyed by file name (no sub-folders).
    Memory {
        /// Name of the folder, used in messages and run records.
        name: String,
        /// File name → contents.
        files: BTreeMap<String, Arc<Vec<u8>>>,
    },
}

impl ModelFiles {
    /// In-memory files from (name, bytes) pairs. Names are reduced to their last path
    /// component, so a browser's `folder/config.json` becomes `config.json`.
    pub fn in_memory(
        name: impl Into<String>,
        files: impl IntoIterator<Item = (String, Vec<u8>)>,
    ) -> Self {
        let files = files
            .into_iter()
            .map(|(path, bytes)| {
                let base = path.rsplit(['/', '\\']).next().unwrap_or(&path).to_owned();
                (base, Arc::new(bytes))
            })
            .collect();
        Self::Memory {
            name: name.into(),
            files,
        }
    }

    /// The folder as a path (for messages and records).
    pub fn root(&self) -> PathBuf {
        match self {
            Self::Dir(dir) => dir.clone(),
            Self::Memory { name, .. } => PathBuf::from(name),
        }
    }

    /// The path a file is named by in messages.
    pub fn path(&self, file: &str) -> PathBuf {
        self.root().join(file)
    }

    /// Whether the folder exists (always true in memory).
    pub fn is_present(&self) -> bool {
        match self {
            Self::Dir(dir) => dir.is_dir(),
            Self::Memory { .. } => true,
        }
    }

    /// Whether a file exists.
    pub fn exists(&self, file: &str) -> bool {
        match self {
            Self::Dir(dir) => dir.join(file).is_file(),
            Self::Memory { files, .. } => files.contains_key(file),
        }
    }

    /// File names present (sorted; on disk only regular files directly in the folder).
    pub fn names(&self) -> Vec<String> {
        match self {
            Self::Dir(dir) => {
                let mut names: Vec<String> = std::fs::read_dir(dir)
                    .into_iter()
                    .flatten()
                    .flatten()
                    .filter(|e| e.file_type().map(|t| t.is_file()).unwrap_or(false))
                    .filter_map(|e| e.file_name().to_str().map(str::to_owned))
                    .collect();
                names.sort();
                names
            }
            Self::Memory { files, .. } => files.keys().cloned().collect(),
        }
    }

    /// Total size in bytes of the files present.
    pub fn total_bytes(&self) -> u64 {
        self.names().iter().filter_map(|n| self.len(n).ok()).sum()
    }

    /// A whole file.
    pub fn read(&self, file: &str) -> Result<Vec<u8>, FileError> {
        match self {
            Self::Dir(dir) => {
                let path = dir.join(file);
                std::fs::read(&path).map_err(|e| FileError::io(&path, e))
            }
            Self::Memory { files, .. } => files
                .get(file)
                .map(|bytes| bytes.as_ref().clone())
                .ok_or_else(|| FileError::new(&self.path(file), "missing from the model folder")),
        }
    }

    /// A whole file as UTF-8 text.
    pub fn read_text(&self, file: &str) -> Result<String, FileError> {
        String::from_utf8(self.read(file)?)
            .map_err(|_| FileError::new(&self.path(file), "not UTF-8 text"))
    }

    /// A JSON file parsed into `T`; errors name the file and line.
    pub fn read_json<T: DeserializeOwned>(&self, file: &str) -> Result<T, FileError> {
        let text = self.read_text(file)?;
        serde_json::from_str(&text).map_err(|e| json_error(&self.path(file), &e))
    }

    /// Reads a `config.json`-like file whose keys may appear under two names (transformers'
    /// full `to_dict()` form writes both, e.g. Qwen2-VL's `in_chans` and `in_channels`):
    /// for each `(parent, key, alias)` (parent `""` for the top level) an alias equal to its key
    /// is dropped, and one that disagrees is a named error with both values.
    pub fn read_config_json<T: DeserializeOwned>(
        &self,
        file: &str,
        aliases: &[(&str, &str, &str)],
    ) -> Result<T, FileError> {
        let path = self.path(file);
        let text = self.read_text(file)?;
        let mut value: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| json_error(&path, &e))?;
        let mut dropped = false;
        for (parent, key, alias) in aliases {
            let object = if parent.is_empty() {
                value.as_object_mut()
            } else {
                value.get_mut(*parent).and_then(|v| v.as_object_mut())
            };
            let Some(object) = object else { continue };
            if let (Some(a), Some(b)) = (object.get(*key), object.get(*alias)) {
                let dotted = |k: &str| {
                    if parent.is_empty() {
                        k.to_string()
                    } else {
                        format!("{parent}.{k}")
                    }
                };
                if a != b {
                    return Err(FileError::key(
                        &path,
                        dotted(key),
                        format!(
                            "{} is {a} but its alias {} is {b}",
                            dotted(key),
                            dotted(alias)
                        ),
                    ));
                }
                object.remove(*alias);
                dropped = true;
            }
        }
        if !dropped {
            // The text itself, so errors keep their line numbers.
            return serde_json::from_str(&text).map_err(|e| json_error(&path, &e));
        }
        serde_json::from_value(value).map_err(|e| FileError::new(&path, e.to_string()))
    }

    /// The size of a file in bytes.
    pub fn len(&self, file: &str) -> Result<u64, FileError> {
        match self {
            Self::Dir(dir) => {
                let path = dir.join(file);
                std::fs::metadata(&path)
                    .map(|m| m.len())
                    .map_err(|e| FileError::io(&path, e))
            }
            Self::Memory { files, .. } => files
                .get(file)
                .map(|bytes| bytes.len() as u64)
                .ok_or_else(|| FileError::new(&self.path(file), "missing from the model folder")),
        }
    }

    /// `len` bytes of a file from byte `start` (streamed from disk: a checkpoint is never read
    /// whole into memory just to take one tensor).
    pub fn read_range(&self, file: &str, start: u64, len: usize) -> Result<Vec<u8>, FileError> {
        let path = self.path(file);
        let short = || FileError::new(&path, format!("shorter than {} bytes", start + len as u64));
        match self {
            Self::Dir(dir) => {
                let path = dir.join(file);
                let mut handle = File::open(&path).map_err(|e| FileError::io(&path, e))?;
                handle
                    .seek(SeekFrom::Start(start))
                    .map_err(|e| FileError::io(&path, e))?;
                let mut bytes = vec![0u8; len];
                handle.read_exact(&mut bytes).map_err(|_| short())?;
                Ok(bytes)
            }
            Self::Memory { files, .. } => {
                let bytes = files.get(file).ok_or_else(|| {
                    FileError::new(&self.path(file), "missing from the model folder")
                })?;
                let start = usize::try_from(start).map_err(|_| short())?;
                bytes
                    .get(start..start.checked_add(len).ok_or_else(short)?)
                    .map(<[u8]>::to_vec)
                    .ok_or_else(short)
            }
        }
    }
}

impl From<&Path> for ModelFiles {
    fn from(dir: &Path) -> Self {
        Self::Dir(dir.to_path_buf())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_and_disk_read_the_same_bytes() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.json"), b"{\"a\": 1}").unwrap();
        std::fs::write(dir.path().join("w.bin"), [0u8, 1, 2, 3, 4, 5]).unwrap();
        let disk = ModelFiles::Dir(dir.path().to_path_buf());
        let memory = ModelFiles::in_memory(
            "picked",
            [
                ("picked/config.json".to_owned(), b"{\"a\": 1}".to_vec()),
                ("picked/w.bin".to_owned(), vec![0, 1, 2, 3, 4, 5]),
            ],
        );
        for files in [&disk, &memory] {
            assert_eq!(files.names(), vec!["config.json", "w.bin"]);
            assert_eq!(files.read_range("w.bin", 2, 3).unwrap(), vec![2, 3, 4]);
            assert_eq!(files.len("w.bin").unwrap(), 6);
            let v: serde_json::Value = files.read_json("config.json").unwrap();
            assert_eq!(v["a"], 1);
            let short = files.read_range("w.bin", 4, 3).unwrap_err().to_string();
            assert!(
                short.contains("w.bin") && short.contains("shorter"),
                "{short}"
            );
            let missing = files.read("tokenizer.json").unwrap_err();
            assert!(missing.path.ends_with("tokenizer.json"), "{missing}");
        }
        assert_eq!(
            memory.path("config.json"),
            PathBuf::from("picked/config.json")
        );
    }

    #[test]
    fn json_errors_name_the_file_and_line() {
        let memory = ModelFiles::in_memory(
            "m",
            [("config.json".to_owned(), b"{\n\"a\": ,\n}".to_vec())],
        );
        let e = memory
            .read_json::<serde_json::Value>("config.json")
            .unwrap_err();
        assert_eq!(e.path, PathBuf::from("m/config.json"));
        assert_eq!(e.location.as_deref(), Some("line 2"));
    }
}
