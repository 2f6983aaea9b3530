//! Synthesis end to end on the tiny preset (flex): seed data → a synthesizer trained with
//! `mask_mode: synthesizer` → `run_synthesis` (batched = one at a time, bad rows skipped with
//! reasons) → a judge trained on the few-shot prompt → `run_filter` → `run_assemble`.

mod common;

use std::path::{Path, PathBuf};

use adamllm::burn::tensor::{DType, Device};
use adamllm::models::Model;
use adamllm::models::qwen2_vl::presets::{Preset, init_model_dir};
use adamllm::synth::assemble::{AssemblyMode, run_assemble};
use adamllm::synth::judge::{FilterOptions, judge_prompt_text, judge_triplets, run_filter};
use adamllm::synth::pairs::read_caption_pairs;
use adamllm::synth::seed::{SEED_TRAIN_FILE, SeedOptions, build_seed_set};
use adamllm::synth::synthesize::{SynthesizeOptions, TRIPLETS_FILE, run_synthesis};
use adamllm::synth::triplets::{INFORMATIVE_HINT, Triplet, triplet_from_output};
use adamllm::train::recipe::TrainRecipe;
use adamllm::train::trainer::{Quiet, TrainRequest, train};
use serde_json::{Value, json};

const COLORS: [(&str, [u8; 3]); 4] = [
    ("red", [220, 30, 30]),
    ("green", [30, 200, 40]),
    ("blue", [20, 40, 230]),
    ("yellow", [240, 230, 20]),
];

/// The question every seed image carries, with its two answers (the same for every image, so
/// the tiny synthesizer's output depends on nothing it cannot memorize).
const QUESTION: &str = "Is the picture a single square?";
const INFORMATIVE: &str = "One square fills the whole frame, so yes.";
const PRECISE: &str = "Yes";

/// The triplet the trained synthesizer should write.
fn expected_triplet() -> Triplet {
    Triplet {
        instruction: QUESTION.into(),
        informative_answer: INFORMATIVE.into(),
        precise_answer: PRECISE.into(),
    }
}

fn recipe(overrides: &[(&str, &str)]) -> TrainRecipe {
    let base = [
        ("finetuning_type", "full"),
        ("lr_scheduler_type", "constant"),
        ("per_device_train_batch_size", "4"),
        ("image_min_pixels", "3136"),
        ("image_max_pixels", "3136"),
        ("save_steps", "0"),
        ("logging_steps", "50"),
        ("freeze_vision_tower", "false"),
        ("seed", "3"),
    ];
    let all: Vec<(String, String)> = base
        .iter()
        .chain(overrides)
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    TrainRecipe::load(None, &all).unwrap()
}

fn train_tiny(dir: &Path, name: &str, data: &Path, overrides: &[(&str, &str)]) -> PathBuf {
    let base = dir.join(format!("{name}-base"));
    init_model_dir(&base, Preset::Tiny, 11, false).unwrap();
    let out = dir.join(format!("{name}-run"));
    let request = TrainRequest {
        model_dir: base,
        data: vec![data.to_path_buf()],
        layouts: Default::default(),
        stages: false,
        val_data: None,
        images_dir: None,
        out: out.clone(),
        recipe: recipe(overrides),
        device: Device::flex(),
        replica_devices: Vec::new(),
        resume: false,
        skip_bad: false,
    };
    let summary = train(&request, &mut Quiet).unwrap();
    let last = summary.losses.last().unwrap().loss;
    eprintln!("{name}: final loss {last}");
    assert!(last < 0.05, "{name} did not memorize: final loss {last}");
    out.join("model")
}

