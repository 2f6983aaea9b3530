//! Datasets registered in a LLaMA-Factory `dataset_info.json`: each name maps to a file and
//! says how its rows are laid out (`formatting`: `sharegpt` or `alpaca`; `columns`: which row
//! keys hold what; `tags`: which role names and turn keys a ShareGPT list uses). Rows are read
//! in place through that layout into [`Conversation`]s; nothing is converted on disk.
//!
//! Defaults are LLaMA-Factory's (`data/README.md`, `src/llamafactory/data/parser.py`):
//! ShareGPT turns `{"from", "value"}` with roles `human` / `gpt` / `system`, columns
//! `conversations` and `images`; Alpaca columns `instruction`, `input`, `output`, with the
//! prompt being `instruction` then, when not empty, a newline and `input`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::conversation::{Conversation, Message, Role};
use crate::io::{FileError, json_error};

/// The file name LLaMA-Factory looks for in `dataset_dir`.
pub const DATASET_INFO_FILE: &str = "dataset_info.json";

/// How a dataset's rows are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Formatting {
    /// One instruction and one answer a row (optional history pairs).
    #[default]
    Alpaca,
    /// A list of turns a row.
    Sharegpt,
}

/// Which row keys hold what (LLaMA-Factory's `columns`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Columns {
    /// Alpaca: the instruction.
    pub prompt: String,
    /// Alpaca: the input appended to the instruction.
    pub query: String,
    /// Alpaca: the answer.
    pub response: String,
    /// Alpaca: earlier `[instruction, answer]` pairs.
    pub history: String,
    /// ShareGPT: the list of turns.
    pub messages: String,
    /// The system prompt (both formats).
    pub system: String,
    /// Image paths (a list, or one path).
    pub images: String,
    /// Tools (read by LLaMA-Factory's function-calling templates; must be empty here).
    pub tools: String,
    /// Videos (not read here; must be empty).
    pub videos: String,
    /// Audios (not read here; must be empty).
    pub audios: String,
}

impl Default for Columns {
    fn default() -> Self {
        let s = |x: &str| x.to_owned();
        Self {
            prompt: s("instruction"),
            query: s("input"),
            response: s("output"),
            history: s("history"),
            messages: s("conversations"),
            system: s("system"),
            images: s("images"),
            tools: s("tools"),
            videos: s("videos"),
            audios: s("audios"),
        }
    }
}

/// ShareGPT turn keys and role names (LLaMA-Factory's `tags`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Tags {
    /// Key of a turn's role.
    pub role_tag: String,
    /// Key of a turn's text.
    pub content_tag: String,
    /// Role name of the user.
    pub user_tag: String,
    /// Role name of the model.
    pub assistant_tag: String,
    /// Role name of a tool's answer (refused: no tool turns here).
    pub observation_tag: String,
    /// Role name of a function call (refused: no tool turns here).
    pub function_tag: String,
    /// Role name of a system turn.
    pub system_tag: String,
}

impl Default for Tags {
    fn default() -> Self {
        let s = |x: &str| x.to_owned();
        Self {
            role_tag: s("from"),
            content_tag: s("value"),
            user_tag: s("human"),
            assistant_tag: s("gpt"),
            observation_tag: s("observation"),
            function_tag: s("function_call"),
            system_tag: s("system"),
        }
    }
}

/// How to read one dataset's rows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct DatasetLayout {
    /// `sharegpt` or `alpaca`.
    pub formatting: Formatting,
    /// Row keys.
    pub columns: Columns,
    /// ShareGPT turn keys and role names.
    pub tags: Tags,
}

/// One `dataset_info.json` entry, with its file found.
#[derive(Debug, Clone, PartialEq)]
pub struct RegisteredDataset {
    /// Its name in `dataset_info.json`.
    pub name: String,
    /// The data files (`file_name`, or the JSON/JSONL files of a `file_name` folder, in name
    /// order).
    pub files: Vec<PathBuf>,
    /// How its rows are laid out.
    pub layout: DatasetLayout,
}

