//! Model families. Each family lives in its own folder; shared pieces (checkpoint reading,
//! layers) sit beside them.

pub mod checkpoint;
pub mod files;
pub mod layers;
pub mod qwen2_vl;
