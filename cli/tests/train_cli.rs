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

/// Starts `adamllm args` training into `run` and kills it for real once its step-30
/// checkpoint exists, before the run has finished.
fn kill_after_checkpoint_30<S: AsRef<std::ffi::OsStr>>(args: &[S], run: &Path) {
    let mut child = bin()
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let marker = run.join("checkpoints/step-000030/trainer_state.json");
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
    assert!(!run.join("model").exists(), "killed run already exported");
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
    kill_after_checkpoint_30(&resume_args(m, d, c), &cut);

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

/// Every weight of the model exported into `run/model`, by name.
fn exported_weights(run: &Path) -> Vec<(String, Vec<f32>)> {
    let reader =
        adamllm::models::checkpoint::CheckpointReader::open_dir(&run.join("model")).unwrap();
    let mut names = reader.names();
    names.sort();
    names
        .into_iter()
        .map(|name| {
            let shape = reader.shape(&name).unwrap().to_vec();
            let values = reader.read_f32(&name, &shape).unwrap();
            (name, values)
        })
        .collect()
}

/// `(loss, grad_norm)` of every step in `run/metrics.jsonl`.
fn step_metrics(run: &Path) -> Vec<(f64, f64)> {
    metric_bits(run)
        .into_iter()
        .map(|(_, loss, _, grad_norm)| (f64::from_bits(loss), f64::from_bits(grad_norm)))
        .collect()
}

/// Asserts two runs agree to `tolerance` (relative to the magnitude, at least 1) in every
/// step's loss and gradient norm and in every exported weight.
fn assert_runs_agree(a: &Path, b: &Path, tolerance: f64) {
    let close = |x: f64, y: f64| (x - y).abs() <= tolerance * x.abs().max(y.abs()).max(1.0);
    let (ma, mb) = (step_metrics(a), step_metrics(b));
    assert_eq!(ma.len(), mb.len());
    for (step, (x, y)) in ma.iter().zip(&mb).enumerate() {
        assert!(
            close(x.0, y.0) && close(x.1, y.1),
            "step {}: {x:?} vs {y:?}",
            step + 1
        );
    }
    for ((name, x), (_, y)) in exported_weights(a).iter().zip(&exported_weights(b)) {
        for (u, v) in x.iter().zip(y) {
            assert!(close(f64::from(*u), f64::from(*v)), "{name}: {u} vs {v}");
        }
    }
}

#[test]
fn two_devices_train_like_one_device_with_the_same_global_batch() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, data) = setup(tmp.path());
    let (m, d) = (model.to_str().unwrap(), data.to_str().unwrap());
    let train = |out: &Path, mode: &str, accumulation: &str, devices: &[&str], steps: &str| {
        let mut args = vec![
            "train",
            "--model",
            m,
            "--data",
            d,
            "--out",
            out.to_str().unwrap(),
        ];
        args.extend(["--finetuning-type", mode, "--lora-rank", "4"]);
        args.extend([
            "--learning-rate",
            "5e-3",
            "--per-device-train-batch-size",
            "1",
        ]);
        args.extend([
            "--gradient-accumulation-steps",
            accumulation,
            "--max-steps",
            steps,
        ]);
        args.extend(["--save-steps", "5", "--logging-steps", "1"]);
        args.extend(["--image-min-pixels", "3136", "--image-max-pixels", "3136"]);
        args.extend(devices);
        run(&args)
    };
    // Ten steps of 4 micro-batches: on one device, and as 2 per device on two.
    for mode in ["full", "lora"] {
        let one = tmp.path().join(format!("{mode}-one"));
        let two = tmp.path().join(format!("{mode}-two"));
        let o = train(&one, mode, "4", &["--device", "cpu"], "10");
        assert!(o.status.success(), "{}", stderr(&o));
        let o = train(&two, mode, "2", &["--devices", "cpu,cpu"], "10");
        assert!(o.status.success(), "{}", stderr(&o));
        assert_runs_agree(&one, &two, 1e-5);
    }
    // A replica on wgpu (lavapipe here): the gradients cross backends.
    let mixed = tmp.path().join("mixed");
    let o = train(&mixed, "lora", "2", &["--devices", "cpu,wgpu"], "3");
    assert!(o.status.success(), "{}", stderr(&o));
    let alone = tmp.path().join("alone");
    let o = train(&alone, "lora", "4", &["--device", "cpu"], "3");
    assert!(o.status.success(), "{}", stderr(&o));
    assert_runs_agree(&alone, &mixed, 1e-4);

    // Resuming on another device count is refused: the global batch would change.
    let two = tmp.path().join("lora-two");
    let o = train(&two, "lora", "2", &["--device", "cpu", "--resume"], "10");
    expect_failure(&o, &["trainer_state.json", "2 device(s)", "--devices"]);
    // Bad device lists.
    let bad = tmp.path().join("bad");
    for (list, needle) in [
        ("cpu,,cpu", "empty name"),
        ("cpu,gpu9", "unknown device"),
        ("wgpu:0,wgpu:0", "named twice"),
        ("vulkan:1", "only wgpu takes an index"),
        ("wgpu:x", "must be a number"),
    ] {
        let o = train(&bad, "lora", "2", &["--devices", list], "2");
        expect_failure(&o, &[needle]);
        assert!(!bad.exists(), "{list}: the run folder was written");
    }
}

