//! Seed aggregates: results grouped by cell without seed (polars group-by), mean ± the 95% confidence interval (n)
//! per metric, and the spec's summary tables pivoted by its `report:` layout, written as Markdown, CSV and LaTeX
//! (booktabs).

use super::results::{Measure, Results};
use super::stats::{ci95_half_width, mean};
use crate::spec::{PerMetric, ReportLayout, ReportMetric};
use mgat_train::Diagnostic;
use polars::prelude::*;
use std::fmt::Write as _;

/// One group of cells that differ only in seed.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupStats {
    pub group: String,
    /// Axis values, as in [`Results::axes`].
    pub axes: Vec<String>,
    pub dataset: String,
    pub n: usize,
    /// std and ci95 (half-width, Student t) are NaN for a single seed.
    pub mean: PerMetric<f64>,
    pub std: PerMetric<f64>,
    pub ci95: PerMetric<f64>,
    /// Each seed's values, in results order (none where a metric was not computed).
    pub samples: Vec<PerMetric<Option<f64>>>,
}

impl GroupStats {
    /// (mean, 95% interval half-width) of `metric`.
    pub fn stat(&self, metric: ReportMetric) -> (f64, f64) {
        (self.mean[metric], self.ci95[metric])
    }

    /// The seeds' values of `metric`.
    pub fn values(&self, metric: ReportMetric) -> Vec<f64> {
        self.samples.iter().filter_map(|s| s[metric]).collect()
    }
}

/// Groups in order of first appearance, with polars computing the aggregates.
pub fn group_stats(results: &Results) -> PolarsResult<Vec<GroupStats>> {
    let mut columns = vec![Column::new(
        "group".into(),
        results
            .rows
            .iter()
            .map(|r| r.group().to_string())
            .collect::<Vec<_>>(),
    )];
    for m in ReportMetric::ALL {
        columns.push(Column::new(
            m.name().into(),
            results
                .rows
                .iter()
                .map(|r| r.metrics[m])
                .collect::<Vec<_>>(),
        ));
    }
    let frame = DataFrame::new(results.rows.len(), columns)?;
    let (means, stds, counts) = aggregate(&frame)?;
    let groups = means.column("group")?.str()?.clone();
    let mut out = Vec::with_capacity(groups.len());
    for (g, group) in groups.iter().enumerate() {
        let group = group.unwrap_or_default().to_string();
        let rows: Vec<_> = results.rows.iter().filter(|r| r.group() == group).collect();
        let first = rows
            .first()
            .ok_or_else(|| polars_err!(ComputeError: "group {group} has no rows"))?;
        let mut stats = GroupStats {
            group,
            axes: first.axes.clone(),
            dataset: first.dataset.clone(),
            n: counts
                .column(&format!("{}_count", ReportMetric::ALL[0]))?
                .cast(&DataType::UInt64)?
                .u64()?
                .get(g)
                .unwrap_or(0) as usize,
            mean: PerMetric::from_fn(|_| f64::NAN),
            std: PerMetric::from_fn(|_| f64::NAN),
            ci95: PerMetric::from_fn(|_| f64::NAN),
            samples: rows.iter().map(|r| r.metrics).collect(),
        };
        for m in ReportMetric::ALL {
            stats.mean[m] = means
                .column(&format!("{m}_mean"))?
                .f64()?
                .get(g)
                .unwrap_or(f64::NAN);
            stats.std[m] = stds
                .column(&format!("{m}_agg_std"))?
                .f64()?
                .get(g)
                .unwrap_or(f64::NAN);
            stats.ci95[m] = ci95_half_width(&stats.values(m));
        }
        out.push(stats);
    }
    Ok(out)
}

/// Mean, sample std (ddof 1) and count per group, groups in order of first appearance. The eager group-by
/// aggregations are deprecated in favour of polars' lazy engine, which would add several crates and minutes of
/// compile time for a table of a few hundred rows.
#[allow(deprecated)]
fn aggregate(frame: &DataFrame) -> PolarsResult<(DataFrame, DataFrame, DataFrame)> {
    let grouped = frame.group_by_stable(["group"])?;
    let grouped = grouped.select(ReportMetric::ALL.map(ReportMetric::name));
    Ok((grouped.mean()?, grouped.std(1)?, grouped.count()?))
}

/// `mean ± half-width (n)` with one decimal, for values already in percent; `mean (1)` for one seed.
pub fn format_percent(mean: f64, half_width: f64, n: usize) -> String {
    format_stat(mean, half_width, n, 1)
}

