//! `results.csv`: one row per evaluated cell, gathered from the cache (eval metrics, train figures, provenance),
//! written and read with polars. Rows keep the spec's cell order and floats a fixed precision, so unchanged results
//! rewrite a byte-identical file.

use super::ReportError;
use crate::cache::Cache;
use crate::plan::{Plan, StageKey, StageKind};
use crate::spec::{PerMetric, ReportMetric, Spec, format_value, get_path, group_name};
use mgat_stage::DeviceChoice;
use mgat_train::{Diagnostic, Diagnostics};
use polars::prelude::*;
use std::collections::HashMap;
use std::io::Cursor;
use std::path::Path;

pub const RESULTS_FILE: &str = "results.csv";
/// Decimal places of every float column.
const FLOAT_DIGITS: usize = 6;

/// A float as results.csv writes it.
pub fn format_float(value: f64) -> String {
    format!("{value:.FLOAT_DIGITS$}")
}

/// One evaluated cell.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ResultRow {
    pub cell: String,
    /// One value per [`Results::axes`], as the cell name writes it; where the cell does not set that axis (a path
    /// only `include` entries set), the value its configuration has there.
    pub axes: Vec<String>,
    pub seed: u64,
    pub dataset: String,
    pub lock_digest: String,
    pub train_key: StageKey,
    pub eval_key: StageKey,
    /// A rank beyond the evaluation's `max_rank` is None (empty in the CSV).
    pub metrics: PerMetric<Option<f64>>,
    /// The train stage's last-epoch diagnostics; None in a results.csv written before mgat recorded them.
    pub diagnostics: Option<Diagnostics>,
    pub train_seconds: f64,
    pub images_per_s: f64,
    /// Where the train stage ran (`cpu`, `cuda:N`).
    pub device: DeviceChoice,
    pub git_commit: String,
    pub git_dirty: bool,
}

impl ResultRow {
    /// The cell name without its seed: what seeds are averaged over.
    pub fn group(&self) -> &str {
        group_name(&self.cell)
    }

    pub fn metric(&self, metric: ReportMetric) -> Option<f64> {
        self.metrics[metric]
    }

    /// The row's value of `measure` (none where the row has none).
    pub fn measure(&self, measure: Measure) -> Option<f64> {
        match measure {
            Measure::Metric(m) => self.metrics[m],
            Measure::Diagnostic(d) => d.of(self.diagnostics.as_ref()?),
        }
    }

    /// The value of `axis` in this row, if the results have that axis.
    pub fn axis<'a>(&'a self, axes: &[String], axis: &str) -> Option<&'a str> {
        axes.iter()
            .position(|a| a == axis)
            .map(|i| self.axes[i].as_str())
    }
}

/// A number a results row has: an evaluation metric, or one of the train stage's last-epoch diagnostics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Measure {
    Metric(ReportMetric),
    Diagnostic(Diagnostic),
}

impl Measure {
    /// Every measure, in results.csv's column order: [`ReportMetric::ALL`], then [`Diagnostic::ALL`].
    pub const ALL: [Measure; ReportMetric::ALL.len() + Diagnostic::ALL.len()] = {
        let metrics = ReportMetric::ALL.len();
        let mut all =
            [Measure::Metric(ReportMetric::Rank1); ReportMetric::ALL.len() + Diagnostic::ALL.len()];
        let mut i = 0;
        while i < all.len() {
            all[i] = match i < metrics {
                true => Measure::Metric(ReportMetric::ALL[i]),
                false => Measure::Diagnostic(Diagnostic::ALL[i - metrics]),
            };
            i += 1;
        }
        all
    };

