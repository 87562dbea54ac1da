//! `mgat audit`'s verdicts: committed rows (results.csv and keys.json) against the same rows recomputed from scratch.
//! A row trained on the CPU must come back byte-identical (every metric and last-epoch training diagnostic as
//! results.csv writes it, the digests of its index, weights and metrics files); a row trained on a GPU may move by
//! its cell group's seed spread (the sample standard deviation of that measure over the group's committed seeds). A
//! key that moved is explained with the typed reasons `mgat explain` uses.
//!
//! [`Committed::read`] takes a spec's committed rows and the selection to audit; once the selected cells' stages
//! have run in a throwaway cache, [`verdicts`] matches each selected row with its recomputation (or its stage's
//! failure) and judges it; [`Outcome::of`] sums the verdicts up for the exit code.

use super::ReportError;
use super::keys::{ReportKeys, Unrecorded};
use super::results::{Measure, RESULTS_FILE, ResultRow, Results, format_float};
use super::stats::sample_std;
use crate::cache::Cache;
use crate::exec::RunReport;
use crate::plan::reasons::KeyChange;
use crate::plan::{Plan, StageKind};
use crate::spec::Spec;
use mgat_stage::DeviceChoice;
use mgat_util::rng::Rng;
use serde_json::{Value, json};
use std::fmt::Write as _;
use std::path::Path;

/// One value that came back different.
#[derive(Debug, Clone, PartialEq)]
pub struct Difference {
    /// A measure's name (a metric or a diagnostic), or `<kind> output` for a stage's result file.
    pub what: String,
    pub committed: String,
    pub recomputed: String,
}

/// The audit of one committed row.
#[derive(Debug, Clone, PartialEq)]
pub struct RowAudit {
    pub spec: String,
    pub cell: String,
    /// Seconds spent on the stages this row needed (shared stages count for every row that needs them).
    pub seconds: f64,
    /// Why a stage of this row has another key now; `None` when the committed keys.json cannot say.
    pub key_changes: Vec<(StageKind, Result<KeyChange, Unrecorded>)>,
    pub differences: Vec<Difference>,
    /// For a row trained on a GPU: per measure the group has, the tolerance it was held to.
    pub tolerance: Option<Vec<(Measure, f64)>>,
    /// The recomputation failed (or produced no row): the message.
    pub failed: Option<String>,
    /// The row says it was computed on a device this audit did not compute on: why it cannot be checked here.
    pub unverifiable: Option<String>,
}

impl RowAudit {
    pub fn reproduced(&self) -> bool {
        self.failed.is_none()
            && self.unverifiable.is_none()
            && self.key_changes.is_empty()
            && self.differences.is_empty()
    }

    /// Whether the row could not be checked on this machine, and nothing else was wrong with it.
    pub fn only_unverifiable(&self) -> bool {
        self.unverifiable.is_some()
            && self.failed.is_none()
            && self.key_changes.is_empty()
            && self.differences.is_empty()
    }

    pub fn verdict(&self) -> String {
        if let Some(message) = &self.failed {
            return format!("failed: {message}");
        }
        let mut parts = Vec::new();
        if !self.key_changes.is_empty() {
            let reasons: Vec<String> = self
                .key_changes
                .iter()
                .map(|(kind, change)| match change {
                    Ok(c) => format!("{}: {c}", kind.name()),
                    Err(missing) => format!(
                        "{} ({})",
                        kind.name(),
                        missing.describe("the committed report", "the recomputed report")
                    ),
                })
                .collect();
            parts.push(format!("key changed because {}", reasons.join("; ")));
        }
        if !self.differences.is_empty() {
            let shown: Vec<String> = self
                .differences
                .iter()
                .map(|d| format!("{} {} → {}", d.what, d.committed, d.recomputed))
                .collect();
            parts.push(format!("differs by {}", shown.join(", ")));
        }
        if let Some(why) = &self.unverifiable {
            parts.push(format!("not verifiable here: {why}"));
        }
        if parts.is_empty() {
            return match &self.tolerance {
                None => "reproduced byte-identically".into(),
                Some(t) => format!("reproduced within the seed spread ({})", tolerance_text(t)),
            };
        }
        parts.join("; ")
    }

