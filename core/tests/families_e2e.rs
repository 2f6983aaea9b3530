//! The paper's pipeline with its own families (flex): seed data → a tiny LLaVA-NeXT synthesizer
//! trained with `mask_mode: synthesizer` (Llama 3 turns, `<|end_of_text|>` appended and
//! trained) → synthesis (stops at `<|end_of_text|>`, turns split on Llama 3's markers) → a
//! tiny Llama judge → the filter → single-stage assembly → LoRA post-training of a tiny
//! LLaVA-NeXT backbone (PEFT adapter written) → evaluation.

mod common;

use std::path::{Path, PathBuf};

use adamllm::burn::tensor::{DType, Device};
use adamllm::eval::BenchmarkTask;
use adamllm::eval::benchmark::{ReadOptions, read_benchmark};
use adamllm::eval::custom_task::EvalTask;
use adamllm::eval::runner::{EvalOptions, run_eval};
use adamllm::models::Model;
use adamllm::models::registry::family_of_preset;
use adamllm::synth::assemble::{AssemblyMode, run_assemble};
use adamllm::synth::judge::{FilterOptions, judge_prompt_text, run_filter};
use adamllm::synth::pairs::read_caption_pairs;
use adamllm::synth::seed::{SEED_TRAIN_FILE, SeedOptions, build_seed_set};
use adamllm::synth::synthesize::{SynthesizeOptions, TRIPLETS_FILE, run_synthesis};
use adamllm::synth::triplets::{Triplet, triplet_from_output};
use adamllm::train::recipe::TrainRecipe;
use adamllm::train::trainer::{Quiet, TrainRequest, train};
use serde_json::{Value, json};

const COLORS: [(&str, [u8; 3]); 3] = [
    ("red", [220, 30, 30]),
    ("green", [30, 200, 40]),
    ("blue", [20, 40, 230]),
];
const QUESTION: &str = "Is the picture a single square?";
const INFORMATIVE: &str = "One square fills the whole frame, so yes.";
const PRECISE: &str = "Yes";

fn init(dir: &Path, preset: &str, seed: u64) -> PathBuf {
    let out = dir.join(format!("{preset}-{seed}"));
    family_of_preset(preset)
        .unwrap()
        .write_preset(preset, &out, seed)
        .unwrap();
    out
}

fn train_on(
    base: PathBuf,
    dir: &Path,
    name: &str,
    data: &Path,
    images: Option<&Path>,
    overrides: &[(&str, &str)],
) -> PathBuf {
    let pairs: Vec<(String, String)> = [
        ("finetuning_type", "full"),
        ("lr_scheduler_type", "constant"),
        ("per_device_train_batch_size", "3"),
        ("save_steps", "0"),
        ("logging_steps", "50"),
        ("freeze_vision_tower", "false"),
        ("seed", "3"),
    ]
    .iter()
    .chain(overrides)
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let out = dir.join(format!("{name}-run"));
    let request = TrainRequest {
        model_dir: base,
        data: vec![data.to_path_buf()],
        layouts: Default::default(),
        stages: false,
        val_data: None,
        images_dir: images.map(Path::to_path_buf),
        out: out.clone(),
        recipe: TrainRecipe::load(None, &pairs).unwrap(),
        device: Device::flex(),
        replica_devices: Vec::new(),
        resume: false,
        skip_bad: false,
    };
    let summary = train(&request, &mut Quiet).unwrap();
    let last = summary.losses.last().unwrap().loss;
    eprintln!("{name}: final loss {last}");
    out
}

