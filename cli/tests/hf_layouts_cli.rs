//! Files where the Hugging Face tools and LLaMA-Factory leave them, through the CLI:
//! - the paper's benchmarks as `datasets` `save_to_disk` folders, as the parquet branch and as
//!   JSONL give the same predictions and scores (`tests/fixtures/hf_layouts/`, written by
//!   `tests/fixtures/gen_hf_layouts.py` with `datasets` 3.2.0);
//! - a model id found in a Hugging Face cache tree (blobs, snapshot symlinks, refs) generates
//!   what its folder path does;
//! - a LLaMA-Factory config with its `dataset_info.json` trains as the equivalent adamllm
//!   recipe and files do, and `--export-llamafactory` writes a config that trains the same;
//! - the bad inputs the issue names fail with the file named and nothing written.

mod common;

use std::path::{Path, PathBuf};

use common::{bin, expect_failure, ok, run, stderr, stdout};
use serde_json::Value;

fn layouts() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/hf_layouts")
}

fn tiny_model(dir: &Path) -> PathBuf {
    let model = dir.join("model");
    ok(&run(&[
        "init",
        "--out",
        model.to_str().unwrap(),
        "--seed",
        "11",
    ]));
    model
}

fn read_jsonl(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The parts of a task's output that must not depend on the layout: each row's text fields,
/// index and prediction, and the scores.
fn task_outcome(dir: &Path) -> (Vec<Value>, Value) {
    let rows = read_jsonl(&dir.join("predictions.jsonl"))
        .into_iter()
        .map(|r| {
            serde_json::json!({"input": r["input"], "label": r["label"], "syn_id": r["syn_id"],
                "pred": r["pred"], "answer_type": r.get("answer_type")})
        })
        .collect();
    let mut results: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("results.json")).unwrap()).unwrap();
    results.as_object_mut().unwrap().remove("model");
    (rows, results)
}

fn eval(model: &Path, task: &str, data: &Path, out: &Path) -> std::process::Output {
    run(&[
        "eval",
        "--model",
        model.to_str().unwrap(),
        "--task",
        task,
        "--data",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--max-new-tokens",
        "3",
        "--device",
        "cpu",
    ])
}

#[test]
fn benchmark_layouts_give_the_same_predictions_and_scores() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(tmp.path());
    let root = layouts();
    let arrow = tmp.path().join("arrow");
    let parquet = tmp.path().join("parquet");
    let jsonl = tmp.path().join("jsonl");
    ok(&eval(&model, "all-biomed", &root.join("biomed"), &arrow));
    ok(&eval(&model, "all-biomed", &root.join("parquet"), &parquet));
    ok(&eval(&model, "all-biomed", &root.join("jsonl"), &jsonl));
    for task in ["VQA_RAD", "SLAKE", "PathVQA", "PMC-VQA"] {
        let a = task_outcome(&arrow.join(task));
        assert_eq!(a.0.len(), if task == "PMC-VQA" { 3 } else { 4 }, "{task}");
        // Rows keep their stored order across the two VQA_RAD shards.
        let ids: Vec<u64> = a.0.iter().map(|r| r["syn_id"].as_u64().unwrap()).collect();
        assert_eq!(ids, (0..ids.len() as u64).collect::<Vec<_>>(), "{task}");
        assert_eq!(
            a,
            task_outcome(&parquet.join(task)),
            "{task}: arrow vs parquet"
        );
        assert_eq!(a, task_outcome(&jsonl.join(task)), "{task}: arrow vs jsonl");
    }
    // One task of the food repo, found under its folder name, and one save_to_disk folder.
    let food = tmp.path().join("food");
    ok(&eval(&model, "Nutrition5K", &root.join("food"), &food));
    let direct = tmp.path().join("direct");
    ok(&eval(
        &model,
        "Nutrition5K",
        &root.join("food/nutrition50k"),
        &direct,
    ));
    let via_jsonl = tmp.path().join("via_jsonl");
    ok(&eval(
        &model,
        "Nutrition5K",
        &root.join("jsonl/Nutrition5K.jsonl"),
        &via_jsonl,
    ));
    assert_eq!(task_outcome(&food), task_outcome(&direct));
    assert_eq!(task_outcome(&food), task_outcome(&via_jsonl));
}

