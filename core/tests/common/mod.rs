//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use adamllm::device::{DeviceChoice, SelectedDevice, select_device};

/// Repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A committed fixture path.
pub fn fixture(rel: &str) -> PathBuf {
    repo_root().join("tests/fixtures").join(rel)
}

/// The two device paths CI has: flex (CPU) and wgpu (lavapipe on CI, a GPU elsewhere).
/// `ADAMLLM_SKIP_WGPU=1` drops wgpu on machines without any Vulkan driver.
pub fn test_devices() -> Vec<(&'static str, SelectedDevice)> {
    let mut v = vec![("cpu", select_device(DeviceChoice::Cpu).unwrap())];
    if std::env::var("ADAMLLM_SKIP_WGPU").as_deref() != Ok("1") {
        let wgpu = select_device(DeviceChoice::Wgpu)
            .expect("no wgpu adapter: install mesa-vulkan-drivers or set ADAMLLM_SKIP_WGPU=1");
        v.push(("wgpu", wgpu));
    }
    v
}

/// A tensor read from a reference safetensors file.
#[derive(Debug, Clone)]
pub enum RefTensor {
    /// f32 values and shape.
    F32(Vec<f32>, Vec<usize>),
    /// i64 values and shape.
    I64(Vec<i64>, Vec<usize>),
}

impl RefTensor {
    pub fn f32(&self) -> &[f32] {
        match self {
            RefTensor::F32(v, _) => v,
            _ => panic!("expected f32"),
        }
    }
    pub fn i64(&self) -> &[i64] {
        match self {
            RefTensor::I64(v, _) => v,
            _ => panic!("expected i64"),
        }
    }
    pub fn shape(&self) -> &[usize] {
        match self {
            RefTensor::F32(_, s) | RefTensor::I64(_, s) => s,
        }
    }
}

/// Reads every tensor of a reference safetensors file.
pub fn read_reference(path: &Path) -> HashMap<String, RefTensor> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(name, view)| {
            let shape = view.shape().to_vec();
            let data = view.data();
            let t = match view.dtype() {
                safetensors::Dtype::F32 => RefTensor::F32(
                    data.chunks_exact(4)
                        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                        .collect(),
                    shape,
                ),
                safetensors::Dtype::I64 => RefTensor::I64(
                    data.chunks_exact(8)
                        .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
                        .collect(),
                    shape,
                ),
                other => panic!("unexpected dtype {other:?} in {name}"),
            };
            (name, t)
        })
        .collect()
}

/// Largest absolute difference.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// The case names of a parity fixture folder (every `<case>.expected.json`), sorted.
pub fn fixture_cases(dir: &Path) -> Vec<String> {
    let mut cases: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| {
            let n = e.unwrap().file_name().to_string_lossy().to_string();
            n.strip_suffix(".expected.json").map(str::to_string)
        })
        .collect();
    cases.sort();
    assert!(!cases.is_empty(), "{}: no fixture case", dir.display());
    cases
}

/// Writes JSON rows as a JSONL file.
pub fn write_jsonl(path: &Path, rows: &[serde_json::Value]) {
    let text: String = rows.iter().map(|r| format!("{r}\n")).collect();
    std::fs::write(path, text).unwrap();
}

/// The synthesizer's seed files for one-colour squares: `<name>.png` in `images`, a caption
/// `A <name> square.` each, and the same question with its precise and informative answers
/// for every image (`captions.jsonl`, `precise.jsonl`, `informative.jsonl` in `dir`).
pub fn write_square_seed(
    dir: &Path,
    images: &Path,
    colors: &[(&str, [u8; 3])],
    question: &str,
    precise: &str,
    informative: &str,
) -> adamllm::synth::seed::SeedInputs {
    use serde_json::json;
    std::fs::create_dir_all(images).unwrap();
    let (mut captions, mut precise_rows, mut informative_rows) =
        (Vec::new(), Vec::new(), Vec::new());
    for (name, rgb) in colors {
        let file = format!("{name}.png");
        image::RgbImage::from_pixel(56, 56, image::Rgb(*rgb))
            .save(images.join(&file))
            .unwrap();
        captions.push(json!({"images": [file], "messages": [
            {"role": "user", "content": "<image>Write a caption."},
            {"role": "assistant", "content": format!("A {name} square.")}]}));
        precise_rows.push(json!({"images": [file], "messages": [
            {"role": "user", "content": format!("<image>{question}")},
            {"role": "assistant", "content": precise}]}));
        informative_rows.push(json!({"images": [file], "messages": [
            {"role": "user", "content": format!("<image>{question}")},
            {"role": "assistant", "content": informative}]}));
    }
    for (file, rows) in [
        ("captions.jsonl", &captions),
        ("precise.jsonl", &precise_rows),
        ("informative.jsonl", &informative_rows),
    ] {
        write_jsonl(&dir.join(file), rows);
    }
    adamllm::synth::seed::SeedInputs {
        captions: dir.join("captions.jsonl"),
        precise: dir.join("precise.jsonl"),
        informative: dir.join("informative.jsonl"),
        images: images.to_path_buf(),
    }
}