#[test]
fn llava_synthesizer_llama_judge_and_llava_backbone_run_the_pipeline() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let images = dir.join("images");
    std::fs::create_dir_all(&images).unwrap();

    // 1. Seed data → the synthesizer's tuning set.
    let inputs = common::write_square_seed(dir, &images, &COLORS, QUESTION, PRECISE, INFORMATIVE);
    let seed_dir = dir.join("seed");
    let options = SeedOptions {
        blank_percent: 0.0,
        dev_fraction: 0.0,
        seed: 16,
    };
    build_seed_set(&inputs, &seed_dir, &options).unwrap();

    // 2. The LLaVA-NeXT synthesizer memorizes it; its labels end in a trained <|end_of_text|>.
    let synth_run = train_on(
        init(dir, "llava-next-tiny", 5),
        dir,
        "synthesizer",
        &seed_dir.join(SEED_TRAIN_FILE),
        None,
        &[
            ("mask_mode", "synthesizer"),
            ("max_steps", "120"),
            ("learning_rate", "1e-2"),
        ],
    );
    let synthesizer = Model::load(&synth_run.join("model"), &Device::flex(), DType::F32).unwrap();
    assert_eq!(synthesizer.spec.family, "llava_next");

    // 3. Synthesis on the domain pairs: Llama 3 turns, stopped at <|end_of_text|>.
    let pairs: Vec<Value> = COLORS
        .iter()
        .map(|(name, _)| {
            json!({"images": [format!("{name}.png")], "messages": [
                {"role": "user", "content": "<image>Describe this slide."},
                {"role": "assistant", "content": format!("A {name} square.")}]})
        })
        .collect();
    let pairs_path = dir.join("image_caption_pairs.jsonl");
    common::write_jsonl(&pairs_path, &pairs);
    let read = read_caption_pairs(&pairs_path).unwrap();
    let synth_out = dir.join("synth");
    let summary = run_synthesis(
        &synthesizer,
        &read,
        &pairs_path,
        &images,
        &synth_out,
        &SynthesizeOptions {
            batch_size: 2,
            ..SynthesizeOptions::default()
        },
        &mut |_| {},
    )
    .unwrap();
    let rows: Vec<Value> = std::fs::read_to_string(synth_out.join(TRIPLETS_FILE))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(summary.rows, 3);
    let want = Triplet {
        instruction: QUESTION.into(),
        informative_answer: INFORMATIVE.into(),
        precise_answer: PRECISE.into(),
    };
    for row in &rows {
        let pred = row["pred"].as_str().unwrap();
        assert!(pred.contains("<|eot_id|>"), "Llama 3 turns: {pred}");
        assert_eq!(row["finish_reason"], "stop", "{pred}");
        assert_eq!(triplet_from_output(pred), Some(want.clone()), "{pred}");
    }

    // 4. A tiny Llama judge trained on the prompt answers the filter.
    let judge_rows = vec![json!({"messages": [
        {"role": "user", "content": judge_prompt_text(&want, 0, true)},
        {"role": "assistant", "content": "Yes"}]})];
    common::write_jsonl(&dir.join("judge.jsonl"), &judge_rows);
    let judge_run = train_on(
        init(dir, "llama-tiny", 6),
        dir,
        "judge",
        &dir.join("judge.jsonl"),
        None,
        &[("max_steps", "40"), ("learning_rate", "1e-2")],
    );
    let judge = Model::load(&judge_run.join("model"), &Device::flex(), DType::F32).unwrap();
    assert_eq!(judge.spec.family, "llama");
    let filtered = dir.join("filtered_task_pairs.jsonl");
    let filter = FilterOptions {
        batch_size: 2,
        shots: 0,
        ..FilterOptions::default()
    };
    let summary = run_filter(
        &judge,
        &synth_out.join(TRIPLETS_FILE),
        &filtered,
        &filter,
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(summary.kept, 3, "{:?}", summary.labels);

    // 5. Single-stage assembly and LoRA post-training of a LLaVA-NeXT backbone.
    let assembled = dir.join("image_caption_and_synthetic_task.json");
    let summary = run_assemble(
        &read,
        &images,
        &filtered,
        AssemblyMode::Single,
        0,
        &assembled,
    )
    .unwrap();
    assert_eq!(summary.with_synthetic_task, 3);
    let post = train_on(
        init(dir, "llava-next-tiny", 7),
        dir,
        "post",
        &assembled,
        Some(&images),
        &[
            ("finetuning_type", "lora"),
            ("freeze_vision_tower", "true"),
            ("lora_rank", "4"),
            ("max_steps", "3"),
            ("learning_rate", "1e-3"),
        ],
    );
    let adapter: Value = serde_json::from_str(
        &std::fs::read_to_string(post.join("adapter/adapter_config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(adapter["peft_type"], "LORA");
    let st = std::fs::read(post.join("adapter/adapter_model.safetensors")).unwrap();
    let names: Vec<String> = safetensors::SafeTensors::deserialize(&st)
        .unwrap()
        .names()
        .into_iter()
        .map(str::to_string)
        .collect();
    assert!(
        names
            .iter()
            .all(|n| n.starts_with("base_model.model.language_model.model.layers.")),
        "LoRA on the language model only: {names:?}"
    );
    // The CLIP tower's q/k/v share the adapted names, so PEFT gets the full module names.
    let targets = adapter["target_modules"].as_array().unwrap();
    assert!(
        targets.iter().all(|t| t
            .as_str()
            .unwrap()
            .starts_with("language_model.model.layers.")),
        "{targets:?}"
    );

    // 6. Evaluation of the post-trained model on a small benchmark.
    let mut text = String::new();
    for (i, (name, _)) in COLORS.iter().enumerate() {
        text.push_str(
            &json!({"input": format!("Is the square {name}?"), "label": "yes",
                "answer_type": "CLOSED", "image": format!("{name}.png")})
            .to_string(),
        );
        text.push('\n');
        let _ = i;
    }
    let bench = images.join("VQA_RAD.jsonl");
    std::fs::write(&bench, text).unwrap();
    let task = EvalTask::Builtin(BenchmarkTask::VqaRad);
    let rows = read_benchmark(
        &bench,
        &ReadOptions {
            required_fields: task.required_fields(),
            ..Default::default()
        },
    )
    .unwrap();
    let model = Model::load(&post.join("model"), &Device::flex(), DType::F32).unwrap();
    let opts = EvalOptions {
        batch_size: 2,
        limit: None,
        max_new_tokens: Some(4),
        pixels: None,
    };
    let summary = run_eval(
        &model,
        &task,
        &rows,
        &dir.join("eval"),
        &opts,
        &mut |_, _| {},
    )
    .unwrap();
    assert_eq!(summary.examples, 3);
    assert!(dir.join("eval/results.json").is_file());
}
