//! End-to-end tests of the `adamllm` binary: the CLI contract of the foundation issue and
//! its bad-input behaviour (clear error naming the file and key/tensor/line, non-zero exit).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use adamllm::models::checkpoint::{CheckpointReader, NamedTensor, StorageDtype, write_safetensors};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_adamllm"));
    c.env("XDG_RUNTIME_DIR", "/tmp");
    c
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn fixture_model() -> PathBuf {
    repo().join("tests/fixtures/qwen2vl/cfg_a")
}

fn run(args: &[&str]) -> Output {
    bin().args(args).output().expect("binary runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}

/// Copies the non-weight files and the checkpoint of the fixture model into `dst`.
fn copy_model(dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for entry in std::fs::read_dir(fixture_model()).unwrap() {
        let p = entry.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        if name.ends_with(".json") && !name.contains("expected") && !name.contains("image")
            || name == "model.safetensors"
        {
            std::fs::copy(&p, dst.join(&name)).unwrap();
        }
    }
}

/// `adamllm generate` on the CPU with at most one image and one new token.
fn generate_once(model: &str, image: Option<&Path>, prompt: &str) -> Output {
    let mut args = vec!["generate", "--model", model, "--prompt", prompt];
    args.extend(["--max-new-tokens", "1", "--device", "cpu"]);
    if let Some(image) = image {
        args.extend(["--image", image.to_str().unwrap()]);
    }
    run(&args)
}

/// `adamllm loss` on the CPU, with extra flags.
fn loss_on_cpu(model: &Path, data: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["loss", "--model", model.to_str().unwrap()];
    args.extend(["--data", data.to_str().unwrap(), "--device", "cpu"]);
    args.extend(extra);
    run(&args)
}

fn expect_failure(o: &Output, needles: &[&str]) {
    assert!(
        !o.status.success(),
        "expected failure, got success: {}",
        stdout(o)
    );
    let e = stderr(o);
    for n in needles {
        assert!(e.contains(n), "stderr lacks {n:?}: {e}");
    }
    assert!(!e.contains("panicked"), "panic instead of an error: {e}");
}

#[test]
fn init_generate_and_loss_on_cpu() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("tiny");
    let m = model.to_str().unwrap();
    let o = run(&["init", "--out", m, "--preset", "tiny", "--seed", "3"]);
    assert!(o.status.success(), "{}", stderr(&o));
    for f in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "preprocessor_config.json",
        "chat_template.json",
        "generation_config.json",
    ] {
        assert!(model.join(f).exists(), "{f} missing");
    }
    // A second init refuses to overwrite.
    expect_failure(&run(&["init", "--out", m]), &["config.json", "--force"]);

    let image = repo().join("tests/fixtures/qwen2vl/cfg_a/one_image_0.png");
    let o = run(&[
        "generate",
        "--model",
        m,
        "--image",
        image.to_str().unwrap(),
        "--prompt",
        "What is shown?",
        "--max-new-tokens",
        "6",
        "--device",
        "cpu",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    let n = v["token_ids"].as_array().unwrap().len();
    assert!(n <= 6 && (n == 6 || v["finish_reason"] == "stop"), "{v}");

    // Sampling with a seed is reproducible.
    let sample = |seed: &str| {
        let o = run(&[
            "generate",
            "--model",
            m,
            "--prompt",
            "Hello",
            "--max-new-tokens",
            "8",
            "--temperature",
            "1.0",
            "--top-p",
            "0.9",
            "--seed",
            seed,
            "--device",
            "cpu",
            "--json",
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        stdout(&o)
    };
    assert_eq!(sample("7"), sample("7"));
}

#[test]
fn loss_matches_the_transformers_reference() {
    let data = fixture_model().join("one_image.json");
    let o = loss_on_cpu(&fixture_model(), &data, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert!(
        (v["loss"].as_f64().unwrap() - 7.586777687072754).abs() < 1e-4,
        "{v}"
    );
    assert_eq!(v["tokens"], 13);
    assert_eq!(v["examples"], 1);

    // JSONL with two rows, images relative to --images: mean over both rows' tokens.
    let tmp = tempfile::tempdir().unwrap();
    let jsonl = tmp.path().join("d.jsonl");
    let row = std::fs::read_to_string(&data).unwrap();
    let row: serde_json::Value = serde_json::from_str(&row).unwrap();
    let text = format!("{}\n{}\n", row, row);
    std::fs::write(&jsonl, text).unwrap();
    let images = fixture_model();
    let extra = ["--images", images.to_str().unwrap(), "--batch-size", "2"];
    let o = loss_on_cpu(&fixture_model(), &jsonl, &extra);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert!(
        (v["loss"].as_f64().unwrap() - 7.586777687072754).abs() < 1e-4,
        "{v}"
    );
    assert_eq!(v["tokens"], 26);
    assert_eq!(v["examples"], 2);
}

#[test]
fn bad_model_folders_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let generate_with = |dir: &Path| generate_once(dir.to_str().unwrap(), None, "hi");
    // Missing config.json.
    let d = tmp.path().join("no_config");
    copy_model(&d);
    std::fs::remove_file(d.join("config.json")).unwrap();
    expect_failure(&generate_with(&d), &["config.json"]);
    // Malformed config.json: line number.
    let d = tmp.path().join("bad_json");
    copy_model(&d);
    std::fs::write(
        d.join("config.json"),
        "{\n  \"hidden_size\": 64,\n  oops\n}",
    )
    .unwrap();
    expect_failure(&generate_with(&d), &["config.json", "line 3"]);
    // Inconsistent key: named.
    let d = tmp.path().join("bad_key");
    copy_model(&d);
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("config.json")).unwrap()).unwrap();
    cfg["num_key_value_heads"] = 3.into();
    std::fs::write(d.join("config.json"), cfg.to_string()).unwrap();
    expect_failure(&generate_with(&d), &["config.json", "num_key_value_heads"]);

    // Checkpoint problems: a missing tensor, a wrong shape, an unsupported dtype.
    let reader = CheckpointReader::open_dir(&fixture_model()).unwrap();
    let all: Vec<NamedTensor> = reader
        .names()
        .into_iter()
        .map(|n| {
            let shape = reader.shape(&n).unwrap().to_vec();
            let values = reader.read_f32(&n, &shape).unwrap();
            NamedTensor {
                name: n,
                shape,
                values,
            }
        })
        .collect();
    let d = tmp.path().join("missing_tensor");
    copy_model(&d);
    let fewer: Vec<NamedTensor> = all
        .iter()
        .filter(|t| t.name != "model.norm.weight")
        .map(|t| NamedTensor {
            name: t.name.clone(),
            shape: t.shape.clone(),
            values: t.values.clone(),
        })
        .collect();
    write_safetensors(&d.join("model.safetensors"), &fewer, StorageDtype::F32).unwrap();
    expect_failure(
        &generate_with(&d),
        &["model.safetensors", "model.norm.weight", "missing"],
    );

    let d = tmp.path().join("wrong_shape");
    copy_model(&d);
    let reshaped: Vec<NamedTensor> = all
        .iter()
        .map(|t| {
            let shape = if t.name == "model.norm.weight" {
                vec![32, 2]
            } else {
                t.shape.clone()
            };
            NamedTensor {
                name: t.name.clone(),
                shape,
                values: t.values.clone(),
            }
        })
        .collect();
    write_safetensors(&d.join("model.safetensors"), &reshaped, StorageDtype::F32).unwrap();
    expect_failure(
        &generate_with(&d),
        &["model.norm.weight", "expected [64]", "found [32, 2]"],
    );

    let d = tmp.path().join("bad_dtype");
    copy_model(&d);
    let mut bytes = std::fs::read(d.join("model.safetensors")).unwrap();
    // Relabel one F32 tensor as I32 in the header (same width, so offsets stay valid).
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header = String::from_utf8(bytes[8..8 + n].to_vec()).unwrap();
    let key = "\"model.norm.weight\":{\"dtype\":\"F32\"";
    assert!(header.contains(key), "{header}");
    let patched = header.replace(key, "\"model.norm.weight\":{\"dtype\":\"I32\"");
    bytes.splice(8..8 + n, patched.into_bytes());
    std::fs::write(d.join("model.safetensors"), &bytes).unwrap();
    expect_failure(
        &generate_with(&d),
        &["model.norm.weight", "unsupported dtype"],
    );

    // Truncated and non-safetensors files.
    let d = tmp.path().join("truncated");
    copy_model(&d);
    let bytes = std::fs::read(d.join("model.safetensors")).unwrap();
    std::fs::write(d.join("model.safetensors"), &bytes[..bytes.len() / 2]).unwrap();
    expect_failure(&generate_with(&d), &["model.safetensors", "truncated"]);
    std::fs::write(d.join("model.safetensors"), b"not a checkpoint at all").unwrap();
    expect_failure(
        &generate_with(&d),
        &["model.safetensors", "not a safetensors file"],
    );
}

#[test]
fn bad_prompts_and_images_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let m = fixture_model();
    let m = m.to_str().unwrap();
    // An image that does not decode.
    let broken = tmp.path().join("broken.png");
    std::fs::write(&broken, b"\x89PNG\r\n\x1a\nthis is not really a png").unwrap();
    let o = generate_once(m, Some(&broken), "x");
    expect_failure(&o, &["broken.png"]);
    // Aspect ratio over 200.
    let thin = tmp.path().join("thin.png");
    image::RgbImage::new(6000, 28).save(&thin).unwrap();
    let o = generate_once(m, Some(&thin), "x");
    expect_failure(&o, &["aspect ratio"]);
    // More placeholders than images, and the reverse.
    let img = repo().join("tests/fixtures/qwen2vl/cfg_a/one_image_0.png");
    let o = generate_once(m, Some(&img), "<image><image>x");
    expect_failure(&o, &["2 `<image>` placeholder(s) but 1 image(s)"]);
    let data = tmp.path().join("d.jsonl");
    std::fs::write(
        &data,
        format!(
            "{}\n",
            serde_json::json!({"messages": [{"role": "user", "content": "hi"},
                {"role": "assistant", "content": "ok"}], "images": [img]})
        ),
    )
    .unwrap();
    let o = loss_on_cpu(Path::new(m), &data, &[]);
    expect_failure(
        &o,
        &[
            "d.jsonl",
            "line 1",
            "0 `<image>` placeholder(s) but 1 image(s)",
        ],
    );
    // No assistant turn to train on.
    std::fs::write(
        &data,
        "{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}\n",
    )
    .unwrap();
    let o = loss_on_cpu(Path::new(m), &data, &[]);
    expect_failure(&o, &["d.jsonl", "line 1", "no assistant turn"]);
    // A sequence longer than the model's max positions.
    let d = tmp.path().join("short_model");
    copy_model(&d);
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("config.json")).unwrap()).unwrap();
    cfg["max_position_embeddings"] = 16.into();
    std::fs::write(d.join("config.json"), cfg.to_string()).unwrap();
    let o = run(&[
        "generate",
        "--model",
        d.to_str().unwrap(),
        "--prompt",
        "a long prompt that will not fit",
        "--device",
        "cpu",
    ]);
    expect_failure(&o, &["at most 16"]);
}

