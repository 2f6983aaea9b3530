//! Random initialization of a checkpoint layout, as transformers' `_init_weights` does it
//! (normal weights, zero biases, unit norms), deterministic in a seed; shared by every
//! family's `adamllm init` presets.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::models::checkpoint::NamedTensor;

/// How a tensor is initialized.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Init {
    /// Normal(0, std).
    Normal(f64),
    /// All zeros (biases).
    Zeros,
    /// All ones (norm weights).
    Ones,
}

/// One entry of the layout: key, PyTorch shape, initializer.
#[derive(Debug, Clone, PartialEq)]
pub struct LayoutEntry {
    /// Checkpoint key.
    pub name: String,
    /// Shape as stored (`[out, in]` for linear weights).
    pub shape: Vec<usize>,
    /// Initializer.
    pub init: Init,
}

/// Total parameter count of a layout.
pub fn layout_parameters(layout: &[LayoutEntry]) -> usize {
    layout
        .iter()
        .map(|e| e.shape.iter().product::<usize>())
        .sum()
}

/// Random values for every entry of a layout, deterministic in `seed`.
pub fn random_tensors(layout: Vec<LayoutEntry>, seed: u64) -> Vec<NamedTensor> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    layout
        .into_iter()
        .map(|entry| {
            let n: usize = entry.shape.iter().product();
            let values = match entry.init {
                Init::Zeros => vec![0.0; n],
                Init::Ones => vec![1.0; n],
                Init::Normal(std) => (0..n).map(|_| (normal(&mut rng) * std) as f32).collect(),
            };
            NamedTensor {
                name: entry.name,
                shape: entry.shape,
                values,
            }
        })
        .collect()
}

/// A standard normal sample (Box–Muller on two uniform draws).
fn normal(rng: &mut ChaCha8Rng) -> f64 {
    let u1 = ((rng.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    let u2 = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// Writes random values for every entry of a layout straight to a safetensors file, one tensor
/// at a time (the same values as [`random_tensors`] gives for the seed), so a checkpoint larger
/// than memory can be initialized. Returns the parameter count.
pub fn write_random_checkpoint(
    path: &std::path::Path,
    layout: &[LayoutEntry],
    seed: u64,
    dtype: crate::models::checkpoint::StorageDtype,
) -> Result<usize, crate::io::FileError> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let entries: Vec<(String, Vec<usize>)> = layout
        .iter()
        .map(|e| (e.name.clone(), e.shape.clone()))
        .collect();
    crate::models::checkpoint::write_safetensors_streaming(path, &entries, dtype, |i| {
        let entry = &layout[i];
        let n: usize = entry.shape.iter().product();
        match entry.init {
            Init::Zeros => vec![0.0; n],
            Init::Ones => vec![1.0; n],
            Init::Normal(std) => (0..n).map(|_| (normal(&mut rng) * std) as f32).collect(),
        }
    })?;
    Ok(layout_parameters(layout))
}

/// Writes a preset's random weights: real-size shapes in bf16 (as their releases are stored,
/// half the bytes), small ones in f32. Returns the parameter count.
pub fn write_preset_checkpoint(
    out: &std::path::Path,
    layout: &[LayoutEntry],
    seed: u64,
    real_size: bool,
) -> Result<usize, crate::io::FileError> {
    use crate::models::checkpoint::{SINGLE_FILE, StorageDtype};
    let storage = if real_size {
        StorageDtype::Bf16
    } else {
        StorageDtype::F32
    };
    write_random_checkpoint(&out.join(SINGLE_FILE), layout, seed, storage)
}
