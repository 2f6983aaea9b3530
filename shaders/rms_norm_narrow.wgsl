// Fused RMSNorm forward for narrow rows (the launcher picks it when a row has at most
// NARROW_COLS channels, see core/src/kernels/cube.rs): one invocation per row, 64 rows per
// workgroup, no shared memory and no barriers. Same maths as rms_norm.wgsl:
//   y[r, c] = weight[c] * x[r, c] / sqrt(mean_c(x[r, c]^2) + eps)
// On CPU Vulkan drivers (lavapipe) barriers are costly and a narrow row leaves most of a
// 256-thread workgroup idle, so this form is several times faster there.
//
// Bindings (see prelude.wgsl for the shared rules): x, weight, y, then the parameters.
// Parameters: [rows, cols, bitcast<u32>(eps), invocations along x].

@group(0) @binding(0) var<storage, read_write> x: array<{{ elem }}>;
@group(0) @binding(1) var<storage, read_write> weight: array<{{ elem }}>;
@group(0) @binding(2) var<storage, read_write> y: array<{{ elem }}>;
@group(0) @binding(3) var<uniform> info: array<vec4<u32>, 1>;

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    let row = id.x + id.y * param(3u);
    let cols = param(1u);
    if (row >= param(0u)) {
        return;
    }
    let base = row * cols;
    var sum = 0.0;
    for (var c = 0u; c < cols; c = c + 1u) {
        let v = f32(x[base + c]);
        sum = sum + v * v;
    }
    let inv_rms = inverseSqrt(sum / f32(cols) + bitcast<f32>(param(2u)));
    for (var c = 0u; c < cols; c = c + 1u) {
        y[base + c] = {{ elem }}(f32(x[base + c]) * inv_rms * f32(weight[c]));
    }
}
