//! `adamllm synth seed`: the synthesizer's tuning set, built from general seed data.
//!
//! Three ShareGPT files describe the same images: captions, question–answer pairs with short
//! ("precise") answers, and question–answer pairs with reasoned ("informative") answers.
//! Images are matched by their path as written. Per image with a caption and both kinds of
//! pairs, one conversation:
//!
//! 1. `<image>\nDescribe the image.` → the caption (masked when training with
//!    `mask_mode: synthesizer`);
//! 2. every pair as a further round, its question opened by the hint line
//!    ([`PRECISE_HINT`] or [`INFORMATIVE_HINT`]), the two kinds pooled and shuffled per
//!    image.
//!
//! A share of the images (10% by default) is replaced by a blank white image so the
//! synthesizer learns to lean on the caption; the draws and the shuffles use CPython's
//! `Random` seeded from the image's index and the user seed. The conversations are then
//! split into train and dev sets (a seeded shuffle, then the first 90% for training).
//!
//! Output folder: `synthesizer_train.json`, `synthesizer_dev.json` (image paths absolute,
//! the blank image as `blank.png` beside them, so `adamllm train --data` needs no
//! `--images`), `blank.png`, `skipped.jsonl` and `seed_summary.json`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::{Value, json};

use super::SynthError;
use super::pairs::SkippedRow;
use super::synthesize::{CAPTION_INSTRUCTION, SKIPPED_FILE};
use super::templates::task_seed;
use super::triplets::{INFORMATIVE_HINT, PRECISE_HINT};
use crate::data::conversation::{
    Conversation, DatasetRow, IMAGE_PLACEHOLDER, Role, read_conversations,
};
use crate::eval::PythonRandom;
use crate::io::{FileError, write_atomic, write_json_atomic, write_jsonl_atomic};

/// Training split of the tuning set.
pub const SEED_TRAIN_FILE: &str = "synthesizer_train.json";
/// Dev split of the tuning set.
pub const SEED_DEV_FILE: &str = "synthesizer_dev.json";
/// The blank image.
pub const BLANK_IMAGE_FILE: &str = "blank.png";
/// Side of the blank image in pixels.
pub const BLANK_IMAGE_SIDE: u32 = 224;

/// Settings of `synth seed`.
#[derive(Debug, Clone, PartialEq)]
pub struct SeedOptions {
    /// Percentage of images replaced by the blank image.
    pub blank_percent: f64,
    /// Share of conversations in the dev split.
    pub dev_fraction: f64,
    /// User seed (0 reproduces the default draws).
    pub seed: u64,
}

impl Default for SeedOptions {
    fn default() -> Self {
        Self {
            blank_percent: 10.0,
            dev_fraction: 0.1,
            seed: 0,
        }
    }
}

/// The input files of `synth seed`.
#[derive(Debug, Clone)]
pub struct SeedInputs {
    /// ShareGPT rows: image + caption.
    pub captions: PathBuf,
    /// ShareGPT rows: image + question/short-answer rounds.
    pub precise: PathBuf,
    /// ShareGPT rows: image + question/reasoned-answer rounds.
    pub informative: PathBuf,
    /// Folder the image paths are relative to.
    pub images: PathBuf,
}

/// Counts of a `synth seed` run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SeedSummary {
    /// Conversations in the train split.
    pub train: usize,
    /// Conversations in the dev split.
    pub dev: usize,
    /// Conversations whose image is the blank image.
    pub blank_images: usize,
    /// Question–answer rounds written (both splits).
    pub rounds: usize,
    /// Images or rows left out (see `skipped.jsonl`).
    pub skipped: usize,
}

/// Question–answer rounds of a row: (question without `<image>`, answer) for every user turn
/// followed by an assistant turn.
pub fn qa_rounds(conversation: &Conversation) -> Vec<(String, String)> {
    conversation
        .messages
        .windows(2)
        .filter(|w| w[0].role == Role::User && w[1].role == Role::Assistant)
        .map(|w| {
            (
                w[0].content
                    .replace(IMAGE_PLACEHOLDER, "")
                    .trim()
                    .to_string(),
                w[1].content.trim().to_string(),
            )
        })
        .filter(|(q, a)| !q.is_empty() && !a.is_empty())
        .collect()
}

/// The image key of a row (its single image path as written).
fn image_key(row: &DatasetRow) -> Option<PathBuf> {
    match row.conversation.images.as_slice() {
        [one] => Some(one.clone()),
        _ => None,
    }
}

