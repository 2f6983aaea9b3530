//! Untrusted files never crash a run. Every reader that takes a user's file is fed damaged
//! copies of the committed fixtures (see `mutation/mutate.rs` for the mutations); each case
//! must end in `Ok` or in an error, never in a panic. A case that reads a whole model folder
//! also generates and scores with what loaded, so values that parse but break the model later
//! are caught too.
//!
//! The case counts here are CI's budget. `ADAMLLM_MUTATION_SCALE=K` multiplies them (the
//! longer run of `bench/mutation.sh`), and `ADAMLLM_MUTATION_REPORT=FILE` appends one JSON line
//! per reader (cases, outcomes, seconds). `ADAMLLM_MUTATION_KEEP=DIR` writes the mutated file
//! of every crashing case (and of the cases in `ADAMLLM_MUTATION_KEEP_CASES`) there; crashes
//! found so far are committed under `tests/fixtures/mutation/` and read by the `regression_*`
//! tests at the end.

mod common;
#[path = "mutation/mutate.rs"]
mod mutate;

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::Once;
use std::time::Instant;

use adamllm::burn::tensor::{DType, Device};
use adamllm::data::conversation::{Conversation, read_conversations};
use adamllm::eval::benchmark::{ReadOptions, read_benchmark};
use adamllm::eval::custom_task::{CustomTask, EvalTask, score_custom};
use adamllm::eval::score::score_predictions_file;
use adamllm::eval::tasks::BenchmarkTask;
use adamllm::models::Model;
use adamllm::models::chat::{JinjaTemplate, template_messages};
use adamllm::models::checkpoint::CheckpointReader;
use adamllm::models::image::{ImageOptions, decode_image_file};
use adamllm::synth::pipeline::PipelineConfig;
use adamllm::train::llamafactory::read_llamafactory_config;
use adamllm::train::recipe::TrainRecipe;
use common::fixture;
use mutate::{Format, case_rng, mutate_stacked};
use serde_json::{Value, json};

// ---------------------------------------------------------------------------------------------
// The harness: copy a fixture folder, mutate one of its files, run the reader, catch panics.

thread_local! {
    static IN_CASE: Cell<bool> = const { Cell::new(false) };
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// A panic hook that, inside a case, records the panic (message and location) instead of
/// printing it; outside cases it prints as usual.
fn install_hook() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let default = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if IN_CASE.with(Cell::get) {
                LAST_PANIC.with(|p| *p.borrow_mut() = Some(info.to_string()));
            } else {
                default(info);
            }
        }));
    });
}

/// One reader: a folder of files, the ones that get mutated, and what reading means.
struct Reader<'a> {
    name: &'static str,
    /// The intact folder; each case runs on a copy.
    pristine: PathBuf,
    /// Files of the folder that get mutated (one per case), with their format.
    targets: Vec<(String, Format)>,
    /// Cases in CI.
    cases: usize,
    /// Reads the case folder; `Err` is the error text.
    read: &'a dyn Fn(&Path) -> Result<(), String>,
}

/// Outcomes of one reader's cases.
#[derive(Default)]
struct Tally {
    ok: usize,
    errors: usize,
    /// Errors whose text names the mutated file.
    errors_naming_file: usize,
    crashes: Vec<String>,
}

