//! Hugging Face safetensors checkpoints: a single `model.safetensors` or shards listed in
//! `model.safetensors.index.json`.
//!
//! Reading streams one tensor at a time from the file (no mmap of the whole checkpoint), so
//! peak memory while loading stays near one copy of the weights. bf16 / f16 / f32 / f64 on disk
//! convert to f32; other dtypes are refused with the tensor's name.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use safetensors::Dtype;
use serde::Deserialize;

use super::files::ModelFiles;
use super::quantized_store::stored_quantization;
use crate::io::{FileError, write_atomic, write_atomic_with};
use crate::quantize::Quantization;

/// File name of an unsharded checkpoint.
pub const SINGLE_FILE: &str = "model.safetensors";
/// File name of the shard index.
pub const INDEX_FILE: &str = "model.safetensors.index.json";

/// Where one tensor lives on disk.
#[derive(Debug, Clone)]
struct TensorLocation {
    shard: usize,
    dtype: Dtype,
    shape: Vec<usize>,
    /// Absolute byte range within the shard file.
    start: u64,
    end: u64,
}

#[derive(Deserialize)]
struct HeaderEntry {
    dtype: Dtype,
    shape: Vec<usize>,
    data_offsets: (u64, u64),
}

#[derive(Deserialize)]
struct ShardIndex {
    weight_map: BTreeMap<String, String>,
}

/// An opened checkpoint: headers parsed, data read on demand.
#[derive(Debug)]
pub struct CheckpointReader {
    /// (folder, file name) of each shard.
    shards: Vec<(ModelFiles, String)>,
    tensors: HashMap<String, TensorLocation>,
    /// How the folder's quantized linear layers are stored (its `quantization_config`).
    stored_quantization: Option<Quantization>,
}

impl CheckpointReader {
    /// Opens the checkpoint of a model folder on disk (single file or sharded).
    pub fn open_dir(model_dir: &Path) -> Result<Self, FileError> {
        Self::open(&ModelFiles::Dir(model_dir.to_path_buf()))
    }

    /// Opens the checkpoint of a model folder on disk or in memory (single file or sharded).
    pub fn open(files: &ModelFiles) -> Result<Self, FileError> {
        let mut reader = Self {
            shards: Vec::new(),
            tensors: HashMap::new(),
            stored_quantization: stored_quantization(files)?,
        };
        if files.exists(INDEX_FILE) {
            let parsed: ShardIndex = files.read_json(INDEX_FILE)?;
            let mut shard_names: Vec<String> = parsed.weight_map.values().cloned().collect();
            shard_names.sort();
            shard_names.dedup();
            for name in &shard_names {
                if !files.exists(name) {
                    return Err(FileError::new(
                        &files.path(name),
                        format!("listed in {INDEX_FILE} but missing from the model folder"),
                    ));
                }
                reader.add_shard(files, name)?;
            }
            for (tensor, shard) in &parsed.weight_map {
                if !reader.tensors.contains_key(tensor) {
                    return Err(FileError::tensor(
                        &files.path(shard),
                        tensor,
                        format!("listed in {INDEX_FILE} but not present in the shard"),
                    ));
                }
            }
            Ok(reader)
        } else if files.exists(SINGLE_FILE) {
            reader.add_shard(files, SINGLE_FILE)?;
            Ok(reader)
        } else {
            Err(FileError::new(
                &files.root(),
                format!("no {SINGLE_FILE} or {INDEX_FILE} in the model folder"),
            ))
        }
    }

    /// Opens one or more safetensors files on disk as one checkpoint.
    pub fn open_files(paths: &[PathBuf]) -> Result<Self, FileError> {
        let mut reader = Self {
            shards: Vec::new(),
            tensors: HashMap::new(),
            stored_quantization: None,
        };
        for p in paths {
            let dir = p.parent().map(Path::to_path_buf).unwrap_or_default();
            let name = p
                .file_name()
                .and_then(|n| n.to_str())
                .ok_or_else(|| FileError::new(p, "not a file name"))?;
            reader.add_shard(&ModelFiles::Dir(dir), name)?;
        }
        Ok(reader)
    }

    /// Renames every key by `rename` (keys it maps to `None` are dropped): a checkpoint saved in
    /// another layout is read under the names the loader asks for.
    pub fn rename_keys(&mut self, rename: impl Fn(&str) -> Option<String>) {
        let tensors = std::mem::take(&mut self.tensors);
        self.tensors = tensors
            .into_iter()
            .filter_map(|(name, loc)| rename(&name).map(|n| (n, loc)))
            .collect();
    }

