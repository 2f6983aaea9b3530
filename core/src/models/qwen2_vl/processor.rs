//! Prompt side of Qwen2-VL: the ChatML rendering of a conversation exactly as the transformers
//! Qwen2-VL chat template writes it, tokenization with the model's `tokenizer.json`, expansion
//! of each image's `<|image_pad|>` to its merged-token count, and the training labels.
//!
//! transformers: `Qwen2VLProcessor.__call__` + the Qwen2-VL `chat_template`.

use std::ops::Range;
use std::path::{Path, PathBuf};

use tokenizers::Tokenizer;

use super::config::Qwen2VlConfig;
use super::image_processor::{ImageProcessorConfig, ProcessedImage};
use crate::data::conversation::{Conversation, IMAGE_PLACEHOLDER, Role};
use crate::io::FileError;
use crate::models::files::ModelFiles;

/// System prompt the Qwen2-VL template inserts when a conversation has none.
pub const DEFAULT_SYSTEM_PROMPT: &str = "You are a helpful assistant.";
/// Label value of tokens that are not trained on (PyTorch's `ignore_index`).
pub const IGNORE_INDEX: i64 = -100;

/// The token that ends a document (Qwen2's pad token); ends synthesizer outputs.
pub const END_OF_TEXT: &str = "<|endoftext|>";

/// Which tokens carry a training label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LabelMode {
    /// Assistant turns (content + `<|im_end|>`), as LLaMA-Factory and transformers label them.
    #[default]
    AssistantTurns,
    /// Every token except image pads (LLaMA-Factory `train_on_prompt`).
    AllTokens,
    /// Everything after the first assistant turn, user turns included, then a trained
    /// `<|endoftext|>` (the synthesizer's mode: synthesis stops at `<|endoftext|>`, since
    /// `<|im_end|>` closes every one of the turns it writes).
    AfterFirstRound,
}

/// A tokenized conversation ready for the model.
#[derive(Debug, Clone, PartialEq)]
pub struct EncodedPrompt {
    /// Token ids with image pads expanded.
    pub ids: Vec<u32>,
    /// One label per token: the token id where supervised, [`IGNORE_INDEX`] elsewhere.
    pub labels: Vec<i64>,
    /// `grid_thw` of each image, in order.
    pub grids: Vec<[usize; 3]>,
    /// The rendered ChatML text (one `<|image_pad|>` per image, before expansion).
    pub text: String,
}

impl EncodedPrompt {
    /// Number of supervised tokens.
    pub fn supervised_tokens(&self) -> usize {
        self.labels.iter().filter(|l| **l != IGNORE_INDEX).count()
    }
}

/// Errors of prompt building.
#[derive(Debug, thiserror::Error)]
pub enum PromptError {
    /// Placeholders and images disagree.
    #[error("the conversation has {placeholders} `<image>` placeholder(s) but {images} image(s)")]
    ImageCountMismatch {
        /// `<image>` occurrences in user turns.
        placeholders: usize,
        /// Images supplied.
        images: usize,
    },
    /// The tokenizer failed.
    #[error("tokenizer error: {0}")]
    Tokenizer(String),
    /// Longer than the model accepts.
    #[error(
        "the sequence has {len} tokens but the model accepts at most {max} (max_position_embeddings)"
    )]
    TooLong {
        /// Tokens after image expansion.
        len: usize,
        /// `max_position_embeddings`.
        max: usize,
    },
}

/// Where one rendered message sits: its role, the byte range of its content and the byte
/// range of the `<|im_end|>` that closes it.
pub type MessageSpan = (Role, Range<usize>, Range<usize>);

/// Tokenizer plus the Qwen2-VL prompt rules of one model folder.
#[derive(Clone)]
pub struct Qwen2VlProcessor {
    /// The model's tokenizer.
    pub tokenizer: Tokenizer,
    /// Image preprocessing settings.
    pub image_config: ImageProcessorConfig,
    /// `<|image_pad|>` id.
    pub image_pad_id: u32,
    /// `<|im_end|>` id (ends every turn).
    pub im_end_id: Option<u32>,
    /// Id used to pad batches (`<|endoftext|>` when present).
    pub pad_id: u32,
    /// Merge size of the vision tower.
    pub merge_size: usize,
    /// `max_position_embeddings`.
    pub max_positions: usize,
}

