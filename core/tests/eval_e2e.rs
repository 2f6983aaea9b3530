//! `eval` end to end on the tiny preset: a JSONL benchmark with image files and a parquet
//! benchmark in the Hugging Face `datasets` layout (image struct of bytes + path), batched
//! and one at a time, resumed, scored with the paper's metric; the benchmark layouts of the
//! Hugging Face tools (`save_to_disk`, parquet branch) read as the JSONL rows do.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use adamllm::burn::tensor::{DType, Device};
use adamllm::eval::BenchmarkTask;
use adamllm::eval::benchmark::{ReadOptions, read_benchmark};
use adamllm::eval::custom_task::EvalTask;
use adamllm::eval::runner::{EvalOptions, run_eval};
use adamllm::models::Model;
use adamllm::models::qwen2_vl::presets::{Preset, init_model_dir};
use arrow_array::{ArrayRef, BinaryArray, RecordBatch, StringArray, StructArray};
use arrow_schema::{DataType, Field, Fields};
use parquet::arrow::ArrowWriter;

fn png_bytes(rgb: [u8; 3], w: u32, h: u32) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    image::RgbImage::from_pixel(w, h, image::Rgb(rgb))
        .write_to(&mut out, image::ImageFormat::Png)
        .unwrap();
    out.into_inner()
}

/// An `image` column as `datasets` stores it: a struct of encoded `bytes` and `path`.
fn image_column(colors: &[[u8; 3]], paths: &[Option<&str>]) -> StructArray {
    let encoded: Vec<Vec<u8>> = colors.iter().map(|c| png_bytes(*c, 84, 56)).collect();
    let bytes: ArrayRef = Arc::new(BinaryArray::from(
        encoded
            .iter()
            .map(|b| Some(b.as_slice()))
            .collect::<Vec<_>>(),
    ));
    let paths: ArrayRef = Arc::new(StringArray::from(paths.to_vec()));
    StructArray::try_new(
        Fields::from(vec![
            Field::new("bytes", DataType::Binary, true),
            Field::new("path", DataType::Utf8, true),
        ]),
        vec![bytes, paths],
        None,
    )
    .unwrap()
}