    fn add_shard(&mut self, files: &ModelFiles, file: &str) -> Result<(), FileError> {
        let path = files.path(file);
        let not_st = |msg: String| FileError::new(&path, format!("not a safetensors file: {msg}"));
        let file_len = files.len(file)?;
        let len_bytes = files
            .read_range(file, 0, 8)
            .map_err(|_| not_st("shorter than the 8-byte header length".into()))?;
        let header_len = u64::from_le_bytes(len_bytes.try_into().expect("8 bytes"));
        if header_len > 100 * 1024 * 1024 || 8 + header_len > file_len {
            return Err(not_st(format!(
                "header length {header_len} does not fit a {file_len}-byte file"
            )));
        }
        let header = files
            .read_range(file, 8, header_len as usize)
            .map_err(|e| not_st(format!("cannot read header: {e}")))?;
        let header: BTreeMap<String, serde_json::Value> = serde_json::from_slice(&header)
            .map_err(|e| not_st(format!("header is not JSON: {e}")))?;
        let data_start = 8 + header_len;
        let shard = self.shards.len();
        let mut data_end = 0u64;
        for (name, value) in header {
            if name == "__metadata__" {
                continue;
            }
            let entry: HeaderEntry = serde_json::from_value(value).map_err(|e| {
                FileError::tensor(&path, &name, format!("malformed header entry: {e}"))
            })?;
            let (a, b) = entry.data_offsets;
            check_entry(&entry, file_len - data_start)
                .map_err(|message| FileError::tensor(&path, &name, message))?;
            data_end = data_end.max(b);
            self.tensors.insert(
                name,
                TensorLocation {
                    shard,
                    dtype: entry.dtype,
                    shape: entry.shape,
                    start: data_start + a,
                    end: data_start + b,
                },
            );
        }
        if data_start + data_end > file_len {
            return Err(FileError::new(
                &path,
                format!(
                    "truncated: the header describes {} bytes of data but the file has {}",
                    data_end,
                    file_len - data_start
                ),
            ));
        }
        self.shards.push((files.clone(), file.to_owned()));
        Ok(())
    }

    /// How the quantized linear layers of a folder written by `adamllm quantize` are stored
    /// (`None`: a dense checkpoint).
    pub fn stored_quantization(&self) -> Option<Quantization> {
        self.stored_quantization
    }

