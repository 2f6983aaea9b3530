//! Benchmark files: the rows `adamllm eval` answers, read from JSON Lines or from parquet.
//!
//! The AdaMLLM benchmarks (`AdaptLLM/biomed-VQA-benchmark`, `AdaptLLM/food-VQA-benchmark`,
//! loaded by the authors with `load_dataset(..., split="test")`) have one row per question
//! with these fields:
//!
//! * `input`: the whole user message, already templated (PMC-VQA's, for instance, reads
//!   `Question: ...` then `The choices are:` and the lettered options);
//! * `label`: the reference answer (a string; a list of class names for FoodSeg103 and
//!   Nutrition5K);
//! * `image`: the image;
//! * task-specific fields: `answer_type` (`OPEN` / `CLOSED`) for VQA_RAD, SLAKE and PathVQA,
//!   option texts `A`, `B`, `C`, `D` for PMC-VQA.
//!
//! Two file layouts are read (the format is told by the content: parquet files start with
//! the bytes `PAR1`, anything else is JSON Lines):
//!
//! * **JSON Lines**: one object per line; `image` is a path, relative to the images folder
//!   when one is given, else to the folder of the benchmark file. Blank lines are skipped.
//! * **parquet** as the Hugging Face `datasets` library writes a dataset with an `Image`
//!   feature: `image` is a struct of `bytes` (the encoded file) and `path` (its original
//!   name); the bytes are used when present, else the path. Other columns may be strings,
//!   numbers, booleans, lists or structs of those, and become the matching JSON values.
//!
//! A row's position in the file (0-based) is its [`BenchmarkRow::index`], the `syn_id`
//! the reference evaluation assigns and seeds its random multiple-choice fallback with.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use super::score::json_type_name;
use arrow_array::cast::AsArray;
use arrow_array::types::{
    Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type, UInt8Type, UInt16Type,
    UInt32Type, UInt64Type,
};
use arrow_array::{Array, ArrayRef};
use arrow_schema::DataType;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::{Map, Value};

/// Name of the field (JSON Lines) or column (parquet) holding the image.
pub const IMAGE_FIELD: &str = "image";

/// The first bytes of every parquet file.
const PARQUET_MAGIC: &[u8; 4] = b"PAR1";

/// Where a row's image comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImageSource {
    /// An image file on disk (already resolved against the images folder).
    Path(PathBuf),
    /// An encoded image held in the benchmark file itself (parquet).
    Bytes {
        /// The encoded file (PNG, JPEG, ...).
        bytes: Vec<u8>,
        /// A name for messages: the stored `path`, or `row N` when there is none.
        name: String,
    },
}

impl ImageSource {
    /// A short description for error messages.
    pub fn describe(&self) -> String {
        match self {
            Self::Path(path) => path.display().to_string(),
            Self::Bytes { name, .. } => name.clone(),
        }
    }
}

/// One benchmark example.
#[derive(Clone, Debug, PartialEq)]
pub struct BenchmarkRow {
    /// 0-based position in the benchmark file (the reference's `syn_id`).
    pub index: usize,
    /// Every field of the row except the image bytes. For parquet rows `image` holds the
    /// stored image path when there is one; for JSON Lines rows it is the path as written.
    pub fields: Map<String, Value>,
    /// The row's image, if it has one.
    pub image: Option<ImageSource>,
}

/// How to read a benchmark file.
#[derive(Clone, Debug, Default)]
pub struct ReadOptions {
    /// Folder that relative image paths are resolved against (default: the folder of the
    /// benchmark file).
    pub images_dir: Option<PathBuf>,
    /// Fields every row must have (parquet: columns the file must have). Listing
    /// [`IMAGE_FIELD`] makes an image required on every row.
    pub required_fields: Vec<String>,
    /// Read at most this many rows (the first ones).
    pub limit: Option<usize>,
}