#[test]
fn bad_benchmark_folders_are_named_and_write_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(tmp.path());
    let root = layouts();
    // A shard listed in state.json is missing.
    let broken = tmp.path().join("vqa_rad");
    std::fs::create_dir(&broken).unwrap();
    for f in [
        "state.json",
        "dataset_info.json",
        "data-00000-of-00002.arrow",
    ] {
        std::fs::copy(root.join("biomed/vqa_rad").join(f), broken.join(f)).unwrap();
    }
    let out = tmp.path().join("out1");
    let o = eval(&model, "VQA_RAD", &broken, &out);
    expect_failure(&o, &["state.json", "data-00001-of-00002.arrow", "missing"]);
    assert!(!out.exists(), "nothing is written");
    // A parquet file without the task's columns: named, with the columns found.
    let out = tmp.path().join("out2");
    let o = eval(&model, "VQA_RAD", &root.join("parquet/PMC-VQA"), &out);
    expect_failure(
        &o,
        &[
            "0000.parquet",
            "`answer_type`",
            "image, input, label, A, B, C, D",
        ],
    );
    assert!(!out.exists());
    // A folder holding none of the suite's tasks lists what was looked for.
    let o = eval(
        &model,
        "all-food",
        &root.join("biomed"),
        &tmp.path().join("out3"),
    );
    expect_failure(
        &o,
        &[
            "no task of suite all-food",
            "food101/",
            "food_eval_multitask_v2/",
        ],
    );
    assert!(!tmp.path().join("out3").exists());
}

/// A Hugging Face cache entry for `files` the way `huggingface_hub` lays one out: the bytes
/// under `blobs/`, `snapshots/<commit>/<file>` symlinks to them, `refs/main` and a tag.
#[cfg(unix)]
fn fake_hub_cache(cache: &Path, repo: &str, model: &Path, commit: &str) -> PathBuf {
    let repo_dir = cache.join(format!("models--{}", repo.replace('/', "--")));
    let snapshot = repo_dir.join("snapshots").join(commit);
    std::fs::create_dir_all(repo_dir.join("blobs")).unwrap();
    std::fs::create_dir_all(&snapshot).unwrap();
    std::fs::create_dir_all(repo_dir.join("refs")).unwrap();
    for (i, entry) in std::fs::read_dir(model).unwrap().enumerate() {
        let entry = entry.unwrap();
        let blob = format!("{:040x}", 0xb10b_u64 * 1000 + i as u64);
        std::fs::copy(entry.path(), repo_dir.join("blobs").join(&blob)).unwrap();
        std::os::unix::fs::symlink(
            Path::new("../../blobs").join(&blob),
            snapshot.join(entry.file_name()),
        )
        .unwrap();
    }
    std::fs::write(repo_dir.join("refs/main"), commit).unwrap();
    std::fs::write(repo_dir.join("refs/v1"), commit).unwrap();
    snapshot
}

#[cfg(unix)]
#[test]
fn a_model_id_resolves_in_the_hub_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_model(tmp.path());
    let cache = tmp.path().join("hub");
    let commit = "0123456789abcdef0123456789abcdef01234567";
    let snapshot = fake_hub_cache(&cache, "AdaptLLM/tiny-vlm", &model, commit);
    let generate = |model: &str, hub: &Path| {
        bin()
            .env("HF_HUB_CACHE", hub)
            .args([
                "generate",
                "--model",
                model,
                "--prompt",
                "Name a color.",
                "--max-new-tokens",
                "4",
            ])
            .args(["--device", "cpu", "--json"])
            .output()
            .unwrap()
    };
    let by_path = generate(model.to_str().unwrap(), &cache);
    ok(&by_path);
    let text = |o: &std::process::Output| {
        let v: Value = serde_json::from_str(stdout(o).trim()).unwrap();
        v["text"].clone()
    };
    for id in [
        "AdaptLLM/tiny-vlm",
        "AdaptLLM/tiny-vlm@v1",
        &format!("AdaptLLM/tiny-vlm@{commit}"),
    ] {
        let o = generate(id, &cache);
        ok(&o);
        assert_eq!(text(&o), text(&by_path), "{id}");
    }
    // HF_HOME/hub is the fallback when HF_HUB_CACHE is unset.
    let home = tmp.path().join("hf_home");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::rename(&cache, home.join("hub")).unwrap();
    let o = bin()
        .env_remove("HF_HUB_CACHE")
        .env("HF_HOME", &home)
        .args([
            "generate",
            "--model",
            "AdaptLLM/tiny-vlm",
            "--prompt",
            "Name a color.",
        ])
        .args(["--max-new-tokens", "4", "--device", "cpu", "--json"])
        .output()
        .unwrap();
    ok(&o);
    assert_eq!(text(&o), text(&by_path));
    let cache = home.join("hub");
    let snapshot = cache.join(snapshot.strip_prefix(tmp.path().join("hub")).unwrap());
    // An id that is not cached: where it looked, and the download command.
    let o = generate("AdaptLLM/absent-model", &cache);
    expect_failure(
        &o,
        &[
            "models--AdaptLLM--absent-model",
            "huggingface-cli download AdaptLLM/absent-model",
        ],
    );
    let o = generate("AdaptLLM/tiny-vlm@v2", &cache);
    expect_failure(&o, &["revision v2", "ref main", "ref v1", "--revision v2"]);
    // A snapshot whose blob is gone.
    let link = snapshot.join("config.json");
    let blob = snapshot.join(std::fs::read_link(&link).unwrap());
    std::fs::remove_file(&blob).unwrap();
    let o = generate("AdaptLLM/tiny-vlm", &cache);
    expect_failure(&o, &["config.json", "blobs", "missing"]);
}