/// Builds the tuning set and writes the output folder.
pub fn build_seed_set(
    inputs: &SeedInputs,
    out_dir: &Path,
    options: &SeedOptions,
) -> Result<SeedSummary, SynthError> {
    if !(0.0..=100.0).contains(&options.blank_percent) {
        return Err(SynthError::Invalid(format!(
            "--blank-percent must be within 0..100, got {}",
            options.blank_percent
        )));
    }
    if !(0.0..1.0).contains(&options.dev_fraction) {
        return Err(SynthError::Invalid(format!(
            "--dev-fraction must be within 0..1, got {}",
            options.dev_fraction
        )));
    }
    let mut skipped = Vec::new();
    let mut skip = |path: &Path, row: &DatasetRow, reason: &str| {
        skipped.push(SkippedRow {
            syn_id: skipped.len(),
            file: path.display().to_string(),
            location: row.location.clone(),
            reason: reason.to_string(),
        });
    };
    // Captions by image (the first caption of an image wins).
    let mut captions: BTreeMap<PathBuf, String> = BTreeMap::new();
    for row in read_conversations(&inputs.captions)? {
        let caption = row
            .conversation
            .messages
            .iter()
            .find(|m| m.role == Role::Assistant)
            .map(|m| m.content.trim().to_string())
            .unwrap_or_default();
        match image_key(&row) {
            _ if caption.is_empty() => skip(&inputs.captions, &row, "no caption (assistant turn)"),
            None => skip(
                &inputs.captions,
                &row,
                "a caption row needs exactly one image",
            ),
            Some(image) => {
                captions.entry(image).or_insert(caption);
            }
        }
    }
    let mut rounds_of =
        |path: &Path, hint: &str| -> Result<BTreeMap<PathBuf, Vec<(String, String)>>, FileError> {
            let mut by_image: BTreeMap<PathBuf, Vec<(String, String)>> = BTreeMap::new();
            for row in read_conversations(path)? {
                let rounds = qa_rounds(&row.conversation);
                match image_key(&row) {
                    _ if rounds.is_empty() => skip(path, &row, "no question-answer round"),
                    None => skip(path, &row, "a question-answer row needs exactly one image"),
                    Some(image) => by_image
                        .entry(image)
                        .or_default()
                        .extend(rounds.into_iter().map(|(q, a)| (format!("{hint}\n{q}"), a))),
                }
            }
            Ok(by_image)
        };
    let precise = rounds_of(&inputs.precise, PRECISE_HINT)?;
    let informative = rounds_of(&inputs.informative, INFORMATIVE_HINT)?;

    let mut conversations = Vec::new();
    let mut blank_images = 0;
    let mut rounds_written = 0;
    let mut missing = Vec::new();
    for (index, (image, caption)) in captions.iter().enumerate() {
        let (Some(p), Some(i)) = (precise.get(image), informative.get(image)) else {
            missing.push((
                image.clone(),
                "the image lacks precise or informative pairs",
            ));
            continue;
        };
        let resolved = inputs.images.join(image);
        if !resolved.is_file() {
            missing.push((image.clone(), "image file not found"));
            continue;
        }
        let mut rounds: Vec<(String, String)> = p.iter().chain(i).cloned().collect();
        PythonRandom::from_int_seed(task_seed(index, options.seed)).shuffle(&mut rounds);
        rounds_written += rounds.len();
        let blank = PythonRandom::from_int_seed(task_seed(index, options.seed) + (1i128 << 100))
            .chance_percent(options.blank_percent);
        let image_field = if blank {
            blank_images += 1;
            BLANK_IMAGE_FILE.to_string()
        } else {
            std::fs::canonicalize(&resolved)
                .unwrap_or(resolved)
                .display()
                .to_string()
        };
        let mut messages = vec![
            json!({"role": "user", "content": format!("{IMAGE_PLACEHOLDER}\n{CAPTION_INSTRUCTION}")}),
            json!({"role": "assistant", "content": caption}),
        ];
        for (question, answer) in rounds {
            messages.push(json!({"role": "user", "content": question}));
            messages.push(json!({"role": "assistant", "content": answer}));
        }
        conversations.push(json!({"messages": messages, "images": [image_field]}));
    }
    for (image, reason) in missing {
        skipped.push(SkippedRow {
            syn_id: skipped.len(),
            file: inputs.captions.display().to_string(),
            location: format!("image {}", image.display()),
            reason: reason.to_string(),
        });
    }
    if conversations.is_empty() {
        return Err(SynthError::Invalid(format!(
            "no image has a caption and both kinds of question-answer pairs ({} rows skipped)",
            skipped.len()
        )));
    }
    PythonRandom::from_int_seed(42 + i128::from(options.seed)).shuffle(&mut conversations);
    let dev_count = ((conversations.len() as f64) * options.dev_fraction).round() as usize;
    let dev_count = dev_count.min(conversations.len() - 1);
    let dev: Vec<Value> = conversations.split_off(conversations.len() - dev_count);
    std::fs::create_dir_all(out_dir).map_err(|e| FileError::io(out_dir, e))?;
    write_blank_image(&out_dir.join(BLANK_IMAGE_FILE))?;
    write_json_atomic(&out_dir.join(SEED_TRAIN_FILE), &conversations)?;
    write_json_atomic(&out_dir.join(SEED_DEV_FILE), &dev)?;
    write_jsonl_atomic(&out_dir.join(SKIPPED_FILE), &skipped)?;
    let summary = SeedSummary {
        train: conversations.len(),
        dev: dev.len(),
        blank_images,
        rounds: rounds_written,
        skipped: skipped.len(),
    };
    write_json_atomic(&out_dir.join("seed_summary.json"), &summary)?;
    Ok(summary)
}

