//! `adamllm synthesize / filter / assemble / pipeline` end to end through the binary: a
//! synthesis killed for real resumes with no duplicate and no lost row; the rule baseline
//! feeds every assembly mode; the pipeline runs all four stages and reuses them on a rerun;
//! bad input is named and leaves nothing behind.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

mod common;
use common::{bin, expect_failure, ok, run, stderr};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A random tiny model and `n` image-caption pairs (with images) in `dir`.
fn setup(dir: &Path, n: usize) -> (PathBuf, PathBuf) {
    let model = dir.join("model");
    ok(&run(&["init", "--out", s(&model), "--seed", "3"]));
    let words = [
        "round", "oval", "dark", "pale", "large", "small", "dense", "sparse",
    ];
    let mut lines = String::new();
    for i in 0..n {
        let rgb = [
            (37 * i % 256) as u8,
            (91 * i % 256) as u8,
            (53 * i % 256) as u8,
        ];
        let name = format!("tissue{i:02}.png");
        image::RgbImage::from_pixel(56 + 28 * (i as u32 % 2), 56, image::Rgb(rgb))
            .save(dir.join(&name))
            .unwrap();
        let caption = format!(
            "A {} nucleus beside {} {} cells in stained tissue.",
            words[i % 8],
            i + 2,
            words[(i + 3) % 8]
        );
        lines.push_str(
            &json!({"images": [name], "messages": [
                {"role": "user", "content": "<image>Describe the slide."},
                {"role": "assistant", "content": caption}]})
            .to_string(),
        );
        lines.push('\n');
    }
    let data = dir.join("image_caption_pairs.jsonl");
    std::fs::write(&data, lines).unwrap();
    (model, data)
}

fn chunk_count(cache: &Path) -> usize {
    std::fs::read_dir(cache)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().starts_with("chunk-"))
                .count()
        })
        .unwrap_or(0)
}