    /// Its column in results.csv.
    pub fn name(self) -> &'static str {
        match self {
            Measure::Metric(m) => m.name(),
            Measure::Diagnostic(d) => d.name(),
        }
    }

    /// Whether tables show it in percent: the metrics and the attention shares (fractions of 1); lengths, the
    /// relative change and the cosine are shown as they are.
    pub fn percent(self) -> bool {
        match self {
            Measure::Metric(_) => true,
            Measure::Diagnostic(d) => d.needs_graph(),
        }
    }

    /// What tables multiply it by: 100 for what they show in percent, else 1.
    pub fn scale(self) -> f64 {
        if self.percent() { 100.0 } else { 1.0 }
    }

    /// Its column heading: its label, with ` (%)` where tables show it in percent.
    pub fn heading(self) -> String {
        let label = match self {
            Measure::Metric(m) => m.label(),
            Measure::Diagnostic(d) => d.label(),
        };
        match self.percent() {
            true => format!("{label} (%)"),
            false => label.to_string(),
        }
    }

    /// `value` as tables show it: percent with two decimals, or the value with four.
    pub fn show(self, value: f64) -> String {
        match self.percent() {
            true => format!("{:.2}", value * 100.0),
            false => format!("{value:.4}"),
        }
    }

    /// A difference of two values as tables show it: [`Measure::show`] with its sign.
    pub fn show_change(self, delta: f64) -> String {
        match self.percent() {
            true => format!("{:+.2}", delta * 100.0),
            false => format!("{delta:+.4}"),
        }
    }
}

impl std::fmt::Display for Measure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl serde::Serialize for Measure {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

/// A results table: the axis columns and the rows.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize)]
pub struct Results {
    pub axes: Vec<String>,
    pub rows: Vec<ResultRow>,
}

/// Columns a results.csv must have besides `cell` and the axes (which sit between `cell` and `seed`): these, one
/// per [`ReportMetric`], then [`REQUIRED_AFTER_METRICS`].
const REQUIRED_BEFORE_METRICS: [&str; 5] =
    ["seed", "dataset", "lock_digest", "train_key", "eval_key"];
const REQUIRED_AFTER_METRICS: [&str; 5] = [
    "train_seconds",
    "images_per_s",
    "device",
    "git_commit",
    "git_dirty",
];

/// Every column a results.csv must have, in file order, axes and diagnostics left out (the diagnostics sit between
/// the metrics and [`REQUIRED_AFTER_METRICS`]).
fn required_columns() -> impl Iterator<Item = &'static str> {
    std::iter::once("cell")
        .chain(REQUIRED_BEFORE_METRICS)
        .chain(ReportMetric::ALL.map(ReportMetric::name))
        .chain(REQUIRED_AFTER_METRICS)
}

/// The widest results.csv read: a column per grid axis (a spec has a few; its configuration has about 40 settings)
/// and the fixed ones.
pub const MAX_COLUMNS: usize = 256;

