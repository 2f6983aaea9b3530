//! Benchmarks where the Hugging Face tools leave them.
//!
//! - A `datasets` **`save_to_disk` folder** (the `main` branch of `AdaptLLM/biomed-VQA-benchmark`
//!   and `AdaptLLM/food-VQA-benchmark`: one per task): `state.json` lists the shards
//!   (`data-000NN-of-000MM.arrow`, Arrow IPC streams), read in that order; a listed shard that is
//!   missing is a named error. Only the listed shards are read (the food repo once kept a stale
//!   `data-00000-of-00001.arrow` beside its three real shards).
//! - A **parquet-branch config folder** (`refs/convert/parquet`: `<Config>/test/NNNN.parquet`):
//!   the parquet files of `test/` (or of the folder itself), in name order.
//! - A **repository folder** holding several tasks: [`locate_task`] finds a task under its
//!   config name (`VQA_RAD`, `PMC-VQA`, ...) or the folder name the repos use (`vqa_rad`,
//!   `pmc_vqa`, `nutrition50k`, `food_eval_multitask_v2`, ...), or as `<task>.jsonl|.parquet`.
//!
//! Rows keep their stored order; a row's index continues across shards (the `syn_id` that seeds
//! the multiple-choice parser's random fallback).

use std::fs::File;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::BenchmarkTask;
use super::benchmark::{
    BatchError, BenchmarkError, BenchmarkRow, ReadOptions, append_batches, check_columns,
    non_empty, read_benchmark,
};

/// The names a task goes by in the benchmark repositories: its config name first, then the
/// `main`-branch folder names (lowercase variants and the repos' own spellings).
pub fn task_folder_names(task: BenchmarkTask) -> &'static [&'static str] {
    match task {
        BenchmarkTask::VqaRad => &["VQA_RAD", "vqa_rad"],
        BenchmarkTask::Slake => &["SLAKE", "slake"],
        BenchmarkTask::PathVqa => &["PathVQA", "pathvqa"],
        BenchmarkTask::PmcVqa => &["PMC-VQA", "pmc_vqa", "PMC_VQA"],
        BenchmarkTask::Food101 => &["Food101", "food101"],
        BenchmarkTask::FoodSeg103 => &["FoodSeg103", "foodseg103"],
        BenchmarkTask::Nutrition5K => {
            &["Nutrition5K", "nutrition50k", "nutriton50k", "nutrition5k"]
        }
        BenchmarkTask::Recipe1M => &["Recipe1M", "food_eval_multitask_v2", "recipe1m"],
    }
}

/// Where `task`'s rows are under `root` (a cloned benchmark repo, a parquet-branch checkout, or
/// a folder of `<task>.jsonl` / `.parquet` files), if anywhere.
pub fn locate_task(root: &Path, task: BenchmarkTask) -> Option<PathBuf> {
    for name in task_folder_names(task) {
        for file in [format!("{name}.jsonl"), format!("{name}.parquet")] {
            let p = root.join(file);
            if p.is_file() {
                return Some(p);
            }
        }
        let dir = root.join(name);
        if dir.is_dir() {
            return Some(dir);
        }
    }
    None
}

/// The folder names [`locate_task`] tries, for messages.
pub fn looked_for(task: BenchmarkTask) -> String {
    task_folder_names(task)
        .iter()
        .map(|n| format!("{n}/, {n}.jsonl, {n}.parquet"))
        .collect::<Vec<_>>()
        .join("; ")
}

