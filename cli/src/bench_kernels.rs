//! `adamllm bench kernels`: each fused op (`adamllm::kernels`) against its composite tensor-op
//! version, forward and forward + backward, on the shapes of the presets.

use std::time::Instant;

use adamllm::burn::tensor::{DType, Device, Int, Tensor, TensorData};
use adamllm::device::{DeviceChoice, select_device};
use adamllm::kernels::{
    composite_linear_cross_entropy_sum, composite_rms_norm, composite_rotary,
    linear_cross_entropy_sum, rms_norm, rotary, set_fused_ops,
};
use adamllm::models::layers::{tensor_from_vec, tensor_to_vec};
use adamllm::models::qwen2_vl::presets::{Preset, preset_config};
use anyhow::Result;

use crate::bench::median;
use serde::Serialize;

/// One result line: one op, shape, device and direction, fused against composite.
#[derive(Debug, Serialize)]
pub struct KernelRow {
    bench: &'static str,
    op: &'static str,
    preset: String,
    shape: String,
    device: String,
    adapter: String,
    /// `forward` or `forward+backward`.
    pass: &'static str,
    fused_ms: f64,
    composite_ms: f64,
    /// composite time ÷ fused time: above 1 the fused op is faster.
    speedup: f64,
}

/// Deterministic values in (-1, 1).
fn values(n: usize, seed: u32) -> Vec<f32> {
    (0..n)
        .map(|i| ((i as f32 * 0.7311 + seed as f32 * 1.913).sin() * 43_758.547).fract())
        .collect()
}

fn input<const D: usize>(shape: [usize; D], seed: u32, device: &Device) -> Tensor<D> {
    tensor_from_vec(
        values(shape.iter().product(), seed),
        shape,
        device,
        DType::F32,
    )
}

/// Median milliseconds of the fused and the composite version, after one warm-up run of each
/// (shader compilation). The repeats alternate between the two so that neither gets the warmer
/// allocator or caches.
fn time_pair_ms(repeats: usize, run: &dyn Fn(bool)) -> (f64, f64) {
    let timed = |fused: bool| {
        let t = Instant::now();
        run(fused);
        t.elapsed().as_secs_f64() * 1e3
    };
    run(true);
    run(false);
    let (mut fused, mut composite) = (Vec::new(), Vec::new());
    for i in 0..repeats.max(1) {
        // Alternate which goes first as well.
        if i % 2 == 0 {
            fused.push(timed(true));
            composite.push(timed(false));
        } else {
            composite.push(timed(false));
            fused.push(timed(true));
        }
    }
    (median(fused), median(composite))
}

/// The three ops on one device: `f(fused)` runs the fused or the composite version once and
/// reads a value back so the device has finished.
struct OpCase {
    op: &'static str,
    shape: String,
    forward: Box<dyn Fn(bool)>,
    backward: Box<dyn Fn(bool)>,
}