/// `mean ± half-width (n)` with `decimals`; `mean (n)` where there is no half-width (one value).
fn format_stat(mean: f64, half_width: f64, n: usize, decimals: usize) -> String {
    if half_width.is_nan() {
        format!("{mean:.decimals$} ({n})")
    } else {
        format!("{mean:.decimals$} ± {half_width:.decimals$} ({n})")
    }
}

/// What the diagnostics table says about itself (Markdown and the page).
pub const DIAGNOSTICS_NOTE: &str = "The train stage's last epoch, per cell group: mean ± half-width of the 95% confidence \
     interval over seeds (n). Off the diagonal: how much the graph mixes (taken before the mask, so it cannot say \
     whether the mixing helps); same identity: how much of that mixing stays within the identity; ‖X′ − G‖ / ‖G‖: how \
     far the head moves its input; cos(X′, G): whether the output keeps the input's direction (near 1) or the mask \
     turns it against it (negative: harmful mixing); ‖X‖, ‖X′‖: feature lengths (a collapse shows as a falling \
     length). Shares in percent; – where the cell has no graph.";

/// The diagnostics in the table's column order: how much the graph mixes beside whether its output keeps its input's
/// direction, the lengths last.
const DIAGNOSTICS_SHOWN: [Diagnostic; 6] = [
    Diagnostic::OffdiagAttention,
    Diagnostic::GraphCosine,
    Diagnostic::SameIdentityAttention,
    Diagnostic::GraphChange,
    Diagnostic::FeatureNorm,
    Diagnostic::RefinedNorm,
];

/// The diagnostics table: one row per cell group (results order), one column per [`Diagnostic`]; None when no row
/// has diagnostics (a results.csv from before mgat recorded them).
pub fn diagnostics_table(results: &Results) -> Option<TextTable> {
    if results.rows.iter().all(|r| r.diagnostics.is_none()) {
        return None;
    }
    let mut header = vec!["cell group".to_string()];
    header.extend(DIAGNOSTICS_SHOWN.map(|d| Measure::Diagnostic(d).heading()));
    let rows = results
        .groups()
        .into_iter()
        .map(|(group, rows)| {
            let mut line = vec![group.to_string()];
            for d in DIAGNOSTICS_SHOWN {
                let measure = Measure::Diagnostic(d);
                let values: Vec<f64> = rows
                    .iter()
                    .filter_map(|&i| results.rows[i].measure(measure))
                    .map(|v| v * measure.scale())
                    .collect();
                line.push(format_interval(&values, diagnostic_decimals(d)));
            }
            line
        })
        .collect();
    let mut numeric = vec![false];
    numeric.extend(DIAGNOSTICS_SHOWN.map(|_| true));
    Some(TextTable {
        header,
        rows,
        numeric,
    })
}

/// Decimals a diagnostic is shown with: shares in percent to 0.1, lengths to 0.01, change and cosine to 0.001.
fn diagnostic_decimals(d: Diagnostic) -> usize {
    match d {
        Diagnostic::SameIdentityAttention | Diagnostic::OffdiagAttention => 1,
        Diagnostic::FeatureNorm | Diagnostic::RefinedNorm => 2,
        Diagnostic::GraphChange | Diagnostic::GraphCosine => 3,
    }
}

/// `mean ± half-width (n)` of `values` with `decimals`; `mean (1)` for one value, `–` for none.
fn format_interval(values: &[f64], decimals: usize) -> String {
    match values.len() {
        0 => "–".into(),
        n => format_stat(mean(values), ci95_half_width(values), n, decimals),
    }
}

/// The diagnostics section of summary.md; empty when there is no table.
pub fn diagnostics_markdown(results: &Results) -> String {
    diagnostics_table(results).map_or_else(String::new, |table| {
        format!(
            "\n## Training diagnostics (last epoch)\n\n{}\n\n{}",
            one_line(DIAGNOSTICS_NOTE),
            table.markdown()
        )
    })
}

/// A table as text cells: what its Markdown and HTML renderings share.
#[derive(Debug, Clone, PartialEq)]
pub struct TextTable {
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
    /// Per column: numbers, right-aligned.
    pub numeric: Vec<bool>,
}

impl TextTable {
    pub fn markdown(&self) -> String {
        let mut out = format!("| {} |\n|", self.header.join(" | "));
        for &numeric in &self.numeric {
            out.push_str(if numeric { "---:|" } else { "---|" });
        }
        out.push('\n');
        for row in &self.rows {
            let _ = writeln!(out, "| {} |", row.join(" | "));
        }
        out
    }
}

