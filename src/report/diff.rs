//! `mgat diff`: results.csv files at two git revisions (or a revision and the working tree) joined by cell without
//! seed; per metric and last-epoch training diagnostic the means, Δ, and with two or more seeds on both sides
//! Welch's t-test, marking moves larger than seed noise (p < 0.05). Files are read with `git show`, so any clone can
//! compare any two commits.

use super::ReportError;
use super::keys::{KEYS_FILE, ReportKeys, Unrecorded};
use super::results::{Measure, RESULTS_FILE, Results};
use super::stats::{mean, welch};
use crate::plan::StageKind;
use crate::plan::reasons::KeyChange;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

/// p below this marks a move larger than seed noise.
pub const SIGNIFICANCE: f64 = 0.05;

/// Where a side's results come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Side {
    Rev(String),
    WorkingTree,
}

impl Side {
    pub fn label(&self) -> &str {
        match self {
            Side::Rev(r) => r,
            Side::WorkingTree => "working tree",
        }
    }

    /// Every `reports/<spec>/results.csv` at this side with the `keys.json` beside it, by spec name.
    pub fn load(&self, root: &Path) -> Result<BTreeMap<String, Committed>, ReportError> {
        let mut out = BTreeMap::new();
        match self {
            Side::WorkingTree => {
                let reports = root.join("reports");
                let Ok(dirs) = std::fs::read_dir(&reports) else {
                    return Ok(out);
                };
                for dir in dirs.flatten() {
                    let path = dir.path().join(RESULTS_FILE);
                    if path.is_file() {
                        let name = dir.file_name().to_string_lossy().into_owned();
                        let keys = ReportKeys::read_beside(&dir.path())?;
                        let results = Results::read(&path)?;
                        out.insert(name, Committed { results, keys });
                    }
                }
            }
            Side::Rev(rev) => {
                git(root, &["rev-parse", "--git-dir"]).map_err(|e| match e {
                    ReportError::Git(message) if message.starts_with(NO_GIT) => {
                        ReportError::Git(message)
                    }
                    _ => ReportError::NotARepository(root.to_path_buf()),
                })?;
                git(
                    root,
                    &[
                        "rev-parse",
                        "--verify",
                        "--quiet",
                        &format!("{rev}^{{commit}}"),
                    ],
                )
                .map_err(|_| ReportError::UnknownRevision(rev.clone()))?;
                let listing = git(
                    root,
                    &["ls-tree", "-r", "--name-only", rev, "--", "reports/"],
                )?;
                let listing = String::from_utf8_lossy(&listing);
                for path in listing.lines() {
                    let Some(name) = path
                        .strip_prefix("reports/")
                        .and_then(|p| p.strip_suffix(&format!("/{RESULTS_FILE}")))
                        .filter(|n| !n.contains('/'))
                    else {
                        continue;
                    };
                    let show = |path: &str| git(root, &["show", &format!("{rev}:{path}")]);
                    let results = Results::parse(&show(path)?, &format!("{rev}:{path}"))?;
                    let keys_path = format!("reports/{name}/{KEYS_FILE}");
                    let keys = match listing.lines().any(|l| l == keys_path) {
                        true => Some(ReportKeys::parse(
                            &show(&keys_path)?,
                            &format!("{rev}:{keys_path}"),
                        )?),
                        false => None,
                    };
                    out.insert(name.to_string(), Committed { results, keys });
                }
            }
        }
        Ok(out)
    }

