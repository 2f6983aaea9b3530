//! Chat templates: how a conversation becomes the model's text, and where each message sits in
//! that text (what training supervises follows from the rendered assistant turns).
//!
//! Four templates are built in, for the prompts the paper's models were trained and evaluated
//! with; any other model uses its folder's own Jinja template (`chat_template` in
//! `chat_template.json`, `chat_template.jinja` or `tokenizer_config.json`), rendered as
//! transformers' `apply_chat_template` renders it (Jinja2 with `trim_blocks`,
//! `lstrip_blocks`, loop controls, `raise_exception`, `strftime_now` and Python string
//! methods), through minijinja.

use std::ops::Range;
use std::sync::Arc;

use serde_json::{Value, json};

use crate::data::conversation::{Conversation, IMAGE_PLACEHOLDER, Role};

/// The system prompt Qwen2-VL's template inserts when a conversation has none.
pub const QWEN2VL_DEFAULT_SYSTEM: &str = "You are a helpful assistant.";
/// The system prompt of the authors' `llava_llama_3` conversation (their synthesizer and
/// LLaVA-NeXT models were trained and evaluated with it).
pub const LLAVA_LLAMA3_SYSTEM: &str = "You are a helpful language and vision assistant. You are able to understand the visual content that the user provides, and assist the user with a variety of tasks using natural language.";

/// Fuel (minijinja instructions) one rendering may spend: a template that loops without end
/// fails with a named error instead of hanging the run.
pub const TEMPLATE_FUEL: u64 = 20_000_000;

/// Where one rendered message sits: its role, the byte range of its content and the byte range
/// of the marker that closes it (empty for folder templates, whose content range already
/// includes it).
pub type MessageSpan = (Role, Range<usize>, Range<usize>);

/// A rendered conversation.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    /// The text, one image placeholder string per image.
    pub text: String,
    /// One span per message, in order.
    pub spans: Vec<MessageSpan>,
    /// Whether the tokenizer's own special tokens (a BOS) are added when it is tokenized.
    pub add_special_tokens: bool,
}

/// How turns are delimited in a template's text (to split what a synthesizer writes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TurnMarkers {
    /// Opens a turn, before the role name (`<|im_start|>`).
    pub start: &'static str,
    /// Ends the role header (`\n`).
    pub header_end: &'static str,
    /// Closes a turn (`<|im_end|>`).
    pub end: &'static str,
}

/// ChatML (Qwen2, Qwen2-VL).
pub const CHATML_MARKERS: TurnMarkers = TurnMarkers {
    start: "<|im_start|>",
    header_end: "\n",
    end: "<|im_end|>",
};
/// Llama 3 headers.
pub const LLAMA3_MARKERS: TurnMarkers = TurnMarkers {
    start: "<|start_header_id|>",
    header_end: "<|end_header_id|>\n\n",
    end: "<|eot_id|>",
};

/// Errors of rendering a conversation.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TemplateError {
    /// The Jinja template failed (syntax, `raise_exception`, fuel).
    #[error("chat template {source_name}{}: {message}", line_suffix(*.line))]
    Render {
        /// Where the template came from (`<folder>/tokenizer_config.json`).
        source_name: String,
        /// Line of the template, when minijinja knows it.
        line: Option<usize>,
        /// minijinja's message.
        message: String,
    },
    /// The template renders a shorter conversation as something other than a prefix of the
    /// longer one, so the assistant turns cannot be located.
    #[error(
        "chat template {source_name}: rendering the first {messages} message(s) is not a prefix of the whole conversation, so the assistant turns to train on cannot be located"
    )]
    NotPrefixStable {
        /// Where the template came from.
        source_name: String,
        /// Messages in the shorter rendering.
        messages: usize,
    },
    /// The template cannot open a turn of this role for the model to write.
    #[error("chat template {source_name} cannot open a {role} turn for the model to write")]
    CannotOpen {
        /// Where the template came from.
        source_name: String,
        /// The role asked for.
        role: &'static str,
    },
}

fn line_suffix(line: Option<usize>) -> String {
    line.map(|l| format!(", line {l}")).unwrap_or_default()
}

