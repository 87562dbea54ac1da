//! Reports: a spec's results gathered from the cache into `reports/<spec>/` (results.csv, the key inputs of its
//! stages in keys.json, summary tables, figures), the paper's tables rendered against them, and results compared between git revisions.

pub mod audit;
pub mod delta;
pub mod diff;
pub mod figures;
pub mod keys;
pub mod paper;
pub mod results;
pub mod stats;
pub mod summary;

use crate::cache::{Cache, CacheError};
use crate::plan::{Plan, StageKind, fingerprints};
use crate::spec::Spec;
use figures::{Line, Panel, curve_lines, sweep_panels, write_figure};
use mgat_eval::stage::CMC_FILE;
use mgat_train::{LOG_FILE, LogColumn};
use mgat_util::digest::{sha256_bytes, sha256_file};
use mgat_util::fsio::IoError;
use polars::prelude::*;
use results::{RESULTS_FILE, Results};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
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
    /// The report on disk was already rendered from the same inputs, so nothing was rewritten.
    pub unchanged: bool,
}

/// Beside each report: what it was rendered from, and the SHA-256 of every file it wrote.
const RENDERED_FROM: &str = ".rendered-from.json";

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct RenderedFrom {
    /// SHA-256 over mgat's sources, the spec's text and the results' rows (which name every cache entry read).
    inputs: String,
    files: BTreeMap<String, String>,
}

