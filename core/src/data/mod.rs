//! Datasets: conversations with images in the formats LLaMA-Factory reads, found directly or
//! by name through a LLaMA-Factory `dataset_info.json` ([`dataset_info`]).

pub mod conversation;
pub mod dataset_info;