    /// The files among `files` that differ from side `a` to this side (`git diff --name-only`); none when git
    /// cannot tell.
    fn changed_since(&self, root: &Path, a: &Side, files: &[&str]) -> Vec<String> {
        let Side::Rev(rev_a) = a else {
            return Vec::new();
        };
        let mut args = vec!["diff", "--name-only", rev_a.as_str()];
        if let Side::Rev(rev_b) = self {
            args.push(rev_b);
        }
        args.push("--");
        args.extend(files);
        git(root, &args)
            .map(|out| {
                String::from_utf8_lossy(&out)
                    .lines()
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// A spec's committed report at one side: its rows and, where it was committed, what their stages were keyed by.
#[derive(Debug, Clone)]
pub struct Committed {
    pub results: Results,
    pub keys: Option<ReportKeys>,
}

/// How an error that git could not be started begins.
const NO_GIT: &str = "cannot run git";

fn git(root: &Path, args: &[&str]) -> Result<Vec<u8>, ReportError> {
    let output = Command::new("git")
        .arg("-C")
        .arg(root)
        .args(args)
        .output()
        .map_err(|e| {
            let hint = match e.kind() {
                std::io::ErrorKind::NotFound => " (is git installed and on PATH?)",
                _ => "",
            };
            ReportError::Git(format!(
                "{NO_GIT}{hint}: {e}; `mgat diff` reads committed reports through git"
            ))
        })?;
    if !output.status.success() {
        return Err(ReportError::Git(format!(
            "git {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(output.stdout)
}

/// One measure (a metric or a diagnostic) of one cell group on both sides.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricDiff {
    pub spec: String,
    pub group: String,
    pub measure: Measure,
    /// Per-seed values (as results.csv has them) at A and B.
    pub a: Vec<f64>,
    pub b: Vec<f64>,
    /// Welch's t-test of B against A: (t, df, p), with ≥ 2 seeds on both sides.
    pub welch: Option<(f64, f64, f64)>,
}

impl MetricDiff {
    pub fn delta(&self) -> f64 {
        mean(&self.b) - mean(&self.a)
    }

    pub fn significant(&self) -> bool {
        self.welch.is_some_and(|(_, _, p)| p < SIGNIFICANCE)
    }
}

/// Why a cell group's stage of one kind has another key at B than at A.
#[derive(Debug, Clone, PartialEq)]
pub struct Why {
    pub spec: String,
    pub group: String,
    pub kind: StageKind,
    /// What changed, or why the sides' keys.json cannot say.
    pub change: Result<KeyChange, Unrecorded>,
    /// For a change of code: that kind's source files that differ between the revisions.
    pub files: Vec<String>,
}

impl std::fmt::Display for Why {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.change {
            Err(missing) => write!(
                f,
                "{} key changed ({})",
                self.kind.name(),
                missing.describe("A", "B")
            ),
            Ok(change) if self.files.is_empty() => write!(f, "{change}"),
            Ok(change) => write!(f, "{change}: {}", self.files.join(", ")),
        }
    }
}

/// A measure of one cell (one seed) that moved while all its stages kept their keys.
#[derive(Debug, Clone, PartialEq)]
pub struct Nondeterministic {
    pub spec: String,
    pub cell: String,
    pub measure: Measure,
    pub a: f64,
    pub b: f64,
}

/// The comparison of two sides.
#[derive(Debug, Clone, Default)]
pub struct Diff {
    pub metrics: Vec<MetricDiff>,
    /// (spec, group) present only at A, only at B.
    pub only_a: Vec<(String, String)>,
    pub only_b: Vec<(String, String)>,
    /// Why keys moved, per cell group and kind, each reason once.
    pub why: Vec<Why>,
    pub nondeterministic: Vec<Nondeterministic>,
}

/// Joins the two sides' results by spec and cell group, and says why each cell's keys moved; `spec` restricts to
/// one spec name.
pub fn compare(
    a: &BTreeMap<String, Committed>,
    b: &BTreeMap<String, Committed>,
    spec: Option<&str>,
) -> Diff {
    let mut diff = Diff::default();
    let names: Vec<&String> = {
        let mut n: Vec<&String> = a.keys().chain(b.keys()).collect();
        n.sort();
        n.dedup();
        n.retain(|s| spec.is_none_or(|want| want == s.as_str()));
        n
    };
    let empty = Results::default();
    for name in names {
        if let (Some(ca), Some(cb)) = (a.get(name), b.get(name)) {
            diff.explain(name, ca, cb);
        }
        let (ra, rb) = (
            a.get(name).map_or(&empty, |c| &c.results),
            b.get(name).map_or(&empty, |c| &c.results),
        );
        let groups_a = ra.groups();
        let groups_b = rb.groups();
        for (group, rows_a) in &groups_a {
            let Some((_, rows_b)) = groups_b.iter().find(|(g, _)| g == group) else {
                diff.only_a.push((name.clone(), group.to_string()));
                continue;
            };
            for measure in Measure::ALL {
                let values = |rows: &[usize], results: &Results| -> Vec<f64> {
                    rows.iter()
                        .filter_map(|&i| results.rows[i].measure(measure))
                        .collect()
                };
                let (va, vb) = (values(rows_a, ra), values(rows_b, rb));
                // A diagnostic neither side has (the baseline's attention, or files from before diagnostics).
                if va.is_empty() && vb.is_empty() && matches!(measure, Measure::Diagnostic(_)) {
                    continue;
                }
                let welch = welch(&va, &vb).map(|w| (w.t, w.df, w.p));
                diff.metrics.push(MetricDiff {
                    spec: name.clone(),
                    group: group.to_string(),
                    measure,
                    a: va,
                    b: vb,
                    welch,
                });
            }
        }
        for (group, _) in &groups_b {
            if !groups_a.iter().any(|(g, _)| g == group) {
                diff.only_b.push((name.clone(), group.to_string()));
            }
        }
    }
    diff
}

fn side_text(measure: Measure, values: &[f64]) -> String {
    match values.is_empty() {
        true => "– (0)".into(),
        false => format!("{} ({})", measure.show(mean(values)), values.len()),
    }
}

fn p_text(m: &MetricDiff) -> String {
    match m.welch {
        Some((_, _, p)) if m.significant() => format!("{p:.3} *"),
        Some((_, _, p)) => format!("{p:.3}"),
        None => "–".into(),
    }
}

impl Diff {
    /// Adds why each cell of spec `name` present at both sides has other keys at B, and the cells whose metrics
    /// moved under unchanged keys.
    fn explain(&mut self, name: &str, a: &Committed, b: &Committed) {
        for row_b in &b.results.rows {
            let Some(row_a) = a.results.rows.iter().find(|r| r.cell == row_b.cell) else {
                continue;
            };
            let mut push = |kind: StageKind, change: Result<KeyChange, Unrecorded>| {
                let why = Why {
                    spec: name.to_string(),
                    group: row_b.group().to_string(),
                    kind,
                    change,
                    files: Vec::new(),
                };
                if !self.why.contains(&why) {
                    self.why.push(why);
                }
            };
            for (kind, change) in
                ReportKeys::moved((a.keys.as_ref(), row_a), (b.keys.as_ref(), row_b))
            {
                push(kind, change);
            }
            if row_a.train_key == row_b.train_key && row_a.eval_key == row_b.eval_key {
                for measure in Measure::ALL {
                    if let (Some(va), Some(vb)) = (row_a.measure(measure), row_b.measure(measure))
                        && va != vb
                    {
                        self.nondeterministic.push(Nondeterministic {
                            spec: name.to_string(),
                            cell: row_b.cell.clone(),
                            measure,
                            a: va,
                            b: vb,
                        });
                    }
                }
            }
        }
    }

    /// For each change of code, the files of that kind (as either side's keys.json lists them) that git says differ
    /// between the two sides.
    pub fn name_changed_files(
        &mut self,
        root: &Path,
        (side_a, a): (&Side, &BTreeMap<String, Committed>),
        (side_b, b): (&Side, &BTreeMap<String, Committed>),
    ) {
        for why in &mut self.why {
            let Ok(KeyChange::Code { kind }) = why.change else {
                continue;
            };
            let mut files: Vec<&str> = [a, b]
                .iter()
                .filter_map(|side| side.get(&why.spec)?.keys.as_ref()?.code.get(&kind))
                .flat_map(|code| code.files.iter().map(String::as_str))
                .collect();
            files.sort_unstable();
            files.dedup();
            if !files.is_empty() {
                why.files = side_b.changed_since(root, side_a, &files);
            }
        }
    }

    fn header(label_a: &str, label_b: &str) -> [String; 7] {
        [
            "spec".into(),
            "cell".into(),
            "measure".into(),
            format!("{label_a} (n)"),
            format!("{label_b} (n)"),
            "Δ".into(),
            "p (Welch)".into(),
        ]
    }

    fn lines(&self) -> Vec<[String; 7]> {
        self.metrics
            .iter()
            .map(|m| {
                [
                    m.spec.clone(),
                    m.group.clone(),
                    m.measure.to_string(),
                    side_text(m.measure, &m.a),
                    side_text(m.measure, &m.b),
                    match m.a.is_empty() || m.b.is_empty() {
                        true => "–".into(),
                        false => m.measure.show_change(m.delta()),
                    },
                    p_text(m),
                ]
            })
            .collect()
    }

    fn footer(&self, label_a: &str, label_b: &str) -> String {
        let mut out = String::new();
        let significant = self.metrics.iter().filter(|m| m.significant()).count();
        let tested = self.metrics.iter().filter(|m| m.welch.is_some()).count();
        let _ = writeln!(
            out,
            "{significant} of {tested} tested changes exceed seed noise (* = Welch's t-test p < {SIGNIFICANCE}); \
             untested (–): fewer than 2 seeds on a side. Metrics and attention shares in percent (Δ in points), \
             the other training diagnostics (last epoch) as they are."
        );
        for (which, list) in [(label_a, &self.only_a), (label_b, &self.only_b)] {
            for (spec, group) in list {
                let _ = writeln!(out, "only at {which}: {spec} {group}");
            }
        }
        if !self.why.is_empty() {
            let _ = writeln!(out, "\nwhy keys moved from {label_a} to {label_b}:");
            for w in &self.why {
                let _ = writeln!(out, "  {} {}: {}: {w}", w.spec, w.group, w.kind.name());
            }
        }
        for n in &self.nondeterministic {
            let _ = writeln!(
                out,
                "non-deterministic: {} {} {} {} → {} with the same keys",
                n.spec, n.cell, n.measure, n.a, n.b
            );
        }
        out
    }

    /// Aligned plain-text columns for a terminal.
    pub fn table(&self, label_a: &str, label_b: &str) -> String {
        let header = Self::header(label_a, label_b);
        let lines = self.lines();
        let widths: Vec<usize> = (0..7)
            .map(|i| {
                lines
                    .iter()
                    .chain(std::iter::once(&header))
                    .map(|l| l[i].chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut out = String::new();
        for line in std::iter::once(&header).chain(lines.iter()) {
            let cells: Vec<String> = line
                .iter()
                .zip(&widths)
                .enumerate()
                .map(|(i, (text, w))| {
                    let pad = w - text.chars().count();
                    if i >= 3 {
                        format!("{}{text}", " ".repeat(pad))
                    } else {
                        format!("{text}{}", " ".repeat(pad))
                    }
                })
                .collect();
            out.push_str(cells.join("  ").trim_end());
            out.push('\n');
        }
        out + &self.footer(label_a, label_b)
    }

    pub fn markdown(&self, label_a: &str, label_b: &str) -> String {
        let mut out = format!("| {} |\n", Self::header(label_a, label_b).join(" | "));
        out.push_str("|---|---|---|---:|---:|---:|---:|\n");
        for line in self.lines() {
            let _ = writeln!(out, "| {} |", line.join(" | "));
        }
        out + "\n" + &self.footer(label_a, label_b)
    }

    pub fn json(&self, label_a: &str, label_b: &str) -> Value {
        let metrics: Vec<Value> = self
            .metrics
            .iter()
            .map(|m| {
                json!({
                    "spec": m.spec, "cell": m.group, "measure": m.measure,
                    "a": {"values": m.a, "mean": mean(&m.a)},
                    "b": {"values": m.b, "mean": mean(&m.b)},
                    "delta": m.delta(),
                    "welch": m.welch.map(|(t, df, p)| json!({"t": t, "df": df, "p": p})),
                    "significant": m.significant(),
                })
            })
            .collect();
        let pairs = |v: &[(String, String)]| -> Vec<Value> {
            v.iter()
                .map(|(s, g)| json!({"spec": s, "cell": g}))
                .collect()
        };
        let why: Vec<Value> = self
            .why
            .iter()
            .map(|w| {
                json!({
                    "spec": w.spec, "cell": w.group, "kind": w.kind,
                    "reason": w.change.as_ref().ok().map(ToString::to_string), "files": w.files,
                    "text": w.to_string(),
                })
            })
            .collect();
        let nondeterministic: Vec<Value> = self
            .nondeterministic
            .iter()
            .map(
                |n| json!({"spec": n.spec, "cell": n.cell, "measure": n.measure, "a": n.a, "b": n.b}),
            )
            .collect();
        json!({
            "a": label_a, "b": label_b, "metrics": metrics,
            "only_a": pairs(&self.only_a), "only_b": pairs(&self.only_b),
            "why": why, "nondeterministic": nondeterministic,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::results::tests::table;

    #[test]
    fn joins_by_group_and_marks_significant_moves() {
        let a = table(
            &["model.head"],
            &[
                (&["mgat"], 1, 0.50, 0.30),
                (&["mgat"], 2, 0.52, 0.31),
                (&["gat"], 1, 0.40, 0.20),
            ],
        );
        let b = table(
            &["model.head"],
            &[
                (&["mgat"], 1, 0.60, 0.30),
                (&["mgat"], 2, 0.61, 0.32),
                (&["none"], 1, 0.30, 0.10),
            ],
        );
        let committed = |results| Committed {
            results,
            keys: None,
        };
        let diff = compare(
            &BTreeMap::from([("q".to_string(), committed(a))]),
            &BTreeMap::from([("q".to_string(), committed(b))]),
            None,
        );
        assert_eq!(diff.only_a, [("q".to_string(), "head=gat".to_string())]);
        assert_eq!(diff.only_b, [("q".to_string(), "head=none".to_string())]);
        let r1 = &diff.metrics[0];
        assert_eq!(
            (r1.group.as_str(), r1.measure),
            (
                "head=mgat",
                Measure::Metric(crate::spec::ReportMetric::Rank1)
            )
        );
        assert!((r1.delta() - 0.095).abs() < 1e-12);
        // By hand: var a = 0.0002, var b = 0.00005; se² = 0.0001 + 0.000025; t = 0.095 / sqrt(0.000125).
        let (t, df, p) = r1.welch.unwrap();
        assert!((t - 0.095 / 0.000125f64.sqrt()).abs() < 1e-9);
        // df = se⁴ / ((1e-4)²/1 + (2.5e-5)²/1).
        assert!((df - 0.000125f64.powi(2) / (1e-8 + 6.25e-10)).abs() < 1e-9);
        assert!(p < 0.05 && r1.significant());
        let text = diff.table("HEAD", "working tree");
        assert!(text.contains("only at HEAD: q head=gat"), "{text}");
        assert!(text.lines().nth(1).unwrap().ends_with(" *"), "{text}");
        // The last-epoch diagnostics are compared too, shown as they are: the fixture's cosine is rank-1 − 0.5.
        let cosine = diff
            .metrics
            .iter()
            .find(|m| m.measure == Measure::Diagnostic(mgat_train::Diagnostic::GraphCosine))
            .unwrap();
        assert!((cosine.delta() - 0.095).abs() < 1e-12 && cosine.significant());
        let line = text.lines().find(|l| l.contains("graph_cosine")).unwrap();
        assert!(
            line.contains("0.0100 (2)") && line.contains("+0.0950"),
            "{line}"
        );
    }
}
