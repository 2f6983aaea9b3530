//! Quantized model folders (`adamllm quantize`): a model folder whose linear layers are
//! stored as the block-wise integers [`crate::quantize`] computes, so that a q4 8B model is
//! a ~5 GB download and loads without ever holding its dense weights.
//!
//! The folder is a Hugging Face folder with two differences:
//! - `config.json` carries a `quantization_config` (as transformers' quantized folders do),
//!   `{"quant_method": "adamllm", "bits": 8|4, "block_size": 32, "scheme": "symmetric",
//!   "scale_dtype": "float32", "layout": "in_out"}`. Anything else (another tool's
//!   `quant_method`, a block size or scheme this version does not compute) is refused with
//!   the key named, never read as if it were ours.
//! - Each quantized `nn.Linear` at `P` has, instead of `P.weight`, `P.qweight` (the integer
//!   values in the `[in, out]` layout the matmul reads, the transpose of PyTorch's weight;
//!   q8: `I8 [in, out]`; q4: `U8 [in, out / 2]`, two's-complement nibbles, the even output
//!   feature in the low nibble) and `P.scales` (`F32 [in, out / 32]`, one scale per block of
//!   32 consecutive output features). Biases, norms, the embedding and the LM head stay float
//!   tensors in the model's dtype.
//!
//! On a little-endian machine these bytes are exactly Burn's `PackedU32` storage of the same
//! scheme, so loading copies them into the tensor without unpacking.

use burn::tensor::quantization::QuantizedBytes;
use burn::tensor::{Bytes, DType, Tensor, TensorData};
use safetensors::Dtype;
use serde_json::{Value, json};

use super::files::ModelFiles;
use crate::io::FileError;
use crate::quantize::{BLOCK, Quantization};

/// `quant_method` of the folders this module writes.
pub const QUANT_METHOD: &str = "adamllm";
/// Key of the integer values of a quantized linear layer at a prefix.
pub const VALUES_SUFFIX: &str = "qweight";
/// Key of the block scales of a quantized linear layer at a prefix.
pub const SCALES_SUFFIX: &str = "scales";

/// The `quantization_config` written into a quantized folder's `config.json`.
pub fn quantization_config(q: Quantization) -> Value {
    json!({
        "quant_method": QUANT_METHOD,
        "bits": q.bits(),
        "block_size": BLOCK,
        "scheme": "symmetric",
        "scale_dtype": "float32",
        "layout": "in_out",
    })
}

/// The quantization a model folder is stored in: `None` for a dense folder (no
/// `quantization_config` in `config.json`), an error naming the key for a
/// `quantization_config` this version cannot read.
pub fn stored_quantization(files: &ModelFiles) -> Result<Option<Quantization>, FileError> {
    let Ok(config) = files.read_json::<Value>("config.json") else {
        // A missing or malformed config is reported by the family loader, with its reason.
        return Ok(None);
    };
    match config.get("quantization_config") {
        None | Some(Value::Null) => Ok(None),
        Some(section) => parse_quantization_config(section)
            .map(Some)
            .map_err(|(key, message)| {
                FileError::key(
                    &files.path("config.json"),
                    format!("quantization_config.{key}"),
                    message,
                )
            }),
    }
}

/// Reads a `quantization_config` section; errors are `(key, message)`.
fn parse_quantization_config(section: &Value) -> Result<Quantization, (&'static str, String)> {
    let text = |key: &'static str| -> Result<Option<&str>, (&'static str, String)> {
        match section.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(other) => Err((key, format!("expected a string, found {other}"))),
        }
    };
    let method = text("quant_method")?.ok_or(("quant_method", "missing".to_string()))?;
    if method != QUANT_METHOD {
        return Err((
            "quant_method",
            format!(
                "{method:?} is another tool's quantized format, which adamllm does not read; \
                 load the unquantized checkpoint (with --quantize q8|q4 to quantize it on load), \
                 or write an adamllm one with `adamllm quantize`"
            ),
        ));
    }
    let quantization = match section.get("bits").and_then(Value::as_u64) {
        Some(8) => Quantization::Q8,
        Some(4) => Quantization::Q4,
        _ => {
            let found = section.get("bits").cloned().unwrap_or(Value::Null);
            return Err((
                "bits",
                format!("{found} is not a bit width adamllm stores (8 or 4)"),
            ));
        }
    };
    let block = section.get("block_size").cloned().unwrap_or(Value::Null);
    if block.as_u64() != Some(BLOCK as u64) {
        return Err((
            "block_size",
            format!("{block} is not a block size adamllm reads (it stores blocks of {BLOCK})"),
        ));
    }
    let expected = [
        ("scheme", "symmetric"),
        ("scale_dtype", "float32"),
        ("layout", "in_out"),
    ];
    for (key, value) in expected {
        let found = text(key)?;
        if found != Some(value) {
            return Err((
                key,
                format!("{found:?} is not one adamllm reads (expected {value:?})"),
            ));
        }
    }
    Ok(quantization)
}

/// The stored dtype and shape of the integer values of an `[in, out]` weight.
pub fn values_layout(
    q: Quantization,
    in_features: usize,
    out_features: usize,
) -> (Dtype, [usize; 2]) {
    match q {
        Quantization::Q8 => (Dtype::I8, [in_features, out_features]),
        Quantization::Q4 => (Dtype::U8, [in_features, out_features / 2]),
    }
}