impl Results {
    /// Rows for every cell of `spec` (planned as spec number `spec_index` of `plan`) whose eval stage is cached,
    /// in spec order, and the names of the cells without one.
    pub fn collect(
        spec: &Spec,
        spec_index: usize,
        plan: &Plan,
        cache: &Cache,
    ) -> Result<(Results, Vec<String>), ReportError> {
        let mut results = Results {
            axes: spec.report.axes.clone(),
            rows: Vec::new(),
        };
        let mut missing = Vec::new();
        for pc in plan.cells.iter().filter(|pc| pc.spec == spec_index) {
            let eval = plan.cell_stage(pc, StageKind::Eval);
            let train = eval.and_then(|e| plan.input(e, StageKind::Train));
            let keys = (
                eval.and_then(|e| e.key.as_ref()),
                train.and_then(|t| t.key.as_ref()),
            );
            let (Some(eval), (Some(eval_key), Some(train_key))) = (eval, keys) else {
                missing.push(pc.cell.name.clone());
                continue;
            };
            // Both entries' files are checked against their manifests; a damaged one is quarantined (and runs
            // again with the next `mgat run`), so the cell shows as not run.
            let entries = (
                cache.trusted(StageKind::Eval, eval_key)?,
                cache.trusted(StageKind::Train, train_key)?,
            );
            let (Some(eval_manifest), Some(train_manifest)) = entries else {
                missing.push(pc.cell.name.clone());
                continue;
            };
            let metrics =
                mgat_eval::stage::read_metrics(&cache.entry_dir(StageKind::Eval, eval_key))
                    .map_err(|e| ReportError::Cache {
                        path: e.path,
                        message: e.message,
                    })?;
            let no_summary = |what: &str| ReportError::Cache {
                path: cache.entry_dir(StageKind::Train, train_key),
                message: format!("the manifest holds no {what}"),
            };
            let summary = train_manifest
                .summary
                .read::<mgat_train::stage::Train>()
                .ok_or_else(|| no_summary("train summary"))?;
            let diagnostics = summary
                .final_diagnostics
                .ok_or_else(|| no_summary("last-epoch diagnostics"))?;
            // Serialised only for a cell that leaves an axis unset (this runs on every no-op rerun).
            let config = std::cell::OnceCell::new();
            let axes = results
                .axes
                .iter()
                .map(|a| {
                    pc.cell
                        .axes
                        .iter()
                        .find(|(p, _)| p == a)
                        .map(|(_, v)| v)
                        .or_else(|| {
                            let config = config.get_or_init(|| {
                                serde_yaml::to_value(&pc.cell.config).unwrap_or_default()
                            });
                            get_path(config, a)
                        })
                        .map(format_value)
                        .unwrap_or_default()
                })
                .collect();
            results.rows.push(ResultRow {
                cell: pc.cell.name.clone(),
                axes,
                seed: pc.cell.seed(),
                dataset: eval.dataset.clone(),
                lock_digest: eval.inputs.lock_digest.clone().unwrap_or_default(),
                train_key: train_key.clone(),
                eval_key: eval_key.clone(),
                metrics: PerMetric::from_fn(|m| m.of(&metrics)),
                diagnostics: Some(diagnostics),
                train_seconds: summary.train_seconds,
                images_per_s: summary.images_per_s,
                device: train_manifest.device,
                git_commit: eval_manifest.git.commit.clone().unwrap_or_default(),
                git_dirty: eval_manifest.git.dirty,
            });
        }
        Ok((results, missing))
    }

    /// The table as a polars frame, columns in file order.
    pub fn to_frame(&self) -> PolarsResult<DataFrame> {
        let strings = |name: &str, f: &dyn Fn(&ResultRow) -> String| {
            Column::new(
                name.into(),
                self.rows.iter().map(f).collect::<Vec<String>>(),
            )
        };
        let floats = |name: &str, f: &dyn Fn(&ResultRow) -> f64| {
            Column::new(name.into(), self.rows.iter().map(f).collect::<Vec<f64>>())
        };
        let mut columns = vec![strings("cell", &|r| r.cell.clone())];
        for (i, axis) in self.axes.iter().enumerate() {
            columns.push(strings(axis, &|r| r.axes[i].clone()));
        }
        columns.push(Column::new(
            "seed".into(),
            self.rows.iter().map(|r| r.seed).collect::<Vec<u64>>(),
        ));
        columns.push(strings("dataset", &|r| r.dataset.clone()));
        columns.push(strings("lock_digest", &|r| r.lock_digest.clone()));
        columns.push(strings("train_key", &|r| r.train_key.to_string()));
        columns.push(strings("eval_key", &|r| r.eval_key.to_string()));
        for m in ReportMetric::ALL {
            let values: Vec<Option<f64>> = self.rows.iter().map(|r| r.metrics[m]).collect();
            columns.push(Column::new(m.name().into(), values));
        }
        for d in Diagnostic::ALL {
            let values: Vec<Option<f64>> = self
                .rows
                .iter()
                .map(|r| r.measure(Measure::Diagnostic(d)))
                .collect();
            columns.push(Column::new(d.name().into(), values));
        }
        columns.push(floats("train_seconds", &|r| r.train_seconds));
        columns.push(floats("images_per_s", &|r| r.images_per_s));
        columns.push(strings("device", &|r| r.device.to_string()));
        columns.push(strings("git_commit", &|r| r.git_commit.clone()));
        columns.push(Column::new(
            "git_dirty".into(),
            self.rows.iter().map(|r| r.git_dirty).collect::<Vec<bool>>(),
        ));
        DataFrame::new(self.rows.len(), columns)
    }

