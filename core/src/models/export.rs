//! Writing a (trained) model back to disk in Hugging Face layout, whatever its family.
//!
//! The inverse of loading: every parameter of the network is visited with its module path
//! (`vision.blocks.0.attn.qkv.weight`), renamed by the family to the key transformers uses
//! (`visual.blocks.0.attn.qkv.weight`) and put back into PyTorch's layout (linear weights
//! `[out, in]`, patch embeddings as convolution kernels). LoRA adapter parameters are not part
//! of the dense checkpoint: merge them first ([`crate::train::lora::merge_lora`]) or export
//! them as a PEFT adapter.

use std::cell::RefCell;
use std::path::Path;
use std::rc::Rc;

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::Tensor;

use super::Network;
use super::family::{KeyLayout, Model};
use super::paths::ModulePath;
use crate::io::FileError;
use crate::models::checkpoint::{
    INDEX_FILE, StorageDtype, StreamedTensor, write_safetensors_bytes,
};
use crate::models::layers::{tensor_to_vec, transpose_2d};
use crate::models::quantized_store;
use crate::quantize::Quantization;

/// File name of a single-file checkpoint.
pub const MODEL_FILE: &str = "model.safetensors";

/// A float parameter's module path, dims and values (a handle: nothing is read back from the
/// device until asked).
struct PathParam {
    path: String,
    dims: Vec<usize>,
    values: ParamValues,
}

/// Where a [`PathParam`]'s values are.
enum ParamValues {
    /// A float tensor, flattened.
    Float(Tensor<1>),
    /// A linear weight `[in, out]` quantized as ours, as the backend stores it.
    Quantized(Quantization, Tensor<2>),
}

impl ParamValues {
    /// The values as f32, flattened (a quantized weight dequantized).
    fn to_f32(&self) -> Vec<f32> {
        match self {
            Self::Float(flat) => tensor_to_vec(flat.clone()),
            Self::Quantized(_, weight) => tensor_to_vec(weight.clone().dequantize()),
        }
    }
}

/// Collects a [`PathParam`] for each float parameter whose path `keep` accepts.
struct PathCollector<F: Fn(&str) -> bool> {
    path: ModulePath,
    keep: F,
    out: Vec<PathParam>,
}

impl<F: Fn(&str) -> bool> ModuleVisitor for PathCollector<F> {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.path.enter(name, container_type);
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.exit();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let path = self.path.joined();
        if !(self.keep)(&path) {
            return;
        }
        let tensor = param.val();
        let dims = tensor.dims().to_vec();
        // Checked before `detach`, which returns a quantized tensor's float values (what
        // other quantizations than ours are written as).
        let values = if let Some(q) = Quantization::of_dtype(tensor.dtype())
            && D == 2
        {
            ParamValues::Quantized(q, tensor.reshape([dims[0], dims[1]]))
        } else {
            let tensor = tensor.detach();
            ParamValues::Float(tensor.reshape([dims.iter().product::<usize>()]))
        };
        self.out.push(PathParam { path, dims, values });
    }
}

/// The float parameters of `module` whose path `keep` accepts, in module order.
fn params_with_paths<M: Module>(module: &M, keep: impl Fn(&str) -> bool) -> Vec<PathParam> {
    let mut collector = PathCollector {
        path: ModulePath::new(),
        keep,
        out: Vec::new(),
    };
    module.visit(&mut collector);
    collector.out
}

/// Every parameter of `module` with its module path, dims and values (host copies).
pub fn parameters_by_path<M: Module>(module: &M) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    parameters_where(module, |_| true)
}

/// Like [`parameters_by_path`], reading back only the parameters whose path `keep` accepts.
pub fn parameters_where<M: Module>(
    module: &M,
    keep: impl Fn(&str) -> bool,
) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    params_with_paths(module, keep)
        .into_iter()
        .map(|p| {
            let values = p.values.to_f32();
            (p.path, p.dims, values)
        })
        .collect()
}

/// Hugging Face's default shard size: `save_pretrained(max_shard_size="5GB")`, 5·10⁹ bytes.
pub const DEFAULT_MAX_SHARD_BYTES: u64 = 5_000_000_000;