impl Qwen2VlProcessor {
    /// Loads `tokenizer.json` and `preprocessor_config.json` from a model folder.
    pub fn from_model_dir(dir: &Path, config: &Qwen2VlConfig) -> Result<Self, FileError> {
        Self::from_model_files(&ModelFiles::Dir(dir.to_path_buf()), config)
    }

    /// Loads `tokenizer.json` and `preprocessor_config.json` from a model folder on disk or
    /// in memory.
    pub fn from_model_files(files: &ModelFiles, config: &Qwen2VlConfig) -> Result<Self, FileError> {
        let tokenizer = tokenizer_from_files(files, "tokenizer.json")?;
        let image_config = if files.exists("preprocessor_config.json") {
            let pp = files.path("preprocessor_config.json");
            ImageProcessorConfig::from_json(&files.read_text("preprocessor_config.json")?)
                .map_err(|e| FileError::new(&pp, format!("invalid image processor config: {e}")))?
        } else {
            ImageProcessorConfig::default()
        };
        let pad_id = tokenizer
            .token_to_id("<|endoftext|>")
            .or_else(|| config.eos_token_ids().first().copied())
            .unwrap_or(0);
        Ok(Self {
            im_end_id: tokenizer.token_to_id("<|im_end|>"),
            tokenizer,
            image_config,
            image_pad_id: config.image_token_id,
            pad_id,
            merge_size: config.vision_config.spatial_merge_size,
            max_positions: config.max_position_embeddings,
        })
    }

    /// Renders a conversation as ChatML. Returns the text and, for each message, the byte
    /// range of its content and the byte range of the `<|im_end|>` that closes it.
    pub fn render(
        &self,
        conversation: &Conversation,
        add_generation_prompt: bool,
    ) -> (String, Vec<MessageSpan>) {
        self.render_opening(
            conversation,
            add_generation_prompt.then_some(Role::Assistant),
        )
    }

    /// Renders a conversation and then opens a turn of `open` (if any) for the model to
    /// write: `<|im_start|>assistant\n` is the usual generation prompt; the synthesizer is
    /// prompted with an open `user` turn so that it writes its own question.
    pub fn render_opening(
        &self,
        conversation: &Conversation,
        open: Option<Role>,
    ) -> (String, Vec<MessageSpan>) {
        let mut text = String::new();
        let mut spans = Vec::new();
        if conversation.messages.first().map(|m| m.role) != Some(Role::System) {
            text.push_str("<|im_start|>system\n");
            text.push_str(DEFAULT_SYSTEM_PROMPT);
            text.push_str("<|im_end|>\n");
        }
        for message in &conversation.messages {
            text.push_str("<|im_start|>");
            text.push_str(message.role.as_str());
            text.push('\n');
            let start = text.len();
            text.push_str(&message.content.replace(
                IMAGE_PLACEHOLDER,
                "<|vision_start|><|image_pad|><|vision_end|>",
            ));
            let end = text.len();
            text.push_str("<|im_end|>");
            spans.push((message.role, start..end, end..text.len()));
            text.push('\n');
        }
        if let Some(role) = open {
            text.push_str("<|im_start|>");
            text.push_str(role.as_str());
            text.push('\n');
        }
        (text, spans)
    }

    /// Tokenizes a conversation whose images are already processed (in placeholder order).
    pub fn encode(
        &self,
        conversation: &Conversation,
        images: &[ProcessedImage],
        add_generation_prompt: bool,
        mode: LabelMode,
    ) -> Result<EncodedPrompt, PromptError> {
        self.encode_opening(
            conversation,
            images,
            add_generation_prompt.then_some(Role::Assistant),
            mode,
        )
    }

