//! Sharded generation jobs: `synthesize`, `filter` and `eval` with `--shard K/N`, and merging
//! the parts back into the files one unsharded run writes.
//!
//! Shard `K/N` handles the rows whose index (position in the job's input) is `≡ K (mod N)`,
//! the split the authors' `distribute` makes, so the N processes of a Slurm array or an
//! `xargs -P` line share the work without talking to each other. Each shard works in its own
//! folder, `<root>/K-of-N/` (the root is `<out>/shards` for the folder outputs of
//! `synthesize` and `eval`, `<output>.shards` beside `filter`'s output file), resumable like an
//! unsharded run, and leaves [`SHARD_FILE`] there when it has finished: what it answered and
//! the run record (model, input digest, settings) its rows belong to.
//!
//! [`complete_set`] is the merge's check: one finished shard for every `K` of one `N`, all of
//! the same run, none repeated, every row answered once. Anything else is refused and nothing
//! is written. The rows themselves are merged by each job's own finishing code, so a merged
//! output has the bytes an unsharded run writes.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::io::{FileError, read_json_file, write_json_atomic};

/// The record a finished shard leaves in its folder.
pub const SHARD_FILE: &str = "shard.json";

/// One part of a job split `count` ways: rows with `index % count == index_of_shard`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Shard {
    /// Which part (0-based).
    pub index: usize,
    /// How many parts.
    pub count: usize,
}

/// The most parts a job can be split into.
pub const MAX_SHARDS: usize = 1 << 16;

impl Shard {
    /// Parses `K/N` (0 ≤ K < N ≤ [`MAX_SHARDS`]).
    pub fn parse(text: &str) -> Result<Self, String> {
        let usage = || format!("`{text}`: a shard is K/N with 0 <= K < N, e.g. 0/4");
        let (k, n) = text.trim().split_once('/').ok_or_else(usage)?;
        let index: usize = k.trim().parse().map_err(|_| usage())?;
        let count: usize = n.trim().parse().map_err(|_| usage())?;
        if count == 0 || count > MAX_SHARDS {
            return Err(format!(
                "`{text}`: the shard count must be between 1 and {MAX_SHARDS}"
            ));
        }
        if index >= count {
            return Err(format!(
                "`{text}`: shard index {index} is out of range for {count} shards (0 to {})",
                count - 1
            ));
        }
        Ok(Self { index, count })
    }

    /// Whether this shard handles the row at `position`.
    pub fn owns(&self, position: usize) -> bool {
        position % self.count == self.index
    }

    /// `K-of-N`, the shard's folder name.
    pub fn folder_name(&self) -> String {
        format!("{}-of-{}", self.index, self.count)
    }

    /// The shard's folder under `root`.
    pub fn folder(&self, root: &Path) -> PathBuf {
        root.join(self.folder_name())
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// The shard root of a job whose output is a folder (`synthesize`, `eval`).
pub fn shards_in_folder(out_dir: &Path) -> PathBuf {
    out_dir.join("shards")
}

/// The shard root of a job whose output is a file (`filter`): `<output>.shards`.
pub fn shards_beside_file(output: &Path) -> PathBuf {
    let mut name = output.file_name().unwrap_or_default().to_os_string();
    name.push(".shards");
    output.with_file_name(name)
}

/// What a finished shard did ([`SHARD_FILE`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ShardRecord {
    /// `synthesize`, `filter` or `eval`.
    pub job: String,
    /// Which part of how many.
    pub shard: Shard,
    /// The job's run record: model, input digest and settings. Equal in every shard of a set.
    pub run: Value,
    /// The input file, as the shard was given it.
    pub input: PathBuf,
    /// Rows of the whole job.
    pub total: usize,
    /// The row ids (`syn_id`) this shard answered.
    pub ids: Vec<usize>,
    /// Settings the merge needs that the run record does not hold (job-specific).
    #[serde(default)]
    pub extra: Value,
}

/// Writes `record` into the shard's folder, marking it finished.
pub fn write_shard_record(dir: &Path, record: &ShardRecord) -> Result<(), FileError> {
    write_json_atomic(&dir.join(SHARD_FILE), record)
}

/// The shard folders under `root` (sorted), each with its record when it has finished.
pub fn shard_folders(root: &Path) -> Result<Vec<(PathBuf, Option<ShardRecord>)>, FileError> {
    let entries = match std::fs::read_dir(root) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(FileError::io(root, e)),
    };
    let mut folders = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| FileError::io(root, e))?.path();
        if !path.is_dir() {
            continue;
        }
        let file = path.join(SHARD_FILE);
        let record = if file.is_file() {
            Some(read_json_file::<ShardRecord>(&file)?)
        } else {
            None
        };
        folders.push((path, record));
    }
    folders.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(folders)
}