fn scale() -> usize {
    std::env::var("ADAMLLM_MUTATION_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1)
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// Runs every case of `reader`; panics (after all cases) listing every crash with its seed.
fn run_reader(reader: &Reader) {
    install_hook();
    let cases = reader.cases * scale();
    let started = Instant::now();
    let mut tally = Tally::default();
    let work = tempfile::tempdir().unwrap();
    // The intact folder must read: otherwise every case would fail early and test nothing.
    let intact = work.path().join("intact");
    copy_tree(&reader.pristine, &intact);
    if let Err(message) = (reader.read)(&intact) {
        panic!(
            "{}: the intact fixture does not read: {message}",
            reader.name
        );
    }
    let _ = std::fs::remove_dir_all(&intact);
    let mut samples = Vec::new();
    for case in 0..cases as u64 {
        let mut rng = case_rng(reader.name, case);
        let dir = work.path().join(format!("case{case}"));
        copy_tree(&reader.pristine, &dir);
        let (file, format) = &reader.targets[case as usize % reader.targets.len()];
        let original = std::fs::read(dir.join(file)).unwrap();
        let (mutated, what) = mutate_stacked(&original, *format, &mut rng);
        std::fs::write(dir.join(file), &mutated).unwrap();
        if keep_cases().contains(&case) {
            keep_case(reader.name, case, file, &mutated);
        }
        IN_CASE.with(|c| c.set(true));
        let outcome = panic::catch_unwind(AssertUnwindSafe(|| (reader.read)(&dir)));
        IN_CASE.with(|c| c.set(false));
        match outcome {
            Ok(Ok(())) => tally.ok += 1,
            Ok(Err(message)) => {
                assert!(
                    !message.trim().is_empty(),
                    "{}: case {case}: empty error",
                    reader.name
                );
                tally.errors += 1;
                if samples.len() < 6 && case % 7 == 0 {
                    samples.push(format!("{file}: {what} => {message}"));
                }
                let stem = Path::new(file).file_name().unwrap().to_string_lossy();
                if message.contains(stem.as_ref()) {
                    tally.errors_naming_file += 1;
                }
            }
            Err(_) => {
                let panic = LAST_PANIC
                    .with(|p| p.borrow_mut().take())
                    .unwrap_or_default();
                tally
                    .crashes
                    .push(format!("case {case} ({file}: {what}): {panic}"));
                keep_case(reader.name, case, file, &mutated);
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
    report(reader, cases, &tally, started.elapsed().as_secs_f64());
    for sample in &samples {
        eprintln!(
            "  {}: {}",
            reader.name,
            sample.chars().take(300).collect::<String>()
        );
    }
    assert!(
        tally.crashes.is_empty(),
        "{}: {} of {cases} cases crashed:\n{}",
        reader.name,
        tally.crashes.len(),
        tally.crashes.join("\n")
    );
}

/// Cases whose mutated file is kept (`ADAMLLM_MUTATION_KEEP_CASES=3,17`), besides crashes.
fn keep_cases() -> Vec<u64> {
    std::env::var("ADAMLLM_MUTATION_KEEP_CASES")
        .unwrap_or_default()
        .split(',')
        .filter_map(|c| c.trim().parse().ok())
        .collect()
}

/// Writes a case's mutated file under `ADAMLLM_MUTATION_KEEP` (when set), named by reader and
/// case, so that a crash can be committed as a regression fixture.
fn keep_case(reader: &str, case: u64, file: &str, bytes: &[u8]) {
    let Ok(dir) = std::env::var("ADAMLLM_MUTATION_KEEP") else {
        return;
    };
    let slug: String = reader
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    let name = format!("{slug}-case{case}-{}", file.replace('/', "_"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(Path::new(&dir).join(name), bytes).unwrap();
}

fn report(reader: &Reader, cases: usize, tally: &Tally, seconds: f64) {
    let line = json!({
        "reader": reader.name,
        "files": reader.targets.iter().map(|(f, _)| f.as_str()).collect::<Vec<_>>(),
        "cases": cases,
        "ok": tally.ok,
        "errors": tally.errors,
        "errors_naming_file": tally.errors_naming_file,
        "crashes": tally.crashes.len(),
        "seconds": (seconds * 100.0).round() / 100.0,
    });
    eprintln!("{line}");
    if let Ok(path) = std::env::var("ADAMLLM_MUTATION_REPORT") {
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        writeln!(file, "{line}").unwrap();
    }
}

/// A folder holding copies of `files` (source path, name in the folder).
fn folder_of(dir: &Path, files: &[(PathBuf, &str)]) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    for (from, name) in files {
        let to = dir.join(name);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(from, to).unwrap();
    }
    dir.to_path_buf()
}

fn targets(list: &[(&str, Format)]) -> Vec<(String, Format)> {
    list.iter().map(|(f, k)| (f.to_string(), *k)).collect()
}

fn text<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
}

// ---------------------------------------------------------------------------------------------
// Model folders: config, generation and preprocessor configs, tokenizer files, chat template,
// checkpoint; then one generation and one loss with what loaded.

fn model_targets(with_preprocessor: bool, extra: &[(&str, Format)]) -> Vec<(String, Format)> {
    let mut list = vec![
        ("config.json", Format::Json),
        ("config.json", Format::Json),
        ("generation_config.json", Format::Json),
        ("tokenizer.json", Format::Json),
        ("tokenizer_config.json", Format::Json),
        ("model.safetensors", Format::Safetensors),
    ];
    if with_preprocessor {
        list.push(("preprocessor_config.json", Format::Json));
    }
    list.extend_from_slice(extra);
    targets(&list)
}

/// Loads the folder, then computes one loss and generates two tokens (with a picture when
/// the model takes images).
fn read_model(dir: &Path, picture: &Path) -> Result<(), String> {
    let model = Model::load(dir, &Device::flex(), DType::F32).map_err(text)?;
    common::score_and_generate(&model, picture, 2).map(|_| ())
}

fn model_reader_test(name: &'static str, folder: &str, with_preprocessor: bool, cases: usize) {
    let tmp = tempfile::tempdir().unwrap();
    let picture = common::write_picture(tmp.path());
    let read = |dir: &Path| read_model(dir, &picture);
    // Each folder's own extra files: Qwen2-VL's chat template, LLaVA-NeXT's processor config.
    let extra: &[(&str, Format)] = if folder.contains("train_export") {
        &[
            ("chat_template.json", Format::Json),
            ("chat_template.json", Format::Json),
        ]
    } else if folder.contains("llava_next") {
        &[("processor_config.json", Format::Json)]
    } else {
        &[]
    };
    run_reader(&Reader {
        name,
        pristine: fixture(folder),
        targets: model_targets(with_preprocessor, extra),
        cases,
        read: &read,
    });
}

#[test]
fn qwen2_vl_model_folders() {
    model_reader_test("model folder (Qwen2-VL)", "train_export/model", true, 240);
}

#[test]
fn llama_model_folders() {
    model_reader_test(
        "model folder (Llama)",
        "family_export/llama/model",
        false,
        180,
    );
}

#[test]
fn llava_next_model_folders() {
    model_reader_test(
        "model folder (LLaVA-NeXT)",
        "family_export/llava_next/model",
        true,
        180,
    );
}

/// Sharded checkpoints: the shard index and three shards, every tensor read at its own shape.
#[test]
fn sharded_checkpoints() {
    let read = |dir: &Path| -> Result<(), String> {
        let reader = CheckpointReader::open_dir(dir).map_err(text)?;
        for name in reader.names() {
            let shape = reader.shape(&name).unwrap().to_vec();
            reader.read_f32(&name, &shape).map_err(text)?;
        }
        let _ = (reader.parameter_count(), reader.largest_tensor());
        Ok(())
    };
    let src = fixture("qwen2vl/cfg_b");
    let tmp = tempfile::tempdir().unwrap();
    let mut files = vec![(
        src.join("model.safetensors.index.json"),
        "model.safetensors.index.json",
    )];
    let shards = [
        "model-00001-of-00003.safetensors",
        "model-00002-of-00003.safetensors",
        "model-00003-of-00003.safetensors",
    ];
    files.extend(shards.iter().map(|s| (src.join(s), *s)));
    let mut list = vec![("model.safetensors.index.json", Format::Json)];
    list.extend(shards.iter().map(|s| (*s, Format::Safetensors)));
    run_reader(&Reader {
        name: "sharded checkpoint",
        pristine: folder_of(&tmp.path().join("ckpt"), &files),
        targets: targets(&list),
        cases: 400,
        read: &read,
    });
}

// ---------------------------------------------------------------------------------------------
// Data: training conversations, benchmarks in every layout, predictions, task files.

#[test]
fn training_conversations() {
    let tmp = tempfile::tempdir().unwrap();
    let jsonl = fixture("train_export/data.jsonl");
    let dir = tmp.path().join("data");
    folder_of(&dir, &[(jsonl.clone(), "data.jsonl")]);
    // The same rows as one JSON array (LLaVA's layout).
    let rows: Vec<Value> = std::fs::read_to_string(&jsonl)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    std::fs::write(
        dir.join("data.json"),
        serde_json::to_string_pretty(&rows).unwrap(),
    )
    .unwrap();
    let read = |dir: &Path| -> Result<(), String> {
        for file in ["data.jsonl", "data.json"] {
            let rows = read_conversations(&dir.join(file)).map_err(text)?;
            for row in rows {
                let _ = template_messages(&row.conversation);
                let _ = row.conversation.placeholder_count();
            }
        }
        Ok(())
    };
    run_reader(&Reader {
        name: "training conversations (ShareGPT JSONL / JSON)",
        pristine: dir,
        targets: targets(&[("data.jsonl", Format::Jsonl), ("data.json", Format::Json)]),
        cases: 500,
        read: &read,
    });
}

fn benchmark_read(task: BenchmarkTask) -> impl Fn(&Path) -> Result<(), String> {
    move |path: &Path| {
        let options = ReadOptions {
            required_fields: EvalTask::Builtin(task).required_fields(),
            ..ReadOptions::default()
        };
        read_benchmark(path, &options).map(|_| ()).map_err(text)
    }
}

#[test]
fn benchmark_files_jsonl_parquet_arrow() {
    let layouts = fixture("hf_layouts");
    let tmp = tempfile::tempdir().unwrap();
    let dir = folder_of(
        &tmp.path().join("bench"),
        &[
            (layouts.join("jsonl/VQA_RAD.jsonl"), "VQA_RAD.jsonl"),
            (layouts.join("jsonl/Food101.jsonl"), "Food101.jsonl"),
            (
                layouts.join("parquet/PMC-VQA/test/0000.parquet"),
                "PMC-VQA.parquet",
            ),
            (
                layouts.join("parquet/Recipe1M/test/0000.parquet"),
                "Recipe1M.parquet",
            ),
        ],
    );
    copy_tree(&layouts.join("biomed/SLAKE"), &dir.join("SLAKE"));
    let read = |dir: &Path| -> Result<(), String> {
        benchmark_read(BenchmarkTask::VqaRad)(&dir.join("VQA_RAD.jsonl"))?;
        benchmark_read(BenchmarkTask::Food101)(&dir.join("Food101.jsonl"))?;
        benchmark_read(BenchmarkTask::PmcVqa)(&dir.join("PMC-VQA.parquet"))?;
        benchmark_read(BenchmarkTask::Recipe1M)(&dir.join("Recipe1M.parquet"))?;
        benchmark_read(BenchmarkTask::Slake)(&dir.join("SLAKE"))
    };
    run_reader(&Reader {
        name: "benchmark files (JSONL, parquet, datasets Arrow folder)",
        pristine: dir,
        targets: targets(&[
            ("VQA_RAD.jsonl", Format::Jsonl),
            ("Food101.jsonl", Format::Jsonl),
            ("PMC-VQA.parquet", Format::Binary),
            ("Recipe1M.parquet", Format::Binary),
            ("SLAKE/data-00000-of-00001.arrow", Format::Binary),
            ("SLAKE/state.json", Format::Json),
            ("SLAKE/dataset_info.json", Format::Json),
        ]),
        cases: 420,
        read: &read,
    });
}

/// Predictions files as `adamllm score` reads them, one per task, built from the benchmark
/// fixtures with the label as the prediction.
#[test]
fn predictions_files() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("predictions");
    std::fs::create_dir_all(&dir).unwrap();
    let tasks = [
        (BenchmarkTask::VqaRad, "jsonl/VQA_RAD.jsonl"),
        (BenchmarkTask::Food101, "jsonl/Food101.jsonl"),
        (BenchmarkTask::PmcVqa, "parquet/PMC-VQA/test/0000.parquet"),
        (
            BenchmarkTask::FoodSeg103,
            "parquet/FoodSeg103/test/0000.parquet",
        ),
        (
            BenchmarkTask::Nutrition5K,
            "parquet/Nutrition5K/test/0000.parquet",
        ),
        (
            BenchmarkTask::Recipe1M,
            "parquet/Recipe1M/test/0000.parquet",
        ),
    ];
    let mut list = Vec::new();
    for (task, file) in tasks {
        let rows = benchmark_rows(task, &fixture("hf_layouts").join(file));
        let name = format!("{}.jsonl", task.name());
        std::fs::write(dir.join(&name), rows).unwrap();
        list.push((name, Format::Jsonl));
    }
    let read = |dir: &Path| -> Result<(), String> {
        for (task, _) in tasks {
            score_predictions_file(task, &dir.join(format!("{}.jsonl", task.name())))
                .map_err(text)?;
        }
        Ok(())
    };
    run_reader(&Reader {
        name: "predictions files (score)",
        pristine: dir,
        targets: list,
        cases: 420,
        read: &read,
    });
}

/// Prediction rows of a benchmark fixture: its fields, with `pred` = the label.
fn benchmark_rows(task: BenchmarkTask, path: &Path) -> String {
    let rows = read_benchmark(path, &ReadOptions::default()).unwrap();
    let mut out = String::new();
    for row in rows {
        let mut fields = row.fields.clone();
        fields.remove("image");
        let label = fields.get("label").cloned().unwrap_or(Value::Null);
        let pred = match label {
            Value::Array(items) => Value::String(
                items
                    .iter()
                    .map(|v| v.as_str().unwrap_or_default().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            ),
            other => other,
        };
        fields.insert("pred".into(), pred);
        out.push_str(&Value::Object(fields).to_string());
        out.push('\n');
    }
    assert!(!out.is_empty(), "{}", task.name());
    out
}

#[test]
fn custom_task_files() {
    let demo = common::repo_root().join("web/www/demo/benchmark");
    let tmp = tempfile::tempdir().unwrap();
    let dir = folder_of(
        &tmp.path().join("task"),
        &[(demo.join("food_dish.yaml"), "task.yaml")],
    );
    let read = |dir: &Path| -> Result<(), String> {
        let task = CustomTask::from_file(&dir.join("task.yaml")).map_err(text)?;
        let _ = task.required_fields();
        let rows = [json!({"input": "What dish?", "label": "fried rice", "pred": "fried rice"})];
        score_custom(&task, &rows).map(|_| ())
    };
    run_reader(&Reader {
        name: "custom task YAML",
        pristine: dir,
        targets: targets(&[("task.yaml", Format::Yaml)]),
        cases: 400,
        read: &read,
    });
}

// ---------------------------------------------------------------------------------------------
// Recipes, LLaMA-Factory configs, pipeline configs, state files.

#[test]
fn recipes_ours_and_llamafactory() {
    let recipes = common::repo_root().join("recipes");
    let tmp = tempfile::tempdir().unwrap();
    let dir = folder_of(
        &tmp.path().join("recipes"),
        &[
            (recipes.join("paper-qwen2vl-2b.yaml"), "paper.yaml"),
            (recipes.join("portable-lora.yaml"), "lora.yaml"),
            (
                recipes.join("llamafactory/paper-qwen2vl-2b.yaml"),
                "lf.yaml",
            ),
            (
                recipes.join("llamafactory/dataset_info.json"),
                "data/dataset_info.json",
            ),
            (
                fixture("train_export/data.jsonl"),
                "data/biomed-visual-instructions/image_caption_and_synthetic_task.json",
            ),
        ],
    );
    let read = |dir: &Path| -> Result<(), String> {
        for file in ["paper.yaml", "lora.yaml"] {
            let recipe = TrainRecipe::from_yaml_file(&dir.join(file)).map_err(text)?;
            recipe.validate().map_err(text)?;
            let _ = (
                recipe.effective_batch_size(),
                recipe.val_count(1000),
                recipe.fingerprint(),
            );
        }
        let run = read_llamafactory_config(&dir.join("lf.yaml")).map_err(text)?;
        run.recipe.validate().map_err(text)?;
        Ok(())
    };
    run_reader(&Reader {
        name: "recipes (ours, LLaMA-Factory with dataset_info.json)",
        pristine: dir,
        targets: targets(&[
            ("paper.yaml", Format::Yaml),
            ("lora.yaml", Format::Yaml),
            ("lf.yaml", Format::Yaml),
            ("lf.yaml", Format::Yaml),
            ("data/dataset_info.json", Format::Json),
        ]),
        cases: 420,
        read: &read,
    });
}

#[test]
fn pipeline_configs_and_demo_state() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("runs");
    std::fs::create_dir_all(dir.join("demo")).unwrap();
    std::fs::write(
        dir.join("pipeline.yaml"),
        "data: pairs.jsonl\nimages: .\nsynthesizer: model\njudge: model\nout: run\n\
         mode: single\nbatch_size: 2\nmax_new_tokens: 24\njudge_shots: 1\n\
         judge_format: chat\ntrain:\n  model: model\n  overrides:\n    max_steps: 2\n    \
         save_steps: 0\n    finetuning_type: full\n",
    )
    .unwrap();
    let options = adamllm::demo::run::DemoOptions {
        domains: vec!["biomed".into(), "food".into()],
        quick: true,
        seed: 3,
        general: Default::default(),
        seeds: 1,
    };
    let state = json!({
        "options": options,
        "finished": {"data": {"rows": 40}, "judge": {"accuracy": 0.5, "rows": 12},
                     "food/filter": {"kept": 3, "total": 9}},
        "seconds": {"data": 1.5, "judge": 2.0},
    });
    std::fs::write(dir.join("demo/demo_state.json"), state.to_string()).unwrap();
    let read = |dir: &Path| -> Result<(), String> {
        let config = PipelineConfig::from_file(&dir.join("pipeline.yaml")).map_err(text)?;
        let _ = (config.digest(), config.assembled_files());
        if let Some(train) = &config.train {
            train.recipe()?;
        }
        adamllm::demo::run::prepare_folder(&dir.join("demo"), &options, false).map_err(text)?;
        Ok(())
    };
    run_reader(&Reader {
        name: "pipeline config and demo state",
        pristine: dir.clone(),
        targets: targets(&[
            ("pipeline.yaml", Format::Yaml),
            ("demo/demo_state.json", Format::Json),
        ]),
        cases: 300,
        read: &read,
    });
}

/// What synthesis, filtering and assembly read: the image-caption pairs, the synthesizer's
/// rows (the filter's input), the judged rows (the assembler's input), a generation job's
/// chunk cache on resume and `pipeline_state.json`.
#[test]
fn synthesis_inputs_and_resume_state() {
    use adamllm::synth::assemble::{AssemblyMode, run_assemble};
    use adamllm::synth::chunk_cache::ChunkCache;
    use adamllm::synth::judge::{collected_qa, read_synthesis_rows, row_triplet};
    use adamllm::synth::pairs::read_caption_pairs;
    use adamllm::synth::pipeline::read_pipeline_state;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("synth");
    std::fs::create_dir_all(dir.join("cache")).unwrap();
    let captions = ["A red square on white.", "Two green dots."];
    let mut pairs = String::new();
    let mut synthesized = String::new();
    let mut judged = String::new();
    let mut chunk = String::new();
    for (i, caption) in captions.iter().enumerate() {
        image::RgbImage::from_pixel(32, 24, image::Rgb([200, 40 * i as u8, 30]))
            .save(dir.join(format!("p{i}.png")))
            .unwrap();
        let pair = json!({"messages": [{"role": "user", "content": "<image>Describe the image."},
            {"role": "assistant", "content": caption}], "images": [format!("p{i}.png")]});
        pairs.push_str(&format!("{pair}\n"));
        let pred = format!(
            "Answer with an informative response.\nWhat is shown?<|im_end|>\n<|im_start|>assistant\n\
             {caption} So it is shape {i}.<|im_end|>\n<|im_start|>user\nAnswer with a precise \
             response.\nWhat is shown?<|im_end|>\n<|im_start|>assistant\nshape {i}<|im_end|>\n"
        );
        let row = json!({"syn_id": i, "image": format!("p{i}.png"), "pred": pred});
        synthesized.push_str(&format!("{row}\n"));
        let mut judged_row = row.as_object().unwrap().clone();
        let triplet = row_triplet(&judged_row).expect("the fixture's output holds a triplet");
        judged_row.insert("collected_QA".into(), collected_qa(&triplet));
        judged_row.insert("consistency".into(), json!("yes"));
        judged.push_str(&format!("{}\n", Value::Object(judged_row.clone())));
        chunk.push_str(&format!("{}\n", json!({"syn_id": i, "row": judged_row})));
    }
    chunk.push_str(&format!(
        "{}\n",
        json!({"syn_id": 2, "skipped": "no image"})
    ));
    std::fs::write(dir.join("pairs.jsonl"), pairs).unwrap();
    std::fs::write(dir.join("syn_task_triplets.jsonl"), synthesized).unwrap();
    std::fs::write(dir.join("filtered.jsonl"), judged).unwrap();
    let run = json!({"model": "synthesizer", "input": "pairs.jsonl", "batch_size": 2});
    std::fs::write(dir.join("cache/run.json"), run.to_string()).unwrap();
    std::fs::write(dir.join("cache/chunk-000000000-000000002.jsonl"), chunk).unwrap();
    let digest = "a1b2c3";
    let state = json!({"config_digest": digest, "finished": {"synthesize": {"rows": 2}}});
    std::fs::write(dir.join("pipeline_state.json"), state.to_string()).unwrap();
    let read = |dir: &Path| -> Result<(), String> {
        let pairs = read_caption_pairs(&dir.join("pairs.jsonl")).map_err(text)?;
        for row in read_synthesis_rows(&dir.join("syn_task_triplets.jsonl")).map_err(text)? {
            let _ = row_triplet(&row).map(|t| collected_qa(&t));
        }
        let cache = ChunkCache::open(&dir.join("cache"), &run).map_err(text)?;
        cache.load().map_err(text)?;
        read_pipeline_state(&dir.join("pipeline_state.json"), digest).map_err(text)?;
        for (mode, _) in AssemblyMode::ALL {
            let out = dir.join("assembled.json");
            run_assemble(&pairs, dir, &dir.join("filtered.jsonl"), mode, 7, &out).map_err(text)?;
        }
        Ok(())
    };
    run_reader(&Reader {
        name: "synthesis inputs, judged rows and resume state",
        pristine: dir,
        targets: targets(&[
            ("pairs.jsonl", Format::Jsonl),
            ("syn_task_triplets.jsonl", Format::Jsonl),
            ("filtered.jsonl", Format::Jsonl),
            ("cache/run.json", Format::Json),
            ("cache/chunk-000000000-000000002.jsonl", Format::Jsonl),
            ("pipeline_state.json", Format::Json),
            ("p0.png", Format::Binary),
        ]),
        cases: 420,
        read: &read,
    });
}

// ---------------------------------------------------------------------------------------------
// Chat templates and images.

#[test]
fn chat_templates() {
    let source: Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("train_export/model/chat_template.json")).unwrap(),
    )
    .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("template");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("chat.jinja"),
        source["chat_template"].as_str().unwrap(),
    )
    .unwrap();
    let conversation = Conversation::user_prompt("Describe this, please.", vec!["a.png".into()]);
    let messages = template_messages(&conversation);
    let read = |dir: &Path| -> Result<(), String> {
        let source = std::fs::read_to_string(dir.join("chat.jinja")).map_err(text)?;
        let template = JinjaTemplate::new("chat.jinja", source, vec![]).map_err(text)?;
        template
            .render_messages(&messages, true)
            .map(|_| ())
            .map_err(text)
    };
    run_reader(&Reader {
        name: "chat templates (Jinja)",
        pristine: dir,
        targets: targets(&[("chat.jinja", Format::Text)]),
        cases: 500,
        read: &read,
    });
}

#[test]
fn images_in_every_format() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("images");
    std::fs::create_dir_all(&dir).unwrap();
    let img = image::RgbImage::from_fn(60, 40, |x, y| {
        image::Rgb([(x * 4) as u8, (y * 6) as u8, 77])
    });
    let formats = ["png", "jpg", "webp", "bmp", "gif", "tiff"];
    for ext in formats {
        img.save(dir.join(format!("picture.{ext}"))).unwrap();
    }
    let model = Model::load(&fixture("train_export/model"), &Device::flex(), DType::F32).unwrap();
    let read = |dir: &Path| -> Result<(), String> {
        for ext in formats {
            let path = dir.join(format!("picture.{ext}"));
            let decoded = decode_image_file(&path).map_err(text)?;
            model
                .process_image(&decoded, &ImageOptions::default())
                .map_err(text)?;
        }
        Ok(())
    };
    let list: Vec<(String, Format)> = formats
        .iter()
        .map(|ext| (format!("picture.{ext}"), Format::Binary))
        .collect();
    run_reader(&Reader {
        name: "images (PNG, JPEG, WebP, BMP, GIF, TIFF)",
        pristine: dir,
        targets: list,
        cases: 480,
        read: &read,
    });
}