#[test]
fn a_killed_two_device_run_resumes_bit_for_bit() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, data) = setup(tmp.path());
    let (m, d) = (model.to_str().unwrap(), data.to_str().unwrap());
    // LoRA dropout: the devices take turns, each micro-batch seeded as on one device.
    let args = |out: &Path| -> Vec<String> {
        let mut args: Vec<String> = resume_args(m, d, out.to_str().unwrap())
            .into_iter()
            .map(String::from)
            .collect();
        let at = args.iter().position(|a| a == "--device").unwrap();
        args.splice(at..at + 2, ["--devices".to_string(), "cpu,cpu".to_string()]);
        let at = args.iter().position(|a| a == "--max-steps").unwrap();
        args[at + 1] = "120".into();
        args
    };
    let full = tmp.path().join("full");
    let o = bin().args(args(&full)).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let cut = tmp.path().join("cut");
    kill_after_checkpoint_30(&args(&cut), &cut);
    let mut resume = args(&cut);
    resume.push("--resume".into());
    let o = bin().args(&resume).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(metric_bits(&full), metric_bits(&cut));
    assert_eq!(
        std::fs::read(full.join("model/model.safetensors")).unwrap(),
        std::fs::read(cut.join("model/model.safetensors")).unwrap(),
        "final weights differ"
    );
}

/// The `dtype` of every tensor in a safetensors file's header.
fn stored_dtypes(file: &Path) -> std::collections::BTreeSet<String> {
    let bytes = std::fs::read(file).unwrap();
    let len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + len]).unwrap();
    header
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| *k != "__metadata__")
        .map(|(_, v)| v["dtype"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn half_precision_bases_train_like_f32() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, data) = setup(tmp.path());
    let (m, d) = (model.to_str().unwrap(), data.to_str().unwrap());
    let train = |out: &Path, mode: &str, lr: &str, steps: &str, extra: &[&str]| {
        let mut args = vec!["train", "--model", m, "--data", d, "--out"];
        args.push(out.to_str().unwrap());
        args.extend(["--finetuning-type", mode, "--lora-rank", "8"]);
        args.extend(["--learning-rate", lr, "--per-device-train-batch-size", "4"]);
        args.extend([
            "--max-steps",
            steps,
            "--save-steps",
            steps,
            "--logging-steps",
            "1",
        ]);
        args.extend(["--image-min-pixels", "3136", "--image-max-pixels", "3136"]);
        args.extend(extra);
        run(&args)
    };
    // LoRA over a frozen half-precision base; full fine-tuning of f32 master weights (the
    // vision tower too) over half-precision activations.
    for (mode, lr, steps, extra) in [
        ("lora", "1e-2", "60", vec![]),
        ("full", "1e-3", "20", vec!["--freeze-vision-tower", "false"]),
    ] {
        let f32_run = tmp.path().join(format!("{mode}-f32"));
        let mut args = vec!["--device", "cpu"];
        args.extend(&extra);
        let o = train(&f32_run, mode, lr, steps, &args);
        assert!(o.status.success(), "{}", stderr(&o));
        let reference = step_metrics(&f32_run);
        for dtype in ["bf16", "f16"] {
            let out = tmp.path().join(format!("{mode}-{dtype}"));
            let mut args = vec!["--device", "cpu", "--dtype", dtype];
            args.extend(&extra);
            let o = train(&out, mode, lr, steps, &args);
            assert!(o.status.success(), "{mode} {dtype}: {}", stderr(&o));
            let steps = step_metrics(&out);
            // Step 1 is a forward pass of the untouched base: half precision within 1%.
            let (first, first_f32) = (steps[0].0, reference[0].0);
            assert!(
                (first - first_f32).abs() <= 1e-2 * first_f32,
                "{mode} {dtype}: first loss {first} vs f32 {first_f32}"
            );
            // The memorization run ends within 5% of the f32 run's final loss.
            let (last, last_f32) = (steps.last().unwrap().0, reference.last().unwrap().0);
            assert!(
                (last - last_f32).abs() <= 0.05 * last_f32,
                "{mode} {dtype}: final loss {last} vs f32 {last_f32}"
            );
            assert!(
                last < 0.9 * first,
                "{mode} {dtype}: the loss only went from {first} to {last}"
            );
            // The exported model keeps the base's dtype.
            let stored = stored_dtypes(&out.join("model/model.safetensors"));
            let expected = if dtype == "bf16" { "BF16" } else { "F16" };
            assert_eq!(stored.into_iter().collect::<Vec<_>>(), [expected]);
            // f16 records its loss scale on every row.
            let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
            for line in metrics.lines() {
                let row: serde_json::Value = serde_json::from_str(line).unwrap();
                assert_eq!(row.get("loss_scale").is_some(), dtype == "f16", "{line}");
            }
        }
    }
    // A dtype the device cannot compute in is named before anything is written; a quantized
    // base trains LoRA adapters only (QLoRA); an unknown scheme is named.
    let bad = tmp.path().join("bad");
    let cases: [(&str, [&str; 4], &[&str]); 4] = [
        (
            "lora",
            ["--device", "wgpu", "--dtype", "bf16"],
            &["--dtype bf16 is not supported", "no bf16 arithmetic"],
        ),
        (
            "lora",
            ["--device", "cpu", "--dtype", "f8"],
            &["unknown dtype \"f8\"", "auto, f32, f16, bf16"],
        ),
        (
            "full",
            ["--device", "cpu", "--quantize", "q4"],
            &["quantize", "q4 base cannot train", "finetuning_type: lora"],
        ),
        (
            "lora",
            ["--device", "cpu", "--quantize", "q3"],
            &["unknown quantization \"q3\"", "q8, q4"],
        ),
    ];
    for (mode, flags, expected) in cases {
        let o = train(&bad, mode, "1e-3", "2", &flags);
        expect_failure(&o, expected);
        assert!(!bad.exists(), "{flags:?} wrote {}", bad.display());
    }
}
