//! `adamllm filter`: the consistency judge.
//!
//! A text-only language model (it never sees the image) reads a few-shot prompt and one
//! triplet and answers `Yes` (the precise answer follows from the informative one), `No`
//! (they disagree) or `Open` (the question is open-ended or descriptive, or judging needs
//! knowledge the answers do not give). Greedy, 2 new tokens (see [`judge_token_budget`]
//! for tokenizers that need more to spell a label); the label is the output
//! stripped and lower-cased, and only `yes` keeps the task. Anything else is `unparsed`.
//!
//! Output rows (`filtered_task_pairs.jsonl`, one per row of `syn_task_triplets.jsonl`, the
//! paper's layout): the synthesis row with `pred` replaced by the judge's raw output (`null`
//! when the output held no triplet, so nothing was judged), `collected_QA` = `{Q,
//! informative_A, precise_A}` when a triplet was found, and `consistency` = the label
//! (`yes` / `no` / `open` / `unparsed` / `no_triplet`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use web_time::Instant;

use serde::Serialize;
use serde_json::{Map, Value, json};

use super::SynthError;
use super::chunk_cache::{CachedEntry, ChunkCache};
use super::synthesize::{GenerationProgress, file_digest, rate};
use super::triplets::{Triplet, triplet_from_output};
use crate::data::conversation::{Conversation, Message, Role};
use crate::generation::{GenerationOptions, PromptInput, generate, generate_async};
use crate::io::{FileError, write_json_atomic, write_jsonl_atomic};
use crate::models::Model;
use crate::models::prompt::LabelMode;
use crate::shard::{
    Shard, ShardRecord, complete_set, remove_shards, shards_beside_file, write_shard_record,
};

/// New tokens the judge may write (the paper's budget).
pub const JUDGE_MAX_NEW_TOKENS: usize = 2;

/// The judge's token budget: [`JUDGE_MAX_NEW_TOKENS`], or more when its tokenizer needs more
/// tokens to spell a label (real Qwen2 tokenizers spell each label as one token, so this is
/// 2 for them; the built-in tiny tokenizer needs 3 for `Open`).
pub fn judge_token_budget(judge: &Model) -> usize {
    ["Yes", "No", "Open"]
        .iter()
        .filter_map(|label| judge.processor.tokenizer.encode(*label, false).ok())
        .map(|encoding| encoding.len())
        .max()
        .unwrap_or(0)
        .max(JUDGE_MAX_NEW_TOKENS)
}

/// The judge's instructions (this project's own wording); the worked examples follow.
pub const JUDGE_INSTRUCTIONS: &str = "\
You check question-answer data written about images. Each item has a question, a detailed \
answer that explains its reasoning, and a short answer. You cannot see the image; judge only \
the text.
Reply with one word:
- Yes: the short answer is what the detailed answer concludes.
- No: the short answer contradicts the detailed answer or states something it does not support.
- Open: the question has no single short answer (it asks for a description, an opinion or a \
list), or deciding needs knowledge that neither answer provides.
";

/// Six worked examples, two per label (this project's own). A judge prompt holds the first
/// `shots` of them.
pub const JUDGE_SHOTS: [&str; 6] = [
    "\
### Question: How many plates are on the table?
### Detailed answer: Two plates sit side by side near the edge, and a third is stacked on top \
of the left one, which makes three plates in all.
### Short answer: Two
### Verdict: No\n",
    "\
### Question: What is the mood of this kitchen scene?
### Detailed answer: Warm light falls over wooden counters and a pot simmers on the stove, \
which gives the room a calm and homely feel.
### Short answer: Cozy
### Verdict: Open\n",
    "\
### Question: Is the lesion on the left side of the scan?
### Detailed answer: The bright oval region lies to the right of the midline in the image, \
and by radiological convention the image's right is the patient's left. So the lesion is on \
the patient's left.
### Short answer: Yes
### Verdict: Yes\n",
    "\
### Question: Which color are most of the cell nuclei?
### Detailed answer: The nuclei are stained a deep purple-blue by hematoxylin, while the \
surrounding cytoplasm appears pink.
### Short answer: Purple-blue
### Verdict: Yes\n",
    "\
### Question: Is the soup served hot?
### Detailed answer: No steam rises from the bowl and a thin skin has formed on the surface, \
suggesting the soup has cooled down.
### Short answer: Yes
### Verdict: No\n",
    "\
### Question: What might this building have been used for in the past?
### Detailed answer: The tall arched windows and the bell tower suggest a religious or \
civic purpose, though it could also have served as a school.
### Short answer: A church
### Verdict: Open\n",
];

