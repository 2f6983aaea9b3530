//! Training: recipes, learning-rate schedules, run directories and checkpoints, metrics and
//! the loss plot.
//!
//! The loop is [`trainer`]; [`optimizer`] is AdamW, [`lora`] the adapters, [`data`] the
//! samples, [`data_parallel`] the steps of a run over several devices, [`recompute`] the
//! backward pass that recomputes each decoder layer (gradient checkpointing). The other
//! modules are host-side parts (no tensors):
//! - [`recipe`]: the YAML training recipe (LLaMA-Factory key names), CLI overrides, fingerprint.
//! - [`llamafactory`]: LLaMA-Factory SFT configs read as a run, and a run written as one.
//! - [`schedule`]: learning rate per optimizer step, as transformers' schedulers compute it.
//! - [`run_dir`]: the run directory layout, `run.json`, atomic checkpoints and resume checks.
//! - [`metrics_log`]: the append-only `metrics.jsonl` log.
//! - [`plot`]: the loss-curve PNG.

pub mod data;
pub mod data_parallel;
pub mod llamafactory;
pub mod lora;
pub mod metrics_log;
pub mod optimizer;
pub mod plot;
pub mod recipe;
pub mod recompute;
pub mod run_dir;
pub mod schedule;
pub mod trainer;