/// How tables state their intervals.
pub const INTERVAL_NOTE: &str = "Mean ± half-width of the 95% confidence interval of the mean (Student t, n − 1 degrees of freedom) over seeds \
     (n seeds), in percent.";

/// An axis's short name: its last path segment.
pub use crate::spec::grid::short_name;

/// The summary table of one spec: distinct row and column combinations in order of first appearance.
pub struct Pivot<'a> {
    layout: &'a ReportLayout,
    axes: &'a [String],
    stats: &'a [GroupStats],
    rows: Vec<Vec<String>>,
    columns: Vec<Vec<String>>,
}

impl<'a> Pivot<'a> {
    pub fn new(layout: &'a ReportLayout, axes: &'a [String], stats: &'a [GroupStats]) -> Self {
        let values = |g: &GroupStats, which: &[String]| -> Vec<String> {
            which
                .iter()
                .map(|a| {
                    axes.iter()
                        .position(|x| x == a)
                        .map(|i| g.axes[i].clone())
                        .unwrap_or_default()
                })
                .collect()
        };
        let mut rows: Vec<Vec<String>> = Vec::new();
        let mut columns: Vec<Vec<String>> = Vec::new();
        for g in stats {
            let (r, c) = (values(g, &layout.rows), values(g, &layout.columns));
            if !rows.contains(&r) {
                rows.push(r);
            }
            if !columns.contains(&c) {
                columns.push(c);
            }
        }
        Pivot {
            layout,
            axes,
            stats,
            rows,
            columns,
        }
    }

    fn cell(&self, row: &[String], column: &[String]) -> Option<&GroupStats> {
        let want: Vec<(&String, &String)> = self
            .layout
            .rows
            .iter()
            .zip(row)
            .chain(self.layout.columns.iter().zip(column))
            .collect();
        self.stats.iter().find(|g| {
            want.iter().all(|(axis, value)| {
                self.axes
                    .iter()
                    .position(|a| a == *axis)
                    .is_some_and(|i| &g.axes[i] == *value)
            })
        })
    }

    fn row_header(&self) -> String {
        let rows: Vec<String> = self
            .layout
            .rows
            .iter()
            .map(|a| short_name(a, self.axes))
            .collect();
        if rows.is_empty() {
            "cells".into()
        } else {
            rows.join(", ")
        }
    }

