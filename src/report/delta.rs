//! The "Δ vs baseline" table: each cell group's difference from its baseline group per metric, with the 95%
//! confidence interval of the difference and Welch's p-value, Holm-corrected over every comparison in the table.
//!
//! A group's baseline is the baseline group (the spec's `report.baseline` cells) that agrees with it on the most
//! other axes. The baseline reads no head settings, so its groups over γ often hold the very same runs; a tie
//! between baseline groups with different runs is ambiguous, and that row is left out and named.

use super::stats::{holm, welch};
use super::summary::{GroupStats, TextTable, csv_field};
use crate::spec::{ReportLayout, ReportMetric};
use std::fmt::Write as _;

/// Family-wise error rate of the significance marks.
pub const ALPHA: f64 = 0.05;

/// One comparison: a group against its baseline on one metric (fractions, not percent).
#[derive(Debug, Clone, PartialEq)]
pub struct Delta {
    pub group: String,
    pub baseline: String,
    pub metric: ReportMetric,
    pub n: usize,
    pub n_baseline: usize,
    /// mean(group) − mean(baseline) and the half-width of its 95% interval (Welch's t).
    pub diff: f64,
    pub ci95: f64,
    pub p: f64,
    /// Holm-adjusted p over every row of the table.
    pub p_holm: f64,
}

impl Delta {
    pub fn significant(&self) -> bool {
        self.p_holm < ALPHA
    }
}

/// The table's rows (groups in order, then metrics in the layout's order), and the groups left out for want of a
/// single baseline.
pub struct DeltaTable {
    pub rows: Vec<Delta>,
    pub ambiguous: Vec<String>,
}

impl DeltaTable {
    /// Every comparison the layout's baseline allows; `None` when the spec has no baseline or no group besides it.
    pub fn of(layout: &ReportLayout, axes: &[String], stats: &[GroupStats]) -> Option<Self> {
        if layout.baseline.is_empty() {
            return None;
        }
        let is_baseline = |g: &GroupStats| {
            layout.baseline.iter().all(|(axis, want)| {
                axes.iter()
                    .position(|a| a == axis)
                    .is_some_and(|i| &g.axes[i] == want)
            })
        };
        let baselines: Vec<&GroupStats> = stats.iter().filter(|g| is_baseline(g)).collect();
        let mut rows = Vec::new();
        let mut ambiguous = Vec::new();
        for g in stats.iter().filter(|g| !is_baseline(g)) {
            let Some(base) = baseline_of(g, &baselines) else {
                ambiguous.push(g.group.clone());
                continue;
            };
            for &metric in &layout.metrics {
                let (a, b) = (base.values(metric), g.values(metric));
                let Some(w) = welch(&a, &b) else { continue };
                rows.push(Delta {
                    group: g.group.clone(),
                    baseline: base.group.clone(),
                    metric,
                    n: b.len(),
                    n_baseline: a.len(),
                    diff: w.diff,
                    ci95: w.ci95,
                    p: w.p,
                    p_holm: f64::NAN,
                });
            }
        }
        if rows.is_empty() && ambiguous.is_empty() {
            return None;
        }
        let adjusted = holm(&rows.iter().map(|r| r.p).collect::<Vec<_>>());
        rows.iter_mut()
            .zip(adjusted)
            .for_each(|(r, p)| r.p_holm = p);
        Some(Self { rows, ambiguous })
    }

    /// How the section reads the table.
    pub fn explanation(&self) -> String {
        format!(
            "Difference of the means in percentage points, with its 95% confidence interval (Welch's t), Welch's \
             two-sided p-value and the p-value Holm-corrected over all {} comparisons in this table. ✱ marks a \
             difference significant at a family-wise α = {ALPHA}.",
            self.rows.len()
        )
    }

    /// The comparisons, values in percentage points.
    pub fn text_table(&self) -> TextTable {
        let header = [
            "cell",
            "baseline",
            "metric",
            "Δ (points)",
            "95% CI",
            "p",
            "p (Holm)",
            "",
        ];
        let rows = self
            .rows
            .iter()
            .map(|r| {
                vec![
                    r.group.clone(),
                    r.baseline.clone(),
                    r.metric.label().to_string(),
                    format!("{:+.1}", r.diff * 100.0),
                    format!(
                        "[{:+.1}, {:+.1}]",
                        (r.diff - r.ci95) * 100.0,
                        (r.diff + r.ci95) * 100.0
                    ),
                    format_p(r.p),
                    format_p(r.p_holm),
                    if r.significant() { "✱" } else { "" }.to_string(),
                ]
            })
            .collect();
        TextTable {
            header: header.map(String::from).to_vec(),
            rows,
            numeric: vec![false, false, false, true, true, true, true, false],
        }
    }

    /// What is left out: groups that more than one baseline group fits.
    pub fn left_out(&self) -> Option<String> {
        (!self.ambiguous.is_empty()).then(|| {
            format!(
                "Left out, more than one baseline group fits: {}",
                self.ambiguous.join(", ")
            )
        })
    }

    /// A Markdown section, values in percentage points.
    pub fn markdown(&self) -> String {
        let mut out = format!(
            "\n## Δ vs baseline\n\n{}\n\n{}",
            self.explanation(),
            self.text_table().markdown()
        );
        if let Some(left_out) = self.left_out() {
            let _ = writeln!(out, "\n{left_out}");
        }
        out
    }