#[test]
fn synthesize_filter_assemble_on_a_trained_tiny_synthesizer() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let images = dir.join("images");
    std::fs::create_dir_all(&images).unwrap();

    // 1. Seed data and the synthesizer's tuning set.
    let inputs = common::write_square_seed(dir, &images, &COLORS, QUESTION, PRECISE, INFORMATIVE);
    let seed_dir = dir.join("seed");
    // Seed 16 shuffles every image's two rounds into the same order (informative first).
    let seed_options = SeedOptions {
        blank_percent: 0.0,
        dev_fraction: 0.0,
        seed: 16,
    };
    let summary = build_seed_set(&inputs, &seed_dir, &seed_options).unwrap();
    assert_eq!((summary.train, summary.dev, summary.rounds), (4, 0, 8));
    let tuning: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(seed_dir.join(SEED_TRAIN_FILE)).unwrap())
            .unwrap();
    for row in &tuning {
        let first_question = row["messages"][2]["content"].as_str().unwrap();
        assert!(first_question.starts_with(INFORMATIVE_HINT), "{row}");
    }

    // 2. The synthesizer memorizes the tuning set (first round masked, <|endoftext|> trained).
    let synthesizer = train_tiny(
        dir,
        "synthesizer",
        &seed_dir.join(SEED_TRAIN_FILE),
        &[
            ("mask_mode", "synthesizer"),
            ("max_steps", "100"),
            ("learning_rate", "1e-2"),
        ],
    );

    // 3. Domain pairs: the four images plus bad rows.
    image::RgbImage::from_pixel(56, 56, image::Rgb([0, 0, 0]))
        .save(images.join("black.png"))
        .unwrap();
    std::fs::write(images.join("corrupt.png"), b"this is not a png").unwrap();
    let mut pairs: Vec<Value> = COLORS
        .iter()
        .map(|(name, _)| {
            json!({"images": [format!("{name}.png")], "messages": [
                {"role": "user", "content": "<image>Describe this slide."},
                {"role": "assistant", "content": format!("A {name} square.")}]})
        })
        .collect();
    pairs.insert(
        2,
        json!({"images": ["black.png"], "messages": [
            {"role": "user", "content": "<image>Describe."}, {"role": "assistant", "content": "   "}]}),
    );
    pairs.push(json!({"images": ["missing.png"], "messages": [
        {"role": "user", "content": "<image>Describe."}, {"role": "assistant", "content": "A gray square."}]}));
    pairs.push(json!({"images": ["corrupt.png"], "messages": [
        {"role": "user", "content": "<image>Describe."}, {"role": "assistant", "content": "A red square."}]}));
    pairs.push(json!({"images": ["black.png"], "messages": [
        {"role": "user", "content": "<image>Describe."}]}));
    let pairs_path = dir.join("image_caption_pairs.jsonl");
    common::write_jsonl(&pairs_path, &pairs);
    let read = read_caption_pairs(&pairs_path).unwrap();
    assert_eq!((read.pairs.len(), read.skipped.len()), (6, 2));

    // 4. Synthesis, batched and one at a time.
    let model = Model::load(&synthesizer, &Device::flex(), DType::F32).unwrap();
    let mut outputs = Vec::new();
    for batch_size in [3, 1] {
        let out = dir.join(format!("synth-b{batch_size}"));
        let options = SynthesizeOptions {
            batch_size,
            ..SynthesizeOptions::default()
        };
        let mut calls = 0;
        let summary = run_synthesis(
            &model,
            &read,
            &pairs_path,
            &images,
            &out,
            &options,
            &mut |_| calls += 1,
        )
        .unwrap();
        assert_eq!(
            (summary.rows, summary.with_triplet, summary.skipped),
            (4, 4, 4),
            "{}",
            std::fs::read_to_string(out.join(TRIPLETS_FILE)).unwrap()
        );
        assert!(calls >= 2, "progress reported {calls} times");
        assert!(
            !out.join(".syn_cache").exists(),
            "the cache is removed when done"
        );
        outputs.push(std::fs::read_to_string(out.join(TRIPLETS_FILE)).unwrap());
        let skipped = std::fs::read_to_string(out.join("skipped.jsonl")).unwrap();
        let reasons: Vec<Value> = skipped
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let ids: Vec<u64> = reasons
            .iter()
            .map(|r| r["syn_id"].as_u64().unwrap())
            .collect();
        assert_eq!(ids, [2, 5, 6, 7]);
        assert_eq!(reasons[0]["reason"], "the caption is empty");
        assert!(
            reasons[1]["reason"]
                .as_str()
                .unwrap()
                .contains("missing.png"),
            "{skipped}"
        );
        assert!(
            reasons[2]["reason"]
                .as_str()
                .unwrap()
                .contains("corrupt.png"),
            "{skipped}"
        );
        assert_eq!(reasons[3]["reason"], "no assistant turn (the caption)");
    }
    assert_eq!(
        outputs[0], outputs[1],
        "batched synthesis differs from one at a time"
    );
    let rows: Vec<Value> = outputs[0]
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let ids: Vec<u64> = rows.iter().map(|r| r["syn_id"].as_u64().unwrap()).collect();
    assert_eq!(ids, [0, 1, 3, 4]);
    let names = ["red", "green", "blue", "yellow"];
    for (row, name) in rows.iter().zip(names) {
        let pred = row["pred"].as_str().unwrap();
        assert_eq!(row["finish_reason"], "stop", "{pred}");
        assert_eq!(
            triplet_from_output(pred),
            Some(expected_triplet()),
            "{pred}"
        );
        assert_eq!(row["messages"][1]["content"], format!("A {name} square."));
    }

    // 5. The filter, on hand-written synthesizer outputs with four different triplets (and
    // one without), judged by a tiny judge trained to answer each few-shot prompt.
    let judged_cases = [
        (
            0,
            "Is the square red?",
            "The square is filled with red, so yes.",
            "Yes",
            "Yes",
        ),
        (
            1,
            "How many squares are there?",
            "One square fills the frame, so one.",
            "One",
            "Yes",
        ),
        (
            3,
            "Is the square on the left?",
            "It covers the whole picture, not the left.",
            "Yes",
            "No",
        ),
        (
            4,
            "What mood does the color create?",
            "Bright colors often feel cheerful.",
            "Cheerful",
            "Open",
        ),
    ];
    let mut synthesized: Vec<Value> = Vec::new();
    let mut judge_rows = Vec::new();
    let mut triplets = Vec::new();
    for (id, question, informative, precise, label) in judged_cases {
        let pred = format!(
            "Answer with an informative response.\n{question}<|im_end|>\n<|im_start|>assistant\n{informative}<|im_end|>\n<|im_start|>user\nAnswer with a precise response.\n{question}<|im_end|>\n<|im_start|>assistant\n{precise}<|im_end|>\n"
        );
        let mut row = rows.iter().find(|r| r["syn_id"] == id).unwrap().clone();
        row["pred"] = json!(pred);
        synthesized.push(row);
        let triplet = Triplet {
            instruction: question.into(),
            informative_answer: informative.into(),
            precise_answer: precise.into(),
        };
        judge_rows.push(json!({"messages": [
            {"role": "user", "content": judge_prompt_text(&triplet, 0, true)},
            {"role": "assistant", "content": label}]}));
        triplets.push(triplet);
    }
    synthesized.push(json!({"syn_id": 9, "pred": "Answer with a precise response.\nCut off"}));
    let input = dir.join("hand_written_triplets.jsonl");
    common::write_jsonl(&input, &synthesized);
    common::write_jsonl(&dir.join("judge.jsonl"), &judge_rows);
    let judge_dir = train_tiny(
        dir,
        "judge",
        &dir.join("judge.jsonl"),
        &[("max_steps", "60"), ("learning_rate", "1e-2")],
    );
    let judge = Model::load(&judge_dir, &Device::flex(), DType::F32).unwrap();
    let filtered = dir.join("filtered_task_pairs.jsonl");
    let options = FilterOptions {
        batch_size: 3,
        shots: 0,
        ..FilterOptions::default()
    };
    let summary = run_filter(&judge, &input, &filtered, &options, &mut |_| {}).unwrap();
    let counts: Vec<usize> = ["yes", "no", "open", "unparsed", "no_triplet"]
        .iter()
        .map(|l| summary.labels[*l])
        .collect();
    assert_eq!(counts, [2, 1, 1, 0, 1]);
    assert_eq!(summary.kept, 2);
    let judged: Vec<Value> = std::fs::read_to_string(&filtered)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(judged.len(), 5);
    assert_eq!(judged[0]["pred"], "Yes");
    assert_eq!(judged[2]["consistency"], "no");
    assert_eq!(judged[0]["collected_QA"]["precise_A"], "Yes");
    assert_eq!(judged[4]["pred"], Value::Null);
    assert_eq!(judged[4]["consistency"], "no_triplet");
    assert!(dir.join("filtered_task_pairs.labels.json").is_file());
    // The batched in-memory judgement (the demo's held-out check) agrees with the filter,
    // row for row, across a batch boundary.
    let in_memory: Vec<String> = judge_triplets(&judge, &triplets, &options)
        .unwrap()
        .into_iter()
        .map(|j| format!("{}|{}", j.label.as_str(), j.text))
        .collect();
    let from_filter: Vec<String> = judged[..4]
        .iter()
        .map(|r| {
            format!(
                "{}|{}",
                r["consistency"].as_str().unwrap(),
                r["pred"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(in_memory, from_filter);

    // 6. Assembly: single stage keeps the 4 pairs with a readable image, 2 with a synthetic
    // round.
    let out = dir.join("image_caption_and_synthetic_task.json");
    let summary = run_assemble(&read, &images, &filtered, AssemblyMode::Single, 0, &out).unwrap();
    assert_eq!(
        (
            summary.pairs,
            summary.pairs_without_image,
            summary.with_synthetic_task
        ),
        (4, 2, 2)
    );
    assert_eq!((summary.tasks_not_kept, summary.tasks_without_pair), (3, 0));
    let data: Vec<Value> = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let rounds: Vec<usize> = data
        .iter()
        .map(|d| d["messages"].as_array().unwrap().len())
        .collect();
    assert_eq!(rounds, [4, 4, 2, 2]);
    let red = data[0]["messages"].to_string();
    assert!(
        red.contains("Is the square red?") && red.contains("A red square."),
        "{red}"
    );
    assert_eq!(data[0]["images"], json!(["red.png"]));
    // Unfiltered ablation: the synthesis file itself gives a task for every image.
    let unfiltered = dir.join("synth-b3").join(TRIPLETS_FILE);
    let summary = run_assemble(
        &read,
        &images,
        &unfiltered,
        AssemblyMode::SyntheticOnly,
        0,
        &dir.join("u.json"),
    )
    .unwrap();
    assert_eq!(summary.with_synthetic_task, 4);
}