    /// All tensor names, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.tensors.keys().cloned().collect();
        v.sort();
        v
    }

    /// The tensor with the most elements and that count (the embedding table of a language
    /// model): what a GPU's per-binding buffer limit is checked against.
    pub fn largest_tensor(&self) -> Option<(String, usize)> {
        self.tensors
            .iter()
            .map(|(name, t)| (name.clone(), t.shape.iter().product::<usize>()))
            .max_by(|a, b| a.1.cmp(&b.1).then_with(|| b.0.cmp(&a.0)))
    }

    /// Total number of elements over all tensors (the parameter count).
    pub fn parameter_count(&self) -> usize {
        self.tensors
            .values()
            .map(|t| t.shape.iter().product::<usize>())
            .sum()
    }

    /// Whether the checkpoint holds `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// Shape of a tensor, if present.
    pub fn shape(&self, name: &str) -> Option<&[usize]> {
        self.tensors.get(name).map(|t| t.shape.as_slice())
    }

    /// Storage dtype of a tensor, if present.
    pub fn dtype(&self, name: &str) -> Option<Dtype> {
        self.tensors.get(name).map(|t| t.dtype)
    }

    /// The file that holds `name` (the first shard when absent, for error messages).
    pub fn file_of(&self, name: &str) -> PathBuf {
        let shard = self.tensors.get(name).map(|t| t.shard).unwrap_or(0);
        self.shards
            .get(shard)
            .map(|(files, file)| files.path(file))
            .unwrap_or_else(|| PathBuf::from("<checkpoint>"))
    }

    /// Reads a tensor's stored bytes, checking that it has `expected_dtype` and
    /// `expected_shape` (the integer tensors of a quantized folder). Errors name the file and
    /// the tensor.
    pub fn read_bytes(
        &self,
        name: &str,
        expected_dtype: Dtype,
        expected_shape: &[usize],
    ) -> Result<Vec<u8>, FileError> {
        let loc = self.tensors.get(name).ok_or_else(|| {
            FileError::tensor(&self.file_of(name), name, "missing from the checkpoint")
        })?;
        let (files, file) = &self.shards[loc.shard];
        let path = files.path(file);
        if loc.dtype != expected_dtype || loc.shape != expected_shape {
            return Err(FileError::tensor(
                &path,
                name,
                format!(
                    "expected {expected_dtype:?} {expected_shape:?}, found {:?} {:?}",
                    loc.dtype, loc.shape
                ),
            ));
        }
        // The header check made the byte range exactly the shape's size.
        files
            .read_range(file, loc.start, (loc.end - loc.start) as usize)
            .map_err(|e| FileError::tensor(&path, name, format!("cannot read data: {}", e.message)))
    }

    /// Reads a tensor as f32, checking its shape. Errors name the file and the tensor.
    pub fn read_f32(&self, name: &str, expected_shape: &[usize]) -> Result<Vec<f32>, FileError> {
        let loc = self.tensors.get(name).ok_or_else(|| {
            FileError::tensor(&self.file_of(name), name, "missing from the checkpoint")
        })?;
        let (files, file) = &self.shards[loc.shard];
        let path = files.path(file);
        if loc.shape != expected_shape {
            return Err(FileError::tensor(
                &path,
                name,
                format!(
                    "wrong shape: expected {expected_shape:?}, found {:?}",
                    loc.shape
                ),
            ));
        }
        let count: usize = loc.shape.iter().product();
        let width = match loc.dtype {
            Dtype::F32 => 4,
            Dtype::F16 | Dtype::BF16 => 2,
            Dtype::F64 => 8,
            other => {
                return Err(FileError::tensor(
                    &path,
                    name,
                    format!("unsupported dtype {other:?} (expected F32, F16, BF16 or F64)"),
                ));
            }
        };
        if (loc.end - loc.start) as usize != count * width {
            return Err(FileError::tensor(
                &path,
                name,
                format!(
                    "data size {} does not match shape {:?} of {:?}",
                    loc.end - loc.start,
                    loc.shape,
                    loc.dtype
                ),
            ));
        }
        let bytes = files
            .read_range(file, loc.start, count * width)
            .map_err(|e| {
                FileError::tensor(&path, name, format!("cannot read data: {}", e.message))
            })?;
        Ok(decode_to_f32(&bytes, loc.dtype))
    }
}

/// Checks one header entry against the data the file holds (`data_len` bytes after the
/// header): offsets in order and inside the file, a shape whose element count stays within
/// [`crate::limits::MAX_TENSOR_ELEMENTS`], and a byte range of exactly that many elements.
/// After this, sizes computed from the entry cannot overflow.
fn check_entry(entry: &HeaderEntry, data_len: u64) -> Result<(), String> {
    let (start, end) = entry.data_offsets;
    if start > end {
        return Err(format!("data_offsets [{start}, {end}] are out of order"));
    }
    if end > data_len {
        return Err(format!(
            "data_offsets [{start}, {end}] reach past the {data_len} bytes of data after the \
             header: the file is truncated, or its header is wrong"
        ));
    }
    let limit = crate::limits::MAX_TENSOR_ELEMENTS;
    let count = crate::limits::checked_product(&entry.shape)
        .filter(|&n| n <= limit)
        .ok_or_else(|| {
            format!(
                "shape {:?} has more than the limit of {limit} elements",
                entry.shape
            )
        })?;
    let bits = u128::from(count) * (entry.dtype.bitsize() as u128);
    if bits.div_ceil(8) != u128::from(end - start) {
        return Err(format!(
            "{} bytes of data do not match shape {:?} of {:?}",
            end - start,
            entry.shape,
            entry.dtype
        ));
    }
    Ok(())
}

fn decode_to_f32(bytes: &[u8], dtype: Dtype) -> Vec<f32> {
    match dtype {
        Dtype::F32 => bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Dtype::F16 => bytes
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::BF16 => bytes
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::F64 => bytes
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")) as f32)
            .collect(),
        _ => unreachable!("checked by the caller"),
    }
}

/// Storage dtype for written checkpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageDtype {
    /// 32-bit float.
    F32,
    /// bfloat16 (what HF releases use).
    Bf16,
    /// IEEE half precision.
    F16,
}

