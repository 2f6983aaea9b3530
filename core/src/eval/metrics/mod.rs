//! Per-answer metrics of the AdaMLLM benchmarks, each a faithful port of the reference
//! scorer it replaces.

pub mod exact_match;
pub mod llava_med;
pub mod multi_label;
pub mod multiple_choice;
pub mod rouge;
