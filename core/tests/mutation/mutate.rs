//! Mutations of a file's bytes, aware of the file's format: numbers and strings of JSON and
//! YAML replaced by boundary values, lines dropped and repeated, deep nesting, bit flips,
//! truncation, and safetensors headers edited as JSON with the length prefix kept right.

use rand::RngExt;
use rand_chacha::ChaCha8Rng;

/// How a file is mutated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// JSON text (configs, tokenizer files, state files, dataset_info.json).
    Json,
    /// One JSON value a line.
    Jsonl,
    /// YAML (recipes, task files, pipeline configs).
    Yaml,
    /// Other text (Jinja templates).
    Text,
    /// A safetensors file: its JSON header and the length prefix.
    Safetensors,
    /// Binary files (images, Arrow, parquet): byte-level only.
    Binary,
}

/// Values a number is replaced by: zero, negatives, the integer boundaries of every width,
/// huge floats, and values of other JSON types.
const NUMBERS: &[&str] = &[
    "0",
    "-1",
    "1",
    "2",
    "3",
    "7",
    "255",
    "256",
    "65535",
    "65536",
    "2147483647",
    "2147483648",
    "4294967295",
    "4294967296",
    "1000000000000",
    "9223372036854775807",
    "18446744073709551615",
    "18446744073709551616",
    "1e308",
    "-1e308",
    "1e400",
    "0.5",
    "-0.0",
    "1e-300",
    "null",
    "true",
    "\"7\"",
    "[]",
    "{}",
    "[0, 0]",
];

/// Values a string's content is replaced by.
const STRINGS: &[&str] = &[
    "",
    " ",
    "x",
    "<image>",
    "<image><image><image><image>",
    "<|im_start|>",
    "<|image_pad|>",
    "{{",
    "{% for m in messages %}",
    "../../../../../../etc/passwd",
    "/",
    "\\\\",
    "\\u0000",
    "\\ud800",
    "😀",
    "a\\nb",
    "%s%s%s",
    "NaN",
    "-1",
    "1e400",
];

/// One mutation of `bytes` in `format`; returns the new bytes and what was done.
pub fn mutate(bytes: &[u8], format: Format, rng: &mut ChaCha8Rng) -> (Vec<u8>, String) {
    let text_ops = matches!(
        format,
        Format::Json | Format::Jsonl | Format::Yaml | Format::Text
    );
    if format == Format::Safetensors
        && rng.random_bool(0.7)
        && let Some(done) = mutate_safetensors_header(bytes, rng)
    {
        return done;
    }
    if text_ops && rng.random_bool(0.75) {
        let text = String::from_utf8_lossy(bytes).into_owned();
        if let Some((text, what)) = mutate_text(&text, format, rng) {
            return (text.into_bytes(), what);
        }
    }
    mutate_bytes(bytes, rng)
}

/// One mutation (most cases, so that a file often stays well-formed and reaches the reader's
/// deeper checks) or two or three in a row.
pub fn mutate_stacked(bytes: &[u8], format: Format, rng: &mut ChaCha8Rng) -> (Vec<u8>, String) {
    let rounds = match rng.random_range(0..20) {
        0..=11 => 1,
        12..=16 => 2,
        _ => 3,
    };
    let mut out = bytes.to_vec();
    let mut what = Vec::new();
    for _ in 0..rounds {
        let (next, done) = mutate(&out, format, rng);
        out = next;
        what.push(done);
    }
    (out, what.join("; "))
}

fn mutate_text(text: &str, format: Format, rng: &mut ChaCha8Rng) -> Option<(String, String)> {
    match rng.random_range(0..9) {
        0..=2 if format != Format::Text => replace_number(text, rng),
        3 | 4 => replace_string(text, format, rng),
        5 => edit_lines(text, rng),
        6 => Some(nest_deeply(text, format, rng)),
        7 => drop_span(text, rng),
        _ => replace_number(text, rng).or_else(|| replace_string(text, format, rng)),
    }
}

/// Byte ranges of the number literals of a text (a run of digits with sign, dot, exponent).
fn number_spans(text: &str) -> Vec<(usize, usize)> {
    let b = text.as_bytes();
    let mut spans = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let starts =
            b[i].is_ascii_digit() || (b[i] == b'-' && b.get(i + 1).is_some_and(u8::is_ascii_digit));
        let after_word = i > 0 && (b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_');
        if starts && !after_word {
            let mut j = i + 1;
            while j < b.len()
                && (b[j].is_ascii_digit() || matches!(b[j], b'.' | b'e' | b'E' | b'+' | b'-'))
            {
                j += 1;
            }
            spans.push((i, j));
            i = j;
        } else {
            i += 1;
        }
    }
    spans
}