impl StorageDtype {
    /// The storage dtype keeping a model's `dtype` (f32 for anything but the half types).
    pub fn of(dtype: burn::tensor::DType) -> Self {
        match dtype {
            burn::tensor::DType::BF16 => Self::Bf16,
            burn::tensor::DType::F16 => Self::F16,
            _ => Self::F32,
        }
    }

    /// Bytes per stored value.
    pub fn bytes(self) -> usize {
        self.safetensors().bitsize() / 8
    }

    /// The safetensors dtype.
    pub(crate) fn safetensors(self) -> Dtype {
        match self {
            Self::F32 => Dtype::F32,
            Self::Bf16 => Dtype::BF16,
            Self::F16 => Dtype::F16,
        }
    }

    /// `values` as this dtype's little-endian bytes.
    pub(crate) fn encode(self, values: &[f32]) -> Vec<u8> {
        match self {
            Self::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            Self::Bf16 => values
                .iter()
                .flat_map(|v| half::bf16::from_f32(*v).to_le_bytes())
                .collect(),
            Self::F16 => values
                .iter()
                .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
                .collect(),
        }
    }
}

/// One tensor to write: HF name, HF shape and row-major f32 values.
pub struct NamedTensor {
    /// Checkpoint key.
    pub name: String,
    /// Shape as stored.
    pub shape: Vec<usize>,
    /// Row-major values.
    pub values: Vec<f32>,
}

struct OwnedView {
    dtype: Dtype,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

impl safetensors::View for &OwnedView {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        std::borrow::Cow::Borrowed(&self.bytes)
    }
    fn data_len(&self) -> usize {
        self.bytes.len()
    }
}

/// Writes tensors as one safetensors file, atomically, with `{"format": "pt"}` metadata as
/// transformers expects.
pub fn write_safetensors(
    path: &Path,
    tensors: &[NamedTensor],
    dtype: StorageDtype,
) -> Result<(), FileError> {
    let views: Vec<(String, OwnedView)> = tensors
        .iter()
        .map(|t| {
            (
                t.name.clone(),
                OwnedView {
                    dtype: dtype.safetensors(),
                    shape: t.shape.clone(),
                    bytes: dtype.encode(&t.values),
                },
            )
        })
        .collect();
    let mut metadata = HashMap::new();
    metadata.insert("format".to_string(), "pt".to_string());
    let bytes = safetensors::serialize(views.iter().map(|(n, v)| (n.as_str(), v)), Some(metadata))
        .map_err(|e| FileError::new(path, format!("cannot serialize safetensors: {e}")))?;
    write_atomic(path, &bytes)
}

/// Writes a safetensors file tensor by tensor: the header from `entries` (name, shape) first,
/// then each tensor's values as `values(i)` produces them, so a checkpoint larger than memory
/// (an 8B model's random initialization) is written holding one tensor at a time. Atomic, with
/// `{"format": "pt"}` metadata.
pub fn write_safetensors_streaming(
    path: &Path,
    entries: &[(String, Vec<usize>)],
    dtype: StorageDtype,
    mut values: impl FnMut(usize) -> Vec<f32>,
) -> Result<(), FileError> {
    let typed: Vec<StreamedTensor> = entries
        .iter()
        .map(|(name, shape)| StreamedTensor {
            name: name.clone(),
            shape: shape.clone(),
            dtype: dtype.safetensors(),
        })
        .collect();
    write_safetensors_bytes(path, &typed, |i| Ok(dtype.encode(&values(i))))
}

/// One tensor of a file written by [`write_safetensors_bytes`]: its key, shape and dtype.
#[derive(Debug, Clone)]
pub struct StreamedTensor {
    /// Checkpoint key.
    pub name: String,
    /// Shape as stored.
    pub shape: Vec<usize>,
    /// Stored dtype.
    pub dtype: Dtype,
}

impl StreamedTensor {
    /// Bytes of its data.
    pub fn byte_len(&self) -> usize {
        (self.shape.iter().product::<usize>() * self.dtype.bitsize()).div_ceil(8)
    }
}

