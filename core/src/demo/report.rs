//! The demo's report: `report.md` (printed), `report.json`, and `report.html` with the tables,
//! a bar chart per domain, the claims as a checklist, the loss curves side by side and sample
//! triplets. Everything in it comes from the demo's state and evaluations; the HTML is
//! self-contained apart from relative links to the demo folder's own images.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{Value, json};

use super::chart::{BarRow, render_score_chart};
use super::claims::{Finding, claim, every_task};
use super::domains::{DomainKind, benchmark_tasks};
use super::run::{Ablation, DemoError, DemoScale, DemoState, GeneralSource};
use super::seeds::{Spread, cell_spread, post_seeds, row_mean_spread};
use crate::eval::custom_task::EvalTask;
use crate::io::{write_atomic, write_json_atomic};

/// The report of a demo run.
#[derive(Debug, Clone)]
pub struct DemoReport {
    /// `report.json`'s content.
    pub json: Value,
    /// `report.md`'s content (also printed).
    pub markdown: String,
    /// The claims, in report order.
    pub findings: Vec<Finding>,
    parts: ReportParts,
}

/// The pieces both the markdown and the HTML are made of.
#[derive(Debug, Clone, Default)]
struct ReportParts {
    header: String,
    /// Per domain: name, table and notes (markdown), chart file (relative to the folder).
    domains: Vec<(String, String, Option<String>)>,
    footer: String,
}

/// What the report reads: the demo's folder, state and settings.
pub(crate) struct ReportInput<'a> {
    pub out: &'a Path,
    pub state: &'a DemoState,
    pub scale: &'a DemoScale,
    pub seed: u64,
    pub seeds: usize,
}

/// Table of evaluations: domain → ablation key → task → combined scores (`seeds` module).
pub(crate) type ScoreTable = BTreeMap<String, BTreeMap<String, Value>>;

/// Builds the report, writes each domain's chart under `plots/` and the three report files.
pub(crate) fn write_report(
    input: &ReportInput<'_>,
    domains: &[DomainKind],
    table: &ScoreTable,
    seconds: f64,
) -> Result<DemoReport, DemoError> {
    let failed = |message: String| DemoError::Stage {
        stage: "report".into(),
        message,
    };
    let report = build_report(input, domains, table, seconds)?;
    write_json_atomic(&input.out.join("report.json"), &report.json)
        .map_err(|e| failed(e.to_string()))?;
    write_atomic(&input.out.join("report.md"), report.markdown.as_bytes())
        .map_err(|e| failed(e.to_string()))?;
    let html = report_html(input, domains, &report);
    write_atomic(&input.out.join("report.html"), html.as_bytes())
        .map_err(|e| failed(e.to_string()))?;
    Ok(report)
}

/// The task-level score names of a demo task (from its task file).
fn demo_task_score_keys(out: &Path, domain: &str, task: &str) -> Vec<&'static str> {
    let yaml = out
        .join("data")
        .join(format!("{domain}-test"))
        .join(format!("{task}.yaml"));
    EvalTask::from_arg(&yaml.display().to_string())
        .map(|t| t.score_keys().to_vec())
        .unwrap_or_else(|_| vec!["score"])
}

/// One column of a domain's table: task, score key, the benchmark it imitates.
struct Column {
    task: String,
    key: String,
    imitates: &'static str,
}

impl Column {
    fn name(&self) -> String {
        format!("{} {}", self.task, self.key)
    }
}

fn columns_of(out: &Path, kind: DomainKind) -> Vec<Column> {
    benchmark_tasks(kind)
        .into_iter()
        .flat_map(|task| {
            demo_task_score_keys(out, kind.name(), &task.name)
                .into_iter()
                .map(move |key| Column {
                    task: task.name.clone(),
                    key: key.to_string(),
                    imitates: task.imitates,
                })
        })
        .collect()
}