/// Native data and its LLaMA-Factory spellings: the same two conversations as ShareGPT with
/// `messages`, as ShareGPT with the custom tags of a `dataset_info.json`, and as Alpaca.
fn write_datasets(dir: &Path) {
    for (name, rgb) in [("red", [220u8, 30, 30]), ("blue", [20, 40, 230])] {
        image::RgbImage::from_pixel(56, 56, image::Rgb(rgb))
            .save(dir.join(format!("{name}.png")))
            .unwrap();
    }
    let mut native = String::new();
    let mut tagged = Vec::new();
    let mut alpaca = Vec::new();
    for name in ["red", "blue"] {
        let question = "<image>Name the color.";
        native.push_str(
            &serde_json::json!({"messages": [{"role": "user", "content": question},
                {"role": "assistant", "content": name}], "images": [format!("{name}.png")]})
            .to_string(),
        );
        native.push('\n');
        tagged.push(
            serde_json::json!({"dialog": [{"speaker": "doctor", "text": question},
            {"speaker": "model", "text": name}], "pics": [format!("{name}.png")]}),
        );
        alpaca.push(
            serde_json::json!({"instruction": "<image>Name the color.", "input": "",
            "output": name, "images": [format!("{name}.png")]}),
        );
    }
    std::fs::write(dir.join("native.jsonl"), native.repeat(2)).unwrap();
    std::fs::write(
        dir.join("tagged.json"),
        serde_json::to_string(&tagged).unwrap(),
    )
    .unwrap();
    std::fs::write(
        dir.join("alpaca.json"),
        serde_json::to_string(&alpaca).unwrap(),
    )
    .unwrap();
    std::fs::write(
        dir.join("dataset_info.json"),
        r#"{
  "colors_tagged": {
    "file_name": "tagged.json",
    "formatting": "sharegpt",
    "columns": {"messages": "dialog", "images": "pics"},
    "tags": {"role_tag": "speaker", "content_tag": "text", "user_tag": "doctor", "assistant_tag": "model"}
  },
  "colors_alpaca": {"file_name": "alpaca.json", "columns": {"prompt": "instruction", "query": "input", "response": "output", "images": "images"}},
  "remote_only": {"hf_hub_url": "AdaptLLM/biomed-visual-instructions"}
}
"#,
    )
    .unwrap();
}

const RECIPE: &str = "finetuning_type: lora\nlora_rank: 4\nlearning_rate: 1.0e-3\n\
    per_device_train_batch_size: 1\ngradient_accumulation_steps: 2\nmax_steps: 2\n\
    lr_scheduler_type: cosine\nwarmup_ratio: 0.5\ncutoff_len: 512\nseed: 7\nsave_steps: 0\n\
    dtype: bf16\n";

