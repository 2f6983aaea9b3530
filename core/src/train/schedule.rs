//! Learning rate per optimizer step.
//!
//! The four shapes are the ones transformers builds with `get_scheduler`, and each value here
//! equals transformers' to the last bit: the same multiplier formulas evaluated in `f64` in the
//! same order, times the base rate. As with PyTorch's `LambdaLR`, the update made at optimizer
//! step `s` (counting from 0) uses the multiplier evaluated at `s`; with warmup the very first
//! update therefore has learning rate 0.
//!
//! Multipliers, with `w` warmup steps and `T` total steps:
//! - warmup (all shapes but `constant`), for `s < w`: `s / max(1, w)`;
//! - `linear` after warmup: `max(0, (T − s) / max(1, T − w))`;
//! - `cosine` after warmup: with `p = (s − w) / max(1, T − w)`,
//!   `max(0, ½·(1 + cos(π · 0.5 · 2 · p)))` (half a wave, transformers' `num_cycles = 0.5`);
//! - `constant`: 1 at every step, warmup ignored;
//! - `constant_with_warmup` after warmup: 1.

use super::recipe::{LrSchedulerType, TrainRecipe};

/// The learning rate of every optimizer step of one run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LrSchedule {
    /// Shape of the schedule.
    pub kind: LrSchedulerType,
    /// Peak rate (`learning_rate`).
    pub base_lr: f64,
    /// Optimizer steps of linear warmup.
    pub warmup_steps: usize,
    /// Optimizer steps of the whole run.
    pub total_steps: usize,
}

impl LrSchedule {
    /// A schedule from its parts.
    pub fn new(
        kind: LrSchedulerType,
        base_lr: f64,
        warmup_steps: usize,
        total_steps: usize,
    ) -> Self {
        Self {
            kind,
            base_lr,
            warmup_steps,
            total_steps,
        }
    }

    /// The schedule a recipe asks for over `total_steps` optimizer steps; warmup from
    /// `warmup_steps` when above 0, else from `warmup_ratio` (see [`warmup_steps`]).
    pub fn from_recipe(recipe: &TrainRecipe, total_steps: usize) -> Self {
        Self::new(
            recipe.lr_scheduler_type,
            recipe.learning_rate,
            warmup_steps(total_steps, recipe.warmup_steps, recipe.warmup_ratio),
            total_steps,
        )
    }

    /// The multiplier on the base rate at optimizer step `step` (from 0).
    pub fn factor(&self, step: usize) -> f64 {
        let s = step as i64;
        let w = self.warmup_steps as i64;
        let t = self.total_steps as i64;
        let warmup = || s as f64 / (w.max(1)) as f64;
        match self.kind {
            LrSchedulerType::Constant => 1.0,
            LrSchedulerType::ConstantWithWarmup => {
                if s < w {
                    warmup()
                } else {
                    1.0
                }
            }
            LrSchedulerType::Linear => {
                if s < w {
                    warmup()
                } else {
                    let v = (t - s) as f64 / ((t - w).max(1)) as f64;
                    v.max(0.0)
                }
            }
            LrSchedulerType::Cosine => {
                if s < w {
                    warmup()
                } else {
                    let progress = (s - w) as f64 / ((t - w).max(1)) as f64;
                    let num_cycles = 0.5_f64;
                    let v =
                        0.5 * (1.0 + (std::f64::consts::PI * num_cycles * 2.0 * progress).cos());
                    v.max(0.0)
                }
            }
        }
    }

    /// The learning rate of the update made at optimizer step `step` (from 0).
    pub fn lr(&self, step: usize) -> f64 {
        self.base_lr * self.factor(step)
    }
}

/// Warmup length in optimizer steps: `explicit_steps` when above 0, else
/// `ceil(total_steps · ratio)` computed in `f64`, as transformers' `get_warmup_steps` does
/// (so 100 steps at ratio 0.07 give 8, because 100 · 0.07 is slightly above 7 in binary).
pub fn warmup_steps(total_steps: usize, explicit_steps: usize, ratio: f64) -> usize {
    if explicit_steps > 0 {
        explicit_steps
    } else {
        (total_steps as f64 * ratio).ceil() as usize
    }
}

/// Optimizer steps of a run, as transformers' Trainer counts them: `max_steps` when set;
/// otherwise `ceil(epochs · steps_per_epoch)` with
/// `steps_per_epoch = max(1, ceil(micro_batches_per_epoch / accumulation))`, so a trailing
/// group of fewer than `accumulation` micro-batches still makes a step and no sample is
/// dropped (recent transformers releases count the same way; older ones rounded down).
pub fn total_optimizer_steps(
    micro_batches_per_epoch: usize,
    gradient_accumulation_steps: usize,
    num_train_epochs: f64,
    max_steps: Option<usize>,
) -> usize {
    if let Some(m) = max_steps {
        return m;
    }
    let steps_per_epoch =
        optimizer_steps_per_epoch(micro_batches_per_epoch, gradient_accumulation_steps);
    (num_train_epochs * steps_per_epoch as f64).ceil() as usize
}

/// Optimizer steps in one pass over `micro_batches_per_epoch` micro-batches (at least 1).
pub fn optimizer_steps_per_epoch(
    micro_batches_per_epoch: usize,
    gradient_accumulation_steps: usize,
) -> usize {
    micro_batches_per_epoch
        .div_ceil(gradient_accumulation_steps.max(1))
        .max(1)
}