// ---------------------------------------------------------------------------------------------
// Trainer checkpoints on resume.

/// A LoRA run of the tiny Qwen2-VL preset stopped after the first of its two checkpoints,
/// under `base/run`; `resume(dir)` resumes the run in `dir` (a copy of it).
struct StoppedRun {
    run: PathBuf,
    first_checkpoint: String,
    model: PathBuf,
    data: PathBuf,
    overrides: Vec<(String, String)>,
}

impl StoppedRun {
    fn new(base: &Path) -> Self {
        use adamllm::models::qwen2_vl::presets::{Preset, init_model_dir};
        let model = base.join("model");
        init_model_dir(&model, Preset::Tiny, 1, false).unwrap();
        let mut lines = String::new();
        for (i, rgb) in [[220u8, 30, 30], [30, 200, 40]].iter().enumerate() {
            image::RgbImage::from_pixel(56, 56, image::Rgb(*rgb))
                .save(base.join(format!("c{i}.png")))
                .unwrap();
            let row = json!({"messages": [{"role": "user", "content": "<image>Color?"},
                {"role": "assistant", "content": format!("Color {i}.")}], "images": [format!("c{i}.png")]});
            lines.push_str(&format!("{row}\n"));
        }
        let data = base.join("data.jsonl");
        std::fs::write(&data, lines).unwrap();
        let overrides = [
            ("finetuning_type", "lora"),
            ("lora_rank", "2"),
            ("learning_rate", "1e-3"),
            ("per_device_train_batch_size", "1"),
            ("image_min_pixels", "3136"),
            ("image_max_pixels", "3136"),
            ("max_steps", "2"),
            ("save_steps", "1"),
            ("logging_steps", "1"),
            ("seed", "5"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let mut stopped = Self {
            run: base.join("run"),
            first_checkpoint: String::new(),
            model,
            data,
            overrides,
        };
        stopped.train(&stopped.run.clone(), false).unwrap();
        // The second checkpoint and the outputs removed, as if the run had been killed.
        let checkpoints = stopped.run.join("checkpoints");
        let mut names: Vec<String> = std::fs::read_dir(&checkpoints)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names.len(), 2, "{names:?}");
        std::fs::remove_dir_all(checkpoints.join(&names[1])).unwrap();
        for out in ["model", "adapter"] {
            let _ = std::fs::remove_dir_all(stopped.run.join(out));
        }
        stopped.first_checkpoint = format!("checkpoints/{}", names[0]);
        stopped
    }

    fn train(&self, out: &Path, resume: bool) -> Result<(), String> {
        use adamllm::train::trainer::{Quiet, TrainRequest, train};
        let request = TrainRequest {
            model_dir: self.model.clone(),
            data: vec![self.data.clone()],
            layouts: Default::default(),
            stages: false,
            val_data: None,
            images_dir: None,
            out: out.to_path_buf(),
            recipe: TrainRecipe::load(None, &self.overrides).unwrap(),
            device: Device::flex(),
            replica_devices: Vec::new(),
            resume,
            skip_bad: false,
        };
        train(&request, &mut Quiet).map(|_| ()).map_err(text)
    }
}

#[test]
fn trainer_checkpoints_on_resume() {
    let tmp = tempfile::tempdir().unwrap();
    let stopped = StoppedRun::new(tmp.path());
    let mut list = Vec::new();
    for entry in walk(&stopped.run.join(&stopped.first_checkpoint)) {
        let rel = entry
            .strip_prefix(&stopped.run)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let format = match entry.extension().and_then(|e| e.to_str()) {
            Some("json") => Format::Json,
            Some("safetensors") => Format::Safetensors,
            _ => Format::Binary,
        };
        list.push((rel, format));
    }
    list.push(("run.json".to_string(), Format::Json));
    list.push(("metrics.jsonl".to_string(), Format::Jsonl));
    let read = |dir: &Path| stopped.train(dir, true);
    run_reader(&Reader {
        name: "trainer checkpoints on resume",
        pristine: stopped.run.clone(),
        targets: list,
        cases: 40,
        read: &read,
    });
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out.sort();
    out
}

// ---------------------------------------------------------------------------------------------
// Regressions: crashes found by these tests (or reported), kept as named cases.

/// Writes `config.json` of the Qwen2-VL fixture with `edit` applied; returns the folder.
fn edited_qwen2_vl(dir: &Path, edit: impl Fn(&mut Value)) -> PathBuf {
    copy_tree(&fixture("train_export/model"), dir);
    let path = dir.join("config.json");
    let mut config: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut config);
    std::fs::write(&path, config.to_string()).unwrap();
    dir.to_path_buf()
}

