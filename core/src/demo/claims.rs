//! The paper's claims as the demo checks them: two rows' scores compared with their spread
//! over seeds. A claim holds only when the gap is larger than the spread; a gap inside the
//! spread is a tie; with one seed the spread is not measured, and the report says so rather
//! than calling a gap of one answer a result.

use serde::Serialize;

use super::seeds::Spread;

/// What the numbers say about a claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Ahead by more than the spread.
    Holds,
    /// Behind by more than the spread.
    DoesNotHold,
    /// Equal, or apart by no more than the spread.
    Tie,
    /// Apart, but with one seed the spread is unknown (`--seeds 3` measures it).
    OneSeed,
}

impl Verdict {
    /// The words of the report.
    pub fn words(self) -> &'static str {
        match self {
            Self::Holds => "holds",
            Self::DoesNotHold => "does NOT hold here",
            Self::Tie => "a tie here",
            Self::OneSeed => "not settled by one seed",
        }
    }

    /// The checklist mark.
    pub fn mark(self) -> &'static str {
        match self {
            Self::Holds => "✓",
            Self::DoesNotHold => "✗",
            Self::Tie => "≈",
            Self::OneSeed => "?",
        }
    }
}

/// One line of the claims: a claim with its verdict, or a note (no verdict) about the data.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    /// Target domain.
    pub domain: String,
    /// The claim, or the note's text.
    pub claim: String,
    /// `None` for a note.
    pub verdict: Option<Verdict>,
    /// The numbers behind the verdict.
    pub detail: String,
}

impl Finding {
    /// A note about the domain's data (no verdict).
    pub fn note(domain: &str, text: String) -> Self {
        Self {
            domain: domain.to_string(),
            claim: text,
            verdict: None,
            detail: String::new(),
        }
    }

    /// The report's markdown line.
    pub fn line(&self) -> String {
        match self.verdict {
            Some(verdict) => format!(
                "- {}: {}: {} ({})",
                self.domain,
                self.claim,
                verdict.words(),
                self.detail
            ),
            None => format!("- {}: {}", self.domain, self.claim),
        }
    }
}

/// The spread of a difference of two independent cells: the root of the sum of squares;
/// `None` when either cell's spread is unmeasured.
fn gap_spread(a: &Spread, b: &Spread) -> Option<f64> {
    Some((a.sd?.powi(2) + b.sd?.powi(2)).sqrt())
}

/// Compares row `a` with row `b`: the verdict on "a beats b" and its numbers.
pub fn compare(a: &Spread, b: &Spread) -> (Verdict, String) {
    let gap = a.mean - b.mean;
    let numbers = format!("{} vs {}", a.text(), b.text());
    if gap.abs() < 1e-9 {
        return (Verdict::Tie, numbers);
    }
    match gap_spread(a, b) {
        None => {
            let side = if gap > 0.0 { "ahead" } else { "behind" };
            (
                Verdict::OneSeed,
                format!("{numbers}; {side} by {:.1}, spread unmeasured", gap.abs()),
            )
        }
        Some(spread) => {
            let verdict = if gap.abs() <= spread {
                Verdict::Tie
            } else if gap > 0.0 {
                Verdict::Holds
            } else {
                Verdict::DoesNotHold
            };
            (
                verdict,
                format!("{numbers}; gap {gap:+.1}, spread {spread:.1}"),
            )
        }
    }
}

/// A claim that row `a` beats row `b` in `domain`.
pub fn claim(domain: &str, claim: &str, a: &Spread, b: &Spread) -> Finding {
    let (verdict, detail) = compare(a, b);
    Finding {
        domain: domain.to_string(),
        claim: claim.to_string(),
        verdict: Some(verdict),
        detail,
    }
}