/// One checkpoint tensor to export: its key, stored shape and dtype, and where its values
/// are (read only when its shard is written).
struct ExportEntry {
    tensor: StreamedTensor,
    source: EntrySource,
}

/// What an [`ExportEntry`] is made of.
enum EntrySource {
    /// A float parameter, written in the model's dtype in PyTorch's layout.
    Float(Box<FloatSource>),
    /// The integer values (`P.qweight`) or the block scales (`P.scales`) of a quantized
    /// linear weight; the two entries share one read of the weight.
    Quantized {
        weight: Rc<QuantizedWeight>,
        part: QuantizedPart,
    },
}

/// A float parameter (flattened) and how it is stored.
struct FloatSource {
    dims: Vec<usize>,
    layout: KeyLayout,
    values: Tensor<1>,
    storage: StorageDtype,
}

/// Which half of a quantized weight an entry writes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum QuantizedPart {
    Values,
    Scales,
}

/// A quantized linear weight whose two stored halves are written as two entries: the first
/// one written reads the weight back from the device once and keeps the other half until it
/// is asked for, so the host holds at most one pending half.
struct QuantizedWeight {
    quantization: Quantization,
    weight: Tensor<2>,
    pending: RefCell<Option<(QuantizedPart, Vec<u8>)>>,
}

impl QuantizedWeight {
    /// The stored bytes of `part`.
    fn stored_bytes(&self, part: QuantizedPart) -> Result<Vec<u8>, String> {
        if let Some((pending, bytes)) = self.pending.borrow_mut().take()
            && pending == part
        {
            return Ok(bytes);
        }
        let (q, values, scales) = quantized_store::tensor_parts(self.weight.clone())?;
        let values = quantized_store::encode_values(q, &values);
        let scales: Vec<u8> = scales.iter().flat_map(|s| s.to_le_bytes()).collect();
        let (wanted, other) = match part {
            QuantizedPart::Values => (values, (QuantizedPart::Scales, scales)),
            QuantizedPart::Scales => (scales, (QuantizedPart::Values, values)),
        };
        *self.pending.borrow_mut() = Some(other);
        Ok(wanted)
    }
}

impl ExportEntry {
    /// The stored bytes (read back from the device now).
    fn stored_bytes(&self) -> Result<Vec<u8>, String> {
        match &self.source {
            EntrySource::Float(float) => {
                let FloatSource {
                    dims,
                    layout,
                    values,
                    storage,
                } = float.as_ref();
                let values = tensor_to_vec(values.clone());
                let values = match layout {
                    KeyLayout::Same => values,
                    KeyLayout::Transposed | KeyLayout::TransposedAs(_) => {
                        transpose_2d(&values, dims[0], dims[1])
                    }
                };
                Ok(storage.encode(&values))
            }
            EntrySource::Quantized { weight, part } => weight.stored_bytes(*part),
        }
    }
}

/// The checkpoint entries of a network, in module order: float parameters in `storage`, and
/// each quantized linear weight as its values and scales.
fn export_entries(network: &Network, storage: StorageDtype) -> Vec<ExportEntry> {
    let family = network.family();
    let mut entries = Vec::new();
    for p in params_with_paths(network, |_| true) {
        let Some((name, layout)) = family.checkpoint_key(&p.path, &p.dims) else {
            continue;
        };
        match p.values {
            ParamValues::Float(values) => {
                let shape = match &layout {
                    KeyLayout::Same => p.dims.clone(),
                    KeyLayout::Transposed => vec![p.dims[1], p.dims[0]],
                    KeyLayout::TransposedAs(shape) => shape.clone(),
                };
                entries.push(ExportEntry {
                    tensor: StreamedTensor {
                        name,
                        shape,
                        dtype: storage.safetensors(),
                    },
                    source: EntrySource::Float(Box::new(FloatSource {
                        dims: p.dims,
                        layout,
                        values,
                        storage,
                    })),
                });
            }
            ParamValues::Quantized(quantization, weight) => {
                let weight = Rc::new(QuantizedWeight {
                    quantization,
                    weight,
                    pending: RefCell::new(None),
                });
                entries.extend(quantized_entries(&name, &p.dims, weight));
            }
        }
    }
    entries
}