/// The keys of an entry this reader knows (others are refused by name). The hub, subset and
/// split fields are accepted so a registry written for LLaMA-Factory reads, but only
/// `file_name` locates data here.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct Entry {
    file_name: Option<String>,
    hf_hub_url: Option<String>,
    ms_hub_url: Option<String>,
    om_hub_url: Option<String>,
    script_url: Option<String>,
    cloud_file_name: Option<String>,
    #[serde(default)]
    formatting: Formatting,
    #[serde(default)]
    ranking: bool,
    subset: Option<String>,
    split: Option<String>,
    folder: Option<String>,
    num_samples: Option<usize>,
    #[serde(default)]
    columns: Option<Value>,
    #[serde(default)]
    tags: Option<Tags>,
}

/// Finds `names` in `dataset_dir/dataset_info.json`. A name that is not registered is an error
/// naming it and every registered name; an entry this reader cannot honour (a hub-only
/// dataset, preference data, a missing file) is an error naming the entry.
pub fn find_datasets(
    dataset_dir: &Path,
    names: &[String],
) -> Result<Vec<RegisteredDataset>, FileError> {
    let info_path = dataset_dir.join(DATASET_INFO_FILE);
    let text = std::fs::read_to_string(&info_path).map_err(|e| FileError::io(&info_path, e))?;
    let info: BTreeMap<String, Value> =
        serde_json::from_str(&text).map_err(|e| json_error(&info_path, &e))?;
    names
        .iter()
        .map(|name| {
            let Some(value) = info.get(name) else {
                let known: Vec<&str> = info.keys().map(String::as_str).collect();
                return Err(FileError::new(
                    &info_path,
                    format!(
                        "no dataset named {name:?} (registered: {})",
                        if known.is_empty() {
                            "none".to_owned()
                        } else {
                            known.join(", ")
                        }
                    ),
                ));
            };
            registered(dataset_dir, &info_path, name, value)
        })
        .collect()
}

fn registered(
    dataset_dir: &Path,
    info_path: &Path,
    name: &str,
    value: &Value,
) -> Result<RegisteredDataset, FileError> {
    let fail = |message: String| FileError {
        path: info_path.to_path_buf(),
        location: Some(format!("dataset {name:?}")),
        message,
    };
    let entry: Entry = serde_json::from_value(value.clone()).map_err(|e| fail(format!("{e}")))?;
    if entry.ranking {
        return Err(fail(
            "`ranking: true` is preference data (DPO/RM); adamllm trains supervised (sft) only"
                .into(),
        ));
    }
    let Some(file_name) = entry.file_name.as_deref() else {
        let hub = entry
            .hf_hub_url
            .as_deref()
            .map(|u| format!(" (download it with `huggingface-cli download --repo-type dataset {u} --local-dir DIR` and register DIR as `file_name`)"))
            .unwrap_or_default();
        return Err(fail(format!(
            "has no `file_name`: adamllm reads local files only{hub}"
        )));
    };
    let path = dataset_dir.join(file_name);
    let files = data_files(&path).map_err(fail)?;
    let columns = match entry.columns {
        Some(given) => merge_columns(given).map_err(fail)?,
        None => Columns::default(),
    };
    let layout = DatasetLayout {
        formatting: entry.formatting,
        columns,
        tags: entry.tags.unwrap_or_default(),
    };
    Ok(RegisteredDataset {
        name: name.to_owned(),
        files,
        layout,
    })
}

/// The columns given, over the defaults.
fn merge_columns(given: Value) -> Result<Columns, String> {
    let mut base = serde_json::to_value(Columns::default()).map_err(|e| e.to_string())?;
    let Value::Object(given) = given else {
        return Err("`columns` must be an object".into());
    };
    for (key, value) in given {
        base[&key] = value;
    }
    serde_json::from_value(base).map_err(|e| format!("`columns`: {e}"))
}

/// `path` itself, or the JSON/JSONL files of a folder in name order.
fn data_files(path: &Path) -> Result<Vec<PathBuf>, String> {
    if path.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    if path.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(|e| format!("{}: {e}", path.display()))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "json" || x == "jsonl"))
            .collect();
        files.sort();
        if files.is_empty() {
            return Err(format!(
                "{}: the folder holds no .json or .jsonl file",
                path.display()
            ));
        }
        return Ok(files);
    }
    Err(format!("`file_name` {}: no such file", path.display()))
}