/// Writes `image`, `input` and `label` columns as one parquet file.
fn write_parquet(path: &Path, image: StructArray, input: ArrayRef, label: ArrayRef) {
    let batch = RecordBatch::try_from_iter(vec![
        ("image", Arc::new(image) as ArrayRef),
        ("input", input),
        ("label", label),
    ])
    .unwrap();
    let mut writer =
        ArrowWriter::try_new(File::create(path).unwrap(), batch.schema(), None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
}

fn tiny_model(dir: &Path) -> Model {
    let path = dir.join("model");
    init_model_dir(&path, Preset::Tiny, 2, false).unwrap();
    Model::load(&path, &Device::flex(), DType::F32).unwrap()
}

fn lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn jsonl_benchmark_batched_equals_one_at_a_time_and_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(tmp.path());
    let mut text = String::new();
    let rows = [
        ("Is there a fracture?", "no", "CLOSED", [10, 10, 10], 64),
        (
            "Which organ is shown?",
            "left lung",
            "OPEN",
            [200, 200, 200],
            90,
        ),
        ("Is the image normal?", "yes", "CLOSED", [90, 20, 20], 120),
        ("What modality is this?", "x-ray", "OPEN", [30, 30, 160], 70),
        ("Is there an effusion?", "no", "CLOSED", [0, 120, 0], 56),
    ];
    for (i, (q, label, kind, rgb, side)) in rows.iter().enumerate() {
        std::fs::write(
            tmp.path().join(format!("img{i}.png")),
            png_bytes(*rgb, *side, 56),
        )
        .unwrap();
        text.push_str(
            &serde_json::json!({"input": q, "label": label, "answer_type": kind,
                "image": format!("img{i}.png")})
            .to_string(),
        );
        text.push('\n');
    }
    let bench = tmp.path().join("VQA_RAD.jsonl");
    std::fs::write(&bench, text).unwrap();
    let task = EvalTask::Builtin(BenchmarkTask::VqaRad);
    let read = ReadOptions {
        required_fields: task.required_fields(),
        ..Default::default()
    };
    let rows = read_benchmark(&bench, &read).unwrap();
    assert_eq!(rows.len(), 5);

    let eval = |name: &str, batch_size: usize, limit: Option<usize>| {
        let out = tmp.path().join(name);
        let opts = EvalOptions {
            batch_size,
            limit,
            max_new_tokens: Some(5),
            pixels: None,
        };
        let summary = run_eval(&model, &task, &rows, &out, &opts, &mut |_, _| {}).unwrap();
        (out, summary)
    };
    let (one_dir, one) = eval("one", 1, None);
    let (batch_dir, batched) = eval("batched", 3, None);
    let preds = |dir: &Path| -> Vec<String> {
        lines(&dir.join("predictions.jsonl"))
            .iter()
            .map(|v| v["pred"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(preds(&one_dir).len(), 5);
    assert_eq!(
        preds(&one_dir),
        preds(&batch_dir),
        "batching changed greedy answers"
    );
    assert_eq!(one.results, batched.results);
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(one_dir.join("results.json")).unwrap())
            .unwrap();
    let text = results.to_string();
    assert!(
        text.contains("OPEN recall") && text.contains("CLOSED yes/no accuracy"),
        "{text}"
    );
    assert!(text.contains("llava_med"), "metric not recorded: {text}");
    assert!(
        std::fs::read_to_string(one_dir.join("results.md"))
            .unwrap()
            .contains("VQA_RAD")
    );
    // The predictions file keeps every benchmark field and scores like `adamllm score`.
    let scored = adamllm::eval::score_predictions_file(
        BenchmarkTask::VqaRad,
        &one_dir.join("predictions.jsonl"),
    )
    .unwrap();
    assert_eq!(scored.test_num, 5);

    // A run stopped after 2 rows continues where it stopped and ends with the same file.
    let (part_dir, part) = eval("part", 1, Some(2));
    assert_eq!(part.examples, 2);
    std::fs::rename(
        part_dir.join("predictions.jsonl"),
        part_dir.join("predictions.partial.jsonl"),
    )
    .unwrap();
    let opts = EvalOptions {
        batch_size: 2,
        limit: None,
        max_new_tokens: Some(5),
        pixels: None,
    };
    let resumed = run_eval(&model, &task, &rows, &part_dir, &opts, &mut |_, _| {}).unwrap();
    assert_eq!(
        resumed.generated, 3,
        "resumed run regenerated finished rows"
    );
    assert_eq!(preds(&part_dir), preds(&one_dir));
}

#[test]
fn parquet_benchmark_with_embedded_images() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(tmp.path());
    let image = image_column(
        &[[200, 150, 40], [120, 60, 20], [240, 240, 200]],
        &[Some("a.png"), Some("b.png"), None],
    );
    let input: ArrayRef = Arc::new(StringArray::from(vec![
        "What dish is this?",
        "Name the food.",
        "Which food is shown?",
    ]));
    let label: ArrayRef = Arc::new(StringArray::from(vec!["bibimbap", "hot dog", "sushi"]));
    let file = tmp.path().join("Food101.parquet");
    write_parquet(&file, image, input, label);

    let task = EvalTask::Builtin(BenchmarkTask::Food101);
    assert_eq!(task.max_new_tokens(), 256);
    let read = ReadOptions {
        required_fields: task.required_fields(),
        ..Default::default()
    };
    let rows = read_benchmark(&file, &read).unwrap();
    assert_eq!(rows.len(), 3);
    let out = tmp.path().join("food");
    let opts = EvalOptions {
        batch_size: 2,
        limit: None,
        max_new_tokens: Some(4),
        pixels: None,
    };
    let summary = run_eval(&model, &task, &rows, &out, &opts, &mut |_, _| {}).unwrap();
    assert_eq!(summary.examples, 3);
    let preds = lines(&out.join("predictions.jsonl"));
    assert_eq!(preds.len(), 3);
    assert_eq!(preds[1]["label"], "hot dog");
    assert!(preds.iter().all(|p| p["pred"].is_string()));
    let keys: Vec<&str> = summary.scores.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, vec!["acc"]);

    // A label outside the Food101 vocabulary is refused before any generation.
    let bad_label: ArrayRef = Arc::new(StringArray::from(vec!["not a dish"]));
    let input: ArrayRef = Arc::new(StringArray::from(vec!["q"]));
    let image = image_column(&[[1, 2, 3]], &[None]);
    let bad = tmp.path().join("bad.parquet");
    write_parquet(&bad, image, input, bad_label);
    let rows = read_benchmark(&bad, &read).unwrap();
    let err = run_eval(
        &model,
        &task,
        &rows,
        &tmp.path().join("bad"),
        &opts,
        &mut |_, _| {},
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("not a dish"), "{err}");
    assert!(!tmp.path().join("bad/predictions.jsonl").exists());
}

