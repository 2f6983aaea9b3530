//! `image_caption_pairs.json`: the domain image–caption pairs synthesis starts from.
//!
//! Each row is a ShareGPT conversation (`messages` + `images`, or LLaVA `conversations` +
//! `image`) whose first user turn holds `<image>` and an instruction and whose first
//! assistant turn is the caption:
//!
//! ```json
//! {"images": ["scan_01.png"],
//!  "messages": [{"role": "user", "content": "<image>Describe the findings."},
//!               {"role": "assistant", "content": "A round opacity in the left lobe ..."}]}
//! ```
//!
//! A row's `syn_id` is its 0-based position in the file (bad rows included), the id every
//! later file (`syn_task_triplets.jsonl`, `filtered_task_pairs.jsonl`) refers to. Bad rows
//! (not an object, no assistant turn, empty or non-UTF-8 caption, no image) are returned as
//! [`SkippedRow`]s with the reason, not as errors; only an unreadable file is an error.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::data::conversation::{Conversation, IMAGE_PLACEHOLDER, Role};
use crate::io::{FileError, json_error};

/// One usable image–caption pair.
#[derive(Debug, Clone, PartialEq)]
pub struct CaptionPair {
    /// Position of the row in the file.
    pub syn_id: usize,
    /// The row as written (copied into the output records).
    pub row: Map<String, Value>,
    /// The image path as written (relative to the images folder unless absolute).
    pub image: PathBuf,
    /// The caption instruction, `<image>` removed and trimmed.
    pub instruction: String,
    /// The caption (first assistant turn), trimmed.
    pub caption: String,
}

/// A row left out, with the reason (one line of `skipped.jsonl`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkippedRow {
    /// Position of the row in its file.
    pub syn_id: usize,
    /// The file it came from.
    pub file: String,
    /// `line N` (JSONL) or `entry N` (JSON array).
    pub location: String,
    /// Why it was left out.
    pub reason: String,
}

/// The pairs of a file plus the rows that could not be used.
#[derive(Debug, Clone, Default)]
pub struct CaptionPairs {
    /// Usable pairs in file order.
    pub pairs: Vec<CaptionPair>,
    /// Rows left out.
    pub skipped: Vec<SkippedRow>,
    /// Rows in the file.
    pub total_rows: usize,
}

/// Reads `image_caption_pairs.json` (JSON array or JSONL). Invalid UTF-8 is decoded lossily
/// and the rows it touches are skipped.
pub fn read_caption_pairs(path: &Path) -> Result<CaptionPairs, FileError> {
    let bytes = std::fs::read(path).map_err(|e| FileError::io(path, e))?;
    let text = String::from_utf8_lossy(&bytes);
    let trimmed = text.trim_start();
    let mut raw: Vec<(String, Result<Value, String>)> = Vec::new();
    if trimmed.starts_with('[') {
        let values: Vec<Value> = serde_json::from_str(trimmed).map_err(|e| json_error(path, &e))?;
        for (i, value) in values.into_iter().enumerate() {
            raw.push((format!("entry {i}"), Ok(value)));
        }
    } else {
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let parsed =
                serde_json::from_str::<Value>(line).map_err(|e| format!("malformed JSON: {e}"));
            raw.push((format!("line {}", i + 1), parsed));
        }
    }
    if raw.is_empty() {
        return Err(FileError::new(path, "no image-caption pairs in the file"));
    }
    let mut out = CaptionPairs {
        total_rows: raw.len(),
        ..CaptionPairs::default()
    };
    for (syn_id, (location, parsed)) in raw.into_iter().enumerate() {
        match parsed.and_then(|value| pair_from_value(syn_id, value)) {
            Ok(pair) => out.pairs.push(pair),
            Err(reason) => out.skipped.push(SkippedRow {
                syn_id,
                file: path.display().to_string(),
                location,
                reason,
            }),
        }
    }
    Ok(out)
}