impl DatasetLayout {
    /// The layout of adamllm's own files: ShareGPT `messages` of `{role, content}` with roles
    /// `user` / `assistant` / `system`, and `images`.
    pub fn openai_sharegpt() -> Self {
        let s = |x: &str| x.to_owned();
        Self {
            formatting: Formatting::Sharegpt,
            columns: Columns {
                messages: s("messages"),
                ..Columns::default()
            },
            tags: Tags {
                role_tag: s("role"),
                content_tag: s("content"),
                user_tag: s("user"),
                assistant_tag: s("assistant"),
                system_tag: s("system"),
                ..Tags::default()
            },
        }
    }

    /// Reads one row into a conversation.
    pub fn conversation(&self, row: &Value) -> Result<Conversation, String> {
        let obj = row.as_object().ok_or("expected a JSON object")?;
        for (what, key) in [
            ("tools", &self.columns.tools),
            ("videos", &self.columns.videos),
            ("audios", &self.columns.audios),
        ] {
            if obj.get(key).is_some_and(|v| !is_empty(v)) {
                return Err(format!(
                    "`{key}` holds {what}, which adamllm does not train on"
                ));
            }
        }
        let mut messages = Vec::new();
        if let Some(system) = obj.get(&self.columns.system).and_then(Value::as_str)
            && !system.is_empty()
        {
            messages.push(message(Role::System, system));
        }
        match self.formatting {
            Formatting::Sharegpt => self.sharegpt_turns(obj, &mut messages)?,
            Formatting::Alpaca => self.alpaca_turns(obj, &mut messages)?,
        }
        Ok(Conversation {
            messages,
            images: images(obj.get(&self.columns.images), &self.columns.images)?,
        })
    }

    fn sharegpt_turns(
        &self,
        obj: &serde_json::Map<String, Value>,
        messages: &mut Vec<Message>,
    ) -> Result<(), String> {
        let key = &self.columns.messages;
        let turns = obj
            .get(key)
            .ok_or_else(|| format!("missing `{key}` (the dataset's `columns.messages`)"))?
            .as_array()
            .ok_or_else(|| format!("`{key}` must be a list"))?;
        let tags = &self.tags;
        for (i, turn) in turns.iter().enumerate() {
            let role = turn
                .get(&tags.role_tag)
                .and_then(Value::as_str)
                .ok_or_else(|| format!("`{key}[{i}].{}` is missing", tags.role_tag))?;
            let content = turn
                .get(&tags.content_tag)
                .and_then(Value::as_str)
                .ok_or_else(|| format!("`{key}[{i}].{}` must be a string", tags.content_tag))?;
            let role = if role == tags.user_tag {
                Role::User
            } else if role == tags.assistant_tag {
                Role::Assistant
            } else if role == tags.system_tag && i == 0 {
                Role::System
            } else if role == tags.observation_tag || role == tags.function_tag {
                return Err(format!(
                    "`{key}[{i}]` is a tool turn ({role:?}), which adamllm does not train on"
                ));
            } else {
                return Err(format!(
                    "`{key}[{i}].{}` is {role:?}, not the dataset's user ({:?}) or assistant ({:?}) tag",
                    tags.role_tag, tags.user_tag, tags.assistant_tag
                ));
            };
            messages.push(message(role, content));
        }
        Ok(())
    }

