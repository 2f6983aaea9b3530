//! `adamllm loss`: mean cross-entropy per supervised token of a model over a dataset.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::data::conversation::read_conversations;
use crate::io::FileError;
use crate::models::image::{ImageOptions, ProcessedImage};
use crate::models::layers::tensor_to_vec;
use crate::models::prompt::{EncodedPrompt, IGNORE_INDEX, LabelMode, resolve_images};
use crate::models::{ForwardError, Model, TokenBatch};

/// Result of `adamllm loss`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LossReport {
    /// Mean cross-entropy per supervised token.
    pub loss: f64,
    /// Supervised tokens.
    pub tokens: usize,
    /// Examples read.
    pub examples: usize,
}

/// One dataset row turned into model inputs.
#[derive(Debug, Clone)]
pub struct EncodedExample {
    /// Ids and labels.
    pub prompt: EncodedPrompt,
    /// Processed images in order.
    pub images: Vec<ProcessedImage>,
    /// Where the row came from (`line 3`).
    pub location: String,
}

/// Reads a dataset and encodes every row for `model` (images relative to `images_dir`,
/// default: the dataset's folder). Errors name the dataset file and the row, or the image.
pub fn encode_dataset(
    model: &Model,
    data: &Path,
    images_dir: Option<&Path>,
    mode: LabelMode,
) -> Result<Vec<EncodedExample>, FileError> {
    let rows = read_conversations(data)?;
    let base: PathBuf = images_dir
        .map(Path::to_path_buf)
        .unwrap_or_else(|| data.parent().map(Path::to_path_buf).unwrap_or_default());
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let at = |msg: String| FileError {
            path: data.to_path_buf(),
            location: Some(row.location.clone()),
            message: msg,
        };
        if mode == LabelMode::AssistantTurns && !row.conversation.has_assistant_turn() {
            return Err(at(
                "the conversation has no assistant turn to train on".into()
            ));
        }
        let mut images = Vec::new();
        for path in resolve_images(&row.conversation, &base) {
            let img = model
                .load_image(&path, &ImageOptions::default())
                .map_err(|e| at(format!("image {}: {e}", path.display())))?;
            images.push(img);
        }
        let prompt = model
            .processor
            .encode(&row.conversation, &images, false, mode)
            .map_err(|e| at(e.to_string()))?;
        out.push(EncodedExample {
            prompt,
            images,
            location: row.location.clone(),
        });
    }
    Ok(out)
}

/// Mean supervised cross-entropy of `model` over encoded examples, `batch_size` at a time.
pub fn mean_loss(
    model: &Model,
    examples: &[EncodedExample],
    batch_size: usize,
    mut on_progress: impl FnMut(usize),
) -> Result<LossReport, ForwardError> {
    let mut sum = 0.0f64;
    let mut tokens = 0usize;
    for chunk in examples.chunks(batch_size.max(1)) {
        let batch = TokenBatch::from_sequences(
            chunk
                .iter()
                .map(|e| (e.prompt.ids.clone(), e.images.clone()))
                .collect(),
            model.processor.pad_id,
            false,
        );
        let len = batch.dims().1;
        let labels: Vec<Vec<i64>> = chunk
            .iter()
            .map(|e| {
                let mut l = e.prompt.labels.clone();
                l.resize(len, IGNORE_INDEX);
                l
            })
            .collect();
        let (loss_sum, n) = model.loss_sum(&batch, &labels)?;
        sum += tensor_to_vec(loss_sum)[0] as f64;
        tokens += n;
        on_progress(chunk.len());
    }
    Ok(LossReport {
        loss: if tokens > 0 { sum / tokens as f64 } else { 0.0 },
        tokens,
        examples: examples.len(),
    })
}
