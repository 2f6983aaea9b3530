//! The prompt side of a model, whatever its family: chat template, tokenizer, image
//! placeholder expansion and training labels.
//!
//! A conversation is rendered by the model's [`ChatTemplate`] with one image placeholder string
//! per image, tokenized in one call (with the tokenizer's BOS when the template asks for it),
//! and each image's placeholder token is then repeated to the number of tokens the family's
//! image processor gives that image — transformers' processors expand the same text before
//! tokenizing, which gives the same ids because the placeholder is a special token. Labels come
//! from the byte ranges of the rendered assistant turns.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;
use tokenizers::Tokenizer;

use super::chat::{ChatTemplate, JinjaTemplate, TEMPLATE_NAMES, TemplateError, TurnMarkers};
use super::image::{ImagePreprocessor, ProcessedImage};
use crate::data::conversation::{Conversation, Role};
use crate::io::FileError;
use crate::models::files::ModelFiles;

/// Label value of tokens that are not trained on (PyTorch's `ignore_index`).
pub const IGNORE_INDEX: i64 = -100;

/// Which tokens carry a training label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LabelMode {
    /// Assistant turns (content + the marker closing the turn), as LLaMA-Factory and
    /// transformers label them.
    #[default]
    AssistantTurns,
    /// Every token except image placeholders (LLaMA-Factory `train_on_prompt`).
    AllTokens,
    /// Everything after the first assistant turn, user turns included, then a trained
    /// end-of-text token (the synthesizer's mode: synthesis stops at end-of-text, since the
    /// turn marker closes every one of the turns it writes).
    AfterFirstRound,
}

/// A tokenized conversation ready for the model.
#[derive(Debug, Clone, PartialEq)]
pub struct EncodedPrompt {
    /// Token ids with image placeholders expanded.
    pub ids: Vec<u32>,
    /// One label per token: the token id where supervised, [`IGNORE_INDEX`] elsewhere.
    pub labels: Vec<i64>,
    /// The grid of each image, in order.
    pub grids: Vec<[usize; 3]>,
    /// The rendered text (one placeholder per image, before expansion).
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
        /// `<image>` occurrences in the turns.
        placeholders: usize,
        /// Images supplied.
        images: usize,
    },
    /// Images given to a model without a vision tower.
    #[error("the model is text-only but the conversation holds {images} image(s)")]
    TextOnly {
        /// Images supplied.
        images: usize,
    },
    /// The model has no chat template and none was chosen.
    #[error(
        "{folder}: the model has no chat template (no chat_template in tokenizer_config.json or chat_template.json); choose one with --template ({})",
        template_names()
    )]
    NoTemplate {
        /// The model folder.
        folder: String,
    },
    /// The chat template failed.
    #[error(transparent)]
    Template(#[from] TemplateError),
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

/// `qwen2_vl, chatml, ...` for messages.
pub fn template_names() -> String {
    TEMPLATE_NAMES
        .iter()
        .map(|(n, _)| *n)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The image placeholder of a model: what an `<image>` becomes in the rendered text, and the
/// token that is repeated once per image token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageToken {
    /// Token id of the repeated placeholder (`<|image_pad|>`, `<|reserved_special_token_4|>`).
    pub id: u32,
    /// Text an `<image>` placeholder is rendered as by the built-in templates.
    pub prompt_text: String,
    /// Other ids of the image's prompt text (`<|vision_start|>`, `<|vision_end|>`): never cut
    /// by truncation either.
    pub wrapper_ids: Vec<u32>,
}

/// The special token that ends a document (`<|endoftext|>`, `<|end_of_text|>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndOfText {
    /// Its text.
    pub text: String,
    /// Its id.
    pub id: u32,
}

/// Tokenizer plus the prompt rules of one model folder.
#[derive(Clone)]
pub struct Processor {
    /// The model's tokenizer.
    pub tokenizer: Tokenizer,
    /// The chat template, `None` for a model that only reads plain text (a base LM).
    pub template: Option<ChatTemplate>,
    /// The family's image processor (`None` for text-only models).
    pub images: Option<Arc<dyn ImagePreprocessor>>,
    /// The image placeholder (`None` for text-only models).
    pub image_token: Option<ImageToken>,
    /// Id used to pad batches.
    pub pad_id: u32,
    /// The marker closing every turn (`<|im_end|>`, `<|eot_id|>`), a stop id for generation.
    pub turn_end_id: Option<u32>,
    /// The document end, where a synthesizer stops.
    pub end_of_text: Option<EndOfText>,
    /// `max_position_embeddings`.
    pub max_positions: usize,
    /// The folder, for messages.
    pub folder: String,
}

impl std::fmt::Debug for Processor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Processor")
            .field("template", &self.template.as_ref().map(ChatTemplate::name))
            .field("image_token", &self.image_token)
            .field("pad_id", &self.pad_id)
            .finish_non_exhaustive()
    }
}

