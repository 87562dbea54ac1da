//! The paper's tables as data (`reports/paper.yaml`): which cells each row selects, which dataset × metric each
//! column shows, the reported numbers with their sources and tolerances; rendered beside the reproduced
//! mean ± 95% confidence interval (n) with Δ and a verdict per cell: within tolerance when the reported value is
//! within the row's tolerance of the reproduced mean's interval.

use super::ReportError;
use super::results::Results;
use super::stats::{ci95_half_width, mean};
use super::summary::{TextTable, format_percent};
use crate::spec::{ReportMetric, format_value};
use crate::yamlpos::{Pos, PosIndex, split_serde_error};
use indexmap::IndexMap;
use serde::Deserialize;
use serde_yaml::Value;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

pub const PAPER_FILE: &str = "paper.yaml";
pub const PAPER_REPORT: &str = "paper.md";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaperTables {
    pub paper: String,
    pub tables: Vec<Table>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Table {
    pub id: String,
    pub title: String,
    /// Where in the paper (e.g. "Table 2"), or null where we cannot say.
    pub paper_table: Option<String>,
    /// Specs whose `reports/<name>/results.csv` feed this table.
    pub results: Vec<String>,
    /// Allowed |reproduced − reported| in percentage points, unless a row says otherwise.
    pub tolerance: f64,
    pub columns: Vec<TableColumn>,
    pub rows: Vec<TableRow>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableColumn {
    /// The dataset's name in datasets.lock.
    pub dataset: String,
    pub metric: ReportMetric,
}

impl TableColumn {
    /// How rows' `reported` maps name this column: `dataset/metric`.
    pub fn id(&self) -> String {
        format!("{}/{}", self.dataset, self.metric)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableRow {
    pub label: String,
    /// Axis path → value; a row reproduces the cells (and seeds) whose axes have these values. Without it the row
    /// is a reference only: shown, never reproduced.
    #[serde(default)]
    pub select: Option<IndexMap<String, Value>>,
    /// Where the reported numbers come from.
    #[serde(default)]
    pub source: Option<String>,
    /// Column id → reported value in percent, or null.
    #[serde(default)]
    pub reported: IndexMap<String, Option<f64>>,
    #[serde(default)]
    pub tolerance: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Within,
    Outside,
    NoReported,
    NotRun,
    Reference,
}

impl Verdict {
    pub fn text(self) -> &'static str {
        match self {
            Verdict::Within => "within tolerance",
            Verdict::Outside => "OUTSIDE tolerance",
            Verdict::NoReported => "no reported value",
            Verdict::NotRun => "not run",
            Verdict::Reference => "reference only",
        }
    }
}

/// One rendered table cell.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    pub row: String,
    pub column: TableColumn,
    pub reported: Option<f64>,
    /// Percent: mean, 95% interval half-width (Student t; NaN for one seed), n.
    pub reproduced: Option<(f64, f64, usize)>,
    pub tolerance: f64,
    pub verdict: Verdict,
}

impl PaperTables {
    /// Reads and validates `paper.yaml`: errors name the file, line and value.
    pub fn load(path: &Path) -> Result<PaperTables, ReportError> {
        let text = crate::inputfile::read_text_bounded(path, crate::inputfile::limit::TEXT_CONFIG).map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound => ReportError::Results {
                origin: path.display().to_string(),
                message: "no such file: it describes the paper's tables that `mgat report --paper` renders"
                    .into(),
            },
            _ => ReportError::unreadable(path, source),
        })?;
        Self::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<PaperTables, ReportError> {
        let fail = |pos: Option<Pos>, message: String| ReportError::Paper {
            file: path.to_path_buf(),
            line: pos.map_or(0, |p| p.line),
            message,
        };
        let index = PosIndex::new(text);
        if let Some(pos) = index.too_deep {
            return Err(fail(Some(pos), crate::yamlpos::too_deep_message()));
        }
        let tables: PaperTables = serde_yaml::from_str(text).map_err(|e| {
            let (pos, message) = split_serde_error(&e);
            fail(pos, message)
        })?;
        let at = |path: &[String]| index.find(path);
        for (t, table) in tables.tables.iter().enumerate() {
            let base = ["tables".to_string(), t.to_string()];
            let path = |tail: &[&str]| -> Vec<String> {
                base.iter()
                    .cloned()
                    .chain(tail.iter().map(|s| s.to_string()))
                    .collect()
            };
            if tables.tables[..t].iter().any(|other| other.id == table.id) {
                return Err(fail(
                    at(&path(&["id"])),
                    format!(
                        "table id `{}` is given twice: each table needs its own",
                        table.id
                    ),
                ));
            }
            if !valid_tolerance(table.tolerance) {
                return Err(fail(
                    at(&path(&["tolerance"])),
                    format!("tolerance {}: expected a number ≥ 0", table.tolerance),
                ));
            }
            let ids: Vec<String> = table.columns.iter().map(TableColumn::id).collect();
            for (r, row) in table.rows.iter().enumerate() {
                let r = r.to_string();
                for (id, value) in &row.reported {
                    if let Some(v) = value.filter(|v| !(0.0..=100.0).contains(v)) {
                        return Err(fail(
                            at(&path(&["rows", &r, "reported", id])),
                            format!("`{id}`: {v} is not a percentage (0 to 100)"),
                        ));
                    }
                    if !ids.contains(id) {
                        return Err(fail(
                            at(&path(&["rows", &r, "reported", id])),
                            format!(
                                "`{id}` is not a column of table `{}`: expected one of {}",
                                table.id,
                                ids.join(", ")
                            ),
                        ));
                    }
                }
                if row.tolerance.is_some_and(|t| !valid_tolerance(t)) {
                    return Err(fail(
                        at(&path(&["rows", &r, "tolerance"])),
                        "tolerance: expected a number ≥ 0".into(),
                    ));
                }
            }
        }
        Ok(tables)
    }
}

fn valid_tolerance(t: f64) -> bool {
    t.is_finite() && t >= 0.0
}

/// The names paper.yaml may use: of specs (under experiments/, and reports under reports/) and of datasets (in
/// datasets.lock, named by the specs' cells or by reports' results: the paper's datasets may not be locked on this
/// machine).
#[derive(Debug, Clone, Default)]
pub struct KnownNames {
    pub specs: Vec<String>,
    pub datasets: Vec<String>,
    /// The configuration of every cell of each spec under `experiments/`, by spec name: what a row's `select` is
    /// checked against, whether or not the spec has results yet.
    pub cells: BTreeMap<String, Vec<Value>>,
}

impl PaperTables {
    /// Every table's `results` names a known spec, every column a known dataset, and every row's `select` a
    /// setting and a value that a cell of those specs has: a mistake in any would otherwise read as "not run" and
    /// let `--check` pass.
    pub fn check_names(&self, known: &KnownNames) -> Result<(), ReportError> {
        for table in &self.tables {
            let origin = format!("reports/paper.yaml, table `{}`", table.id);
            if table.results.is_empty() && table.rows.iter().any(|r| r.select.is_some()) {
                return Err(ReportError::Results {
                    origin,
                    message:
                        "results: []: a row with `select` needs the specs whose cells it selects"
                            .into(),
                });
            }
            if let Some(name) = table.results.iter().find(|n| !known.specs.contains(n)) {
                return Err(ReportError::Results {
                    origin,
                    message: format!(
                        "results: `{name}` is the name of no spec in experiments/ and of no report in reports/ \
                         (known: {})",
                        known.specs.join(", ")
                    ),
                });
            }
            if let Some(column) = table
                .columns
                .iter()
                .find(|c| !known.datasets.contains(&c.dataset))
            {
                return Err(ReportError::Results {
                    origin,
                    message: format!(
                        "columns: dataset `{}` is named neither in datasets.lock nor by a spec in experiments/ nor \
                         in a report's results (known: {})",
                        column.dataset,
                        known.datasets.join(", ")
                    ),
                });
            }
            table.check_selects(known)?;
        }
        Ok(())
    }

    /// Every table compared with the committed results (a spec without any counts as not run).
    pub fn compare_committed(
        &self,
        committed: &Committed,
    ) -> Result<Vec<Vec<Comparison>>, ReportError> {
        let results_of = |name: &str| committed.get(name).cloned();
        self.tables.iter().map(|t| t.compare(&results_of)).collect()
    }

    /// `reports/paper.yaml`'s tables compared with the results committed under `reports`, when that file exists.
    pub fn compare_if_present(reports: &Path) -> Result<Option<ComparedTables>, ReportError> {
        let path = reports.join(PAPER_FILE);
        if !path.is_file() {
            return Ok(None);
        }
        let tables = PaperTables::load(&path)?;
        let named = |name: &str| {
            tables
                .tables
                .iter()
                .any(|t| t.results.iter().any(|r| r == name))
        };
        let compared = tables.compare_committed(&Committed::read(reports, &named))?;
        Ok(Some((tables, compared)))
    }
}

/// The paper's tables and, table by table, their comparisons with the committed results.
pub type ComparedTables = (PaperTables, Vec<Vec<Comparison>>);

/// The results committed under a reports folder, each `<name>/results.csv` read once, by its folder's name, for the
/// names `wanted` selects. An unreadable one is logged and left out, so that its spec counts as not run.
#[derive(Debug, Default)]
pub struct Committed {
    results: BTreeMap<String, Results>,
}

impl Committed {
    pub fn read(reports: &Path, wanted: &dyn Fn(&str) -> bool) -> Committed {
        let results = std::fs::read_dir(reports)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|entry| {
                let name = entry.file_name().to_string_lossy().into_owned();
                let path = entry.path().join(super::results::RESULTS_FILE);
                let read = (wanted(&name) && path.is_file()).then(|| Results::read(&path))?;
                let results = read.map_err(|e| tracing::warn!("{e}")).ok()?;
                Some((name, results))
            })
            .collect();
        Committed { results }
    }

    /// The results of the spec (report folder) `name`.
    pub fn get(&self, name: &str) -> Option<&Results> {
        self.results.get(name)
    }

    /// Every dataset a committed row names.
    pub fn datasets(&self) -> impl Iterator<Item = &str> {
        self.results
            .values()
            .flat_map(|r| r.rows.iter().map(|row| row.dataset.as_str()))
    }
}

