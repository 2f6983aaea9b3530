//! Writing a (trained) model back to disk in Hugging Face layout, whatever its family.
//!
//! The inverse of loading: every parameter of the network is visited with its module path
//! (`vision.blocks.0.attn.qkv.weight`), renamed by the family to the key transformers uses
//! (`visual.blocks.0.attn.qkv.weight`) and put back into PyTorch's layout (linear weights
//! `[out, in]`, patch embeddings as convolution kernels). LoRA adapter parameters are not part
//! of the dense checkpoint: merge them first ([`crate::train::lora::merge_lora`]) or export
//! them as a PEFT adapter.

use std::path::Path;

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::Tensor;

use super::Network;
use super::family::{KeyLayout, Model};
use super::paths::ModulePath;
use crate::io::FileError;
use crate::models::checkpoint::{INDEX_FILE, StorageDtype, write_safetensors_streaming};
use crate::models::layers::{tensor_to_vec, transpose_2d};

/// File name of a single-file checkpoint.
pub const MODEL_FILE: &str = "model.safetensors";

/// A float parameter's module path, dims and flattened values (a handle: nothing is read
/// back from the device until asked).
struct PathParam {
    path: String,
    dims: Vec<usize>,
    flat: Tensor<1>,
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
        let tensor = param.val().detach();
        let dims = tensor.dims().to_vec();
        let numel = dims.iter().product::<usize>();
        self.out.push(PathParam {
            path,
            dims,
            flat: tensor.reshape([numel]),
        });
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
        .map(|p| (p.path, p.dims, tensor_to_vec(p.flat)))
        .collect()
}

/// Hugging Face's default shard size: `save_pretrained(max_shard_size="5GB")`, 5·10⁹ bytes.
pub const DEFAULT_MAX_SHARD_BYTES: u64 = 5_000_000_000;

/// One dense checkpoint tensor to export: its key and stored shape, and where its values are
/// (a handle on the parameter, flattened; read only when its shard is written).
struct ExportEntry {
    name: String,
    shape: Vec<usize>,
    dims: Vec<usize>,
    layout: KeyLayout,
    values: Tensor<1>,
}

impl ExportEntry {
    /// The values in the checkpoint's layout (read back from the device now).
    fn stored_values(&self) -> Vec<f32> {
        let values = tensor_to_vec(self.values.clone());
        match self.layout {
            KeyLayout::Same => values,
            KeyLayout::Transposed | KeyLayout::TransposedAs(_) => {
                transpose_2d(&values, self.dims[0], self.dims[1])
            }
        }
    }
}

/// The dense checkpoint entries of a network, in module order.
fn export_entries(network: &Network) -> Vec<ExportEntry> {
    let family = network.family();
    params_with_paths(network, |_| true)
        .into_iter()
        .filter_map(|p| {
            let (name, layout) = family.checkpoint_key(&p.path, &p.dims)?;
            let shape = match &layout {
                KeyLayout::Same => p.dims.clone(),
                KeyLayout::Transposed => vec![p.dims[1], p.dims[0]],
                KeyLayout::TransposedAs(shape) => shape.clone(),
            };
            Some(ExportEntry {
                name,
                shape,
                dims: p.dims,
                layout,
                values: p.flat,
            })
        })
        .collect()
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

/// Writes the network's dense checkpoint into `out` in shards of at most `max_shard_bytes`
/// (with `model.safetensors.index.json` when there are several), one tensor in host memory at
/// a time. Weight files of an earlier export that the new one does not use are removed.
fn write_checkpoint_shards(
    network: &Network,
    out: &Path,
    dtype: StorageDtype,
    max_shard_bytes: u64,
) -> Result<(), FileError> {
    let entries = export_entries(network);
    let width = dtype.bytes() as u64;
    let sizes: Vec<u64> = entries
        .iter()
        .map(|e| e.shape.iter().product::<usize>() as u64 * width)
        .collect();
    let shards = plan_shards(&sizes, max_shard_bytes.max(1));
    let files = shard_file_names(shards.len());
    let mut weight_map = serde_json::Map::new();
    for (shard, file) in shards.iter().zip(&files) {
        let header: Vec<(String, Vec<usize>)> = shard
            .iter()
            .map(|&i| (entries[i].name.clone(), entries[i].shape.clone()))
            .collect();
        write_safetensors_streaming(&out.join(file), &header, dtype, |k| {
            entries[shard[k]].stored_values()
        })?;
        for &i in shard {
            weight_map.insert(entries[i].name.clone(), file.clone().into());
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
    remove_stale_weight_files(out, &files)
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
    if let Some(config) = model.net().export_config() {
        crate::io::write_json_atomic(&out.join("config.json"), &config)?;
    }
    write_checkpoint_shards(
        &model.network,
        out,
        StorageDtype::of(model.dtype),
        max_shard_bytes,
    )
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