#[test]
fn killed_synthesis_resumes_without_duplicates_or_losses() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, data) = setup(tmp.path(), 16);
    let args = |out: &Path| -> Vec<String> {
        [
            "synthesize",
            "--synthesizer",
            s(&model),
            "--data",
            s(&data),
            "--out",
            s(out),
            "--batch-size",
            "2",
            "--max-new-tokens",
            "160",
            "--device",
            "cpu",
        ]
        .map(String::from)
        .to_vec()
    };
    let whole = tmp.path().join("whole");
    let o = bin().args(args(&whole)).output().unwrap();
    ok(&o);
    let summary: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(summary["rows"], 16);
    let reference = std::fs::read_to_string(whole.join("syn_task_triplets.jsonl")).unwrap();

    let cut = tmp.path().join("cut");
    let mut child = bin()
        .args(args(&cut))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while chunk_count(&cut.join(".syn_cache")) < 2 {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no chunk written"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "finished before the kill"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let chunks = chunk_count(&cut.join(".syn_cache"));
    assert!(chunks < 8, "the run was not cut short ({chunks} chunks)");
    assert!(!cut.join("syn_task_triplets.jsonl").exists());

    let o = bin().args(args(&cut)).output().unwrap();
    ok(&o);
    let summary: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(summary["rows"], 16);
    assert_eq!(
        summary["generated_now"].as_u64().unwrap() as usize,
        16 - 2 * chunks,
        "resumed rows were generated again"
    );
    let resumed = std::fs::read_to_string(cut.join("syn_task_triplets.jsonl")).unwrap();
    assert_eq!(resumed, reference);
    let ids: Vec<u64> = resumed
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["syn_id"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(ids, (0..16).collect::<Vec<u64>>());
    assert!(!cut.join(".syn_cache").exists());

    // Another synthesizer may not continue this cache.
    let other = tmp.path().join("other-model");
    ok(&run(&["init", "--out", s(&other), "--seed", "4"]));
    let mut child_args = args(&tmp.path().join("third"));
    child_args[2] = s(&other).to_string();
    std::fs::create_dir_all(tmp.path().join("third/.syn_cache")).unwrap();
    std::fs::write(
        tmp.path()
            .join("third/.syn_cache/chunk-000000000-000000000.jsonl"),
        "{\"syn_id\": 0, \"skipped\": \"x\"}\n",
    )
    .unwrap();
    let o = bin().args(&child_args).output().unwrap();
    expect_failure(&o, &[".syn_cache", "another run"]);
}

#[test]
fn rule_tasks_feed_every_assembly_mode_and_bad_input_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (model, data) = setup(dir, 6);
    let rules = dir.join("rules");
    let o = run(&[
        "synthesize",
        "--rules",
        "--data",
        s(&data),
        "--out",
        s(&rules),
    ]);
    ok(&o);
    let tasks = rules.join("rule_task_pairs.jsonl");
    let rows: Vec<Value> = std::fs::read_to_string(&tasks)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 6);
    for row in &rows {
        assert_eq!(row["consistency"], "yes");
        assert!(
            row["task"]["instruction"].as_str().unwrap().len() > 10,
            "{row}"
        );
    }
    for (mode, files) in [
        ("single", vec!["data.json"]),
        ("caption-only", vec!["data.json"]),
        ("synthetic-only", vec!["data.json"]),
        (
            "two-stage",
            vec!["data_stage1_caption.json", "data_stage2_synthetic.json"],
        ),
    ] {
        let out = dir.join(mode);
        let o = run(&[
            "assemble",
            "--captions",
            s(&data),
            "--tasks",
            s(&tasks),
            "--mode",
            mode,
            "--out",
            s(&out.join("data.json")),
        ]);
        ok(&o);
        let summary: Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(summary["with_synthetic_task"], 6, "{summary}");
        for file in files {
            let examples: Vec<Value> =
                serde_json::from_str(&std::fs::read_to_string(out.join(file)).unwrap()).unwrap();
            assert_eq!(examples.len(), 6, "{mode} {file}");
            let rounds = examples[0]["messages"].as_array().unwrap().len();
            assert_eq!(rounds, if mode == "single" { 4 } else { 2 }, "{mode}");
        }
    }
    // The same command twice writes the same bytes (seeded placement and templates).
    let single = std::fs::read(dir.join("single/data.json")).unwrap();
    let o = run(&[
        "assemble",
        "--captions",
        s(&data),
        "--tasks",
        s(&tasks),
        "--out",
        s(&dir.join("again.json")),
    ]);
    ok(&o);
    assert_eq!(std::fs::read(dir.join("again.json")).unwrap(), single);

    // Bad input: each is named, exits non-zero and writes nothing.
    let missing = dir.join("no-such-model");
    let out = dir.join("never");
    let o = run(&[
        "synthesize",
        "--synthesizer",
        s(&missing),
        "--data",
        s(&data),
        "--out",
        s(&out),
    ]);
    expect_failure(&o, &["synthesizer", "no-such-model"]);
    assert!(!out.exists());
    let o = run(&[
        "filter",
        "--judge",
        s(&dir.join("rules")),
        "--in",
        s(&tasks),
        "--out",
        s(&out.join("f.jsonl")),
    ]);
    expect_failure(&o, &["judge", "config.json"]);
    assert!(!out.exists());
    let broken = dir.join("broken.jsonl");
    std::fs::write(&broken, "{\"syn_id\": 0, \"pred\": \"x\"}\n{\"syn_id\": \n").unwrap();
    let o = run(&[
        "assemble",
        "--captions",
        s(&data),
        "--tasks",
        s(&broken),
        "--out",
        s(&out.join("a.json")),
    ]);
    expect_failure(&o, &["broken.jsonl", "line 2"]);
    let o = run(&[
        "filter",
        "--judge",
        s(&model),
        "--in",
        s(&broken),
        "--out",
        s(&out.join("f.jsonl")),
    ]);
    expect_failure(&o, &["broken.jsonl", "line 2"]);
    assert!(!out.exists());
    let empty = dir.join("empty_captions.jsonl");
    std::fs::write(
        &empty,
        "{\"images\": [\"a.png\"], \"messages\": [{\"role\": \"user\", \"content\": \"<image>x\"}, {\"role\": \"assistant\", \"content\": \"\"}]}\n",
    )
    .unwrap();
    let o = run(&[
        "synthesize",
        "--synthesizer",
        s(&model),
        "--data",
        s(&empty),
        "--out",
        s(&out),
    ]);
    expect_failure(
        &o,
        &["empty_captions.jsonl", "no usable image-caption pairs"],
    );
    let o = run(&[
        "assemble",
        "--captions",
        s(&data),
        "--tasks",
        s(&tasks),
        "--mode",
        "three-stage",
        "--out",
        s(&out.join("a.json")),
    ]);
    expect_failure(&o, &["three-stage", "two-stage"]);
}

