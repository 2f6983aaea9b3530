//! `adamllm train` end to end: a run killed for real and resumed reproduces the uninterrupted
//! run bit for bit; recipe flags and files; bad input is named and nothing half-written stays.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

mod common;
use common::{bin, expect_failure, run, stderr};

/// A tiny model and a 4-row dataset with images in `dir`.
fn setup(dir: &Path) -> (PathBuf, PathBuf) {
    let model = dir.join("model");
    let o = run(&["init", "--out", model.to_str().unwrap(), "--seed", "5"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let mut lines = String::new();
    for (i, (name, rgb)) in [
        ("red", [220u8, 30, 30]),
        ("green", [30, 200, 40]),
        ("blue", [20, 40, 230]),
        ("gray", [128, 128, 128]),
    ]
    .into_iter()
    .enumerate()
    {
        image::RgbImage::from_pixel(56 + 28 * (i as u32 % 2), 56, image::Rgb(rgb))
            .save(dir.join(format!("{name}.png")))
            .unwrap();
        lines.push_str(
            &serde_json::json!({
                "messages": [
                    {"role": "user", "content": "<image>Name the color."},
                    {"role": "assistant", "content": name},
                    {"role": "user", "content": "Are you sure?"},
                    {"role": "assistant", "content": format!("Yes, {name}.")}
                ],
                "images": [format!("{name}.png")]
            })
            .to_string(),
        );
        lines.push('\n');
    }
    let data = dir.join("data.jsonl");
    std::fs::write(&data, lines).unwrap();
    (model, data)
}

/// Flags of the resume test run: LoRA with dropout (exercises the RNG), accumulation,
/// several epochs (exercises the shuffle), cosine with warmup.
fn resume_args<'a>(model: &'a str, data: &'a str, out: &'a str) -> Vec<&'a str> {
    vec![
        "train",
        "--model",
        model,
        "--data",
        data,
        "--out",
        out,
        "--device",
        "cpu",
        "--finetuning-type",
        "lora",
        "--lora-rank",
        "4",
        "--lora-dropout",
        "0.1",
        "--learning-rate",
        "5e-3",
        "--lr-scheduler-type",
        "cosine",
        "--warmup-ratio",
        "0.1",
        "--per-device-train-batch-size",
        "1",
        "--gradient-accumulation-steps",
        "2",
        "--max-steps",
        "400",
        "--save-steps",
        "10",
        "--save-total-limit",
        "2",
        "--logging-steps",
        "1",
        "--image-min-pixels",
        "3136",
        "--image-max-pixels",
        "6272",
    ]
}

/// `(step, loss bits, lr bits, grad_norm bits)` of every metrics row.
fn metric_bits(run: &Path) -> Vec<(u64, u64, u64, u64)> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["step"].as_u64().unwrap(),
                v["loss"].as_f64().unwrap().to_bits(),
                v["lr"].as_f64().unwrap().to_bits(),
                v["grad_norm"].as_f64().unwrap().to_bits(),
            )
        })
        .collect()
}

#[test]
fn killed_and_resumed_run_equals_the_uninterrupted_run_bit_for_bit() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, data) = setup(tmp.path());
    let (m, d) = (model.to_str().unwrap(), data.to_str().unwrap());
    let full = tmp.path().join("full");
    let o = run(&resume_args(m, d, full.to_str().unwrap()));
    assert!(o.status.success(), "{}", stderr(&o));

    let cut = tmp.path().join("cut");
    let c = cut.to_str().unwrap();
    let mut child = bin()
        .args(resume_args(m, d, c))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let marker = cut.join("checkpoints/step-000030/trainer_state.json");
    let start = Instant::now();
    while !marker.exists() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before it could be interrupted"
        );
        assert!(start.elapsed() < Duration::from_secs(600), "no checkpoint");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(
        child.try_wait().unwrap().is_none(),
        "the run ended before it could be interrupted"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!cut.join("model").exists(), "killed run already exported");

    // Resuming with another recipe is refused, naming the recipe.
    let mut other = resume_args(m, d, c);
    other.extend(["--resume", "--seed", "1"]);
    expect_failure(&run(&other), &["recipe"]);

    let mut resume = resume_args(m, d, c);
    resume.push("--resume");
    let o = run(&resume);
    assert!(o.status.success(), "{}", stderr(&o));

    let a = metric_bits(&full);
    let b = metric_bits(&cut);
    assert_eq!(a.len(), 400);
    assert_eq!(a, b, "loss/lr/grad-norm sequences differ after resume");
    assert_eq!(
        std::fs::read(full.join("model/model.safetensors")).unwrap(),
        std::fs::read(cut.join("model/model.safetensors")).unwrap(),
        "final weights differ"
    );
    assert_eq!(
        std::fs::read(full.join("adapter/adapter_model.safetensors")).unwrap(),
        std::fs::read(cut.join("adapter/adapter_model.safetensors")).unwrap()
    );
    let info: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(cut.join("run.json")).unwrap()).unwrap();
    assert_eq!(info["resumes"].as_array().unwrap().len(), 1);
}

