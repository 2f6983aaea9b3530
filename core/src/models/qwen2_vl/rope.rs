//! Multimodal rotary position ids for the Qwen2-VL language model.
//!
//! Ports `Qwen2VLForConditionalGeneration.get_rope_index` (transformers 4.47); the tables
//! (`Qwen2VLRotaryEmbedding` + `apply_multimodal_rotary_pos_emb`, rotate-half convention) are
//! the shared [`crate::models::rope`] ones with `mrope_section` axes. Positions are computed on
//! the host: they depend only on token ids and image grids.

pub use crate::models::rope::{RopePositions, inverse_frequencies, section_axes};

/// Token ids the position rule needs to know.
#[derive(Debug, Clone, Copy)]
pub struct VisionTokenIds {
    /// `<|vision_start|>`.
    pub vision_start: u32,
    /// `<|image_pad|>`.
    pub image_pad: u32,
}

/// transformers: `get_rope_index` for one row. Text tokens advance all three axes together;
/// the tokens of an image (grid `t × h × w` in patches, `h/m × w/m` after merging) take
/// (t, row, column) offsets from the position after the preceding text, and the text after
/// the image continues at max(t, h/m, w/m) past that start.
/// `grids` are the grids of this row's images in order; `mask[i]` is false for padding.
pub fn rope_positions(
    ids: &[u32],
    mask: &[bool],
    grids: &[[usize; 3]],
    merge: usize,
    tokens: VisionTokenIds,
) -> RopePositions {
    let len = ids.len();
    let real: Vec<(usize, u32)> = ids
        .iter()
        .zip(mask)
        .enumerate()
        .filter(|(_, (_, m))| **m)
        .map(|(i, (id, _))| (i, *id))
        .collect();
    let mut pos: Vec<[i64; 3]> = Vec::with_capacity(real.len());
    let mut next = 0i64;
    let mut image = 0usize;
    let mut k = 0usize;
    while k < real.len() {
        let id = real[k].1;
        let starts_image = id == tokens.image_pad
            && k > 0
            && real[k - 1].1 == tokens.vision_start
            && image < grids.len();
        if starts_image {
            let [t, h, w] = grids[image];
            let (gh, gw) = (h / merge, w / merge);
            for ti in 0..t {
                for hi in 0..gh {
                    for wi in 0..gw {
                        pos.push([next + ti as i64, next + hi as i64, next + wi as i64]);
                    }
                }
            }
            k += t * gh * gw;
            next += t.max(gh).max(gw) as i64;
            image += 1;
        } else {
            pos.push([next; 3]);
            next += 1;
            k += 1;
        }
    }
    pos.truncate(real.len());
    let mut axes = [vec![1i64; len], vec![1i64; len], vec![1i64; len]];
    for ((i, _), p) in real.iter().zip(&pos) {
        for a in 0..3 {
            axes[a][*i] = p[a];
        }
    }
    let next_position = pos
        .iter()
        .map(|p| p[0].max(p[1]).max(p[2]))
        .max()
        .map_or(0, |m| m + 1);
    RopePositions {
        axes,
        next_position,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: VisionTokenIds = VisionTokenIds {
        vision_start: 100,
        image_pad: 101,
    };

    #[test]
    fn text_only_positions_count_real_tokens() {
        let p = rope_positions(
            &[0, 0, 5, 6, 7],
            &[false, false, true, true, true],
            &[],
            2,
            T,
        );
        assert_eq!(p.axes[0], vec![1, 1, 0, 1, 2]);
        assert_eq!(p.axes[2], vec![1, 1, 0, 1, 2]);
        assert_eq!(p.next_position, 3);
    }

    #[test]
    fn image_positions_follow_the_grid() {
        // text(2) <vs> 6 image tokens from a 1×4×6 grid (2×3 merged) <ve> text
        let mut ids = vec![1, 2, 100];
        ids.extend([101; 6]);
        ids.extend([102, 3]);
        let mask = vec![true; ids.len()];
        let p = rope_positions(&ids, &mask, &[[1, 4, 6]], 2, T);
        assert_eq!(p.axes[0], vec![0, 1, 2, 3, 3, 3, 3, 3, 3, 6, 7]);
        assert_eq!(p.axes[1], vec![0, 1, 2, 3, 3, 3, 4, 4, 4, 6, 7]);
        assert_eq!(p.axes[2], vec![0, 1, 2, 3, 4, 5, 3, 4, 5, 6, 7]);
        assert_eq!(p.next_position, 8);
    }
}