    fn column_label(&self, column: &[String]) -> String {
        if column.is_empty() {
            return "all".into();
        }
        self.layout
            .columns
            .iter()
            .zip(column)
            .map(|(a, v)| format!("{}={v}", short_name(a, self.axes)))
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn row_label(&self, row: &[String]) -> String {
        if row.is_empty() {
            "all".into()
        } else {
            row.join(", ")
        }
    }

    fn text(&self, metric: ReportMetric, row: &[String], column: &[String]) -> String {
        match self.cell(row, column) {
            Some(g) => {
                let (mean, ci) = g.stat(metric);
                format_percent(mean * 100.0, ci * 100.0, g.n)
            }
            None => "–".into(),
        }
    }

    /// The table of one metric, values in percent.
    pub fn text_table(&self, metric: ReportMetric) -> TextTable {
        let mut header = vec![self.row_header()];
        header.extend(self.columns.iter().map(|c| self.column_label(c)));
        let rows = self
            .rows
            .iter()
            .map(|r| {
                let mut line = vec![self.row_label(r)];
                line.extend(self.columns.iter().map(|c| self.text(metric, r, c)));
                line
            })
            .collect();
        let mut numeric = vec![false];
        numeric.extend(self.columns.iter().map(|_| true));
        TextTable {
            header,
            rows,
            numeric,
        }
    }

    /// The metrics in the spec's report layout, each with its table.
    pub fn tables(&self) -> Vec<(&str, TextTable)> {
        self.layout
            .metrics
            .iter()
            .map(|&m| (m.label(), self.text_table(m)))
            .collect()
    }

    /// One Markdown table per metric, values in percent.
    pub fn markdown(&self, title: &str) -> String {
        let mut out = format!("# {}\n\n{INTERVAL_NOTE}\n", one_line(title));
        for (label, table) in self.tables() {
            let _ = write!(out, "\n## {label} (%)\n\n{}", table.markdown());
        }
        out
    }

    /// Rows: metric × row combination; per column combination four columns: mean, sample std and the 95% interval's
    /// half-width (fractions, not percent, six decimals; std and ci95 empty for one seed) and n.
    pub fn csv(&self) -> String {
        let mut out = String::from("metric");
        for a in &self.layout.rows {
            let _ = write!(out, ",{}", csv_field(a));
        }
        for c in &self.columns {
            let label = self.column_label(c);
            for suffix in ["mean", "std", "ci95", "n"] {
                let _ = write!(out, ",{}", csv_field(&format!("{label} {suffix}")));
            }
        }
        out.push('\n');
        for &metric in &self.layout.metrics {
            for r in &self.rows {
                out.push_str(metric.name());
                for v in r {
                    let _ = write!(out, ",{}", csv_field(v));
                }
                for c in &self.columns {
                    match self.cell(r, c) {
                        Some(g) => {
                            let text = |v: f64| match v.is_nan() {
                                true => String::new(),
                                false => format!("{v:.6}"),
                            };
                            let _ = write!(
                                out,
                                ",{:.6},{},{},{}",
                                g.mean[metric],
                                text(g.std[metric]),
                                text(g.ci95[metric]),
                                g.n
                            );
                        }
                        None => out.push_str(",,,,"),
                    }
                }
                out.push('\n');
            }
        }
        out
    }

    /// One booktabs tabular per metric, values in percent.
    pub fn latex(&self, title: &str) -> String {
        let mut out = format!(
            "% {}: mean $\\pm$ 95% confidence half-width (Student t) over seeds (n), in percent. \
             Needs \\usepackage{{booktabs}}.\n",
            one_line(title)
        );
        for &metric in &self.layout.metrics {
            let _ = writeln!(
                out,
                "\n% {}\n\\begin{{tabular}}{{l{}}}\n\\toprule",
                metric.label(),
                "r".repeat(self.columns.len())
            );
            let _ = write!(out, "{}", latex_escape(&self.row_header()));
            for c in &self.columns {
                let _ = write!(out, " & {}", latex_escape(&self.column_label(c)));
            }
            out.push_str(" \\\\\n\\midrule\n");
            for r in &self.rows {
                let _ = write!(out, "{}", latex_escape(&self.row_label(r)));
                for c in &self.columns {
                    let text = self
                        .text(metric, r, c)
                        .replace('±', "$\\pm$")
                        .replace('–', "--");
                    let _ = write!(out, " & {text}");
                }
                out.push_str(" \\\\\n");
            }
            out.push_str("\\bottomrule\n\\end{tabular}\n");
        }
        out
    }
}

/// A CSV field, quoted only when it has to be.
pub fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// Text as TeX typesets it literally: its special characters escaped, a backslash, caret and tilde spelled out, and
/// line breaks and other control characters as spaces, so that no text from a spec or results can become a command.
fn latex_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in one_line(s).chars() {
        match ch {
            '_' | '%' | '&' | '#' | '$' | '{' | '}' => {
                out.push('\\');
                out.push(ch);
            }
            '\\' => out.push_str("\\textbackslash{}"),
            '^' => out.push_str("\\textasciicircum{}"),
            '~' => out.push_str("\\textasciitilde{}"),
            _ => out.push(ch),
        }
    }
    out
}