    /// The CSV text: header, one line per row, `\n` line ends, floats with six decimals.
    pub fn to_csv(&self) -> PolarsResult<Vec<u8>> {
        let mut frame = self.to_frame()?;
        let mut out = Vec::new();
        CsvWriter::new(&mut out)
            .include_header(true)
            .with_float_precision(Some(FLOAT_DIGITS))
            .with_float_scientific(Some(false))
            .finish(&mut frame)?;
        Ok(out)
    }

    /// Parses a results.csv; `origin` (a path, or `REV:path`) names it in errors.
    /// Parses a results.csv; a header wider than [`MAX_COLUMNS`] is refused before the CSV reader sees it (a
    /// million columns took 685 MB to parse).
    pub fn parse(bytes: &[u8], origin: &str) -> Result<Results, ReportError> {
        let bad = |message: String| ReportError::Results {
            origin: origin.to_string(),
            message,
        };
        let header = bytes.split(|&b| b == b'\n').next().unwrap_or_default();
        let columns = header.iter().filter(|&&b| b == b',').count() + 1;
        if columns > MAX_COLUMNS {
            return Err(bad(format!(
                "its header has {columns} columns; a results.csv has one per grid axis besides its fixed ones, at \
                 most {MAX_COLUMNS} in all"
            )));
        }
        let frame = CsvReadOptions::default()
            .with_has_header(true)
            .with_infer_schema_length(Some(0))
            .into_reader_with_file_handle(Cursor::new(bytes.to_vec()))
            .finish()
            .map_err(|e| bad(e.to_string()))?;
        let names: Vec<String> = frame
            .get_column_names()
            .iter()
            .map(|n| n.to_string())
            .collect();
        let seed_at = names
            .iter()
            .position(|n| n == "seed")
            .ok_or_else(|| bad("no `seed` column".into()))?;
        if names.first().map(String::as_str) != Some("cell") {
            return Err(bad("the first column must be `cell`".into()));
        }
        let axes = names[1..seed_at].to_vec();
        let text = |name: &str| -> Result<Vec<String>, ReportError> {
            let column = frame
                .column(name)
                .map_err(|_| bad(format!("no `{name}` column")))?;
            let values = column.str().map_err(|e| bad(e.to_string()))?;
            Ok(values
                .iter()
                .map(|v| v.unwrap_or_default().to_string())
                .collect())
        };
        let mut columns: HashMap<&str, Vec<String>> = HashMap::new();
        for name in required_columns() {
            columns.insert(name, text(name)?);
        }
        let axis_values: Vec<Vec<String>> =
            axes.iter().map(|a| text(a)).collect::<Result<_, _>>()?;
        // The diagnostics came later: a file has all of them or (written before them) none.
        if Diagnostic::ALL
            .iter()
            .any(|d| names.iter().any(|n| n == d.name()))
        {
            for d in Diagnostic::ALL {
                columns.insert(d.name(), text(d.name())?);
            }
        }
        let rows = (0..frame.height())
            .map(|i| {
                let get = |name: &str| columns[name][i].as_str();
                let line = i + 2;
                let float = |name: &str| -> Result<f64, ReportError> {
                    let v = get(name);
                    v.parse::<f64>().map_err(|_| {
                        bad(format!(
                            "line {line}, column `{name}`: `{v}` is not a number"
                        ))
                    })
                };
                let key = |name: &str| -> Result<StageKey, ReportError> {
                    StageKey::parse(get(name))
                        .map_err(|e| bad(format!("line {line}, column `{name}`: {e}")))
                };
                let optional = |name: &str| match get(name) {
                    "" => Ok(None),
                    _ => float(name).map(Some),
                };
                let mut metrics = PerMetric::from_fn(|_| None);
                for m in ReportMetric::ALL {
                    metrics[m] = optional(m.name())?;
                }
                let diagnostics = match columns.contains_key(Diagnostic::FeatureNorm.name()) {
                    false => None,
                    true => {
                        let required = |d: Diagnostic| {
                            optional(d.name())?.ok_or_else(|| {
                                bad(format!("line {line}, column `{}` is empty", d.name()))
                            })
                        };
                        Some(Diagnostics {
                            feature_norm: required(Diagnostic::FeatureNorm)?,
                            refined_norm: required(Diagnostic::RefinedNorm)?,
                            same_identity_attention: optional(
                                Diagnostic::SameIdentityAttention.name(),
                            )?,
                            offdiag_attention: optional(Diagnostic::OffdiagAttention.name())?,
                            graph_change: required(Diagnostic::GraphChange)?,
                            graph_cosine: required(Diagnostic::GraphCosine)?,
                        })
                    }
                };
                Ok(ResultRow {
                    cell: get("cell").to_string(),
                    axes: axis_values.iter().map(|v| v[i].clone()).collect(),
                    seed: get("seed").parse().map_err(|_| {
                        bad(format!(
                            "line {line}, column `seed`: `{}` is not a seed",
                            get("seed")
                        ))
                    })?,
                    dataset: get("dataset").to_string(),
                    lock_digest: get("lock_digest").to_string(),
                    train_key: key("train_key")?,
                    eval_key: key("eval_key")?,
                    metrics,
                    diagnostics,
                    train_seconds: float("train_seconds")?,
                    images_per_s: float("images_per_s")?,
                    device: get("device")
                        .parse()
                        .map_err(|e: String| bad(format!("line {line}, column `device`: {e}")))?,
                    git_commit: get("git_commit").to_string(),
                    git_dirty: get("git_dirty") == "true",
                })
            })
            .collect::<Result<Vec<_>, ReportError>>()?;
        // A cell named twice (what a bad merge leaves) would count as another seed in every statistic.
        let mut first_line: HashMap<&str, usize> = HashMap::new();
        for (i, row) in rows.iter().enumerate() {
            if let Some(first) = first_line.insert(row.cell.as_str(), i + 2) {
                return Err(bad(format!(
                    "line {}: cell `{}` is already on line {first}; a cell has one row (a bad merge?)",
                    i + 2,
                    row.cell
                )));
            }
        }
        Ok(Results { axes, rows })
    }

