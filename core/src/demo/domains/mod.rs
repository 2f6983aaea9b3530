//! Built-in procedural domains of `adamllm demo`.
//!
//! Three domains are generated deterministically from a seed, with images and text made
//! from the same ground truth so that every caption and answer is right about its image:
//!
//! * [`DomainKind::General`] — the synthesizer's seed domain: scenes of one to six shapes
//!   (circle, square, triangle, star, ring) in named colours, sizes and places. Each image
//!   has a caption, short "precise" question-answer pairs and longer "informative" pairs
//!   that reason before they answer; some questions appear under both kinds, so the
//!   synthesizer's triplets (instruction, informative, precise) pair by exact question text.
//! * [`DomainKind::Biomed`] — stained-tissue micrographs (nuclei of four kinds, an atypical
//!   cluster, lymphocytic infiltrates, spindle cells, necrosis) with report-style captions and
//!   VQA-RAD-style (closed yes/no and open) and PMC-VQA-style (four options) benchmark rows.
//! * [`DomainKind::Food`] — plates seen from above with ingredients drawn by shape, colour
//!   and texture, fourteen dishes, recipe-style captions and Food101-, FoodSeg103- and
//!   Recipe1M-style benchmark rows.
//!
//! Train and test never share an image: each split draws from its own seed stream and, on
//! top of that, every image carries its split in the lowest bit of its top-left pixel's red
//! channel (0 train, 1 test), so a train image and a test image always differ in that byte
//! even if both streams drew the same scene.
//!
//! [`write_domain`] lays the samples out as the paper's pipeline expects them
//! (`images/`, `image_caption_pairs.json` in ShareGPT form, and for the seed domain
//! `precise.json` and `informative.json`), plus one `<task>.jsonl` per benchmark task;
//! [`write_task_files`] writes the matching custom task files (see `eval::custom_task`).

pub mod biomed;
pub mod draw;
pub mod food;
pub mod general;

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use image::RgbImage;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{Value, json};

/// Which built-in domain.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DomainKind {
    /// Shapes scenes: the synthesizer's seed data.
    General,
    /// Stained-tissue micrographs: a biomedicine-like target domain.
    Biomed,
    /// Plates of food: a food-like target domain.
    Food,
}

impl DomainKind {
    /// Every domain.
    pub const ALL: [Self; 3] = [Self::General, Self::Biomed, Self::Food];

    /// Lower-case name, used in sample ids and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::General => "general",
            Self::Biomed => "biomed",
            Self::Food => "food",
        }
    }

    /// Parses a name (any case).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|kind| kind.name().eq_ignore_ascii_case(name.trim()))
    }

    /// Pixel size `(width, height)` of the domain's images.
    pub fn image_size(self) -> (u32, u32) {
        match self {
            Self::General | Self::Biomed | Self::Food => (IMAGE_SIDE, IMAGE_SIDE),
        }
    }

    fn salt(self) -> u64 {
        match self {
            Self::General => 0x6765_6e65_7261_6c00,
            Self::Biomed => 0x6269_6f6d_6564_0000,
            Self::Food => 0x666f_6f64_0000_0000,
        }
    }
}

impl fmt::Display for DomainKind {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.name())
    }
}

/// Train or test.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Split {
    /// Post-training (and synthesizer-tuning) data.
    Train,
    /// Benchmark data.
    Test,
}

impl Split {
    /// `"train"` or `"test"`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Train => "train",
            Self::Test => "test",
        }
    }

    fn salt(self) -> u64 {
        match self {
            Self::Train => 0x7472_6169_6e00_0000,
            Self::Test => 0x7465_7374_0000_0000,
        }
    }
}

impl fmt::Display for Split {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.name())
    }
}

/// Side of every demo image in pixels (112 = 4 × 28: 16 Qwen2-VL patches of 28 after merging).
pub const IMAGE_SIDE: u32 = 112;

/// The key of a benchmark row naming its task; [`write_domain`] removes it and writes the
/// row to `<task>.jsonl`.
pub const TASK_KEY: &str = "task";

