//! Training data: conversations tokenized once up front (image sizes read from file headers
//! only), pixels decoded per micro-batch, cut to `cutoff_len`, shuffled per epoch from the
//! seed so a resumed run sees the same order.

use std::path::{Path, PathBuf};

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::data::conversation::{read_conversations, read_conversations_with};
use crate::data::dataset_info::DatasetLayout;
use crate::io::FileError;
use crate::models::TokenBatch;
use crate::models::image::{
    ImageOptions, ImagePreprocessor, ImageProcessorError, ProcessedImage, layout_of_file,
    load_and_process_with,
};
use crate::models::prompt::{IGNORE_INDEX, LabelMode, Processor, resolve_images};

/// An image of a training sample: where it is and the layout (tokens, grid) it will have.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageRef {
    /// File.
    pub path: PathBuf,
    /// The processed image without pixels.
    pub layout: ProcessedImage,
}

/// One tokenized training sample.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainSample {
    /// Token ids (image pads expanded).
    pub ids: Vec<u32>,
    /// Labels ([`IGNORE_INDEX`] where not supervised).
    pub labels: Vec<i64>,
    /// Images in order.
    pub images: Vec<ImageRef>,
    /// `file:line` it came from.
    pub source: String,
}

impl TrainSample {
    /// Supervised tokens (after the one-position shift: a label at position 0 predicts nothing).
    pub fn supervised_tokens(&self) -> usize {
        self.labels
            .iter()
            .skip(1)
            .filter(|&&l| l != IGNORE_INDEX)
            .count()
    }
}

/// A sample left out with `--skip-bad`, written to `skipped.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SkippedSample {
    /// Dataset file.
    pub file: String,
    /// Row (`line 3`).
    pub location: String,
    /// Why.
    pub reason: String,
}

/// A dataset file read for training.
#[derive(Debug, Clone, Default)]
pub struct TrainData {
    /// Usable samples.
    pub samples: Vec<TrainSample>,
    /// Samples dropped because `cutoff_len` would cut inside image tokens (or leave no
    /// supervised token).
    pub dropped_too_long: usize,
    /// Samples truncated at `cutoff_len`.
    pub truncated: usize,
    /// Samples skipped for bad input (`--skip-bad`).
    pub skipped: Vec<SkippedSample>,
}

/// How samples are read.
#[derive(Debug, Clone)]
pub struct DataOptions {
    /// Which tokens are supervised.
    pub mode: LabelMode,
    /// Longest sample in tokens.
    pub cutoff_len: usize,
    /// Pixel budget of the images (the recipe's min/max pixels).
    pub images: ImageOptions,
    /// Folder image paths are relative to (default: the dataset's folder).
    pub images_dir: Option<PathBuf>,
    /// Skip bad rows (recorded) instead of failing.
    pub skip_bad: bool,
}

/// Cuts `ids`/`labels` to `cutoff`, or `None` when the cut would fall inside (or before) image
/// tokens or leave nothing supervised.
pub fn truncate_sample(
    ids: &mut Vec<u32>,
    labels: &mut Vec<i64>,
    cutoff: usize,
    image_token_ids: &[u32],
) -> Option<bool> {
    if ids.len() <= cutoff {
        return Some(false);
    }
    if ids[cutoff..].iter().any(|id| image_token_ids.contains(id)) {
        return None;
    }
    ids.truncate(cutoff);
    labels.truncate(cutoff);
    if labels.iter().skip(1).all(|&l| l == IGNORE_INDEX) {
        return None;
    }
    Some(true)
}

/// Reads and tokenizes one dataset file.
pub fn read_train_file(
    processor: &Processor,
    path: &Path,
    options: &DataOptions,
) -> Result<TrainData, FileError> {
    read_train_file_as(processor, path, None, options)
}

