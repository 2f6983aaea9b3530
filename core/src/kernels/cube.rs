//! The WGSL kernels of `shaders/` on burn's Cube backend (wgpu: Vulkan, Metal, DX12, WebGPU).
//!
//! Each kernel binds its tensors in the order its `.wgsl` file declares them, then its u32
//! parameters as cubecl's metadata uniform (the last binding, `info`: `array<vec4<u32>, K>`),
//! which cubecl caches by content, so a repeated launch uploads nothing. f32, and f16 where the
//! device has `shader-f16` (sums in f32); other dtypes take the composite ops.

use burn::backend::wgpu::{
    CubeBackend, CubeTensor, KernelSource, SourceKernel, SourceTemplate, into_contiguous,
};
use burn::backend::{DType, Shape};
use burn::cubecl::ir::{ElemType, FloatKind};
use burn::cubecl::prelude::KernelId;
use burn::cubecl::server::{KernelArguments, MetadataBindingInfo};
use burn::cubecl::{CubeCount, CubeDim};

use super::FusedOps;
use super::composite;

/// Threads per workgroup of the row-per-workgroup and element-wise kernels
/// (`@workgroup_size(256)`).
const THREADS: u32 = 256;
/// Rows per workgroup of the row-per-invocation kernels (`@workgroup_size(64)`).
const NARROW_ROWS: u32 = 64;
/// Rows of at most this many channels take the row-per-invocation RMSNorm kernels; wider rows
/// take one workgroup per row. Barriers are what CPU Vulkan drivers (lavapipe) pay most for: there
/// the row-per-invocation form was 1.5–2.0× faster than the composite ops at 64 and 512
/// channels, where the workgroup form was 0.25–0.8× (`adamllm bench kernels`, BENCHMARKS.md).
/// Tuned on lavapipe only: no GPU was at hand to tune the crossover on one.
pub(super) const NARROW_COLS: usize = 1024;
/// WebGPU's guaranteed limit on workgroups along one dispatch dimension.
const MAX_GROUPS_PER_DIM: u32 = 65_535;

macro_rules! wgsl_kernel {
    ($name:ident, $file:literal) => {
        #[doc = concat!("`shaders/", $file, "` after `shaders/prelude.wgsl`, over f32 or (`f16: true`) f16 tensors.")]
        struct $name {
            f16: bool,
        }

        impl KernelSource for $name {
            fn source(&self) -> SourceTemplate {
                let (elem, enable) = if self.f16 {
                    ("f16", "enable f16;")
                } else {
                    ("f32", "")
                };
                SourceTemplate::new(include_str!("../../../shaders/prelude.wgsl"))
                    .add_template(include_str!(concat!("../../../shaders/", $file)))
                    .register("elem", elem)
                    .register("enable_f16", enable)
            }

            fn id(&self) -> KernelId {
                KernelId::new::<Self>().info(self.f16)
            }

            fn lang(&self) -> &'static str {
                "wgsl"
            }
        }
    };
}

wgsl_kernel!(RmsNormKernel, "rms_norm.wgsl");
wgsl_kernel!(RmsNormBackwardKernel, "rms_norm_backward.wgsl");
wgsl_kernel!(RotaryKernel, "rotary.wgsl");
wgsl_kernel!(RmsNormNarrowKernel, "rms_norm_narrow.wgsl");
wgsl_kernel!(RmsNormNarrowBackwardKernel, "rms_norm_narrow_backward.wgsl");

/// Splits `groups` workgroups over x and y so neither exceeds the per-dimension limit.
pub(super) fn grid(groups: usize) -> (u32, u32) {
    let groups = groups.max(1) as u32;
    let x = groups.min(MAX_GROUPS_PER_DIM);
    (x, groups.div_ceil(x))
}

/// Whether the kernels take these tensors, and in f16 (`Some(true)`) or f32 (`Some(false)`): all
/// one dtype, f32 or f16, and f16 only where the device has `shader-f16`. `None`: composite ops.
fn kernel_dtype(tensors: &[&CubeTensor]) -> Option<bool> {
    let dtype = tensors[0].dtype;
    if tensors.iter().any(|t| t.dtype != dtype) {
        return None;
    }
    match dtype {
        DType::F32 => Some(false),
        DType::F16
            if tensors[0]
                .client
                .properties()
                .supports_type(ElemType::Float(FloatKind::F16)) =>
        {
            Some(true)
        }
        _ => None,
    }
}

/// An uninitialised contiguous tensor of `like`'s dtype on its device.
fn empty_like(like: &CubeTensor, shape: Shape) -> CubeTensor {
    let bytes = shape.num_elements() * like.dtype.size();
    let handle = like.client.empty(bytes.max(4));
    CubeTensor::new_contiguous(
        like.client.clone(),
        like.device.clone(),
        shape,
        handle,
        like.dtype,
    )
}

/// `params` as cubecl metadata words: two u32 to a little-endian u64, padded to whole vec4s.
pub(super) fn info_words(params: &[u32]) -> Vec<u64> {
    let mut padded = params.to_vec();
    padded.resize(params.len().div_ceil(4).max(1) * 4, 0);
    padded
        .chunks(2)
        .map(|pair| u64::from(pair[0]) | (u64::from(pair[1]) << 32))
        .collect()
}