/// The judge's label of one triplet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JudgeLabel {
    /// Consistent: the task is kept.
    Yes,
    /// Inconsistent.
    No,
    /// Open-ended or needs outside knowledge.
    Open,
    /// The judge wrote something else.
    Unparsed,
    /// The synthesizer's output held no triplet; nothing was judged.
    NoTriplet,
}

impl JudgeLabel {
    /// The label of a judge output: stripped, lower-cased, compared whole.
    pub fn parse(output: &str) -> Self {
        match output.trim().to_lowercase().as_str() {
            "yes" => Self::Yes,
            "no" => Self::No,
            "open" => Self::Open,
            _ => Self::Unparsed,
        }
    }

    /// The name written into the output.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Yes => "yes",
            Self::No => "no",
            Self::Open => "open",
            Self::Unparsed => "unparsed",
            Self::NoTriplet => "no_triplet",
        }
    }

    /// Every label, in report order.
    pub const ALL: [Self; 5] = [
        Self::Yes,
        Self::No,
        Self::Open,
        Self::Unparsed,
        Self::NoTriplet,
    ];
}

/// How the judge prompt is presented to the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum JudgePromptFormat {
    /// Chat when the judge has a chat template, plain when it has none (a base model such as
    /// the paper's Meta-Llama-3-8B).
    #[default]
    Auto,
    /// As the user turn of the model's chat template (instruction-tuned judges).
    Chat,
    /// As plain text with no template (base language models, as in the paper), the
    /// tokenizer's BOS first.
    Plain,
}

impl JudgePromptFormat {
    /// `auto`, `chat` or `plain`.
    pub fn parse(name: &str) -> Result<Self, String> {
        match name {
            "auto" => Ok(Self::Auto),
            "chat" => Ok(Self::Chat),
            "plain" => Ok(Self::Plain),
            other => Err(format!(
                "unknown judge prompt format {other:?}; expected auto, chat or plain"
            )),
        }
    }

    /// The format used with `judge`: `Auto` resolved by whether it has a chat template.
    pub fn resolve(self, judge: &Model) -> Self {
        match self {
            Self::Auto if judge.processor.template.is_some() => Self::Chat,
            Self::Auto => Self::Plain,
            other => other,
        }
    }
}

/// The text the judge reads for one triplet: the instructions (when `instructions`), the
/// first `shots` worked examples (at most 6), then the triplet in the same layout, ending at
/// `### Verdict:`.
pub fn judge_prompt_text(triplet: &Triplet, shots: usize, instructions: bool) -> String {
    let mut text = if instructions {
        format!("{JUDGE_INSTRUCTIONS}\n")
    } else {
        String::new()
    };
    for shot in JUDGE_SHOTS.iter().take(shots) {
        text.push_str(shot);
        text.push('\n');
    }
    format!(
        "{text}### Question: {}\n### Detailed answer: {}\n### Short answer: {}\n### Verdict:",
        one_line(&triplet.instruction),
        one_line(&triplet.informative_answer),
        one_line(&triplet.precise_answer),
    )
}

/// Joins lines so a triplet field cannot break the prompt's layout.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Settings of a filter run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterOptions {
    /// Prompts per generation call.
    pub batch_size: usize,
    /// Chat template or plain text.
    pub format: JudgePromptFormat,
    /// Worked examples in the prompt (0 to 6; 6 by default, fewer for small judges).
    pub shots: usize,
    /// Whether the prompt opens with [`JUDGE_INSTRUCTIONS`] (the default). A judge tuned on
    /// the bare triplet layout, like the demo's 2-layer one, reads the prompt without them:
    /// their ~150 tokens drown the few that decide the verdict (measured in ARCHITECTURE.md).
    pub instructions: bool,
}