/// The decoded pixels of a row's image, however it is stored.
fn row_pixels(row: &adamllm::eval::benchmark::BenchmarkRow) -> Vec<u8> {
    use adamllm::eval::benchmark::ImageSource;
    let image = match row.image.as_ref().expect("an image") {
        ImageSource::Path(path) => image::open(path).unwrap(),
        ImageSource::Bytes { bytes, .. } => image::load_from_memory(bytes).unwrap(),
    };
    image.to_rgb8().into_raw()
}

#[test]
fn benchmark_layouts_read_the_same_rows_and_pixels() {
    // tests/fixtures/hf_layouts: the same rows as `datasets` save_to_disk folders (the repos'
    // main branch, VQA_RAD in two shards), the parquet branch, and JSONL with PNG files.
    use adamllm::eval::hf_layout::locate_task;
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/hf_layouts");
    let tasks = [
        ("biomed", BenchmarkTask::VqaRad, 4),
        ("biomed", BenchmarkTask::Slake, 4),
        ("biomed", BenchmarkTask::PathVqa, 4),
        ("biomed", BenchmarkTask::PmcVqa, 3),
        ("food", BenchmarkTask::Food101, 3),
        ("food", BenchmarkTask::FoodSeg103, 3),
        ("food", BenchmarkTask::Nutrition5K, 3),
        ("food", BenchmarkTask::Recipe1M, 3),
    ];
    for (repo, task, count) in tasks {
        let options = ReadOptions {
            required_fields: EvalTask::Builtin(task).required_fields(),
            ..ReadOptions::default()
        };
        let read = |dir: PathBuf| {
            let found =
                locate_task(&dir, task).unwrap_or_else(|| panic!("{task:?} in {}", dir.display()));
            read_benchmark(&found, &options).unwrap()
        };
        let arrow = read(root.join(repo));
        let parquet = read(root.join("parquet"));
        let jsonl = read(root.join("jsonl"));
        assert_eq!(arrow.len(), count, "{task:?}");
        for ((a, p), j) in arrow.iter().zip(&parquet).zip(&jsonl) {
            assert_eq!(a.index, j.index);
            assert_eq!(a.index, p.index);
            let text = |r: &adamllm::eval::benchmark::BenchmarkRow| {
                let mut f = r.fields.clone();
                f.remove("image");
                f
            };
            assert_eq!(text(a), text(j), "{task:?} row {}", a.index);
            assert_eq!(text(a), text(p), "{task:?} row {}", a.index);
            let pixels = row_pixels(a);
            assert_eq!(pixels, row_pixels(p), "{task:?} row {}", a.index);
            assert_eq!(pixels, row_pixels(j), "{task:?} row {}", a.index);
        }
        // Rows of different indices differ (the images are drawn from the row).
        assert_ne!(row_pixels(&arrow[0]), row_pixels(&arrow[1]), "{task:?}");
    }
}