/// The `P.qweight` and `P.scales` entries of the quantized weight stored at `P.weight`.
fn quantized_entries(name: &str, dims: &[usize], weight: Rc<QuantizedWeight>) -> [ExportEntry; 2] {
    let prefix = name.strip_suffix(".weight").unwrap_or(name);
    let (dtype, shape) = quantized_store::values_layout(weight.quantization, dims[0], dims[1]);
    [
        ExportEntry {
            tensor: StreamedTensor {
                name: format!("{prefix}.{}", quantized_store::VALUES_SUFFIX),
                shape: shape.to_vec(),
                dtype,
            },
            source: EntrySource::Quantized {
                weight: Rc::clone(&weight),
                part: QuantizedPart::Values,
            },
        },
        ExportEntry {
            tensor: StreamedTensor {
                name: format!("{prefix}.{}", quantized_store::SCALES_SUFFIX),
                shape: quantized_store::scales_shape(dims[0], dims[1]).to_vec(),
                dtype: safetensors::Dtype::F32,
            },
            source: EntrySource::Quantized {
                weight,
                part: QuantizedPart::Scales,
            },
        },
    ]
}

/// Splits tensors of the given byte sizes into shards as transformers'
/// `save_pretrained(max_shard_size=…)` does: in order, a new shard when the next tensor would
/// take the current one past `max_bytes`, and a tensor larger than `max_bytes` in a shard of
/// its own (placed before the shard being filled). Returns each shard's tensor indices.
pub fn plan_shards(sizes: &[u64], max_bytes: u64) -> Vec<Vec<usize>> {
    let mut shards = Vec::new();
    let mut current = Vec::new();
    let mut current_bytes = 0u64;
    for (i, &size) in sizes.iter().enumerate() {
        if size > max_bytes {
            shards.push(vec![i]);
            continue;
        }
        if current_bytes + size > max_bytes {
            shards.push(std::mem::take(&mut current));
            current_bytes = 0;
        }
        current.push(i);
        current_bytes += size;
    }
    if !current.is_empty() {
        shards.push(current);
    }
    shards
}

/// Reads a shard size as transformers' `convert_file_size_to_int` does: a byte count, or an
/// integer followed by `GB`/`MB`/`KB` (powers of 10) or `GiB`/`MiB`/`KiB` (powers of 2), any
/// case; a lower-case final `b` (`5Gb`) counts bits.
pub fn parse_shard_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let bad = || format!("{text:?} is not a size; write bytes or e.g. 5GB, 500MB, 2GiB");
    if let Ok(bytes) = text.parse::<u64>() {
        return Ok(bytes);
    }
    let upper = text.to_ascii_uppercase();
    let units: [(&str, u64); 6] = [
        ("GIB", 1 << 30),
        ("MIB", 1 << 20),
        ("KIB", 1 << 10),
        ("GB", 1_000_000_000),
        ("MB", 1_000_000),
        ("KB", 1_000),
    ];
    let (unit, scale) = units
        .iter()
        .find(|(unit, _)| upper.ends_with(unit))
        .ok_or_else(bad)?;
    let number: u64 = text[..text.len() - unit.len()]
        .trim()
        .parse()
        .map_err(|_| bad())?;
    let bytes = number.checked_mul(*scale).ok_or_else(bad)?;
    let bits = unit.len() == 2 && text.ends_with('b');
    Ok(if bits { bytes / 8 } else { bytes })
}

/// transformers' shard file names: `model.safetensors` alone, else
/// `model-00001-of-00003.safetensors`, ...
fn shard_file_names(count: usize) -> Vec<String> {
    if count == 1 {
        return vec![MODEL_FILE.to_string()];
    }
    (1..=count)
        .map(|i| format!("model-{i:05}-of-{count:05}.safetensors"))
        .collect()
}