impl Table {
    /// Every row's `select` against the cells of the table's specs that are under `experiments/`: each path a
    /// setting they have, each value of that setting's type and the value of at least one cell.
    fn check_selects(&self, known: &KnownNames) -> Result<(), ReportError> {
        let cells: Vec<&Value> = self
            .results
            .iter()
            .filter_map(|name| known.cells.get(name))
            .flatten()
            .collect();
        let Some(first) = cells.first() else {
            return Ok(());
        };
        for row in &self.rows {
            let fail = |message: String| ReportError::Results {
                origin: format!(
                    "reports/paper.yaml, table `{}`, row `{}`",
                    self.id, row.label
                ),
                message,
            };
            for (path, want) in row.select.iter().flatten() {
                let have: Vec<String> = cells
                    .iter()
                    .filter_map(|c| crate::spec::get_path(c, path))
                    .map(format_value)
                    .collect();
                if have.is_empty() {
                    return Err(fail(format!(
                        "select: `{path}` is not a setting of {} (settings look like `model.head`, `train.lr`)",
                        self.results.join(", ")
                    )));
                }
                crate::spec::config_with(first, path, want).map_err(|e| {
                    fail(format!(
                        "select: `{path}: {}` is not a value of that setting: {e}",
                        format_value(want)
                    ))
                })?;
                if !have.contains(&format_value(want)) {
                    let mut values = have;
                    values.sort_by(|a, b| match (a.parse::<f64>(), b.parse::<f64>()) {
                        (Ok(x), Ok(y)) => x.total_cmp(&y),
                        _ => a.cmp(b),
                    });
                    values.dedup();
                    return Err(fail(format!(
                        "select: no cell of {} has `{path}: {}` (its cells have {})",
                        self.results.join(", "),
                        format_value(want),
                        values.join(", ")
                    )));
                }
            }
        }
        Ok(())
    }

