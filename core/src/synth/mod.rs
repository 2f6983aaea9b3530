//! Synthesis (the paper's first contribution): domain image–caption pairs in, filtered
//! single-stage training data out.
//!
//! - [`seed`]: the synthesizer's tuning set from general seed data (`adamllm synth seed`);
//! - [`pairs`]: reading `image_caption_pairs.json`, bad rows kept aside with reasons;
//! - [`synthesize`]: the synthesizer writes task triplets (`adamllm synthesize`);
//! - [`triplets`]: turns, hinted question–answer pairs, the triplet of each image, and the
//!   answer-indicator rule that picks a training target's form;
//! - [`judge`]: the consistency filter (`adamllm filter`);
//! - [`templates`]: kept triplet → training task (QA and chain-of-thought templates);
//! - [`rules`]: the manual-rule baseline (`adamllm synthesize --rules`);
//! - [`assemble`]: caption tasks + synthetic tasks → training files (`adamllm assemble`);
//! - [`chunk_cache`]: the resumable cache of the two generation jobs;
//! - [`pipeline`]: synthesize → filter → assemble → train from one YAML file.

pub mod assemble;
pub mod chunk_cache;
pub mod judge;
pub mod pairs;
pub mod pipeline;
pub mod rules;
pub mod seed;
pub mod synthesize;
pub mod templates;
pub mod triplets;

use std::path::PathBuf;

use crate::io::FileError;
use crate::models::ForwardError;
use crate::models::prompt::PromptError;

/// Why a synthesis step failed.
#[derive(Debug, thiserror::Error)]
pub enum SynthError {
    /// A file is missing or malformed (the message names it).
    #[error(transparent)]
    File(#[from] FileError),
    /// A cache or earlier output cannot be resumed.
    #[error("{path}: {message}")]
    Resume {
        /// The cache or output in question.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// Generation failed for a batch.
    #[error("generation failed for syn_id {first}..={last}: {source}")]
    Generate {
        /// First id of the batch.
        first: usize,
        /// Last id of the batch.
        last: usize,
        /// The model's error.
        source: ForwardError,
    },
    /// A prompt or output could not be tokenized.
    #[error("syn_id {syn_id}: {source}")]
    Prompt {
        /// The row.
        syn_id: usize,
        /// The tokenizer's error.
        source: PromptError,
    },
    /// Bad settings or inputs (the message says which).
    #[error("{0}")]
    Invalid(String),
    /// Shards that cannot be merged (missing, repeated, of another run).
    #[error(transparent)]
    Merge(#[from] crate::shard::MergeError),
}