impl Default for FilterOptions {
    fn default() -> Self {
        Self {
            batch_size: 8,
            format: JudgePromptFormat::Auto,
            shots: JUDGE_SHOTS.len(),
            instructions: true,
        }
    }
}

/// What a filter run produced.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FilterSummary {
    /// Rows read.
    pub rows: usize,
    /// Count per label (`yes`, `no`, `open`, `unparsed`, `no_triplet`).
    pub labels: BTreeMap<String, usize>,
    /// Rows kept (`yes`).
    pub kept: usize,
    /// Rows judged by this run.
    pub judged_now: usize,
    /// Seconds spent judging in this run.
    pub seconds: f64,
    /// Judged rows per second in this run.
    pub rows_per_second: f64,
    /// The output file.
    pub output: PathBuf,
}

/// The label-count file written beside the output: `<output stem>.labels.json`.
pub fn labels_path(output: &Path) -> PathBuf {
    let stem = output
        .file_stem()
        .map_or("filtered_task_pairs".into(), |s| {
            s.to_string_lossy().into_owned()
        });
    output.with_file_name(format!("{stem}.labels.json"))
}

/// The chunk cache folder of a filter run: `.<output name>.cache` beside the output.
pub fn filter_cache_dir(output: &Path) -> PathBuf {
    let name = output
        .file_name()
        .map_or("filtered_task_pairs.jsonl".into(), |s| {
            s.to_string_lossy().into_owned()
        });
    output.with_file_name(format!(".{name}.cache"))
}

/// Reads `syn_task_triplets.jsonl`: one JSON object per line with an integer `syn_id` and a
/// string `pred`. Errors name the file and line.
pub fn read_synthesis_rows(path: &Path) -> Result<Vec<Map<String, Value>>, FileError> {
    let text = std::fs::read_to_string(path).map_err(|e| FileError::io(path, e))?;
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let row: Map<String, Value> = serde_json::from_str(line)
            .map_err(|e| FileError::line(path, i + 1, format!("malformed JSON object: {e}")))?;
        if row.get("syn_id").and_then(Value::as_u64).is_none() {
            return Err(FileError::line(path, i + 1, "missing integer `syn_id`"));
        }
        if !matches!(row.get("pred"), Some(Value::String(_) | Value::Null)) {
            return Err(FileError::line(
                path,
                i + 1,
                "missing `pred` (the synthesizer output)",
            ));
        }
        rows.push(row);
    }
    if rows.is_empty() {
        return Err(FileError::new(path, "no synthesized rows in the file"));
    }
    Ok(rows)
}

/// The triplet of a synthesis row (from its `pred`).
pub fn row_triplet(row: &Map<String, Value>) -> Option<Triplet> {
    row.get("pred")
        .and_then(Value::as_str)
        .and_then(triplet_from_output)
}

/// `collected_QA` of a triplet (the paper's field names).
pub fn collected_qa(triplet: &Triplet) -> Value {
    json!({
        "Q": triplet.instruction,
        "informative_A": triplet.informative_answer,
        "precise_A": triplet.precise_answer,
    })
}

/// Judges every row of `input` with `judge`, writing `output`, its label counts
/// (`<stem>.labels.json`) and using a chunk cache beside it so a killed run resumes. Rows
/// judged by [`run_filter_shard`] shards (`<output>.shards/`) are taken as done.
pub fn run_filter(
    judge: &Model,
    input: &Path,
    output: &Path,
    options: &FilterOptions,
    on_progress: &mut dyn FnMut(GenerationProgress),
) -> Result<FilterSummary, SynthError> {
    let rows = read_synthesis_rows(input)?;
    let run = filter_run_record(judge, input, options)?;
    let shards = shards_beside_file(output);
    let cache = ChunkCache::open(&filter_cache_dir(output), &run)?;
    let mut done = ChunkCache::load_shards(&shards, &run)?;
    done.extend(cache.load()?);
    let positions: Vec<usize> = (0..rows.len()).collect();
    let work = judge_pending(
        judge,
        &rows,
        &positions,
        options,
        &cache,
        &mut done,
        on_progress,
    )?;
    let summary = finish_filter(&rows, output, &done, work)?;
    cache.remove()?;
    remove_shards(&shards)?;
    Ok(summary)
}

