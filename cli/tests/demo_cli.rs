//! `adamllm demo --quick` as CI's smoke test of the main job: interrupted for real, resumed,
//! finished (table printed, report files written), rerun (every stage reused); the general
//! models trained in the run (`--train-general`); and the output folder rules (a foreign
//! folder or another demo's folder is refused, nothing is deleted).

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;

mod common;
use common::{bin, expect_failure, stderr};

/// Opens `out/report.html` in headless Chromium (web/tests/report_test.mjs) and checks what it
/// shows: the domains' tables, every image loaded (the charts, loss curves and samples), one
/// checklist item per finding, nothing requested outside the folder, no console error. The
/// screenshot stays in tests/output/demo-report/. `ADAMLLM_SKIP_BROWSER=1` skips the check.
fn check_report_in_browser(out: &Path, findings: usize) {
    if std::env::var_os("ADAMLLM_SKIP_BROWSER").is_some() {
        eprintln!("ADAMLLM_SKIP_BROWSER is set: report.html is not opened in a browser");
        return;
    }
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    assert!(
        repo.join("web/tests/node_modules/playwright-core").exists(),
        "playwright-core is missing: run `npm ci` in web/tests (scripts/test.sh does)"
    );
    let shots = repo.join("tests/output/demo-report");
    let _ = std::fs::remove_dir_all(&shots);
    let o = std::process::Command::new("node")
        .arg(repo.join("web/tests/report_test.mjs"))
        .env("ADAMLLM_REPORT", out.join("report.html"))
        .env("ADAMLLM_REPORT_OUT", &shots)
        .output()
        .expect("node runs");
    let view: Value = std::fs::read(shots.join("report-view.json"))
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or(Value::Null);
    assert!(o.status.success(), "{}\n{view:#}", stderr(&o));
    assert!(shots.join("report.png").is_file(), "no screenshot");
    assert_eq!(view["outside_requests"], serde_json::json!([]), "{view:#}");
    assert_eq!(view["console"], serde_json::json!([]), "{view:#}");
    let headings: Vec<&str> = view["headings"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for heading in [
        "biomed",
        "food",
        "How the paper's claims fare here",
        "Loss curves",
    ] {
        assert!(
            headings.contains(&heading),
            "{heading} missing: {headings:?}"
        );
    }
    let images = view["images"].as_array().unwrap();
    for image in images {
        assert_eq!(image["loaded"], true, "broken image: {image}");
    }
    let charts: Vec<&Value> = images.iter().filter(|i| i["class"] == "chart").collect();
    assert_eq!(charts.len(), 2, "{charts:?}");
    assert!(charts.iter().all(|c| c["width"] == 960), "{charts:?}");
    assert!(images.iter().any(|i| i["class"] == "sample"), "{images:?}");
    assert!(
        images.iter().filter(|i| i["class"] == "").count() >= 10,
        "the loss curves: {images:?}"
    );
    // Loss curves sit side by side, not one under the other.
    assert!(view["plot_columns"].as_u64().unwrap() >= 2, "{view:#}");
    let claims = view["claims"].as_array().unwrap();
    assert_eq!(claims.len(), findings, "{claims:?}");
    let tables = view["tables"].as_array().unwrap();
    let ablation_tables: Vec<&Value> = tables
        .iter()
        .filter(|t| t["header"][0] == "ablation")
        .collect();
    assert_eq!(ablation_tables.len(), 2, "{tables:?}");
    assert!(ablation_tables.iter().all(|t| t["rows"] == 6), "{tables:?}");
}

fn finished_stages(out: &Path) -> Vec<String> {
    std::fs::read_to_string(out.join("demo_state.json"))
        .ok()
        .and_then(|text| serde_json::from_str::<Value>(&text).ok())
        .and_then(|state| {
            state["finished"]
                .as_object()
                .map(|m| m.keys().cloned().collect())
        })
        .unwrap_or_default()
}

#[test]
fn quick_demo_resumes_after_a_kill_and_reports() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("demo");
    let args = |out: &Path| {
        vec![
            "demo".to_string(),
            "--quick".into(),
            "--device".into(),
            "cpu".into(),
            "--out".into(),
            out.display().to_string(),
        ]
    };
    // Interrupt after the first target-domain stage.
    let mut child = bin()
        .args(args(&out))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while !finished_stages(&out).contains(&"biomed/synthesize".to_string()) {
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "biomed/synthesize never finished"
        );
        assert!(child.try_wait().unwrap().is_none(), "demo ended early");
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!out.join("report.md").exists());
    // The stages after synthesis (filter, rules) take milliseconds, so the kill may land after
    // them: the rerun must reuse exactly what the state file says was finished.
    let finished_at_kill = finished_stages(&out);

    let o = bin().args(args(&out)).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let log = stderr(&o);
    assert!(log.contains("base: finished earlier, reused"), "{log}");
    for stage in &finished_at_kill {
        assert!(
            log.contains(&format!("{stage}: finished earlier, reused")),
            "{stage} was finished before the kill but not reused:\n{log}"
        );
    }
    // Everything else ran now: at least the post-trainings, which the kill came before.
    assert!(
        !finished_at_kill.contains(&"biomed/train/paper_method".to_string()),
        "{finished_at_kill:?}"
    );
    assert!(log.contains("biomed/train/paper_method ...\n"), "{log}");
    assert!(
        !log.contains("biomed/train/paper_method: finished earlier"),
        "{log}"
    );
    let table = String::from_utf8_lossy(&o.stdout).to_string();
    for needle in [
        "## biomed",
        "## food",
        "| general base (no post-training) |",
        "(paper) |",
    ] {
        assert!(table.contains(needle), "table lacks {needle:?}: {table}");
    }
    for file in [
        "report.md",
        "report.json",
        "report.html",
        "plots/biomed-paper_method.png",
        "plots/food-caption_only.png",
    ] {
        assert!(out.join(file).is_file(), "{file} missing");
    }
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    // The general models are the committed ones, loaded and recorded by digest.
    for model in ["base", "synthesizer", "judge"] {
        let stage = &report["stages"][model];
        assert_eq!(stage["prebuilt"], true, "{stage}");
        assert_eq!(stage["sha256"].as_str().unwrap().len(), 64, "{stage}");
        // How they were built comes from the committed build.json, without its paths.
        assert!(stage["build"]["steps"].as_u64().unwrap() > 0, "{stage}");
        assert!(stage["build"].get("model").is_none(), "{stage}");
    }
    // The committed judge's held-out score is in the summary and the report's header.
    let held_out = report["stages"]["judge"]["build"]["held_out"]["accuracy"]
        .as_f64()
        .unwrap();
    let markdown = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        markdown.contains(&format!("The judge answers {held_out:.1} % of ")),
        "{markdown}"
    );
    for domain in ["biomed", "food"] {
        let rows = report["table"][domain].as_object().unwrap();
        assert!(
            rows.contains_key("general_base") && rows.contains_key("paper_method"),
            "{rows:?}"
        );
        for scores in rows.values() {
            for task in scores.as_object().unwrap().values() {
                let score = task["score"].as_f64().unwrap();
                assert!((0.0..=100.0).contains(&score), "{task}");
            }
        }
    }
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(
        html.contains("<img class=\"sample\" src=\"data/biomed-train/images/"),
        "{html}"
    );
    assert!(!html.contains("http://") && !html.contains("https://"));
    // The tables are HTML tables, not markdown in a <pre> block.
    assert!(
        html.contains("<table>") && html.contains("<th>ablation</th>") && !html.contains("<pre>"),
        "{html}"
    );
    // One seed: every claim says a gap settles nothing, unless the rows are exactly level.
    let findings = report["findings"].as_array().unwrap();
    assert!(findings.len() >= 8, "{findings:?}");
    for finding in findings {
        let verdict = &finding["verdict"];
        assert!(
            verdict.is_null() || verdict == "one_seed" || verdict == "tie",
            "{finding}"
        );
        assert!(
            markdown.contains(finding["text"].as_str().unwrap()),
            "{finding}"
        );
    }
    check_report_in_browser(&out, findings.len());

    // A rerun reuses every stage and prints the same table.
    let again = bin().args(args(&out)).output().unwrap();
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(
        !stderr(&again).contains(" ...\n"),
        "a stage ran again: {}",
        stderr(&again)
    );
    let first_table = table.split("\nTime: ").next().unwrap().to_string();
    let again_table = String::from_utf8_lossy(&again.stdout).to_string();
    assert_eq!(again_table.split("\nTime: ").next().unwrap(), first_table);

    // Another seed into the same folder is refused without --force.
    let mut other = args(&out);
    other.extend(["--seed".to_string(), "5".to_string()]);
    let o = bin().args(&other).output().unwrap();
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("other options") && stderr(&o).contains("--force"),
        "{}",
        stderr(&o)
    );
    assert!(
        out.join("report.md").is_file(),
        "refusal touched the earlier run"
    );
}