/// One generated image with its text.
#[derive(Clone, Debug, PartialEq)]
pub struct DomainSample {
    /// `<domain>-<split>-<index>`, unique across domains and splits; also the image file stem.
    pub id: String,
    /// The picture.
    pub image: RgbImage,
    /// A description of the whole picture (the domain's image-caption pair).
    pub caption: String,
    /// Questions with short answers (`"3"`, `"red"`, `"yes"`); seed domain only.
    pub precise_qa: Vec<(String, String)>,
    /// Questions answered with a sentence or two of reasoning that ends in the answer;
    /// seed domain only. At least one question also appears in `precise_qa`.
    pub informative_qa: Vec<(String, String)>,
    /// Benchmark rows in the AdaMLLM layout (`input`, `label`, task fields), each with a
    /// [`TASK_KEY`] field naming its task; without `image` (the writer adds it).
    pub benchmark_rows: Vec<Value>,
}

/// What [`write_domain`] wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WrittenDomain {
    /// `out_dir/images`, holding `<id>.png`.
    pub images_dir: PathBuf,
    /// `out_dir/image_caption_pairs.json` (ShareGPT).
    pub captions_file: PathBuf,
    /// `(task, out_dir/<task>.jsonl)` per benchmark task, in [`benchmark_tasks`] order.
    pub benchmark_files: Vec<(String, PathBuf)>,
    /// `out_dir/precise.json` (ShareGPT, one row per image), general domain only.
    pub precise_file: Option<PathBuf>,
    /// `out_dir/informative.json` (ShareGPT, one row per image), general domain only.
    pub informative_file: Option<PathBuf>,
}

/// Generates `count` samples of a domain. The same arguments always give the same samples
/// (each sample has its own seed, so the work is spread over the CPU's threads without
/// changing the result); train and test never share an image (see the module docs), and
/// ids carry the split.
pub fn generate_samples(
    kind: DomainKind,
    split: Split,
    count: usize,
    seed: u64,
) -> Vec<DomainSample> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(8);
    if threads <= 1 || count < 32 {
        return (0..count)
            .map(|index| generate_one(kind, split, seed, index))
            .collect();
    }
    let chunk = count.div_ceil(threads);
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..count)
            .step_by(chunk)
            .map(|start| {
                scope.spawn(move || {
                    (start..(start + chunk).min(count))
                        .map(|index| generate_one(kind, split, seed, index))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|worker| worker.join().expect("a generator thread panicked"))
            .collect()
    })
}

/// Sample `index` of a domain's split.
fn generate_one(kind: DomainKind, split: Split, seed: u64, index: usize) -> DomainSample {
    let stream = splitmix64(seed ^ kind.salt() ^ split.salt());
    let sample_seed =
        splitmix64(stream.wrapping_add((index as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)));
    let mut dice = Dice::new(sample_seed);
    let mut generated = match kind {
        DomainKind::General => general::generate(&mut dice),
        DomainKind::Biomed => biomed::generate(&mut dice),
        DomainKind::Food => food::generate(&mut dice),
    };
    tag_split(&mut generated.image, split);
    DomainSample {
        id: format!("{}-{}-{:05}", kind.name(), split.name(), index),
        image: generated.image,
        caption: generated.caption,
        precise_qa: generated.precise_qa,
        informative_qa: generated.informative_qa,
        benchmark_rows: generated.benchmark_rows,
    }
}

/// Marks the split in the image itself: the lowest bit of the top-left pixel's red channel is
/// 0 in train images and 1 in test images (an invisible change of one level). Two images of
/// different splits therefore always differ in at least that byte, whatever the seeds drew.
fn tag_split(image: &mut RgbImage, split: Split) {
    let red = &mut image.get_pixel_mut(0, 0).0[0];
    *red = (*red & !1) | u8::from(split == Split::Test);
}

/// The split an image generated here belongs to (see [`tag_split`]).
pub fn split_of_image(image: &RgbImage) -> Split {
    if image.get_pixel(0, 0).0[0] & 1 == 0 {
        Split::Train
    } else {
        Split::Test
    }
}

