//! The fused ops against their composite tensor-op versions, forward and gradients, on every
//! device the tests have: flex (composite fallback through the extension) and wgpu (the WGSL
//! kernels through burn's fusion; lavapipe in CI).

use burn::tensor::{DType, Device, Int, Tensor, TensorData};

use super::*;
use crate::device::{DeviceChoice, SelectedDevice, select_device};
use crate::models::layers::{tensor_from_vec, tensor_to_vec};

fn devices() -> Vec<SelectedDevice> {
    let mut v = vec![select_device(DeviceChoice::Cpu).unwrap()];
    if std::env::var("ADAMLLM_SKIP_WGPU").as_deref() != Ok("1") {
        v.push(
            select_device(DeviceChoice::Wgpu)
                .expect("no wgpu adapter: install mesa-vulkan-drivers or set ADAMLLM_SKIP_WGPU=1"),
        );
    }
    v
}

/// Deterministic values in about [-scale, scale], different per `seed`.
fn values(n: usize, seed: u32, scale: f32) -> Vec<f32> {
    (0..n)
        .map(|i| ((i as f32 * 0.7311 + seed as f32 * 1.913).sin() * 43_758.547).fract() * scale)
        .collect()
}

fn tensor<const D: usize>(
    shape: [usize; D],
    seed: u32,
    device: &Device,
    dtype: DType,
) -> Tensor<D> {
    tensor_from_vec(
        values(shape.iter().product(), seed, 1.0),
        shape,
        device,
        dtype,
    )
}

fn assert_close(what: &str, backend: &str, got: &[f32], want: &[f32], tolerance: f32) {
    assert_eq!(got.len(), want.len(), "{what} on {backend}: length");
    let scale = want.iter().fold(1.0f32, |m, v| m.max(v.abs()));
    let worst = got
        .iter()
        .zip(want)
        .map(|(g, w)| (g - w).abs())
        .fold(0.0f32, f32::max);
    assert!(
        worst <= tolerance * scale,
        "{what} on {backend}: max abs diff {worst} > {tolerance} × {scale}"
    );
}

#[test]
fn rms_norm_matches_composite_forward_and_gradients() {
    // 3·70 rows of 1100 channels (the row-per-workgroup kernels: wider than NARROW_COLS, more
    // channels than threads), and 3·70 rows of 64 channels (the row-per-invocation kernels: more
    // rows than one workgroup).
    for channels in [cube::NARROW_COLS + 76, 64] {
        rms_norm_case([3, 70, channels]);
    }
}

fn rms_norm_case(shape: [usize; 3]) {
    for selected in devices() {
        let device = selected.device.clone().autodiff();
        let x = tensor(shape, 1, &device, DType::F32);
        let weight = tensor([shape[2]], 2, &device, DType::F32);
        let upstream = tensor(shape, 3, &device, DType::F32);

        let run = |fused: bool| {
            let x = x.clone().require_grad();
            let weight = weight.clone().require_grad();
            let out = if fused {
                Tensor::from_dispatch(<Dispatch as FusedOps>::fused_rms_norm(
                    x.clone().into_dispatch(),
                    weight.clone().into_dispatch(),
                    1e-6,
                ))
            } else {
                composite_rms_norm(x.clone(), weight.clone(), 1e-6)
            };
            let grads = (out.clone() * upstream.clone()).sum().backward();
            (
                tensor_to_vec(out),
                tensor_to_vec(x.grad(&grads).unwrap()),
                tensor_to_vec(weight.grad(&grads).unwrap()),
            )
        };
        let (out, dx, dw) = run(true);
        let (out_ref, dx_ref, dw_ref) = run(false);
        let backend = selected.backend;
        assert_close("rms_norm output", backend, &out, &out_ref, 1e-5);
        assert_close("rms_norm dx", backend, &dx, &dx_ref, 1e-4);
        assert_close("rms_norm dweight", backend, &dw, &dw_ref, 1e-4);
        // The kernel normalises: each row of w⁻¹·y has a mean square of 1 (up to eps).
        assert!(out.iter().all(|v| v.is_finite()));
    }
}

#[test]
fn rms_norm_backward_kernel_matches_composite() {
    for shape in [[5, cube::NARROW_COLS + 76], [130, 96]] {
        rms_norm_backward_case(shape);
    }
}