    /// Compares every row × column with the results of the table's specs (`results_of(spec name)`, `None` where
    /// the spec has no results yet).
    pub fn compare(
        &self,
        results_of: &dyn Fn(&str) -> Option<Results>,
    ) -> Result<Vec<Comparison>, ReportError> {
        let all: Vec<Results> = self.results.iter().filter_map(|s| results_of(s)).collect();
        self.check_names(&all)?;
        let mut out = Vec::new();
        for row in &self.rows {
            let tolerance = row.tolerance.unwrap_or(self.tolerance);
            for column in &self.columns {
                let reported = row.reported.get(&column.id()).copied().flatten();
                let values = self.selected(row, column, &all)?;
                let reproduced = (!values.is_empty()).then(|| {
                    (
                        mean(&values) * 100.0,
                        ci95_half_width(&values) * 100.0,
                        values.len(),
                    )
                });
                let verdict = match (reported, reproduced) {
                    _ if row.select.is_none() => Verdict::Reference,
                    (_, None) => Verdict::NotRun,
                    (None, _) => Verdict::NoReported,
                    (Some(r), Some((m, h, _)))
                        if (m - r).abs() <= tolerance + h.max(0.0) + 1e-9 =>
                    {
                        Verdict::Within
                    }
                    _ => Verdict::Outside,
                };
                out.push(Comparison {
                    row: row.label.clone(),
                    column: column.clone(),
                    reported,
                    reproduced,
                    tolerance,
                    verdict,
                });
            }
        }
        Ok(out)
    }