/// What a domain generator returns for one image (the id is given by [`generate_samples`]).
pub(crate) struct Generated {
    pub image: RgbImage,
    pub caption: String,
    pub precise_qa: Vec<(String, String)>,
    pub informative_qa: Vec<(String, String)>,
    pub benchmark_rows: Vec<Value>,
}

/// A benchmark task of a domain, as written to `<name>.jsonl` and `<name>.yaml`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskSpec {
    /// Task name (file stem and the `name` in the task file).
    pub name: String,
    /// The custom-task metric.
    pub metric: &'static str,
    /// Option fields (`multiple_choice` with lettered options).
    pub options_fields: Vec<String>,
    /// Class names (`multiple_choice` over classes, `multi_label_f1`).
    pub vocabulary: Option<Vec<String>>,
    /// Generation budget.
    pub max_new_tokens: usize,
    /// The real benchmark this task imitates.
    pub imitates: &'static str,
}

/// The benchmark tasks of a domain.
///
/// Choices: the dish task is scored with `multiple_choice` over the dish vocabulary, as the
/// built-in Food101 task is, rather than `exact_match_normalized`: the answer then counts when
/// it names the right dish anywhere in a sentence ("This looks like fried rice."), which is
/// how the real benchmark is scored, whereas exact match would punish a correct answer for
/// any extra word and measure formatting more than recognition.
pub fn benchmark_tasks(kind: DomainKind) -> Vec<TaskSpec> {
    let spec = |name: &str, metric: &'static str, imitates: &'static str, max_new_tokens: usize| {
        TaskSpec {
            name: name.to_owned(),
            metric,
            options_fields: Vec::new(),
            vocabulary: None,
            max_new_tokens,
            imitates,
        }
    };
    match kind {
        DomainKind::General => vec![spec(
            general::TASK_VQA,
            "llava_med_open_closed",
            "VQA-RAD",
            64,
        )],
        DomainKind::Biomed => vec![
            spec(biomed::TASK_VQA, "llava_med_open_closed", "VQA-RAD", 64),
            TaskSpec {
                options_fields: ["A", "B", "C", "D"].map(str::to_owned).to_vec(),
                ..spec(biomed::TASK_MCQ, "multiple_choice", "PMC-VQA", 64)
            },
        ],
        DomainKind::Food => vec![
            TaskSpec {
                vocabulary: Some(food::dish_vocabulary()),
                ..spec(food::TASK_DISH, "multiple_choice", "Food101", 64)
            },
            TaskSpec {
                vocabulary: Some(food::ingredient_vocabulary()),
                ..spec(food::TASK_INGREDIENTS, "multi_label_f1", "FoodSeg103", 64)
            },
            spec(food::TASK_RECIPE, "rouge_l", "Recipe1M", 192),
        ],
    }
}

/// The custom task file text of a task (see `eval::custom_task` for the format).
pub fn task_yaml(task: &TaskSpec) -> String {
    let quote = |text: &str| serde_json::to_string(text).expect("strings serialize");
    let mut yaml = format!(
        "# adamllm demo task, in the layout of {}.\nname: {}\nprompt_field: input\nlabel_field: label\n",
        task.imitates,
        quote(&task.name)
    );
    if !task.options_fields.is_empty() {
        let fields: Vec<String> = task.options_fields.iter().map(|f| quote(f)).collect();
        yaml.push_str(&format!("options_fields: [{}]\n", fields.join(", ")));
    }
    yaml.push_str(&format!("metric: {}\n", task.metric));
    if let Some(vocabulary) = &task.vocabulary {
        yaml.push_str("vocabulary:\n");
        for name in vocabulary {
            yaml.push_str(&format!("  - {}\n", quote(name)));
        }
    }
    yaml.push_str(&format!("max_new_tokens: {}\n", task.max_new_tokens));
    yaml
}