fn rms_norm_backward_case(shape: [usize; 2]) {
    for selected in devices() {
        let device = &selected.device;
        let x = tensor(shape, 4, device, DType::F32);
        let weight = tensor([shape[1]], 5, device, DType::F32);
        let grad = tensor(shape, 6, device, DType::F32);
        let fused = Tensor::<2>::from_dispatch(<Dispatch as FusedOps>::fused_rms_norm_backward(
            x.clone().into_dispatch(),
            weight.clone().into_dispatch(),
            grad.clone().into_dispatch(),
            1e-6,
        ));
        // Reference: autodiff of the composite ops.
        let ad = device.clone().autodiff();
        let xa = Tensor::<2>::from_data(x.to_data(), &ad).require_grad();
        let wa = Tensor::<1>::from_data(weight.to_data(), &ad);
        let ga = Tensor::<2>::from_data(grad.to_data(), &ad);
        let grads = (composite_rms_norm(xa.clone(), wa, 1e-6) * ga)
            .sum()
            .backward();
        let want = tensor_to_vec(xa.grad(&grads).unwrap());
        assert_close(
            "rms_norm_backward",
            selected.backend,
            &tensor_to_vec(fused),
            &want,
            1e-4,
        );
    }
}

#[test]
fn rotary_matches_composite_for_text_and_vision_layouts() {
    for selected in devices() {
        let device = selected.device.clone().autodiff();
        let backend = selected.backend;
        // LM layout: a transposed projection [batch, len, heads, dim] → [batch, heads, len, dim]
        // (strided, as in attention), tables [batch, 1, len, dim].
        let projection = tensor([2, 7, 3, 16], 7, &device, DType::F32);
        let cos = tensor([2, 1, 7, 16], 8, &device, DType::F32);
        let sin = tensor([2, 1, 7, 16], 9, &device, DType::F32);
        let upstream = tensor([2, 3, 7, 16], 10, &device, DType::F32);
        let run = |fused: bool| {
            let p = projection.clone().require_grad();
            let x = p.clone().swap_dims(1, 2);
            let out = if fused {
                rotary_fused(x, cos.clone(), sin.clone())
            } else {
                composite_rotary(x, cos.clone(), sin.clone())
            };
            let grads = (out.clone() * upstream.clone()).sum().backward();
            (tensor_to_vec(out), tensor_to_vec(p.grad(&grads).unwrap()))
        };
        let (out, dx) = run(true);
        let (out_ref, dx_ref) = run(false);
        assert_close("rotary (LM) output", backend, &out, &out_ref, 1e-5);
        assert_close("rotary (LM) dx", backend, &dx, &dx_ref, 1e-5);

        // Vision layout: [patches, heads, dim] with tables [patches, 1, dim], through the public
        // entry point that reshapes it.
        let x = tensor([11, 2, 8], 11, &device, DType::F32).require_grad();
        let cos = tensor([11, 1, 8], 12, &device, DType::F32);
        let sin = tensor([11, 1, 8], 13, &device, DType::F32);
        let out = rotary(x.clone(), cos.clone(), sin.clone());
        let out_ref = composite_rotary(x.clone(), cos, sin);
        assert_close(
            "rotary (vision) output",
            backend,
            &tensor_to_vec(out.clone()),
            &tensor_to_vec(out_ref.clone()),
            1e-5,
        );
        let dx = tensor_to_vec(x.grad(&out.sum().backward()).unwrap());
        let dx_ref = tensor_to_vec(x.grad(&out_ref.sum().backward()).unwrap());
        assert_close("rotary (vision) dx", backend, &dx, &dx_ref, 1e-5);
    }
}

fn rotary_fused(x: Tensor<4>, cos: Tensor<4>, sin: Tensor<4>) -> Tensor<4> {
    Tensor::from_dispatch(<Dispatch as FusedOps>::fused_rotary(
        x.into_dispatch(),
        cos.into_dispatch(),
        sin.into_dispatch(),
    ))
}

