//! The page's jobs (`adamllm_web::page`) run natively on the built-in demo: the same bytes as
//! the CLI's evaluation, models refused by a device's buffer limit, picked images matched and
//! missing ones named. The browser itself is tested in `cli/tests/web_page.rs`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use adamllm::device::{DeviceChoice, select_device};
use adamllm::eval::benchmark::{ReadOptions, read_benchmark};
use adamllm::eval::runner::run_eval;
use adamllm::models::files::ModelFiles;
use adamllm_web::page::{
    EvalSettings, TaskSpec, check_fits, evaluate, inspect_model, load_model, parse_weights_choice,
    read_picked_benchmark,
};

fn demo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("www/demo")
}

/// A folder's files as the page receives them (paths under a picked folder name).
fn picked(dir: &Path, folder: &str) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_file())
        .map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            (format!("{folder}/{name}"), std::fs::read(e.path()).unwrap())
        })
        .collect();
    files.sort();
    files
}

fn demo_images() -> BTreeMap<String, Vec<u8>> {
    picked(&demo().join("benchmark/images"), "picked/images")
        .into_iter()
        .collect()
}

fn settings(limit: usize) -> EvalSettings {
    EvalSettings {
        task: TaskSpec::Custom {
            file: "food_dish.yaml".into(),
            yaml: std::fs::read_to_string(demo().join("benchmark/food_dish.yaml")).unwrap(),
        },
        limit: Some(limit),
        max_new_tokens: Some(8),
        batch_size: Some(2),
        min_pixels: Some(112 * 112),
        max_pixels: Some(112 * 112),
    }
}

/// The CLI's evaluation of the demo benchmark: the model loaded from disk, the rows read from
/// the file, the files written by `run_eval` into `out`; returns `predictions.jsonl`.
fn cli_eval(model_dir: &Path, settings: &EvalSettings, out: &Path) -> String {
    let device = select_device(DeviceChoice::Cpu).unwrap();
    let task = settings.task.resolve().unwrap();
    let model =
        adamllm::models::Model::load(model_dir, &device.device, adamllm::burn::tensor::DType::F32)
            .unwrap();
    let rows = read_benchmark(
        &demo().join("benchmark/food_dish.jsonl"),
        &ReadOptions {
            required_fields: task.required_fields(),
            ..ReadOptions::default()
        },
    )
    .unwrap();
    run_eval(
        &model,
        &task,
        &rows,
        out,
        &settings.options(),
        &mut |_, _| {},
    )
    .unwrap();
    std::fs::read_to_string(out.join("predictions.jsonl")).unwrap()
}

#[test]
fn page_evaluation_writes_the_cli_files_byte_for_byte() {
    let device = select_device(DeviceChoice::Cpu).unwrap();
    let files = ModelFiles::in_memory("demo-model", picked(&demo().join("model"), "demo-model"));
    let (model, info) = load_model(&files, &device, None).unwrap();
    assert_eq!(info.name, "demo-model");
    assert!(info.parameters > 100_000, "{info:?}");
    assert!(info.files.contains(&"model.safetensors".to_owned()));

    let settings = settings(5);
    let task = settings.task.resolve().unwrap();
    let bytes = std::fs::read(demo().join("benchmark/food_dish.jsonl")).unwrap();
    let rows = read_picked_benchmark(
        "food_dish.jsonl",
        bytes,
        &demo_images(),
        &task,
        settings.limit,
    )
    .unwrap();
    assert_eq!(rows.len(), 5);
    let mut calls = Vec::new();
    let outcome = pollster::block_on(evaluate(
        &model,
        &info.name,
        &settings,
        &rows,
        &|| 0.0,
        &mut |done, total| calls.push((done, total)),
    ))
    .unwrap();
    assert_eq!(calls, vec![(0, 5), (2, 5), (4, 5), (5, 5)]);
    assert!(outcome.generated_tokens > 0);

    // The CLI's path: the model from disk, rows from the file, files written by run_eval.
    let out = tempfile::tempdir().unwrap();
    let cli_predictions = cli_eval(&demo().join("model"), &settings, out.path());
    assert_eq!(outcome.predictions_jsonl, cli_predictions);
    let cli_results: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.path().join("results.json")).unwrap()).unwrap();
    let page_results: serde_json::Value = serde_json::from_str(&outcome.results_json).unwrap();
    for (key, value) in cli_results.as_object().unwrap() {
        if key != "model" {
            assert_eq!(&page_results[key], value, "{key}");
        }
    }
    assert_eq!(page_results["model"], "demo-model");
}

#[test]
fn a_model_larger_than_the_device_binding_limit_is_refused_before_loading() {
    let mut device = select_device(DeviceChoice::Cpu).unwrap();
    let files = ModelFiles::in_memory("demo-model", picked(&demo().join("model"), "demo-model"));
    let info = inspect_model(&files).unwrap();
    assert!(check_fits(&info, &device).is_ok(), "no limit on the CPU");
    device.max_binding_bytes = Some(info.largest_tensor_bytes - 1);
    let message = check_fits(&info, &device).unwrap_err();
    assert!(
        message.contains(&info.largest_tensor) && message.contains("per buffer"),
        "{message}"
    );
    let error = load_model(&files, &device, None).err().unwrap();
    assert_eq!(error, message);
}