#[test]
fn quick_demo_can_train_the_general_models_itself() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("demo");
    let o = bin()
        .args(["demo", "--quick", "--train-general", "--domain", "food"])
        .args(["--device", "cpu", "--out", out.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let table = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        table.contains("## food") && !table.contains("## biomed"),
        "{table}"
    );
    for file in ["plots/base.png", "plots/synthesizer.png", "plots/judge.png"] {
        assert!(out.join(file).is_file(), "{file} missing");
    }
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(report["options"]["general"], "train");
    for model in ["base", "synthesizer", "judge"] {
        let stage = &report["stages"][model];
        assert!(stage["steps"].as_u64().unwrap() > 0, "{stage}");
        assert!(stage.get("prebuilt").is_none(), "{stage}");
    }
    // The same folder with the committed models is another run: refused without --force.
    let o = bin()
        .args(["demo", "--quick", "--domain", "food"])
        .args(["--device", "cpu", "--out", out.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(stderr(&o).contains("other options"), "{}", stderr(&o));
}

#[test]
fn foreign_folders_are_refused_and_never_emptied() {
    let tmp = tempfile::tempdir().unwrap();
    let mine = tmp.path().join("mine");
    std::fs::create_dir_all(&mine).unwrap();
    std::fs::write(mine.join("thesis.tex"), "my work").unwrap();
    let o = bin()
        .args(["demo", "--quick", "--out", mine.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("mine") && e.contains("not empty") && e.contains("--force"),
        "{e}"
    );
    assert_eq!(
        std::fs::read_to_string(mine.join("thesis.tex")).unwrap(),
        "my work"
    );
    // --force next to a folder the demo would write into is still refused.
    std::fs::create_dir_all(mine.join("data")).unwrap();
    let o = bin()
        .args([
            "demo",
            "--quick",
            "--force",
            "--out",
            mine.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(stderr(&o).contains("data"), "{}", stderr(&o));
    assert!(mine.join("thesis.tex").is_file() && mine.join("data").is_dir());
    // A file is not a folder.
    let file = tmp.path().join("file.txt");
    std::fs::write(&file, "x").unwrap();
    let o = bin()
        .args(["demo", "--quick", "--out", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(stderr(&o).contains("not a folder"), "{}", stderr(&o));
    // A folder that cannot be created (here: under a file) is named, and nothing is written.
    let under_file = file.join("demo");
    let o = bin()
        .args(["demo", "--quick", "--out", under_file.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains(under_file.to_str().unwrap()) && e.contains("cannot create"),
        "{e}"
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "x");
}

#[test]
fn demo_models_writes_the_three_models_and_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let (out, work) = (tmp.path().join("models"), tmp.path().join("work"));
    let args = [
        "demo-models",
        "--general-images",
        "12",
        "--device",
        "cpu",
        "--out",
        out.to_str().unwrap(),
        "--work",
        work.to_str().unwrap(),
    ];
    let o = bin().args(args).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let build: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("build.json")).unwrap()).unwrap();
    assert_eq!(build["scale"]["general_images"], 12);
    assert_eq!(build["options"]["general"]["build"]["general_images"], 12);
    for name in ["base", "synthesizer", "judge"] {
        let written = std::fs::read(out.join(format!("{name}.safetensors"))).unwrap();
        let trained = std::fs::read(
            work.join("runs")
                .join(name)
                .join("model")
                .join("model.safetensors"),
        )
        .unwrap();
        assert_eq!(written, trained, "{name}");
        assert!(
            build["models"][name]["steps"].as_u64().unwrap() > 0,
            "{build}"
        );
        assert!(build["seconds"][name].as_f64().unwrap() > 0.0, "{build}");
    }
    // The three are different models (the synthesizer and judge were tuned from the base).
    let base = std::fs::read(out.join("base.safetensors")).unwrap();
    assert_ne!(base, std::fs::read(out.join("judge.safetensors")).unwrap());
    assert_ne!(
        base,
        std::fs::read(out.join("synthesizer.safetensors")).unwrap()
    );
    // A rerun reuses every stage and writes the same weights.
    let again = bin().args(args).output().unwrap();
    assert!(again.status.success(), "{}", stderr(&again));
    for stage in ["base", "synthesizer", "judge"] {
        assert!(
            stderr(&again).contains(&format!("{stage}: finished earlier, reused")),
            "{}",
            stderr(&again)
        );
    }
    assert_eq!(base, std::fs::read(out.join("base.safetensors")).unwrap());
}

#[test]
fn seeds_give_mean_and_spread_and_keep_the_first_seed_as_it_was() {
    let tmp = tempfile::tempdir().unwrap();
    let run = |out: &Path, seeds: &str| {
        bin()
            .args(["demo", "--quick", "--domain", "food", "--device", "cpu"])
            .args(["--seeds", seeds, "--out", out.to_str().unwrap()])
            .output()
            .unwrap()
    };
    let two = tmp.path().join("two");
    let o = run(&two, "2");
    assert!(o.status.success(), "{}", stderr(&o));
    let table = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(table.contains("ran with 2 seeds (0, 1)"), "{table}");
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(two.join("report.json")).unwrap()).unwrap();
    assert_eq!(report["seeds"], serde_json::json!([0, 1]));
    // Each seed trained its own model; the seed reached the trainer (the losses differ).
    let loss = |stage: &str| report["stages"][stage]["final_loss"].as_f64().unwrap();
    assert!(two.join("runs/food-caption_only-seed1/model").is_dir());
    assert_ne!(
        loss("food/train/caption_only"),
        loss("food/train/caption_only/seed1")
    );
    for (key, row) in report["table"]["food"].as_object().unwrap() {
        for (task, cell) in row.as_object().unwrap() {
            let seeds = cell["seeds"].as_array().unwrap();
            let expected = if key == "general_base" { 1 } else { 2 };
            assert_eq!(seeds.len(), expected, "{key} {task}: {cell}");
            for (score, mean) in cell["all"].as_object().unwrap() {
                let values: Vec<f64> = seeds
                    .iter()
                    .map(|s| s["all"][score].as_f64().unwrap())
                    .collect();
                let average = values.iter().sum::<f64>() / values.len() as f64;
                assert!((mean.as_f64().unwrap() - average).abs() < 1e-9, "{cell}");
                let sd = cell["sd"][score].as_f64().unwrap();
                if expected == 2 {
                    let half_range = (values[0] - values[1]).abs();
                    assert!((sd - half_range / 2f64.sqrt()).abs() < 1e-9, "{cell}");
                } else {
                    assert_eq!(sd, 0.0, "{cell}");
                }
            }
        }
    }
    // Two seeds measure the spread: no claim is left to "one seed".
    for finding in report["findings"].as_array().unwrap() {
        assert_ne!(finding["verdict"], "one_seed", "{finding}");
    }
    assert!(
        table.contains(" ± "),
        "a trained row's cell shows its spread: {table}"
    );

    // The first seed's rows are the one-seed demo's rows, value for value.
    let one = tmp.path().join("one");
    let o = run(&one, "1");
    assert!(o.status.success(), "{}", stderr(&o));
    let single: Value =
        serde_json::from_str(&std::fs::read_to_string(one.join("report.json")).unwrap()).unwrap();
    for (key, row) in single["table"]["food"].as_object().unwrap() {
        for (task, cell) in row.as_object().unwrap() {
            // Everything but the model's path (another folder).
            let scores = |cell: &Value| {
                let mut first = cell["seeds"][0].clone();
                first["all"].as_object_mut().unwrap().remove("model");
                first
            };
            assert_eq!(
                scores(cell),
                scores(&report["table"]["food"][key][task]),
                "{key} {task}"
            );
        }
    }
}

#[test]
fn seed_counts_outside_the_budget_are_refused_before_anything_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("demo");
    let demo = |extra: &[&str]| {
        bin()
            .args(["demo", "--device", "cpu", "--out", out.to_str().unwrap()])
            .args(extra)
            .output()
            .unwrap()
    };
    expect_failure(
        &demo(&["--seeds", "0"]),
        &["--seeds 0", "at least one seed"],
    );
    expect_failure(
        &demo(&["--seeds", "40"]),
        &[
            "--seeds 40: the run needs about",
            "min per seed",
            "or fewer, or raise --max-minutes",
        ],
    );
    expect_failure(
        &demo(&["--max-minutes", "0"]),
        &["--max-minutes 0", "positive number of minutes"],
    );
    assert!(!out.exists(), "a refused run wrote {}", out.display());
}