fn losses(o: &std::process::Output) -> Vec<f64> {
    ok(o);
    let v: Value = serde_json::from_str(stdout(o).lines().last().unwrap()).unwrap();
    v["losses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["loss"].as_f64().unwrap())
        .collect()
}

#[test]
fn a_llamafactory_config_trains_as_the_native_recipe() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let model = tiny_model(dir);
    write_datasets(dir);
    std::fs::write(dir.join("native.yaml"), RECIPE).unwrap();
    let native = bin()
        .args(["train", "--model", model.to_str().unwrap(), "--data"])
        .arg(dir.join("native.jsonl"))
        .arg("--out")
        .arg(dir.join("run_native"))
        .arg("--config")
        .arg(dir.join("native.yaml"))
        .args(["--device", "cpu", "--json"])
        .output()
        .unwrap();
    let native = losses(&native);
    assert_eq!(native.len(), 2);
    let lf_yaml = format!(
        "### model\nmodel_name_or_path: {}\ntrust_remote_code: true\n\n### method\nstage: sft\n\
         do_train: true\n{RECIPE}lora_target: all\n\n### dataset\n\
         dataset: colors_tagged,colors_alpaca\ndataset_dir: {}\ntemplate: qwen2_vl\n\
         overwrite_cache: true\npreprocessing_num_workers: 16\n\n### output\noutput_dir: {}\n\
         plot_loss: true\noverwrite_output_dir: true\nreport_to: none\n\n### train\nbf16: true\n\
         ddp_timeout: 180000000\ndeepspeed: examples/deepspeed/ds_z2_config.json\n",
        model.display(),
        dir.display(),
        dir.join("run_lf").display()
    );
    std::fs::write(dir.join("lf.yaml"), &lf_yaml).unwrap();
    let o = bin()
        .args(["train", "--config"])
        .arg(dir.join("lf.yaml"))
        .args(["--device", "cpu", "--json"])
        .output()
        .unwrap();
    let err = stderr(&o);
    // `bf16: true` is honoured (the native recipe's `dtype: bf16`), so it is not warned about.
    assert!(!err.contains("`bf16"), "{err}");
    for key in ["deepspeed", "report_to", "trust_remote_code"] {
        assert_eq!(
            err.matches(&format!("`{key}")).count(),
            1,
            "one warning for {key}: {err}"
        );
    }
    assert_eq!(losses(&o), native, "LLaMA-Factory config vs native recipe");
    assert!(dir.join("run_lf/model/config.json").is_file());

    // Export the native run, then train from the exported config: the same losses.
    let export = dir.join("export");
    let o = bin()
        .args(["train", "--model", model.to_str().unwrap(), "--data"])
        .arg(dir.join("native.jsonl"))
        .arg("--out")
        .arg(dir.join("run_exported"))
        .arg("--config")
        .arg(dir.join("native.yaml"))
        .arg("--export-llamafactory")
        .arg(&export)
        .output()
        .unwrap();
    ok(&o);
    assert!(!dir.join("run_exported").exists(), "export trains nothing");
    let info: Value =
        serde_json::from_str(&std::fs::read_to_string(export.join("dataset_info.json")).unwrap())
            .unwrap();
    assert_eq!(info["native"]["formatting"], "sharegpt");
    assert_eq!(info["native"]["tags"]["role_tag"], "role");
    let yaml = std::fs::read_to_string(export.join("train.yaml")).unwrap();
    assert!(
        yaml.contains("template: qwen2_vl") && yaml.contains("stage: sft"),
        "{yaml}"
    );
    let o = bin()
        .args(["train", "--config"])
        .arg(export.join("train.yaml"))
        .args(["--device", "cpu", "--json"])
        .output()
        .unwrap();
    assert_eq!(losses(&o), native, "exported config vs native recipe");
}

#[test]
fn bad_llamafactory_configs_are_named_and_write_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let model = tiny_model(dir);
    write_datasets(dir);
    let out = dir.join("run");
    let config = |extra: &str| {
        let p = dir.join("lf.yaml");
        std::fs::write(
            &p,
            format!(
                "model_name_or_path: {}\nstage: sft\ndataset_dir: {}\noutput_dir: {}\n{extra}",
                model.display(),
                dir.display(),
                out.display()
            ),
        )
        .unwrap();
        bin()
            .args(["train", "--device", "cpu", "--config"])
            .arg(&p)
            .output()
            .unwrap()
    };
    let o = config("dataset: colors_tagged,medical_vqa\n");
    expect_failure(
        &o,
        &[
            "dataset_info.json",
            "\"medical_vqa\"",
            "colors_alpaca, colors_tagged, remote_only",
        ],
    );
    assert!(!out.exists());
    let o = config("dataset: remote_only\n");
    expect_failure(
        &o,
        &["remote_only", "file_name", "huggingface-cli download"],
    );
    let o = config("dataset: colors_tagged\npure_bf16: true\n");
    expect_failure(&o, &["lf.yaml", "line 6, key `pure_bf16`", "f32"]);
    let o = config("dataset: colors_tagged\nquantization_bit: 2\n");
    expect_failure(&o, &["line 6, key `quantization_bit`", "8 or 4"]);
    assert!(!out.exists());
    // An export the other tool cannot express is refused before anything is written.
    let export = dir.join("export");
    let o = run(&[
        "train",
        "--model",
        model.to_str().unwrap(),
        "--data",
        dir.join("native.jsonl").to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--vision-lr-multiplier",
        "0.1",
        "--export-llamafactory",
        export.to_str().unwrap(),
    ]);
    expect_failure(&o, &["vision_lr_multiplier", "--vision-lr-multiplier 1"]);
    assert!(!export.exists());
}