/// "The paper's row beats the general base on every task": `tasks` holds (column, paper's
/// row, general base); `None` when a score is missing. It holds when every task holds, does
/// not hold when any task does not, and otherwise takes the weakest verdict (one seed, then tie).
pub fn every_task(
    domain: &str,
    tasks: &[(String, Option<Spread>, Option<Spread>)],
) -> Option<Finding> {
    let scored: Vec<(&str, Verdict, Spread, Spread)> = tasks
        .iter()
        .map(|(column, paper, base)| {
            let (paper, base) = ((*paper)?, (*base)?);
            Some((column.as_str(), compare(&paper, &base).0, paper, base))
        })
        .collect::<Option<_>>()?;
    type Scored<'a> = (&'a str, Verdict, Spread, Spread);
    let listed = |wanted: &dyn Fn(&Scored) -> bool| -> Vec<String> {
        scored
            .iter()
            .filter(|task| wanted(task))
            .map(|(column, _, paper, base)| format!("{column} {} vs {}", paper.text(), base.text()))
            .collect()
    };
    let (verdict, detail) = if scored.iter().any(|s| s.1 == Verdict::DoesNotHold) {
        let below = listed(&|task| task.1 == Verdict::DoesNotHold);
        (
            Verdict::DoesNotHold,
            format!("below the base: {}", below.join(", ")),
        )
    } else if scored.iter().any(|s| s.1 == Verdict::OneSeed) {
        let not_ahead = listed(&|task| task.2.mean <= task.3.mean);
        let detail = if not_ahead.is_empty() {
            "ahead of the base on every task, spread unmeasured".to_string()
        } else {
            format!(
                "not above the base: {}; spread unmeasured",
                not_ahead.join(", ")
            )
        };
        (Verdict::OneSeed, detail)
    } else if scored.iter().any(|s| s.1 == Verdict::Tie) {
        let ties = listed(&|task| task.1 == Verdict::Tie);
        (
            Verdict::Tie,
            format!("within the spread of the base: {}", ties.join(", ")),
        )
    } else {
        let (column, _, paper, base) = scored
            .iter()
            .min_by(|a, b| (a.2.mean - a.3.mean).total_cmp(&(b.2.mean - b.3.mean)))?;
        (
            Verdict::Holds,
            format!(
                "smallest gain {:.1} points, {column}",
                paper.mean - base.mean
            ),
        )
    };
    Some(Finding {
        domain: domain.to_string(),
        claim: "the paper's row beats the general base on every task".into(),
        verdict: Some(verdict),
        detail,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seeds(values: &[f64]) -> Spread {
        Spread::of(values, true).unwrap()
    }

    fn base(value: f64) -> Spread {
        Spread::of(&[value], false).unwrap()
    }

    #[test]
    fn a_gap_inside_the_spread_is_a_tie_and_outside_it_a_verdict() {
        // sd 2 each: spread of the gap √8 ≈ 2.83.
        let (verdict, detail) = compare(&seeds(&[10.0, 12.0, 14.0]), &seeds(&[8.0, 10.0, 12.0]));
        assert_eq!(verdict, Verdict::Tie);
        assert_eq!(detail, "12.0 ± 2.0 vs 10.0 ± 2.0; gap +2.0, spread 2.8");
        let (verdict, _) = compare(&seeds(&[20.0, 22.0, 24.0]), &seeds(&[8.0, 10.0, 12.0]));
        assert_eq!(verdict, Verdict::Holds);
        let (verdict, _) = compare(&seeds(&[1.0, 2.0, 3.0]), &base(12.5));
        assert_eq!(verdict, Verdict::DoesNotHold);
    }

    #[test]
    fn one_seed_settles_nothing_but_an_exact_tie() {
        let (verdict, detail) = compare(&seeds(&[14.3]), &base(6.4));
        assert_eq!(verdict, Verdict::OneSeed);
        assert_eq!(detail, "14.3 vs 6.4; ahead by 7.9, spread unmeasured");
        assert_eq!(compare(&seeds(&[7.5]), &base(7.5)).0, Verdict::Tie);
        let finding = claim("food", "the filter helps", &seeds(&[14.3]), &seeds(&[16.9]));
        assert_eq!(
            finding.line(),
            "- food: the filter helps: not settled by one seed (14.3 vs 16.9; behind by 2.6, spread unmeasured)"
        );
    }

    #[test]
    fn every_task_takes_the_weakest_task() {
        let columns = |paper: [Spread; 2],
                       bases: [f64; 2]|
         -> Vec<(String, Option<Spread>, Option<Spread>)> {
            ["dish acc", "recipe rl"]
                .iter()
                .zip(paper)
                .zip(bases)
                .map(|((c, p), b)| (c.to_string(), Some(p), Some(base(b))))
                .collect()
        };
        let held = every_task(
            "food",
            &columns([seeds(&[20.0, 21.0]), seeds(&[30.0, 31.0])], [5.0, 6.0]),
        )
        .unwrap();
        assert_eq!(held.verdict, Some(Verdict::Holds));
        assert_eq!(held.detail, "smallest gain 15.5 points, dish acc");
        let failed = every_task(
            "food",
            &columns([seeds(&[1.0, 2.0]), seeds(&[30.0, 31.0])], [5.0, 6.0]),
        )
        .unwrap();
        assert_eq!(failed.verdict, Some(Verdict::DoesNotHold));
        assert_eq!(failed.detail, "below the base: dish acc 1.5 ± 0.7 vs 5.0");
        let tied = every_task(
            "food",
            &columns([seeds(&[4.0, 6.0]), seeds(&[30.0, 31.0])], [5.0, 6.0]),
        )
        .unwrap();
        assert_eq!(tied.verdict, Some(Verdict::Tie));
        let one = every_task(
            "food",
            &columns([seeds(&[4.0]), seeds(&[30.0])], [5.0, 6.0]),
        )
        .unwrap();
        assert_eq!(one.verdict, Some(Verdict::OneSeed));
        assert_eq!(
            one.detail,
            "not above the base: dish acc 4.0 vs 5.0; spread unmeasured"
        );
        let missing = vec![("dish acc".to_string(), None, Some(base(1.0)))];
        assert!(every_task("food", &missing).is_none());
    }
}