/// Runs shard `shard` of a filter job: the rows at the positions it owns, into its folder
/// `<output>.shards/K-of-N` (resumable), finished with a [`crate::shard::SHARD_FILE`].
/// [`merge_filter`] (or an unsharded rerun) writes `output` from a whole set. The summary
/// counts this shard's rows; its `output` is the shard folder.
pub fn run_filter_shard(
    judge: &Model,
    input: &Path,
    output: &Path,
    options: &FilterOptions,
    shard: Shard,
    on_progress: &mut dyn FnMut(GenerationProgress),
) -> Result<FilterSummary, SynthError> {
    let rows = read_synthesis_rows(input)?;
    let run = filter_run_record(judge, input, options)?;
    let folder = shard.folder(&shards_beside_file(output));
    let cache = ChunkCache::open(&folder, &run)?;
    let mut done = cache.load()?;
    let positions: Vec<usize> = (0..rows.len()).filter(|&i| shard.owns(i)).collect();
    let work = judge_pending(
        judge,
        &rows,
        &positions,
        options,
        &cache,
        &mut done,
        on_progress,
    )?;
    let ids: Vec<usize> = positions.iter().map(|&i| row_id(&rows[i])).collect();
    let judged: Vec<&Map<String, Value>> = ids
        .iter()
        .filter_map(|id| match done.get(id) {
            Some(CachedEntry::Row(row)) => Some(row),
            _ => None,
        })
        .collect();
    let record = ShardRecord {
        job: FILTER_JOB.into(),
        shard,
        run,
        input: input.to_path_buf(),
        total: rows.len(),
        ids,
        extra: Value::Null,
    };
    write_shard_record(&folder, &record)?;
    Ok(work.summary(label_counts(&judged), folder))
}

/// Writes `output` and its label counts from the filter job split into the shards under
/// `<output>.shards`, with the bytes an unsharded run writes, then removes the shard
/// folders. A set with a missing, unfinished, repeated or foreign shard is refused before
/// anything is written.
pub fn merge_filter(output: &Path) -> Result<FilterSummary, SynthError> {
    let shards = shards_beside_file(output);
    let set = complete_set(&shards, FILTER_JOB)?;
    let input = &set[0].1.input;
    if set[0].1.run.get("input") != Some(&json!(file_digest(input)?)) {
        return Err(SynthError::Resume {
            path: input.clone(),
            message: "this file changed since the shards read it; rerun them".into(),
        });
    }
    let rows = read_synthesis_rows(input)?;
    let mut done = BTreeMap::new();
    for (folder, shard) in &set {
        let judged = ChunkCache::existing(folder).load()?;
        if let Some(id) = shard.ids.iter().find(|id| !judged.contains_key(id)) {
            return Err(SynthError::Resume {
                path: folder.clone(),
                message: format!("syn_id {id} is listed as judged but has no row"),
            });
        }
        done.extend(judged);
    }
    let summary = finish_filter(&rows, output, &done, FilterWork::default())?;
    remove_shards(&shards)?;
    Ok(summary)
}

/// The job name in shard records.
const FILTER_JOB: &str = "filter";

/// What a filter run's rows belong to: cached rows of another record are not reused.
fn filter_run_record(
    judge: &Model,
    input: &Path,
    options: &FilterOptions,
) -> Result<Value, SynthError> {
    Ok(judge.with_quantization_record(json!({
        "job": FILTER_JOB,
        "judge": judge.dir_record(),
        "input": file_digest(input)?,
        "format": format!("{:?}", options.format),
        "shots": options.shots,
        "instructions": options.instructions,
    })))
}

/// A synthesis row's `syn_id` (checked when the file was read).
fn row_id(row: &Map<String, Value>) -> usize {
    row.get("syn_id").and_then(Value::as_u64).unwrap_or(0) as usize
}

/// The judging done by one run (resumed rows excluded).
#[derive(Default)]
struct FilterWork {
    judged_now: usize,
    seconds: f64,
}