#[test]
fn picked_benchmarks_name_the_missing_image_and_the_bad_line() {
    let task = settings(3).task.resolve().unwrap();
    let bytes = std::fs::read(demo().join("benchmark/food_dish.jsonl")).unwrap();
    let mut images = demo_images();
    images.retain(|name, _| !name.ends_with("food-test-00001.png"));
    let error =
        read_picked_benchmark("food_dish.jsonl", bytes, &images, &task, Some(3)).unwrap_err();
    assert!(
        error.contains("food_dish.jsonl")
            && error.contains("line 2")
            && error.contains("images/food-test-00001.png"),
        "{error}"
    );
    let broken =
        b"{\"image\": \"a.png\", \"input\": \"q\", \"label\": \"fried rice\"}\n{\"input\": \n";
    let error =
        read_picked_benchmark("broken.jsonl", broken.to_vec(), &images, &task, None).unwrap_err();
    assert!(error.contains("broken.jsonl: line 2"), "{error}");

    let model = ModelFiles::in_memory(
        "bad",
        [(
            "bad/config.json".to_owned(),
            b"{\"hidden_size\": }".to_vec(),
        )],
    );
    let error = inspect_model(&model).unwrap_err();
    assert!(
        error.contains("bad/config.json") && error.contains("line 1"),
        "{error}"
    );
}

/// A picked LLaVA-NeXT folder evaluates in the page exactly as `adamllm eval` does, and a
/// LLaVA-NeXT synthesizer with a Llama judge runs the synthesis panel.
#[test]
fn picked_llava_next_and_llama_folders_run_in_the_page() {
    use adamllm::models::registry::family_of_preset;
    use adamllm_web::page::{SynthSettings, synthesize_and_judge};

    let tmp = tempfile::tempdir().unwrap();
    let device = select_device(DeviceChoice::Cpu).unwrap();
    let mut loaded = Vec::new();
    for preset in ["llava-next-tiny", "llama-tiny"] {
        let dir = tmp.path().join(preset);
        family_of_preset(preset)
            .unwrap()
            .write_preset(preset, &dir, 4)
            .unwrap();
        let files = ModelFiles::in_memory(preset, picked(&dir, preset));
        let (model, info) = load_model(&files, &device, None).unwrap();
        assert_eq!(
            info.model_type,
            if preset == "llama-tiny" {
                "llama"
            } else {
                "llava_next"
            }
        );
        loaded.push((dir, model, info));
    }
    let (llava_dir, llava, info) = &loaded[0];
    assert_eq!(info.family, "llava_next");

    let settings = settings(3);
    let task = settings.task.resolve().unwrap();
    let bytes = std::fs::read(demo().join("benchmark/food_dish.jsonl")).unwrap();
    let rows =
        read_picked_benchmark("food_dish.jsonl", bytes, &demo_images(), &task, Some(3)).unwrap();
    let outcome = pollster::block_on(evaluate(
        llava,
        "llava-next-tiny",
        &settings,
        &rows,
        &|| 0.0,
        &mut |_, _| {},
    ))
    .unwrap();
    let out = tempfile::tempdir().unwrap();
    assert_eq!(
        outcome.predictions_jsonl,
        cli_eval(llava_dir, &settings, out.path())
    );

    let image = std::fs::read(demo().join("benchmark/images/food-test-00001.png")).unwrap();
    let synth = SynthSettings {
        caption: "A bowl of noodle soup with carrots.".into(),
        max_new_tokens: Some(6),
        ..SynthSettings::default()
    };
    let judge = &loaded[1].1;
    let outcome = pollster::block_on(synthesize_and_judge(
        llava,
        Some(judge),
        &image,
        &synth,
        &|| 0.0,
    ))
    .unwrap();
    assert!(outcome.tokens > 0 && outcome.tokens <= 6, "{outcome:?}");
    assert_eq!(outcome.finish_reason, "length");
    // A random synthesizer writes no triplet; the judge says so rather than failing.
    assert_eq!(outcome.consistency.as_deref(), Some("no_triplet"));
}

#[test]
fn the_weights_choice_quantizes_the_linear_layers_it_can() {
    use adamllm::quantize::Quantization;
    let device = select_device(DeviceChoice::Cpu).unwrap();
    let files = ModelFiles::in_memory("demo-model", picked(&demo().join("model"), "demo-model"));
    let (_, dense) = load_model(&files, &device, None).unwrap();
    assert_eq!(
        (dense.quantize.as_deref(), dense.quantized_linears),
        (None, 0)
    );
    let (_, q8) = load_model(&files, &device, Some(Quantization::Q8)).unwrap();
    assert_eq!(q8.quantize.as_deref(), Some("q8"));
    // The demo model's MLP is 176 wide, not whole blocks of 32: gate and up stay dense.
    assert!(q8.quantized_linears >= 4, "{q8:?}");
    assert_eq!(parse_weights_choice("dense"), Ok(None));
    assert_eq!(parse_weights_choice("q4"), Ok(Some(Quantization::Q4)));
    let error = parse_weights_choice("q3").unwrap_err();
    assert!(
        error.contains("\"q3\"") && error.contains("q8, q4"),
        "{error}"
    );
}