fn header(input: &ReportInput<'_>) -> String {
    let state = input.state;
    let general = match state.options.as_ref().map(|o| o.general) {
        Some(GeneralSource::Train) => "trained in this run",
        Some(GeneralSource::Build { .. }) => "built at the `adamllm demo-models` scale",
        _ => "the committed ones `adamllm demo-models` built",
    };
    let quick = state.options.as_ref().is_some_and(|o| o.quick);
    let mut md = String::from("# adamllm demo report\n\n");
    md.push_str(&format!(
        "Tiny preset (Qwen2-VL architecture, ~0.2M parameters), {} run, seed {}, images at 112×112; general base, synthesizer and judge: {general}. {} test rows per task.\n\n",
        if quick { "`--quick`" } else { "full" },
        input.seed,
        input.scale.target_test_images,
    ));
    let seeds = post_seeds(input.seed, input.seeds);
    if seeds.len() >= 2 {
        md.push_str(&format!(
            "Every post-trained row ran with {} seeds ({}): a cell is the mean ± the standard deviation over them; the general base is one model, evaluated once.\n\n",
            seeds.len(),
            seeds.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")
        ));
    } else {
        md.push_str("Every post-trained row ran with one seed, so no spread is measured and a gap between two rows settles no claim; `--seeds 3` runs each row three times.\n\n");
    }
    if let Some(line) = state.finished.get("judge").and_then(judge_score_line) {
        md.push_str(&line);
    }
    md
}

/// The report's sentence on the judge's held-out score (trained in the run, or from the
/// prebuilt models' `build.json`), if the judge's summary has one.
fn judge_score_line(judge: &Value) -> Option<String> {
    let score = judge
        .get("held_out")
        .or_else(|| judge.get("build").and_then(|b| b.get("held_out")))?;
    let accuracy = score["accuracy"].as_f64()?;
    let part = |key: &str| {
        score[key]
            .as_f64()
            .map_or("–".to_string(), |v| format!("{v:.1} %"))
    };
    Some(format!(
        "The judge answers {accuracy:.1} % of {} held-out general-domain triplets right ({} of the consistent ones Yes, {} of the inconsistent ones No).\n\n",
        score["examples"],
        part("yes_recall"),
        part("no_recall"),
    ))
}

/// What a domain contributes to the report.
struct DomainSection {
    /// The table (markdown).
    markdown: String,
    /// The chart's group names, one per table column.
    columns: Vec<String>,
    /// The chart's rows.
    bars: Vec<BarRow>,
    /// The domain's claims.
    findings: Vec<Finding>,
}

/// A domain's table, chart rows and claims.
fn domain_section(
    input: &ReportInput<'_>,
    kind: DomainKind,
    rows: Option<&BTreeMap<String, Value>>,
) -> DomainSection {
    let name = kind.name();
    let columns = columns_of(input.out, kind);
    let keys: Vec<(String, String)> = columns
        .iter()
        .map(|c| (c.task.clone(), c.key.clone()))
        .collect();
    let mut md = format!("## {name}\n\n| ablation |");
    for column in &columns {
        md.push_str(&format!(" {} ({}) |", column.name(), column.imitates));
    }
    md.push_str(" mean |\n| --- |");
    md.push_str(&" ---: |".repeat(columns.len() + 1));
    md.push('\n');
    let mut cells: BTreeMap<Ablation, Vec<Option<Spread>>> = BTreeMap::new();
    let mut means: BTreeMap<Ablation, Spread> = BTreeMap::new();
    let mut bars = Vec::new();
    for ablation in Ablation::ALL {
        let row = rows.and_then(|rows| rows.get(ablation.key()));
        let values: Vec<Option<Spread>> = keys
            .iter()
            .map(|(task, key)| row.and_then(|row| cell_spread(row, task, key)))
            .collect();
        let mean = row.and_then(|row| row_mean_spread(row, &keys));
        md.push_str(&format!("| {} |", ablation.label()));
        for value in values.iter().chain(std::iter::once(&mean)) {
            md.push_str(&value.map_or(" – |".into(), |v| format!(" {} |", v.text())));
        }
        md.push('\n');
        if let Some(mean) = mean {
            means.insert(ablation, mean);
        }
        bars.push(BarRow {
            label: ablation.label().to_string(),
            cells: values.clone(),
        });
        cells.insert(ablation, values);
    }
    md.push('\n');
    let per_task: Vec<(String, Option<Spread>, Option<Spread>)> = columns
        .iter()
        .zip(&cells[&Ablation::PaperMethod])
        .zip(&cells[&Ablation::GeneralBase])
        .map(|((column, paper), base)| (column.name(), *paper, *base))
        .collect();
    let mean_claim = |a: Ablation, b: Ablation, text: &str| {
        Some(claim(name, text, means.get(&a)?, means.get(&b)?))
    };
    let findings = [
        mean_claim(
            Ablation::PaperMethod,
            Ablation::GeneralBase,
            "post-training beats the general base",
        ),
        every_task(name, &per_task),
        mean_claim(
            Ablation::SynthesizerUnfiltered,
            Ablation::RulesSingle,
            "synthesizer tasks beat rule-based tasks",
        ),
        mean_claim(
            Ablation::PaperMethod,
            Ablation::TwoStage,
            "single stage beats two stages",
        ),
        mean_claim(
            Ablation::PaperMethod,
            Ablation::SynthesizerUnfiltered,
            "the filter helps",
        ),
    ]
    .into_iter()
    .flatten()
    .collect();
    DomainSection {
        markdown: md,
        columns: columns.iter().map(Column::name).collect(),
        bars,
        findings,
    }
}