fn dataset_error(path: &Path, message: impl Into<String>) -> BenchmarkError {
    BenchmarkError::Dataset {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// The shards `state.json` lists, each checked to exist.
fn listed_shards(dir: &Path) -> Result<Vec<PathBuf>, BenchmarkError> {
    let state_path = dir.join("state.json");
    let text = std::fs::read_to_string(&state_path).map_err(|source| BenchmarkError::Io {
        path: state_path.clone(),
        source,
    })?;
    let state: Value = serde_json::from_str(&text)
        .map_err(|e| dataset_error(&state_path, format!("not valid JSON: {e}")))?;
    let files = state
        .get("_data_files")
        .and_then(Value::as_array)
        .ok_or_else(|| dataset_error(&state_path, "no `_data_files` list"))?;
    let mut shards = Vec::with_capacity(files.len());
    for (i, entry) in files.iter().enumerate() {
        let name = entry
            .get("filename")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                dataset_error(&state_path, format!("`_data_files[{i}]` has no `filename`"))
            })?;
        if name.contains('/') || name.contains('\\') || name == ".." {
            return Err(dataset_error(
                &state_path,
                format!("shard name {name:?} leaves the folder"),
            ));
        }
        let shard = dir.join(name);
        if !shard.is_file() {
            return Err(dataset_error(
                &state_path,
                format!(
                    "lists shard {name} ({} of {}), which is missing from the folder",
                    i + 1,
                    files.len()
                ),
            ));
        }
        shards.push(shard);
    }
    if shards.is_empty() {
        return Err(dataset_error(&state_path, "lists no data file"));
    }
    Ok(shards)
}

/// Files of `dir` with extension `ext`, in name order.
fn files_with_extension(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == ext))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

/// What one benchmark folder holds.
enum DatasetFolder {
    /// A `save_to_disk` folder (its shards are those `state.json` lists).
    SavedToDisk,
    /// Loose Arrow files, in name order.
    Arrow(Vec<PathBuf>),
    /// Parquet files of `test/` (or of the folder itself), in name order.
    Parquet(Vec<PathBuf>),
}

/// What `dir` holds as one benchmark, if it is one.
fn dataset_folder(dir: &Path) -> Option<DatasetFolder> {
    if dir.join("state.json").is_file() {
        return Some(DatasetFolder::SavedToDisk);
    }
    let arrow = files_with_extension(dir, "arrow");
    if !arrow.is_empty() {
        return Some(DatasetFolder::Arrow(arrow));
    }
    let split = dir.join("test");
    let parquet_dir = if split.is_dir() {
        split
    } else {
        dir.to_path_buf()
    };
    let parquet = files_with_extension(&parquet_dir, "parquet");
    (!parquet.is_empty()).then_some(DatasetFolder::Parquet(parquet))
}

/// Whether `dir` is one benchmark (a `save_to_disk` folder, loose Arrow files, or a
/// parquet-branch config folder) rather than a folder of several tasks.
pub fn is_dataset_folder(dir: &Path) -> bool {
    dataset_folder(dir).is_some()
}

/// Reads a folder: a `save_to_disk` folder, or a parquet-branch config folder (see the module
/// documentation).
pub fn read_dataset_folder(
    dir: &Path,
    options: &ReadOptions,
) -> Result<Vec<BenchmarkRow>, BenchmarkError> {
    let parquet = match dataset_folder(dir) {
        Some(DatasetFolder::SavedToDisk) => {
            let shards = listed_shards(dir)?;
            return non_empty(dir, read_arrow_files(dir, &shards, options)?);
        }
        Some(DatasetFolder::Arrow(files)) => {
            return non_empty(dir, read_arrow_files(dir, &files, options)?);
        }
        Some(DatasetFolder::Parquet(files)) => files,
        None => {
            return Err(dataset_error(
                dir,
                "is not a benchmark folder: no state.json with data-*.arrow shards (a datasets save_to_disk folder) and no test/*.parquet (the parquet branch)",
            ));
        }
    };
    let mut rows: Vec<BenchmarkRow> = Vec::new();
    for file in &parquet {
        let left = options.limit.map(|l| l.saturating_sub(rows.len()));
        if left == Some(0) {
            break;
        }
        let part = read_benchmark(
            file,
            &ReadOptions {
                limit: left,
                images_dir: Some(
                    options
                        .images_dir
                        .clone()
                        .unwrap_or_else(|| dir.to_path_buf()),
                ),
                ..options.clone()
            },
        )?;
        let start = rows.len();
        rows.extend(part.into_iter().map(|mut r| {
            r.index += start;
            r
        }));
    }
    non_empty(dir, rows)
}