/// Writes `<task>.yaml` for every benchmark task of a domain into `out_dir` (next to the
/// `<task>.jsonl` files); returns `(task, path)` pairs.
pub fn write_task_files(
    kind: DomainKind,
    out_dir: &Path,
) -> Result<Vec<(String, PathBuf)>, std::io::Error> {
    std::fs::create_dir_all(out_dir)?;
    benchmark_tasks(kind)
        .into_iter()
        .map(|task| {
            let path = out_dir.join(format!("{}.yaml", task.name));
            write_atomic(&path, task_yaml(&task).as_bytes())?;
            Ok((task.name, path))
        })
        .collect()
}

/// Writes the samples of one split: `images/<id>.png`, `image_caption_pairs.json`,
/// `precise.json` and `informative.json` (general domain), and `<task>.jsonl` per benchmark
/// task (rows get `"image": "images/<id>.png"`, a path relative to `out_dir`). Every file is
/// written to a temporary name and renamed, so a killed run never leaves a half file.
pub fn write_domain(
    samples: &[DomainSample],
    out_dir: &Path,
    kind: DomainKind,
    split: Split,
) -> Result<WrittenDomain, std::io::Error> {
    let images_dir = out_dir.join("images");
    std::fs::create_dir_all(&images_dir)?;
    let mut captions = Vec::with_capacity(samples.len());
    let mut precise = Vec::new();
    let mut informative = Vec::new();
    let tasks = benchmark_tasks(kind);
    let mut task_lines: Vec<Vec<String>> = vec![Vec::new(); tasks.len()];
    let prefix = format!("{}-{}-", kind.name(), split.name());
    for sample in samples {
        if !sample.id.starts_with(&prefix) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("sample {} is not a {kind} {split} sample", sample.id),
            ));
        }
        let file_name = format!("{}.png", sample.id);
        let mut png = Vec::new();
        sample
            .image
            .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .map_err(std::io::Error::other)?;
        write_atomic(&images_dir.join(&file_name), &png)?;
        let image = format!("images/{file_name}");

        let instructions = caption_instructions(kind);
        let instruction = instructions
            [(draw::fingerprint(sample.id.as_bytes()) % instructions.len() as u64) as usize];
        captions.push(json!({
            "messages": [
                {"role": "user", "content": format!("<image>{instruction}")},
                {"role": "assistant", "content": sample.caption},
            ],
            "images": [image],
        }));
        if kind == DomainKind::General {
            precise.push(qa_conversation(&sample.precise_qa, &image));
            informative.push(qa_conversation(&sample.informative_qa, &image));
        }
        for row in &sample.benchmark_rows {
            let mut row = row.clone();
            let Some(fields) = row.as_object_mut() else {
                return Err(std::io::Error::other(format!(
                    "{}: a benchmark row is not an object",
                    sample.id
                )));
            };
            let task = match fields.remove(TASK_KEY) {
                Some(Value::String(task)) => task,
                _ => {
                    return Err(std::io::Error::other(format!(
                        "{}: a benchmark row has no task",
                        sample.id
                    )));
                }
            };
            let Some(position) = tasks.iter().position(|spec| spec.name == task) else {
                return Err(std::io::Error::other(format!(
                    "{}: unknown task {task:?}",
                    sample.id
                )));
            };
            fields.insert("image".to_owned(), json!(image));
            task_lines[position].push(serde_json::to_string(&row).map_err(std::io::Error::other)?);
        }
    }
    let captions_file = out_dir.join("image_caption_pairs.json");
    write_json(&captions_file, &Value::Array(captions))?;
    let (precise_file, informative_file) = if kind == DomainKind::General {
        let precise_file = out_dir.join("precise.json");
        let informative_file = out_dir.join("informative.json");
        write_json(&precise_file, &Value::Array(precise))?;
        write_json(&informative_file, &Value::Array(informative))?;
        (Some(precise_file), Some(informative_file))
    } else {
        (None, None)
    };
    let mut benchmark_files = Vec::with_capacity(tasks.len());
    for (task, lines) in tasks.iter().zip(task_lines) {
        let path = out_dir.join(format!("{}.jsonl", task.name));
        let mut text = lines.join("\n");
        if !text.is_empty() {
            text.push('\n');
        }
        write_atomic(&path, text.as_bytes())?;
        benchmark_files.push((task.name.clone(), path));
    }
    Ok(WrittenDomain {
        images_dir,
        captions_file,
        benchmark_files,
        precise_file,
        informative_file,
    })
}

