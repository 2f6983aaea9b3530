{{ enable_f16 }}
// Prepended to every kernel of this folder by core/src/kernels/cube.rs.
//
// Tensors are f32, or f16 where the adapter has `shader-f16`: the launcher fills in `elem` and
// the `enable f16;` line above. Sums and the maths run in f32 either way.
// Every storage binding is read_write: cubecl sub-allocates tensors from shared wgpu buffers, and
// one dispatch may not bind the same buffer read-only and writable at once.
// Each kernel declares its u32 parameters as its last binding, cubecl's metadata uniform:
//   var<uniform> info: array<vec4<u32>, K>;   (four to a vec4: uniform arrays have a 16-byte stride)

fn param(i: u32) -> u32 {
    return info[i / 4u][i % 4u];
}