/// Writes the network's checkpoint into `out` in shards of at most `max_shard_bytes` (with
/// `model.safetensors.index.json` when there are several), one tensor in host memory at a
/// time. Weight files of an earlier export that the new one does not use are removed. Returns
/// the quantization of the linear layers written quantized (`None`: all dense).
fn write_checkpoint_shards(
    network: &Network,
    out: &Path,
    storage: StorageDtype,
    max_shard_bytes: u64,
) -> Result<Option<Quantization>, FileError> {
    let entries = export_entries(network, storage);
    let quantized = entries.iter().find_map(|e| match &e.source {
        EntrySource::Quantized { weight, .. } => Some(weight.quantization),
        EntrySource::Float(_) => None,
    });
    let sizes: Vec<u64> = entries.iter().map(|e| e.tensor.byte_len() as u64).collect();
    let shards = plan_shards(&sizes, max_shard_bytes.max(1));
    let files = shard_file_names(shards.len());
    let mut weight_map = serde_json::Map::new();
    for (shard, file) in shards.iter().zip(&files) {
        let tensors: Vec<StreamedTensor> =
            shard.iter().map(|&i| entries[i].tensor.clone()).collect();
        write_safetensors_bytes(&out.join(file), &tensors, |k| {
            entries[shard[k]].stored_bytes()
        })?;
        for &i in shard {
            weight_map.insert(entries[i].tensor.name.clone(), file.clone().into());
        }
    }
    let index_path = out.join(INDEX_FILE);
    if files.len() > 1 {
        let index = serde_json::json!({
            "metadata": {"total_size": sizes.iter().sum::<u64>()},
            "weight_map": weight_map,
        });
        crate::io::write_json_atomic(&index_path, &index)?;
    }
    remove_stale_weight_files(out, &files)?;
    Ok(quantized)
}

