//! Prompt side of Qwen2-VL: the shared [`Processor`] set up with Qwen2-VL's rules — the ChatML
//! template with its default system prompt, `<|vision_start|><|image_pad|><|vision_end|>` per
//! image with `<|image_pad|>` expanded to the merged-token count, `<|endoftext|>` as padding and
//! document end, and the `smart_resize` image processor.
//!
//! transformers: `Qwen2VLProcessor.__call__` + the Qwen2-VL `chat_template`.

use std::sync::Arc;

use super::config::Qwen2VlConfig;
use super::image_processor::ImageProcessorConfig;
use crate::io::FileError;
use crate::models::chat::ChatTemplate;
pub use crate::models::chat::{MessageSpan, QWEN2VL_DEFAULT_SYSTEM as DEFAULT_SYSTEM_PROMPT};
use crate::models::files::ModelFiles;
pub use crate::models::prompt::{
    EncodedPrompt, IGNORE_INDEX, LabelMode, Processor, PromptError, load_tokenizer, resolve_images,
    tokenizer_from_files,
};
use crate::models::prompt::{EndOfText, ImageToken, choose_template};

/// The token that ends a document (Qwen2's pad token); ends synthesizer outputs.
pub const END_OF_TEXT: &str = "<|endoftext|>";

/// The image processor of a folder: its `preprocessor_config.json`, or transformers' defaults.
pub fn image_config_from_files(files: &ModelFiles) -> Result<ImageProcessorConfig, FileError> {
    if files.exists("preprocessor_config.json") {
        let pp = files.path("preprocessor_config.json");
        ImageProcessorConfig::from_json(&files.read_text("preprocessor_config.json")?)
            .map_err(|e| FileError::new(&pp, format!("invalid image processor config: {e}")))
    } else {
        Ok(ImageProcessorConfig::default())
    }
}

/// The Qwen2-VL processor of a model folder: `tokenizer.json`, `preprocessor_config.json` and
/// the chosen template (`template`: a `--template` name; Qwen2-VL's own by default).
pub fn processor_from_files(
    files: &ModelFiles,
    config: &Qwen2VlConfig,
    template: Option<&str>,
) -> Result<Processor, FileError> {
    let tokenizer = tokenizer_from_files(files, "tokenizer.json")?;
    let template = choose_template(files, template, Some(ChatTemplate::Qwen2Vl))?;
    let end_of_text = tokenizer.token_to_id(END_OF_TEXT).map(|id| EndOfText {
        text: END_OF_TEXT.into(),
        id,
    });
    let pad_id = end_of_text
        .as_ref()
        .map(|e| e.id)
        .or_else(|| config.eos_token_ids().first().copied())
        .unwrap_or(0);
    let (images, image_token) = if config.is_text_only() {
        (None, None)
    } else {
        let image_config = image_config_from_files(files)?;
        let v = &config.vision_config;
        for (key, processor, tower) in [
            ("patch_size", image_config.patch_size, v.patch_size),
            (
                "temporal_patch_size",
                image_config.temporal_patch_size,
                v.temporal_patch_size,
            ),
            ("merge_size", image_config.merge_size, v.spatial_merge_size),
        ] {
            if processor != tower {
                // The patches would not fit the vision tower's patch embedding.
                return Err(FileError::key(
                    &files.path("preprocessor_config.json"),
                    key,
                    format!("{processor} differs from the vision tower's {tower} in config.json"),
                ));
            }
        }
        let token = ImageToken {
            id: config.image_token_id,
            prompt_text: "<|vision_start|><|image_pad|><|vision_end|>".into(),
            wrapper_ids: vec![config.vision_start_token_id, config.vision_end_token_id],
        };
        (
            Some(Arc::new(image_config) as Arc<dyn crate::models::image::ImagePreprocessor>),
            Some(token),
        )
    };
    Ok(Processor {
        turn_end_id: tokenizer.token_to_id("<|im_end|>"),
        tokenizer,
        template,
        images,
        image_token,
        pad_id,
        end_of_text,
        max_positions: config.max_position_embeddings,
        folder: files.root().display().to_string(),
    })
}