    /// One line per comparison: fractions, not percent.
    pub fn csv(&self) -> String {
        let mut out =
            String::from("cell,baseline,metric,n,n_baseline,diff,ci95,p,p_holm,significant\n");
        for r in &self.rows {
            let _ = writeln!(
                out,
                "{},{},{},{},{},{:.6},{:.6},{:.6},{:.6},{}",
                csv_field(&r.group),
                csv_field(&r.baseline),
                r.metric,
                r.n,
                r.n_baseline,
                r.diff,
                r.ci95,
                r.p,
                r.p_holm,
                r.significant()
            );
        }
        out
    }
}

/// The baseline group sharing the most axis values with `g`; among equally close ones, they must hold the same
/// runs (same values), else there is no single baseline.
fn baseline_of<'a>(g: &GroupStats, baselines: &[&'a GroupStats]) -> Option<&'a GroupStats> {
    let agreement = |b: &GroupStats| g.axes.iter().zip(&b.axes).filter(|(x, y)| x == y).count();
    let same_data = || baselines.iter().filter(|b| b.dataset == g.dataset);
    let best = same_data().map(|b| agreement(b)).max()?;
    let closest: Vec<&&GroupStats> = same_data().filter(|b| agreement(b) == best).collect();
    let first = closest[0];
    closest
        .iter()
        .all(|b| b.samples == first.samples)
        .then_some(*first)
}

fn format_p(p: f64) -> String {
    if p < 0.001 {
        "< 0.001".into()
    } else {
        format!("{p:.3}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::results::tests::table;
    use crate::report::stats::t_critical;
    use crate::report::summary::group_stats;

    fn layout() -> ReportLayout {
        let own = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        ReportLayout {
            axes: own(&["model.head", "model.gamma"]),
            rows: own(&["model.head"]),
            columns: own(&["model.gamma"]),
            metrics: vec![ReportMetric::Rank1],
            sweeps: vec![],
            baseline: vec![("model.head".into(), "none".into())],
        }
    }

    #[test]
    fn deltas_welch_and_holm_by_hand() {
        // The baseline's two γ groups hold the same runs (it reads no γ).
        let results = table(
            &["model.head", "model.gamma"],
            &[
                (&["none", "0.5"], 1, 0.40, 0.3),
                (&["none", "0.5"], 2, 0.50, 0.3),
                (&["none", "0.5"], 3, 0.60, 0.3),
                (&["none", "2"], 1, 0.40, 0.3),
                (&["none", "2"], 2, 0.50, 0.3),
                (&["none", "2"], 3, 0.60, 0.3),
                (&["gat", "0.5"], 1, 0.70, 0.3),
                (&["gat", "0.5"], 2, 0.80, 0.3),
                (&["gat", "0.5"], 3, 0.90, 0.3),
                (&["gat", "2"], 1, 0.45, 0.3),
                (&["gat", "2"], 2, 0.55, 0.3),
                (&["gat", "2"], 3, 0.65, 0.3),
            ],
        );
        let stats = group_stats(&results).unwrap();
        let d = DeltaTable::of(&layout(), &results.axes, &stats).unwrap();
        assert!(d.ambiguous.is_empty());
        assert_eq!(d.rows.len(), 2);
        let (a, b) = (&d.rows[0], &d.rows[1]);
        assert_eq!(
            (a.group.as_str(), a.baseline.as_str()),
            ("head=gat,gamma=0.5", "head=none,gamma=0.5")
        );
        assert_eq!(b.baseline, "head=none,gamma=2");
        // Both sides have s² = 0.01, n = 3: se = sqrt(2·0.01/3), df = 4; Δ = 0.3 → t = 3.674.
        let se = (0.02f64 / 3.0).sqrt();
        assert!((a.diff - 0.3).abs() < 1e-12);
        assert!((a.ci95 - t_critical(0.05, 4.0) * se).abs() < 1e-9);
        // p for t = 3.674, df = 4 is 0.0213; Holm over two: the smaller ×2.
        assert!((a.p - 0.02131).abs() < 2e-4, "{}", a.p);
        assert!((a.p_holm - 2.0 * a.p).abs() < 1e-12);
        assert!(a.significant());
        assert!((b.diff - 0.05).abs() < 1e-12 && !b.significant());
        assert_eq!(b.p_holm, (2.0 * a.p).max(b.p));
        let md = d.markdown();
        assert!(
            md.contains("| head=gat,gamma=0.5 | head=none,gamma=0.5 | rank-1 | +30.0 |"),
            "{md}"
        );
    }

    #[test]
    fn baselines_with_different_runs_and_equal_closeness_are_ambiguous() {
        let results = table(
            &["model.head", "model.gamma"],
            &[
                (&["none", "0.5"], 1, 0.40, 0.3),
                (&["none", "0.5"], 2, 0.50, 0.3),
                (&["none", "2"], 1, 0.41, 0.3),
                (&["none", "2"], 2, 0.51, 0.3),
                (&["gat", "1"], 1, 0.70, 0.3),
                (&["gat", "1"], 2, 0.80, 0.3),
            ],
        );
        let stats = group_stats(&results).unwrap();
        let d = DeltaTable::of(&layout(), &results.axes, &stats).unwrap();
        assert_eq!(d.ambiguous, ["head=gat,gamma=1"]);
        assert!(d.rows.is_empty());
    }
}