#[test]
fn pipeline_runs_every_stage_then_reuses_them() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (_, _) = setup(dir, 4);
    let config = dir.join("pipeline.yaml");
    let yaml = "data: image_caption_pairs.jsonl\nimages: .\nsynthesizer: model\njudge: model\n\
                out: run\nbatch_size: 2\nmax_new_tokens: 24\njudge_shots: 1\n\
                train:\n  model: model\n  overrides:\n    max_steps: 2\n    save_steps: 0\n    \
                image_min_pixels: 3136\n    image_max_pixels: 3136\n    finetuning_type: full\n";
    std::fs::write(&config, yaml).unwrap();
    let o = run(&["pipeline", "--config", s(&config), "--device", "cpu"]);
    ok(&o);
    let summary: Value = serde_json::from_slice(&o.stdout).unwrap();
    for stage in ["synthesize", "filter", "assemble", "train"] {
        assert!(summary.get(stage).is_some(), "{stage} missing: {summary}");
    }
    assert_eq!(summary["synthesize"]["rows"], 4);
    assert_eq!(summary["filter"]["rows"], 4);
    assert_eq!(summary["train"]["steps"], 2);
    let run_dir = dir.join("run");
    for file in [
        "synthesis/syn_task_triplets.jsonl",
        "filtered_task_pairs.jsonl",
        "filtered_task_pairs.labels.json",
        "image_caption_and_synthetic_task.json",
        "train/model/model.safetensors",
        "pipeline_state.json",
    ] {
        assert!(run_dir.join(file).is_file(), "{file} missing");
    }
    let state = std::fs::read(run_dir.join("pipeline_state.json")).unwrap();
    // A rerun reuses every stage.
    let o = run(&["pipeline", "--config", s(&config), "--device", "cpu"]);
    ok(&o);
    assert_eq!(
        stderr(&o).matches("finished earlier, reused").count(),
        4,
        "{}",
        stderr(&o)
    );
    assert_eq!(
        std::fs::read(run_dir.join("pipeline_state.json")).unwrap(),
        state
    );
    // A changed config is refused, not mixed in.
    std::fs::write(
        &config,
        yaml.replace("max_new_tokens: 24", "max_new_tokens: 30"),
    )
    .unwrap();
    let o = run(&["pipeline", "--config", s(&config), "--device", "cpu"]);
    expect_failure(&o, &["pipeline_state.json", "another config"]);
    std::fs::write(&config, yaml.replace("judge: model", "judje: model")).unwrap();
    let o = run(&["pipeline", "--config", s(&config)]);
    expect_failure(&o, &["pipeline.yaml", "judje"]);
}

#[test]
fn a_plain_qwen2_text_model_can_judge() {
    let tmp = tempfile::tempdir().unwrap();
    let judge = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/qwen2_text");
    let pred = "Answer with a precise response.\nIs it round?<|im_end|>\n<|im_start|>assistant\nYes<|im_end|>\n<|im_start|>user\nAnswer with an informative response.\nIs it round?<|im_end|>\n<|im_start|>assistant\nThe edge is a smooth circle, so yes.<|im_end|>\n";
    let input = tmp.path().join("syn_task_triplets.jsonl");
    std::fs::write(&input, format!("{}\n", json!({"syn_id": 0, "pred": pred}))).unwrap();
    let out = tmp.path().join("filtered_task_pairs.jsonl");
    let o = run(&[
        "filter",
        "--judge",
        s(&judge),
        "--in",
        s(&input),
        "--out",
        s(&out),
        "--shots",
        "1",
    ]);
    ok(&o);
    let row: Value = serde_json::from_str(std::fs::read_to_string(&out).unwrap().trim()).unwrap();
    assert_eq!(row["collected_QA"]["Q"], "Is it round?");
    assert!(row["pred"].is_string(), "{row}");
    let label = row["consistency"].as_str().unwrap();
    assert!(["yes", "no", "open", "unparsed"].contains(&label), "{row}");
}