#[test]
fn f16_matches_f32_composite() {
    // f16 tensors: the WGSL kernels in f16 (sums in f32) where the adapter has shader-f16 (it does
    // on lavapipe), the composite ops on flex. The reference is the composite ops in f32 on the
    // same (f16-rounded) values.
    for selected in devices() {
        if selected.backend == "wgpu" && !selected.supports_f16 {
            continue;
        }
        let device = &selected.device;
        let backend = selected.backend;
        let half = |t: Tensor<2>| t.cast(DType::F16);
        let full = |t: Tensor<2>| t.cast(DType::F32);
        for cols in [64, cube::NARROW_COLS + 76] {
            let x = half(tensor([6, cols], 14, device, DType::F32));
            let weight = tensor([cols], 15, device, DType::F32).cast(DType::F16);
            let grad = half(tensor([6, cols], 16, device, DType::F32));
            let fused = tensor_to_vec(Tensor::<2>::from_dispatch(
                <Dispatch as FusedOps>::fused_rms_norm(
                    x.clone().into_dispatch(),
                    weight.clone().into_dispatch(),
                    1e-6,
                ),
            ));
            let want = tensor_to_vec(composite_rms_norm(
                full(x.clone()),
                weight.clone().cast(DType::F32),
                1e-6,
            ));
            assert_close("rms_norm f16", backend, &fused, &want, 5e-3);
            let fused_dx = tensor_to_vec(Tensor::<2>::from_dispatch(
                <Dispatch as FusedOps>::fused_rms_norm_backward(
                    x.clone().into_dispatch(),
                    weight.clone().into_dispatch(),
                    grad.clone().into_dispatch(),
                    1e-6,
                ),
            ));
            let want_dx = tensor_to_vec(Tensor::<2>::from_dispatch(
                <Dispatch as FusedOps>::fused_rms_norm_backward(
                    full(x).into_dispatch(),
                    weight.cast(DType::F32).into_dispatch(),
                    full(grad).into_dispatch(),
                    1e-6,
                ),
            ));
            assert_close("rms_norm_backward f16", backend, &fused_dx, &want_dx, 5e-3);
        }
        let x = tensor([2, 3, 7, 16], 17, device, DType::F32).cast(DType::F16);
        let cos = tensor([2, 1, 7, 16], 18, device, DType::F32).cast(DType::F16);
        let sin = tensor([2, 1, 7, 16], 19, device, DType::F32).cast(DType::F16);
        let fused = tensor_to_vec(rotary_fused(x.clone(), cos.clone(), sin.clone()));
        let want = tensor_to_vec(composite_rotary(
            x.cast(DType::F32),
            cos.cast(DType::F32),
            sin.cast(DType::F32),
        ));
        assert_close("rotary f16", backend, &fused, &want, 5e-3);
    }
}

#[test]
fn large_row_counts_split_over_two_dispatch_dimensions() {
    assert_eq!(cube::grid(10), (10, 1));
    assert_eq!(cube::grid(65_535), (65_535, 1));
    // 100,000 rows: 65,535 × 2 workgroups cover them; the kernels skip the extra rows.
    let (x, y) = cube::grid(100_000);
    assert_eq!((x, y), (65_535, 2));
    assert!((x * y) as usize >= 100_000);
}

#[test]
fn chunked_cross_entropy_matches_full_logits_forward_and_gradients() {
    // 10 rows in chunks of 3 (the last chunk is short), a 50-token vocabulary.
    let (rows, hidden_dim, vocab) = (10, 12, 50);
    let ids: Vec<i64> = (0..rows as i64)
        .map(|i| (i * 17 + 3) % vocab as i64)
        .collect();
    for selected in devices() {
        let device = selected.device.clone().autodiff();
        let hidden = tensor([rows, hidden_dim], 18, &device, DType::F32);
        let weight = tensor([hidden_dim, vocab], 19, &device, DType::F32);
        let targets = Tensor::<2, Int>::from_data(TensorData::new(ids.clone(), [rows, 1]), &device);
        let run = |chunked: bool| {
            let h = hidden.clone().require_grad();
            let w = weight.clone().require_grad();
            let loss = if chunked {
                Tensor::<1>::from_dispatch(<Dispatch as FusedOps>::chunked_linear_cross_entropy(
                    h.clone().into_dispatch(),
                    w.clone().into_dispatch(),
                    targets.clone().into_dispatch(),
                    3,
                ))
            } else {
                composite_linear_cross_entropy_sum(h.clone(), w.clone(), targets.clone())
            };
            // A non-unit upstream gradient checks the scaling.
            let grads = (loss.clone() * 0.5).sum().backward();
            (
                tensor_to_vec(loss),
                tensor_to_vec(h.grad(&grads).unwrap()),
                tensor_to_vec(w.grad(&grads).unwrap()),
            )
        };
        let (loss, dh, dw) = run(true);
        let (loss_ref, dh_ref, dw_ref) = run(false);
        let backend = selected.backend;
        assert_eq!(loss.len(), 1);
        assert_close("cross-entropy sum", backend, &loss, &loss_ref, 1e-5);
        assert_close("cross-entropy dhidden", backend, &dh, &dh_ref, 1e-5);
        assert_close("cross-entropy dweight", backend, &dw, &dw_ref, 1e-5);

        // The public entry point (one chunk here) agrees too, without autodiff.
        let inner = &selected.device;
        let sum = linear_cross_entropy_sum(
            Tensor::from_data(hidden.to_data(), inner),
            Tensor::from_data(weight.to_data(), inner),
            &ids,
        );
        assert_close(
            "cross-entropy entry",
            backend,
            &tensor_to_vec(sum),
            &loss_ref,
            1e-5,
        );
    }
}

#[test]
fn parameters_pack_two_to_a_word_and_pad_to_whole_vec4s() {
    assert_eq!(cube::info_words(&[1, 2, 3]), vec![1 | (2 << 32), 3]);
    assert_eq!(cube::info_words(&[7; 10]).len(), 6);
}