/// One ShareGPT row holding an image's question-answer pairs as turns.
fn qa_conversation(pairs: &[(String, String)], image: &str) -> Value {
    let mut messages = Vec::with_capacity(pairs.len() * 2);
    for (turn, (question, answer)) in pairs.iter().enumerate() {
        let content = if turn == 0 {
            format!("<image>{question}")
        } else {
            question.clone()
        };
        messages.push(json!({"role": "user", "content": content}));
        messages.push(json!({"role": "assistant", "content": answer}));
    }
    json!({"messages": messages, "images": [image]})
}

/// Instructions asking for a description, picked per image from the id.
pub fn caption_instructions(kind: DomainKind) -> &'static [&'static str] {
    match kind {
        DomainKind::General => &[
            "Describe the image.",
            "What does this picture show?",
            "Give a short description of this image.",
            "Write a caption for this picture.",
            "Describe what you see in the image.",
            "Tell me what is in this picture.",
        ],
        DomainKind::Biomed => &[
            "Describe the image.",
            "Describe the findings in this micrograph.",
            "Write a short report for this tissue image.",
            "What does this histology image show?",
            "Summarize what is visible in this stained section.",
            "Give a brief description of this micrograph.",
        ],
        DomainKind::Food => &[
            "Describe the image.",
            "What dish is this and how is it made?",
            "Describe this plate of food.",
            "Write a short recipe note for the dish in the picture.",
            "What is on this plate?",
            "Give a brief description of this dish.",
        ],
    }
}

fn write_json(path: &Path, value: &Value) -> Result<(), std::io::Error> {
    let mut text = serde_json::to_string_pretty(value).map_err(std::io::Error::other)?;
    text.push('\n');
    write_atomic(path, text.as_bytes())
}

/// Writes `bytes` to a temporary file beside `path`, then renames it over `path`, so a killed
/// run never leaves a half-written file under the final name. (No fsync: it guards against
/// power loss, not against a killed process, and on ext4 it flushes every image written
/// before it, which made writing ten times slower.)
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), std::io::Error> {
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other(format!("{} has no file name", path.display())))?;
    let mut temporary_name = std::ffi::OsString::from(".");
    temporary_name.push(name);
    temporary_name.push(format!(".{}.tmp", std::process::id()));
    let temporary = path.with_file_name(temporary_name);
    let result = (|| {
        let mut file = std::fs::File::create(&temporary)?;
        file.write_all(bytes)?;
        std::fs::rename(&temporary, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    result
}

/// SplitMix64 finalizer: spreads a 64-bit value over all bits.
pub(crate) fn splitmix64(value: u64) -> u64 {
    let mut z = value.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The random choices of one sample (ChaCha8 seeded per sample).
pub(crate) struct Dice(ChaCha8Rng);

impl Dice {
    pub(crate) fn new(seed: u64) -> Self {
        Self(ChaCha8Rng::seed_from_u64(seed))
    }

    pub(crate) fn u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// A seed for hashed textures.
    pub(crate) fn seed32(&mut self) -> u32 {
        (self.0.next_u64() >> 32) as u32
    }

    /// Uniform in `[0, 1)`.
    pub(crate) fn unit(&mut self) -> f32 {
        (self.0.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Uniform in `[low, high)`.
    pub(crate) fn range(&mut self, low: f32, high: f32) -> f32 {
        low + (high - low) * self.unit()
    }

    /// Uniform in `0..n` (`n > 0`).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        assert!(n > 0, "below(0)");
        ((self.0.next_u64() as u128 * n as u128) >> 64) as usize
    }

    /// Uniform in `low..=high`.
    pub(crate) fn int(&mut self, low: usize, high: usize) -> usize {
        low + self.below(high - low + 1)
    }

    /// True with probability `p`.
    pub(crate) fn chance(&mut self, p: f32) -> bool {
        self.unit() < p
    }

    /// One item, uniformly.
    pub(crate) fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    /// Fisher-Yates shuffle.
    pub(crate) fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i + 1);
            items.swap(i, j);
        }
    }

    /// A random angle in radians.
    pub(crate) fn angle(&mut self) -> f32 {
        self.range(0.0, std::f32::consts::TAU)
    }
}

/// English helpers shared by the domains.
pub(crate) mod text {
    /// "a", "a and b", "a, b and c".
    pub fn join_and(items: &[String]) -> String {
        match items {
            [] => String::new(),
            [one] => one.clone(),
            [init @ .., last] => format!("{} and {last}", init.join(", ")),
        }
    }

    /// "one" … "twelve", digits beyond.
    pub fn number_word(n: usize) -> String {
        const WORDS: [&str; 13] = [
            "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
            "eleven", "twelve",
        ];
        WORDS
            .get(n)
            .map_or_else(|| n.to_string(), |w| (*w).to_owned())
    }

    /// Upper-cases the first letter.
    pub fn capitalize(text: &str) -> String {
        let mut chars = text.chars();
        match chars.next() {
            Some(first) => first.to_uppercase().collect::<String>() + chars.as_str(),
            None => String::new(),
        }
    }

    /// "a" or "an" before a word.
    pub fn article(word: &str) -> &'static str {
        match word.chars().next() {
            Some('a' | 'e' | 'i' | 'o' | 'u') => "an",
            _ => "a",
        }
    }
}