    /// Row indices per cell group (cell without seed), groups in row order.
    pub fn groups(&self) -> Vec<(&str, Vec<usize>)> {
        let mut out: Vec<(&str, Vec<usize>)> = Vec::new();
        for (i, r) in self.rows.iter().enumerate() {
            match out.iter_mut().find(|(g, _)| *g == r.group()) {
                Some((_, rows)) => rows.push(i),
                None => out.push((r.group(), vec![i])),
            }
        }
        out
    }

    /// Reads the results.csv at `path`.
    pub fn read(path: &Path) -> Result<Results, ReportError> {
        let bytes = crate::inputfile::read_bounded(path, crate::inputfile::limit::REPORT_FILE)
            .map_err(|source| ReportError::unreadable(path, source))?;
        Self::parse(&bytes, &path.display().to_string())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn a_header_of_a_million_columns_is_refused_before_it_is_parsed() {
        let header: Vec<String> = (0..1_000_000).map(|i| format!("c{i}")).collect();
        let err = Results::parse(header.join(",").as_bytes(), "r.csv").unwrap_err();
        assert!(err.is_bad_input());
        assert!(
            err.to_string().contains("its header has 1000000 columns"),
            "{err}"
        );
    }

    /// A well-formed stage key made from `n`.
    pub fn test_key(n: u64) -> StageKey {
        StageKey::parse(&format!("{n:064x}")).unwrap()
    }

    /// A results table with the given (group axes, seed, rank-1, mAP) rows; other metrics derived from rank-1.
    pub fn table(axes: &[&str], rows: &[(&[&str], u64, f64, f64)]) -> Results {
        Results {
            axes: axes.iter().map(|a| a.to_string()).collect(),
            rows: rows
                .iter()
                .map(|(values, seed, r1, map)| {
                    let short = |a: &str| a.rsplit('.').next().unwrap_or(a).to_string();
                    let mut parts: Vec<String> = axes
                        .iter()
                        .zip(values.iter())
                        .map(|(a, v)| format!("{}={v}", short(a)))
                        .collect();
                    parts.push(format!("seed={seed}"));
                    ResultRow {
                        cell: parts.join(","),
                        axes: values.iter().map(|v| v.to_string()).collect(),
                        seed: *seed,
                        dataset: "market1501".into(),
                        lock_digest: "sha256:00".into(),
                        train_key: test_key(*seed),
                        eval_key: test_key(1000 + seed),
                        metrics: PerMetric::from_fn(|m| {
                            Some(match m {
                                ReportMetric::Rank1 => *r1,
                                ReportMetric::Rank5 => r1 + 0.1,
                                ReportMetric::Rank10 => r1 + 0.15,
                                ReportMetric::Rank20 => r1 + 0.2,
                                ReportMetric::Map => *map,
                                ReportMetric::Minp => map / 2.0,
                            })
                        }),
                        diagnostics: Some(Diagnostics {
                            feature_norm: 8.5,
                            refined_norm: 4.25,
                            same_identity_attention: Some(map / 4.0),
                            offdiag_attention: Some(*map),
                            graph_change: 0.75,
                            graph_cosine: r1 - 0.5,
                        }),
                        train_seconds: 12.25,
                        images_per_s: 100.5,
                        device: DeviceChoice::Cpu,
                        git_commit: "abc".into(),
                        git_dirty: false,
                    }
                })
                .collect(),
        }
    }

    #[test]
    fn csv_round_trips_with_fixed_precision() {
        let results = table(
            &["model.head", "model.gamma"],
            &[
                (&["mgat", "0.5"], 1, 0.5, 1.0 / 3.0),
                (&["gat", "2"], 2, 0.25, 0.125),
            ],
        );
        let csv = String::from_utf8(results.to_csv().unwrap()).unwrap();
        let mut lines = csv.lines();
        assert_eq!(
            lines.next().unwrap(),
            "cell,model.head,model.gamma,seed,dataset,lock_digest,train_key,eval_key,rank1,rank5,rank10,rank20,mAP,mINP,feature_norm,refined_norm,same_identity_attention,offdiag_attention,graph_change,graph_cosine,train_seconds,images_per_s,device,git_commit,git_dirty"
        );
        assert_eq!(
            lines.next().unwrap(),
            format!(
                "\"head=mgat,gamma=0.5,seed=1\",mgat,0.5,1,market1501,sha256:00,{:064x},{:064x},0.500000,0.600000,0.650000,0.700000,0.333333,0.166667,8.500000,4.250000,0.083333,0.333333,0.750000,0.000000,12.250000,100.500000,cpu,abc,false",
                1, 1001
            )
        );
        let back = Results::parse(csv.as_bytes(), "x.csv").unwrap();
        assert_eq!(back.axes, results.axes);
        assert_eq!(back.rows[1].axes, ["gat", "2"]);
        assert_eq!(back.rows[1].metric(ReportMetric::Map), Some(0.125));
        assert_eq!(back.rows[0].group(), "head=mgat,gamma=0.5");
        assert_eq!(back.to_csv().unwrap(), csv.as_bytes());
    }

    #[test]
    fn parse_errors_name_origin_line_and_column() {
        let results = table(&["model.head"], &[(&["mgat"], 1, 0.5, 0.25)]);
        let csv = String::from_utf8(results.to_csv().unwrap()).unwrap();
        let broken = csv.replace("0.250000", "n/a");
        let err = Results::parse(broken.as_bytes(), "HEAD:reports/q/results.csv").unwrap_err();
        assert_eq!(
            err.to_string(),
            "HEAD:reports/q/results.csv: line 2, column `mAP`: `n/a` is not a number"
        );
        let err = Results::parse(b"a,b\n1,2\n", "r.csv").unwrap_err();
        assert!(err.to_string().contains("no `seed` column"), "{err}");
    }

    #[test]
    fn the_measures_are_results_csvs_number_columns_in_file_order() {
        let csv = table(&["model.head"], &[(&["mgat"], 1, 0.5, 0.25)])
            .to_csv()
            .unwrap();
        let header = String::from_utf8(csv).unwrap();
        let header = header.lines().next().unwrap();
        let names: Vec<&str> = Measure::ALL.iter().map(|m| m.name()).collect();
        assert!(header.contains(&names.join(",")), "{header}");
    }

    #[test]
    fn a_file_from_before_the_diagnostics_reads_without_them_and_half_of_them_is_refused() {
        let results = table(&["model.head"], &[(&["none"], 1, 0.5, 0.25)]);
        let csv = String::from_utf8(results.to_csv().unwrap()).unwrap();
        let drop_columns = |text: &str, from: usize, to: usize| -> String {
            text.lines()
                .map(|l| {
                    let fields: Vec<&str> = l.split(',').collect();
                    [&fields[..from], &fields[to..]].concat().join(",") + "\n"
                })
                .collect()
        };
        // Columns: cell, head, seed, dataset, lock, 2 keys, 6 metrics, then the 6 diagnostics at 13..19.
        let old = Results::parse(drop_columns(&csv, 13, 19).as_bytes(), "old.csv").unwrap();
        assert_eq!(old.rows[0].diagnostics, None);
        assert_eq!(old.rows[0].metric(ReportMetric::Map), Some(0.25));
        let half = Results::parse(drop_columns(&csv, 13, 16).as_bytes(), "half.csv").unwrap_err();
        assert!(
            half.to_string().contains("no `feature_norm` column"),
            "{half}"
        );
        let baseline = csv.replace(",0.062500,0.250000,", ",,,");
        let back = Results::parse(baseline.as_bytes(), "b.csv").unwrap();
        let d = back.rows[0].diagnostics.unwrap();
        assert_eq!(
            (d.same_identity_attention, d.offdiag_attention),
            (None, None)
        );
        assert_eq!(d.graph_cosine, 0.0);
        let empty = csv.replace(",0.750000,0.000000,", ",0.750000,,");
        let err = Results::parse(empty.as_bytes(), "e.csv").unwrap_err();
        assert!(
            err.to_string()
                .contains("line 2, column `graph_cosine` is empty"),
            "{err}"
        );
    }

    #[test]
    fn a_cell_named_twice_is_bad_input_not_another_seed() {
        let results = table(
            &["model.head"],
            &[(&["mgat"], 1, 0.5, 0.25), (&["mgat"], 2, 0.6, 0.3)],
        );
        let csv = String::from_utf8(results.to_csv().unwrap()).unwrap();
        let second = csv.lines().nth(2).unwrap();
        let merged = format!("{csv}{second}\n");
        let err = Results::parse(merged.as_bytes(), "reports/q/results.csv").unwrap_err();
        assert!(err.is_bad_input());
        assert!(
            err.to_string()
                .contains("line 4: cell `head=mgat,seed=2` is already on line 3"),
            "{err}"
        );
    }
}