fn replace_number(text: &str, rng: &mut ChaCha8Rng) -> Option<(String, String)> {
    let spans = number_spans(text);
    if spans.is_empty() {
        return None;
    }
    let (a, b) = spans[rng.random_range(0..spans.len())];
    let value = NUMBERS[rng.random_range(0..NUMBERS.len())];
    let what = format!("number {:?} at byte {a} -> {value}", &text[a..b]);
    Some((format!("{}{value}{}", &text[..a], &text[b..]), what))
}

/// Byte ranges of the contents of double-quoted strings (JSON; quoted YAML), or for YAML the
/// plain scalar after `key: `.
fn string_spans(text: &str, format: Format) -> Vec<(usize, usize)> {
    let b = text.as_bytes();
    let mut spans = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'"' {
            let mut j = i + 1;
            while j < b.len() && b[j] != b'"' {
                j += if b[j] == b'\\' { 2 } else { 1 };
            }
            if j < b.len() {
                spans.push((i + 1, j));
            }
            i = j + 1;
        } else {
            i += 1;
        }
    }
    if format == Format::Yaml {
        let mut offset = 0;
        for line in text.split_inclusive('\n') {
            if let Some(colon) = line.find(": ") {
                let value = &line[colon + 2..];
                let end = value.trim_end().len();
                if end > 0 && !value.starts_with('"') {
                    spans.push((offset + colon + 2, offset + colon + 2 + end));
                }
            }
            offset += line.len();
        }
    }
    spans.retain(|&(a, b)| text.is_char_boundary(a) && text.is_char_boundary(b));
    spans
}

fn replace_string(text: &str, format: Format, rng: &mut ChaCha8Rng) -> Option<(String, String)> {
    if format == Format::Text {
        return replace_jinja(text, rng);
    }
    let spans = string_spans(text, format);
    if spans.is_empty() {
        return None;
    }
    let (a, b) = spans[rng.random_range(0..spans.len())];
    let value = if rng.random_bool(0.1) {
        "y".repeat(rng.random_range(1000..200_000))
    } else {
        STRINGS[rng.random_range(0..STRINGS.len())].to_string()
    };
    let what = format!(
        "string {:?} at byte {a} -> {:?}",
        truncate(&text[a..b]),
        truncate(&value)
    );
    Some((format!("{}{value}{}", &text[..a], &text[b..]), what))
}

/// Jinja-aware edits: a tag or expression dropped, repeated or spliced elsewhere.
fn replace_jinja(text: &str, rng: &mut ChaCha8Rng) -> Option<(String, String)> {
    let mut tags = Vec::new();
    for (open, close) in [("{%", "%}"), ("{{", "}}")] {
        let mut from = 0;
        while let Some(a) = text[from..].find(open) {
            let a = from + a;
            let Some(len) = text[a..].find(close) else {
                break;
            };
            tags.push((a, a + len + 2));
            from = a + len + 2;
        }
    }
    if tags.is_empty() {
        return None;
    }
    let (a, b) = tags[rng.random_range(0..tags.len())];
    let tag = &text[a..b];
    let snippets = [
        "",
        "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}",
        "{{ raise_exception('boom') }}",
        "{{ messages[1000].content }}",
        "{{ messages | length / 0 }}",
        "{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}",
        "{{ 'x' * 10000000000 }}",
        "{% if %}",
        "{{ strftime_now('%Y' * 1000) }}",
    ];
    let (new, what) = match rng.random_range(0..3) {
        0 => (String::new(), "dropped"),
        1 => (tag.repeat(rng.random_range(2..50)), "repeated"),
        _ => {
            let s = snippets[rng.random_range(0..snippets.len())];
            (s.to_string(), "replaced")
        }
    };
    let out = format!("{}{new}{}", &text[..a], &text[b..]);
    Some((out, format!("jinja tag {:?} {what}", truncate(tag))))
}

fn edit_lines(text: &str, rng: &mut ChaCha8Rng) -> Option<(String, String)> {
    let mut lines: Vec<&str> = text.split_inclusive('\n').collect();
    if lines.is_empty() {
        return None;
    }
    let i = rng.random_range(0..lines.len());
    let what = match rng.random_range(0..3) {
        0 => {
            lines.remove(i);
            format!("line {} dropped", i + 1)
        }
        1 => {
            let n = rng.random_range(2..200);
            let line = lines[i];
            for _ in 1..n {
                lines.insert(i, line);
            }
            format!("line {} repeated {n} times", i + 1)
        }
        _ => {
            let j = rng.random_range(0..lines.len());
            lines.swap(i, j);
            format!("lines {} and {} swapped", i + 1, j + 1)
        }
    };
    Some((lines.concat(), what))
}