#[test]
fn regression_huge_spatial_merge_size_is_a_named_limit() {
    // Reported: `attempt to multiply with overflow` at qwen2_vl/config.rs:189.
    let tmp = tempfile::tempdir().unwrap();
    let dir = edited_qwen2_vl(tmp.path(), |c| {
        c["vision_config"]["spatial_merge_size"] = json!(1_000_000_000_000_u64)
    });
    let error = common::load_error(&dir);
    assert!(
        error.contains("config.json")
            && error.contains("vision_config.spatial_merge_size")
            && error.contains("1000000000000 exceeds the limit of 64"),
        "{error}"
    );
}

#[test]
fn regression_config_sizes_past_their_bounds_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    for (i, (key, value, expected)) in [
        ("vocab_size", json!(u64::MAX), "vocab_size"),
        ("hidden_size", json!(1u64 << 40), "hidden_size"),
        (
            "max_position_embeddings",
            json!(1u64 << 50),
            "max_position_embeddings",
        ),
        ("num_hidden_layers", json!(100_000), "num_hidden_layers"),
    ]
    .into_iter()
    .enumerate()
    {
        let dir = edited_qwen2_vl(&tmp.path().join(i.to_string()), |c| c[key] = value.clone());
        let error = common::load_error(&dir);
        assert!(
            error.contains(expected) && error.contains("exceeds the limit"),
            "{error}"
        );
    }
}