/// `s` with every control character (line breaks included) as a space: for text inside a TeX comment, a Markdown
/// heading or a table cell, which a line break would end.
pub fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::results::tests::table;

    #[test]
    fn text_from_a_spec_cannot_become_tex_or_leave_a_comment() {
        let hostile = "ok\n\\input{/etc/passwd} ^~";
        let escaped = latex_escape(hostile);
        assert_eq!(
            escaped,
            "ok \\textbackslash{}input\\{/etc/passwd\\} \\textasciicircum{}\\textasciitilde{}"
        );
        assert!(!escaped.contains('\n'));
        assert_eq!(one_line("a\r\nb\tc"), "a  b c");
    }

    fn layout(rows: &[&str], columns: &[&str]) -> ReportLayout {
        let own = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        ReportLayout {
            axes: own(&["model.head", "model.gamma"]),
            rows: own(rows),
            columns: own(columns),
            metrics: vec![ReportMetric::Rank1, ReportMetric::Map],
            sweeps: vec![],
            baseline: vec![],
        }
    }

    #[test]
    fn group_stats_match_a_hand_computation() {
        let results = table(
            &["model.head", "model.gamma"],
            &[
                (&["mgat", "0.5"], 1, 0.50, 0.30),
                (&["gat", "0.5"], 1, 0.40, 0.20),
                (&["mgat", "0.5"], 2, 0.60, 0.36),
                (&["mgat", "0.5"], 3, 0.70, 0.33),
            ],
        );
        let stats = group_stats(&results).unwrap();
        assert_eq!(stats.len(), 2);
        assert_eq!(stats[0].group, "head=mgat,gamma=0.5");
        assert_eq!(stats[0].n, 3);
        // rank-1: mean 0.6, deviations ±0.1 → sample variance 0.02/2 = 0.01.
        let (m, s) = (
            stats[0].mean[ReportMetric::Rank1],
            stats[0].std[ReportMetric::Rank1],
        );
        assert!(
            (m - 0.6).abs() < 1e-12 && (s - 0.1).abs() < 1e-12,
            "{m} {s}"
        );
        // 95% half-width: t₀.₉₇₅(2) = 4.302653 × 0.1 / √3.
        let (_, h) = stats[0].stat(ReportMetric::Rank1);
        assert!((h - 4.302653 * 0.1 / 3f64.sqrt()).abs() < 1e-6, "{h}");
        // mAP: mean 0.33, deviations −0.03, 0.03, 0 → variance 0.0018/2.
        let (m, s) = (
            stats[0].mean[ReportMetric::Map],
            stats[0].std[ReportMetric::Map],
        );
        assert!((m - 0.33).abs() < 1e-12 && (s - 0.0009f64.sqrt()).abs() < 1e-12);
        assert_eq!(stats[1].n, 1);
        assert!(stats[1].stat(ReportMetric::Rank1).1.is_nan());
    }

    #[test]
    fn the_diagnostics_table_is_each_groups_mean_and_interval_by_hand() {
        let mut results = table(
            &["model.head"],
            &[
                (&["mgat"], 1, 0.50, 0.30),
                (&["mgat"], 2, 0.60, 0.50),
                (&["none"], 1, 0.80, 0.7),
            ],
        );
        if let Some(d) = &mut results.rows[2].diagnostics {
            (d.offdiag_attention, d.same_identity_attention) = (None, None);
        }
        let table = diagnostics_table(&results).unwrap();
        assert_eq!(table.header[1], "off-diagonal share (%)");
        assert_eq!(table.header[2], "cos(X′, G)");
        // Off-diagonal share (the fixture's mAP): 30 % and 50 % → 40 ± t(0.975, 1) · √200 / √2 = 127.1.
        assert_eq!(table.rows[0][1], "40.0 ± 127.1 (2)");
        // cos(X′, G) (the fixture's rank-1 − 0.5): 0.0 and 0.1 → 0.05 ± 12.706 · 0.0707 / 1.414.
        assert_eq!(table.rows[0][2], "0.050 ± 0.635 (2)");
        assert_eq!(table.rows[1][1], "–");
        assert_eq!(table.rows[1][5], "8.50 (1)");
        let md = diagnostics_markdown(&results);
        assert!(md.contains("## Training diagnostics (last epoch)"), "{md}");
        for row in &mut results.rows {
            row.diagnostics = None;
        }
        assert!(diagnostics_table(&results).is_none());
        assert_eq!(diagnostics_markdown(&results), "");
    }

    #[test]
    fn pivot_renders_markdown_csv_and_latex() {
        let results = table(
            &["model.head", "model.gamma"],
            &[
                (&["gat", "0.5"], 1, 0.40, 0.20),
                (&["gat", "0.5"], 2, 0.50, 0.30),
                (&["mgat", "2"], 1, 0.25, 0.125),
            ],
        );
        let stats = group_stats(&results).unwrap();
        let layout = layout(&["model.head"], &["model.gamma"]);
        let pivot = Pivot::new(&layout, &results.axes, &stats);
        let md = pivot.markdown("q");
        assert!(md.contains("| head | gamma=0.5 | gamma=2 |"), "{md}");
        // 0.40 and 0.50: s = 0.0707, half-width t₀.₉₇₅(1) × s / √2 = 12.706205 × 0.05.
        assert!(md.contains("| gat | 45.0 ± 63.5 (2) | – |"), "{md}");
        assert!(md.contains("| mgat | – | 25.0 (1) |"), "{md}");
        let csv = pivot.csv();
        assert!(
            csv.starts_with(
                "metric,model.head,gamma=0.5 mean,gamma=0.5 std,gamma=0.5 ci95,gamma=0.5 n,gamma=2 mean"
            ),
            "{csv}"
        );
        assert!(
            csv.contains("\nrank1,gat,0.450000,0.070711,0.635310,2,,,,\n"),
            "{csv}"
        );
        let tex = pivot.latex("q");
        assert!(
            tex.contains("gat & 45.0 $\\pm$ 63.5 (2) & -- \\\\"),
            "{tex}"
        );
        assert!(tex.contains("\\toprule") && tex.contains("\\bottomrule"));
    }
}