/// Reads Arrow files (IPC streams as `datasets` writes them, or IPC files) one after the other;
/// `dir` names the dataset in messages and is the base of relative image paths.
pub fn read_arrow_files(
    dir: &Path,
    files: &[PathBuf],
    options: &ReadOptions,
) -> Result<Vec<BenchmarkRow>, BenchmarkError> {
    let mut rows = Vec::new();
    let base_options = ReadOptions {
        images_dir: Some(options.images_dir.clone().unwrap_or_else(|| {
            if dir.is_dir() {
                dir.to_path_buf()
            } else {
                dir.parent().map(Path::to_path_buf).unwrap_or_default()
            }
        })),
        ..options.clone()
    };
    for file in files {
        if options.limit.is_some_and(|l| rows.len() >= l) {
            break;
        }
        // arrow-ipc 60 panics on some damaged buffers (an offset past the end of a buffer)
        // instead of returning an error: such a file is reported as damaged, by name.
        let read = crate::limits::catch_parser_panic(|| {
            read_arrow_file(file, options, &base_options, &mut rows)
        });
        match read {
            Ok(result) => result?,
            Err(reason) => {
                return Err(dataset_error(
                    file,
                    format!("the Arrow data is damaged: the Arrow reader failed ({reason})"),
                ));
            }
        }
    }
    Ok(rows)
}

/// Reads one Arrow file (IPC file or stream) and appends its rows.
fn read_arrow_file(
    file: &Path,
    options: &ReadOptions,
    base_options: &ReadOptions,
    rows: &mut Vec<BenchmarkRow>,
) -> Result<(), BenchmarkError> {
    let io_error = |source| BenchmarkError::Io {
        path: file.to_path_buf(),
        source,
    };
    let arrow_error =
        |message: String| dataset_error(file, format!("cannot read the Arrow data: {message}"));
    // The IPC file format starts with `ARROW1`; a stream (what `datasets` writes) does not.
    let mut source = File::open(file).map_err(io_error)?;
    let mut magic = [0u8; 6];
    let is_file_format = {
        use std::io::{Read, Seek};
        let found = source
            .read(&mut magic)
            .map(|n| n == 6 && &magic == b"ARROW1");
        source.rewind().map_err(io_error)?;
        found.unwrap_or(false)
    };
    let result = if is_file_format {
        let reader = arrow_ipc::reader::FileReader::try_new(source, None)
            .map_err(|e| arrow_error(e.to_string()))?;
        let schema = reader.schema();
        append_ipc(file, &schema, reader, options, base_options, rows)?
    } else {
        let reader =
            arrow_ipc::reader::StreamReader::try_new(std::io::BufReader::new(source), None)
                .map_err(|e| arrow_error(e.to_string()))?;
        let schema = reader.schema();
        append_ipc(file, &schema, reader, options, base_options, rows)?
    };
    result.map_err(|e| match e {
        BatchError::Reader(message) => arrow_error(message),
        BatchError::Row(e) => e,
    })?;
    Ok(())
}

/// Checks an Arrow reader's columns, then appends its rows (see [`append_batches`]).
fn append_ipc(
    file: &Path,
    schema: &arrow_schema::Schema,
    batches: impl Iterator<Item = Result<arrow_array::RecordBatch, arrow_schema::ArrowError>>,
    options: &ReadOptions,
    base_options: &ReadOptions,
    rows: &mut Vec<BenchmarkRow>,
) -> Result<Result<(), BatchError>, BenchmarkError> {
    check_columns(file, schema, options)?;
    Ok(append_batches(
        file,
        batches.map(|b| b.map_err(|e| e.to_string())),
        base_options,
        rows,
    ))
}