    /// Where results exist, every row's `select` axes are among their axes: a typo there would otherwise read as
    /// "not run" and let `--check` pass. (A column's dataset may be one the results do not have yet.)
    fn check_names(&self, all: &[Results]) -> Result<(), ReportError> {
        if all.is_empty() {
            return Ok(());
        }
        for row in &self.rows {
            let Some(select) = &row.select else { continue };
            for axis in select.keys() {
                if !all.iter().any(|r| r.axes.iter().any(|a| a == axis)) {
                    return Err(ReportError::Results {
                        origin: format!(
                            "reports/paper.yaml, table `{}`, row `{}`",
                            self.id, row.label
                        ),
                        message: format!(
                            "select: `{axis}` is not an axis of {} (axes: {})",
                            self.results.join(", "),
                            all.iter()
                                .flat_map(|r| r.axes.iter().map(String::as_str))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    });
                }
            }
        }
        Ok(())
    }

    /// The metric values (fractions) of the seeds of the one cell group that `row` selects on `column`'s dataset.
    fn selected(
        &self,
        row: &TableRow,
        column: &TableColumn,
        all: &[Results],
    ) -> Result<Vec<f64>, ReportError> {
        let Some(select) = &row.select else {
            return Ok(Vec::new());
        };
        let mut groups: Vec<&str> = Vec::new();
        let mut values = Vec::new();
        let mut matched = 0;
        for results in all {
            for r in &results.rows {
                let matches = r.dataset == column.dataset
                    && select.iter().all(|(axis, want)| {
                        r.axis(&results.axes, axis) == Some(format_value(want).as_str())
                    });
                if !matches {
                    continue;
                }
                if !groups.contains(&r.group()) {
                    groups.push(r.group());
                }
                matched += 1;
                values.extend(r.metric(column.metric));
            }
        }
        if matched > 0 && values.is_empty() {
            return Err(ReportError::Results {
                origin: format!(
                    "reports/paper.yaml, table `{}`, row `{}`",
                    self.id, row.label
                ),
                message: format!(
                    "column `{}`: the {matched} result row(s) it selects have no `{}` value (is eval.max_rank \
                     below that rank?)",
                    column.id(),
                    column.metric
                ),
            });
        }
        if groups.len() > 1 {
            return Err(ReportError::Ambiguous {
                table: self.id.clone(),
                row: row.label.clone(),
                groups: groups.iter().map(|g| g.to_string()).collect(),
            });
        }
        Ok(values)
    }
}

fn percent(v: f64) -> String {
    format!("{v:.1}")
}

/// One line per row × column with reported, reproduced, Δ and verdict, values in percent.
pub fn comparison_table(rows: &[Comparison]) -> TextTable {
    let lines = rows
        .iter()
        .map(|c| {
            let delta = match (c.reported, c.reproduced) {
                (Some(r), Some((m, ..))) => format!("{:+.1}", m - r),
                _ => "–".into(),
            };
            vec![
                c.row.clone(),
                c.column.dataset.clone(),
                c.column.metric.label().to_string(),
                c.reported.map_or("–".into(), percent),
                c.reproduced
                    .map_or("–".into(), |(m, s, n)| format_percent(m, s, n)),
                delta,
                c.verdict.text().to_string(),
            ]
        })
        .collect();
    TextTable {
        header: [
            "row",
            "dataset",
            "metric",
            "reported",
            "reproduced",
            "Δ",
            "verdict",
        ]
        .map(String::from)
        .to_vec(),
        rows: lines,
        numeric: vec![false, false, false, true, true, true, false],
    }
}

/// Markdown for all tables: one line per row × column with reported, reproduced, Δ and verdict.
pub fn render(paper: &PaperTables, compared: &[Vec<Comparison>]) -> String {
    let mut out = format!(
        "# {}: reported vs reproduced\n\nValues in percent. Reproduced: mean ± half-width of its 95% confidence \
         interval (Student t) over seeds (n). Δ = reproduced − reported. A value is within tolerance when the \
         reported value lies within the row's tolerance of that interval (the mean alone for one seed). Generated by `mgat report --paper` from reports/paper.yaml.\n",
        paper.paper
    );
    for (table, rows) in paper.tables.iter().zip(compared) {
        let _ = write!(out, "\n## {}\n\n", table.title);
        let _ = writeln!(
            out,
            "Paper: {} · results: {} · tolerance ±{} points unless a row says otherwise\n",
            table
                .paper_table
                .as_deref()
                .unwrap_or("table number not given"),
            table.results.join(", "),
            table.tolerance
        );
        out.push_str(&comparison_table(rows).markdown());
        let sources: Vec<String> = table
            .rows
            .iter()
            .filter_map(|r| r.source.as_ref().map(|s| format!("- {}: {s}", r.label)))
            .collect();
        if !sources.is_empty() {
            let _ = write!(out, "\nSources:\n{}\n", sources.join("\n"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::results::tests::table;

    const PAPER: &str = "\
paper: MGAT
tables:
  - id: ablation
    title: Ablation
    paper_table: null
    results: [abl]
    tolerance: 1.0
    columns:
      - {dataset: market1501, metric: rank1}
      - {dataset: market1501, metric: mAP}
    rows:
      - label: MGAT
        select: {model.head: mgat}
        reported: {market1501/rank1: 58.0, market1501/mAP: 20.0}
      - label: GAT
        select: {model.head: gat}
        reported: {market1501/rank1: null}
        tolerance: 0.5
      - label: Plain
        select: {model.head: none}
        reported: {market1501/rank1: 10.0}
      - label: Reference
        source: elsewhere
        reported: {market1501/rank1: 90.0}
";

    fn parse(text: &str) -> Result<PaperTables, ReportError> {
        PaperTables::parse(Path::new("paper.yaml"), text)
    }

    #[test]
    fn a_select_axis_that_the_results_lack_is_an_error_not_not_run() {
        let tables =
            parse(&PAPER.replace("select: {model.head: gat}", "select: {model.haed: gat}"))
                .unwrap();
        let results = table(&["model.head"], &[(&["mgat"], 1, 0.5, 0.3)]);
        let err = tables.tables[0]
            .compare(&|_| Some(results.clone()))
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("`model.haed` is not an axis of abl"),
            "{err}"
        );
        assert!(err.is_bad_input());
        // Without results there is nothing to check against: rows are "not run".
        assert!(tables.tables[0].compare(&|_| None).is_ok());
    }

    #[test]
    fn a_results_name_or_a_column_dataset_that_nothing_has_is_an_error() {
        let tables = parse(PAPER).unwrap();
        let known = |specs: &[&str], datasets: &[&str]| KnownNames {
            specs: specs.iter().map(|s| s.to_string()).collect(),
            datasets: datasets.iter().map(|s| s.to_string()).collect(),
            cells: BTreeMap::new(),
        };
        tables
            .check_names(&known(&["abl"], &["market1501"]))
            .unwrap();
        let err = tables
            .check_names(&known(&["ablation"], &["market1501"]))
            .unwrap_err();
        assert!(
            err.to_string().contains("`abl` is the name of no spec"),
            "{err}"
        );
        assert!(err.is_bad_input());
        let err = tables
            .check_names(&known(&["abl"], &["market-1501"]))
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("dataset `market1501` is named neither in datasets.lock nor by a spec"),
            "{err}"
        );
        assert!(err.is_bad_input());
    }

    /// Known names where spec `abl` has one cell per head, as its spec file would expand.
    fn known_with_cells() -> KnownNames {
        let cell = |head: &str| {
            let mut config = crate::spec::config::RunConfig::for_tests();
            config.model.head = serde_yaml::from_str(head).unwrap();
            serde_yaml::to_value(&config).unwrap()
        };
        KnownNames {
            specs: vec!["abl".into()],
            datasets: vec!["market1501".into()],
            cells: BTreeMap::from([(
                "abl".to_string(),
                vec![cell("none"), cell("gat"), cell("mgat")],
            )]),
        }
    }

    #[test]
    fn a_select_that_no_cell_of_the_specs_has_is_an_error_before_any_result_exists() {
        parse(PAPER)
            .unwrap()
            .check_names(&known_with_cells())
            .unwrap();
        for (select, needle) in [
            (
                "{model.haed: gat}",
                "select: `model.haed` is not a setting of abl",
            ),
            (
                "{model.head: gta}",
                "`model.head: gta` is not a value of that setting: unknown variant `gta`",
            ),
            (
                "{model.gamma: abc}",
                "`model.gamma: abc` is not a value of that setting: invalid type",
            ),
            (
                "{model.gamma: -1}",
                "model.gamma: invalid value `-1`: expected a number > 0",
            ),
            (
                "{model.gamma: 2}",
                "no cell of abl has `model.gamma: 2` (its cells have 1)",
            ),
        ] {
            let tables =
                parse(&PAPER.replace("select: {model.head: gat}", &format!("select: {select}")))
                    .unwrap();
            let err = tables.check_names(&known_with_cells()).unwrap_err();
            assert!(err.to_string().contains("row `GAT`"), "{err}");
            assert!(err.to_string().contains(needle), "{select}: {err}");
            assert!(err.is_bad_input());
        }
        let err = parse(&PAPER.replace("results: [abl]", "results: []"))
            .unwrap()
            .check_names(&known_with_cells())
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("results: []: a row with `select` needs"),
            "{err}"
        );
    }

    #[test]
    fn a_column_whose_selected_rows_have_no_value_is_an_error_not_not_run() {
        let tables = parse(
            &PAPER
                .replace("metric: mAP}", "metric: rank20}")
                .replace("market1501/mAP", "market1501/rank20"),
        )
        .unwrap();
        let mut results = table(
            &["model.head"],
            &[
                (&["mgat"], 1, 0.5, 0.3),
                (&["gat"], 1, 0.5, 0.3),
                (&["none"], 1, 0.5, 0.3),
            ],
        );
        for row in &mut results.rows {
            row.metrics[ReportMetric::Rank20] = None;
        }
        let err = tables.tables[0]
            .compare(&|_| Some(results.clone()))
            .unwrap_err();
        assert!(
            err.to_string().contains("row `MGAT`: column `market1501/rank20`: the 1 result row(s) it selects have no `rank20` value"),
            "{err}"
        );
        assert!(err.is_bad_input());
    }

    #[test]
    fn a_table_id_given_twice_is_named_at_its_second_line() {
        let twice = PAPER.replacen(
            "tables:\n",
            &format!("tables:\n{}", &PAPER[PAPER.find("  - id:").unwrap()..]),
            1,
        );
        let err = parse(&twice).unwrap_err();
        assert!(err.is_bad_input());
        assert!(
            err.to_string()
                .contains("table id `ablation` is given twice"),
            "{err}"
        );
    }

    #[test]
    fn a_reported_value_is_a_percentage() {
        let err = parse(&PAPER.replace("rank1: 90.0", "rank1: 936")).unwrap_err();
        assert!(
            err.to_string()
                .contains("paper.yaml:24: `market1501/rank1`: 936 is not a percentage"),
            "{err}"
        );
        assert!(err.is_bad_input());
    }

    #[test]
    fn verdicts_follow_reported_values_and_tolerance() {
        let paper = parse(PAPER).unwrap();
        let results = table(
            &["model.head"],
            &[
                (&["mgat"], 1, 0.55, 0.30),
                (&["mgat"], 2, 0.57, 0.30),
                (&["gat"], 1, 0.40, 0.20),
            ],
        );
        let compared = paper.tables[0]
            .compare(&|name| (name == "abl").then(|| results.clone()))
            .unwrap();
        let verdicts: Vec<(&str, String, Verdict)> = compared
            .iter()
            .map(|c| (c.row.as_str(), c.column.id(), c.verdict))
            .collect();
        assert_eq!(
            verdicts,
            [
                ("MGAT", "market1501/rank1", Verdict::Within),
                ("MGAT", "market1501/mAP", Verdict::Outside),
                ("GAT", "market1501/rank1", Verdict::NoReported),
                ("GAT", "market1501/mAP", Verdict::NoReported),
                ("Plain", "market1501/rank1", Verdict::NotRun),
                ("Plain", "market1501/mAP", Verdict::NotRun),
                ("Reference", "market1501/rank1", Verdict::Reference),
                ("Reference", "market1501/mAP", Verdict::Reference),
            ]
            .map(|(row, column, verdict)| (row, column.to_string(), verdict))
        );
        // rank-1 55 and 57: s = √2, half-width t₀.₉₇₅(1)·√2/√2 = 12.706; reported 58 is 2 points off the mean,
        // outside the tolerance of 1 but within it of the interval.
        let (m, h, n) = compared[0].reproduced.unwrap();
        assert!((m - 56.0).abs() < 1e-9 && (h - 12.706205).abs() < 1e-5 && n == 2);
        let md = render(&paper, &[compared]);
        assert!(
            md.contains(
                "| MGAT | market1501 | rank-1 | 58.0 | 56.0 ± 12.7 (2) | -2.0 | within tolerance |"
            ),
            "{md}"
        );
        assert!(
            md.contains(
                "| MGAT | market1501 | mAP | 20.0 | 30.0 ± 0.0 (2) | +10.0 | OUTSIDE tolerance |"
            ),
            "{md}"
        );
    }

    #[test]
    fn a_row_selecting_two_groups_is_an_error() {
        let paper = parse(&PAPER.replace("select: {model.head: mgat}", "select: {}")).unwrap();
        let results = table(
            &["model.head"],
            &[(&["mgat"], 1, 0.5, 0.3), (&["gat"], 1, 0.4, 0.2)],
        );
        let err = paper.tables[0]
            .compare(&|_| Some(results.clone()))
            .unwrap_err();
        assert!(err.to_string().contains("head=mgat, head=gat"), "{err}");
    }

    #[test]
    fn bad_paper_yaml_names_the_line() {
        let err = parse(&PAPER.replace("market1501/mAP: 20.0", "market/mAP: 20.0")).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("paper.yaml:14: `market/mAP` is not a column"),
            "{err}"
        );
        let err = parse(&PAPER.replace("metric: mAP}", "metric: map}")).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("paper.yaml:10: tables[0].columns[1]: unknown metric `map`"),
            "{err}"
        );
        let err = parse(&PAPER.replace("tolerance: 0.5", "tolerance: lots")).unwrap_err();
        assert!(err.to_string().starts_with("paper.yaml:18:"), "{err}");
    }
}