impl Processor {
    /// The template, or the error saying none is set.
    pub fn template(&self) -> Result<&ChatTemplate, PromptError> {
        self.template
            .as_ref()
            .ok_or_else(|| PromptError::NoTemplate {
                folder: self.folder.clone(),
            })
    }

    /// How the template delimits turns (ChatML when unknown).
    pub fn turn_markers(&self) -> TurnMarkers {
        self.template
            .as_ref()
            .and_then(ChatTemplate::markers)
            .unwrap_or(super::chat::CHATML_MARKERS)
    }

    /// Ids that are part of an image's prompt text and must never be cut off.
    pub fn image_token_ids(&self) -> Vec<u32> {
        match &self.image_token {
            Some(t) => std::iter::once(t.id).chain(t.wrapper_ids.clone()).collect(),
            None => Vec::new(),
        }
    }

    /// The image processor, or the error for a text-only model.
    pub fn image_processor(
        &self,
    ) -> Result<&dyn ImagePreprocessor, super::image::ImageProcessorError> {
        self.images
            .as_deref()
            .ok_or(super::image::ImageProcessorError::TextOnly)
    }

    /// Renders a conversation with the model's template (see [`ChatTemplate::render`]).
    pub fn render_opening(
        &self,
        conversation: &Conversation,
        open: Option<Role>,
    ) -> Result<super::chat::Rendered, PromptError> {
        let image_text = self
            .image_token
            .as_ref()
            .map_or("", |t| t.prompt_text.as_str());
        Ok(self.template()?.render(conversation, image_text, open)?)
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

    /// [`Self::encode`] with an open turn of any role at the end.
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
        if !images.is_empty() && self.image_token.is_none() {
            return Err(PromptError::TextOnly {
                images: images.len(),
            });
        }
        let rendered = self.render_opening(conversation, open)?;
        let mut text = rendered.text;
        if mode == LabelMode::AfterFirstRound
            && open.is_none()
            && let Some(eot) = &self.end_of_text
        {
            text.push_str(&eot.text);
        }
        let supervised = supervised_ranges(&rendered.spans, mode, text.len());
        let encoding = self
            .tokenizer
            .encode(text.as_str(), rendered.add_special_tokens)
            .map_err(|e| PromptError::Tokenizer(e.to_string()))?;
        let image_id = self.image_token.as_ref().map(|t| t.id);
        let mut ids = Vec::with_capacity(encoding.len());
        let mut labels = Vec::with_capacity(encoding.len());
        let mut grids = Vec::with_capacity(images.len());
        let mut next_image = 0;
        for (&id, &(a, b)) in encoding.get_ids().iter().zip(encoding.get_offsets()) {
            if Some(id) == image_id && next_image < images.len() {
                let image = &images[next_image];
                next_image += 1;
                ids.extend(std::iter::repeat_n(id, image.tokens));
                labels.extend(std::iter::repeat_n(IGNORE_INDEX, image.tokens));
                grids.push(image.grid_thw);
                continue;
            }
            // The tokenizer's own BOS has an empty offset range: never supervised.
            let is_supervised = b > a && supervised.iter().any(|r| a >= r.start && b <= r.end);
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

    /// Tokenizes plain text (no template), with the tokenizer's own special tokens (a base
    /// Llama's BOS; Qwen2's tokenizer adds none).
    pub fn encode_plain(&self, text: &str) -> Result<Vec<u32>, PromptError> {
        Ok(self
            .tokenizer
            .encode(text, true)
            .map_err(|e| PromptError::Tokenizer(e.to_string()))?
            .get_ids()
            .to_vec())
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

/// The byte ranges of the rendered text that carry labels.
fn supervised_ranges(
    spans: &[super::chat::MessageSpan],
    mode: LabelMode,
    text_len: usize,
) -> Vec<Range<usize>> {
    match mode {
        LabelMode::AssistantTurns => spans
            .iter()
            .filter(|(role, _, _)| *role == Role::Assistant)
            .map(|(_, content, end)| content.start..end.end.max(content.end))
            .collect(),
        LabelMode::AllTokens => std::iter::once(0..text_len).collect(),
        LabelMode::AfterFirstRound => {
            let first_answer_end = spans
                .iter()
                .find(|(role, _, _)| *role == Role::Assistant)
                .map_or(text_len, |(_, content, end)| end.end.max(content.end));
            std::iter::once(first_answer_end..text_len).collect()
        }
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
pub fn tokenizer_from_files(files: &ModelFiles, name: &str) -> Result<Tokenizer, FileError> {
    let path = files.path(name);
    if !files.exists(name) {
        return Err(FileError::new(
            &path,
            "missing tokenizer.json in the model folder",
        ));
    }
    let bytes = files.read(name)?;
    let tokenizer = crate::limits::catch_parser_panic(|| Tokenizer::from_bytes(bytes))
        .map_err(|panic| FileError::new(&path, format!("invalid tokenizer: {panic}")))?
        .map_err(|e| FileError::new(&path, format!("invalid tokenizer: {e}")))?;
    probe_tokenizer(&tokenizer)
        .map_err(|e| FileError::new(&path, format!("invalid tokenizer: {e}")))?;
    Ok(tokenizer)
}

/// Encodes and decodes one short text with special tokens. tokenizers 0.23 checks some parts
/// of a file only when they run (a post-processor naming a special token the file does not
/// define panics on the first encode), so a damaged file is found here, by name, instead of
/// in the middle of a run.
fn probe_tokenizer(tokenizer: &Tokenizer) -> Result<(), String> {
    crate::limits::catch_parser_panic(|| {
        let encoding = tokenizer
            .encode("Describe it: 1, 2.", true)
            .map_err(|e| format!("it cannot encode a test text: {e}"))?;
        tokenizer
            .decode(encoding.get_ids(), false)
            .map_err(|e| format!("it cannot decode a test text: {e}"))?;
        Ok(())
    })
    .map_err(|panic| format!("it fails on a test text: {panic}"))?
}

/// A special token as `tokenizer_config.json` writes it: a string or an `AddedToken` object.
fn token_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content").and_then(Value::as_str).map(str::to_string),
        _ => None,
    }
}

/// The folder's own Jinja chat template, if it has one: `chat_template.json`
/// (`{"chat_template": ...}`, the processor's), `chat_template.jinja`, or `chat_template` in
/// `tokenizer_config.json` (a string, or a list of named templates whose `default` is used).
pub fn folder_template(files: &ModelFiles) -> Result<Option<JinjaTemplate>, FileError> {
    let config: Option<Value> = if files.exists("tokenizer_config.json") {
        Some(files.read_json("tokenizer_config.json")?)
    } else {
        None
    };
    let mut special = Vec::new();
    if let Some(Value::Object(cfg)) = &config {
        for name in ["bos_token", "eos_token", "pad_token", "unk_token"] {
            if let Some(text) = cfg.get(name).and_then(token_text) {
                special.push((name.to_string(), text));
            }
        }
    }
    let (source_file, source) = if files.exists("chat_template.json") {
        let v: Value = files.read_json("chat_template.json")?;
        match v.get("chat_template").and_then(Value::as_str) {
            Some(t) => ("chat_template.json", t.to_string()),
            None => {
                return Err(FileError::key(
                    &files.path("chat_template.json"),
                    "chat_template",
                    "missing or not a string",
                ));
            }
        }
    } else if files.exists("chat_template.jinja") {
        (
            "chat_template.jinja",
            files.read_text("chat_template.jinja")?,
        )
    } else {
        match config.as_ref().and_then(|c| c.get("chat_template")) {
            None | Some(Value::Null) => return Ok(None),
            Some(Value::String(t)) => ("tokenizer_config.json", t.clone()),
            Some(Value::Array(list)) => {
                let default = list
                    .iter()
                    .find(|t| t.get("name").and_then(Value::as_str) == Some("default"));
                match default
                    .and_then(|t| t.get("template"))
                    .and_then(Value::as_str)
                {
                    Some(t) => ("tokenizer_config.json", t.to_string()),
                    None => {
                        return Err(FileError::key(
                            &files.path("tokenizer_config.json"),
                            "chat_template",
                            "a list of templates without one named \"default\"",
                        ));
                    }
                }
            }
            Some(_) => {
                return Err(FileError::key(
                    &files.path("tokenizer_config.json"),
                    "chat_template",
                    "expected a string or a list of named templates",
                ));
            }
        }
    };
    let path = files.path(source_file);
    JinjaTemplate::new(path.display().to_string(), source, special)
        .map(Some)
        .map_err(|e| FileError::key(&path, "chat_template", e.to_string()))
}

/// The template a model uses: `choice` (a `--template` name) if given, else the family's
/// default (`family_default`, a built-in, or `None` to use the folder's template).
pub fn choose_template(
    files: &ModelFiles,
    choice: Option<&str>,
    family_default: Option<ChatTemplate>,
) -> Result<Option<ChatTemplate>, FileError> {
    match choice {
        Some("folder") => match folder_template(files)? {
            Some(t) => Ok(Some(ChatTemplate::Jinja(t))),
            None => Err(FileError::new(
                &files.root(),
                "--template folder: the model folder has no chat template",
            )),
        },
        Some(name) => ChatTemplate::builtin(name).map(Some).ok_or_else(|| {
            FileError::new(
                &files.root(),
                format!(
                    "--template {name:?}: unknown template; expected one of {}",
                    template_names()
                ),
            )
        }),
        None => match family_default {
            Some(t) => Ok(Some(t)),
            None => Ok(folder_template(files)?.map(ChatTemplate::Jinja)),
        },
    }
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