/// Runs `args` once unsharded into `whole` and once as three shards into `sharded`, then
/// merges; the merged `files` (relative to the output) must equal the unsharded ones byte
/// for byte, and the shard folders under `shards` must be gone.
fn check_three_shards(
    args: &dyn Fn(&Path) -> Vec<String>,
    whole: &Path,
    sharded: &Path,
    shards: &Path,
    files: &[&str],
) {
    ok(&bin().args(args(whole)).output().unwrap());
    for k in 0..3 {
        let mut shard_args = args(sharded);
        shard_args.extend(["--shard".to_string(), format!("{k}/3")]);
        let o = bin().args(shard_args).output().unwrap();
        ok(&o);
        assert!(stderr(&o).contains("adamllm merge"), "{}", stderr(&o));
        assert!(shards.join(format!("{k}-of-3/shard.json")).is_file());
    }
    ok(&run(&["merge", s(sharded)]));
    for file in files {
        let read = |out: &Path| {
            let path = if out.is_dir() {
                out.join(file)
            } else {
                out.with_file_name(file)
            };
            std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        };
        assert_eq!(read(whole), read(sharded), "{file} differs after the merge");
    }
    assert!(!shards.exists(), "{} left behind", shards.display());
}

#[test]
fn three_shards_merge_into_the_bytes_of_one_run() {
    let tmp = tempfile::tempdir().unwrap();
    let (model, data) = setup(tmp.path(), 10);
    // A row without an image, for `skipped.jsonl`.
    let mut text = std::fs::read_to_string(&data).unwrap();
    text.push_str("{\"images\": [\"gone.png\"], \"messages\": [{\"role\": \"user\", \"content\": \"<image>x\"}, {\"role\": \"assistant\", \"content\": \"A pale cell.\"}]}\n");
    std::fs::write(&data, text).unwrap();
    let (m, d) = (s(&model).to_string(), s(&data).to_string());
    let synth_args = |out: &Path| -> Vec<String> {
        let args = [
            "synthesize",
            "--synthesizer",
            &m,
            "--data",
            &d,
            "--out",
            s(out),
        ];
        let mut args: Vec<String> = args.map(String::from).to_vec();
        args.extend(
            [
                "--batch-size",
                "3",
                "--max-new-tokens",
                "12",
                "--device",
                "cpu",
            ]
            .map(String::from),
        );
        args
    };
    let sharded = tmp.path().join("syn-sharded");
    check_three_shards(
        &synth_args,
        &tmp.path().join("syn-whole"),
        &sharded,
        &sharded.join("shards"),
        &["syn_task_triplets.jsonl", "skipped.jsonl"],
    );

    // Filter: rows with and without a triplet, judged by the same tiny model.
    let pred = "Answer with a precise response.\nIs it round?<|im_end|>\n<|im_start|>assistant\nYes<|im_end|>\n<|im_start|>user\nAnswer with an informative response.\nIs it round?<|im_end|>\n<|im_start|>assistant\nThe edge is a smooth circle, so yes.<|im_end|>\n";
    let triplets = tmp.path().join("triplets.jsonl");
    let rows: String = (0..8)
        .map(|i| {
            let row = if i % 3 == 1 {
                json!({"syn_id": i * 2, "pred": "no triplet here"})
            } else {
                json!({"syn_id": i * 2, "pred": pred.replace("round", &format!("round {i}"))})
            };
            format!("{row}\n")
        })
        .collect();
    std::fs::write(&triplets, rows).unwrap();
    let t = s(&triplets).to_string();
    let filter_args = |out: &Path| -> Vec<String> {
        let args = [
            "filter",
            "--judge",
            &m,
            "--in",
            &t,
            "--out",
            s(out),
            "--shots",
            "1",
        ];
        let mut args: Vec<String> = args.map(String::from).to_vec();
        args.extend(["--batch-size", "2", "--device", "cpu"].map(String::from));
        args
    };
    let filtered = tmp.path().join("filter-sharded.jsonl");
    check_three_shards(
        &filter_args,
        &tmp.path().join("filter-whole.jsonl"),
        &filtered,
        &tmp.path().join("filter-sharded.jsonl.shards"),
        &[],
    );
    assert_eq!(
        std::fs::read(&filtered).unwrap(),
        std::fs::read(tmp.path().join("filter-whole.jsonl")).unwrap()
    );

    // Eval: predictions and the score.
    let image = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/qwen2vl/cfg_a/one_image_0.png");
    let bench = tmp.path().join("SLAKE.jsonl");
    let rows: String = (0..7)
        .map(|i| {
            let (label, kind) = if i % 2 == 0 {
                ("yes", "CLOSED")
            } else {
                ("left lung", "OPEN")
            };
            let row = json!({"input": format!("Question {i}?"), "label": label,
                "answer_type": kind, "image": image});
            format!("{row}\n")
        })
        .collect();
    std::fs::write(&bench, rows).unwrap();
    let b = s(&bench).to_string();
    let eval_args = |out: &Path| -> Vec<String> {
        let args = [
            "eval",
            "--model",
            &m,
            "--task",
            "SLAKE",
            "--data",
            &b,
            "--out",
            s(out),
        ];
        let mut args: Vec<String> = args.map(String::from).to_vec();
        args.extend(
            [
                "--max-new-tokens",
                "3",
                "--batch-size",
                "2",
                "--device",
                "cpu",
            ]
            .map(String::from),
        );
        args
    };
    let sharded = tmp.path().join("eval-sharded");
    check_three_shards(
        &eval_args,
        &tmp.path().join("eval-whole"),
        &sharded,
        &sharded.join("shards"),
        &["predictions.jsonl", "results.json"],
    );

    // An unsharded rerun takes over whatever shards have finished: nothing is generated again.
    let rerun = tmp.path().join("eval-rerun");
    let mut first = eval_args(&rerun);
    first.extend(["--shard".into(), "1/2".into()]);
    ok(&bin().args(first).output().unwrap());
    let o = bin().args(eval_args(&rerun)).output().unwrap();
    ok(&o);
    assert_eq!(
        std::fs::read(rerun.join("predictions.jsonl")).unwrap(),
        std::fs::read(tmp.path().join("eval-whole/predictions.jsonl")).unwrap()
    );
    assert!(!rerun.join("shards").exists());

    // Bad sets: a missing shard, a repeated one, a foreign one; a shard out of range.
    let bad = tmp.path().join("bad");
    let shard_run = |k: &str, extra: &[&str]| {
        let mut args = eval_args(&bad);
        args.extend(["--shard".to_string(), k.to_string()]);
        args.extend(extra.iter().map(|e| e.to_string()));
        bin().args(args).output().unwrap()
    };
    ok(&shard_run("0/3", &[]));
    ok(&shard_run("2/3", &[]));
    let o = run(&["merge", s(&bad)]);
    expect_failure(&o, &["shard 1/3 missing"]);
    assert!(!bad.join("predictions.jsonl").exists());
    let copy = bad.join("shards/0-of-3-copy");
    std::fs::create_dir_all(&copy).unwrap();
    for file in ["shard.json", "eval_run.json", "predictions.partial.jsonl"] {
        std::fs::copy(bad.join("shards/0-of-3").join(file), copy.join(file)).unwrap();
    }
    expect_failure(&run(&["merge", s(&bad)]), &["twice", "0-of-3"]);
    std::fs::remove_dir_all(&copy).unwrap();
    // Shard 1 with another token budget belongs to another run.
    let other = tmp.path().join("other");
    let mut args = eval_args(&other);
    let at = args.iter().position(|a| a == "--max-new-tokens").unwrap();
    args[at + 1] = "2".into();
    args.extend(["--shard", "1/3"].map(String::from));
    ok(&bin().args(args).output().unwrap());
    std::fs::rename(other.join("shards/1-of-3"), bad.join("shards/1-of-3")).unwrap();
    expect_failure(&run(&["merge", s(&bad)]), &["1-of-3", "another run"]);
    assert!(!bad.join("predictions.jsonl").exists());
    expect_failure(&shard_run("3/3", &[]), &["--shard", "out of range"]);
    expect_failure(
        &run(&["merge", s(&tmp.path().join("nothing"))]),
        &["no shards to merge"],
    );
}
