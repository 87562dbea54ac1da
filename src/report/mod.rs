//! Reports: a spec's results gathered from the cache into `reports/<spec>/` (results.csv, the key inputs of its
//! stages in keys.json, summary tables, figures), the paper's tables rendered against them, and results compared between git revisions.

pub mod audit;
pub mod delta;
pub mod diff;
pub mod figures;
pub mod keys;
pub mod page;
pub mod paper;
pub mod ranked;
pub mod results;
pub mod stats;
pub mod summary;

use crate::cache::{Cache, CacheError};
use crate::plan::StageKey;
use crate::plan::{Plan, StageKind, fingerprints};
use crate::spec::{ReportMetric, Spec};
use figures::{Band, Figure, Line, Panel, curve_lines, sweep_panels, write_figure};
use mgat_train::{Diagnostic, EpochLog};
use mgat_util::digest::{sha256_bytes, sha256_file};
use mgat_util::fsio::IoError;
use polars::prelude::*;
use results::{Measure, RESULTS_FILE, Results};
use serde::{Deserialize, Serialize};
use stats::{ci95_half_width, mean, sample_std};
use std::collections::BTreeMap;
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
    #[error("{} is not in a git repository: `mgat diff` compares committed reports", .0.display())]
    NotARepository(PathBuf),
    #[error("table: {0}")]
    Table(#[from] PolarsError),
    #[error("figure: {0}")]
    Figure(String),
    /// A report folder that is a symbolic link, or not a folder: mgat writes and removes report files only inside
    /// real folders under `reports/`, so that a committed link cannot point its writes elsewhere.
    #[error("{}: {what}; mgat writes reports only into real folders under reports/ (remove it and run again)", path.display())]
    NotAReportFolder { path: PathBuf, what: &'static str },
}

impl ReportError {
    /// A committed report file that could not be read: bad input when the guarded reader refused it (not a regular
    /// file, too large, not UTF-8), a failure otherwise.
    pub fn unreadable(path: &Path, e: std::io::Error) -> Self {
        match e.kind() {
            std::io::ErrorKind::InvalidInput | std::io::ErrorKind::InvalidData => {
                ReportError::Results {
                    origin: path.display().to_string(),
                    message: e.to_string(),
                }
            }
            _ => ReportError::Io(IoError::new(path.to_path_buf(), e)),
        }
    }

    /// Whether the error is about something the user wrote or named (a file, a revision), not a failure of mgat.
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            ReportError::Results { .. }
                | ReportError::NotAReportFolder { .. }
                | ReportError::Paper { .. }
                | ReportError::Ambiguous { .. }
                | ReportError::UnknownRevision(_)
                | ReportError::NotARepository(_)
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
    /// The report's title and rows, for `reports/index.html`.
    title: String,
    rows: usize,
    files: BTreeMap<String, String>,
}

impl RenderedFrom {
    /// The record in report folder `dir`, if there is a readable one.
    fn read(dir: &Path) -> Option<Self> {
        let bytes = crate::inputfile::read_bounded(
            &dir.join(RENDERED_FROM),
            crate::inputfile::limit::REPORT_FILE,
        )
        .ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// The files the previous rendering in `dir` wrote, relative to it (none when it left no readable record). The
    /// record is a file of the checkout, so untrusted: only names mgat itself writes, a file in the folder or in its
    /// `figures/`, are taken.
    fn previous_files(dir: &Path) -> Vec<String> {
        Self::read(dir)
            .map(|r| {
                r.files
                    .into_keys()
                    .filter(|n| is_report_file_name(n))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Whether the report in `dir` was rendered from `inputs` and is still exactly what was written: every file it
    /// recorded has its recorded SHA-256, re-hashed only where its stat changed (`stat_cache`, as for datasets).
    fn holds(dir: &Path, inputs: &str, stat_cache: &Path) -> bool {
        let Some(previous) = Self::read(dir) else {
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
    let dir = report_dir(reports, &spec.name)?;
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
    // Every stage key of the rows' cells, with the outputs they produced: a kind whose code moved without moving
    // a result (a synth stage's key) still renders keys.json again.
    let report_keys = keys::ReportKeys::collect(
        plan,
        spec_index,
        results.rows.iter().map(|r| r.cell.as_str()),
        cache,
    );
    let keys = report_keys.to_json();
    let inputs = sha256_bytes(
        [
            fingerprints::report().as_bytes(),
            b"\0",
            spec.source().as_bytes(),
            b"\0",
            &rows,
            b"\0",
            &keys,
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
    let figures = write_figures(spec, &results, cache, &dir.join(FIGURES_DIR))?;
    let mut page_figures = Vec::new();
    for figure in &figures {
        let svg = mgat_util::fsio::read_to_string(&figure.svg)?;
        files.insert(relative(&figure.svg, &dir), sha256_bytes(svg.as_bytes()));
        let (png, _) = sha256_file(&figure.png).map_err(IoError::at(&figure.png))?;
        files.insert(relative(&figure.png, &dir), png);
        page_figures.push(page::PageFigure {
            title: figure.title.clone(),
            svg,
        });
    }
    let mut put = |name: &str, bytes: &[u8]| -> Result<PathBuf, ReportError> {
        let path = dir.join(name);
        mgat_util::fsio::write_atomic(&path, bytes)?;
        files.insert(name.to_string(), sha256_bytes(bytes));
        Ok(path)
    };
    written.files.push(put(RESULTS_FILE, &csv)?);
    written.files.push(put(keys::KEYS_FILE, &keys)?);
    let stats = group_stats(&results)?;
    let pivot = Pivot::new(&spec.report, &results.axes, &stats);
    let mut title = spec
        .description
        .clone()
        .unwrap_or_else(|| spec.name.clone());
    if !spec.overrides.is_empty() {
        let args: Vec<String> = spec
            .overrides
            .iter()
            .map(|o| format!("--set {}", o.arg))
            .collect();
        title = format!("{title} (with {})", args.join(" "));
    }
    let delta = delta::DeltaTable::of(&spec.report, &results.axes, &stats);
    let mut markdown = pivot.markdown(&title);
    if let Some(delta) = &delta {
        markdown.push_str(&delta.markdown());
        written
            .files
            .push(put("delta.csv", delta.csv().as_bytes())?);
    }
    markdown.push_str(&summary::diagnostics_markdown(&results));
    markdown.push_str(&figures_markdown(&figures, &dir));
    written.files.push(put("summary.md", markdown.as_bytes())?);
    written
        .files
        .push(put("summary.csv", pivot.csv().as_bytes())?);
    written
        .files
        .push(put("summary.tex", pivot.latex(&title).as_bytes())?);
    let stages: Vec<crate::cache::Manifest> = report_keys
        .stages
        .iter()
        .filter_map(|(key, record)| cache.trusted(record.kind, key).ok().flatten())
        .collect();
    let ranked = ranked::RankedSection::collect(plan, spec_index, &results, cache)?;
    let page = page::SpecPage {
        spec,
        ranked: &ranked,
        title: &title,
        results: &results,
        pivot: &pivot,
        delta: delta.as_ref(),
        figures: &page_figures,
        stages: &stages,
        files: &[
            RESULTS_FILE,
            "summary.csv",
            "summary.tex",
            "summary.md",
            keys::KEYS_FILE,
        ],
    };
    written
        .files
        .push(put(page::PAGE_FILE, page.render().as_bytes())?);
    for figure in figures {
        written.files.extend([figure.svg, figure.png]);
    }
    for stale in RenderedFrom::previous_files(&dir) {
        if !files.contains_key(&stale) {
            remove_stale(&dir.join(&stale))?;
        }
    }
    let rendered = RenderedFrom {
        inputs,
        title,
        rows: results.rows.len(),
        files,
    };
    let record = serde_json::to_vec_pretty(&rendered).map_err(|e| ReportError::Cache {
        path: dir.join(RENDERED_FROM),
        message: e.to_string(),
    })?;
    mgat_util::fsio::write_atomic(&dir.join(RENDERED_FROM), &record)?;
    Ok(written)
}

/// Writes `reports/index.html`: a link to every spec report under `reports` that has a page (by its record, in
/// name order), and `paper`, the paper's tables against the committed results, when given
/// ([`paper::PaperTables::compare_if_present`]). Nothing is written when there is neither.
pub fn write_index(
    reports: &Path,
    paper: Option<(&paper::PaperTables, &[Vec<paper::Comparison>])>,
) -> Result<Option<PathBuf>, ReportError> {
    real_folder_or_absent(reports)?;
    let mut entries = Vec::new();
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(reports)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join(page::PAGE_FILE).is_file())
        .collect();
    dirs.sort();
    for dir in dirs {
        let Some(record) = RenderedFrom::read(&dir) else {
            continue;
        };
        entries.push(page::IndexEntry {
            name: dir
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned(),
            title: record.title,
            rows: record.rows,
        });
    }
    if entries.is_empty() && paper.is_none() {
        return Ok(None);
    }
    let html = page::index_page(&entries, paper);
    let path = reports.join(page::PAGE_FILE);
    // Left alone when it already holds these bytes, as on every rerun of a cached grid.
    if crate::inputfile::read_bounded(&path, crate::inputfile::limit::REPORT_FILE)
        .ok()
        .as_deref()
        != Some(html.as_bytes())
    {
        mgat_util::fsio::write_atomic(&path, html.as_bytes())?;
    }
    Ok(Some(path))
}

/// `path` relative to the report folder `dir`, with `/` separators.
fn relative(path: &Path, dir: &Path) -> String {
    path.strip_prefix(dir)
        .unwrap_or(path)
        .components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

/// The "Figures" section of summary.md: every figure's PNG as a relative image link, so that GitHub shows them.
fn figures_markdown(figures: &[Figure], dir: &Path) -> String {
    let mut out = String::from("\n## Figures\n");
    for figure in figures {
        out.push_str(&format!(
            "\n![{}]({})\n",
            figure.title,
            relative(&figure.png, dir)
        ));
    }
    out
}

/// A name the record may hold: `NAME` or `figures/NAME`, plain (no `..`, no root, no further folders), so that a
/// hand-edited record cannot remove files elsewhere.
fn is_report_file_name(name: &str) -> bool {
    let parts: Vec<std::path::Component> = Path::new(name).components().collect();
    let plain = |c: &std::path::Component| matches!(c, std::path::Component::Normal(_));
    match parts.as_slice() {
        [file] => plain(file),
        [folder, file] => folder.as_os_str() == FIGURES_DIR && plain(file),
        _ => false,
    }
}

/// The folder of figures inside a report folder.
const FIGURES_DIR: &str = "figures";

/// `reports/<name>/`, checked to be confined: `reports/`, it and its `figures/` are each a real folder or absent,
/// never a symbolic link (a committed link would make mgat write and delete report files wherever it points).
fn report_dir(reports: &Path, name: &str) -> Result<PathBuf, ReportError> {
    let dir = reports.join(name);
    for path in [reports, &dir, &dir.join(FIGURES_DIR)] {
        real_folder_or_absent(path)?;
    }
    Ok(dir)
}

/// `path` is a folder that is not a symbolic link, or nothing yet.
fn real_folder_or_absent(path: &Path) -> Result<(), ReportError> {
    let refused = |what| ReportError::NotAReportFolder {
        path: path.to_path_buf(),
        what,
    };
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => Err(refused("a symbolic link")),
        Ok(m) if !m.is_dir() => Err(refused("not a folder")),
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(IoError::at(path)(e).into()),
    }
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
) -> Result<Vec<Figure>, ReportError> {
    let mut files = Vec::new();
    for axis in &spec.report.sweeps {
        let panels = sweep_panels(results, &spec.report, axis);
        let name = short_name(axis, &results.axes);
        let title = format!("{}: sweep over {name}", spec.name);
        files.push(write_figure(
            &dir.join(format!("sweep-{name}")),
            &title,
            &panels,
        )?);
    }
    let cmc = per_group(results, |r| {
        mgat_eval::stage::read_cmc(&cache.entry_dir(StageKind::Eval, &r.eval_key)).ok()
    });
    if !cmc.is_empty() {
        let panel = Panel {
            title: "CMC".into(),
            x_desc: "rank".into(),
            y_desc: "matching rate (%)".into(),
            lines: curve_lines(&cmc, 100.0),
            log_x: false,
            error_bars: false,
            band: None,
        };
        let title = format!("{}: CMC curves, mean over seeds", spec.name);
        files.push(write_figure(&dir.join("cmc"), &title, &[panel])?);
    }
    // Each train entry's log, read once through the train crate.
    let logs: BTreeMap<&StageKey, Vec<EpochLog>> = results
        .rows
        .iter()
        .filter_map(|r| {
            let entry = cache.entry_dir(StageKind::Train, &r.train_key);
            Some((&r.train_key, mgat_train::stage::read_log(&entry).ok()?))
        })
        .collect();
    let column = |r: &results::ResultRow,
                  value: fn(&EpochLog) -> Option<f64>|
     -> Option<Vec<f64>> { logs.get(&r.train_key)?.iter().map(value).collect() };
    let log = |value: fn(&EpochLog) -> Option<f64>| per_group(results, |r| column(r, value));
    let (loss, accuracy) = (log(|e| Some(e.loss)), log(|e| Some(e.accuracy)));
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
        files.push(write_figure(&dir.join("training"), &title, &panels)?);
    }
    if let Some(panels) = mixing_panels(results) {
        let title = format!(
            "{}: accuracy against how much the graph mixes and whether its output keeps the input's direction \
             (last epoch), mean ± std over seeds",
            spec.name
        );
        files.push(write_figure(&dir.join("mixing"), &title, &panels)?);
    }
    let length = log(|e| Some(e.diagnostics.feature_norm));
    // The baseline has no attention: every panel keeps the length panel's lines (and so their colours), empty
    // where a group has no such curve.
    let aligned = |value: fn(&EpochLog) -> Option<f64>| -> Vec<(String, Vec<Vec<f64>>)> {
        let curves = log(value);
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
        aligned(|e| Some(e.diagnostics.refined_norm)),
        aligned(|e| e.diagnostics.same_identity_attention),
        aligned(|e| Some(e.of_loss)),
    );
    let (offdiag, change, cosine) = (
        aligned(|e| e.diagnostics.offdiag_attention),
        aligned(|e| Some(e.diagnostics.graph_change)),
        aligned(|e| Some(e.diagnostics.graph_cosine)),
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
            epoch_panel(
                "whether the output keeps its input's direction",
                "mean cos(X', G)",
                curve_lines(&cosine, 1.0),
            ),
        ];
        let title = format!("{}: collapse diagnostics, mean ± std over seeds", spec.name);
        files.push(write_figure(&dir.join("diagnostics"), &title, &panels)?);
    }
    Ok(files)
}

/// Rank-1 and mAP against two of the last epoch's diagnostics: the share of attention off the diagonal (how much
/// the graph mixes) and cos(X′, G) (whether that mixing keeps the input's direction or turns it around). One point
/// per cell group with a graph (mean ± std over seeds), the groups without one (the baseline) as a band (mean and
/// 95% interval, each distinct evaluation once). None when no row has a graph.
fn mixing_panels(results: &Results) -> Option<Vec<Panel>> {
    let has_graph = |i: usize| {
        results.rows[i]
            .measure(Measure::Diagnostic(Diagnostic::OffdiagAttention))
            .is_some()
    };
    let groups = results.groups();
    let with_graph: Vec<&(&str, Vec<usize>)> = groups
        .iter()
        .filter(|(_, rows)| rows.iter().any(|&i| has_graph(i)))
        .collect();
    if with_graph.is_empty() {
        return None;
    }
    let mut baseline_rows: Vec<usize> = groups
        .iter()
        .filter(|(_, rows)| rows.iter().all(|&i| !has_graph(i)))
        .flat_map(|(_, rows)| rows.iter().copied())
        .collect();
    baseline_rows.sort_by(|&a, &b| results.rows[a].eval_key.cmp(&results.rows[b].eval_key));
    baseline_rows.dedup_by(|a, b| results.rows[*a].eval_key == results.rows[*b].eval_key);
    let against = |diagnostic: Diagnostic, what: &str, x_desc: &str| {
        let measure = Measure::Diagnostic(diagnostic);
        let x_of = |i: usize| {
            results.rows[i]
                .measure(measure)
                .map(|v| v * measure.scale())
        };
        [ReportMetric::Rank1, ReportMetric::Map].map(|metric| {
            accuracy_panel(
                results,
                &with_graph,
                &baseline_rows,
                metric,
                &x_of,
                (what, x_desc),
            )
        })
    };
    let [share_r1, share_map] = against(
        Diagnostic::OffdiagAttention,
        "attention off the diagonal",
        "share of Â off the diagonal (%)",
    );
    let [cos_r1, cos_map] = against(
        Diagnostic::GraphCosine,
        "the direction kept",
        "mean cos(X', G)",
    );
    Some(vec![share_r1, share_map, cos_r1, cos_map])
}

/// One panel of [`mixing_panels`]: `metric` against the x value `x_of` gives each row, titled `what` on an axis
/// described by `x_desc`.
fn accuracy_panel(
    results: &Results,
    with_graph: &[&(&str, Vec<usize>)],
    baseline_rows: &[usize],
    metric: ReportMetric,
    x_of: &dyn Fn(usize) -> Option<f64>,
    (what, x_desc): (&str, &str),
) -> Panel {
    let xs: Vec<f64> = with_graph
        .iter()
        .flat_map(|(_, rows)| rows.iter().filter_map(|&i| x_of(i)))
        .collect();
    let (lo, hi) = xs
        .iter()
        .fold((f64::INFINITY, 0f64), |(l, h), &x| (l.min(x), h.max(x)));
    let value = |i: usize| results.rows[i].metric(metric).map(|v| v * 100.0);
    let lines = with_graph
        .iter()
        .map(|(group, rows)| {
            let x: Vec<f64> = rows.iter().filter_map(|&i| x_of(i)).collect();
            let y: Vec<f64> = rows.iter().filter_map(|&i| value(i)).collect();
            Line {
                label: group.to_string(),
                points: vec![(mean(&x), mean(&y), sample_std(&y))],
            }
        })
        .collect();
    let base: Vec<f64> = baseline_rows.iter().filter_map(|&i| value(i)).collect();
    let band = (!base.is_empty()).then(|| {
        let (m, h) = (mean(&base), ci95_half_width(&base));
        let h = if h.is_finite() { h } else { 0.0 };
        Band {
            label: format!(
                "no graph (baseline): mean and 95% interval, n = {}",
                base.len()
            ),
            lo: m - h,
            mid: m,
            hi: m + h,
        }
    });
    Panel {
        title: format!("{} against {what}", metric.label()),
        x_desc: x_desc.into(),
        y_desc: format!("{} (%)", metric.label()),
        lines,
        log_x: lo > 0.0 && hi / lo >= 10.0,
        error_bars: true,
        band,
    }
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
        band: None,
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

#[cfg(test)]
mod tests {
    use super::*;
    use results::tests::table;

    #[test]
    fn a_record_names_only_files_in_its_folder_or_its_figures() {
        for good in ["summary.md", "figures/cmc.png"] {
            assert!(is_report_file_name(good), "{good}");
        }
        for bad in [
            "../x",
            "/etc/passwd",
            "figures/../../x",
            "figures/a/b.png",
            "other/x.png",
            "a/b",
            "",
            ".",
        ] {
            assert!(!is_report_file_name(bad), "{bad}");
        }
    }

    #[test]
    fn the_mixing_figure_puts_graph_groups_at_their_offdiagonal_share_and_the_baseline_in_a_band() {
        let mut results = table(
            &["model.head", "model.gamma"],
            &[
                (&["none", "0.5"], 1, 0.80, 0.7),
                (&["none", "0.5"], 2, 0.84, 0.7),
                (&["none", "2"], 1, 0.80, 0.7),
                (&["none", "2"], 2, 0.84, 0.7),
                (&["mgat", "2"], 1, 0.50, 0.4),
                (&["mgat", "2"], 2, 0.60, 0.4),
            ],
        );
        // The baseline's γ cells share their evaluations (same eval keys): they count once in the band.
        results.rows[2].eval_key = results.rows[0].eval_key.clone();
        results.rows[3].eval_key = results.rows[1].eval_key.clone();
        let offdiag = [None, None, None, None, Some(0.2), Some(0.4)];
        for (row, share) in results.rows.iter_mut().zip(offdiag) {
            if let Some(d) = &mut row.diagnostics {
                d.offdiag_attention = share;
                d.graph_cosine = if share.is_some() {
                    -share.unwrap_or_default()
                } else {
                    1.0
                };
            }
        }
        let panels = mixing_panels(&results).unwrap();
        assert_eq!(panels.len(), 4);
        let rank1 = &panels[0];
        assert_eq!(rank1.lines.len(), 1);
        assert_eq!(rank1.lines[0].label, "head=mgat,gamma=2");
        let (x, y, sd) = rank1.lines[0].points[0];
        // By hand: x = mean(20 %, 40 %) = 30 %; y = mean(50, 60) = 55 %; sd = sqrt(50) points.
        assert!((x - 30.0).abs() < 1e-9 && (y - 55.0).abs() < 1e-9);
        assert!((sd - 50f64.sqrt()).abs() < 1e-9);
        // Band over 80 and 84: mean 82, half-width t(0.975, 1) · sd / √2 = 12.706 · 2.828 / 1.414.
        let band = rank1.band.as_ref().unwrap();
        assert!((band.mid - 82.0).abs() < 1e-9);
        assert!((band.hi - band.mid - 12.7062 * 8f64.sqrt() / 2f64.sqrt()).abs() < 1e-3);
        assert!(band.label.ends_with("n = 2"), "{}", band.label);
        assert!(!rank1.log_x, "20 to 40 % spans less than ten times");
        // The cosine panels: the same groups at their mean cosine, unscaled (−0.2 and −0.4 → −0.3).
        let (x, y, _) = panels[2].lines[0].points[0];
        assert!((x + 0.3).abs() < 1e-9 && (y - 55.0).abs() < 1e-9, "{x} {y}");
        assert!(panels[2].title.contains("direction"), "{}", panels[2].title);
        assert_eq!(panels[3].band, panels[1].band);
        for row in &mut results.rows {
            if let Some(d) = &mut row.diagnostics {
                d.offdiag_attention = None;
            }
        }
        assert!(mixing_panels(&results).is_none());
    }
}