/// Checks one row and extracts its pair, or says what is wrong with it.
pub fn pair_from_value(syn_id: usize, value: Value) -> Result<CaptionPair, String> {
    let Value::Object(row) = value else {
        return Err("the row is not a JSON object".into());
    };
    let conversation = Conversation::from_json(&Value::Object(row.clone()))?;
    let user = conversation
        .messages
        .iter()
        .find(|m| m.role == Role::User)
        .ok_or("no user turn (the caption instruction)")?;
    let assistant = conversation
        .messages
        .iter()
        .find(|m| m.role == Role::Assistant)
        .ok_or("no assistant turn (the caption)")?;
    let caption = assistant.content.trim();
    if caption.contains(char::REPLACEMENT_CHARACTER) || user.content.contains('\u{FFFD}') {
        return Err("the caption is not valid UTF-8".into());
    }
    if caption.is_empty() {
        return Err("the caption is empty".into());
    }
    let image = match conversation.images.as_slice() {
        [] => return Err("the row has no image".into()),
        [one] => one.clone(),
        more => {
            return Err(format!(
                "the row has {} images; a caption pair has exactly one",
                more.len()
            ));
        }
    };
    let instruction = user
        .content
        .replace(IMAGE_PLACEHOLDER, "")
        .trim()
        .to_string();
    Ok(CaptionPair {
        syn_id,
        row,
        image,
        instruction,
        caption: caption.to_string(),
    })
}

/// Resolves a pair's image path against the images folder (absolute paths stay).
pub fn image_path(images_dir: &Path, image: &Path) -> PathBuf {
    images_dir.join(image)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_rows_are_skipped_with_reasons() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("image_caption_pairs.jsonl");
        let mut bytes = Vec::new();
        let good = r#"{"images": ["a.png"], "messages": [{"role": "user", "content": "<image>Describe."}, {"role": "assistant", "content": " A red cell. "}]}"#;
        bytes.extend_from_slice(good.as_bytes());
        bytes.push(b'\n');
        bytes.extend_from_slice(br#"{"images": ["b.png"], "messages": [{"role": "user", "content": "<image>Describe."}]}"#);
        bytes.push(b'\n');
        bytes.extend_from_slice(br#"{"images": ["c.png"], "messages": [{"role": "user", "content": "<image>x"}, {"role": "assistant", "content": "  "}]}"#);
        bytes.push(b'\n');
        bytes.extend_from_slice(br#"{"images": ["d.png"], "messages": [{"role": "user", "content": "<image>x"}, {"role": "assistant", "content": "caf"#);
        bytes.extend_from_slice(&[0xff, 0xfe]);
        bytes.extend_from_slice(b"\"}]}\n");
        bytes.extend_from_slice(b"{not json\n");
        bytes.extend_from_slice(br#"{"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]}"#);
        bytes.push(b'\n');
        std::fs::write(&path, bytes).unwrap();
        let read = read_caption_pairs(&path).unwrap();
        assert_eq!(read.total_rows, 6);
        assert_eq!(read.pairs.len(), 1);
        let pair = &read.pairs[0];
        assert_eq!(
            (
                pair.syn_id,
                pair.instruction.as_str(),
                pair.caption.as_str()
            ),
            (0, "Describe.", "A red cell.")
        );
        let reasons: Vec<(usize, &str, &str)> = read
            .skipped
            .iter()
            .map(|s| (s.syn_id, s.location.as_str(), s.reason.as_str()))
            .collect();
        assert_eq!(reasons[0], (1, "line 2", "no assistant turn (the caption)"));
        assert_eq!(reasons[1], (2, "line 3", "the caption is empty"));
        assert_eq!(reasons[2], (3, "line 4", "the caption is not valid UTF-8"));
        assert_eq!(reasons[3].0, 4);
        assert!(reasons[3].2.starts_with("malformed JSON"), "{reasons:?}");
        assert_eq!(reasons[4], (5, "line 6", "the row has no image"));
    }

    #[test]
    fn arrays_count_entries_and_empty_files_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pairs.json");
        std::fs::write(
            &path,
            r#"[{"image": "x.png", "conversations": [{"from": "human", "value": "<image>\nWhat?"}, {"from": "gpt", "value": "A dish."}]}, 5]"#,
        )
        .unwrap();
        let read = read_caption_pairs(&path).unwrap();
        assert_eq!(read.pairs[0].instruction, "What?");
        assert_eq!(read.skipped[0].location, "entry 1");
        std::fs::write(&path, "\n\n").unwrap();
        let error = read_caption_pairs(&path).unwrap_err().to_string();
        assert!(error.contains("pairs.json") && error.contains("no image-caption pairs"));
    }
}
