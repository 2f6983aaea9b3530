//! Post-training over several seeds (`adamllm demo --seeds N`): which seeds run, where each
//! seed's runs go, and each table cell as the mean and spread over the seeds.
//!
//! Only the post-training rows take a seed: the data, the synthesizer's and the judge's outputs
//! and the assembled datasets are the same for every seed, so the spread measures what the
//! training order alone moves a score by. The general base is evaluated once (greedy decoding
//! of one model), so its spread is zero.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Map, Value, json};

/// The post-training seeds of a run: `seed`, `seed + 1`, … (`count` of them).
pub fn post_seeds(seed: u64, count: usize) -> Vec<u64> {
    (0..count as u64).map(|k| seed.wrapping_add(k)).collect()
}

/// Suffix of the stage names and folders of one seed's runs: empty for the first seed (so a
/// one-seed demo keeps the names it always had), `/seed<N>` for the others.
pub fn seed_suffix(index: usize, seed: u64) -> String {
    if index == 0 {
        String::new()
    } else {
        format!("/seed{seed}")
    }
}

/// A cell of the table: the mean over seeds and the spread.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Spread {
    /// Mean over the seeds.
    pub mean: f64,
    /// Sample standard deviation over the seeds (n − 1 in the denominator); zero for a row
    /// that has no seed (the general base); `None` for a seeded row run with one seed, whose
    /// spread is not measured.
    pub sd: Option<f64>,
    /// Number of values.
    pub n: usize,
}

impl Spread {
    /// The spread of `values`; `seeded` says whether another seed could have changed them.
    pub fn of(values: &[f64], seeded: bool) -> Option<Self> {
        let n = values.len();
        if n == 0 {
            return None;
        }
        let mean = values.iter().sum::<f64>() / n as f64;
        let sd = if n >= 2 {
            let squares: f64 = values.iter().map(|v| (v - mean).powi(2)).sum();
            Some((squares / (n - 1) as f64).sqrt())
        } else if seeded {
            None
        } else {
            Some(0.0)
        };
        Some(Self { mean, sd, n })
    }

    /// `12.5` for one value, `12.5 ± 1.3` over several seeds.
    pub fn text(&self) -> String {
        match self.sd {
            Some(sd) if self.n >= 2 => format!("{:.1} ± {sd:.1}", self.mean),
            _ => format!("{:.1}", self.mean),
        }
    }
}

/// Combines one row's evaluation summaries, one per seed (`(seed, {task: {score, metric,
/// all}})`), into one summary per task: `all` holds each score's mean over the seeds, `sd`
/// its standard deviation (null with one seed of a seeded row), `seeded` whether a seed could
/// change the row, `seeds` each seed's scores.
pub fn combine_seed_scores(runs: &[(u64, Value)], seeded: bool) -> Value {
    let mut combined = Map::new();
    let Some((_, first)) = runs.first() else {
        return Value::Object(combined);
    };
    for (task, summary) in first.as_object().into_iter().flatten() {
        let keys: Vec<&String> = summary["all"]
            .as_object()
            .map(|all| all.keys().collect())
            .unwrap_or_default();
        let mut means = Map::new();
        let mut sds = Map::new();
        for key in keys {
            let values: Vec<f64> = runs
                .iter()
                .filter_map(|(_, scores)| scores[task]["all"][key].as_f64())
                .collect();
            if let Some(spread) = Spread::of(&values, seeded) {
                means.insert(key.clone(), json!(spread.mean));
                sds.insert(key.clone(), json!(spread.sd));
            }
        }
        let main: Vec<f64> = runs
            .iter()
            .filter_map(|(_, scores)| scores[task]["score"].as_f64())
            .collect();
        let per_seed: Vec<Value> = runs
            .iter()
            .map(|(seed, scores)| json!({"seed": seed, "all": scores[task]["all"]}))
            .collect();
        combined.insert(
            task.clone(),
            json!({
                "score": Spread::of(&main, seeded).map(|s| s.mean),
                "metric": summary["metric"],
                "all": means,
                "sd": sds,
                "seeded": seeded,
                "seeds": per_seed,
            }),
        );
    }
    Value::Object(combined)
}

/// One cell of a combined row (see [`combine_seed_scores`]): the spread of score `key` of
/// `task`, rebuilt from the per-seed values; `None` when the row has no such score.
pub fn cell_spread(row: &Value, task: &str, key: &str) -> Option<Spread> {
    let values = seed_values(row, task, key)?;
    Spread::of(&values, row_is_seeded(row, task))
}