/// Writes the white blank image as PNG (atomically).
pub fn write_blank_image(path: &Path) -> Result<(), FileError> {
    let image = image::RgbImage::from_pixel(
        BLANK_IMAGE_SIDE,
        BLANK_IMAGE_SIDE,
        image::Rgb([255, 255, 255]),
    );
    let mut bytes = std::io::Cursor::new(Vec::new());
    image
        .write_to(&mut bytes, image::ImageFormat::Png)
        .map_err(|e| FileError::new(path, format!("cannot encode the blank image: {e}")))?;
    write_atomic(path, bytes.get_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_jsonl(path: &Path, rows: &[Value]) {
        let text: String = rows.iter().map(|r| format!("{r}\n")).collect();
        std::fs::write(path, text).unwrap();
    }

    #[test]
    fn builds_hinted_shuffled_rounds_with_blanks_and_a_split() {
        let dir = tempfile::tempdir().unwrap();
        let images = dir.path().join("images");
        std::fs::create_dir_all(&images).unwrap();
        let n = 40;
        let (mut caps, mut pre, mut inf) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..n {
            let name = format!("s{i}.png");
            std::fs::write(images.join(&name), b"not decoded here").unwrap();
            caps.push(json!({"images": [name], "messages": [
                {"role": "user", "content": "<image>Caption this."},
                {"role": "assistant", "content": format!("Scene {i}.")}]}));
            pre.push(json!({"images": [name], "messages": [
                {"role": "user", "content": "<image>How many?"}, {"role": "assistant", "content": "3"},
                {"role": "user", "content": "Color?"}, {"role": "assistant", "content": "Red"}]}));
            if i != 7 {
                inf.push(json!({"images": [name], "messages": [
                    {"role": "user", "content": "<image>How many?"},
                    {"role": "assistant", "content": "I count three shapes, so 3."}]}));
            }
        }
        write_jsonl(&dir.path().join("c.jsonl"), &caps);
        write_jsonl(&dir.path().join("p.jsonl"), &pre);
        write_jsonl(&dir.path().join("i.jsonl"), &inf);
        let inputs = SeedInputs {
            captions: dir.path().join("c.jsonl"),
            precise: dir.path().join("p.jsonl"),
            informative: dir.path().join("i.jsonl"),
            images: images.clone(),
        };
        let out = dir.path().join("seed");
        let summary = build_seed_set(&inputs, &out, &SeedOptions::default()).unwrap();
        assert_eq!(
            summary.train + summary.dev,
            n - 1,
            "image 7 lacks informative pairs"
        );
        assert_eq!(summary.dev, 4);
        assert_eq!(summary.rounds, 3 * (n - 1));
        assert_eq!(summary.skipped, 1);
        let train: Vec<Value> =
            serde_json::from_str(&std::fs::read_to_string(out.join(SEED_TRAIN_FILE)).unwrap())
                .unwrap();
        let dev: Vec<Value> =
            serde_json::from_str(&std::fs::read_to_string(out.join(SEED_DEV_FILE)).unwrap())
                .unwrap();
        let mut orders = std::collections::BTreeSet::new();
        let mut blanks = 0;
        for row in train.iter().chain(&dev) {
            let m = row["messages"].as_array().unwrap();
            assert_eq!(m.len(), 8);
            assert_eq!(m[0]["content"], "<image>\nDescribe the image.");
            assert!(m[1]["content"].as_str().unwrap().starts_with("Scene "));
            let questions: Vec<&str> = m[2..]
                .iter()
                .step_by(2)
                .map(|x| x["content"].as_str().unwrap())
                .collect();
            let mut sorted = questions.clone();
            sorted.sort();
            assert_eq!(
                sorted,
                [
                    "Answer with a precise response.\nColor?",
                    "Answer with a precise response.\nHow many?",
                    "Answer with an informative response.\nHow many?",
                ]
            );
            orders.insert(questions.join("|"));
            let image = row["images"][0].as_str().unwrap();
            if image == BLANK_IMAGE_FILE {
                blanks += 1;
            } else {
                assert!(
                    Path::new(image).is_absolute() && Path::new(image).is_file(),
                    "{image}"
                );
            }
        }
        assert!(orders.len() > 1, "rounds are not shuffled");
        assert_eq!(blanks, summary.blank_images);
        // CPython: indices i < 39 with Random(i + 2**100).choices(weights=(10, 90)) true.
        assert!(blanks > 0 && blanks < 12, "{blanks}");
        let blank = image::open(out.join(BLANK_IMAGE_FILE)).unwrap().to_rgb8();
        assert_eq!(blank.dimensions(), (BLANK_IMAGE_SIDE, BLANK_IMAGE_SIDE));
        assert!(blank.pixels().all(|p| p.0 == [255, 255, 255]));
        // Same inputs and seed, same files.
        let again = dir.path().join("seed2");
        build_seed_set(&inputs, &again, &SeedOptions::default()).unwrap();
        assert_eq!(
            std::fs::read(out.join(SEED_TRAIN_FILE)).unwrap(),
            std::fs::read(again.join(SEED_TRAIN_FILE)).unwrap()
        );
    }
}
