//! Reports: a spec's results gathered from the cache into `reports/<spec>/` (results.csv, summary tables,
//! figures), the paper's tables rendered against them, and results compared between git revisions.

pub mod diff;
pub mod figures;
pub mod paper;
pub mod results;
pub mod stats;
pub mod summary;

use crate::cache::{Cache, CacheError};
use crate::fsio::IoError;
use crate::plan::{Plan, StageKind};
use crate::spec::Spec;
use crate::stages::CMC_FILE;
use crate::train::LOG_FILE;
use figures::{Line, Panel, curve_lines, sweep_panels, write_figure};
use polars::prelude::*;
use results::{RESULTS_FILE, Results};
use std::io::Cursor;
use std::path::{Path, PathBuf};
use summary::{Pivot, group_stats, short_name};

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error(transparent)]
    Io(#[from] IoError),
    #[error(transparent)]
    CacheEntry(#[from] CacheError),
    #[error("{path}: {message}")]
    Cache { path: PathBuf, message: String },
    #[error("{origin}: {message}")]
    Results { origin: String, message: String },
    #[error("{file}:{line}: {message}", file = file.display())]
    Paper {
        file: PathBuf,
        line: usize,
        message: String,
    },
    #[error("table `{table}`, row `{row}` selects {} cell groups ({}): add axes to its `select` so it names one", groups.len(), groups.join(", "))]
    Ambiguous {
        table: String,
        row: String,
        groups: Vec<String>,
    },
    #[error("unknown revision `{0}`: expected a commit, branch or tag of this repository")]
    UnknownRevision(String),
    #[error("{0}")]
    Git(String),
    #[error("table: {0}")]
    Table(#[from] PolarsError),
    #[error("figure: {0}")]
    Figure(String),
}

impl ReportError {
    /// Whether the error is about something the user wrote or named (a file, a revision), not a failure of mgat.
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            ReportError::Results { .. }
                | ReportError::Paper { .. }
                | ReportError::Ambiguous { .. }
                | ReportError::UnknownRevision(_)
        )
    }
}

/// What [`write_spec_report`] wrote and which cells had no results yet.
#[derive(Debug, Default)]
pub struct Written {
    pub files: Vec<PathBuf>,
    pub rows: usize,
    pub missing: Vec<String>,
}

/// Regenerates `reports/<spec name>/` from the cache: results.csv, summary.{md,csv,tex} and figures.
pub fn write_spec_report(
    spec: &Spec,
    spec_index: usize,
    plan: &Plan,
    cache: &Cache,
    reports: &Path,
) -> Result<Written, ReportError> {
    let (results, missing) = Results::collect(spec, spec_index, plan, cache)?;
    let dir = reports.join(&spec.name);
    let mut written = Written {
        rows: results.rows.len(),
        missing,
        ..Written::default()
    };
    if results.rows.is_empty() {
        return Ok(written);
    }
    let mut put = |name: &str, bytes: &[u8]| -> Result<(), ReportError> {
        let path = dir.join(name);
        crate::fsio::write_atomic(&path, bytes)?;
        written.files.push(path);
        Ok(())
    };
    put(RESULTS_FILE, &results.to_csv()?)?;
    let stats = group_stats(&results)?;
    let pivot = Pivot::new(&spec.report, &results.axes, &stats);
    let title = spec
        .description
        .clone()
        .unwrap_or_else(|| spec.name.clone());
    put("summary.md", pivot.markdown(&title).as_bytes())?;
    put("summary.csv", pivot.csv().as_bytes())?;
    put("summary.tex", pivot.latex(&title).as_bytes())?;
    written
        .files
        .extend(write_figures(spec, &results, cache, &dir.join("figures"))?);
    Ok(written)
}

fn write_figures(
    spec: &Spec,
    results: &Results,
    cache: &Cache,
    dir: &Path,
) -> Result<Vec<PathBuf>, ReportError> {
    let mut files = Vec::new();
    for axis in &spec.report.sweeps {
        let panels = sweep_panels(results, &spec.report, axis);
        let name = short_name(axis, &results.axes);
        let title = format!("{}: sweep over {name}", spec.name);
        files.extend(write_figure(
            &dir.join(format!("sweep-{name}")),
            &title,
            &panels,
        )?);
    }
    let cmc = per_group(results, |r| {
        read_column(
            &cache.entry_dir(StageKind::Eval, &r.eval_key).join(CMC_FILE),
            "cmc",
        )
    });
    if !cmc.is_empty() {
        let panel = Panel {
            title: "CMC".into(),
            x_desc: "rank".into(),
            y_desc: "matching rate (%)".into(),
            lines: curve_lines(&cmc, 100.0),
            log_x: false,
            error_bars: false,
        };
        let title = format!("{}: CMC curves, mean over seeds", spec.name);
        files.extend(write_figure(&dir.join("cmc"), &title, &[panel])?);
    }
    let log = |column: &'static str| {
        per_group(results, move |r| {
            read_column(
                &cache
                    .entry_dir(StageKind::Train, &r.train_key)
                    .join(LOG_FILE),
                column,
            )
        })
    };
    let (loss, accuracy) = (log("loss"), log("accuracy"));
    if !loss.is_empty() {
        let panel = |title: &str, y: &str, lines: Vec<Line>| Panel {
            title: title.into(),
            x_desc: "epoch".into(),
            y_desc: y.into(),
            lines,
            log_x: false,
            error_bars: true,
        };
        let panels = [
            panel(
                "training loss",
                "loss (ID + OF + triplet)",
                curve_lines(&loss, 1.0),
            ),
            panel(
                "training accuracy",
                "ID accuracy (%)",
                curve_lines(&accuracy, 100.0),
            ),
        ];
        let title = format!("{}: training, mean ± std over seeds", spec.name);
        files.extend(write_figure(&dir.join("training"), &title, &panels)?);
    }
    Ok(files)
}

/// Per cell group (row order), the curves `read` gives for its seeds; groups whose curves are not in the cache
/// (results from another machine) are left out, and groups whose curves equal an earlier group's (a baseline
/// shares its training across γ) are folded into it.
fn per_group(
    results: &Results,
    read: impl Fn(&results::ResultRow) -> Option<Vec<f64>>,
) -> Vec<(String, Vec<Vec<f64>>)> {
    let groups = results.groups().into_iter().filter_map(|(group, rows)| {
        let curves: Vec<Vec<f64>> = rows
            .iter()
            .filter_map(|&i| read(&results.rows[i]))
            .collect();
        (!curves.is_empty()).then(|| (group.to_string(), curves))
    });
    let mut folded: Vec<(String, Vec<Vec<f64>>)> = Vec::new();
    for (group, curves) in groups {
        match folded.iter_mut().find(|(_, c)| *c == curves) {
            Some((label, _)) => label.push_str(&format!(" = {group}")),
            None => folded.push((group, curves)),
        }
    }
    folded
}

/// One numeric column of a small CSV in the cache, or `None` when the file is not there or not readable.
fn read_column(path: &Path, column: &str) -> Option<Vec<f64>> {
    let bytes = std::fs::read(path).ok()?;
    let frame = CsvReadOptions::default()
        .with_has_header(true)
        .into_reader_with_file_handle(Cursor::new(bytes))
        .finish()
        .ok()?;
    let values = frame.column(column).ok()?.cast(&DataType::Float64).ok()?;
    let values = values.f64().ok()?;
    values.iter().collect()
}