    /// [`Self::encode`] with an open turn of any role at the end (see [`Self::render_opening`]).
    pub fn encode_opening(
        &self,
        conversation: &Conversation,
        images: &[ProcessedImage],
        open: Option<Role>,
        mode: LabelMode,
    ) -> Result<EncodedPrompt, PromptError> {
        let placeholders = conversation.placeholder_count();
        if placeholders != images.len() {
            return Err(PromptError::ImageCountMismatch {
                placeholders,
                images: images.len(),
            });
        }
        let (mut text, spans) = self.render_opening(conversation, open);
        if mode == LabelMode::AfterFirstRound
            && open.is_none()
            && self.tokenizer.token_to_id(END_OF_TEXT).is_some()
        {
            text.push_str(END_OF_TEXT);
        }
        let encoding = self
            .tokenizer
            .encode(text.as_str(), false)
            .map_err(|e| PromptError::Tokenizer(e.to_string()))?;
        let supervised: Vec<Range<usize>> = match mode {
            LabelMode::AssistantTurns => spans
                .iter()
                .filter(|(role, _, _)| *role == Role::Assistant)
                .map(|(_, content, end)| content.start..end.end)
                .collect(),
            LabelMode::AllTokens => std::iter::once(0..text.len()).collect(),
            LabelMode::AfterFirstRound => {
                let first_answer_end = spans
                    .iter()
                    .find(|(role, _, _)| *role == Role::Assistant)
                    .map_or(text.len(), |(_, _, end)| end.end);
                std::iter::once(first_answer_end..text.len()).collect()
            }
        };
        let mut ids = Vec::with_capacity(encoding.len());
        let mut labels = Vec::with_capacity(encoding.len());
        let mut grids = Vec::with_capacity(images.len());
        let mut next_image = 0;
        for (&id, &(a, b)) in encoding.get_ids().iter().zip(encoding.get_offsets()) {
            if id == self.image_pad_id && next_image < images.len() {
                let image = &images[next_image];
                next_image += 1;
                let n = image.num_merged_tokens(self.merge_size);
                ids.extend(std::iter::repeat_n(id, n));
                labels.extend(std::iter::repeat_n(IGNORE_INDEX, n));
                grids.push(image.grid_thw);
                continue;
            }
            let is_supervised = supervised
                .iter()
                .any(|r| a >= r.start && b <= r.end && b > a);
            ids.push(id);
            labels.push(if is_supervised {
                id as i64
            } else {
                IGNORE_INDEX
            });
        }
        if ids.len() > self.max_positions {
            return Err(PromptError::TooLong {
                len: ids.len(),
                max: self.max_positions,
            });
        }
        Ok(EncodedPrompt {
            ids,
            labels,
            grids,
            text,
        })
    }

    /// Decodes generated ids to text, dropping special tokens.
    pub fn decode(&self, ids: &[u32]) -> Result<String, PromptError> {
        self.tokenizer
            .decode(ids, true)
            .map_err(|e| PromptError::Tokenizer(e.to_string()))
    }

    /// Decodes ids keeping special tokens (for parsing synthesizer output).
    pub fn decode_with_special(&self, ids: &[u32]) -> Result<String, PromptError> {
        self.tokenizer
            .decode(ids, false)
            .map_err(|e| PromptError::Tokenizer(e.to_string()))
    }
}

/// Loads a `tokenizer.json`, naming the file on failure.
pub fn load_tokenizer(path: &Path) -> Result<Tokenizer, FileError> {
    let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("tokenizer.json");
    tokenizer_from_files(&ModelFiles::Dir(dir), name)
}

/// Reads the tokenizer file `name` of a model folder on disk or in memory.
fn tokenizer_from_files(files: &ModelFiles, name: &str) -> Result<Tokenizer, FileError> {
    let path = files.path(name);
    if !files.exists(name) {
        return Err(FileError::new(
            &path,
            "missing tokenizer.json in the model folder",
        ));
    }
    Tokenizer::from_bytes(files.read(name)?)
        .map_err(|e| FileError::new(&path, format!("invalid tokenizer: {e}")))
}

/// Resolves image paths of a conversation against a base folder.
pub fn resolve_images(conversation: &Conversation, base: &Path) -> Vec<PathBuf> {
    conversation
        .images
        .iter()
        .map(|p| {
            if p.is_absolute() {
                p.clone()
            } else {
                base.join(p)
            }
        })
        .collect()
}