/// Why a benchmark file could not be read. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum BenchmarkError {
    /// The file could not be opened or read.
    #[error("cannot read benchmark file {}: {source}", path.display())]
    Io {
        /// The benchmark file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A JSON Lines line is not valid UTF-8 or JSON, or not an object.
    #[error("{}: line {line}: {message}", path.display())]
    MalformedLine {
        /// The benchmark file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// A row lacks a field the task needs.
    #[error("{}: {location}: missing field `{field}`", path.display())]
    MissingField {
        /// The benchmark file.
        path: PathBuf,
        /// `line N` (JSON Lines) or `row N` (parquet), 1-based.
        location: String,
        /// The missing field.
        field: String,
    },
    /// A field has a type the reader cannot use.
    #[error("{}: {location}: field `{field}` must be {expected}, found {found}", path.display())]
    WrongFieldType {
        /// The benchmark file.
        path: PathBuf,
        /// `line N` or `row N`, 1-based.
        location: String,
        /// The field.
        field: String,
        /// What was expected.
        expected: &'static str,
        /// What was found.
        found: String,
    },
    /// A parquet file lacks a column the task needs.
    #[error("{}: the file has no `{column}` column (its columns: {found})", path.display())]
    MissingColumn {
        /// The benchmark file.
        path: PathBuf,
        /// The missing column.
        column: String,
        /// The columns the file has, comma-separated.
        found: String,
    },
    /// A `datasets` folder is incomplete or not one (a shard `state.json` lists is missing, no
    /// data files, an unreadable Arrow stream).
    #[error("{}: {message}", path.display())]
    Dataset {
        /// The folder or file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The parquet reader failed (not a parquet file, corrupt data, unsupported encoding).
    #[error("{}: cannot read parquet: {message}", path.display())]
    Parquet {
        /// The benchmark file.
        path: PathBuf,
        /// The reader's message.
        message: String,
    },
    /// A row's image is not among the picked image files (browser page).
    #[error("{}: {location}: image `{image}` was not among the picked image files", path.display())]
    MissingImage {
        /// The benchmark file.
        path: PathBuf,
        /// `line N`, 1-based.
        location: String,
        /// The image path as written in the row.
        image: String,
    },
    /// The file holds no rows.
    #[error("benchmark file {} has no rows", path.display())]
    Empty {
        /// The benchmark file.
        path: PathBuf,
    },
}

/// Reads a benchmark: a JSON Lines or parquet file (told apart by content), a `datasets`
/// Arrow file, or a folder as the Hugging Face tools leave one (a `save_to_disk` folder, or a
/// parquet-branch config folder: see [`super::hf_layout`]).
pub fn read_benchmark(
    path: &Path,
    options: &ReadOptions,
) -> Result<Vec<BenchmarkRow>, BenchmarkError> {
    if path.is_dir() {
        return super::hf_layout::read_dataset_folder(path, options);
    }
    if path.extension().is_some_and(|e| e == "arrow") {
        let rows = super::hf_layout::read_arrow_files(path, &[path.to_path_buf()], options)?;
        return non_empty(path, rows);
    }
    let io_error = |source| BenchmarkError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut magic = [0_u8; 4];
    let mut file = File::open(path).map_err(io_error)?;
    let read = read_up_to(&mut file, &mut magic).map_err(io_error)?;
    let rows = if read == magic.len() && &magic == PARQUET_MAGIC {
        read_parquet(path, options)?
    } else {
        let bytes = std::fs::read(path).map_err(io_error)?;
        read_jsonl(path, &bytes, options)?
    };
    non_empty(path, rows)
}

/// Reads a benchmark held in memory (the browser page: a picked file), JSON Lines or parquet
/// told apart by content as in [`read_benchmark`]; `path` names it in messages.
pub fn read_benchmark_bytes(
    path: &Path,
    bytes: Vec<u8>,
    options: &ReadOptions,
) -> Result<Vec<BenchmarkRow>, BenchmarkError> {
    let rows = if bytes.starts_with(PARQUET_MAGIC) {
        read_parquet_from(path, bytes::Bytes::from(bytes), options)?
    } else {
        read_jsonl(path, &bytes, options)?
    };
    non_empty(path, rows)
}

/// The rows, or [`BenchmarkError::Empty`] when there are none.
pub(crate) fn non_empty(
    path: &Path,
    rows: Vec<BenchmarkRow>,
) -> Result<Vec<BenchmarkRow>, BenchmarkError> {
    if rows.is_empty() {
        return Err(BenchmarkError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(rows)
}

/// Replaces image paths by picked image files (the browser page, where there is no file
/// system): a row's image is found by its path as written (`images/x.png`) or, failing
/// that, by its file name. A row whose image was not picked is an error naming the row.
pub fn attach_picked_images(
    path: &Path,
    rows: &mut [BenchmarkRow],
    images: &std::collections::BTreeMap<String, Vec<u8>>,
) -> Result<(), BenchmarkError> {
    let by_name: std::collections::BTreeMap<&str, &Vec<u8>> = images
        .iter()
        .map(|(key, bytes)| (key.rsplit(['/', '\\']).next().unwrap_or(key), bytes))
        .collect();
    for row in rows.iter_mut() {
        let Some(ImageSource::Path(image_path)) = &row.image else {
            continue;
        };
        let written = image_path.to_string_lossy().replace('\\', "/");
        let file_name = image_path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let found = images
            .iter()
            .find(|(key, _)| {
                *key == &written
                    || key.ends_with(&format!("/{written}"))
                    || written.ends_with(&format!("/{key}"))
            })
            .map(|(_, bytes)| bytes)
            .or_else(|| by_name.get(file_name.as_str()).copied());
        match found {
            Some(bytes) => {
                row.image = Some(ImageSource::Bytes {
                    bytes: bytes.clone(),
                    name: written,
                });
            }
            None => {
                return Err(BenchmarkError::MissingImage {
                    path: path.to_path_buf(),
                    location: format!("line {}", row.index + 1),
                    image: written,
                });
            }
        }
    }
    Ok(())
}

/// Fills as much of `buffer` as the file has.
fn read_up_to(file: &mut File, buffer: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        match file.read(&mut buffer[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

/// The folder relative image paths are resolved against.
fn images_base(path: &Path, options: &ReadOptions) -> PathBuf {
    match &options.images_dir {
        Some(dir) => dir.clone(),
        None => path
            .parent()
            .filter(|parent| !parent.as_os_str().is_empty())
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf),
    }
}

/// Parses JSON Lines bytes (`path` is for messages and image resolution).
pub fn read_jsonl(
    path: &Path,
    bytes: &[u8],
    options: &ReadOptions,
) -> Result<Vec<BenchmarkRow>, BenchmarkError> {
    let base = images_base(path, options);
    let mut rows = Vec::new();
    for (line_index, raw_line) in bytes.split(|&byte| byte == b'\n').enumerate() {
        if options.limit.is_some_and(|limit| rows.len() >= limit) {
            break;
        }
        let line = line_index + 1;
        let malformed = |message: String| BenchmarkError::MalformedLine {
            path: path.to_path_buf(),
            line,
            message,
        };
        let mut raw_line = raw_line.strip_suffix(b"\r").unwrap_or(raw_line);
        if line_index == 0 {
            raw_line = raw_line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(raw_line);
        }
        let text = std::str::from_utf8(raw_line)
            .map_err(|_| malformed("line is not valid UTF-8".to_owned()))?;
        if text.trim().is_empty() {
            continue;
        }
        let fields = match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(fields)) => fields,
            Ok(other) => {
                return Err(malformed(format!(
                    "expected a JSON object, found {}",
                    json_type_name(&other)
                )));
            }
            Err(error) => return Err(malformed(json_error_message(&error))),
        };
        let location = format!("line {line}");
        let image = match fields.get(IMAGE_FIELD) {
            None | Some(Value::Null) => None,
            Some(Value::String(image_path)) => Some(ImageSource::Path(base.join(image_path))),
            Some(other) => {
                return Err(BenchmarkError::WrongFieldType {
                    path: path.to_path_buf(),
                    location,
                    field: IMAGE_FIELD.to_owned(),
                    expected: "a path string",
                    found: json_type_name(other).to_owned(),
                });
            }
        };
        let row = BenchmarkRow {
            index: rows.len(),
            fields,
            image,
        };
        check_required(path, &location, &row, options)?;
        rows.push(row);
    }
    Ok(rows)
}

/// Errors when a required field is absent (or null), or a required image is missing.
fn check_required(
    path: &Path,
    location: &str,
    row: &BenchmarkRow,
    options: &ReadOptions,
) -> Result<(), BenchmarkError> {
    for field in &options.required_fields {
        let present = if field == IMAGE_FIELD {
            row.image.is_some()
        } else {
            row.fields.get(field).is_some_and(|value| !value.is_null())
        };
        if !present {
            return Err(BenchmarkError::MissingField {
                path: path.to_path_buf(),
                location: location.to_owned(),
                field: field.clone(),
            });
        }
    }
    Ok(())
}

/// Reads a parquet file as the `datasets` library writes it.
fn read_parquet(path: &Path, options: &ReadOptions) -> Result<Vec<BenchmarkRow>, BenchmarkError> {
    let file = File::open(path).map_err(|source| BenchmarkError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    read_parquet_from(path, file, options)
}

/// Reads parquet from a file or from bytes in memory (`path` is for messages and images).
/// parquet 60 panics on some damaged metadata (a negative column offset) instead of
/// returning an error: such a file is reported as damaged, by name.
fn read_parquet_from<R: parquet::file::reader::ChunkReader + 'static>(
    path: &Path,
    source: R,
    options: &ReadOptions,
) -> Result<Vec<BenchmarkRow>, BenchmarkError> {
    crate::limits::catch_parser_panic(|| read_parquet_unguarded(path, source, options))
        .unwrap_or_else(|reason| {
            Err(BenchmarkError::Parquet {
                path: path.to_path_buf(),
                message: format!(
                    "the parquet data is damaged: the parquet reader failed ({reason})"
                ),
            })
        })
}

fn read_parquet_unguarded<R: parquet::file::reader::ChunkReader + 'static>(
    path: &Path,
    source: R,
    options: &ReadOptions,
) -> Result<Vec<BenchmarkRow>, BenchmarkError> {
    let parquet_error = |message: String| BenchmarkError::Parquet {
        path: path.to_path_buf(),
        message,
    };
    let builder = ParquetRecordBatchReaderBuilder::try_new(source)
        .map_err(|error| parquet_error(error.to_string()))?;
    check_columns(path, builder.schema(), options)?;
    let reader = builder
        .build()
        .map_err(|error| parquet_error(error.to_string()))?;
    let mut rows = Vec::new();
    append_batches(
        path,
        reader.map(|batch| batch.map_err(|error| error.to_string())),
        options,
        &mut rows,
    )
    .map_err(|e| match e {
        BatchError::Reader(message) => parquet_error(message),
        BatchError::Row(e) => e,
    })?;
    Ok(rows)
}

/// Why [`append_batches`] stopped.
pub(crate) enum BatchError {
    /// The file reader failed (its message).
    Reader(String),
    /// A row is unusable.
    Row(BenchmarkError),
}

/// Appends the rows of Arrow record batches (parquet or `datasets` Arrow files) to `rows`,
/// continuing their indices, until `options.limit` rows are held in all.
pub(crate) fn append_batches(
    path: &Path,
    batches: impl Iterator<Item = Result<arrow_array::RecordBatch, String>>,
    options: &ReadOptions,
    rows: &mut Vec<BenchmarkRow>,
) -> Result<(), BatchError> {
    let base = images_base(path, options);
    for batch in batches {
        let batch = batch.map_err(BatchError::Reader)?;
        let schema = batch.schema();
        for position in 0..batch.num_rows() {
            if options.limit.is_some_and(|limit| rows.len() >= limit) {
                return Ok(());
            }
            let index = rows.len();
            let location = format!("row {}", index + 1);
            let mut fields = Map::new();
            let mut image = None;
            for (field, column) in schema.fields().iter().zip(batch.columns()) {
                let name = field.name();
                let wrong_type =
                    |expected: &'static str, found: String| BenchmarkError::WrongFieldType {
                        path: path.to_path_buf(),
                        location: location.clone(),
                        field: name.clone(),
                        expected,
                        found,
                    };
                if name == IMAGE_FIELD {
                    let cell = image_cell(column, position, index, &base).map_err(|found| {
                        BatchError::Row(wrong_type(
                            "a struct of `bytes` and `path` (a datasets Image) or a path string",
                            found,
                        ))
                    })?;
                    if let Some(stored_path) = cell.stored_path {
                        fields.insert(IMAGE_FIELD.to_owned(), Value::String(stored_path));
                    }
                    image = cell.source;
                } else {
                    let value = cell_to_json(column.as_ref(), position).map_err(|found| {
                        BatchError::Row(wrong_type(
                            "text, a number, a boolean, or a list or struct of those",
                            found,
                        ))
                    })?;
                    fields.insert(name.clone(), value);
                }
            }
            let row = BenchmarkRow {
                index,
                fields,
                image,
            };
            check_required(path, &location, &row, options).map_err(BatchError::Row)?;
            rows.push(row);
        }
    }
    Ok(())
}

/// Checks that a schema has the columns the task needs (named, with the columns found).
pub(crate) fn check_columns(
    path: &Path,
    schema: &arrow_schema::Schema,
    options: &ReadOptions,
) -> Result<(), BenchmarkError> {
    let column_names: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
    for column in &options.required_fields {
        if !column_names.contains(column) {
            return Err(BenchmarkError::MissingColumn {
                path: path.to_path_buf(),
                column: column.clone(),
                found: column_names.join(", "),
            });
        }
    }
    Ok(())
}

/// What the image column holds for one row.
struct ImageCell {
    source: Option<ImageSource>,
    /// The stored path string, kept in the row's fields.
    stored_path: Option<String>,
}

/// Reads the image column at `position`: a `{bytes, path}` struct or a path string.
/// `index` is the row's index in the file (for naming unnamed images). The error is the
/// type found.
fn image_cell(
    column: &ArrayRef,
    position: usize,
    index: usize,
    base: &Path,
) -> Result<ImageCell, String> {
    let none = ImageCell {
        source: None,
        stored_path: None,
    };
    if column.is_null(position) {
        return Ok(none);
    }
    if let Some(text) = string_cell(column.as_ref(), position)? {
        return Ok(ImageCell {
            source: Some(ImageSource::Path(base.join(&text))),
            stored_path: Some(text),
        });
    }
    let Some(image) = column.as_struct_opt() else {
        return Err(column.data_type().to_string());
    };
    let bytes_column = image.column_by_name("bytes");
    let path_column = image.column_by_name("path");
    if bytes_column.is_none() && path_column.is_none() {
        return Err(column.data_type().to_string());
    }
    let bytes = match bytes_column {
        Some(bytes_column) => binary_cell(bytes_column.as_ref(), position)?,
        None => None,
    };
    let stored_path = match path_column {
        Some(path_column) => string_cell(path_column.as_ref(), position)?,
        None => None,
    };
    let source = match (bytes, &stored_path) {
        (Some(bytes), _) => Some(ImageSource::Bytes {
            bytes,
            name: stored_path
                .clone()
                .unwrap_or_else(|| format!("image of row {}", index + 1)),
        }),
        (None, Some(stored)) => Some(ImageSource::Path(base.join(stored))),
        (None, None) => None,
    };
    if source.is_none() {
        return Ok(none);
    }
    Ok(ImageCell {
        source,
        stored_path,
    })
}

/// The string at `position` when `array` is a string array (`None` for a null or for an
/// array of another type). Errors never happen for string types; the `Result` keeps the
/// callers uniform.
fn string_cell(array: &dyn Array, position: usize) -> Result<Option<String>, String> {
    if !matches!(
        array.data_type(),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
    ) {
        return Ok(None);
    }
    if array.is_null(position) {
        return Ok(None);
    }
    match cell_to_json(array, position)? {
        Value::String(text) => Ok(Some(text)),
        _ => Ok(None),
    }
}

/// The bytes at `position` of a binary array (`None` for a null); an error names any other
/// type.
fn binary_cell(array: &dyn Array, position: usize) -> Result<Option<Vec<u8>>, String> {
    if array.is_null(position) {
        return Ok(None);
    }
    let mismatch = || format!("`bytes` of type {}", array.data_type());
    let bytes = match array.data_type() {
        DataType::Binary => array
            .as_binary_opt::<i32>()
            .ok_or_else(mismatch)?
            .value(position),
        DataType::LargeBinary => array
            .as_binary_opt::<i64>()
            .ok_or_else(mismatch)?
            .value(position),
        DataType::BinaryView => array
            .as_binary_view_opt()
            .ok_or_else(mismatch)?
            .value(position),
        _ => return Err(mismatch()),
    };
    Ok(Some(bytes.to_vec()))
}

/// Converts one cell to JSON. The error is the unsupported type, for the message.
fn cell_to_json(array: &dyn Array, position: usize) -> Result<Value, String> {
    if array.is_null(position) {
        return Ok(Value::Null);
    }
    let data_type = array.data_type();
    let mismatch = || data_type.to_string();
    macro_rules! primitive {
        ($arrow_type:ty) => {
            serde_json::json!(
                array
                    .as_primitive_opt::<$arrow_type>()
                    .ok_or_else(mismatch)?
                    .value(position)
            )
        };
    }
    let value = match data_type {
        DataType::Null => Value::Null,
        DataType::Boolean => {
            Value::Bool(array.as_boolean_opt().ok_or_else(mismatch)?.value(position))
        }
        DataType::Int8 => primitive!(Int8Type),
        DataType::Int16 => primitive!(Int16Type),
        DataType::Int32 => primitive!(Int32Type),
        DataType::Int64 => primitive!(Int64Type),
        DataType::UInt8 => primitive!(UInt8Type),
        DataType::UInt16 => primitive!(UInt16Type),
        DataType::UInt32 => primitive!(UInt32Type),
        DataType::UInt64 => primitive!(UInt64Type),
        DataType::Float32 => primitive!(Float32Type),
        DataType::Float64 => primitive!(Float64Type),
        DataType::Utf8 => Value::String(
            array
                .as_string_opt::<i32>()
                .ok_or_else(mismatch)?
                .value(position)
                .to_owned(),
        ),
        DataType::LargeUtf8 => Value::String(
            array
                .as_string_opt::<i64>()
                .ok_or_else(mismatch)?
                .value(position)
                .to_owned(),
        ),
        DataType::Utf8View => Value::String(
            array
                .as_string_view_opt()
                .ok_or_else(mismatch)?
                .value(position)
                .to_owned(),
        ),
        DataType::List(_) => list_to_json(
            &array
                .as_list_opt::<i32>()
                .ok_or_else(mismatch)?
                .value(position),
        )?,
        DataType::LargeList(_) => list_to_json(
            &array
                .as_list_opt::<i64>()
                .ok_or_else(mismatch)?
                .value(position),
        )?,
        DataType::FixedSizeList(..) => list_to_json(
            &array
                .as_fixed_size_list_opt()
                .ok_or_else(mismatch)?
                .value(position),
        )?,
        DataType::Struct(_) => {
            let object = array.as_struct_opt().ok_or_else(mismatch)?;
            let mut fields = Map::new();
            for (name, column) in object.column_names().into_iter().zip(object.columns()) {
                fields.insert(name.to_owned(), cell_to_json(column.as_ref(), position)?);
            }
            Value::Object(fields)
        }
        _ => return Err(mismatch()),
    };
    Ok(value)
}

fn list_to_json(values: &ArrayRef) -> Result<Value, String> {
    (0..values.len())
        .map(|position| cell_to_json(values.as_ref(), position))
        .collect::<Result<Vec<_>, _>>()
        .map(Value::Array)
}

/// serde_json's message with its position given as a column only (each line is parsed on
/// its own, so its "line 1" would mislead).
fn json_error_message(error: &serde_json::Error) -> String {
    let full = error.to_string();
    let position = format!(" at line {} column {}", error.line(), error.column());
    let message = full.strip_suffix(&position).unwrap_or(&full);
    format!("malformed JSON: {message} (column {})", error.column())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::builder::{ListBuilder, StringBuilder};
    use arrow_array::{BinaryArray, Int64Array, RecordBatch, StringArray, StructArray};
    use arrow_schema::{Field, Fields};
    use parquet::arrow::ArrowWriter;
    use serde_json::json;

    use super::*;

    fn required(fields: &[&str]) -> ReadOptions {
        ReadOptions {
            required_fields: fields.iter().map(|field| (*field).to_owned()).collect(),
            ..ReadOptions::default()
        }
    }

    #[test]
    fn jsonl_rows_resolve_images_and_skip_blank_lines() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bench.jsonl");
        std::fs::write(
            &file,
            "\u{feff}{\"input\": \"q0\", \"label\": \"yes\", \"image\": \"img/0.png\"}\r\n\n\
             {\"input\": \"q1\", \"label\": \"no\", \"image\": \"/abs/1.png\"}\n",
        )
        .unwrap();
        let rows = read_benchmark(&file, &required(&["input", "label", "image"])).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].index, 0);
        assert_eq!(rows[1].index, 1);
        assert_eq!(
            rows[0].image,
            Some(ImageSource::Path(dir.path().join("img/0.png")))
        );
        assert_eq!(rows[1].image, Some(ImageSource::Path("/abs/1.png".into())));
        assert_eq!(rows[0].fields["image"], json!("img/0.png"));

        let options = ReadOptions {
            images_dir: Some("/data/images".into()),
            limit: Some(1),
            ..required(&["input"])
        };
        let rows = read_benchmark(&file, &options).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(
            rows[0].image,
            Some(ImageSource::Path("/data/images/img/0.png".into()))
        );
    }

    #[test]
    fn jsonl_errors_name_file_line_and_field() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bench.jsonl");
        std::fs::write(
            &file,
            "{\"input\": \"q0\", \"label\": \"a\", \"image\": \"0.png\"}\n\n{\"input\": \"q1\", \"image\": \"1.png\"}\n",
        )
        .unwrap();
        let error = read_benchmark(&file, &required(&["input", "label", "image"])).unwrap_err();
        let message = error.to_string();
        assert!(
            matches!(error, BenchmarkError::MissingField { .. }),
            "{error:?}"
        );
        assert!(message.contains("bench.jsonl"), "{message}");
        assert!(message.contains("line 3"), "{message}");
        assert!(message.contains("`label`"), "{message}");

        std::fs::write(&file, "{\"input\": \"q0\", \"label\": \"a\"}\n").unwrap();
        let message = read_benchmark(&file, &required(&["image"]))
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("line 1") && message.contains("`image`"),
            "{message}"
        );

        std::fs::write(&file, "{\"input\": \"q0\"}\n{\"input\": }\n").unwrap();
        let message = read_benchmark(&file, &required(&[]))
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("line 2") && message.contains("malformed JSON"),
            "{message}"
        );

        std::fs::write(&file, "[1]\n").unwrap();
        let message = read_benchmark(&file, &required(&[]))
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("line 1") && message.contains("an array"),
            "{message}"
        );

        std::fs::write(&file, "{\"image\": 3}\n").unwrap();
        let message = read_benchmark(&file, &required(&[]))
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("`image` must be a path string"),
            "{message}"
        );

        std::fs::write(&file, "\n\n").unwrap();
        let error = read_benchmark(&file, &required(&[])).unwrap_err();
        assert!(matches!(error, BenchmarkError::Empty { .. }), "{error:?}");

        let error = read_benchmark(&dir.path().join("absent.jsonl"), &required(&[])).unwrap_err();
        assert!(error.to_string().contains("absent.jsonl"), "{error}");
    }

    /// Writes a parquet file shaped like a `datasets` export: an `image` struct column of
    /// `bytes` + `path`, string columns and a list-of-strings label.
    fn write_parquet(path: &Path, with_label: bool) {
        let bytes: ArrayRef = Arc::new(BinaryArray::from(vec![
            Some(&b"not really a png"[..]),
            None,
            None,
        ]));
        let paths: ArrayRef = Arc::new(StringArray::from(vec![
            Some("synpic1.png"),
            Some("on_disk.jpg"),
            None,
        ]));
        let image = StructArray::try_new(
            Fields::from(vec![
                Field::new("bytes", DataType::Binary, true),
                Field::new("path", DataType::Utf8, true),
            ]),
            vec![bytes, paths],
            None,
        )
        .unwrap();
        let input: ArrayRef = Arc::new(StringArray::from(vec!["q0", "q1", "q2"]));
        let answer_type: ArrayRef =
            Arc::new(StringArray::from(vec![Some("OPEN"), None, Some("CLOSED")]));
        let number: ArrayRef = Arc::new(Int64Array::from(vec![7, 8, 9]));
        let mut labels = ListBuilder::new(StringBuilder::new());
        let label_rows: [&[&str]; 3] = [&["pork", "garlic"], &[], &["tea"]];
        for names in label_rows {
            for name in names {
                labels.values().append_value(name);
            }
            labels.append(true);
        }
        let label: ArrayRef = Arc::new(labels.finish());

        let mut columns = vec![
            ("image", Arc::new(image) as ArrayRef),
            ("input", input),
            ("answer_type", answer_type),
            ("number", number),
        ];
        if with_label {
            columns.push(("label", label));
        }
        let batch = RecordBatch::try_from_iter(columns).unwrap();
        let file = File::create(path).unwrap();
        let mut writer = ArrowWriter::try_new(file, batch.schema(), None).unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();
    }

    #[test]
    fn parquet_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        // No extension on purpose: the format is told by the content.
        let file = dir.path().join("bench");
        write_parquet(&file, true);
        let options = ReadOptions {
            images_dir: Some("/images".into()),
            ..required(&["input", "label"])
        };
        let rows = read_benchmark(&file, &options).unwrap();
        assert_eq!(rows.len(), 3);

        assert_eq!(rows[0].index, 0);
        assert_eq!(
            rows[0].image,
            Some(ImageSource::Bytes {
                bytes: b"not really a png".to_vec(),
                name: "synpic1.png".to_owned(),
            })
        );
        assert_eq!(
            Value::Object(rows[0].fields.clone()),
            json!({
                "image": "synpic1.png",
                "input": "q0",
                "answer_type": "OPEN",
                "number": 7,
                "label": ["pork", "garlic"],
            })
        );

        assert_eq!(
            rows[1].image,
            Some(ImageSource::Path("/images/on_disk.jpg".into()))
        );
        assert_eq!(rows[1].fields["answer_type"], Value::Null);
        assert_eq!(rows[1].fields["label"], json!([]));

        assert_eq!(rows[2].index, 2);
        assert_eq!(rows[2].image, None);
        assert!(!rows[2].fields.contains_key("image"));

        let limited = ReadOptions {
            limit: Some(2),
            ..options.clone()
        };
        assert_eq!(read_benchmark(&file, &limited).unwrap().len(), 2);

        // A required image or a required non-null value is checked per row.
        let message = read_benchmark(&file, &required(&["image"]))
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("row 3") && message.contains("`image`"),
            "{message}"
        );
        let message = read_benchmark(&file, &required(&["answer_type"]))
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("row 2") && message.contains("`answer_type`"),
            "{message}"
        );
    }

    #[test]
    fn bytes_in_memory_read_like_the_file_and_picked_images_attach() {
        let dir = tempfile::tempdir().unwrap();
        let parquet = dir.path().join("bench.parquet");
        write_parquet(&parquet, true);
        let from_file = read_benchmark(&parquet, &required(&["input", "label"])).unwrap();
        let from_bytes = read_benchmark_bytes(
            &parquet,
            std::fs::read(&parquet).unwrap(),
            &required(&["input", "label"]),
        )
        .unwrap();
        assert_eq!(from_file, from_bytes);

        let jsonl = b"{\"input\": \"q0\", \"label\": \"a\", \"image\": \"img/0.png\"}\n\
                      {\"input\": \"q1\", \"label\": \"b\", \"image\": \"img/10.png\"}\n";
        let options = ReadOptions {
            images_dir: Some(PathBuf::new()),
            ..required(&["input"])
        };
        let name = Path::new("picked.jsonl");
        let mut rows = read_benchmark_bytes(name, jsonl.to_vec(), &options).unwrap();
        let images: std::collections::BTreeMap<String, Vec<u8>> = [
            ("folder/img/10.png".to_owned(), vec![10]),
            ("0.png".to_owned(), vec![0]),
        ]
        .into_iter()
        .collect();
        attach_picked_images(name, &mut rows, &images).unwrap();
        let bytes = |row: &BenchmarkRow| match &row.image {
            Some(ImageSource::Bytes { bytes, name }) => (bytes.clone(), name.clone()),
            other => panic!("not attached: {other:?}"),
        };
        // `0.png` matches by file name only; `10.png` by its written path, not `0.png`.
        assert_eq!(bytes(&rows[0]), (vec![0], "img/0.png".to_owned()));
        assert_eq!(bytes(&rows[1]), (vec![10], "img/10.png".to_owned()));

        let mut rows = read_benchmark_bytes(name, jsonl.to_vec(), &options).unwrap();
        let only_one: std::collections::BTreeMap<String, Vec<u8>> =
            [("img/0.png".to_owned(), vec![0])].into_iter().collect();
        let error = attach_picked_images(name, &mut rows, &only_one)
            .unwrap_err()
            .to_string();
        assert_eq!(
            error,
            "picked.jsonl: line 2: image `img/10.png` was not among the picked image files"
        );
    }

    #[test]
    fn parquet_without_a_needed_column_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bench.parquet");
        write_parquet(&file, false);
        let error = read_benchmark(&file, &required(&["input", "label"])).unwrap_err();
        assert!(
            matches!(error, BenchmarkError::MissingColumn { .. }),
            "{error:?}"
        );
        let message = error.to_string();
        assert!(message.contains("bench.parquet"), "{message}");
        assert!(message.contains("no `label` column"), "{message}");
        assert!(
            message.contains("image, input, answer_type, number"),
            "{message}"
        );
    }

    #[test]
    fn truncated_parquet_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bench.parquet");
        write_parquet(&file, true);
        let bytes = std::fs::read(&file).unwrap();
        std::fs::write(&file, &bytes[..bytes.len() / 2]).unwrap();
        let error = read_benchmark(&file, &required(&[])).unwrap_err();
        assert!(matches!(error, BenchmarkError::Parquet { .. }), "{error:?}");
    }
}