/// The lines under a domain's table: rows left untrained, the filter's labels, the synthesis
/// count.
fn domain_notes(state: &DemoState, name: &str) -> String {
    let mut md = String::new();
    if let Some(assembled) = state.finished.get(&format!("{name}/assemble")) {
        for ablation in Ablation::ALL {
            if let Some(reason) = assembled[ablation.key()]["skipped"].as_str() {
                md.push_str(&format!(
                    "Not trained: {} ({reason}).\n\n",
                    ablation.label()
                ));
            }
        }
    }
    if let Some(filter) = state.finished.get(&format!("{name}/filter")) {
        md.push_str(&format!("Filter labels: {}. ", filter["labels"]));
    }
    if let Some(synth) = state.finished.get(&format!("{name}/synthesize")) {
        md.push_str(&format!(
            "Synthesis: {} of {} images gave a triplet.\n\n",
            synth["with_triplet"], synth["rows"]
        ));
    }
    md
}

/// A note when the filter kept no triplet or every triplet: then the paper's row is trained on
/// the same data as another row, and the claims that compare them say nothing about filtering.
pub(crate) fn degenerate_filter_note(domain: &str, filter: &Value) -> Option<Finding> {
    let labels = &filter["labels"];
    let count = |label: &str| labels[label].as_u64().unwrap_or(0);
    let triplets = count("yes") + count("no") + count("open") + count("unparsed");
    let kept = filter["kept"].as_u64().unwrap_or_else(|| count("yes"));
    let text = if triplets == 0 {
        "the synthesizer wrote no triplet, so every synthetic row trained on the captions alone (the caption-only data)".to_string()
    } else if kept == 0 {
        format!(
            "the judge kept none of the {triplets} triplets, so the paper's row trained on the captions alone (the caption-only data) and two stages had nothing to train: \"the filter helps\" here compares captions alone with captions plus the unfiltered tasks"
        )
    } else if kept == triplets {
        format!(
            "the judge kept all {triplets} triplets, so the filtered and unfiltered rows trained on the same data"
        )
    } else {
        return None;
    };
    Some(Finding::note(domain, text))
}

/// The chart file of a domain, relative to the demo folder.
fn chart_file(name: &str) -> String {
    format!("plots/{name}-scores.png")
}