/// Builds a PMC-VQA-style row: `Question: …\nThe choices are:\n(A) …` with the right answer
/// under the letter `answer_slot` (0..4) and the distractors in the given order elsewhere.
pub(crate) fn multiple_choice_row(
    task: &str,
    question: &str,
    answer: &str,
    distractors: &[String],
    answer_slot: usize,
) -> Value {
    assert_eq!(distractors.len(), 3, "four options");
    let mut options: Vec<String> = distractors.to_vec();
    options.insert(answer_slot, answer.to_owned());
    let letters = ["A", "B", "C", "D"];
    let mut input = format!("Question: {question}\nThe choices are:");
    for (letter, option) in letters.iter().zip(&options) {
        input.push_str(&format!("\n({letter}) {option}"));
    }
    json!({
        TASK_KEY: task,
        "input": input,
        "label": letters[answer_slot],
        "A": options[0],
        "B": options[1],
        "C": options[2],
        "D": options[3],
    })
}

/// Builds a VQA-RAD-style row.
pub(crate) fn vqa_row(task: &str, question: &str, answer: &str, closed: bool) -> Value {
    json!({
        TASK_KEY: task,
        "input": question,
        "label": answer,
        "answer_type": if closed { "CLOSED" } else { "OPEN" },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn same_seed_same_bytes_and_different_seed_differs() {
        for kind in DomainKind::ALL {
            let a = generate_samples(kind, Split::Train, 12, 7);
            let b = generate_samples(kind, Split::Train, 12, 7);
            assert_eq!(a, b, "{kind}");
            let c = generate_samples(kind, Split::Train, 12, 8);
            assert_ne!(a[0].image, c[0].image, "{kind}");
        }
    }

    #[test]
    fn train_and_test_never_share_an_image_and_ids_carry_the_split() {
        for kind in DomainKind::ALL {
            let train = generate_samples(kind, Split::Train, 150, 1);
            let test = generate_samples(kind, Split::Test, 150, 1);
            let train_images: HashSet<&[u8]> =
                train.iter().map(|s| s.image.as_raw().as_slice()).collect();
            assert!(
                test.iter()
                    .all(|s| !train_images.contains(s.image.as_raw().as_slice())),
                "{kind}"
            );
            assert!(
                train
                    .iter()
                    .all(|s| s.id.starts_with(&format!("{kind}-train-")))
            );
            assert!(
                test.iter()
                    .all(|s| s.id.starts_with(&format!("{kind}-test-")))
            );
            assert!(
                train
                    .iter()
                    .all(|s| split_of_image(&s.image) == Split::Train)
            );
            assert!(test.iter().all(|s| split_of_image(&s.image) == Split::Test));
            let ids: HashSet<&str> = train.iter().chain(&test).map(|s| s.id.as_str()).collect();
            assert_eq!(ids.len(), 300);
        }
    }

    #[test]
    fn images_have_the_domain_size() {
        for kind in DomainKind::ALL {
            for sample in generate_samples(kind, Split::Test, 5, 3) {
                assert_eq!(sample.image.dimensions(), kind.image_size());
                assert!(!sample.caption.trim().is_empty());
            }
        }
    }

    #[test]
    fn rows_name_known_tasks_and_have_required_fields() {
        for kind in DomainKind::ALL {
            let tasks = benchmark_tasks(kind);
            let samples = generate_samples(kind, Split::Test, 50, 5);
            let mut seen = HashSet::new();
            for sample in &samples {
                for row in &sample.benchmark_rows {
                    let task_name = row[TASK_KEY].as_str().expect("task");
                    let task = tasks
                        .iter()
                        .find(|t| t.name == task_name)
                        .expect("known task");
                    seen.insert(task_name.to_owned());
                    assert!(
                        row["input"].as_str().is_some_and(|s| !s.is_empty()),
                        "{row}"
                    );
                    assert!(row.get("image").is_none());
                    match task.metric {
                        "llava_med_open_closed" => {
                            let kind = row["answer_type"].as_str().unwrap();
                            assert!(kind == "OPEN" || kind == "CLOSED");
                            let label = row["label"].as_str().unwrap();
                            if kind == "CLOSED" {
                                assert!(label == "yes" || label == "no", "{row}");
                            }
                        }
                        "multiple_choice" if !task.options_fields.is_empty() => {
                            let label = row["label"].as_str().unwrap();
                            assert!(["A", "B", "C", "D"].contains(&label));
                            let input = row["input"].as_str().unwrap();
                            assert!(input.starts_with("Question: "));
                            assert!(input.contains("\nThe choices are:\n(A) "));
                            let options: HashSet<&str> = ["A", "B", "C", "D"]
                                .iter()
                                .map(|l| row[*l].as_str().unwrap())
                                .collect();
                            assert_eq!(options.len(), 4, "distinct options: {row}");
                        }
                        "multiple_choice" => {
                            let vocabulary = task.vocabulary.as_ref().unwrap();
                            assert!(
                                vocabulary.contains(&row["label"].as_str().unwrap().to_owned())
                            );
                        }
                        "multi_label_f1" => {
                            let vocabulary = task.vocabulary.as_ref().unwrap();
                            let labels = row["label"].as_array().unwrap();
                            assert!(!labels.is_empty());
                            assert!(
                                labels
                                    .iter()
                                    .all(|l| vocabulary.contains(&l.as_str().unwrap().to_owned()))
                            );
                        }
                        "rouge_l" => assert!(row["label"].as_str().unwrap().starts_with("Title: ")),
                        other => panic!("unexpected metric {other}"),
                    }
                }
            }
            assert_eq!(seen.len(), tasks.len(), "{kind}: every task gets rows");
        }
    }

    #[test]
    fn write_domain_lays_out_the_pipeline_files() {
        let dir = std::env::temp_dir().join(format!("adamllm-domains-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for kind in DomainKind::ALL {
            let out = dir.join(kind.name());
            let samples = generate_samples(kind, Split::Test, 6, 11);
            let written = write_domain(&samples, &out, kind, Split::Test).unwrap();
            let captions: Value =
                serde_json::from_str(&std::fs::read_to_string(&written.captions_file).unwrap())
                    .unwrap();
            let captions = captions.as_array().unwrap();
            assert_eq!(captions.len(), 6);
            for (row, sample) in captions.iter().zip(&samples) {
                let messages = row["messages"].as_array().unwrap();
                assert_eq!(messages[0]["role"], "user");
                assert!(
                    messages[0]["content"]
                        .as_str()
                        .unwrap()
                        .starts_with("<image>")
                );
                assert_eq!(messages[1]["role"], "assistant");
                assert_eq!(messages[1]["content"], sample.caption.as_str());
                let image = row["images"][0].as_str().unwrap();
                assert_eq!(image, format!("images/{}.png", sample.id));
                let decoded = image::open(out.join(image)).unwrap().to_rgb8();
                assert_eq!(decoded, sample.image);
            }
            assert_eq!(written.precise_file.is_some(), kind == DomainKind::General);
            if let Some(precise) = &written.precise_file {
                let rows: Value =
                    serde_json::from_str(&std::fs::read_to_string(precise).unwrap()).unwrap();
                let first = &rows[0]["messages"];
                assert!(first[0]["content"].as_str().unwrap().starts_with("<image>"));
                assert!(!first[2]["content"].as_str().unwrap().contains("<image>"));
                assert_eq!(
                    first.as_array().unwrap().len(),
                    samples[0].precise_qa.len() * 2
                );
            }
            let tasks = write_task_files(kind, &out).unwrap();
            assert_eq!(tasks.len(), written.benchmark_files.len());
            for (task, path) in &written.benchmark_files {
                let text = std::fs::read_to_string(path).unwrap();
                for line in text.lines() {
                    let row: Value = serde_json::from_str(line).unwrap();
                    assert!(row.get(TASK_KEY).is_none());
                    assert!(out.join(row["image"].as_str().unwrap()).exists(), "{task}");
                }
            }
            let leftovers = std::fs::read_dir(&out)
                .unwrap()
                .filter(|e| {
                    e.as_ref()
                        .unwrap()
                        .file_name()
                        .to_string_lossy()
                        .ends_with(".tmp")
                })
                .count();
            assert_eq!(leftovers, 0);
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn task_yaml_has_the_custom_task_keys() {
        let yaml = task_yaml(&benchmark_tasks(DomainKind::Food)[0]);
        assert!(yaml.contains("name: \"food_dish\"\n"));
        assert!(yaml.contains("metric: multiple_choice\n"));
        assert!(yaml.contains("vocabulary:\n  - \"fried rice\"\n"));
        let yaml = task_yaml(&benchmark_tasks(DomainKind::Biomed)[1]);
        assert!(yaml.contains("options_fields: [\"A\", \"B\", \"C\", \"D\"]\n"));
        assert!(!yaml.contains("vocabulary"));
    }

    #[test]
    fn letters_and_yes_no_are_balanced() {
        let samples = generate_samples(DomainKind::Biomed, Split::Test, 600, 21);
        let mut letters = [0usize; 4];
        let (mut yes, mut no) = (0, 0);
        for row in samples.iter().flat_map(|s| &s.benchmark_rows) {
            if let Some(letter) = row.get("A").and(row["label"].as_str()) {
                letters[(letter.as_bytes()[0] - b'A') as usize] += 1;
            } else if row["answer_type"] == "CLOSED" {
                if row["label"] == "yes" {
                    yes += 1
                } else {
                    no += 1
                }
            }
        }
        let total: usize = letters.iter().sum();
        for count in letters {
            assert!(
                (count as f64 / total as f64 - 0.25).abs() < 0.05,
                "{letters:?}"
            );
        }
        assert!(
            (yes as f64 / (yes + no) as f64 - 0.5).abs() < 0.06,
            "{yes} {no}"
        );
    }

    #[test]
    fn generation_is_fast_enough() {
        // A loose guard (debug builds are slow); the release target is ≪ 1 ms per image.
        let start = std::time::Instant::now();
        for kind in DomainKind::ALL {
            generate_samples(kind, Split::Train, 30, 2);
        }
        assert!(start.elapsed().as_secs_f64() < 20.0);
    }
}