/// A folder's Jinja chat template, compiled once.
#[derive(Clone)]
pub struct JinjaTemplate {
    env: Arc<minijinja::Environment<'static>>,
    /// Where it came from, for messages.
    pub source_name: String,
    /// The template text.
    pub source: String,
    /// Special tokens the template may use (`bos_token`, `eos_token`, ...).
    pub special_tokens: Vec<(String, String)>,
}

impl std::fmt::Debug for JinjaTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JinjaTemplate")
            .field("source_name", &self.source_name)
            .finish_non_exhaustive()
    }
}

fn template_error(source_name: &str, e: &minijinja::Error) -> TemplateError {
    let mut message = e.kind().to_string();
    if let Some(detail) = e.detail() {
        message = format!("{message}: {detail}");
    }
    TemplateError::Render {
        source_name: source_name.to_string(),
        line: e.line(),
        message,
    }
}

impl JinjaTemplate {
    /// Compiles a template; `special_tokens` are passed to it as variables.
    pub fn new(
        source_name: impl Into<String>,
        source: impl Into<String>,
        special_tokens: Vec<(String, String)>,
    ) -> Result<Self, TemplateError> {
        let source_name = source_name.into();
        let source = source.into();
        let mut env = minijinja::Environment::new();
        // transformers: ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        let syntax = minijinja::syntax::SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build()
            .map_err(|e| template_error(&source_name, &e))?;
        env.set_syntax(syntax);
        env.set_fuel(Some(TEMPLATE_FUEL));
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        crate::limits::catch_parser_panic(|| {
            env.add_template_owned("chat_template", source.clone())
        })
        .map_err(|panic| TemplateError::Render {
            source_name: source_name.clone(),
            line: None,
            message: format!("the template cannot be parsed: {panic}"),
        })?
        .map_err(|e| template_error(&source_name, &e))?;
        Ok(Self {
            env: Arc::new(env),
            source_name,
            source,
            special_tokens,
        })
    }

    /// Renders messages (transformers' `apply_chat_template(..., tokenize=False)`).
    pub fn render_messages(
        &self,
        messages: &[Value],
        add_generation_prompt: bool,
    ) -> Result<String, TemplateError> {
        let template = self
            .env
            .get_template("chat_template")
            .map_err(|e| template_error(&self.source_name, &e))?;
        let mut context = serde_json::Map::new();
        for (name, value) in &self.special_tokens {
            context.insert(name.clone(), json!(value));
        }
        context.insert("messages".into(), Value::Array(messages.to_vec()));
        context.insert("add_generation_prompt".into(), json!(add_generation_prompt));
        template
            .render(minijinja::value::Value::from(minijinja::value::Serde(
                &context,
            )))
            .map_err(|e| template_error(&self.source_name, &e))
    }

    /// The turn markers the template writes (ChatML or Llama 3), if recognisable.
    pub fn markers(&self) -> Option<TurnMarkers> {
        if self.source.contains(LLAMA3_MARKERS.start) {
            Some(LLAMA3_MARKERS)
        } else if self.source.contains(CHATML_MARKERS.start) {
            Some(CHATML_MARKERS)
        } else {
            None
        }
    }
}

/// `raise_exception(message)` of transformers' template environment.
fn raise_exception(message: String) -> Result<String, minijinja::Error> {
    Err(minijinja::Error::new(
        minijinja::ErrorKind::InvalidOperation,
        format!("the template raised: {message}"),
    ))
}

