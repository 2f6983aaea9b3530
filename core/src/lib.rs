//! adamllm core: domain-specific post-training of multimodal LLMs (AdaMLLM) on Burn.
//!
//! Every stage is device-agnostic and shared by the CLI and the web page:
//! - [`device`]: picks the Burn device (`auto` prefers a real GPU, then the CPU `flex` backend).
//! - [`models`]: model families (Qwen2-VL first), checkpoint reading and writing.
//! - [`data`]: conversations in LLaMA-Factory's ShareGPT / LLaVA formats.
//! - [`generation`]: batched greedy / sampled decoding with a KV cache.
//! - [`loss`]: supervised cross-entropy over a dataset.
//! - [`eval`]: the paper's benchmark scoring and the evaluation runner.
//! - [`synth`]: reading synthesizer output into task triplets.
//! - [`train`]: recipes, schedules, run directories, the training loop.
//! - [`demo`]: the built-in demo domains.
//! - [`limits`]: the bounds a user's file is checked against before anything is allocated.

pub mod data;
pub mod demo;
pub mod device;
pub mod eval;
pub mod generation;
pub mod io;
pub mod kernels;
pub mod limits;
pub mod loss;
pub mod models;
pub mod precision;
pub mod quantize;
pub mod shard;
pub mod synth;
pub mod train;

pub use burn;