/// Why a set of shards cannot be merged.
#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    /// A shard's file is missing or malformed.
    #[error(transparent)]
    File(#[from] FileError),
    /// The set is incomplete, mixed or overlapping (the message says how).
    #[error("{path}: {message}")]
    Set {
        /// The shard root or the shard folder in question.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

fn set_error(path: &Path, message: impl Into<String>) -> MergeError {
    MergeError::Set {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// The finished shards under `root`, checked to be one whole set of `job`: the same run and
/// shard count in each, every index from 0 to N−1 exactly once, every row id owned by its
/// shard and answered once, `total` rows in all. Sorted by shard index.
pub fn complete_set(root: &Path, job: &str) -> Result<Vec<(PathBuf, ShardRecord)>, MergeError> {
    let folders = shard_folders(root)?;
    if folders.is_empty() {
        return Err(set_error(root, "no shard folders to merge"));
    }
    let mut records = Vec::new();
    for (path, record) in folders {
        let record = record.ok_or_else(|| {
            set_error(
                &path,
                format!("this shard has not finished (no {SHARD_FILE}); run it again to finish it"),
            )
        })?;
        if record.job != job {
            return Err(set_error(
                &path,
                format!("a shard of `{}`, not of `{job}`", record.job),
            ));
        }
        records.push((path, record));
    }
    let (first_path, first) = &records[0];
    let count = first.shard.count;
    let mut by_index: BTreeMap<usize, &Path> = BTreeMap::new();
    let mut seen_ids = BTreeSet::new();
    for (path, record) in &records {
        if record.run != first.run || record.input != first.input || record.extra != first.extra {
            return Err(set_error(
                path,
                format!(
                    "this shard belongs to another run than {}: its model, input or settings \
                     differ ({} against {})",
                    first_path.display(),
                    record.run,
                    first.run
                ),
            ));
        }
        if record.shard.count != count || record.total != first.total {
            return Err(set_error(
                path,
                format!(
                    "shard {} of a {}-way split; {} is shard {} of a {count}-way split",
                    record.shard,
                    record.shard.count,
                    first_path.display(),
                    first.shard
                ),
            ));
        }
        if let Some(other) = by_index.insert(record.shard.index, path) {
            return Err(set_error(
                path,
                format!(
                    "shard {} is here twice (also {}); keep one of them",
                    record.shard,
                    other.display()
                ),
            ));
        }
        for &id in &record.ids {
            if !seen_ids.insert(id) {
                return Err(set_error(
                    path,
                    format!("row {id} is answered by two shards"),
                ));
            }
        }
    }
    let missing: Vec<String> = (0..count)
        .filter(|k| !by_index.contains_key(k))
        .map(|k| format!("{k}/{count}"))
        .collect();
    if !missing.is_empty() {
        return Err(set_error(
            root,
            format!(
                "shard{} {} missing; run {} first",
                if missing.len() > 1 { "s" } else { "" },
                missing.join(", "),
                if missing.len() > 1 { "them" } else { "it" }
            ),
        ));
    }
    if seen_ids.len() != first.total {
        return Err(set_error(
            root,
            format!(
                "the shards answer {} rows; the job has {}",
                seen_ids.len(),
                first.total
            ),
        ));
    }
    records.sort_by_key(|(_, r)| r.shard.index);
    Ok(records)
}

/// Removes a shard root once its rows are merged into the final output.
pub fn remove_shards(root: &Path) -> Result<(), FileError> {
    match std::fs::remove_dir_all(root) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(FileError::io(root, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn record(index: usize, count: usize, run: &str, ids: Vec<usize>, total: usize) -> ShardRecord {
        ShardRecord {
            job: "filter".into(),
            shard: Shard { index, count },
            run: json!({"model": run}),
            input: PathBuf::from("in.jsonl"),
            total,
            ids,
            extra: Value::Null,
        }
    }

    fn write(root: &Path, name: &str, record: &ShardRecord) {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        write_shard_record(&dir, record).unwrap();
    }

    #[test]
    fn shard_text_is_parsed_and_bad_ones_are_named() {
        assert_eq!(Shard::parse("2/3").unwrap(), Shard { index: 2, count: 3 });
        assert!(Shard::parse(" 0 / 1 ").is_ok());
        assert!(Shard::parse("3/3").unwrap_err().contains("out of range"));
        assert!(Shard::parse("0/0").unwrap_err().contains("between 1"));
        assert!(Shard::parse("1-3").unwrap_err().contains("K/N"));
        assert!(Shard::parse("-1/3").unwrap_err().contains("K/N"));
        let shard = Shard::parse("1/3").unwrap();
        let owned: Vec<usize> = (0..8).filter(|&i| shard.owns(i)).collect();
        assert_eq!(owned, [1, 4, 7]);
        assert_eq!(shard.folder_name(), "1-of-3");
        assert_eq!(
            shards_beside_file(Path::new("out/filtered.jsonl")),
            Path::new("out/filtered.jsonl.shards")
        );
    }

    #[test]
    fn a_whole_set_passes_and_every_broken_set_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(root, "1-of-2", &record(1, 2, "m", vec![1, 3], 4));
        write(root, "0-of-2", &record(0, 2, "m", vec![0, 2], 4));
        let set = complete_set(root, "filter").unwrap();
        assert_eq!(set[0].1.shard.index, 0);
        assert_eq!(set[1].1.shard.index, 1);
        assert!(
            complete_set(root, "eval")
                .unwrap_err()
                .to_string()
                .contains("not of `eval`")
        );

        // Foreign: another model.
        write(root, "copy", &record(1, 2, "other", vec![1, 3], 4));
        let error = complete_set(root, "filter").unwrap_err().to_string();
        assert!(
            error.contains("another run") && error.contains("copy"),
            "{error}"
        );
        // Duplicated: the same shard twice.
        write(root, "copy", &record(1, 2, "m", vec![1, 3], 4));
        let error = complete_set(root, "filter").unwrap_err().to_string();
        assert!(error.contains("twice"), "{error}");
        std::fs::remove_dir_all(root.join("copy")).unwrap();
        // Missing: shard 1 unfinished, then gone.
        std::fs::remove_file(root.join("1-of-2").join(SHARD_FILE)).unwrap();
        let error = complete_set(root, "filter").unwrap_err().to_string();
        assert!(
            error.contains("not finished") && error.contains("1-of-2"),
            "{error}"
        );
        std::fs::remove_dir_all(root.join("1-of-2")).unwrap();
        let error = complete_set(root, "filter").unwrap_err().to_string();
        assert!(error.contains("1/2 missing"), "{error}");
        // Another split.
        write(root, "1-of-3", &record(1, 3, "m", vec![1], 4));
        let error = complete_set(root, "filter").unwrap_err().to_string();
        assert!(error.contains("3-way"), "{error}");
        // Nothing at all.
        let empty = tempfile::tempdir().unwrap();
        let error = complete_set(empty.path(), "filter")
            .unwrap_err()
            .to_string();
        assert!(error.contains("no shard folders"), "{error}");
    }
}
