// Fused RMSNorm backward with respect to the input, one workgroup per row.
// With r = 1 / sqrt(mean(x^2) + eps) and g = dy * weight:
//   dx[c] = r * g[c] - x[c] * r^3 * mean_c(g[c] * x[c])
// Both row sums (x^2 and g*x) are reduced together in one pass over the row.
// The weight's gradient, a sum over rows, is left to the caller.
//
// Bindings (see prelude.wgsl for the shared rules): x, weight, dy, dx, then the parameters.
// Parameters: [rows, cols, bitcast<u32>(eps), workgroups along x].

@group(0) @binding(0) var<storage, read_write> x: array<{{ elem }}>;
@group(0) @binding(1) var<storage, read_write> weight: array<{{ elem }}>;
@group(0) @binding(2) var<storage, read_write> dy: array<{{ elem }}>;
@group(0) @binding(3) var<storage, read_write> dx: array<{{ elem }}>;
@group(0) @binding(4) var<uniform> info: array<vec4<u32>, 1>;

const THREADS: u32 = 256u;
var<workgroup> partial: array<vec2<f32>, 256>;

@compute @workgroup_size(256, 1, 1)
fn main(
    @builtin(workgroup_id) group: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
) {
    let rows = param(0u);
    let cols = param(1u);
    let eps = bitcast<f32>(param(2u));
    let row = group.x + group.y * param(3u);
    let in_range = row < rows;
    let base = row * cols;

    var sums = vec2<f32>(0.0, 0.0);
    if (in_range) {
        for (var c = lane; c < cols; c = c + THREADS) {
            let v = f32(x[base + c]);
            let g = f32(dy[base + c]) * f32(weight[c]);
            sums = sums + vec2<f32>(v * v, g * v);
        }
    }
    partial[lane] = sums;
    workgroupBarrier();
    for (var stride = THREADS / 2u; stride > 0u; stride = stride / 2u) {
        if (lane < stride) {
            partial[lane] = partial[lane] + partial[lane + stride];
        }
        workgroupBarrier();
    }
    let n = f32(cols);
    let inv_rms = inverseSqrt(partial[0].x / n + eps);
    let projection = inv_rms * inv_rms * inv_rms * partial[0].y / n;

    if (in_range) {
        for (var c = lane; c < cols; c = c + THREADS) {
            let g = f32(dy[base + c]) * f32(weight[c]);
            dx[base + c] = {{ elem }}(inv_rms * g - f32(x[base + c]) * projection);
        }
    }
}
