// Fused RMSNorm input gradient for narrow rows: one invocation per row, 64 rows per workgroup,
// no barriers (see rms_norm_narrow.wgsl for when the launcher picks it). Same maths as
// rms_norm_backward.wgsl, with r = 1 / sqrt(mean(x^2) + eps) and g = dy * weight:
//   dx[c] = r * g[c] - x[c] * r^3 * mean_c(g[c] * x[c])
//
// Bindings (see prelude.wgsl for the shared rules): x, weight, dy, dx, then the parameters.
// Parameters: [rows, cols, bitcast<u32>(eps), invocations along x].

@group(0) @binding(0) var<storage, read_write> x: array<{{ elem }}>;
@group(0) @binding(1) var<storage, read_write> weight: array<{{ elem }}>;
@group(0) @binding(2) var<storage, read_write> dy: array<{{ elem }}>;
@group(0) @binding(3) var<storage, read_write> dx: array<{{ elem }}>;
@group(0) @binding(4) var<uniform> info: array<vec4<u32>, 1>;

@compute @workgroup_size(64, 1, 1)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    let row = id.x + id.y * param(3u);
    let cols = param(1u);
    if (row >= param(0u)) {
        return;
    }
    let base = row * cols;
    var square_sum = 0.0;
    var projection_sum = 0.0;
    for (var c = 0u; c < cols; c = c + 1u) {
        let v = f32(x[base + c]);
        square_sum = square_sum + v * v;
        projection_sum = projection_sum + f32(dy[base + c]) * f32(weight[c]) * v;
    }
    let n = f32(cols);
    let inv_rms = inverseSqrt(square_sum / n + bitcast<f32>(param(2u)));
    let projection = inv_rms * inv_rms * inv_rms * projection_sum / n;
    for (var c = 0u; c < cols; c = c + 1u) {
        dx[base + c] = {{ elem }}(inv_rms * f32(dy[base + c]) * f32(weight[c]) - f32(x[base + c]) * projection);
    }
}