/// Micro-batches in one pass over `examples` samples at `batch_size` per micro-batch (the last
/// one may be short).
pub fn micro_batches_per_epoch(examples: usize, batch_size: usize) -> usize {
    examples.div_ceil(batch_size.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-15 * b.abs().max(1.0)
    }

    #[test]
    fn linear_with_warmup_hand_values() {
        // T = 10, w = 2: warmup 0, 1/2; then (10 − s)/8.
        let s = LrSchedule::new(LrSchedulerType::Linear, 1.0, 2, 10);
        let expect = [
            0.0, 0.5, 1.0, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25, 0.125, 0.0, 0.0,
        ];
        for (step, e) in expect.iter().enumerate() {
            assert_eq!(s.factor(step), *e, "step {step}");
        }
        let s = LrSchedule::new(LrSchedulerType::Linear, 2e-4, 0, 4);
        assert_eq!(s.lr(0), 2e-4);
        assert_eq!(s.lr(1), 2e-4 * 0.75);
        assert_eq!(s.lr(3), 2e-4 * 0.25);
    }

    #[test]
    fn cosine_with_warmup_hand_values() {
        // T = 10, w = 2: warmup 0, 1/2; then ½(1 + cos(π (s − 2)/8)).
        let s = LrSchedule::new(LrSchedulerType::Cosine, 1.0, 2, 10);
        assert_eq!(s.factor(0), 0.0);
        assert_eq!(s.factor(1), 0.5);
        assert_eq!(s.factor(2), 1.0);
        // s = 4: p = 1/4, ½(1 + √2/2) = 0.853553390593273 7...
        assert!(
            close(s.factor(4), 0.853_553_390_593_273_8),
            "{}",
            s.factor(4)
        );
        // s = 6: p = 1/2, ½(1 + cos(π/2)) = ½ (cos gives 6.1e-17, not 0).
        assert!(close(s.factor(6), 0.5));
        // s = 8: p = 3/4, ½(1 − √2/2) = 0.146446609406726 2...
        assert!(
            close(s.factor(8), 0.146_446_609_406_726_2),
            "{}",
            s.factor(8)
        );
        // s = 10: p = 1, ½(1 + cos π) = 0.
        assert_eq!(s.factor(10), 0.0);
        // No warmup, T = 3: p = 1/3 → ½(1 + ½) = 0.75; p = 2/3 → 0.25.
        let s = LrSchedule::new(LrSchedulerType::Cosine, 1e-5, 0, 3);
        assert_eq!(s.lr(0), 1e-5);
        assert!(close(s.factor(1), 0.75));
        assert!(close(s.factor(2), 0.25));
    }

    #[test]
    fn cosine_is_bit_exact_with_the_formula_order() {
        // transformers evaluates math.pi * num_cycles * 2.0 * progress left to right.
        let s = LrSchedule::new(LrSchedulerType::Cosine, 1.0, 3, 17);
        for step in 3..=17 {
            let p = (step - 3) as f64 / 14.0;
            let expected = 0.5 * (1.0 + (std::f64::consts::PI * 0.5 * 2.0 * p).cos());
            assert_eq!(s.factor(step).to_bits(), expected.max(0.0).to_bits());
        }
    }

    #[test]
    fn constant_shapes() {
        let c = LrSchedule::new(LrSchedulerType::Constant, 3e-4, 5, 10);
        assert!((0..12).all(|s| c.lr(s) == 3e-4));
        let cw = LrSchedule::new(LrSchedulerType::ConstantWithWarmup, 1.0, 4, 10);
        assert_eq!(
            (0..7).map(|s| cw.factor(s)).collect::<Vec<_>>(),
            vec![0.0, 0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
        );
    }

    #[test]
    fn warmup_steps_round_up_like_python() {
        assert_eq!(warmup_steps(1000, 0, 0.1), 100);
        assert_eq!(warmup_steps(30, 0, 0.1), 3);
        assert_eq!(warmup_steps(100, 0, 0.07), 8); // 100 · 0.07 = 7.000000000000001 in f64
        assert_eq!(warmup_steps(100, 0, 0.03), 3);
        assert_eq!(warmup_steps(101, 0, 0.03), 4); // 3.03 → 4
        assert_eq!(warmup_steps(100, 7, 0.5), 7);
        assert_eq!(warmup_steps(100, 0, 0.0), 0);
    }

    #[test]
    fn degenerate_lengths_stay_finite() {
        // Warmup longer than the run, and a zero-length run, never divide by zero.
        let s = LrSchedule::new(LrSchedulerType::Cosine, 1.0, 10, 5);
        assert_eq!(s.factor(3), 0.3);
        let s = LrSchedule::new(LrSchedulerType::Linear, 1.0, 0, 0);
        assert_eq!(s.factor(0), 0.0);
        let s = LrSchedule::new(LrSchedulerType::Linear, 1.0, 0, 1);
        assert_eq!(s.factor(0), 1.0);
    }

    #[test]
    fn step_counts() {
        assert_eq!(micro_batches_per_epoch(10, 4), 3);
        assert_eq!(optimizer_steps_per_epoch(3, 2), 2);
        assert_eq!(optimizer_steps_per_epoch(1, 8), 1);
        assert_eq!(total_optimizer_steps(10, 4, 3.0, None), 9);
        assert_eq!(total_optimizer_steps(10, 4, 0.5, None), 2);
        assert_eq!(total_optimizer_steps(10, 4, 3.0, Some(7)), 7);
        let mut r = TrainRecipe {
            learning_rate: 1e-4,
            lr_scheduler_type: LrSchedulerType::Cosine,
            warmup_ratio: 0.1,
            ..TrainRecipe::default()
        };
        let s = LrSchedule::from_recipe(&r, 30);
        assert_eq!(s.warmup_steps, 3);
        assert_eq!(s.lr(2), 1e-4 * (2.0 / 3.0));
        assert_eq!(s.lr(3), 1e-4);
        r.warmup_steps = 5;
        assert_eq!(LrSchedule::from_recipe(&r, 30).warmup_steps, 5);
    }
}
