//! Datasets: conversations with images in the formats LLaMA-Factory reads.

pub mod conversation;