/// Writes a safetensors file of tensors of any dtype, one at a time: `bytes(i)` gives the
/// little-endian data of `entries[i]` (an error or a wrong length aborts the write, leaving
/// no file). Atomic, with `{"format": "pt"}` metadata.
pub fn write_safetensors_bytes(
    path: &Path,
    entries: &[StreamedTensor],
    mut bytes: impl FnMut(usize) -> Result<Vec<u8>, String>,
) -> Result<(), FileError> {
    let mut header = serde_json::Map::new();
    header.insert("__metadata__".into(), serde_json::json!({"format": "pt"}));
    let mut offset = 0usize;
    for entry in entries {
        let len = entry.byte_len();
        header.insert(
            entry.name.clone(),
            serde_json::json!({
                "dtype": entry.dtype.to_string(),
                "shape": entry.shape,
                "data_offsets": [offset, offset + len],
            }),
        );
        offset += len;
    }
    let mut header = serde_json::to_vec(&serde_json::Value::Object(header))
        .map_err(|e| FileError::new(path, format!("cannot serialize the header: {e}")))?;
    // The data starts 8-byte aligned, the header padded with spaces (as safetensors writes).
    while !(8 + header.len()).is_multiple_of(8) {
        header.push(b' ');
    }
    write_atomic_with(path, |file| {
        use std::io::Write;
        let mut w = std::io::BufWriter::new(file);
        w.write_all(&(header.len() as u64).to_le_bytes())?;
        w.write_all(&header)?;
        for (i, entry) in entries.iter().enumerate() {
            let data = bytes(i).map_err(std::io::Error::other)?;
            if data.len() != entry.byte_len() {
                return Err(std::io::Error::other(format!(
                    "tensor {} has {} bytes for {} {:?}",
                    entry.name,
                    data.len(),
                    entry.dtype,
                    entry.shape
                )));
            }
            w.write_all(&data)?;
        }
        w.flush()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streaming_writer_matches_the_reader() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(SINGLE_FILE);
        let entries = vec![
            ("x".to_string(), vec![2, 2]),
            ("y.bias".to_string(), vec![3]),
        ];
        for dtype in [StorageDtype::F32, StorageDtype::Bf16] {
            write_safetensors_streaming(&p, &entries, dtype, |i| {
                (0..entries[i].1.iter().product::<usize>())
                    .map(|k| (i * 10 + k) as f32)
                    .collect()
            })
            .unwrap();
            let r = CheckpointReader::open_dir(dir.path()).unwrap();
            assert_eq!(r.read_f32("x", &[2, 2]).unwrap(), vec![0.0, 1.0, 2.0, 3.0]);
            assert_eq!(r.read_f32("y.bias", &[3]).unwrap(), vec![10.0, 11.0, 12.0]);
            // safetensors' own parser accepts the file too.
            let bytes = std::fs::read(&p).unwrap();
            assert_eq!(
                safetensors::SafeTensors::deserialize(&bytes).unwrap().len(),
                2
            );
        }
    }

    #[test]
    fn round_trip_and_errors_name_the_tensor() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(SINGLE_FILE);
        let t = vec![
            NamedTensor {
                name: "a.weight".into(),
                shape: vec![2, 3],
                values: vec![1.0, -2.0, 3.5, 0.25, 5.0, 6.0],
            },
            NamedTensor {
                name: "b".into(),
                shape: vec![1],
                values: vec![7.0],
            },
        ];
        write_safetensors(&p, &t, StorageDtype::F32).unwrap();
        let r = CheckpointReader::open_dir(dir.path()).unwrap();
        assert_eq!(r.read_f32("a.weight", &[2, 3]).unwrap(), t[0].values);
        let e = r.read_f32("a.weight", &[3, 2]).unwrap_err().to_string();
        assert!(
            e.contains("a.weight") && e.contains("[3, 2]") && e.contains("[2, 3]"),
            "{e}"
        );
        let e = r.read_f32("missing.bias", &[1]).unwrap_err().to_string();
        assert!(e.contains("missing.bias") && e.contains("missing"), "{e}");

        write_safetensors(&p, &t, StorageDtype::Bf16).unwrap();
        let r = CheckpointReader::open_dir(dir.path()).unwrap();
        assert_eq!(r.read_f32("a.weight", &[2, 3]).unwrap(), t[0].values);

        // Truncation is detected when the file is opened.
        let bytes = std::fs::read(&p).unwrap();
        std::fs::write(&p, &bytes[..bytes.len() - 3]).unwrap();
        let e = CheckpointReader::open_dir(dir.path())
            .unwrap_err()
            .to_string();
        assert!(e.contains("truncated"), "{e}");
        std::fs::write(&p, b"hello").unwrap();
        let e = CheckpointReader::open_dir(dir.path())
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a safetensors file"), "{e}");
    }
}