/// `strftime_now(format)` of transformers' template environment (UTC; `%d %b %Y %B %m %y
/// %H %M %S %%`).
fn strftime_now(format: String) -> String {
    let secs = web_time::SystemTime::now()
        .duration_since(web_time::SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format_utc(secs, &format)
}

/// Formats seconds since the Unix epoch (UTC) with a small strftime subset.
pub fn format_utc(secs: u64, format: &str) -> String {
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let name = MONTHS[(month - 1) as usize];
    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('d') => out.push_str(&format!("{day:02}")),
            Some('m') => out.push_str(&format!("{month:02}")),
            Some('Y') => out.push_str(&year.to_string()),
            Some('y') => out.push_str(&format!("{:02}", year % 100)),
            Some('b') => out.push_str(&name[..3]),
            Some('B') => out.push_str(name),
            Some('H') => out.push_str(&format!("{:02}", rem / 3600)),
            Some('M') => out.push_str(&format!("{:02}", rem / 60 % 60)),
            Some('S') => out.push_str(&format!("{:02}", rem % 60)),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

/// A chat template.
#[derive(Debug, Clone)]
pub enum ChatTemplate {
    /// Qwen2-VL's template: ChatML, `You are a helpful assistant.` when there is no system
    /// message, images as `<|vision_start|><|image_pad|><|vision_end|>`.
    Qwen2Vl,
    /// ChatML without a default system message.
    ChatMl,
    /// Llama 3 Instruct turns (`<|begin_of_text|>` then `<|start_header_id|>role
    /// <|end_header_id|>\n\n content <|eot_id|>`), no default system message — LLaMA-Factory's
    /// `llama3`.
    Llama3,
    /// The authors' `llava_llama_3` conversation: their system prompt, Llama 3 turns, the
    /// tokenizer's BOS added before the literal one (the double BOS they train and evaluate
    /// with).
    LlavaLlama3,
    /// A folder's Jinja template.
    Jinja(JinjaTemplate),
}

/// The names `--template` and a recipe's `template:` accept (LLaMA-Factory's where one
/// exists), with what each is.
pub const TEMPLATE_NAMES: [(&str, &str); 6] = [
    (
        "qwen2_vl",
        "Qwen2-VL's ChatML with its default system prompt",
    ),
    ("chatml", "ChatML without a default system prompt"),
    ("llama3", "Llama 3 Instruct turns (LLaMA-Factory llama3)"),
    ("llava_next_llama3", "the same as llama3"),
    (
        "llava_llama_3",
        "the AdaMLLM authors' LLaVA-NeXT-Llama3 conversation (their system prompt, double BOS)",
    ),
    ("folder", "the model folder's own Jinja chat template"),
];

impl ChatTemplate {
    /// The built-in template called `name` (`folder` is resolved by the caller).
    pub fn builtin(name: &str) -> Option<Self> {
        match name {
            "qwen2_vl" => Some(Self::Qwen2Vl),
            "chatml" => Some(Self::ChatMl),
            "llama3" | "llava_next_llama3" => Some(Self::Llama3),
            "llava_llama_3" => Some(Self::LlavaLlama3),
            _ => None,
        }
    }

    /// The template's name as `--template` spells it (`folder` for a Jinja template).
    pub fn name(&self) -> &'static str {
        match self {
            Self::Qwen2Vl => "qwen2_vl",
            Self::ChatMl => "chatml",
            Self::Llama3 => "llama3",
            Self::LlavaLlama3 => "llava_llama_3",
            Self::Jinja(_) => "folder",
        }
    }

    /// How its turns are delimited, if known.
    pub fn markers(&self) -> Option<TurnMarkers> {
        match self {
            Self::Qwen2Vl | Self::ChatMl => Some(CHATML_MARKERS),
            Self::Llama3 | Self::LlavaLlama3 => Some(LLAMA3_MARKERS),
            Self::Jinja(j) => j.markers(),
        }
    }

    /// Renders `conversation` with each `<image>` as `image_text`, then opens a turn of `open`
    /// (`Some(Assistant)` is the usual generation prompt; the synthesizer is prompted with an
    /// open user turn so that it writes its own question).
    pub fn render(
        &self,
        conversation: &Conversation,
        image_text: &str,
        open: Option<Role>,
    ) -> Result<Rendered, TemplateError> {
        match self {
            Self::Qwen2Vl => Ok(render_chatml(
                conversation,
                image_text,
                open,
                Some(QWEN2VL_DEFAULT_SYSTEM),
            )),
            Self::ChatMl => Ok(render_chatml(conversation, image_text, open, None)),
            Self::Llama3 => Ok(render_llama3(conversation, image_text, open, None)),
            Self::LlavaLlama3 => Ok(render_llama3(
                conversation,
                image_text,
                open,
                Some(LLAVA_LLAMA3_SYSTEM),
            )),
            Self::Jinja(j) => render_jinja(j, conversation, open),
        }
    }
}

fn render_chatml(
    conversation: &Conversation,
    image_text: &str,
    open: Option<Role>,
    default_system: Option<&str>,
) -> Rendered {
    let mut text = String::new();
    let mut spans = Vec::new();
    if let Some(system) = default_system
        && conversation.messages.first().map(|m| m.role) != Some(Role::System)
    {
        text.push_str("<|im_start|>system\n");
        text.push_str(system);
        text.push_str("<|im_end|>\n");
    }
    for message in &conversation.messages {
        text.push_str("<|im_start|>");
        text.push_str(message.role.as_str());
        text.push('\n');
        let start = text.len();
        text.push_str(&message.content.replace(IMAGE_PLACEHOLDER, image_text));
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
    Rendered {
        text,
        spans,
        add_special_tokens: false,
    }
}

/// Llama 3 turns; with `system` (the authors' `llava_llama_3`), that system turn unless the
/// conversation brings its own, and the tokenizer's BOS added in front.
fn render_llama3(
    conversation: &Conversation,
    image_text: &str,
    open: Option<Role>,
    system: Option<&str>,
) -> Rendered {
    let mut text = String::from("<|begin_of_text|>");
    let mut spans = Vec::new();
    let header = |text: &mut String, role: &str| {
        text.push_str("<|start_header_id|>");
        text.push_str(role);
        text.push_str("<|end_header_id|>\n\n");
    };
    if let Some(system) = system
        && conversation.messages.first().map(|m| m.role) != Some(Role::System)
    {
        header(&mut text, "system");
        text.push_str(system);
        text.push_str("<|eot_id|>");
    }
    for message in &conversation.messages {
        header(&mut text, message.role.as_str());
        let start = text.len();
        text.push_str(&message.content.replace(IMAGE_PLACEHOLDER, image_text));
        let end = text.len();
        text.push_str("<|eot_id|>");
        spans.push((message.role, start..end, end..text.len()));
    }
    if let Some(role) = open {
        header(&mut text, role.as_str());
    }
    Rendered {
        text,
        spans,
        add_special_tokens: system.is_some(),
    }
}

/// A conversation's messages as transformers' templates read them: a message holding
/// `<image>` placeholders becomes a list of `{"type": "image"}` / `{"type": "text"}` items,
/// any other keeps its string content.
pub fn template_messages(conversation: &Conversation) -> Vec<Value> {
    conversation
        .messages
        .iter()
        .map(|m| {
            let content = if m.content.contains(IMAGE_PLACEHOLDER) {
                let mut items = Vec::new();
                for (i, piece) in m.content.split(IMAGE_PLACEHOLDER).enumerate() {
                    if i > 0 {
                        items.push(json!({"type": "image"}));
                    }
                    if !piece.is_empty() {
                        items.push(json!({"type": "text", "text": piece}));
                    }
                }
                Value::Array(items)
            } else {
                json!(m.content)
            };
            json!({"role": m.role.as_str(), "content": content})
        })
        .collect()
}

/// Renders with a folder template; each assistant turn's span runs from the end of the
/// rendering of the messages before it (with the generation prompt) to the end of the
/// rendering that includes it, trailing whitespace left out.
fn render_jinja(
    template: &JinjaTemplate,
    conversation: &Conversation,
    open: Option<Role>,
) -> Result<Rendered, TemplateError> {
    let messages = template_messages(conversation);
    let mut text = template.render_messages(&messages, open == Some(Role::Assistant))?;
    if open == Some(Role::User) {
        let markers = template
            .markers()
            .ok_or_else(|| TemplateError::CannotOpen {
                source_name: template.source_name.clone(),
                role: "user",
            })?;
        text.push_str(markers.start);
        text.push_str("user");
        text.push_str(markers.header_end);
    } else if let Some(role @ Role::System) = open {
        return Err(TemplateError::CannotOpen {
            source_name: template.source_name.clone(),
            role: role.as_str(),
        });
    }
    let mut spans = Vec::with_capacity(messages.len());
    let mut previous_end = 0;
    for (k, message) in conversation.messages.iter().enumerate() {
        let prefix = |rendered: &str| -> Result<usize, TemplateError> {
            if text.starts_with(rendered) {
                Ok(rendered.len())
            } else {
                Err(TemplateError::NotPrefixStable {
                    source_name: template.source_name.clone(),
                    messages: k + 1,
                })
            }
        };
        let end = prefix(template.render_messages(&messages[..=k], false)?.trim_end())?;
        let start = if message.role == Role::Assistant {
            prefix(&template.render_messages(&messages[..k], true)?)?
        } else {
            previous_end
        };
        spans.push((message.role, start..end.max(start), end..end));
        previous_end = end;
    }
    Ok(Rendered {
        text,
        spans,
        add_special_tokens: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::conversation::Message;

    fn conversation() -> Conversation {
        Conversation {
            messages: vec![
                Message {
                    role: Role::User,
                    content: "<image>\nWhat is it?".into(),
                },
                Message {
                    role: Role::Assistant,
                    content: "A cat.".into(),
                },
            ],
            images: vec!["a.png".into()],
        }
    }

    const LLAMA3_INSTRUCT: &str = "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}";

    #[test]
    fn llava_llama3_is_the_authors_prompt() {
        let r = ChatTemplate::LlavaLlama3
            .render(&conversation(), "<|reserved_special_token_4|>", None)
            .unwrap();
        assert_eq!(
            r.text,
            format!(
                "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n{LLAVA_LLAMA3_SYSTEM}<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n<|reserved_special_token_4|>\nWhat is it?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nA cat.<|eot_id|>"
            )
        );
        assert!(r.add_special_tokens);
        let (_, content, end) = &r.spans[1];
        assert_eq!(&r.text[content.clone()], "A cat.");
        assert_eq!(&r.text[end.clone()], "<|eot_id|>");
    }

    #[test]
    fn jinja_spans_cover_assistant_content_and_its_end() {
        let t = JinjaTemplate::new(
            "test",
            LLAMA3_INSTRUCT,
            vec![("bos_token".into(), "<|begin_of_text|>".into())],
        )
        .unwrap();
        let mut conv = conversation();
        conv.messages[0].content = "What is it?".into();
        let r = ChatTemplate::Jinja(t.clone())
            .render(&conv, "", None)
            .unwrap();
        assert_eq!(
            r.text,
            "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nWhat is it?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nA cat.<|eot_id|>"
        );
        let (role, content, _) = &r.spans[1];
        assert_eq!(*role, Role::Assistant);
        assert_eq!(&r.text[content.clone()], "A cat.<|eot_id|>");
        let open = ChatTemplate::Jinja(t.clone())
            .render(&conv, "", Some(Role::User))
            .unwrap();
        assert!(
            open.text
                .ends_with("<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n")
        );
        assert_eq!(t.markers(), Some(LLAMA3_MARKERS));
    }

    #[test]
    fn template_errors_name_the_line() {
        let t = JinjaTemplate::new(
            "dir/tokenizer_config.json",
            "{% for m in messages %}\n{{ raise_exception('no system role') }}\n{% endfor %}",
            Vec::new(),
        )
        .unwrap();
        let err = ChatTemplate::Jinja(t)
            .render(&conversation(), "", None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("dir/tokenizer_config.json")
                && err.contains("line 2")
                && err.contains("no system role"),
            "{err}"
        );
        let bad = JinjaTemplate::new("x", "{% for %}", Vec::new()).unwrap_err();
        assert!(bad.to_string().contains("line 1"), "{bad}");
    }

    #[test]
    fn a_looping_template_runs_out_of_fuel() {
        let t = JinjaTemplate::new(
            "loop",
            "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
            Vec::new(),
        )
        .unwrap();
        let err = t.render_messages(&[], false).unwrap_err().to_string();
        assert!(err.contains("loop") && err.contains("fuel"), "{err}");
    }

    #[test]
    fn utc_dates_format_like_strftime() {
        // 2024-07-26 12:34:56 UTC.
        assert_eq!(format_utc(1_721_997_296, "%d %b %Y"), "26 Jul 2024");
        assert_eq!(
            format_utc(1_721_997_296, "%Y-%m-%d %H:%M:%S %%"),
            "2024-07-26 12:34:56 %"
        );
    }
}