/// Launches `kernel` over `groups` = (x, y) workgroups with `tensors` bound in order, then the
/// `params` words as the uniform.
fn launch<K: KernelSource>(
    kernel: K,
    threads: u32,
    groups: (u32, u32),
    tensors: &[&CubeTensor],
    params: &[u32],
) {
    let client = &tensors[0].client;
    let mut arguments = KernelArguments::new();
    for tensor in tensors {
        arguments = arguments.with_buffer(tensor.handle.clone().binding());
    }
    arguments = arguments.with_info(MetadataBindingInfo::custom(info_words(params)));
    client.launch(
        Box::new(SourceKernel::new(kernel, CubeDim::new_1d(threads))),
        CubeCount::Static(groups.0, groups.1, 1),
        arguments,
    );
}

/// `(rows, cols)` of a tensor normalised over its last dimension.
fn rows_cols(shape: &Shape) -> (usize, usize) {
    let cols = shape[shape.num_dims() - 1];
    (shape.num_elements() / cols.max(1), cols)
}

impl FusedOps for CubeBackend {
    fn fused_rms_norm(x: CubeTensor, weight: CubeTensor, eps: f64) -> CubeTensor {
        let Some(f16) = kernel_dtype(&[&x, &weight]) else {
            return composite::rms_norm::<Self>(x, weight, eps);
        };
        let x = into_contiguous(x);
        let weight = into_contiguous(weight);
        let out = empty_like(&x, x.meta.shape().clone());
        launch_rms_norm(
            (RmsNormNarrowKernel { f16 }, RmsNormKernel { f16 }),
            &[&x, &weight, &out],
            eps,
        );
        out
    }

    fn fused_rms_norm_backward(
        x: CubeTensor,
        weight: CubeTensor,
        grad: CubeTensor,
        eps: f64,
    ) -> CubeTensor {
        let Some(f16) = kernel_dtype(&[&x, &weight, &grad]) else {
            return composite::rms_norm_input_grad::<Self>(x, weight, grad, eps);
        };
        let x = into_contiguous(x);
        let weight = into_contiguous(weight);
        let grad = into_contiguous(grad);
        let out = empty_like(&x, x.meta.shape().clone());
        launch_rms_norm(
            (
                RmsNormNarrowBackwardKernel { f16 },
                RmsNormBackwardKernel { f16 },
            ),
            &[&x, &weight, &grad, &out],
            eps,
        );
        out
    }

    fn fused_rotary(x: CubeTensor, cos: CubeTensor, sin: CubeTensor) -> CubeTensor {
        let Some(f16) = kernel_dtype(&[&x, &cos, &sin]) else {
            return composite::rotary::<Self>(x, cos, sin);
        };
        launch_rotary(x, cos, sin, f16, false)
    }

    fn fused_rotary_backward(grad: CubeTensor, cos: CubeTensor, sin: CubeTensor) -> CubeTensor {
        let Some(f16) = kernel_dtype(&[&grad, &cos, &sin]) else {
            return composite::rotary_input_grad::<Self>(grad, cos, sin);
        };
        launch_rotary(grad, cos, sin, f16, true)
    }
}

/// Launches an RMSNorm kernel over the rows of `tensors[0]`: the row-per-invocation `kernels.0`
/// for rows of at most [`NARROW_COLS`] channels, else the row-per-workgroup `kernels.1`.
fn launch_rms_norm<N: KernelSource, W: KernelSource>(
    kernels: (N, W),
    tensors: &[&CubeTensor],
    eps: f64,
) {
    let (rows, cols) = rows_cols(tensors[0].meta.shape());
    let eps = (eps as f32).to_bits();
    if cols <= NARROW_COLS {
        let groups = grid(rows.div_ceil(NARROW_ROWS as usize));
        let params = [rows as u32, cols as u32, eps, groups.0 * NARROW_ROWS];
        launch(kernels.0, NARROW_ROWS, groups, tensors, &params);
    } else {
        let groups = grid(rows);
        let params = [rows as u32, cols as u32, eps, groups.0];
        launch(kernels.1, THREADS, groups, tensors, &params);
    }
}

/// `shaders/rotary.wgsl` forward, or with `backward` its transpose.
fn launch_rotary(
    x: CubeTensor,
    cos: CubeTensor,
    sin: CubeTensor,
    f16: bool,
    backward: bool,
) -> CubeTensor {
    // A storage-tiled buffer's strides order tiles, not rows: lay it out plainly first. A
    // plain strided view (the usual transposed projection) is read in place.
    let x = if x.meta.is_tiled() {
        into_contiguous(x)
    } else {
        x
    };
    let cos = into_contiguous(cos);
    let sin = into_contiguous(sin);
    let shape = x.meta.shape().clone();
    let strides = x.meta.strides().to_vec();
    let total = shape.num_elements();
    let out = empty_like(&x, shape.clone());
    let (gx, gy) = grid(total.div_ceil(THREADS as usize));
    let params = [
        total as u32,
        shape[1] as u32,
        shape[2] as u32,
        shape[3] as u32,
        strides[0] as u32,
        strides[1] as u32,
        strides[2] as u32,
        strides[3] as u32,
        gx * THREADS,
        u32::from(backward),
    ];
    launch(
        RotaryKernel { f16 },
        THREADS,
        (gx, gy),
        &[&x, &cos, &sin, &out],
        &params,
    );
    out
}