/// [`read_train_file`] with the rows read through a LLaMA-Factory dataset layout when one is
/// given (ShareGPT or LLaVA rows told apart by their keys otherwise).
pub fn read_train_file_as(
    processor: &Processor,
    path: &Path,
    layout: Option<&DatasetLayout>,
    options: &DataOptions,
) -> Result<TrainData, FileError> {
    let image_token_ids = processor.image_token_ids();
    let rows = match layout {
        Some(layout) => read_conversations_with(path, &|row| layout.conversation(row))?,
        None => read_conversations(path)?,
    };
    let base: PathBuf = options
        .images_dir
        .clone()
        .unwrap_or_else(|| path.parent().map(Path::to_path_buf).unwrap_or_default());
    let mut out = TrainData::default();
    for row in rows {
        let fail = |reason: String, out: &mut TrainData| -> Result<(), FileError> {
            if options.skip_bad {
                out.skipped.push(SkippedSample {
                    file: path.display().to_string(),
                    location: row.location.clone(),
                    reason,
                });
                Ok(())
            } else {
                Err(FileError {
                    path: path.to_path_buf(),
                    location: Some(row.location.clone()),
                    message: reason,
                })
            }
        };
        if options.mode == LabelMode::AssistantTurns && !row.conversation.has_assistant_turn() {
            fail(
                "the conversation has no assistant turn to train on".into(),
                &mut out,
            )?;
            continue;
        }
        let mut images = Vec::new();
        let mut bad = None;
        for image_path in resolve_images(&row.conversation, &base) {
            let layout = match processor.image_processor() {
                Ok(p) => layout_of_file(&image_path, p, &options.images),
                Err(e) => Err(e.to_string()),
            };
            match layout {
                Ok(layout) => images.push(ImageRef {
                    path: image_path,
                    layout,
                }),
                Err(e) => {
                    bad = Some(e);
                    break;
                }
            }
        }
        if let Some(reason) = bad {
            fail(reason, &mut out)?;
            continue;
        }
        // The tokenizer only needs each image's layout; pixels are decoded per micro-batch.
        let shapes: Vec<ProcessedImage> = images.iter().map(|im| im.layout.clone()).collect();
        let encoded = match processor.encode(&row.conversation, &shapes, false, options.mode) {
            Ok(e) => e,
            Err(e) => {
                fail(e.to_string(), &mut out)?;
                continue;
            }
        };
        let (mut ids, mut labels) = (encoded.ids, encoded.labels);
        match truncate_sample(&mut ids, &mut labels, options.cutoff_len, &image_token_ids) {
            None => {
                out.dropped_too_long += 1;
                continue;
            }
            Some(cut) => out.truncated += usize::from(cut),
        }
        let sample = TrainSample {
            ids,
            labels,
            images,
            source: format!("{}:{}", path.display(), row.location),
        };
        if sample.supervised_tokens() == 0 {
            fail("no supervised token in this sample".into(), &mut out)?;
            continue;
        }
        out.samples.push(sample);
    }
    Ok(out)
}

/// The order of samples in one epoch of one stage: a permutation seeded by
/// `(seed, stage, epoch)`, so it can be rebuilt on resume without stored state.
pub fn epoch_order(n: usize, seed: u64, stage: usize, epoch: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    let mixed = seed
        ^ (stage as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ (epoch as u64).wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
    let mut rng = ChaCha8Rng::seed_from_u64(mixed);
    order.shuffle(&mut rng);
    order
}

/// Builds the model inputs of a micro-batch (right-padded, pixels decoded now) and its labels.
pub fn micro_batch(
    pad_id: u32,
    processor: Option<&dyn ImagePreprocessor>,
    samples: &[&TrainSample],
    options: &ImageOptions,
) -> Result<(TokenBatch, Vec<Vec<i64>>), FileError> {
    let mut sequences = Vec::with_capacity(samples.len());
    for s in samples {
        let mut images = Vec::with_capacity(s.images.len());
        for im in &s.images {
            let processed = processor
                .ok_or(ImageProcessorError::TextOnly)
                .and_then(|p| load_and_process_with(&im.path, p, options))
                .map_err(|e| FileError::new(&im.path, format!("{e} (sample {})", s.source)))?;
            images.push(processed);
        }
        sequences.push((s.ids.clone(), images));
    }
    let batch = TokenBatch::from_sequences(sequences, pad_id, false);
    let len = batch.dims().1;
    let labels = samples
        .iter()
        .map(|s| {
            let mut l = s.labels.clone();
            l.resize(len, IGNORE_INDEX);
            l
        })
        .collect();
    Ok((batch, labels))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_never_cuts_images() {
        let img = [9u32];
        let mut ids = vec![1, 2, 9, 9, 3, 4, 5];
        let mut labels = vec![-100, -100, -100, -100, 3, 4, 5];
        assert_eq!(truncate_sample(&mut ids, &mut labels, 6, &img), Some(true));
        assert_eq!(ids, vec![1, 2, 9, 9, 3, 4]);
        let mut ids = vec![1, 9, 9, 3];
        let mut labels = vec![-100, -100, -100, 3];
        assert_eq!(truncate_sample(&mut ids, &mut labels, 2, &img), None);
        let mut ids = vec![1, 2, 3];
        let mut labels = vec![-100, 2, 3];
        assert_eq!(truncate_sample(&mut ids, &mut labels, 5, &img), Some(false));
    }

    #[test]
    fn epoch_order_is_a_seeded_permutation() {
        let a = epoch_order(50, 42, 0, 0);
        let mut sorted = a.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..50).collect::<Vec<_>>());
        assert_eq!(a, epoch_order(50, 42, 0, 0));
        assert_ne!(a, epoch_order(50, 42, 0, 1));
        assert_ne!(a, epoch_order(50, 42, 1, 0));
    }
}