impl RenderedFrom {
    /// The files the previous rendering in `dir` wrote, relative to it (none when it left no readable record).
    fn previous_files(dir: &Path) -> Vec<String> {
        std::fs::read(dir.join(RENDERED_FROM))
            .ok()
            .and_then(|b| serde_json::from_slice::<Self>(&b).ok())
            .map(|r| {
                r.files
                    .into_keys()
                    .filter(|n| is_plain_relative(n))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Whether the report in `dir` was rendered from `inputs` and is still exactly what was written: every file it
    /// recorded has its recorded SHA-256, re-hashed only where its stat changed (`stat_cache`, as for datasets).
    fn holds(dir: &Path, inputs: &str, stat_cache: &Path) -> bool {
        let Ok(Ok(previous)) =
            std::fs::read(dir.join(RENDERED_FROM)).map(|b| serde_json::from_slice::<Self>(&b))
        else {
            return false;
        };
        if previous.inputs != inputs {
            return false;
        }
        let Ok(found) = crate::data::hash::hash_tree(dir, Some(stat_cache), &|| {}) else {
            return false;
        };
        let found: BTreeMap<&str, &str> = found
            .iter()
            .map(|f| (f.path.as_str(), f.sha256.as_str()))
            .collect();
        previous
            .files
            .iter()
            .all(|(name, sha)| found.get(name.as_str()) == Some(&sha.as_str()))
    }
}

/// Regenerates `reports/<spec name>/` from the cache (results.csv, keys.json, summary.{md,csv,tex} and figures), unless it
/// was rendered from the same inputs (the report code's fingerprint, the spec, and the cache entries results.csv names) and
/// nobody changed it since.
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
    // The rows as data, not as results.csv: rendering the CSV starts polars' thread pool, which a report that is
    // already up to date should not pay for (the CSV is a function of the rows and of the program).
    let rows = serde_json::to_vec(&results).map_err(|e| ReportError::Cache {
        path: dir.join(RESULTS_FILE),
        message: e.to_string(),
    })?;
    let inputs = sha256_bytes(
        [
            fingerprints::REPORT.as_bytes(),
            b"\0",
            spec.source().as_bytes(),
            b"\0",
            &rows,
        ]
        .concat()
        .as_slice(),
    );
    if RenderedFrom::holds(&dir, &inputs, &cache.stat_cache_path(&dir)) {
        written.unchanged = true;
        return Ok(written);
    }
    let csv = results.to_csv()?;
    let mut files = BTreeMap::new();
    let mut put = |name: &str, bytes: &[u8]| -> Result<PathBuf, ReportError> {
        let path = dir.join(name);
        mgat_util::fsio::write_atomic(&path, bytes)?;
        files.insert(name.to_string(), sha256_bytes(bytes));
        Ok(path)
    };
    written.files.push(put(RESULTS_FILE, &csv)?);
    let keys = keys::ReportKeys::collect(
        plan,
        spec_index,
        results.rows.iter().map(|r| r.cell.as_str()),
        cache,
    );
    written.files.push(put(keys::KEYS_FILE, &keys.to_json())?);
    let stats = group_stats(&results)?;
    let pivot = Pivot::new(&spec.report, &results.axes, &stats);
    let title = spec
        .description
        .clone()
        .unwrap_or_else(|| spec.name.clone());
    let delta = delta::DeltaTable::of(&spec.report, &results.axes, &stats);
    let mut markdown = pivot.markdown(&title);
    if let Some(delta) = &delta {
        markdown.push_str(&delta.markdown());
        written
            .files
            .push(put("delta.csv", delta.csv().as_bytes())?);
    }
    written.files.push(put("summary.md", markdown.as_bytes())?);
    written
        .files
        .push(put("summary.csv", pivot.csv().as_bytes())?);
    written
        .files
        .push(put("summary.tex", pivot.latex(&title).as_bytes())?);
    for path in write_figures(spec, &results, cache, &dir.join("figures"))? {
        let rel = path
            .strip_prefix(&dir)
            .unwrap_or(&path)
            .to_string_lossy()
            .into_owned();
        let (sha, _) = sha256_file(&path).map_err(IoError::at(&path))?;
        files.insert(rel, sha);
        written.files.push(path);
    }
    for stale in RenderedFrom::previous_files(&dir) {
        if !files.contains_key(&stale) {
            remove_stale(&dir.join(&stale))?;
        }
    }
    let record = serde_json::to_vec_pretty(&RenderedFrom { inputs, files }).map_err(|e| {
        ReportError::Cache {
            path: dir.join(RENDERED_FROM),
            message: e.to_string(),
        }
    })?;
    mgat_util::fsio::write_atomic(&dir.join(RENDERED_FROM), &record)?;
    Ok(written)
}

/// A name the record may hold: relative, without `..`, so that a hand-edited record cannot remove files elsewhere.
fn is_plain_relative(name: &str) -> bool {
    Path::new(name)
        .components()
        .all(|c| matches!(c, std::path::Component::Normal(_)))
}

/// Removes a file an earlier rendering wrote and this one did not (a sweep axis the spec no longer has).
fn remove_stale(path: &Path) -> Result<(), ReportError> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(IoError::at(path)(e).into()),
        _ => Ok(()),
    }
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
    let log = |column: LogColumn| {
        per_group(results, move |r| {
            read_column(
                &cache
                    .entry_dir(StageKind::Train, &r.train_key)
                    .join(LOG_FILE),
                column.name(),
            )
        })
    };
    let (loss, accuracy) = (log(LogColumn::Loss), log(LogColumn::Accuracy));
    if !loss.is_empty() {
        let panels = [
            epoch_panel(
                "training loss",
                "loss (ID + OF + triplet)",
                curve_lines(&loss, 1.0),
            ),
            epoch_panel(
                "training accuracy",
                "ID accuracy (%)",
                curve_lines(&accuracy, 100.0),
            ),
        ];
        let title = format!("{}: training, mean ± std over seeds", spec.name);
        files.extend(write_figure(&dir.join("training"), &title, &panels)?);
    }
    let length = log(LogColumn::FeatureNorm);
    // The baseline has no attention: every panel keeps the length panel's lines (and so their colours), empty
    // where a group has no such curve.
    let aligned = |column: LogColumn| -> Vec<(String, Vec<Vec<f64>>)> {
        let curves = log(column);
        length
            .iter()
            .map(|(label, _)| {
                let found = curves.iter().find(|(l, _)| l == label);
                (
                    label.clone(),
                    found.map(|(_, c)| c.clone()).unwrap_or_default(),
                )
            })
            .collect()
    };
    let (refined, share, of) = (
        aligned(LogColumn::RefinedNorm),
        aligned(LogColumn::SameIdentityAttention),
        aligned(LogColumn::OfLoss),
    );
    let (offdiag, change) = (
        aligned(LogColumn::OffdiagAttention),
        aligned(LogColumn::GraphChange),
    );
    if !length.is_empty() {
        let panels = [
            epoch_panel(
                "backbone feature length",
                "mean ‖X‖",
                curve_lines(&length, 1.0),
            ),
            epoch_panel(
                "head output length",
                "mean ‖X'‖",
                curve_lines(&refined, 1.0),
            ),
            epoch_panel(
                "attention on the same identity",
                "share of off-diagonal Â (%)",
                curve_lines(&share, 100.0),
            ),
            epoch_panel("OF loss", "MSE(G, X')", curve_lines(&of, 1.0)),
            epoch_panel(
                "attention off the diagonal (how much the graph mixes)",
                "share of Â off the diagonal (%)",
                curve_lines(&offdiag, 100.0),
            ),
            epoch_panel(
                "how far the head moves its input",
                "mean ‖X' − G‖ / ‖G‖",
                curve_lines(&change, 1.0),
            ),
        ];
        let title = format!("{}: collapse diagnostics, mean ± std over seeds", spec.name);
        files.extend(write_figure(&dir.join("diagnostics"), &title, &panels)?);
    }
    Ok(files)
}

/// A panel of per-epoch curves, mean ± std over seeds.
fn epoch_panel(title: &str, y: &str, lines: Vec<Line>) -> Panel {
    Panel {
        title: title.into(),
        x_desc: "epoch".into(),
        y_desc: y.into(),
        lines,
        log_x: false,
        error_bars: true,
    }
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
