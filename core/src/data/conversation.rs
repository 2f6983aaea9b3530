//! Conversations with images, read from the dataset formats LLaMA-Factory accepts:
//! ShareGPT (`{"messages": [{"role", "content"}], "images": [...]}`) and LLaVA
//! (`{"conversations": [{"from", "value"}], "image": "..."}`), as a JSON array or JSONL.
//! `<image>` in user content marks where each image goes, in order.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::io::{FileError, json_error};

/// Placeholder for an image inside user content.
pub const IMAGE_PLACEHOLDER: &str = "<image>";

/// Speaker of a turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// System prompt.
    System,
    /// The human side.
    User,
    /// The model side (trained on).
    Assistant,
}

impl Role {
    /// ChatML role name.
    pub fn as_str(&self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }

    fn parse(name: &str) -> Option<Self> {
        match name {
            "system" => Some(Role::System),
            "user" | "human" => Some(Role::User),
            "assistant" | "gpt" | "model" => Some(Role::Assistant),
            _ => None,
        }
    }
}

/// One turn.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// Speaker.
    pub role: Role,
    /// Text, with `<image>` placeholders in user turns.
    pub content: String,
}

/// A conversation and its images (paths as written in the dataset).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Conversation {
    /// Turns in order.
    pub messages: Vec<Message>,
    /// Image paths in placeholder order.
    #[serde(default)]
    pub images: Vec<PathBuf>,
}

impl Conversation {
    /// Number of `<image>` placeholders over all turns.
    pub fn placeholder_count(&self) -> usize {
        self.messages
            .iter()
            .map(|m| m.content.matches(IMAGE_PLACEHOLDER).count())
            .sum()
    }

    /// Whether at least one assistant turn exists.
    pub fn has_assistant_turn(&self) -> bool {
        self.messages.iter().any(|m| m.role == Role::Assistant)
    }

    /// A single-turn prompt: optional image placeholders then the text.
    pub fn user_prompt(text: &str, images: Vec<PathBuf>) -> Self {
        let mut content = IMAGE_PLACEHOLDER.repeat(images.len());
        content.push_str(text);
        Self {
            messages: vec![Message {
                role: Role::User,
                content,
            }],
            images,
        }
    }

    /// Parses one dataset row (ShareGPT or LLaVA layout).
    pub fn from_json(value: &serde_json::Value) -> Result<Self, String> {
        let obj = value
            .as_object()
            .ok_or_else(|| "expected a JSON object".to_string())?;
        let (turns, role_key, text_key, list_key) = if let Some(m) = obj.get("messages") {
            (m, "role", "content", "messages")
        } else if let Some(c) = obj.get("conversations") {
            (c, "from", "value", "conversations")
        } else {
            return Err("missing `messages` (ShareGPT) or `conversations` (LLaVA)".into());
        };
        let turns = turns
            .as_array()
            .ok_or_else(|| format!("`{list_key}` must be a list"))?;
        let mut messages = Vec::with_capacity(turns.len());
        for (i, t) in turns.iter().enumerate() {
            let role = t
                .get(role_key)
                .and_then(|r| r.as_str())
                .ok_or_else(|| format!("`{list_key}[{i}].{role_key}` is missing"))?;
            let role = Role::parse(role)
                .ok_or_else(|| format!("`{list_key}[{i}].{role_key}` has unknown role {role:?}"))?;
            let content = t
                .get(text_key)
                .and_then(|c| c.as_str())
                .ok_or_else(|| format!("`{list_key}[{i}].{text_key}` must be a string"))?;
            messages.push(Message {
                role,
                content: content.to_string(),
            });
        }
        let images = match obj.get("images").or_else(|| obj.get("image")) {
            None | Some(serde_json::Value::Null) => Vec::new(),
            Some(serde_json::Value::String(s)) => vec![PathBuf::from(s)],
            Some(serde_json::Value::Array(a)) => a
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(PathBuf::from)
                        .ok_or_else(|| "`images` entries must be strings".to_string())
                })
                .collect::<Result<_, _>>()?,
            Some(_) => return Err("`images` must be a list of paths".into()),
        };
        let mut conversation = Self { messages, images };
        // LLaVA rows carry one image and often no placeholder: put it at the first user turn.
        if list_key == "conversations"
            && conversation.placeholder_count() == 0
            && conversation.images.len() == 1
            && let Some(first_user) = conversation
                .messages
                .iter_mut()
                .find(|m| m.role == Role::User)
        {
            first_user.content.insert_str(0, IMAGE_PLACEHOLDER);
        }
        Ok(conversation)
    }
}