    fn alpaca_turns(
        &self,
        obj: &serde_json::Map<String, Value>,
        messages: &mut Vec<Message>,
    ) -> Result<(), String> {
        let text = |key: &str| obj.get(key).and_then(Value::as_str).unwrap_or("");
        let c = &self.columns;
        if let Some(history) = obj.get(&c.history).filter(|v| !is_empty(v)) {
            let pairs = history.as_array().ok_or_else(|| {
                format!(
                    "`{}` must be a list of [instruction, answer] pairs",
                    c.history
                )
            })?;
            for (i, pair) in pairs.iter().enumerate() {
                let pair: Vec<&str> = pair
                    .as_array()
                    .map(|p| p.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                let [user, assistant] = pair[..] else {
                    return Err(format!(
                        "`{}[{i}]` must be [instruction, answer]",
                        c.history
                    ));
                };
                messages.push(message(Role::User, user));
                messages.push(message(Role::Assistant, assistant));
            }
        }
        let (prompt, query) = (text(&c.prompt), text(&c.query));
        if prompt.is_empty() && query.is_empty() {
            return Err(format!("missing `{}` (the instruction)", c.prompt));
        }
        let user = if query.is_empty() {
            prompt.to_owned()
        } else if prompt.is_empty() {
            query.to_owned()
        } else {
            format!("{prompt}\n{query}")
        };
        messages.push(message(Role::User, &user));
        let response = obj
            .get(&c.response)
            .and_then(Value::as_str)
            .ok_or_else(|| format!("missing `{}` (the answer)", c.response))?;
        messages.push(message(Role::Assistant, response));
        Ok(())
    }
}

fn message(role: Role, content: &str) -> Message {
    Message {
        role,
        content: content.to_owned(),
    }
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

fn images(value: Option<&Value>, key: &str) -> Result<Vec<PathBuf>, String> {
    match value {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(vec![PathBuf::from(s)]),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .map(PathBuf::from)
                    .ok_or_else(|| format!("`{key}` entries must be paths"))
            })
            .collect(),
        Some(_) => Err(format!("`{key}` must be a list of paths")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sharegpt_with_tags_reads_as_the_native_layout() {
        let layout = DatasetLayout {
            formatting: Formatting::Sharegpt,
            columns: Columns {
                messages: "turns".into(),
                images: "pictures".into(),
                ..Columns::default()
            },
            tags: Tags {
                role_tag: "who".into(),
                content_tag: "text".into(),
                user_tag: "doctor".into(),
                assistant_tag: "model".into(),
                ..Tags::default()
            },
        };
        let row = json!({"turns": [{"who": "doctor", "text": "<image>What is shown?"},
            {"who": "model", "text": "A chest X-ray."}], "pictures": ["a.png"]});
        let native = json!({"messages": [{"role": "user", "content": "<image>What is shown?"},
            {"role": "assistant", "content": "A chest X-ray."}], "images": ["a.png"]});
        assert_eq!(
            layout.conversation(&row).unwrap(),
            Conversation::from_json(&native).unwrap()
        );
        assert_eq!(
            DatasetLayout::openai_sharegpt()
                .conversation(&native)
                .unwrap(),
            Conversation::from_json(&native).unwrap()
        );
        let bad = json!({"turns": [{"who": "nurse", "text": "x"}]});
        let e = layout.conversation(&bad).unwrap_err();
        assert!(e.contains("\"nurse\"") && e.contains("\"doctor\""), "{e}");
    }

    #[test]
    fn alpaca_joins_instruction_and_input_after_history() {
        let layout = DatasetLayout::default();
        let row = json!({"instruction": "Name the dish.", "input": "It is red.", "output": "Borscht",
            "history": [["Hi", "Hello"]], "system": "Be brief.", "images": "p.png"});
        let c = layout.conversation(&row).unwrap();
        let texts: Vec<(&str, &str)> = c
            .messages
            .iter()
            .map(|m| (m.role.as_str(), m.content.as_str()))
            .collect();
        assert_eq!(
            texts,
            vec![
                ("system", "Be brief."),
                ("user", "Hi"),
                ("assistant", "Hello"),
                ("user", "Name the dish.\nIt is red."),
                ("assistant", "Borscht")
            ]
        );
        assert_eq!(c.images, vec![PathBuf::from("p.png")]);
        let e = layout
            .conversation(&json!({"instruction": "x"}))
            .unwrap_err();
        assert!(e.contains("`output`"), "{e}");
    }

    #[test]
    fn unknown_names_list_the_registered_ones() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.json"), "[]").unwrap();
        std::fs::write(
            dir.path().join(DATASET_INFO_FILE),
            r#"{"biomed": {"file_name": "a.json", "formatting": "sharegpt"},
                "food": {"hf_hub_url": "AdaptLLM/food-visual-instructions"}}"#,
        )
        .unwrap();
        let e = find_datasets(dir.path(), &["medical".into()])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("\"medical\"") && e.contains("biomed, food"),
            "{e}"
        );
        let e = find_datasets(dir.path(), &["food".into()])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("file_name") && e.contains("huggingface-cli download"),
            "{e}"
        );
        let found = find_datasets(dir.path(), &["biomed".into()]).unwrap();
        assert_eq!(found[0].files, vec![dir.path().join("a.json")]);
        assert_eq!(found[0].layout.columns.messages, "conversations");
    }
}
