//! How long a demo run will take, estimated before it starts, and the refusal of a seed count
//! the time budget cannot hold.
//!
//! The estimate counts the run's work (training steps, generated answers, synthesized images)
//! and prices it at the speeds measured on the project's reference machine, two CPU cores on
//! flex (BENCHMARKS.md, "The main job"): a faster machine finishes sooner.

use super::domains::{DomainKind, benchmark_tasks};
use super::run::{Ablation, DemoError, DemoOptions, DemoScale, GeneralSource};

/// Seconds per training step of 8 on the reference machine: the 1,512 post-training steps of
/// the full demo took 358 s (2026-12-08).
pub const STEP_SECONDS: f64 = 0.24;
/// Seconds per evaluated benchmark row: the full demo's 12 evaluations, 6,000 rows, took 47 s.
pub const EVAL_ROW_SECONDS: f64 = 0.008;
/// Seconds per synthesized image: 400 images took 13 s.
pub const SYNTHESIS_IMAGE_SECONDS: f64 = 0.033;
/// Judge conversations per general image (its questions, each with a consistent and two
/// inconsistent answers).
const JUDGE_EXAMPLES_PER_IMAGE: f64 = 4.0;

/// The estimate of one run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DemoEstimate {
    /// Everything done once: the general models (when trained), synthesis, filter, the base's
    /// evaluation.
    pub once_seconds: f64,
    /// Each seed's post-trainings and their evaluations.
    pub per_seed_seconds: f64,
    /// The seeds asked for.
    pub seeds: usize,
}

impl DemoEstimate {
    /// The whole run.
    pub fn total_seconds(&self) -> f64 {
        self.once_seconds + self.per_seed_seconds * self.seeds as f64
    }

    /// The most seeds that fit `budget_seconds` (0 when not even one does).
    pub fn seeds_within(&self, budget_seconds: f64) -> usize {
        if self.per_seed_seconds <= 0.0 {
            return usize::MAX;
        }
        ((budget_seconds - self.once_seconds) / self.per_seed_seconds)
            .floor()
            .max(0.0) as usize
    }
}

/// Counts the run's work and prices it (see the module docs).
pub fn estimate(options: &DemoOptions) -> DemoEstimate {
    let scale = DemoScale::of(options);
    let batch = scale.batch_size.max(1) as f64;
    let steps = |samples: f64, epochs: f64| (samples * epochs / batch).ceil();
    let general_steps = match options.general {
        GeneralSource::Prebuilt => 0.0,
        _ => {
            let images = scale.general_images as f64;
            // The base trains on captions plus precise and informative conversations.
            steps(3.0 * images, scale.base_epochs)
                + steps(images, scale.synthesizer_epochs)
                + steps(JUDGE_EXAMPLES_PER_IMAGE * images, scale.judge_epochs)
        }
    };
    let post_rows = (Ablation::ALL.len() - 1) as f64;
    let mut once = general_steps * STEP_SECONDS;
    let mut per_seed = 0.0;
    for name in &options.domains {
        let Some(kind) = DomainKind::from_name(name) else {
            continue;
        };
        let eval_rows = (benchmark_tasks(kind).len() * scale.target_test_images) as f64;
        once += scale.target_train_images as f64 * SYNTHESIS_IMAGE_SECONDS;
        once += eval_rows * EVAL_ROW_SECONDS;
        per_seed += post_rows
            * (steps(scale.target_train_images as f64, scale.post_epochs) * STEP_SECONDS
                + eval_rows * EVAL_ROW_SECONDS);
    }
    DemoEstimate {
        once_seconds: once,
        per_seed_seconds: per_seed,
        seeds: options.seeds,
    }
}

/// Refuses `--seeds 0`.
pub fn check_seeds(options: &DemoOptions) -> Result<(), DemoError> {
    if options.seeds == 0 {
        return Err(DemoError::Stage {
            stage: "options".into(),
            message: "--seeds 0: the post-training rows need at least one seed".into(),
        });
    }
    Ok(())
}