/// A parsed row with the place it came from, for error messages.
#[derive(Debug, Clone)]
pub struct DatasetRow {
    /// The conversation.
    pub conversation: Conversation,
    /// 1-based line (JSONL) or 0-based index in the array (JSON), as a display string.
    pub location: String,
}

/// Reads a ShareGPT/LLaVA dataset as JSON (an array) or JSONL (one object a line).
/// Errors name the file and the line.
pub fn read_conversations(path: &Path) -> Result<Vec<DatasetRow>, FileError> {
    read_conversations_with(path, &Conversation::from_json)
}

/// [`read_conversations`] with each row read by `parse` (a LLaMA-Factory layout, say).
pub fn read_conversations_with(
    path: &Path,
    parse: &dyn Fn(&serde_json::Value) -> Result<Conversation, String>,
) -> Result<Vec<DatasetRow>, FileError> {
    let text = std::fs::read_to_string(path).map_err(|e| FileError::io(path, e))?;
    let trimmed = text.trim_start();
    let mut rows = Vec::new();
    // A file holding one pretty-printed JSON object is a one-row dataset (JSONL otherwise).
    let first_line = trimmed.lines().next().unwrap_or("");
    if trimmed.starts_with('{')
        && serde_json::from_str::<serde_json::Value>(first_line).is_err()
        && let Ok(v) = serde_json::from_str::<serde_json::Value>(&text)
    {
        let conversation = parse(&v).map_err(|m| FileError::new(path, format!("entry 0: {m}")))?;
        return Ok(vec![DatasetRow {
            conversation,
            location: "entry 0".into(),
        }]);
    }
    if trimmed.starts_with('[') {
        let values: Vec<serde_json::Value> =
            serde_json::from_str(&text).map_err(|e| json_error(path, &e))?;
        for (i, v) in values.iter().enumerate() {
            let conversation =
                parse(v).map_err(|m| FileError::new(path, format!("entry {i}: {m}")))?;
            rows.push(DatasetRow {
                conversation,
                location: format!("entry {i}"),
            });
        }
    } else {
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let v: serde_json::Value = serde_json::from_str(line)
                .map_err(|e| FileError::line(path, i + 1, format!("malformed JSON: {e}")))?;
            let conversation = parse(&v).map_err(|m| FileError::line(path, i + 1, m))?;
            rows.push(DatasetRow {
                conversation,
                location: format!("line {}", i + 1),
            });
        }
    }
    if rows.is_empty() {
        return Err(FileError::new(path, "the dataset is empty"));
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_sharegpt_and_llava_rows() {
        let s = serde_json::json!({"messages": [{"role": "user", "content": "<image>Hi"},
            {"role": "assistant", "content": "Yes"}], "images": ["a.png"]});
        let c = Conversation::from_json(&s).unwrap();
        assert_eq!(c.placeholder_count(), 1);
        assert_eq!(c.images, vec![PathBuf::from("a.png")]);
        let l = serde_json::json!({"conversations": [{"from": "human", "value": "Hi"},
            {"from": "gpt", "value": "Yes"}], "image": "b.png"});
        let c = Conversation::from_json(&l).unwrap();
        assert_eq!(c.messages[0].content, "<image>Hi");
        assert_eq!(c.messages[1].role, Role::Assistant);
    }

    #[test]
    fn errors_name_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("d.jsonl");
        std::fs::write(
            &p,
            "{\"messages\": [{\"role\": \"user\", \"content\": \"a\"}]}\n{bad json\n",
        )
        .unwrap();
        let e = read_conversations(&p).unwrap_err().to_string();
        assert!(e.contains("d.jsonl") && e.contains("line 2"), "{e}");
        std::fs::write(
            &p,
            "{\"messages\": [{\"role\": \"robot\", \"content\": \"a\"}]}\n",
        )
        .unwrap();
        let e = read_conversations(&p).unwrap_err().to_string();
        assert!(e.contains("line 1") && e.contains("robot"), "{e}");
        std::fs::write(&p, "\n").unwrap();
        let e = read_conversations(&p).unwrap_err().to_string();
        assert!(e.contains("empty"), "{e}");
    }
}