#[test]
fn regression_safetensors_offsets_past_the_file_name_the_tensor() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("m");
    copy_tree(&fixture("train_export/model"), &dir);
    let path = dir.join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header: BTreeMap<String, Value> = serde_json::from_slice(&bytes[8..8 + len]).unwrap();
    let name = header
        .keys()
        .find(|k| *k != "__metadata__")
        .unwrap()
        .clone();
    header.get_mut(&name).unwrap()["data_offsets"] = json!([u64::MAX - 4, u64::MAX]);
    let text = serde_json::to_vec(&header).unwrap();
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend(&text);
    out.extend(&bytes[8 + len..]);
    std::fs::write(&path, out).unwrap();
    let error = common::load_error(&dir);
    assert!(
        error.contains(&format!("tensor `{name}`")) && error.contains("data_offsets"),
        "{error}"
    );
}

#[test]
fn regression_damaged_arrow_buffers_are_a_named_error() {
    // arrow-buffer 60 panicked on these (an offset past the end of a buffer).
    for name in [
        "arrow-buffer-offset-past-end-1.arrow",
        "arrow-buffer-offset-past-end-2.arrow",
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("SLAKE");
        copy_tree(&fixture("hf_layouts/biomed/SLAKE"), &dir);
        std::fs::copy(
            fixture("mutation").join(name),
            dir.join("data-00000-of-00001.arrow"),
        )
        .unwrap();
        install_hook();
        let error = benchmark_read(BenchmarkTask::Slake)(&dir).unwrap_err();
        assert!(
            error.contains("data-00000-of-00001.arrow") && error.contains("damaged"),
            "{name}: {error}"
        );
    }
}

