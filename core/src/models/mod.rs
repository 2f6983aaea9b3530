//! Model families behind one interface ([`Model`]), each in its own folder, and the pieces
//! they share: the decoder, rotary embeddings, chat templates and prompts, images, checkpoint
//! reading and writing, layers; [`hub`] finds a model id in the Hugging Face cache.
//!
//! - [`family`]: [`Model`], the [`Family`] loader seam and the [`FamilyNetwork`] seam;
//!   [`registry`]: which families exist and which `config.json` goes to which.
//! - Families: [`qwen2_vl`] (Qwen2-VL, Qwen2), [`llama`] (Llama 3 text), [`llava_next`]
//!   (LLaVA-NeXT with a Llama language model).

pub mod batch;
pub mod chat;
pub mod checkpoint;
pub mod decoder;
pub mod export;
pub mod family;
pub mod files;
pub mod hub;
pub mod image;
pub mod init;
pub mod layers;
pub mod llama;
pub mod llava_next;
pub mod paths;
pub mod prompt;
pub mod quantized_store;
pub mod qwen2_vl;
pub mod registry;
pub mod resample;
pub mod rope;

pub use batch::{ForwardError, ForwardOutput, TokenBatch};
pub use family::{Family, FamilyNetwork, LoadModelError, LoadOptions, Model, ModelSpec, Part};
pub use registry::{FAMILIES, Network};
