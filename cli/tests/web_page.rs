//! The browser page in headless Chromium (web/tests/page_test.mjs), checked against the CLI:
//!
//! * CPU WebAssembly: the built-in demo benchmark's scores shown on the page equal
//!   `adamllm score` on the predictions the page offers for download, and `adamllm eval` on the
//!   same model and benchmark writes byte-identical predictions; the synthesis panel's triplet
//!   and judge label equal `adamllm synthesize` + `adamllm filter` on the same image and caption.
//! * WebGPU (Chromium's SwiftShader adapter, slow: one row, two tokens): same predictions as
//!   `adamllm eval`.
//! * A malformed benchmark file gives a readable error on the page, and the page still works.
//!
//! Every request the browser made must be to the page's own origin. Screenshots and what the
//! page showed are kept in `tests/output/web/<case>/`.
//!
//! Needs the page built (`bash web/build.sh`), Debian's chromium and `npm ci` in web/tests;
//! `scripts/test.sh` does all three. `ADAMLLM_SKIP_BROWSER=1` skips these tests (saying so).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use common::{ok, run, stdout};
use serde_json::Value;

/// One Chromium at a time: two cores, and the WebGPU case is slow.
static BROWSER: Mutex<()> = Mutex::new(());

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn demo() -> PathBuf {
    repo().join("web/www/demo")
}

/// False (with a note) when the environment asks to skip; panics when the page is not built.
fn page_available() -> bool {
    if std::env::var_os("ADAMLLM_SKIP_BROWSER").is_some() {
        eprintln!("ADAMLLM_SKIP_BROWSER is set: the browser page is not tested");
        return false;
    }
    let wasm = repo().join("web/www/pkg/adamllm_web_bg.wasm");
    assert!(
        wasm.exists(),
        "{} is missing: build the page with `bash web/build.sh` (scripts/test.sh does)",
        wasm.display()
    );
    assert!(
        repo()
            .join("web/tests/node_modules/playwright-core")
            .exists(),
        "playwright-core is missing: run `npm ci` in web/tests (scripts/test.sh does)"
    );
    true
}

/// Copies the files of a flat folder (a model folder) into `to`.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