#[test]
fn regression_damaged_parquet_metadata_is_a_named_error() {
    // parquet 60 panicked on this PMC-VQA file ("column start and length should not be
    // negative", 11 bits flipped in its footer).
    let path = fixture("mutation/parquet-negative-column-offset.parquet");
    install_hook();
    let error = benchmark_read(BenchmarkTask::PmcVqa)(&path).unwrap_err();
    assert!(
        error.contains("parquet-negative-column-offset.parquet") && error.contains("damaged"),
        "{error}"
    );
}

#[test]
fn regression_zero_vision_image_size_is_named() {
    // `vision_config.image_size: 0` divided by zero in LLaVA-NeXT's config check.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("m");
    copy_tree(&fixture("family_export/llava_next/model"), &dir);
    std::fs::copy(
        fixture("mutation/llava-next-zero-image-size-config.json"),
        dir.join("config.json"),
    )
    .unwrap();
    let error = common::load_error(&dir);
    assert!(
        error.contains("config.json") && error.contains("vision_config.image_size"),
        "{error}"
    );
}

#[test]
fn regression_resumed_counters_cannot_overflow() {
    // A trainer_state.json with `tokens_seen: 2^64 - 1` overflowed when the next step added
    // its tokens; an optimizer step past the trainer's would overflow AdamW's count.
    let tmp = tempfile::tempdir().unwrap();
    let stopped = StoppedRun::new(tmp.path());
    let state_path = stopped
        .run
        .join(&stopped.first_checkpoint)
        .join("trainer_state.json");
    std::fs::copy(
        fixture("mutation/trainer-state-huge-optimizer-step.json"),
        &state_path,
    )
    .unwrap();
    let copy = tmp.path().join("resumed");
    copy_tree(&stopped.run, &copy);
    stopped.train(&copy, true).unwrap();
    let mut state: Value =
        serde_json::from_str(&std::fs::read_to_string(&state_path).unwrap()).unwrap();
    state["extra"] = json!({"optimizer_step": u64::MAX});
    std::fs::write(&state_path, state.to_string()).unwrap();
    let error = stopped.train(&stopped.run, true).unwrap_err();
    assert!(
        error.contains("trainer_state.json") && error.contains("extra.optimizer_step"),
        "{error}"
    );
}

#[test]
fn regression_tokenizer_that_panics_on_first_encode_is_named_at_load() {
    // tokenizers 0.23 loaded this file, then panicked on the first encode ("no entry found
    // for key": the post-processor names a special token it does not define).
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("m");
    copy_tree(&fixture("family_export/llava_next/model"), &dir);
    std::fs::copy(
        fixture("mutation/tokenizer-undefined-special-token.json"),
        dir.join("tokenizer.json"),
    )
    .unwrap();
    install_hook();
    let error = common::load_error(&dir);
    assert!(
        error.contains("tokenizer.json") && error.contains("fails on a test text"),
        "{error}"
    );
}