/// A file that claims more than any real model or image is refused with the file, the key or
/// tensor, the value and the limit, before anything that size is allocated: a non-zero exit,
/// never a panic or an out-of-memory kill.
#[test]
fn hostile_files_are_named_limits() {
    let tmp = tempfile::tempdir().unwrap();
    let generate_with = |dir: &Path| generate_once(dir.to_str().unwrap(), None, "hi");
    // The reported crash: a merge size that overflowed a multiplication.
    let d = tmp.path().join("huge_merge");
    copy_model(&d);
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("config.json")).unwrap()).unwrap();
    cfg["vision_config"]["spatial_merge_size"] = serde_json::json!(1_000_000_000_000_u64);
    std::fs::write(d.join("config.json"), cfg.to_string()).unwrap();
    expect_failure(
        &generate_with(&d),
        &[
            "config.json",
            "vision_config.spatial_merge_size",
            "1000000000000 exceeds the limit of 64",
        ],
    );
    // A checkpoint header claiming a tensor of 2^64 elements.
    let d = tmp.path().join("huge_tensor");
    copy_model(&d);
    let mut bytes = std::fs::read(d.join("model.safetensors")).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header = String::from_utf8(bytes[8..8 + n].to_vec()).unwrap();
    let key = "\"model.norm.weight\":{\"dtype\":\"F32\",\"shape\":[64]";
    assert!(header.contains(key), "{header}");
    let patched = header.replace(
        key,
        "\"model.norm.weight\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296]",
    );
    let mut out = (patched.len() as u64).to_le_bytes().to_vec();
    out.extend(patched.into_bytes());
    out.extend(bytes.split_off(8 + n));
    std::fs::write(d.join("model.safetensors"), &out).unwrap();
    expect_failure(
        &generate_with(&d),
        &[
            "model.safetensors",
            "model.norm.weight",
            "limit of 68719476736 elements",
        ],
    );
    // A BMP whose header claims a 40,000 x 40,000 canvas (1.6 billion pixels).
    let bmp = tmp.path().join("huge.bmp");
    std::fs::write(&bmp, bmp_header(40_000, 40_000)).unwrap();
    let m = fixture_model();
    expect_failure(
        &generate_once(m.to_str().unwrap(), Some(&bmp), "<image>x"),
        &["huge.bmp", "32768 pixels a side"],
    );
    // The folder's chat template loops without end: it runs out of fuel.
    let d = tmp.path().join("looping_template");
    copy_model(&d);
    let looping =
        "{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}";
    std::fs::write(
        d.join("chat_template.json"),
        serde_json::json!({ "chat_template": looping }).to_string(),
    )
    .unwrap();
    let o = run(&[
        "generate",
        "--model",
        d.to_str().unwrap(),
        "--prompt",
        "hi",
        "--template",
        "folder",
        "--max-new-tokens",
        "1",
        "--device",
        "cpu",
    ]);
    expect_failure(&o, &["chat_template.json", "fuel"]);
    // A parquet benchmark whose footer makes the parquet crate panic: caught, named, and
    // nothing about a panic printed.
    let damaged = repo().join("tests/fixtures/mutation/parquet-negative-column-offset.parquet");
    let out = tmp.path().join("eval");
    let o = run(&[
        "eval",
        "--model",
        m.to_str().unwrap(),
        "--task",
        "PMC-VQA",
        "--data",
        damaged.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--device",
        "cpu",
    ]);
    expect_failure(&o, &["parquet-negative-column-offset.parquet", "damaged"]);
}

