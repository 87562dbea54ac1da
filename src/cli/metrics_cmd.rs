//! `mgat metrics`: score a distance matrix (or query/gallery features) from any source with mgat's protocol.

use super::UsageError;
use crate::eval::array::{ArrayError, Matrix, load_ids, load_matrix};
use crate::eval::metrics::{Evaluator, Ids, Metrics, MetricsError, ScoringError};
use crate::spec::config::{Metric, Protocol};
use anyhow::Result;
use clap::{Args, ValueEnum};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Args, Debug)]
pub struct MetricsArgs {
    /// Folder with `distmat` (unless --qf/--gf) and `q_pids`, `g_pids`, `q_camids`, `g_camids`, each as .npy,
    /// .csv or .txt.
    #[arg(long)]
    dir: PathBuf,
    #[arg(long, value_enum, default_value_t = ProtocolArg::Market1501)]
    protocol: ProtocolArg,
    /// Last CMC rank (clamped to the gallery size).
    #[arg(long, default_value_t = 50)]
    max_rank: usize,
    /// Query features (Q×D); with --gf, distances are computed instead of read from `distmat`.
    #[arg(long, requires = "gf")]
    qf: Option<PathBuf>,
    /// Gallery features (G×D).
    #[arg(long, requires = "qf")]
    gf: Option<PathBuf>,
    /// Distance between features.
    #[arg(long, value_enum, default_value_t = MetricArg::Euclidean)]
    metric: MetricArg,
    /// L2-normalise features before the distance.
    #[arg(long)]
    normalize: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ProtocolArg {
    Market1501,
    Cuhk03,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum MetricArg {
    /// Squared euclidean, as torchreid.
    Euclidean,
    /// 1 − cosine similarity.
    Cosine,
}

/// Errors of reading or scoring the inputs: all bad input (exit 2).
#[derive(Debug, thiserror::Error)]
pub enum ScoreError {
    #[error(transparent)]
    Array(#[from] ArrayError),
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    #[error(transparent)]
    Scoring(#[from] ScoringError),
    #[error("{path}: {found} {what}, but {other} has {expected}")]
    Shape {
        path: PathBuf,
        found: usize,
        what: &'static str,
        other: String,
        expected: usize,
    },
}

pub fn run(args: MetricsArgs) -> Result<ExitCode> {
    let protocol = match args.protocol {
        ProtocolArg::Market1501 => Protocol::Market1501,
        ProtocolArg::Cuhk03 => Protocol::Cuhk03,
    };
    let find = |name: &str| find_input(&args.dir, name);
    let (q_pids, g_pids) = (load_ids(&find("q_pids")?)?, load_ids(&find("g_pids")?)?);
    let (q_camids, g_camids) = (load_ids(&find("q_camids")?)?, load_ids(&find("g_camids")?)?);
    let ids = Ids {
        q_pids: &q_pids,
        g_pids: &g_pids,
        q_camids: &q_camids,
        g_camids: &g_camids,
    };
    let mut evaluator = Evaluator::new(ids, protocol, args.max_rank).map_err(ScoreError::from)?;
    match (&args.qf, &args.gf) {
        (Some(qf), Some(gf)) => {
            let (q, g) = (load_matrix(qf)?, load_matrix(gf)?);
            check_rows(qf, &q, "query", q_pids.len())?;
            check_rows(gf, &g, "gallery", g_pids.len())?;
            let metric = match args.metric {
                MetricArg::Euclidean => Metric::Euclidean,
                MetricArg::Cosine => Metric::Cosine,
            };
            evaluator
                .add_features(&q, &g, metric, args.normalize)
                .map_err(ScoreError::from)?;
        }
        _ => {
            let path = find("distmat")?;
            let d = load_matrix(&path)?;
            check_rows(&path, &d, "query", q_pids.len())?;
            if d.cols != g_pids.len() {
                let other = "g_pids".to_string();
                return Err(ScoreError::Shape {
                    path,
                    found: d.cols,
                    what: "columns",
                    other,
                    expected: g_pids.len(),
                }
                .into());
            }
            evaluator.add_rows(&d.data).map_err(ScoreError::from)?;
        }
    }
    let metrics = evaluator.finish().map_err(ScoreError::from)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&metrics.record())?);
    } else {
        print_table(&metrics, args.protocol);
    }
    Ok(ExitCode::SUCCESS)
}

fn check_rows(
    path: &Path,
    m: &Matrix,
    what: &'static str,
    expected: usize,
) -> Result<(), ScoreError> {
    if m.rows == expected {
        return Ok(());
    }
    let other = format!("{}_pids", &what[..1]);
    Err(ScoreError::Shape {
        path: path.to_path_buf(),
        found: m.rows,
        what: if what == "query" {
            "query rows"
        } else {
            "gallery rows"
        },
        other,
        expected,
    })
}

/// `DIR/NAME.npy`, else `.csv`, else `.txt`.
fn find_input(dir: &Path, name: &str) -> Result<PathBuf, UsageError> {
    ["npy", "csv", "txt"]
        .iter()
        .map(|ext| dir.join(format!("{name}.{ext}")))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            UsageError(format!(
                "{}: no {name}.npy, {name}.csv or {name}.txt",
                dir.display()
            ))
        })
}

fn print_table(m: &Metrics, protocol: ProtocolArg) {
    println!(
        "{} protocol: {} queries ({} with a valid match), {} gallery images",
        format!("{protocol:?}").to_lowercase(),
        m.num_query,
        m.num_valid_query,
        m.num_gallery
    );
    for k in crate::eval::metrics::REPORTED_RANKS {
        if let Some(v) = m.rank(k) {
            println!("  rank-{k:<3} {:6.2}%", 100.0 * v);
        }
    }
    println!("  mAP      {:6.2}%", 100.0 * m.map);
    println!("  mINP     {:6.2}%", 100.0 * m.minp);
}