fn cases(preset: Preset, tokens: usize, device: &Device) -> Vec<OpCase> {
    let cfg = preset_config(preset);
    let hidden = cfg.hidden_size;
    let heads = cfg.num_attention_heads;
    let head_dim = hidden / heads;
    let vocab = cfg.vocab_size;
    let ad = device.clone().autodiff();
    let mut out = Vec::new();

    // RMSNorm over [tokens, hidden].
    {
        let (x, w, up) = (
            input([tokens, hidden], 1, device),
            input([hidden], 2, device),
            input([tokens, hidden], 3, device),
        );
        let (xa, wa, upa) = (
            input([tokens, hidden], 1, &ad),
            input([hidden], 2, &ad),
            input([tokens, hidden], 3, &ad),
        );
        out.push(OpCase {
            op: "rms_norm",
            shape: format!("[{tokens}, {hidden}]"),
            forward: Box::new(move |fused| {
                let y = if fused {
                    rms_norm(x.clone(), w.clone(), 1e-6)
                } else {
                    composite_rms_norm(x.clone(), w.clone(), 1e-6)
                };
                let _ = tensor_to_vec((y * up.clone()).sum());
            }),
            backward: Box::new(move |fused| {
                let x = xa.clone().require_grad();
                let w = wa.clone().require_grad();
                let y = if fused {
                    rms_norm(x.clone(), w.clone(), 1e-6)
                } else {
                    composite_rms_norm(x.clone(), w.clone(), 1e-6)
                };
                let grads = (y * upa.clone()).sum().backward();
                let _ =
                    tensor_to_vec(x.grad(&grads).unwrap().sum() + w.grad(&grads).unwrap().sum());
            }),
        });
    }

    // Rotary on the attention layout: [1, tokens, heads, head_dim] transposed to
    // [1, heads, tokens, head_dim], tables [1, 1, tokens, head_dim].
    {
        let shape = [1, tokens, heads, head_dim];
        let table = [1, 1, tokens, head_dim];
        let (p, c, s, up) = (
            input(shape, 4, device),
            input(table, 5, device),
            input(table, 6, device),
            input([1, heads, tokens, head_dim], 7, device),
        );
        let (pa, ca, sa, upa) = (
            input(shape, 4, &ad),
            input(table, 5, &ad),
            input(table, 6, &ad),
            input([1, heads, tokens, head_dim], 7, &ad),
        );
        out.push(OpCase {
            op: "rotary",
            shape: format!("[1, {heads}, {tokens}, {head_dim}]"),
            forward: Box::new(move |fused| {
                let x = p.clone().swap_dims(1, 2);
                let y = if fused {
                    rotary(x, c.clone(), s.clone())
                } else {
                    composite_rotary(x, c.clone(), s.clone())
                };
                let _ = tensor_to_vec((y * up.clone()).sum());
            }),
            backward: Box::new(move |fused| {
                let p = pa.clone().require_grad();
                let x = p.clone().swap_dims(1, 2);
                let y = if fused {
                    rotary(x, ca.clone(), sa.clone())
                } else {
                    composite_rotary(x, ca.clone(), sa.clone())
                };
                let grads = (y * upa.clone()).sum().backward();
                let _ = tensor_to_vec(p.grad(&grads).unwrap().sum());
            }),
        });
    }

    // Cross-entropy of [tokens, hidden] · [hidden, vocab] at every position.
    {
        let ids: Vec<i64> = (0..tokens as i64)
            .map(|i| (i * 7919) % vocab as i64)
            .collect();
        let target_tensor =
            |d: &Device| Tensor::<2, Int>::from_data(TensorData::new(ids.clone(), [tokens, 1]), d);
        let (h, w, t) = (
            input([tokens, hidden], 8, device),
            input([hidden, vocab], 9, device),
            target_tensor(device),
        );
        let (ha, wa, ta) = (
            input([tokens, hidden], 8, &ad),
            input([hidden, vocab], 9, &ad),
            target_tensor(&ad),
        );
        let (ids_f, ids_b) = (ids.clone(), ids);
        out.push(OpCase {
            op: "cross_entropy",
            shape: format!("[{tokens}, {hidden}] x [{hidden}, {vocab}]"),
            forward: Box::new(move |fused| {
                let loss = if fused {
                    linear_cross_entropy_sum(h.clone(), w.clone(), &ids_f)
                } else {
                    composite_linear_cross_entropy_sum(h.clone(), w.clone(), t.clone())
                };
                let _ = tensor_to_vec(loss);
            }),
            backward: Box::new(move |fused| {
                let h = ha.clone().require_grad();
                let w = wa.clone().require_grad();
                let loss = if fused {
                    linear_cross_entropy_sum(h.clone(), w.clone(), &ids_b)
                } else {
                    composite_linear_cross_entropy_sum(h.clone(), w.clone(), ta.clone())
                };
                let grads = loss.backward();
                let _ =
                    tensor_to_vec(h.grad(&grads).unwrap().sum() + w.grad(&grads).unwrap().sum());
            }),
        });
    }
    out
}

/// Runs every op for every preset × device, printing JSON lines and a table.
pub fn bench_kernels(presets: &str, devices: &str, tokens: usize, repeats: usize) -> Result<()> {
    let mut rows = Vec::new();
    for preset_name in presets.split(',').map(str::trim) {
        let preset: Preset = preset_name.parse().map_err(anyhow::Error::msg)?;
        for device_name in devices.split(',').map(str::trim) {
            let choice: DeviceChoice = device_name.parse().map_err(anyhow::Error::msg)?;
            let selected = select_device(choice)?;
            for case in cases(preset, tokens, &selected.device) {
                for (pass, run) in [
                    ("forward", &case.forward),
                    ("forward+backward", &case.backward),
                ] {
                    // The public entry points follow the process-wide switch: on for the fused
                    // timing (the composite calls ignore it).
                    set_fused_ops(true);
                    let (fused_ms, composite_ms) = time_pair_ms(repeats, run.as_ref());
                    let row = KernelRow {
                        bench: "kernels",
                        op: case.op,
                        preset: preset_name.to_string(),
                        shape: case.shape.clone(),
                        device: device_name.to_string(),
                        adapter: selected.description.clone(),
                        pass,
                        fused_ms,
                        composite_ms,
                        speedup: composite_ms / fused_ms,
                    };
                    println!("{}", serde_json::to_string(&row)?);
                    rows.push(row);
                }
            }
        }
    }
    eprintln!(
        "\n{:<14} {:<7} {:<6} {:<17} {:>10} {:>13} {:>8}",
        "op", "preset", "device", "pass", "fused ms", "composite ms", "speedup"
    );
    for r in &rows {
        eprintln!(
            "{:<14} {:<7} {:<6} {:<17} {:>10.2} {:>13.2} {:>7.2}×",
            r.op, r.preset, r.device, r.pass, r.fused_ms, r.composite_ms, r.speedup
        );
    }
    Ok(())
}