fn build_report(
    input: &ReportInput<'_>,
    domains: &[DomainKind],
    table: &ScoreTable,
    seconds: f64,
) -> Result<DemoReport, DemoError> {
    let state = input.state;
    let mut parts = ReportParts {
        header: header(input),
        ..ReportParts::default()
    };
    let mut findings = Vec::new();
    for kind in domains {
        let name = kind.name();
        let section = domain_section(input, *kind, table.get(name));
        let mut md = section.markdown;
        findings.extend(section.findings);
        if let Some(filter) = state.finished.get(&format!("{name}/filter")) {
            findings.extend(degenerate_filter_note(name, filter));
        }
        md.push_str(&domain_notes(state, name));
        let chart = match render_score_chart(name, &section.columns, &section.bars) {
            Ok(png) => {
                let file = chart_file(name);
                write_atomic(&input.out.join(&file), &png).map_err(|e| DemoError::Stage {
                    stage: "report".into(),
                    message: e.to_string(),
                })?;
                Some(file)
            }
            Err(_) => None,
        };
        parts.domains.push((name.to_string(), md, chart));
    }
    parts.footer = format!(
        "The order is reported as measured; the demo is not tuned to agree with the paper.\n\nTime: {:.0} s over all stages ({seconds:.0} s in this invocation; stages: {}).\n",
        state.seconds.values().sum::<f64>(),
        state
            .seconds
            .iter()
            .map(|(k, v)| format!("{k} {v:.0} s"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut markdown = parts.header.clone();
    for (_, md, _) in &parts.domains {
        markdown.push_str(md);
    }
    markdown.push_str(CLAIMS_HEADING);
    for finding in &findings {
        markdown.push_str(&finding.line());
        markdown.push('\n');
    }
    markdown.push('\n');
    markdown.push_str(&parts.footer);
    let findings_json: Vec<Value> = findings
        .iter()
        .map(|f| {
            let mut value = json!(f);
            value["text"] = json!(f.line());
            value
        })
        .collect();
    let json = json!({
        "options": state.options,
        "scale": input.scale,
        "seeds": post_seeds(input.seed, input.seeds),
        "table": table,
        "findings": findings_json,
        "stages": state.finished,
        "seconds": state.seconds,
        "invocation_seconds": seconds,
    });
    Ok(DemoReport {
        json,
        markdown,
        findings,
        parts,
    })
}

const CLAIMS_HEADING: &str = "## How the paper's claims fare here\n\nMeans over each domain's tasks (the every-task line goes task by task). A claim holds only when the gap between the two rows is larger than its spread over seeds (the root of the sum of the two rows' squared standard deviations); a smaller gap is a tie.\n\n";

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The report's markdown (headings, tables, lists) as HTML. Raw HTML in it is shown as text,
/// never interpreted: the report quotes what models wrote.
fn markdown_html(markdown: &str) -> String {
    use pulldown_cmark::{Event, Options, Parser, html::push_html};
    let events = Parser::new_ext(markdown, Options::ENABLE_TABLES).map(|event| match event {
        Event::Html(text) | Event::InlineHtml(text) => Event::Text(text),
        other => other,
    });
    let mut html = String::new();
    push_html(&mut html, events);
    html
}

const STYLE: &str = "body{font-family:sans-serif;max-width:72em;margin:auto;padding:0 1em}\
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px}\
img.sample{width:112px;image-rendering:pixelated}img.chart{max-width:100%}\
.plots{display:grid;grid-template-columns:repeat(auto-fill,minmax(300px,1fr));gap:8px}\
.plots img{width:100%}figure{margin:0}figcaption{font-size:smaller}\
ul.claims{list-style:none;padding-left:0}ul.claims li{margin:4px 0}\
.mark{display:inline-block;width:1.4em;font-weight:bold;text-align:center}\
.holds .mark{color:#0a7d32}.does_not_hold .mark{color:#c0261a}.tie .mark{color:#777}\
.one_seed .mark{color:#b07000}.note .mark{color:#2b6cb0}.detail{color:#555}";

/// The claims as a checklist: a mark per verdict, the claim, the numbers.
fn claims_html(findings: &[Finding]) -> String {
    let mut html = String::from("<ul class=\"claims\">");
    for finding in findings {
        let (class, mark, words) = match finding.verdict {
            Some(verdict) => {
                let class = serde_json::to_value(verdict)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default();
                (class, verdict.mark(), verdict.words())
            }
            None => ("note".to_string(), "i", ""),
        };
        html.push_str(&format!(
            "<li class=\"{class}\"><span class=\"mark\">{mark}</span><b>{}</b>: {}",
            escape(&finding.domain),
            escape(&finding.claim)
        ));
        if !words.is_empty() {
            html.push_str(&format!(
                ": {words} <span class=\"detail\">({})</span>",
                escape(&finding.detail)
            ));
        }
        html.push_str("</li>");
    }
    html.push_str("</ul>");
    html
}

/// The loss curves of every training, side by side: the general models, then each domain's.
fn loss_curves_html(state: &DemoState, domains: &[DomainKind]) -> String {
    let mut groups: Vec<(String, Vec<(&String, &str)>)> =
        vec![("general models".into(), Vec::new())];
    groups.extend(domains.iter().map(|k| (k.name().to_string(), Vec::new())));
    for (stage, summary) in &state.finished {
        let Some(plot) = summary.get("plot").and_then(Value::as_str) else {
            continue;
        };
        let group = domains
            .iter()
            .position(|k| stage.starts_with(&format!("{}/", k.name())))
            .map_or(0, |i| i + 1);
        groups[group].1.push((stage, plot));
    }
    let mut html = String::from("<h2>Loss curves</h2>");
    for (title, plots) in groups.iter().filter(|(_, plots)| !plots.is_empty()) {
        html.push_str(&format!("<h3>{}</h3><div class=\"plots\">", escape(title)));
        for (stage, plot) in plots {
            html.push_str(&format!(
                "<figure><img src=\"{}\" alt=\"loss curve of {1}\"><figcaption>{1}</figcaption></figure>",
                escape(plot),
                escape(stage)
            ));
        }
        html.push_str("</div>");
    }
    html
}

/// Sample images of a domain with their caption, synthesized triplet and judge label.
fn samples_html(out: &Path, name: &str) -> String {
    let filtered = out
        .join("runs")
        .join(name)
        .join("filtered_task_pairs.jsonl");
    let Ok(text) = std::fs::read_to_string(&filtered) else {
        return String::new();
    };
    let mut html = format!(
        "<h2>{name}: samples</h2><table><tr><th>image</th><th>caption</th><th>synthesized triplet</th><th>judge</th></tr>"
    );
    for line in text.lines().take(8) {
        let Ok(row) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let image = row["images"][0].as_str().unwrap_or_default();
        let caption = row["messages"][1]["content"].as_str().unwrap_or_default();
        let qa = &row["collected_QA"];
        let triplet = if qa.is_object() {
            format!(
                "<b>Q:</b> {}<br><b>informative:</b> {}<br><b>precise:</b> {}",
                escape(qa["Q"].as_str().unwrap_or_default()),
                escape(qa["informative_A"].as_str().unwrap_or_default()),
                escape(qa["precise_A"].as_str().unwrap_or_default())
            )
        } else {
            "<i>no triplet in the output</i>".into()
        };
        html.push_str(&format!(
            "<tr><td><img class=\"sample\" src=\"data/{name}-train/{}\" alt=\"sample\"></td><td>{}</td><td>{triplet}</td><td>{}</td></tr>",
            escape(image),
            escape(caption),
            escape(row["consistency"].as_str().unwrap_or_default())
        ));
    }
    html.push_str("</table>");
    html
}

/// `report.html` (see the module docs).
fn report_html(input: &ReportInput<'_>, domains: &[DomainKind], report: &DemoReport) -> String {
    let mut html = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>adamllm demo report</title><style>{STYLE}</style></head><body>"
    );
    html.push_str(&markdown_html(&report.parts.header));
    for (name, md, chart) in &report.parts.domains {
        html.push_str(&markdown_html(md));
        if let Some(chart) = chart {
            html.push_str(&format!(
                "<img class=\"chart\" src=\"{}\" alt=\"{} scores by ablation\">",
                escape(chart),
                escape(name)
            ));
        }
    }
    html.push_str(&markdown_html(CLAIMS_HEADING));
    html.push_str(&claims_html(&report.findings));
    html.push_str(&markdown_html(&report.parts.footer));
    html.push_str(&loss_curves_html(input.state, domains));
    for kind in domains {
        html.push_str(&samples_html(input.out, kind.name()));
    }
    html.push_str("</body></html>\n");
    html
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demo::claims::Verdict;

    #[test]
    fn report_markdown_becomes_html_tables_and_quoted_html_stays_text() {
        let html = markdown_html(
            "## biomed\n\n| ablation | acc |\n| --- | ---: |\n| caption only | 25.0 |\n\n\
             - a claim: holds <img src=\"http://x\">\n",
        );
        assert!(html.contains("<h2>biomed</h2>"), "{html}");
        assert!(
            html.contains("<table>") && html.contains("<th>ablation</th>"),
            "{html}"
        );
        assert!(
            html.contains("<td style=\"text-align: right\">25.0</td>"),
            "{html}"
        );
        assert!(html.contains("<li>a claim: holds &lt;img"), "{html}");
        assert!(!html.contains("<img"), "{html}");
    }

    #[test]
    fn the_checklist_marks_each_verdict_and_escapes_the_text() {
        let finding = |verdict| Finding {
            domain: "food".into(),
            claim: "the filter <b>helps</b>".into(),
            verdict: Some(verdict),
            detail: "14.3 vs 16.9".into(),
        };
        let html = claims_html(&[
            finding(Verdict::Holds),
            finding(Verdict::DoesNotHold),
            finding(Verdict::Tie),
            finding(Verdict::OneSeed),
            Finding::note("biomed", "the judge kept all 16 triplets".into()),
        ]);
        for (class, mark) in [
            ("holds", "✓"),
            ("does_not_hold", "✗"),
            ("tie", "≈"),
            ("one_seed", "?"),
            ("note", "i"),
        ] {
            assert!(
                html.contains(&format!(
                    "<li class=\"{class}\"><span class=\"mark\">{mark}</span>"
                )),
                "{class}: {html}"
            );
        }
        assert!(html.contains("the filter &lt;b&gt;helps&lt;/b&gt;: holds <span class=\"detail\">(14.3 vs 16.9)</span>"), "{html}");
        assert!(!html.contains("<b>helps"), "{html}");
    }

    #[test]
    fn the_judge_score_line_reads_a_trained_or_a_prebuilt_summary() {
        let score = json!({"examples": 400, "accuracy": 91.0, "yes_recall": 97.0, "no_recall": 85.0, "labels": {}});
        let expected = "The judge answers 91.0 % of 400 held-out general-domain triplets right (97.0 % of the consistent ones Yes, 85.0 % of the inconsistent ones No).\n\n";
        assert_eq!(
            judge_score_line(&json!({"held_out": score})).as_deref(),
            Some(expected)
        );
        assert_eq!(
            judge_score_line(&json!({"prebuilt": true, "build": {"held_out": score}})).as_deref(),
            Some(expected)
        );
        // No held-out images (a tiny general set): no recall to print, and no line without a score.
        let empty = json!({"held_out": {"examples": 0, "accuracy": null}});
        assert_eq!(judge_score_line(&empty), None);
        assert_eq!(
            judge_score_line(&json!({"prebuilt": true, "build": {}})),
            None
        );
    }

    #[test]
    fn degenerate_filters_are_called_out() {
        let filter = |yes: u64, no: u64, none: u64| json!({"kept": yes, "labels": {"yes": yes, "no": no, "open": 0, "unparsed": 0, "no_triplet": none}});
        let line = |f: Option<Finding>| f.map(|f| f.line());
        let none_kept = line(degenerate_filter_note("food", &filter(0, 87, 113))).unwrap();
        assert!(
            none_kept.starts_with("- food: the judge kept none of the 87"),
            "{none_kept}"
        );
        let all_kept = line(degenerate_filter_note("food", &filter(19, 0, 101))).unwrap();
        assert!(all_kept.contains("kept all 19"), "{all_kept}");
        let no_triplet = line(degenerate_filter_note("biomed", &filter(0, 0, 120))).unwrap();
        assert!(no_triplet.contains("wrote no triplet"), "{no_triplet}");
        assert_eq!(degenerate_filter_note("food", &filter(5, 7, 3)), None);
    }
}