/// The spread of a row's mean over `columns` (task, score key): each seed's mean over the
/// columns, then the mean and standard deviation of those; `None` when a column is missing.
pub fn row_mean_spread(row: &Value, columns: &[(String, String)]) -> Option<Spread> {
    let mut per_seed: BTreeMap<usize, Vec<f64>> = BTreeMap::new();
    let mut seeded = false;
    for (task, key) in columns {
        for (index, value) in seed_values(row, task, key)?.into_iter().enumerate() {
            per_seed.entry(index).or_default().push(value);
        }
        seeded |= row_is_seeded(row, task);
    }
    let means: Vec<f64> = per_seed
        .values()
        .filter(|values| values.len() == columns.len())
        .map(|values| values.iter().sum::<f64>() / values.len() as f64)
        .collect();
    Spread::of(&means, seeded)
}

/// Each seed's value of score `key` of `task` in a combined row.
fn seed_values(row: &Value, task: &str, key: &str) -> Option<Vec<f64>> {
    let seeds = row.get(task)?["seeds"].as_array()?;
    let values: Vec<f64> = seeds
        .iter()
        .filter_map(|seed| seed["all"][key].as_f64())
        .collect();
    (!values.is_empty()).then_some(values)
}

/// Whether another seed could have changed a row's `task` cell (false for the general base).
fn row_is_seeded(row: &Value, task: &str) -> bool {
    row[task]["seeded"].as_bool().unwrap_or(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eval(seed: u64, open: f64, closed: f64) -> (u64, Value) {
        (
            seed,
            json!({"vqa": {"score": open, "metric": "recall", "all": {"open": open, "closed": closed}}}),
        )
    }

    #[test]
    fn seeds_and_suffixes() {
        assert_eq!(post_seeds(7, 3), vec![7, 8, 9]);
        assert_eq!(seed_suffix(0, 7), "");
        assert_eq!(seed_suffix(2, 9), "/seed9");
    }

    #[test]
    fn spread_is_the_sample_standard_deviation() {
        let spread = Spread::of(&[10.0, 12.0, 14.0], true).unwrap();
        assert_eq!(spread.mean, 12.0);
        assert_eq!(spread.sd, Some(2.0));
        assert_eq!(spread.text(), "12.0 ± 2.0");
        assert_eq!(Spread::of(&[5.0], true).unwrap().sd, None);
        assert_eq!(Spread::of(&[5.0], false).unwrap().sd, Some(0.0));
        assert_eq!(Spread::of(&[5.0], false).unwrap().text(), "5.0");
        assert!(Spread::of(&[], true).is_none());
    }

    #[test]
    fn combined_rows_keep_each_seed_and_give_mean_and_spread() {
        let row = combine_seed_scores(&[eval(0, 10.0, 50.0), eval(1, 20.0, 70.0)], true);
        assert_eq!(row["vqa"]["all"]["open"], 15.0);
        assert_eq!(row["vqa"]["score"], 15.0);
        assert_eq!(row["vqa"]["metric"], "recall");
        let sd = row["vqa"]["sd"]["closed"].as_f64().unwrap();
        assert!((sd - 200f64.sqrt()).abs() < 1e-12, "{sd}");
        assert_eq!(row["vqa"]["seeds"][1]["seed"], 1);
        assert_eq!(row["vqa"]["seeded"], true);
        let cell = cell_spread(&row, "vqa", "open").unwrap();
        assert_eq!((cell.mean, cell.n), (15.0, 2));
        // Row means per seed: (10+50)/2 = 30 and (20+70)/2 = 45.
        let columns = [
            ("vqa".to_string(), "open".to_string()),
            ("vqa".into(), "closed".into()),
        ];
        let mean = row_mean_spread(&row, &columns).unwrap();
        assert_eq!(mean.mean, 37.5);
        assert!((mean.sd.unwrap() - 112.5f64.sqrt()).abs() < 1e-12);
        assert!(cell_spread(&row, "vqa", "missing").is_none());
    }

    #[test]
    fn one_seed_rows_have_no_spread_and_the_base_has_zero() {
        let trained = combine_seed_scores(&[eval(0, 10.0, 50.0)], true);
        assert_eq!(trained["vqa"]["sd"]["open"], Value::Null);
        assert_eq!(cell_spread(&trained, "vqa", "open").unwrap().sd, None);
        let base = combine_seed_scores(&[eval(0, 10.0, 50.0)], false);
        assert_eq!(cell_spread(&base, "vqa", "open").unwrap().sd, Some(0.0));
        let columns = [("vqa".to_string(), "open".to_string())];
        assert_eq!(row_mean_spread(&base, &columns).unwrap().sd, Some(0.0));
        assert_eq!(row_mean_spread(&trained, &columns).unwrap().sd, None);
    }
}
