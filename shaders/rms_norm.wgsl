// Fused RMSNorm forward, one workgroup per row (transformers `Qwen2RMSNorm`):
//   y[r, c] = weight[c] * x[r, c] / sqrt(mean_c(x[r, c]^2) + eps)
// The squares are summed by the workgroup's 256 threads, then reduced in shared memory, so a row is
// read twice and written once, in one dispatch.
//
// Bindings (see prelude.wgsl for the shared rules) (in the order the launcher passes them): x, weight, y, then the parameters.
// Parameters: [rows, cols, bitcast<u32>(eps), workgroups along x].

@group(0) @binding(0) var<storage, read_write> x: array<{{ elem }}>;
@group(0) @binding(1) var<storage, read_write> weight: array<{{ elem }}>;
@group(0) @binding(2) var<storage, read_write> y: array<{{ elem }}>;
@group(0) @binding(3) var<uniform> info: array<vec4<u32>, 1>;

const THREADS: u32 = 256u;
var<workgroup> partial: array<f32, 256>;

@compute @workgroup_size(256, 1, 1)
fn main(
    @builtin(workgroup_id) group: vec3<u32>,
    @builtin(local_invocation_index) lane: u32,
) {
    let rows = param(0u);
    let cols = param(1u);
    let eps = bitcast<f32>(param(2u));
    let row = group.x + group.y * param(3u);
    // Every thread of a workgroup shares `row`, so the barriers below stay in uniform control flow.
    let in_range = row < rows;
    let base = row * cols;

    var sum = 0.0;
    if (in_range) {
        for (var c = lane; c < cols; c = c + THREADS) {
            let v = f32(x[base + c]);
            sum = sum + v * v;
        }
    }
    partial[lane] = sum;
    workgroupBarrier();
    for (var stride = THREADS / 2u; stride > 0u; stride = stride / 2u) {
        if (lane < stride) {
            partial[lane] = partial[lane] + partial[lane + stride];
        }
        workgroupBarrier();
    }
    let inv_rms = inverseSqrt(partial[0] / f32(cols) + eps);

    if (in_range) {
        for (var c = lane; c < cols; c = c + THREADS) {
            y[base + c] = {{ elem }}(f32(x[base + c]) * inv_rms * f32(weight[c]));
        }
    }
}
