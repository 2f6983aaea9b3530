// Fused rotary embedding in transformers' rotate-half form, one thread per output element:
//   out = x * cos + rotate_half(x) * sin,   rotate_half([x1, x2]) = [-x2, x1]
// Serves the LM's M-RoPE (`apply_multimodal_rotary_pos_emb`: x [batch, heads, len, dim], tables
// [batch, 1, len, dim]) and the vision 2D RoPE (`apply_rotary_pos_emb_vision`: x [patches, heads,
// dim], seen as [patches, heads, 1, dim]). The tables are already laid out per section, so one
// kernel covers both. x may be strided (it usually is a transposed projection); the tables and the
// output are contiguous.
//
// With parameter 9 set to 1 it computes the backward pass instead, the transpose of the same linear map:
//   dx = g * cos + rotate_half^T(g * sin),   rotate_half^T([y1, y2]) = [y2, -y1]
// which reads sin at the partner position (the tables need not repeat across halves).
//
// Bindings (shared rules: prelude.wgsl): x (or the output gradient g), cos, sin, out, then the
// parameters.
// Parameters: [total, heads, len, dim, stride0, stride1, stride2, stride3, threads along x, backward].

@group(0) @binding(0) var<storage, read_write> x: array<{{ elem }}>;
@group(0) @binding(1) var<storage, read_write> cos_table: array<{{ elem }}>;
@group(0) @binding(2) var<storage, read_write> sin_table: array<{{ elem }}>;
@group(0) @binding(3) var<storage, read_write> out: array<{{ elem }}>;
@group(0) @binding(4) var<uniform> info: array<vec4<u32>, 3>;

@compute @workgroup_size(256, 1, 1)
fn main(@builtin(global_invocation_id) id: vec3<u32>) {
    let index = id.x + id.y * param(8u);
    if (index >= param(0u)) {
        return;
    }
    let heads = param(1u);
    let len = param(2u);
    let dim = param(3u);
    let half_dim = dim / 2u;

    let d = index % dim;
    let t = index / dim;
    let l = t % len;
    let t2 = t / len;
    let h = t2 % heads;
    let a = t2 / heads;

    let row = a * param(4u) + h * param(5u) + l * param(6u);
    let value = f32(x[row + d * param(7u)]);
    let first_half = d < half_dim;
    let partner_d = select(d - half_dim, d + half_dim, first_half);
    let partner = f32(x[row + partner_d * param(7u)]);
    let table = (a * len + l) * dim + d;
    let partner_table = (a * len + l) * dim + partner_d;

    if (param(9u) == 0u) {
        // Forward: rotate_half(x)[d] = -x[d + half] in the first half, x[d - half] in the second.
        let rotated = select(partner, -partner, first_half);
        out[index] = {{ elem }}(value * f32(cos_table[table]) + rotated * f32(sin_table[table]));
    } else {
        // Backward: (rotate_half^T(g * sin))[d] = g[d + half] sin[d + half] in the first half,
        // -g[d - half] sin[d - half] in the second.
        let moved = partner * f32(sin_table[partner_table]);
        out[index] = {{ elem }}(value * f32(cos_table[table]) + select(-moved, moved, first_half));
    }
}