/// Refuses `--seeds 0` and a seed count whose estimate is over `budget_minutes`, saying the
/// estimate and the most seeds that fit; else returns the estimate.
pub fn check_budget(options: &DemoOptions, budget_minutes: f64) -> Result<DemoEstimate, DemoError> {
    let refuse = |message: String| DemoError::Stage {
        stage: "options".into(),
        message,
    };
    if !(budget_minutes.is_finite() && budget_minutes > 0.0) {
        return Err(refuse(format!(
            "--max-minutes {budget_minutes}: the time budget must be a positive number of minutes"
        )));
    }
    check_seeds(options)?;
    let estimate = estimate(options);
    let budget = budget_minutes * 60.0;
    if estimate.total_seconds() > budget {
        let fits = estimate.seeds_within(budget);
        let advice = if fits == 0 {
            "not even one seed fits: raise --max-minutes".to_string()
        } else {
            format!("use --seeds {fits} or fewer, or raise --max-minutes")
        };
        return Err(refuse(format!(
            "--seeds {}: the run needs about {:.0} min ({:.0} min once, then {:.1} min per seed, \
             at the 2-core CPU speed measured in BENCHMARKS.md), over the {budget_minutes} min \
             budget (--max-minutes); {advice}",
            options.seeds,
            estimate.total_seconds() / 60.0,
            estimate.once_seconds / 60.0,
            estimate.per_seed_seconds / 60.0,
        )));
    }
    Ok(estimate)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(seeds: usize) -> DemoOptions {
        DemoOptions {
            domains: vec!["biomed".into(), "food".into()],
            quick: false,
            seed: 0,
            general: GeneralSource::Prebuilt,
            seeds,
        }
    }

    #[test]
    fn the_full_demo_is_priced_from_its_work() {
        let estimate = estimate(&options(1));
        let rows = |kind| (benchmark_tasks(kind).len() * 200) as f64;
        let (biomed, food) = (rows(DomainKind::Biomed), rows(DomainKind::Food));
        assert_eq!((biomed, food), (400.0, 600.0));
        // Per seed: 5 rows × (150 steps × 0.24 s + the test rows × 0.008 s), per domain.
        let per_seed = 5.0 * (2.0 * 150.0 * STEP_SECONDS + (biomed + food) * EVAL_ROW_SECONDS);
        assert!((estimate.per_seed_seconds - per_seed).abs() < 1e-9);
        // Once: synthesis of 200 images and the base's evaluation, per domain.
        let once = 2.0 * 200.0 * SYNTHESIS_IMAGE_SECONDS + (biomed + food) * EVAL_ROW_SECONDS;
        assert!((estimate.once_seconds - once).abs() < 1e-9);
        assert_eq!(estimate.seeds, 1);
    }

    #[test]
    fn zero_seeds_and_an_overlong_run_are_refused_with_the_estimate() {
        let error = check_budget(&options(0), 60.0).unwrap_err().to_string();
        assert!(error.contains("--seeds 0"), "{error}");
        let error = check_budget(&options(50), 60.0).unwrap_err().to_string();
        let fits = estimate(&options(50)).seeds_within(3600.0);
        assert!((3..50).contains(&fits), "{fits}");
        assert!(error.contains("--seeds 50: the run needs about"), "{error}");
        assert!(
            error.contains(&format!("use --seeds {fits} or fewer")),
            "{error}"
        );
        assert!(check_budget(&options(3), 60.0).is_ok());
        let error = check_budget(&options(1), 0.5).unwrap_err().to_string();
        assert!(error.contains("not even one seed fits"), "{error}");
        for bad in [0.0, -3.0, f64::NAN] {
            let error = check_budget(&options(1), bad).unwrap_err().to_string();
            assert!(error.contains("positive number of minutes"), "{error}");
        }
    }
}