/// Removes weight files (and a shard index no longer needed) that are not in `keep`.
fn remove_stale_weight_files(out: &Path, keep: &[String]) -> Result<(), FileError> {
    let entries = std::fs::read_dir(out).map_err(|e| FileError::io(out, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| FileError::io(out, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let needed = keep.contains(&name) || (name == INDEX_FILE && keep.len() > 1);
        if is_weight_file(&name) && !needed {
            std::fs::remove_file(entry.path()).map_err(|e| FileError::io(&entry.path(), e))?;
        }
    }
    Ok(())
}

/// Files of a model folder that describe it without holding weights (copied on export).
fn is_weight_file(name: &str) -> bool {
    name.ends_with(".safetensors")
        || name.ends_with(".bin")
        || name == "model.safetensors.index.json"
        || name == "pytorch_model.bin.index.json"
}

/// Writes `model` as a Hugging Face model folder at `out`: the non-weight files of the folder
/// it was loaded from (config, tokenizer, processor, chat template, generation config) and
/// the weights in the model's dtype (a bf16 model exports bf16), in shards of at most
/// `max_shard_bytes` as transformers writes them (one `model.safetensors` when they fit). The
/// folder loads with every `adamllm` command and with transformers' `from_pretrained`. Each
/// file is written atomically, and the weights one tensor at a time: the host never holds a
/// second copy of the model.
pub fn save_model_dir(model: &Model, out: &Path, max_shard_bytes: u64) -> Result<(), FileError> {
    std::fs::create_dir_all(out).map_err(|e| FileError::io(out, e))?;
    let entries = std::fs::read_dir(&model.dir).map_err(|e| FileError::io(&model.dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| FileError::io(&model.dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !entry.path().is_file() || is_weight_file(&name) {
            continue;
        }
        let bytes = std::fs::read(entry.path()).map_err(|e| FileError::io(&entry.path(), e))?;
        crate::io::write_atomic(&out.join(&name), &bytes)?;
    }
    let quantized = write_checkpoint_shards(
        &model.network,
        out,
        StorageDtype::of(model.dtype),
        max_shard_bytes,
    )?;
    write_config(model, out, quantized)
}

/// Writes `config.json` into an exported folder: the family's export config or the source
/// folder's, with a `quantization_config` exactly when linear layers were written quantized
/// (a merged export of a quantized folder is dense again).
fn write_config(
    model: &Model,
    out: &Path,
    quantized: Option<Quantization>,
) -> Result<(), FileError> {
    let path = out.join("config.json");
    let mut config = match model.net().export_config() {
        Some(config) => config,
        None => crate::io::read_json_file(&path)?,
    };
    if let Some(fields) = config.as_object_mut() {
        match quantized {
            Some(q) => {
                fields.insert(
                    "quantization_config".into(),
                    quantized_store::quantization_config(q),
                );
            }
            None => {
                fields.remove("quantization_config");
            }
        }
    }
    crate::io::write_json_atomic(&path, &config)
}

/// The checkpoint name of a language-model path under `prefix` (`""` for a causal LM,
/// `"language_model."` inside LLaVA-NeXT): `text.embed_tokens` → `model.embed_tokens.weight`,
/// `text.lm_head.weight` → `lm_head.weight`, `text.layers.0...` → `model.layers.0...`; `None`
/// for paths outside the language model.
pub fn text_checkpoint_name(path: &str, prefix: &str) -> Option<String> {
    if path == "text.embed_tokens" {
        return Some(format!("{prefix}model.embed_tokens.weight"));
    }
    if let Some(rest) = path.strip_prefix("text.lm_head") {
        return Some(format!("{prefix}lm_head{rest}"));
    }
    path.strip_prefix("text.")
        .map(|rest| format!("{prefix}model.{rest}"))
}

/// Whether a path belongs to a LoRA adapter (not part of the dense checkpoint).
pub fn is_adapter_path(path: &str) -> bool {
    path.split('.').any(|part| part == "lora")
}

/// The usual layout of a parameter: every 2-D `.weight` is a linear layer's (transposed); the
/// rest (biases, norms, bare parameters such as the token embedding) are stored as they are.
pub fn default_layout(path: &str, dims: &[usize]) -> KeyLayout {
    if dims.len() == 2 && path.ends_with(".weight") {
        KeyLayout::Transposed
    } else {
        KeyLayout::Same
    }
}

/// The transformers name of a linear layer's module path (for PEFT adapter keys).
pub fn module_checkpoint_name(family: &dyn super::FamilyNetwork, module_path: &str) -> String {
    family
        .checkpoint_key(&format!("{module_path}.weight"), &[1, 1])
        .map(|(name, _)| name.strip_suffix(".weight").unwrap_or(&name).to_string())
        .unwrap_or_else(|| module_path.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_split_as_transformers_does() {
        // Fill in order; a new shard when the next tensor would pass the limit.
        assert_eq!(plan_shards(&[4, 4, 4, 4], 10), vec![vec![0, 1], vec![2, 3]]);
        assert_eq!(plan_shards(&[5, 5, 1], 10), vec![vec![0, 1], vec![2]]);
        // A tensor over the limit gets its own shard, before the one being filled.
        assert_eq!(plan_shards(&[3, 12, 3], 10), vec![vec![1], vec![0, 2]]);
        assert_eq!(plan_shards(&[3, 4], 10), vec![vec![0, 1]]);
        assert_eq!(shard_file_names(1), ["model.safetensors"]);
        assert_eq!(
            shard_file_names(2),
            [
                "model-00001-of-00002.safetensors",
                "model-00002-of-00002.safetensors"
            ]
        );
    }

    #[test]
    fn shard_sizes_read_as_transformers_reads_them() {
        assert_eq!(parse_shard_size("5GB"), Ok(5_000_000_000));
        assert_eq!(parse_shard_size("500MB"), Ok(500_000_000));
        assert_eq!(parse_shard_size("500mb"), Ok(62_500_000)); // megabits, as transformers reads it
        assert_eq!(parse_shard_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_shard_size("100KB"), Ok(100_000));
        assert_eq!(parse_shard_size("8Gb"), Ok(1_000_000_000));
        assert_eq!(parse_shard_size("12345"), Ok(12_345));
        for bad in ["5 TB", "GB", "1.5GB", "-3MB", ""] {
            let e = parse_shard_size(bad).unwrap_err();
            assert!(e.contains("not a size") && e.contains("5GB"), "{bad}: {e}");
        }
    }
}