/// The stored shape of the block scales of an `[in, out]` weight.
pub fn scales_shape(in_features: usize, out_features: usize) -> [usize; 2] {
    [in_features, out_features / BLOCK]
}

/// Encodes integer values (one per element, in range for `q`) as they are stored.
pub fn encode_values(q: Quantization, values: &[i8]) -> Vec<u8> {
    match q {
        Quantization::Q8 => values.iter().map(|&v| v as u8).collect(),
        Quantization::Q4 => values
            .chunks(2)
            .map(|pair| {
                let low = pair[0] as u8 & 0x0F;
                let high = pair.get(1).map_or(0, |&v| v as u8 & 0x0F);
                low | (high << 4)
            })
            .collect(),
    }
}

/// A quantized tensor's integer values (one `i8` per element) and block scales, read back
/// from whatever storage its backend keeps (flex: one byte a value; cubecl: packed words).
pub fn tensor_parts(weight: Tensor<2>) -> Result<(Quantization, Vec<i8>, Vec<f32>), String> {
    let shape = weight.shape();
    let data = weight.into_data();
    let (DType::QFloat(scheme), Some(q)) = (data.dtype(), Quantization::of_dtype(data.dtype()))
    else {
        return Err(format!(
            "{:?} is not a quantization adamllm stores",
            data.dtype()
        ));
    };
    let (values, scales) = QuantizedBytes {
        bytes: data.into_bytes(),
        scheme,
        shape,
    }
    .into_vec_i8();
    Ok((q, values, scales.block))
}

/// A quantized `[in, out]` tensor on `device` from its stored bytes (as [`encode_values`]
/// writes them) and block scales: the bytes become Burn's `PackedU32` words as they are.
pub fn tensor_from_stored(
    q: Quantization,
    stored_values: &[u8],
    scales: &[f32],
    shape: [usize; 2],
    device: &burn::tensor::Device,
) -> Tensor<2> {
    let mut words: Vec<u32> = stored_values
        .chunks(4)
        .map(|c| {
            let mut word = [0u8; 4];
            word[..c.len()].copy_from_slice(c);
            u32::from_le_bytes(word)
        })
        .collect();
    words.extend(scales.iter().map(|s| s.to_bits()));
    let data = TensorData::from_bytes(Bytes::from_elems(words), shape, DType::QFloat(q.scheme()));
    Tensor::from_data(data, device)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::{DeviceChoice, select_device};
    use crate::models::layers::{tensor_from_vec, tensor_to_vec};
    use crate::quantize::is_quantized;

    fn config(edit: impl FnOnce(&mut Value)) -> Result<Quantization, (&'static str, String)> {
        let mut section = quantization_config(Quantization::Q4);
        edit(&mut section);
        parse_quantization_config(&section)
    }

    #[test]
    fn its_own_config_reads_back_and_others_are_named() {
        assert_eq!(config(|_| {}), Ok(Quantization::Q4));
        assert_eq!(config(|c| c["bits"] = json!(8)), Ok(Quantization::Q8));
        let cases: [(&str, Value, &str); 6] = [
            ("quant_method", json!("gptq"), "another tool"),
            ("bits", json!(3), "8 or 4"),
            ("block_size", json!(64), "blocks of 32"),
            ("scheme", json!("asymmetric"), "\"symmetric\""),
            ("scale_dtype", json!("float16"), "\"float32\""),
            ("layout", json!("out_in"), "\"in_out\""),
        ];
        for (key, value, says) in cases {
            let (named, message) = config(|c| c[key] = value.clone()).unwrap_err();
            assert_eq!(named, key);
            assert!(message.contains(says), "{key}: {message}");
        }
        let (named, _) = config(|c| {
            c.as_object_mut().unwrap().remove("block_size");
        })
        .unwrap_err();
        assert_eq!(named, "block_size");
    }

    /// Values and scales taken out of a quantized tensor, encoded as stored and built back
    /// into a tensor, dequantize to exactly the same weights, on the CPU and on wgpu.
    #[test]
    fn stored_bytes_rebuild_the_same_tensor() {
        let (rows, cols) = (3, 64);
        let values: Vec<f32> = (0..rows * cols)
            .map(|i| ((i * 29 % 97) as f32 - 48.0) / 13.0)
            .collect();
        let mut devices = vec![DeviceChoice::Cpu];
        if std::env::var("ADAMLLM_SKIP_WGPU").as_deref() != Ok("1") {
            devices.push(DeviceChoice::Wgpu);
        }
        for choice in devices {
            let device = select_device(choice).unwrap().device;
            for q in [Quantization::Q8, Quantization::Q4] {
                let w = tensor_from_vec(values.clone(), [rows, cols], &device, DType::F32);
                let quantized = q.quantize(w);
                let expected = tensor_to_vec(quantized.clone().dequantize());
                let (found, ints, scales) = tensor_parts(quantized).unwrap();
                assert_eq!(found, q);
                assert_eq!(scales.len(), rows * cols / BLOCK);
                let stored = encode_values(q, &ints);
                let (_, shape) = values_layout(q, rows, cols);
                assert_eq!(stored.len(), shape[0] * shape[1]);
                let rebuilt = tensor_from_stored(q, &stored, &scales, [rows, cols], &device);
                assert!(is_quantized(&rebuilt));
                assert_eq!(
                    tensor_to_vec(rebuilt.dequantize()),
                    expected,
                    "{q} {device:?}"
                );
            }
        }
    }
}