fn output_dir(case: &str) -> PathBuf {
    let dir = repo().join("tests/output/web").join(case);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs the page script in `mode` and returns what it reported (page.json).
fn run_page(mode: &str, out: &Path, env: &[(&str, String)]) -> Value {
    let _one_at_a_time = BROWSER.lock().unwrap_or_else(|e| e.into_inner());
    let mut command = Command::new("node");
    command
        .arg(repo().join("web/tests/page_test.mjs"))
        .env("ADAMLLM_WEB_ROOT", repo().join("web/www"))
        .env("ADAMLLM_PAGE_MODE", mode)
        .env("ADAMLLM_PAGE_OUT", out);
    for (key, value) in env {
        command.env(key, value);
    }
    let output = command.output().expect("node runs");
    let report: Value = std::fs::read(out.join("page.json"))
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or(Value::Null);
    assert!(
        output.status.success(),
        "the page test failed ({mode}): {}\n{}\nreport: {report:#}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let off_origin = report["off_origin_requests"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        off_origin.is_empty(),
        "requests off the page's origin: {off_origin:?}"
    );
    let origin = report["origin"].as_str().unwrap().to_owned();
    for request in report["requests"].as_array().unwrap() {
        let url = request.as_str().unwrap();
        assert!(
            url.starts_with(&origin) || url.starts_with("blob:") || url.starts_with("data:"),
            "request off the page's origin: {url}"
        );
    }
    assert!(out.join("page.png").exists(), "no screenshot");
    report
}

/// `adamllm eval` on the built-in demo model and benchmark with the page's settings.
fn cli_eval(out: &Path, limit: Option<&str>, max_new_tokens: Option<&str>) -> Vec<u8> {
    cli_eval_model(&demo().join("model"), out, limit, max_new_tokens, &[])
}

/// `adamllm eval` of `model` on the built-in demo benchmark with the page's settings.
fn cli_eval_model(
    model: &Path,
    out: &Path,
    limit: Option<&str>,
    max_new_tokens: Option<&str>,
    extra: &[&str],
) -> Vec<u8> {
    let task = demo().join("benchmark/food_dish.yaml");
    let data = demo().join("benchmark/food_dish.jsonl");
    let pixels = (112 * 112).to_string();
    let mut args = vec![
        "eval",
        "--model",
        model.to_str().unwrap(),
        "--task",
        task.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--min-pixels",
        &pixels,
        "--max-pixels",
        &pixels,
        "--device",
        "cpu",
    ];
    if let Some(limit) = limit {
        args.extend(["--limit", limit]);
    }
    if let Some(tokens) = max_new_tokens {
        args.extend(["--max-new-tokens", tokens]);
    }
    args.extend(extra);
    ok(&run(&args));
    std::fs::read(out.join("predictions.jsonl")).unwrap()
}

fn assert_same_predictions(page: &[u8], cli: &[u8]) {
    let page_text = String::from_utf8_lossy(page);
    let cli_text = String::from_utf8_lossy(cli);
    assert!(!cli_text.trim().is_empty(), "the CLI wrote no predictions");
    assert_eq!(
        page_text, cli_text,
        "the page's predictions.jsonl differs from `adamllm eval`'s"
    );
}

#[test]
fn cpu_page_scores_and_predictions_match_the_cli() {
    if !page_available() {
        return;
    }
    let out = output_dir("cpu");
    let report = run_page("cpu", &out, &[("ADAMLLM_PAGE_SYNTH", "1".into())]);
    assert_eq!(report["backend"], "flex", "{report:#}");

    // Displayed scores = `adamllm score` on the page's own predictions.
    let page_predictions = out.join("predictions.jsonl");
    let task = demo().join("benchmark/food_dish.yaml");
    let scored = run(&[
        "score",
        "--task",
        task.to_str().unwrap(),
        "--predictions",
        page_predictions.to_str().unwrap(),
    ]);
    ok(&scored);
    let cli_score: Value = serde_json::from_str(stdout(&scored).trim()).unwrap();
    let shown = report["scores"].as_array().unwrap();
    assert!(!shown.is_empty(), "no scores shown: {report:#}");
    for cell in shown {
        let key = cell["key"].as_str().unwrap();
        let cli_value = cli_score[key]
            .as_f64()
            .unwrap_or_else(|| panic!("score lacks {key}"));
        assert_eq!(cell["value"].as_f64().unwrap(), cli_value, "{key}");
        assert_eq!(cell["text"].as_str().unwrap(), format!("{cli_value:.2}"));
    }
    let rows = std::fs::read_to_string(&page_predictions)
        .unwrap()
        .lines()
        .count();
    assert_eq!(rows, 16, "every row of the demo benchmark is answered");

    // `adamllm eval` on the same model and benchmark: byte-identical predictions.
    let cli_dir = out.join("cli-eval");
    let cli = cli_eval(&cli_dir, None, None);
    assert_same_predictions(&std::fs::read(&page_predictions).unwrap(), &cli);
    let page_results: Value =
        serde_json::from_slice(&std::fs::read(out.join("results.json")).unwrap()).unwrap();
    let cli_results: Value =
        serde_json::from_slice(&std::fs::read(cli_dir.join("results.json")).unwrap()).unwrap();
    let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(&page_results), keys(&cli_results));
    for key in keys(&cli_results) {
        if key != "model" {
            assert_eq!(
                page_results[&key], cli_results[&key],
                "results.json `{key}`"
            );
        }
    }

    // The synthesis panel = `adamllm synthesize` + `adamllm filter` on the same pair.
    let synthesis = &report["synthesis"];
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(demo().join("manifest.json")).unwrap()).unwrap();
    let caption = manifest["synthesis_sample"]["caption"].as_str().unwrap();
    let pairs_dir = out.join("cli-synthesis");
    std::fs::create_dir_all(&pairs_dir).unwrap();
    std::fs::copy(demo().join("sample.png"), pairs_dir.join("sample.png")).unwrap();
    let pairs = serde_json::json!([{
        "images": ["sample.png"],
        "messages": [
            {"role": "user", "content": "<image>Describe the image."},
            {"role": "assistant", "content": caption},
        ],
    }]);
    std::fs::write(pairs_dir.join("pairs.json"), pairs.to_string()).unwrap();
    let synthesizer = demo().join("synthesizer");
    let judge = demo().join("judge");
    let (pairs_file, syn_out) = (pairs_dir.join("pairs.json"), pairs_dir.join("syn"));
    ok(&run(&[
        "synthesize",
        "--synthesizer",
        synthesizer.to_str().unwrap(),
        "--data",
        pairs_file.to_str().unwrap(),
        "--out",
        syn_out.to_str().unwrap(),
        "--device",
        "cpu",
    ]));
    let triplets = syn_out.join("syn_task_triplets.jsonl");
    let filtered = pairs_dir.join("filtered.jsonl");
    ok(&run(&[
        "filter",
        "--judge",
        judge.to_str().unwrap(),
        "--in",
        triplets.to_str().unwrap(),
        "--out",
        filtered.to_str().unwrap(),
        "--shots",
        "0",
        "--no-instructions",
        "--device",
        "cpu",
    ]));
    let row: Value = serde_json::from_str(
        std::fs::read_to_string(&filtered)
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    let syn_row: Value = serde_json::from_str(
        std::fs::read_to_string(&triplets)
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(synthesis["pred"], syn_row["pred"], "synthesizer output");
    assert_eq!(synthesis["consistency"], row["consistency"], "judge label");
    if let Some(qa) = row.get("collected_QA") {
        assert_eq!(synthesis["triplet"]["instruction"], qa["Q"]);
        assert_eq!(synthesis["triplet"]["precise_answer"], qa["precise_A"]);
    }
    assert_eq!(
        synthesis["consistency"], "yes",
        "the demo sample was picked among pairs the judge kept"
    );
}

#[test]
fn webgpu_page_predictions_match_the_cli() {
    if !page_available() {
        return;
    }
    let out = output_dir("webgpu");
    let report = run_page(
        "webgpu",
        &out,
        &[
            ("ADAMLLM_PAGE_LIMIT", "1".into()),
            ("ADAMLLM_PAGE_MAX_NEW_TOKENS", "2".into()),
        ],
    );
    assert_eq!(
        report["backend"], "webgpu",
        "headless Chromium with --enable-unsafe-webgpu should offer a WebGPU adapter: {report:#}"
    );
    let cli = cli_eval(&out.join("cli-eval"), Some("1"), Some("2"));
    assert_same_predictions(&std::fs::read(out.join("predictions.jsonl")).unwrap(), &cli);
}

#[test]
fn broken_benchmark_file_is_a_readable_error_and_the_page_survives() {
    if !page_available() {
        return;
    }
    let out = output_dir("broken");
    let broken = out.join("broken.jsonl");
    std::fs::write(
        &broken,
        "{\"image\": \"a.png\", \"input\": \"Which dish?\", \"label\": \"pizza\"}\n{\"image\": \"b.png\", \"input\": \n",
    )
    .unwrap();
    // A model folder whose config claims an absurd merge size (once a panic in the core). A
    // million, not the reported 10^12: the browser's usize has 32 bits, and there 10^12 is
    // already refused by the JSON reader (file, line and column named, not the key).
    let broken_model = out.join("broken-model");
    copy_dir(&demo().join("model"), &broken_model);
    let config_path = broken_model.join("config.json");
    let mut config: Value = serde_json::from_slice(&std::fs::read(&config_path).unwrap()).unwrap();
    config["vision_config"]["spatial_merge_size"] = serde_json::json!(1_000_000);
    std::fs::write(&config_path, config.to_string()).unwrap();
    let report = run_page(
        "broken",
        &out,
        &[
            ("ADAMLLM_PAGE_BROKEN", broken.display().to_string()),
            (
                "ADAMLLM_PAGE_BROKEN_MODEL",
                broken_model.display().to_string(),
            ),
        ],
    );
    let model_error = report["model_error_text"].as_str().unwrap_or_default();
    assert!(
        model_error.contains("config.json")
            && model_error.contains("vision_config.spatial_merge_size")
            && model_error.contains("exceeds the limit of 64"),
        "the page should name the file, key and limit: {model_error:?}"
    );
    let crash = report["crash_text"].as_str().unwrap_or_default();
    assert!(
        crash.contains("debug_panic") && crash.contains("was restarted"),
        "a panic in the engine should restart it and say so: {crash:?}"
    );
    let error = report["error_text"].as_str().unwrap_or_default();
    assert!(
        error.contains("broken.jsonl") && error.contains("line 2"),
        "the error should name the file and line: {error:?}"
    );
    let after = report["after_error"].as_str().unwrap_or_default();
    assert!(
        after.starts_with("Done"),
        "the page did not recover: {report:#}"
    );
}

/// A LLaVA-NeXT folder picked in the page (the paper's synthesizer family) answers the demo
/// benchmark exactly as `adamllm eval` does on the same folder.
#[test]
fn a_picked_llava_next_folder_matches_the_cli() {
    if !page_available() {
        return;
    }
    let out = output_dir("llava-next");
    let model = out.join("llava-next-tiny");
    ok(&run(&[
        "init",
        "--out",
        model.to_str().unwrap(),
        "--preset",
        "llava-next-tiny",
        "--seed",
        "2",
    ]));
    let report = run_page(
        "cpu",
        &out,
        &[
            ("ADAMLLM_PAGE_MODEL_DIR", model.display().to_string()),
            ("ADAMLLM_PAGE_LIMIT", "3".into()),
            ("ADAMLLM_PAGE_MAX_NEW_TOKENS", "4".into()),
        ],
    );
    let info = report["model_info"].as_str().unwrap();
    assert!(info.contains("llava_next"), "{info}");
    let cli = cli_eval_model(&model, &out.join("cli-eval"), Some("3"), Some("4"), &[]);
    assert_same_predictions(&std::fs::read(out.join("predictions.jsonl")).unwrap(), &cli);
}

#[test]
fn q8_weights_chosen_on_the_page_match_the_cli_quantize() {
    if !page_available() {
        return;
    }
    let out = output_dir("q8");
    let report = run_page(
        "cpu",
        &out,
        &[
            ("ADAMLLM_PAGE_WEIGHTS", "q8".into()),
            ("ADAMLLM_PAGE_LIMIT", "2".into()),
            ("ADAMLLM_PAGE_MAX_NEW_TOKENS", "3".into()),
        ],
    );
    let info = report["model_info"].as_str().unwrap();
    assert!(
        info.contains("q8 (") && info.contains("linear layers"),
        "{info}"
    );
    let cli = cli_eval_model(
        &demo().join("model"),
        &out.join("cli-eval"),
        Some("2"),
        Some("3"),
        &["--quantize", "q8"],
    );
    assert_same_predictions(&std::fs::read(out.join("predictions.jsonl")).unwrap(), &cli);
}
