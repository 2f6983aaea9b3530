//! What a forward pass takes and gives, whatever the family: a padded batch of token ids with
//! its images, the hidden states, and the input errors.

use burn::tensor::{Device, Int, Tensor, TensorData};

use super::image::ProcessedImage;
use super::rope::RopePositions;

/// A batch of token sequences (already padded to one length) with their images.
#[derive(Debug, Clone)]
pub struct TokenBatch {
    /// `[batch][len]` ids.
    pub ids: Vec<Vec<u32>>,
    /// `[batch][len]`: false on padding.
    pub mask: Vec<Vec<bool>>,
    /// Images of each row in order.
    pub images: Vec<Vec<ProcessedImage>>,
}

impl TokenBatch {
    /// Pads sequences on the left (generation) or right (training) with `pad_id`.
    pub fn from_sequences(
        sequences: Vec<(Vec<u32>, Vec<ProcessedImage>)>,
        pad_id: u32,
        left_pad: bool,
    ) -> Self {
        let len = sequences.iter().map(|(s, _)| s.len()).max().unwrap_or(0);
        let mut ids = Vec::with_capacity(sequences.len());
        let mut mask = Vec::with_capacity(sequences.len());
        let mut images = Vec::with_capacity(sequences.len());
        for (seq, imgs) in sequences {
            let pad = len - seq.len();
            let (mut row, mut m) = (Vec::with_capacity(len), Vec::with_capacity(len));
            if left_pad {
                row.extend(std::iter::repeat_n(pad_id, pad));
                m.extend(std::iter::repeat_n(false, pad));
            }
            m.extend(std::iter::repeat_n(true, seq.len()));
            row.extend(seq);
            if !left_pad {
                row.extend(std::iter::repeat_n(pad_id, pad));
                m.extend(std::iter::repeat_n(false, pad));
            }
            ids.push(row);
            mask.push(m);
            images.push(imgs);
        }
        Self { ids, mask, images }
    }

    /// Rows × length.
    pub fn dims(&self) -> (usize, usize) {
        (self.ids.len(), self.ids.first().map_or(0, Vec::len))
    }

    /// All images in row order.
    pub fn all_images(&self) -> Vec<&ProcessedImage> {
        self.images.iter().flatten().collect()
    }

    /// Real (unpadded) positions holding `token`.
    pub fn count_token(&self, token: u32) -> usize {
        self.ids
            .iter()
            .zip(&self.mask)
            .map(|(r, m)| {
                r.iter()
                    .zip(m)
                    .filter(|(id, real)| **real && **id == token)
                    .count()
            })
            .sum()
    }

    /// The ids as a `[batch, len]` tensor.
    pub fn id_tensor(&self, device: &Device) -> Tensor<2, Int> {
        let (b, l) = self.dims();
        let flat: Vec<i64> = self.ids.iter().flatten().map(|&i| i as i64).collect();
        Tensor::<2, Int>::from_data(TensorData::new(flat, [b, l]), device)
    }
}

/// Output of a full forward pass.
pub struct ForwardOutput {
    /// Final hidden states `[batch, len, hidden]` (after the last norm).
    pub hidden: Tensor<3>,
    /// Per-row rotary positions used.
    pub positions: Vec<RopePositions>,
}

/// Errors of a forward pass that depend on the inputs.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// Images given to a text-only model.
    #[error(
        "the model is text-only (model_type {model_type}) but the input holds {images} image(s)"
    )]
    NoVisionTower {
        /// `model_type` of the model.
        model_type: String,
        /// Images in the input.
        images: usize,
    },
    /// Image placeholders and image tokens disagree.
    #[error(
        "the prompt holds {pads} image placeholder tokens but its images give {tokens} image tokens"
    )]
    ImageTokenMismatch {
        /// Placeholder tokens in the ids.
        pads: usize,
        /// Tokens produced by the vision tower.
        tokens: usize,
    },
    /// Longer than `max_position_embeddings`.
    #[error("the sequence has {len} tokens but the model accepts at most {max}")]
    TooLong {
        /// Sequence length.
        len: usize,
        /// Limit.
        max: usize,
    },
    /// A token id at or past the embedding's rows: the tokenizer files (or the pad id)
    /// disagree with `config.json`'s `vocab_size`.
    #[error(
        "token id {id} is outside the model's vocabulary of {vocab} rows: the tokenizer files \
         do not match config.json's vocab_size"
    )]
    TokenOutOfVocabulary {
        /// The id.
        id: u32,
        /// `vocab_size`.
        vocab: usize,
    },
    /// The model cannot take this input (an unsupported option of its config).
    #[error("{0}")]
    Unsupported(String),
}

/// Replaces the embeddings of the real `token` positions of `batch`, in order, by the rows of
/// `features` (`[n, hidden]`, n = the number of such positions): transformers'
/// `inputs_embeds.masked_scatter(image_mask, image_features)`.
pub fn scatter_features(
    embeds: Tensor<3>,
    batch: &TokenBatch,
    token: u32,
    features: Tensor<2>,
) -> Tensor<3> {
    let [b, l, hidden] = embeds.dims();
    let device = embeds.device();
    // Row p of the result takes text row p, or feature k (stored after the b·l text rows).
    let mut index = Vec::with_capacity(b * l);
    let mut next = 0i64;
    for (r, row) in batch.ids.iter().enumerate() {
        for (t, id) in row.iter().enumerate() {
            if batch.mask[r][t] && *id == token {
                index.push((b * l) as i64 + next);
                next += 1;
            } else {
                index.push((r * l + t) as i64);
            }
        }
    }
    let index = Tensor::<1, Int>::from_data(TensorData::new(index, [b * l]), &device);
    let features = crate::models::layers::in_dtype(features, embeds.dtype());
    let combined = Tensor::cat(vec![embeds.reshape([b * l, hidden]), features], 0);
    combined.select(0, index).reshape([b, l, hidden])
}