fn nest_deeply(text: &str, format: Format, rng: &mut ChaCha8Rng) -> (String, String) {
    let depth = rng.random_range(100..20_000);
    let (open, close) = match (format, rng.random_bool(0.5)) {
        (Format::Text, _) => ("{% if true %}", "{% endif %}"),
        (_, true) => ("[", "]"),
        (_, false) => ("{\"a\": ", "}"),
    };
    let at = char_boundary(text, rng.random_range(0..=text.len()));
    let nested = format!("{}1{}", open.repeat(depth), close.repeat(depth));
    (
        format!("{}{nested}{}", &text[..at], &text[at..]),
        format!("{depth} levels of {open:?} at byte {at}"),
    )
}

fn drop_span(text: &str, rng: &mut ChaCha8Rng) -> Option<(String, String)> {
    if text.is_empty() {
        return None;
    }
    let a = char_boundary(text, rng.random_range(0..text.len()));
    let b = char_boundary(text, (a + rng.random_range(1..64)).min(text.len()));
    Some((
        format!("{}{}", &text[..a], &text[b..]),
        format!("bytes {a}..{b} dropped"),
    ))
}

fn char_boundary(text: &str, mut at: usize) -> usize {
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

/// Byte-level mutations for any file.
pub fn mutate_bytes(bytes: &[u8], rng: &mut ChaCha8Rng) -> (Vec<u8>, String) {
    let mut out = bytes.to_vec();
    if out.is_empty() {
        return (vec![rng.random()], "one random byte".into());
    }
    let what = match rng.random_range(0..5) {
        0 => {
            let flips = rng.random_range(1..=16);
            for _ in 0..flips {
                let i = rng.random_range(0..out.len());
                out[i] ^= 1 << rng.random_range(0..8);
            }
            format!("{flips} bits flipped")
        }
        1 => {
            let at = rng.random_range(0..out.len());
            out.truncate(at);
            format!("truncated to {at} bytes")
        }
        2 => {
            let values: [u64; 8] = [
                0,
                1,
                u64::MAX,
                u64::MAX / 2,
                1 << 32,
                1 << 40,
                0xffff_ffff,
                1 << 62,
            ];
            let v = values[rng.random_range(0..values.len())];
            let at = rng.random_range(0..out.len());
            let width = if rng.random_bool(0.5) { 4 } else { 8 };
            for (k, byte) in v.to_le_bytes().iter().take(width).enumerate() {
                if let Some(slot) = out.get_mut(at + k) {
                    *slot = *byte;
                }
            }
            format!("{width} bytes at {at} set to {v:#x}")
        }
        3 => {
            let at = rng.random_range(0..=out.len());
            let n = rng.random_range(1..256);
            let noise: Vec<u8> = (0..n).map(|_| rng.random()).collect();
            out.splice(at..at, noise);
            format!("{n} random bytes inserted at {at}")
        }
        _ => {
            let a = rng.random_range(0..out.len());
            let b = (a + rng.random_range(1..4096)).min(out.len());
            let chunk = out[a..b].to_vec();
            let at = rng.random_range(0..=out.len());
            out.splice(at..at, chunk);
            format!("bytes {a}..{b} copied to {at}")
        }
    };
    (out, what)
}

/// Edits the JSON header of a safetensors file as text and writes the new length prefix (or,
/// now and then, keeps the old one or writes a wrong one).
fn mutate_safetensors_header(bytes: &[u8], rng: &mut ChaCha8Rng) -> Option<(Vec<u8>, String)> {
    let len = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?) as usize;
    let end = len.checked_add(8)?;
    let header = std::str::from_utf8(bytes.get(8..end)?).ok()?;
    let (new_header, what) = if rng.random_bool(0.6) {
        replace_number(header, rng)?
    } else {
        replace_string(header, Format::Json, rng).or_else(|| edit_lines(header, rng))?
    };
    let prefix = match rng.random_range(0..10) {
        0 => len as u64,
        1 => u64::MAX,
        _ => new_header.len() as u64,
    };
    let mut out = prefix.to_le_bytes().to_vec();
    out.extend_from_slice(new_header.as_bytes());
    out.extend_from_slice(&bytes[end..]);
    Some((out, format!("header: {what}; length prefix {prefix}")))
}

fn truncate(s: &str) -> String {
    if s.len() <= 40 {
        s.to_string()
    } else {
        format!("{}…({} bytes)", &s[..char_boundary(s, 40)], s.len())
    }
}

/// A rng for case `case` of reader `reader`: the same case always gets the same mutation.
pub fn case_rng(reader: &str, case: u64) -> ChaCha8Rng {
    use rand::SeedableRng;
    let mut seed = 0xcbf2_9ce4_8422_2325_u64;
    for b in reader.bytes() {
        seed = (seed ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    ChaCha8Rng::seed_from_u64(seed ^ case.wrapping_mul(0x9e37_79b9_7f4a_7c15))
}
