//! A resumable cache of finished rows for long generation jobs (synthesis, filtering).
//!
//! Rows are written in chunks: one file per batch, `chunk-<first>-<last>.jsonl`, written to a
//! temporary name, synced and renamed, so a kill leaves either the whole chunk or nothing.
//! A resumed run loads every chunk, skips the ids they hold and writes only new chunks; the
//! final output is merged in id order from the cache, so no row is duplicated or lost.
//! `run.json` in the cache folder records what the rows belong to (model, input, settings);
//! a run with other settings is refused rather than mixed in.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};

use super::SynthError;
use crate::io::{FileError, write_json_atomic, write_jsonl_atomic};

const RUN_FILE: &str = "run.json";

/// A finished id: an output row, or the reason it was left out.
#[derive(Debug, Clone, PartialEq)]
pub enum CachedEntry {
    /// The output row.
    Row(Map<String, Value>),
    /// Left out (bad image, bad prompt): the reason for `skipped.jsonl`.
    Skipped(String),
}

/// The cache folder of one job.
#[derive(Debug, Clone)]
pub struct ChunkCache {
    dir: PathBuf,
}

impl ChunkCache {
    /// Opens (creating) the cache in `dir` for the run described by `run`. A cache holding
    /// chunks of a different run is an error that names the folder.
    pub fn open(dir: &Path, run: &Value) -> Result<Self, SynthError> {
        std::fs::create_dir_all(dir).map_err(|e| FileError::io(dir, e))?;
        let cache = Self {
            dir: dir.to_path_buf(),
        };
        let run_path = dir.join(RUN_FILE);
        if cache.chunk_files()?.is_empty() {
            write_json_atomic(&run_path, run)?;
            return Ok(cache);
        }
        let earlier: Value = match std::fs::read(&run_path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            Err(_) => Value::Null,
        };
        if &earlier != run {
            return Err(SynthError::Resume {
                path: dir.to_path_buf(),
                message: format!(
                    "the cached rows belong to another run ({earlier}); this run is {run}. \
                     Use another output, or delete the cache folder to start over"
                ),
            });
        }
        Ok(cache)
    }

    /// A cache folder written earlier, for reading only (merging finished shards).
    pub fn existing(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
        }
    }

    /// The run record saved in the cache folder `dir`, if it has a readable one.
    pub fn recorded_run(dir: &Path) -> Option<Value> {
        let bytes = std::fs::read(dir.join(RUN_FILE)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Every finished id in the shard folders under `root` (see [`crate::shard`]), finished
    /// or not: an unsharded run of the same job takes them as done. A shard folder of another
    /// run is an error naming it.
    pub fn load_shards(
        root: &Path,
        run: &Value,
    ) -> Result<BTreeMap<usize, CachedEntry>, SynthError> {
        let mut done = BTreeMap::new();
        for (folder, _) in crate::shard::shard_folders(root)? {
            let recorded = Self::recorded_run(&folder);
            if recorded.as_ref() != Some(run) {
                return Err(SynthError::Resume {
                    path: folder,
                    message: format!(
                        "this shard belongs to another run ({}); this run is {run}. Delete \
                         it, or run with the shard's settings",
                        recorded.unwrap_or(Value::Null)
                    ),
                });
            }
            for (id, entry) in Self::existing(&folder).load()? {
                done.entry(id).or_insert(entry);
            }
        }
        Ok(done)
    }

    /// The cache folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn chunk_files(&self) -> Result<Vec<PathBuf>, FileError> {
        let mut files = Vec::new();
        let entries = std::fs::read_dir(&self.dir).map_err(|e| FileError::io(&self.dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| FileError::io(&self.dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("chunk-") && name.ends_with(".jsonl") {
                files.push(entry.path());
            }
        }
        files.sort();
        Ok(files)
    }

    /// Every finished id. A chunk that cannot be read is an error naming it (chunks are
    /// written whole, so this means outside damage).
    pub fn load(&self) -> Result<BTreeMap<usize, CachedEntry>, FileError> {
        let mut done = BTreeMap::new();
        for file in self.chunk_files()? {
            let text = std::fs::read_to_string(&file).map_err(|e| FileError::io(&file, e))?;
            for (i, line) in text.lines().enumerate() {
                let value: Value = serde_json::from_str(line)
                    .map_err(|e| FileError::line(&file, i + 1, format!("malformed JSON: {e}")))?;
                let id = value
                    .get("syn_id")
                    .and_then(Value::as_u64)
                    .ok_or_else(|| FileError::line(&file, i + 1, "no integer syn_id"))?;
                let entry = match (value.get("row"), value.get("skipped")) {
                    (Some(Value::Object(row)), _) => CachedEntry::Row(row.clone()),
                    (_, Some(Value::String(reason))) => CachedEntry::Skipped(reason.clone()),
                    _ => return Err(FileError::line(&file, i + 1, "neither row nor skipped")),
                };
                done.entry(id as usize).or_insert(entry);
            }
        }
        Ok(done)
    }

    /// Writes one chunk of finished ids (atomically).
    pub fn write_chunk(&self, entries: &[(usize, CachedEntry)]) -> Result<(), FileError> {
        let (Some(first), Some(last)) = (entries.first(), entries.last()) else {
            return Ok(());
        };
        let lines = entries.iter().map(|(id, entry)| match entry {
            CachedEntry::Row(row) => json!({"syn_id": id, "row": row}),
            CachedEntry::Skipped(reason) => json!({"syn_id": id, "skipped": reason}),
        });
        let name = format!("chunk-{:09}-{:09}.jsonl", first.0, last.0);
        write_jsonl_atomic(&self.dir.join(name), lines)
    }

    /// Deletes the cache once its rows are merged into the final output.
    pub fn remove(self) -> Result<(), FileError> {
        std::fs::remove_dir_all(&self.dir).map_err(|e| FileError::io(&self.dir, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(text: &str) -> CachedEntry {
        let mut map = Map::new();
        map.insert("pred".into(), json!(text));
        CachedEntry::Row(map)
    }

    #[test]
    fn chunks_round_trip_and_other_runs_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let cache_dir = dir.path().join("cache");
        let run = json!({"model": "m", "input": "abc"});
        let cache = ChunkCache::open(&cache_dir, &run).unwrap();
        cache
            .write_chunk(&[(0, row("a")), (1, CachedEntry::Skipped("bad image".into()))])
            .unwrap();
        cache.write_chunk(&[(5, row("f"))]).unwrap();
        // A torn temporary file (a kill during a write) is ignored.
        std::fs::write(
            cache_dir.join(".chunk-000000006.tmp"),
            "{\"syn_id\": 6, \"ro",
        )
        .unwrap();
        let again = ChunkCache::open(&cache_dir, &run).unwrap();
        let done = again.load().unwrap();
        assert_eq!(done.keys().copied().collect::<Vec<_>>(), [0, 1, 5]);
        assert_eq!(done[&0], row("a"));
        assert_eq!(done[&1], CachedEntry::Skipped("bad image".into()));
        let other = json!({"model": "other", "input": "abc"});
        let error = ChunkCache::open(&cache_dir, &other)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("another run") && error.contains("cache"),
            "{error}"
        );
        again.remove().unwrap();
        assert!(!cache_dir.exists());
    }
}