#[test]
fn recipe_files_flags_and_bad_input() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, data) = setup(tmp.path());
    let (m, d) = (model.to_str().unwrap(), data.to_str().unwrap());
    let out = |name: &str| tmp.path().join(name).to_string_lossy().to_string();
    let base = |o: &str| -> Vec<String> {
        [
            "train",
            "--model",
            m,
            "--out",
            o,
            "--device",
            "cpu",
            "--max-steps",
            "2",
            "--image-min-pixels",
            "3136",
            "--image-max-pixels",
            "3136",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let go = |mut args: Vec<String>, extra: &[&str]| {
        args.extend(extra.iter().map(|s| s.to_string()));
        bin().args(&args).output().unwrap()
    };

    // The shipped recipes parse; a flag overrides a recipe key.
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let lora_recipe = repo.join("recipes/portable-lora.yaml");
    let o = go(
        base(&out("recipe")),
        &[
            "--data",
            d,
            "--config",
            lora_recipe.to_str().unwrap(),
            "--lora-rank",
            "2",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let cfg: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(tmp.path().join("recipe/adapter/adapter_config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(cfg["r"], 2);
    assert_eq!(cfg["lora_alpha"], 32.0);
    let paper = repo.join("recipes/paper-qwen2vl-2b.yaml");
    let o = go(
        base(&out("paper")),
        &[
            "--data",
            d,
            "--config",
            paper.to_str().unwrap(),
            "--gradient-accumulation-steps",
            "2",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));

    // Unknown recipe keys, in a file and as a flag; wrong types.
    let bad_yaml = tmp.path().join("bad.yaml");
    std::fs::write(&bad_yaml, "learning_rate: 1e-4\nlearnin_rate: 2\n").unwrap();
    expect_failure(
        &go(
            base(&out("x1")),
            &["--data", d, "--config", bad_yaml.to_str().unwrap()],
        ),
        &["bad.yaml", "learnin_rate", "learning_rate"],
    );
    expect_failure(
        &go(base(&out("x2")), &["--data", d, "--lora-rank", "many"]),
        &["lora_rank"],
    );
    expect_failure(
        &go(base(&out("x3")), &["--data", d, "--no-such-flag", "1"]),
        &["no-such-flag"],
    );

    // A missing image names the image and the line; --skip-bad records it and goes on.
    let with_missing = tmp.path().join("missing.jsonl");
    let mut text = std::fs::read_to_string(&data).unwrap();
    text.push_str(
        &serde_json::json!({"messages": [
            {"role": "user", "content": "<image>Name the color."},
            {"role": "assistant", "content": "pink"}], "images": ["pink.png"]})
        .to_string(),
    );
    text.push('\n');
    std::fs::write(&with_missing, &text).unwrap();
    let wm = with_missing.to_str().unwrap();
    expect_failure(
        &go(base(&out("x4")), &["--data", wm]),
        &["missing.jsonl", "line 5", "pink.png"],
    );
    assert!(!tmp.path().join("x4/checkpoints").exists());
    let o = go(base(&out("skip")), &["--data", wm, "--skip-bad"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let skipped = std::fs::read_to_string(tmp.path().join("skip/skipped.jsonl")).unwrap();
    assert_eq!(skipped.lines().count(), 1);
    assert!(
        skipped.contains("pink.png") && skipped.contains("line 5"),
        "{skipped}"
    );

    // Malformed JSON (line number), no assistant turn, empty dataset.
    let broken = tmp.path().join("broken.jsonl");
    std::fs::write(
        &broken,
        format!(
            "{}{{\"messages\": [\n",
            std::fs::read_to_string(&data).unwrap()
        ),
    )
    .unwrap();
    expect_failure(
        &go(base(&out("x5")), &["--data", broken.to_str().unwrap()]),
        &["broken.jsonl", "line 5"],
    );
    let no_answer = tmp.path().join("no_answer.jsonl");
    std::fs::write(
        &no_answer,
        "{\"messages\": [{\"role\": \"user\", \"content\": \"hello\"}]}\n",
    )
    .unwrap();
    expect_failure(
        &go(base(&out("x6")), &["--data", no_answer.to_str().unwrap()]),
        &["no_answer.jsonl", "line 1", "assistant"],
    );
    let empty = tmp.path().join("empty.jsonl");
    std::fs::write(&empty, "\n").unwrap();
    expect_failure(
        &go(base(&out("x7")), &["--data", empty.to_str().unwrap()]),
        &["empty.jsonl"],
    );

    // Resuming a run made from another model is refused.
    let other_model = tmp.path().join("other");
    let o = run(&[
        "init",
        "--out",
        other_model.to_str().unwrap(),
        "--seed",
        "9",
    ]);
    assert!(o.status.success());
    let first = out("first");
    let o = go(base(&first), &["--data", d, "--save-steps", "1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let mut args = base(&first);
    args[2] = other_model.to_string_lossy().to_string();
    expect_failure(&go(args, &["--data", d, "--resume"]), &["model"]);
}
