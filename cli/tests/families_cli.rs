//! The CLI with the Llama and LLaVA-NeXT families: `init --preset` for each, `generate` and
//! `loss` on their folders, `filter` with a base Llama judge (plain prompt), `--template`, and
//! the named errors for unknown presets and families.

mod common;

use std::path::Path;

use common::{expect_failure, ok, run, stdout};

fn init(dir: &Path, preset: &str) -> String {
    let out = dir.join(preset);
    let o = run(&[
        "init",
        "--out",
        out.to_str().unwrap(),
        "--preset",
        preset,
        "--seed",
        "3",
    ]);
    ok(&o);
    assert!(stdout(&o).contains(preset), "{}", stdout(&o));
    out.to_str().unwrap().to_string()
}

#[test]
fn llama_and_llava_folders_generate_and_score() {
    let tmp = tempfile::tempdir().unwrap();
    let image = tmp.path().join("plate.png");
    image::RgbImage::from_fn(70, 50, |x, y| {
        image::Rgb([(x * 3) as u8, (y * 5) as u8, 40])
    })
    .save(&image)
    .unwrap();
    let llava = init(tmp.path(), "llava-next-tiny");
    let o = run(&[
        "generate",
        "--model",
        &llava,
        "--device",
        "cpu",
        "--image",
        image.to_str().unwrap(),
        "--prompt",
        "<image>\nWhat dish is this?",
        "--max-new-tokens",
        "3",
        "--json",
    ]);
    ok(&o);
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    // The authors' prompt: two BOS, their system prompt, the image's tokens.
    assert!(v["prompt_tokens"].as_u64().unwrap() > 60, "{v}");
    let llama = init(tmp.path(), "llama-tiny");
    let o = run(&[
        "generate",
        "--model",
        &llama,
        "--device",
        "cpu",
        "--prompt",
        "Hello",
        "--max-new-tokens",
        "2",
    ]);
    ok(&o);
    // The same folder under another template.
    let o = run(&[
        "generate",
        "--model",
        &llama,
        "--device",
        "cpu",
        "--prompt",
        "Hello",
        "--max-new-tokens",
        "2",
        "--template",
        "chatml",
    ]);
    ok(&o);
    let o = run(&[
        "generate",
        "--model",
        &llama,
        "--device",
        "cpu",
        "--prompt",
        "Hi",
        "--template",
        "alpaca",
    ]);
    expect_failure(&o, &["--template \"alpaca\"", "llama3", "folder"]);
    // Images for a text-only model are refused by name.
    let o = run(&[
        "generate",
        "--model",
        &llama,
        "--device",
        "cpu",
        "--image",
        image.to_str().unwrap(),
        "--prompt",
        "Hi",
    ]);
    expect_failure(&o, &["text-only"]);
    let data = tmp.path().join("data.jsonl");
    std::fs::write(
        &data,
        "{\"messages\": [{\"role\": \"user\", \"content\": \"<image>\\nName it.\"}, {\"role\": \"assistant\", \"content\": \"Soup.\"}], \"images\": [\"plate.png\"]}\n",
    )
    .unwrap();
    let o = run(&[
        "loss",
        "--model",
        &llava,
        "--data",
        data.to_str().unwrap(),
        "--device",
        "cpu",
    ]);
    ok(&o);
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert!(
        v["loss"].as_f64().unwrap() > 0.0 && v["tokens"].as_u64().unwrap() >= 2,
        "{v}"
    );
}

#[test]
fn a_base_llama_judge_reads_the_plain_prompt() {
    let tmp = tempfile::tempdir().unwrap();
    let judge = init(tmp.path(), "llama-tiny");
    // A base model: no chat template, so `auto` means plain text with the tokenizer's BOS.
    let cfg_path = Path::new(&judge).join("tokenizer_config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cfg_path).unwrap()).unwrap();
    cfg.as_object_mut().unwrap().remove("chat_template");
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    let triplets = tmp.path().join("syn_task_triplets.jsonl");
    let pred = "Answer with a precise response.\\nIs it round?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\\n\\nYes<|eot_id|><|start_header_id|>user<|end_header_id|>\\n\\nAnswer with an informative response.\\nIs it round?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\\n\\nIt is a circle, so yes.<|eot_id|>";
    std::fs::write(
        &triplets,
        format!("{{\"syn_id\": 0, \"pred\": \"{pred}\"}}\n{{\"syn_id\": 1, \"pred\": null}}\n"),
    )
    .unwrap();
    let out = tmp.path().join("filtered_task_pairs.jsonl");
    let o = run(&[
        "filter",
        "--judge",
        &judge,
        "--in",
        triplets.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--device",
        "cpu",
        "--shots",
        "2",
    ]);
    ok(&o);
    let rows: Vec<serde_json::Value> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["collected_QA"]["precise_A"], "Yes");
    assert_eq!(rows[1]["consistency"], "no_triplet");
    // `--prompt-format chat` on a model without a template says how to give it one.
    let o = run(&[
        "filter",
        "--judge",
        &judge,
        "--in",
        triplets.to_str().unwrap(),
        "--out",
        tmp.path().join("chat.jsonl").to_str().unwrap(),
        "--device",
        "cpu",
        "--prompt-format",
        "chat",
    ]);
    expect_failure(&o, &["no chat template", "--template"]);
    assert!(!tmp.path().join("chat.jsonl").exists());
}

#[test]
fn unknown_presets_and_families_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("m");
    let o = run(&["init", "--out", out.to_str().unwrap(), "--preset", "gpt2"]);
    expect_failure(
        &o,
        &[
            "--preset \"gpt2\"",
            "llava-next-tiny",
            "llama3-8b",
            "qwen2vl-2b",
        ],
    );
    assert!(!out.exists(), "nothing written");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("config.json"), r#"{"model_type": "mllama"}"#).unwrap();
    let o = run(&[
        "generate",
        "--model",
        out.to_str().unwrap(),
        "--device",
        "cpu",
        "--prompt",
        "Hi",
    ]);
    expect_failure(&o, &["model_type", "\"mllama\"", "supported", "llava_next"]);
}
