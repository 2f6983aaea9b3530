//! The built-in demo: procedurally drawn domain images with captions and tasks
//! ([`domains`]), and `adamllm demo`, the paper's pipeline and ablations on them ([`run`]).

pub mod budget;
pub mod chart;
pub mod claims;
pub mod domains;
pub mod report;
pub mod run;
pub mod seeds;