impl FilterWork {
    fn summary(&self, labels: BTreeMap<String, usize>, output: PathBuf) -> FilterSummary {
        FilterSummary {
            rows: labels.values().sum(),
            kept: labels.get("yes").copied().unwrap_or(0),
            labels,
            judged_now: self.judged_now,
            seconds: self.seconds,
            rows_per_second: rate(self.judged_now, self.seconds),
            output,
        }
    }
}

/// Rows per label, every label listed.
fn label_counts(judged: &[&Map<String, Value>]) -> BTreeMap<String, usize> {
    let mut labels: BTreeMap<String, usize> = JudgeLabel::ALL
        .iter()
        .map(|l| (l.as_str().to_string(), 0))
        .collect();
    for row in judged {
        let label = row
            .get("consistency")
            .and_then(Value::as_str)
            .unwrap_or("unparsed");
        *labels.entry(label.to_string()).or_insert(0) += 1;
    }
    labels
}

/// Judges the rows at `positions` not in `done`, batch by batch, each batch written to
/// `cache` and added to `done`.
fn judge_pending(
    judge: &Model,
    rows: &[Map<String, Value>],
    positions: &[usize],
    options: &FilterOptions,
    cache: &ChunkCache,
    done: &mut BTreeMap<usize, CachedEntry>,
    on_progress: &mut dyn FnMut(GenerationProgress),
) -> Result<FilterWork, SynthError> {
    let pending: Vec<usize> = positions
        .iter()
        .copied()
        .filter(|&i| !done.contains_key(&row_id(&rows[i])))
        .collect();
    let total = positions.len();
    let resumed = total - pending.len();
    on_progress(GenerationProgress {
        done: resumed,
        total,
        rows_per_second: 0.0,
        tokens_per_second: 0.0,
    });
    let budget = judge_token_budget(judge);
    let started = Instant::now();
    let mut tokens = 0;
    let mut finished = resumed;
    for batch in pending.chunks(options.batch_size.max(1)) {
        let (entries, batch_tokens) = judge_batch(judge, rows, batch, options, budget)?;
        tokens += batch_tokens;
        cache.write_chunk(&entries)?;
        done.extend(entries);
        finished += batch.len();
        let seconds = started.elapsed().as_secs_f64().max(1e-9);
        on_progress(GenerationProgress {
            done: finished,
            total,
            rows_per_second: (finished - resumed) as f64 / seconds,
            tokens_per_second: tokens as f64 / seconds,
        });
    }
    Ok(FilterWork {
        judged_now: pending.len(),
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Judges the rows at the positions `batch`: the cache entries in order, and the number of
/// generated tokens. Rows without a triplet are labelled `no_triplet` without generating.
fn judge_batch(
    judge: &Model,
    rows: &[Map<String, Value>],
    batch: &[usize],
    options: &FilterOptions,
    budget: usize,
) -> Result<(Vec<(usize, CachedEntry)>, usize), SynthError> {
    let mut entries = Vec::with_capacity(batch.len());
    let mut prompts = Vec::new();
    let mut judged = Vec::new();
    for &i in batch {
        let id = row_id(&rows[i]);
        let mut row = rows[i].clone();
        match row_triplet(&row) {
            None => {
                row.insert("pred".into(), Value::Null);
                row.insert("consistency".into(), json!(JudgeLabel::NoTriplet.as_str()));
            }
            Some(triplet) => {
                prompts.push(judge_prompt(judge, &triplet, options, budget, id)?);
                row.insert("collected_QA".into(), collected_qa(&triplet));
                judged.push(entries.len());
            }
        }
        entries.push((id, CachedEntry::Row(row)));
    }
    let mut tokens = 0;
    if !prompts.is_empty() {
        let generation = judge_generation_options(budget);
        let outputs =
            generate(judge, &prompts, &generation).map_err(|source| SynthError::Generate {
                first: entries[0].0,
                last: entries[entries.len() - 1].0,
                source,
            })?;
        for (slot, generated) in judged.into_iter().zip(outputs) {
            tokens += generated.token_ids.len();
            let (id, entry) = &mut entries[slot];
            let judgement = judgement_of(judge, &generated.token_ids, *id)?;
            if let CachedEntry::Row(row) = entry {
                row.insert("consistency".into(), json!(judgement.label.as_str()));
                row.insert("pred".into(), json!(judgement.text));
            }
        }
    }
    Ok((entries, tokens))
}

/// Writes `output` (every row, in input order) and its label counts from the finished rows
/// `done`, which must cover every row.
fn finish_filter(
    rows: &[Map<String, Value>],
    output: &Path,
    done: &BTreeMap<usize, CachedEntry>,
    work: FilterWork,
) -> Result<FilterSummary, SynthError> {
    let mut judged = Vec::with_capacity(rows.len());
    for row in rows {
        let id = row_id(row);
        let Some(CachedEntry::Row(row)) = done.get(&id) else {
            return Err(SynthError::Resume {
                path: output.to_path_buf(),
                message: format!("syn_id {id} has no judgement after filtering"),
            });
        };
        judged.push(row);
    }
    write_jsonl_atomic(output, &judged)?;
    let summary = work.summary(label_counts(&judged), output.to_path_buf());
    write_json_atomic(&labels_path(output), &summary)?;
    Ok(summary)
}

/// The judge's decoding: greedy, `budget` new tokens.
pub fn judge_generation_options(budget: usize) -> GenerationOptions {
    GenerationOptions {
        max_new_tokens: budget,
        temperature: 0.0,
        ..GenerationOptions::default()
    }
}

/// One judgement: the judge's text and the label read from it.
#[derive(Clone, Debug, PartialEq)]
pub struct Judgement {
    /// What the judge wrote (the `pred` of the filter's rows).
    pub text: String,
    /// The label.
    pub label: JudgeLabel,
}

/// The judgement in the tokens a judge generated for row `syn_id`.
fn judgement_of(judge: &Model, tokens: &[u32], syn_id: usize) -> Result<Judgement, SynthError> {
    let text = judge
        .processor
        .decode(tokens)
        .map_err(|source| SynthError::Prompt { syn_id, source })?;
    Ok(Judgement {
        label: JudgeLabel::parse(&text),
        text,
    })
}

/// Judges one triplet (the browser's synthesis panel; `filter` runs the same prompt and
/// decoding in batches).
pub async fn judge_triplet(
    judge: &Model,
    triplet: &Triplet,
    options: &FilterOptions,
) -> Result<Judgement, SynthError> {
    let mut judged = judge_triplets_async(judge, std::slice::from_ref(triplet), options).await?;
    judged.pop().map_or_else(|| judgement_of(judge, &[], 0), Ok)
}

/// Judges `triplets` in batches of `options.batch_size`, in order (the demo's held-out check
/// of its judge; [`run_filter`] does the same over a file, with a cache). Errors name the
/// triplet's index.
pub fn judge_triplets(
    judge: &Model,
    triplets: &[Triplet],
    options: &FilterOptions,
) -> Result<Vec<Judgement>, SynthError> {
    pollster::block_on(judge_triplets_async(judge, triplets, options))
}

/// [`judge_triplets`] with async readback (what a browser allows).
pub async fn judge_triplets_async(
    judge: &Model,
    triplets: &[Triplet],
    options: &FilterOptions,
) -> Result<Vec<Judgement>, SynthError> {
    let budget = judge_token_budget(judge);
    let generation = judge_generation_options(budget);
    let mut judgements = Vec::with_capacity(triplets.len());
    let batch_size = options.batch_size.max(1);
    for (batch_index, batch) in triplets.chunks(batch_size).enumerate() {
        let first = batch_index * batch_size;
        let prompts = batch
            .iter()
            .enumerate()
            .map(|(i, triplet)| judge_prompt(judge, triplet, options, budget, first + i))
            .collect::<Result<Vec<_>, _>>()?;
        let outputs = generate_async(judge, &prompts, &generation)
            .await
            .map_err(|source| SynthError::Generate {
                first,
                last: first + batch.len() - 1,
                source,
            })?;
        for (i, generated) in outputs.iter().enumerate() {
            judgements.push(judgement_of(judge, &generated.token_ids, first + i)?);
        }
    }
    Ok(judgements)
}

/// Encodes the judge prompt of one triplet.
fn judge_prompt(
    judge: &Model,
    triplet: &Triplet,
    options: &FilterOptions,
    budget: usize,
    syn_id: usize,
) -> Result<PromptInput, SynthError> {
    let text = judge_prompt_text(triplet, options.shots, options.instructions);
    let ids = match options.format.resolve(judge) {
        JudgePromptFormat::Chat | JudgePromptFormat::Auto => {
            let conversation = Conversation {
                messages: vec![Message {
                    role: Role::User,
                    content: text,
                }],
                images: Vec::new(),
            };
            judge
                .processor
                .encode(&conversation, &[], true, LabelMode::AssistantTurns)
                .map_err(|source| SynthError::Prompt { syn_id, source })?
                .ids
        }
        JudgePromptFormat::Plain => judge
            .processor
            .encode_plain(&text)
            .map_err(|source| SynthError::Prompt { syn_id, source })?,
    };
    let max = judge.spec.max_positions;
    if ids.len() + budget > max {
        return Err(SynthError::Invalid(format!(
            "syn_id {syn_id}: the judge prompt takes {} tokens but the judge model holds {max} \
             positions; use a judge with a longer context",
            ids.len()
        )));
    }
    Ok(PromptInput {
        ids,
        images: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_stripped_lowercased_and_whole() {
        assert_eq!(JudgeLabel::parse(" Yes"), JudgeLabel::Yes);
        assert_eq!(JudgeLabel::parse("YES\n"), JudgeLabel::Yes);
        assert_eq!(JudgeLabel::parse(" No"), JudgeLabel::No);
        assert_eq!(JudgeLabel::parse("Open"), JudgeLabel::Open);
        assert_eq!(JudgeLabel::parse("Yes."), JudgeLabel::Unparsed);
        assert_eq!(JudgeLabel::parse("Yesterday"), JudgeLabel::Unparsed);
        assert_eq!(JudgeLabel::parse(""), JudgeLabel::Unparsed);
    }

    #[test]
    fn prompt_ends_with_the_triplet_in_the_shot_layout() {
        let triplet = Triplet {
            instruction: "Is it\nround?".into(),
            informative_answer: "The edge is smooth, so yes.".into(),
            precise_answer: "Yes".into(),
        };
        let text = judge_prompt_text(&triplet, 6, true);
        assert!(text.starts_with(JUDGE_INSTRUCTIONS));
        assert!(text.ends_with(
            "\n\n### Question: Is it round?\n### Detailed answer: The edge is smooth, so yes.\n### Short answer: Yes\n### Verdict:"
        ));
        // Six worked examples, two of each label, each in the layout the triplet uses.
        for label in ["Yes", "No", "Open"] {
            assert_eq!(text.matches(&format!("### Verdict: {label}\n")).count(), 2);
        }
        assert_eq!(text.matches("### Question: ").count(), 7);
        for shot in JUDGE_SHOTS {
            assert!(shot.starts_with("### Question: ") && shot.contains("\n### Verdict: "));
        }
        // Fewer shots: a prefix of the examples.
        let none = judge_prompt_text(&triplet, 0, true);
        assert_eq!(none.matches("### Question: ").count(), 1);
        assert!(none.len() < text.len() / 3);
        // Without the instructions: the bare triplet layout.
        let bare = judge_prompt_text(&triplet, 0, false);
        assert_eq!(
            bare,
            "### Question: Is it round?\n### Detailed answer: The edge is smooth, so yes.\n### Short answer: Yes\n### Verdict:"
        );
        assert_eq!(none, format!("{JUDGE_INSTRUCTIONS}\n{bare}"));
    }

    #[test]
    fn synthesis_rows_need_ids_and_outputs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("syn_task_triplets.jsonl");
        std::fs::write(
            &path,
            "{\"syn_id\": 0, \"pred\": \"x\"}\n{\"pred\": \"y\"}\n",
        )
        .unwrap();
        let error = read_synthesis_rows(&path).unwrap_err().to_string();
        assert!(
            error.contains("syn_task_triplets.jsonl")
                && error.contains("line 2")
                && error.contains("syn_id"),
            "{error}"
        );
        assert_eq!(
            labels_path(&dir.path().join("filtered_task_pairs.jsonl")),
            dir.path().join("filtered_task_pairs.labels.json")
        );
    }
}