    pub fn json(&self) -> Value {
        json!({
            "spec": self.spec,
            "cell": self.cell,
            "reproduced": self.reproduced(),
            "verdict": self.verdict(),
            "seconds": self.seconds,
            "key_changes": self.key_changes.iter().map(|(k, c)| json!({
                "kind": k, "reason": c.as_ref().ok().map(ToString::to_string),
            })).collect::<Vec<_>>(),
            "differences": self.differences.iter().map(|d| json!({
                "what": d.what, "committed": d.committed, "recomputed": d.recomputed,
            })).collect::<Vec<_>>(),
            "tolerance": self.tolerance.as_ref().map(|t| t.iter().map(|(m, v)| json!({"measure": m, "max_abs": v})).collect::<Vec<_>>()),
            "failed": self.failed,
            "unverifiable": self.unverifiable,
        })
    }
}

fn tolerance_text(t: &[(Measure, f64)]) -> String {
    t.iter()
        .map(|(m, v)| format!("{m} ±{}", format_float(*v)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A spec's committed report: its rows, its keys.json if committed, and the rows to audit.
pub struct Committed {
    pub results: Results,
    pub keys: Option<ReportKeys>,
    pub selected: Vec<usize>,
}

impl Committed {
    /// The committed report in `dir` (`reports/<spec>/`), with the rows `select` chooses to audit; None when it has
    /// no results.csv.
    pub fn read(
        dir: &Path,
        select: impl Fn(&Results) -> Vec<usize>,
    ) -> Result<Option<Committed>, ReportError> {
        let path = dir.join(RESULTS_FILE);
        if !path.is_file() {
            return Ok(None);
        }
        let results = Results::read(&path)?;
        let keys = ReportKeys::read_beside(dir)?;
        let selected = select(&results);
        Ok(Some(Committed {
            results,
            keys,
            selected,
        }))
    }
}

/// The verdicts on the selected rows of `mine`, the committed report of spec `spec` (index `i` of the plan's specs),
/// after the plan's stages ran in `cache` with the outcomes `ran`.
pub fn verdicts(
    spec: &Spec,
    i: usize,
    mine: &Committed,
    plan: &Plan,
    ran: &RunReport,
    cache: &Cache,
) -> Result<Vec<RowAudit>, ReportError> {
    let (recomputed, _) = Results::collect(spec, i, plan, cache)?;
    let new_keys = ReportKeys::collect(
        plan,
        i,
        recomputed.rows.iter().map(|r| r.cell.as_str()),
        cache,
    );
    let mut audits = Vec::new();
    for &r in &mine.selected {
        let row = &mine.results.rows[r];
        let planned = plan
            .cells
            .iter()
            .find(|pc| pc.spec == i && pc.cell.name == row.cell);
        let stages = planned.map(|pc| pc.stages.as_slice()).unwrap_or_default();
        let seconds: f64 = ran
            .outcomes
            .iter()
            .filter(|(s, _)| stages.contains(s))
            .filter_map(|(_, o)| match o {
                crate::exec::Outcome::Ran(d) => Some(d.as_secs_f64()),
                _ => None,
            })
            .sum();
        let audit = match recomputed.rows.iter().find(|n| n.cell == row.cell) {
            Some(again) => {
                let group: Vec<_> = mine
                    .results
                    .rows
                    .iter()
                    .filter(|o| o.group() == row.group())
                    .collect();
                let committed = RowSide {
                    row,
                    keys: mine.keys.as_ref(),
                };
                let recomputed = RowSide {
                    row: again,
                    keys: Some(&new_keys),
                };
                audit_row(&spec.name, &committed, &recomputed, &group, seconds)
            }
            None => RowAudit {
                spec: spec.name.clone(),
                cell: row.cell.clone(),
                seconds,
                key_changes: Vec::new(),
                differences: Vec::new(),
                tolerance: None,
                failed: Some(match planned {
                    None => "the spec has no such cell any more".to_string(),
                    Some(_) => ran
                        .failed()
                        .find(|(s, ..)| stages.contains(s))
                        .map(|(_, message, _)| {
                            message.lines().next().unwrap_or_default().to_string()
                        })
                        .unwrap_or_else(|| "no result came back".into()),
                }),
                unverifiable: None,
            },
        };
        audits.push(audit);
    }
    Ok(audits)
}

/// What an audit comes to, for its exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Every row reproduced.
    Reproduced,
    /// Every row reproduced except rows that name a device this machine did not compute on (never counted as
    /// reproduced).
    NotVerifiableHere,
    /// Some row did not reproduce.
    Differs,
}

impl Outcome {
    pub fn of(audits: &[RowAudit]) -> Outcome {
        if audits.iter().all(RowAudit::reproduced) {
            Outcome::Reproduced
        } else if audits
            .iter()
            .all(|a| a.reproduced() || a.only_unverifiable())
        {
            Outcome::NotVerifiableHere
        } else {
            Outcome::Differs
        }
    }
}

/// The rows to audit: those whose cell matches `select` (all when None), then a sample of `sample` of them drawn
/// with `seed`, kept in file order.
pub fn select_rows(
    results: &Results,
    matches: impl Fn(&str) -> bool,
    sample: Option<usize>,
    seed: u64,
) -> Vec<usize> {
    let mut rows: Vec<usize> = (0..results.rows.len())
        .filter(|&i| matches(&results.rows[i].cell))
        .collect();
    if let Some(n) = sample.filter(|&n| n < rows.len()) {
        Rng::new(seed, &[0x617564]).shuffle(&mut rows);
        rows.truncate(n);
        rows.sort_unstable();
    }
    rows
}

/// What one side (committed or recomputed) knows about a row.
pub struct RowSide<'a> {
    pub row: &'a ResultRow,
    pub keys: Option<&'a ReportKeys>,
}

/// Compares a committed row with its recomputation. `group` is the committed rows of the same cell group (for a
/// GPU row's tolerance).
pub fn audit_row(
    spec: &str,
    committed: &RowSide,
    recomputed: &RowSide,
    group: &[&ResultRow],
    seconds: f64,
) -> RowAudit {
    let cell = committed.row.cell.clone();
    let mut audit = RowAudit {
        spec: spec.to_string(),
        cell: cell.clone(),
        seconds,
        key_changes: Vec::new(),
        differences: Vec::new(),
        tolerance: None,
        failed: None,
        unverifiable: None,
    };
    audit.key_changes = ReportKeys::moved(
        (committed.keys, committed.row),
        (recomputed.keys, recomputed.row),
    );
    audit.differences = row_key_differences(committed.row, recomputed.row, &audit.key_changes);
    // Another CPU class rounds products differently: the row's numbers cannot be checked here, which is not a
    // difference; any other reason its keys moved still is.
    if let Some(why) = other_cpu_class(&mut audit.key_changes) {
        audit.unverifiable = Some(why);
        return audit;
    }
    // The device column is a claim: checked only where the recomputation ran on the device the row names.
    let (claimed, here) = (committed.row.device, recomputed.row.device);
    if claimed != here {
        audit.unverifiable = Some(format!(
            "the row says it trained on {claimed}, and this audit trained on {here}"
        ));
    } else if claimed == DeviceChoice::Cpu {
        audit
            .differences
            .extend(exact_differences(committed, recomputed));
    } else {
        let tolerance = seed_spread(group);
        audit.differences.extend(metric_differences(
            committed.row,
            recomputed.row,
            &tolerance,
        ));
        audit.tolerance = Some(tolerance);
    }
    audit
}

/// Where a stage's key moved because this machine's CPU class is not the one the row was computed on: why the row
/// cannot be verified here. That change, and what follows from it downstream (an input whose bytes differ because
/// its stage rounded differently), leave `changes`; every other reason stays.
fn other_cpu_class(
    changes: &mut Vec<(StageKind, Result<KeyChange, Unrecorded>)>,
) -> Option<String> {
    let mut rounded = Vec::new();
    let mut classes = None;
    for (kind, change) in changes.iter() {
        if let Ok(KeyChange::Numerics { from, to }) = change {
            rounded.push(*kind);
            classes.get_or_insert((from.clone(), to.clone()));
        }
    }
    let (from, to) = classes?;
    changes.retain(|(_, change)| match change {
        Ok(KeyChange::Numerics { .. }) => false,
        Ok(KeyChange::UpstreamOutput { kind }) => !rounded.contains(kind),
        _ => true,
    });
    let show = |class: Option<String>| class.unwrap_or_else(|| "none".into());
    Some(format!(
        "the row was computed on CPU class {}, and this machine is {} (its floating-point products round \
         differently; `mgat fingerprint --cpu-class` names a machine's class)",
        show(from),
        show(to)
    ))
}

/// The keys and lock digest the committed row names against the recomputed row's, where keys.json's reasons do
/// not already account for them: a row whose keys were replaced by hand never passes.
fn row_key_differences(
    committed: &ResultRow,
    recomputed: &ResultRow,
    explained: &[(StageKind, Result<KeyChange, Unrecorded>)],
) -> Vec<Difference> {
    let explained = |kind: StageKind| explained.iter().any(|(k, _)| *k == kind);
    let mut out = Vec::new();
    let mut compare = |what: &str, a: String, b: String| {
        if a != b {
            out.push(Difference {
                what: what.into(),
                committed: a,
                recomputed: b,
            });
        }
    };
    if !explained(StageKind::Train) {
        compare(
            "train_key",
            committed.train_key.to_string(),
            recomputed.train_key.to_string(),
        );
    }
    if !explained(StageKind::Eval) {
        compare(
            "eval_key",
            committed.eval_key.to_string(),
            recomputed.eval_key.to_string(),
        );
    }
    compare(
        "lock_digest",
        committed.lock_digest.clone(),
        recomputed.lock_digest.clone(),
    );
    out
}

/// A measure as results.csv writes it (empty where the row has none).
fn shown(value: Option<f64>) -> String {
    value.map(format_float).unwrap_or_default()
}

/// Every measure as results.csv writes it, and the digest of every stage's result file the committed keys.json
/// records.
fn exact_differences(committed: &RowSide, recomputed: &RowSide) -> Vec<Difference> {
    let mut out: Vec<Difference> = Measure::ALL
        .into_iter()
        .filter_map(|measure| {
            let (x, y) = (
                committed.row.measure(measure),
                recomputed.row.measure(measure),
            );
            let (a, b) = (shown(x), shown(y));
            // NaN never reproduces, not even NaN.
            let nan = x.is_some_and(f64::is_nan) || y.is_some_and(f64::is_nan);
            (a != b || nan).then(|| Difference {
                what: measure.to_string(),
                committed: a,
                recomputed: b,
            })
        })
        .collect();
    if let (Some(old), Some(new)) = (committed.keys, recomputed.keys) {
        for kind in StageKind::ALL {
            let output = |keys: &ReportKeys| {
                keys.stage(&committed.row.cell, kind)
                    .and_then(|(_, r)| r.output.clone())
            };
            if let (Some(a), Some(b)) = (output(old), output(new))
                && a != b
            {
                out.push(Difference {
                    what: format!("{} output", kind.name()),
                    committed: a,
                    recomputed: b,
                });
            }
        }
    }
    out
}

/// Per measure that some row of `group` has, the sample standard deviation over the group's rows (0 with fewer
/// than two).
fn seed_spread(group: &[&ResultRow]) -> Vec<(Measure, f64)> {
    Measure::ALL
        .into_iter()
        .filter_map(|measure| {
            let values: Vec<f64> = group.iter().filter_map(|r| r.measure(measure)).collect();
            // NaN for fewer than two seeds: no spread, so no tolerance.
            let spread = sample_std(&values);
            (!values.is_empty()).then_some((measure, if spread.is_nan() { 0.0 } else { spread }))
        })
        .collect()
}

/// The measures that moved by more than their tolerance.
fn metric_differences(
    a: &ResultRow,
    b: &ResultRow,
    tolerance: &[(Measure, f64)],
) -> Vec<Difference> {
    tolerance
        .iter()
        .filter_map(|&(measure, tol)| {
            let moved = match (a.measure(measure), b.measure(measure)) {
                // NaN never passes: `(x - y).abs() > tol` is false for it.
                (Some(x), Some(y)) => x.is_nan() || y.is_nan() || (x - y).abs() > tol,
                (x, y) => x.is_some() != y.is_some(),
            };
            moved.then(|| Difference {
                what: measure.to_string(),
                committed: shown(a.measure(measure)),
                recomputed: shown(b.measure(measure)),
            })
        })
        .collect()
}

/// The audit as an aligned table: row, verdict, seconds; and a last line with the count.
pub fn table(audits: &[RowAudit]) -> String {
    let width = audits
        .iter()
        .map(|a| a.spec.chars().count() + 1 + a.cell.chars().count())
        .max()
        .unwrap_or(0)
        .max(3);
    let mut out = format!("{:<width$}  {:>8}  verdict\n", "row", "seconds");
    for a in audits {
        let row = format!("{} {}", a.spec, a.cell);
        let _ = writeln!(out, "{row:<width$}  {:>8.1}  {}", a.seconds, a.verdict());
    }
    let reproduced = audits.iter().filter(|a| a.reproduced()).count();
    let _ = writeln!(out, "{reproduced} of {} rows reproduced", audits.len());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::results::tests::table as results_table;
    use crate::spec::ReportMetric;

    fn side(row: &ResultRow) -> RowSide<'_> {
        RowSide { row, keys: None }
    }

    /// keys.json for `row` alone: its train and eval stages recorded with `class` as their CPU class and, for the
    /// train stage, `salt` as the spec's version salt; the row's keys set to the records'.
    fn keyed(row: &mut ResultRow, class: &str, salt: &str) -> crate::report::keys::ReportKeys {
        use crate::plan::KeyInputs;
        use crate::report::keys::{ReportKeys, StageRecord};
        let mut keys = ReportKeys {
            format: crate::report::keys::KEYS_FORMAT,
            ..ReportKeys::default()
        };
        let mut train = KeyInputs::for_tests(StageKind::Train);
        train.numerics = Some(class.into());
        train.version = Some(salt.into());
        let mut eval = KeyInputs::for_tests(StageKind::Eval);
        eval.numerics = Some(class.into());
        eval.upstream
            .insert(StageKind::Train, format!("weights on {class}"));
        let mut cell = std::collections::BTreeMap::new();
        for (kind, inputs) in [(StageKind::Train, train), (StageKind::Eval, eval)] {
            let key = inputs.key();
            match kind {
                StageKind::Train => row.train_key = key.clone(),
                _ => row.eval_key = key.clone(),
            }
            cell.insert(kind, key.clone());
            keys.stages.insert(
                key,
                StageRecord {
                    kind,
                    inputs,
                    output: None,
                },
            );
        }
        keys.cells.insert(row.cell.clone(), cell);
        keys
    }

    #[test]
    fn a_row_from_another_cpu_class_is_not_verifiable_here_unless_something_else_moved() {
        let committed = rows();
        let mut old = committed.rows[0].clone();
        let old_keys = keyed(&mut old, "cpu-aaaa", "v1");
        let mut here = old.clone();
        let here_keys = keyed(&mut here, "cpu-bbbb", "v1");
        // Other bits: the metrics moved too, as they do on another CPU.
        here.metrics[ReportMetric::Rank1] = Some(0.49);
        let audit = |old_keys, here: &ResultRow, here_keys| {
            audit_row(
                "q",
                &RowSide {
                    row: &old,
                    keys: Some(old_keys),
                },
                &RowSide {
                    row: here,
                    keys: Some(here_keys),
                },
                &[],
                1.0,
            )
        };
        let other_class = audit(&old_keys, &here, &here_keys);
        assert!(other_class.only_unverifiable(), "{}", other_class.verdict());
        assert!(
            other_class.verdict().starts_with(
                "not verifiable here: the row was computed on CPU class cpu-aaaa, and this machine is cpu-bbbb"
            ),
            "{}",
            other_class.verdict()
        );
        assert_eq!(Outcome::of(&[other_class]), Outcome::NotVerifiableHere);
        // A change besides the class (here the spec's version salt) is still a change.
        let mut salted = old.clone();
        let salted_keys = keyed(&mut salted, "cpu-bbbb", "v2");
        let both = audit(&old_keys, &salted, &salted_keys);
        assert!(!both.only_unverifiable(), "{}", both.verdict());
        assert!(both.verdict().contains("salt"), "{}", both.verdict());
    }

    fn rows() -> Results {
        results_table(
            &["model.head"],
            &[
                (&["mgat"], 1, 0.50, 0.30),
                (&["mgat"], 2, 0.54, 0.31),
                (&["mgat"], 3, 0.52, 0.35),
            ],
        )
    }

    #[test]
    fn a_cpu_row_must_match_to_the_last_written_digit() {
        let committed = rows();
        let mut again = committed.rows[0].clone();
        let same = audit_row("q", &side(&committed.rows[0]), &side(&again), &[], 1.0);
        assert!(same.reproduced(), "{}", same.verdict());
        assert_eq!(same.verdict(), "reproduced byte-identically");
        // Compared as results.csv writes them.
        let csv = String::from_utf8(committed.to_csv().unwrap()).unwrap();
        assert!(csv.contains(&format!(",{},", format_float(0.5))), "{csv}");
        // Below results.csv's precision: the same row.
        again.metrics[ReportMetric::Rank1] = Some(0.5000001);
        assert!(audit_row("q", &side(&committed.rows[0]), &side(&again), &[], 1.0).reproduced());
        again.metrics[ReportMetric::Rank1] = Some(0.500002);
        let moved = audit_row("q", &side(&committed.rows[0]), &side(&again), &[], 1.0);
        assert!(!moved.reproduced());
        assert_eq!(moved.verdict(), "differs by rank1 0.500000 → 0.500002");
        again.train_key = crate::report::results::tests::test_key(99);
        let keyed = audit_row("q", &side(&committed.rows[0]), &side(&again), &[], 1.0);
        assert!(
            keyed
                .verdict()
                .starts_with("key changed because train (neither side has a keys.json to say why)"),
            "{}",
            keyed.verdict()
        );
    }

    #[test]
    fn a_gpu_row_may_move_by_its_groups_seed_spread() {
        let mut committed = rows();
        for r in &mut committed.rows {
            r.device = DeviceChoice::Cuda(0);
        }
        let group: Vec<&ResultRow> = committed.rows.iter().collect();
        // rank1 over seeds 0.50, 0.54, 0.52: sample std 0.02.
        let mut again = committed.rows[0].clone();
        again.metrics[ReportMetric::Rank1] = Some(0.519);
        let within = audit_row("q", &side(&committed.rows[0]), &side(&again), &group, 1.0);
        assert!(within.reproduced(), "{}", within.verdict());
        let tolerance = |audit: &RowAudit, measure: Measure| {
            let found = audit
                .tolerance
                .as_ref()
                .unwrap()
                .iter()
                .find(|(m, _)| *m == measure);
            found.map(|(_, t)| *t).unwrap()
        };
        assert!((tolerance(&within, Measure::Metric(ReportMetric::Rank1)) - 0.02).abs() < 1e-12);
        // The diagnostics are held to their own spread: cos(X′, G) is rank-1 − 0.5 in the fixture.
        let cosine = Measure::Diagnostic(mgat_train::Diagnostic::GraphCosine);
        assert!((tolerance(&within, cosine) - 0.02).abs() < 1e-12);
        if let Some(d) = &mut again.diagnostics {
            d.graph_cosine += 0.05;
        }
        let turned = audit_row("q", &side(&committed.rows[0]), &side(&again), &group, 1.0);
        assert_eq!(
            turned.differences[0].what,
            "graph_cosine",
            "{}",
            turned.verdict()
        );
        again = committed.rows[0].clone();
        again.metrics[ReportMetric::Rank1] = Some(0.521);
        let outside = audit_row("q", &side(&committed.rows[0]), &side(&again), &group, 1.0);
        assert_eq!(outside.differences[0].what, "rank1");
    }

    #[test]
    fn a_device_claim_is_checked_only_where_it_was_computed_and_nan_never_passes() {
        let mut committed = rows();
        committed.rows[0].device = DeviceChoice::Cuda(0);
        let group: Vec<&ResultRow> = committed.rows.iter().collect();
        let mut here = committed.rows[0].clone();
        here.device = DeviceChoice::Cpu;
        let claimed = audit_row("q", &side(&committed.rows[0]), &side(&here), &group, 1.0);
        assert!(!claimed.reproduced() && claimed.only_unverifiable());
        assert_eq!(
            claimed.verdict(),
            "not verifiable here: the row says it trained on cuda:0, and this audit trained on cpu"
        );
        // NaN on both sides, on the CPU and within any GPU tolerance: never reproduced.
        let mut nan = rows();
        nan.rows[0].metrics[ReportMetric::Map] = Some(f64::NAN);
        let same = nan.rows[0].clone();
        let on_cpu = audit_row("q", &side(&nan.rows[0]), &side(&same), &[], 1.0);
        assert_eq!(on_cpu.differences[0].what, "mAP", "{}", on_cpu.verdict());
        for r in &mut nan.rows {
            r.device = DeviceChoice::Cuda(0);
        }
        let group: Vec<&ResultRow> = nan.rows.iter().collect();
        let same = nan.rows[0].clone();
        assert!(!audit_row("q", &side(&nan.rows[0]), &side(&same), &group, 1.0).reproduced());
    }

    #[test]
    fn a_row_whose_lock_digest_was_replaced_does_not_reproduce() {
        let committed = rows();
        let mut forged = committed.rows[0].clone();
        forged.lock_digest = "sha256:ff".into();
        let audit = audit_row("q", &side(&forged), &side(&committed.rows[0]), &[], 1.0);
        assert_eq!(
            audit.verdict(),
            "differs by lock_digest sha256:ff → sha256:00"
        );
    }

    #[test]
    fn a_sample_is_seeded_in_file_order_and_a_pattern_selects() {
        let results = rows();
        let a = select_rows(&results, |_| true, Some(2), 1);
        assert_eq!(a, select_rows(&results, |_| true, Some(2), 1));
        assert_eq!(a.len(), 2);
        assert!(a[0] < a[1]);
        let drawn: std::collections::BTreeSet<Vec<usize>> = (0..20)
            .map(|s| select_rows(&results, |_| true, Some(2), s))
            .collect();
        assert!(drawn.len() > 1, "the seed changes the sample");
        assert_eq!(
            select_rows(&results, |c| c.ends_with("seed=2"), None, 0),
            [1]
        );
        assert_eq!(select_rows(&results, |_| true, Some(10), 0), [0, 1, 2]);
    }
}