/// The 54-byte header of a 24-bit BMP of `width x height` with no pixel data.
fn bmp_header(width: i32, height: i32) -> Vec<u8> {
    let mut b = b"BM".to_vec();
    b.extend(54u32.to_le_bytes()); // file size (the header alone)
    b.extend(0u32.to_le_bytes()); // reserved
    b.extend(54u32.to_le_bytes()); // pixel data offset
    b.extend(40u32.to_le_bytes()); // BITMAPINFOHEADER
    b.extend(width.to_le_bytes());
    b.extend(height.to_le_bytes());
    b.extend(1u16.to_le_bytes()); // planes
    b.extend(24u16.to_le_bytes()); // bits per pixel
    b.extend([0u8; 24]); // no compression, sizes, resolution, palette
    b
}

#[test]
fn score_prints_the_paper_keys_and_info_lists_adapters() {
    let golden = repo().join("tests/data/golden/metrics");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("r.json");
    let o = run(&[
        "score",
        "--task",
        "VQA_RAD",
        "--predictions",
        golden.join("VQA_RAD.jsonl").to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let printed: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    let expected: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(golden.join("VQA_RAD.expected.json")).unwrap(),
    )
    .unwrap();
    for key in ["OPEN recall", "CLOSED yes/no accuracy"] {
        assert!((printed[key].as_f64().unwrap() - expected[key].as_f64().unwrap()).abs() < 1e-9);
    }
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(written["task"], "VQA_RAD");
    // The lmms-eval style alternative: normalized exact match, recorded as the metric.
    let rows = tmp.path().join("em.jsonl");
    std::fs::write(
        &rows,
        "{\"label\": \"yes\", \"answer_type\": \"CLOSED\", \"pred\": \"Yes.\"}\n\
         {\"label\": \"left lung\", \"answer_type\": \"OPEN\", \"pred\": \"the left lung\"}\n",
    )
    .unwrap();
    let o = run(&[
        "score",
        "--task",
        "VQA_RAD",
        "--predictions",
        rows.to_str().unwrap(),
        "--metric",
        "exact_match_normalized",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(v["metric"], "exact_match_normalized");
    assert_eq!(v["exact_match_normalized"], 50.0);
    let o = run(&["score", "--task", "NotATask", "--predictions", "x.jsonl"]);
    expect_failure(&o, &["VQA_RAD", "Recipe1M"]);

    let o = run(&["info", "--device", "cpu", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["backend"], "flex");
    assert!(v["adapters"].is_array());
}

#[test]
fn eval_runs_a_jsonl_benchmark_and_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("tiny");
    let o = run(&["init", "--out", model.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let image = repo().join("tests/fixtures/qwen2vl/cfg_a/one_image_0.png");
    let mut text = String::new();
    for (i, (label, kind)) in [("yes", "CLOSED"), ("left lung", "OPEN"), ("no", "CLOSED")]
        .iter()
        .enumerate()
    {
        text.push_str(
            &serde_json::json!({"input": format!("Question {i}?"), "label": label,
                "answer_type": kind, "image": image})
            .to_string(),
        );
        text.push('\n');
    }
    let bench = tmp.path().join("SLAKE.jsonl");
    std::fs::write(&bench, text).unwrap();
    let out = tmp.path().join("eval");
    let (m, b) = (model.to_str().unwrap(), bench.to_str().unwrap());
    let eval = |task: &str, data: &str, out: &Path, extra: &[&str]| -> Output {
        let mut args = vec!["eval", "--model", m, "--task", task, "--data", data];
        args.extend(["--out", out.to_str().unwrap(), "--device", "cpu"]);
        args.extend(extra);
        run(&args)
    };
    let args = |limit: &'static str| -> Vec<&'static str> {
        vec![
            "--max-new-tokens",
            "3",
            "--batch-size",
            "2",
            "--limit",
            limit,
        ]
    };
    let o = eval("SLAKE", b, &out, &args("2"));
    assert!(o.status.success(), "{}", stderr(&o));
    let printed: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(printed["test_num"], 2, "{printed}");
    assert!(
        printed["OPEN recall"].is_number() && printed["metric"].is_string(),
        "{printed}"
    );
    // A different --limit over the same folder continues with the remaining row.
    let o = eval("SLAKE", b, &out, &args("3"));
    assert!(o.status.success(), "{}", stderr(&o));
    let rows = std::fs::read_to_string(out.join("predictions.jsonl")).unwrap();
    assert_eq!(rows.lines().count(), 3);
    let md = std::fs::read_to_string(out.join("results.md")).unwrap();
    assert!(md.contains("SLAKE"), "{md}");

    // Unknown task: the known ones are listed. Missing field: line and field named.
    let o = eval("NotATask", b, &out, &[]);
    expect_failure(&o, &["VQA_RAD", "PathVQA", "all-biomed"]);
    let broken = tmp.path().join("broken.jsonl");
    std::fs::write(&broken, "{\"input\": \"q\", \"label\": \"yes\"}\n").unwrap();
    let o = eval(
        "SLAKE",
        broken.to_str().unwrap(),
        &tmp.path().join("b"),
        &[],
    );
    expect_failure(&o, &["broken.jsonl", "line 1", "answer_type"]);
}

/// Listing adapters on a headless machine without `XDG_RUNTIME_DIR` (a container, a CI
/// runner, ssh without a session) prints no `error:` line: nothing is wrong there.
#[test]
fn a_session_without_xdg_runtime_dir_prints_no_error() {
    let o = Command::new(env!("CARGO_BIN_EXE_adamllm"))
        .arg("info")
        .env_remove("XDG_RUNTIME_DIR")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!stderr(&o).contains("error"), "{}", stderr(&o));
    assert!(stdout(&o).contains("device:"), "{}", stdout(&o));
}

#[test]
fn a_bf16_checkpoint_runs_in_the_dtype_each_device_computes() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("tiny");
    let m = model.to_str().unwrap();
    let o = run(&["init", "--out", m, "--preset", "tiny", "--seed", "3"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let config = model.join("config.json");
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(text.contains("\"float32\""), "{text}");
    std::fs::write(&config, text.replace("\"float32\"", "\"bfloat16\"")).unwrap();
    let generate = |extra: &[&str]| {
        let mut args = vec!["generate", "--model", m, "--prompt", "Hello"];
        args.extend(["--max-new-tokens", "3", "--json"]);
        args.extend(extra);
        run(&args)
    };
    let dtype_of = |o: &Output| -> String {
        assert!(o.status.success(), "{}", stderr(o));
        let v: serde_json::Value = serde_json::from_str(stdout(o).trim()).unwrap();
        assert!(v["token_ids"].as_array().unwrap().len() <= 3, "{v}");
        v["dtype"].as_str().unwrap().to_string()
    };
    // auto: the checkpoint's bf16 on the CPU, silently; f32 when asked.
    let o = generate(&["--device", "cpu"]);
    assert_eq!(dtype_of(&o), "bf16");
    assert!(!stderr(&o).contains("note:"), "{}", stderr(&o));
    assert_eq!(
        dtype_of(&generate(&["--device", "cpu", "--dtype", "f32"])),
        "f32"
    );
    // WGSL has no bf16: auto converts (f16 where the adapter has shader-f16) and says why;
    // asking for bf16 there is refused with the alternative.
    let o = generate(&["--device", "wgpu"]);
    let converted = dtype_of(&o);
    assert!(converted == "f16" || converted == "f32", "{converted}");
    let e = stderr(&o);
    assert!(
        e.contains("note: the checkpoint is bf16; ")
            && e.contains(&format!("computes it in {converted}")),
        "{e}"
    );
    expect_failure(
        &generate(&["--device", "wgpu", "--dtype", "bf16"]),
        &["--dtype bf16 is not supported on", "no bf16 arithmetic"],
    );
}

#[test]
fn quantized_generation_keeps_the_dense_tokens_and_bad_schemes_are_named() {
    // The fixture whose greedy path q8 keeps (core/tests/quantized.rs says why not every one).
    let dir = repo().join("tests/fixtures/qwen2vl/cfg_b");
    let image = dir.join("gen_prompt_0.png");
    let generate = |extra: &[&str]| {
        let mut args = vec!["generate", "--model", dir.to_str().unwrap()];
        args.extend(["--image", image.to_str().unwrap()]);
        args.extend(["--prompt", "Which organ is shown in this scan?"]);
        args.extend([
            "--max-new-tokens",
            "8",
            "--json",
            "--device",
            "cpu",
            "--dtype",
            "f32",
        ]);
        args.extend(extra);
        run(&args)
    };
    let reply = |o: &Output| -> serde_json::Value {
        assert!(o.status.success(), "{}", stderr(o));
        serde_json::from_str(stdout(o).trim()).unwrap()
    };
    let dense = reply(&generate(&[]));
    assert_eq!(dense["quantize"], serde_json::Value::Null, "{dense}");
    let q8 = reply(&generate(&["--quantize", "q8"]));
    assert_eq!(q8["quantize"], "q8", "{q8}");
    assert_eq!(q8["dtype"], "f32", "{q8}");
    assert_eq!(
        q8["token_ids"], dense["token_ids"],
        "q8 {q8} vs dense {dense}"
    );
    let o = generate(&["--quantize", "q3"]);
    expect_failure(&o, &["unknown quantization \"q3\"", "q8, q4"]);
}

#[test]
fn quantize_writes_a_folder_that_generates_as_quantize_on_load_does() {
    let dir = repo().join("tests/fixtures/qwen2vl/cfg_b");
    let model = dir.to_str().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("q4");
    let out_arg = out.to_str().unwrap();
    let quantize = |extra: &[&str]| {
        let mut args = vec!["quantize", "--model", model, "--out", out_arg];
        args.extend(["--device", "cpu", "--dtype", "f32"]);
        args.extend(extra);
        run(&args)
    };
    let o = quantize(&["--quantize", "q4"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let summary: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(summary["quantize"], "q4", "{summary}");
    let (written, source) = (
        summary["weight_bytes"].as_u64().unwrap(),
        summary["source_weight_bytes"].as_u64().unwrap(),
    );
    assert!(written > 0 && written < source, "{summary}");

    let image = dir.join("gen_prompt_0.png");
    let generate = |folder: &str, extra: &[&str]| {
        let mut args = vec!["generate", "--model", folder];
        args.extend(["--image", image.to_str().unwrap()]);
        args.extend(["--prompt", "Which organ is shown in this scan?"]);
        args.extend(["--max-new-tokens", "6", "--json", "--device", "cpu"]);
        args.extend(["--dtype", "f32"]);
        args.extend(extra);
        run(&args)
    };
    let reply = |o: &Output| -> serde_json::Value {
        assert!(o.status.success(), "{}", stderr(o));
        serde_json::from_str(stdout(o).trim()).unwrap()
    };
    let on_load = reply(&generate(model, &["--quantize", "q4"]));
    let stored = reply(&generate(out_arg, &[]));
    assert_eq!(stored["quantize"], "q4", "{stored}");
    assert_eq!(
        stored["token_ids"], on_load["token_ids"],
        "{stored} vs {on_load}"
    );

    expect_failure(
        &generate(out_arg, &["--quantize", "q8"]),
        &["config.json", "stored in q4", "cannot re-quantize"],
    );
    expect_failure(&quantize(&[]), &["--quantize q8|q4 is required"]);
    expect_failure(
        &quantize(&["--quantize", "q8"]),
        &["already holds a model", "--force"],
    );
    let o = quantize(&["--quantize", "q8", "--force"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let mut args = vec!["quantize", "--model", model, "--out", model];
    args.extend(["--quantize", "q8", "--device", "cpu"]);
    expect_failure(&run(&args), &["is the model folder"]);
    let mut args = vec!["quantize", "--model", model, "--out", out_arg, "--force"];
    args.extend(["--quantize", "q8", "--max-shard-size", "5 TB"]);
    expect_failure(&run(&args), &["--max-shard-size", "not a size"]);
}

#[test]
fn bench_memory_prints_a_peak_per_configuration_and_names_bad_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let rows_file = tmp.path().join("memory.jsonl");
    let mut args = vec!["bench", "memory", "--presets", "tiny", "--devices", "cpu"];
    args.extend(["--configs", "train:lora:f32:gc,generate:f32:q8"]);
    args.extend(["--tokens", "24", "--new-tokens", "2"]);
    args.extend(["--out", rows_file.to_str().unwrap()]);
    let o = run(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    let rows: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 2, "{rows:?}");
    for (row, config) in rows.iter().zip(["train:lora:f32:gc", "generate:f32:q8"]) {
        assert_eq!(row["config"], config, "{row}");
        assert_eq!(row["framework"], "adamllm", "{row}");
        let peak = row["peak_rss_mib"].as_f64().unwrap();
        assert!(peak > 1.0 && peak < 4096.0, "{row}");
    }
    assert_eq!(
        std::fs::read_to_string(&rows_file).unwrap().lines().count(),
        2
    );
    assert!(stderr(&o).contains("adamllm MiB"), "{}", stderr(&o));
    let o = run(&["bench", "memory", "--configs", "decode:f16"]);
    expect_failure(&o, &["config \"decode:f16\"", "train:MODE"]);
}
