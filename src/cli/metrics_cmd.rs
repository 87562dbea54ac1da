//! `mgat metrics`: score a distance matrix (or query/gallery features) from any source with mgat's protocol.

use crate::spec::config::{Metric, Protocol};
use anyhow::Result;
use clap::{Args, ValueEnum};
use mgat_eval::array::{ArrayError, load_ids, load_matrix};
use mgat_eval::metrics::{Evaluator, Ids, Metrics, MetricsError, ScoringError};
use mgat_eval::query_expansion::QueryExpansion;
use mgat_eval::rerank::{Features, Matrices, Rerank, rerank};
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
    /// Re-rank with k-reciprocal encoding (Zhong et al. 2017) as torchreid's `re_ranking` does. From --qf/--gf, or
    /// from `distmat`, `distmat_qq` and `distmat_gg` in --dir (the query–query and gallery–gallery distances).
    #[arg(long)]
    rerank: bool,
    /// Re-ranking: neighbours of the k-reciprocal sets.
    #[arg(long, requires = "rerank", default_value_t = 20)]
    k1: usize,
    /// Re-ranking: neighbours averaged in local query expansion (1: none).
    #[arg(long, requires = "rerank", default_value_t = 6)]
    k2: usize,
    /// Re-ranking: weight of the original distance against the Jaccard distance.
    #[arg(long, requires = "rerank", default_value_t = 0.3)]
    lambda: f64,
    /// α-weighted average query expansion (fast-reid's `TEST.AQE`) of --qf/--gf before their distances: each
    /// feature becomes the mean of its --qe-k nearest (by cosine, queries and gallery together, itself first), each
    /// weighted by its similarity to the power --qe-alpha.
    #[arg(long, requires = "qf")]
    qe: bool,
    /// Query expansion: neighbours averaged, the item itself among them.
    #[arg(long, requires = "qe", default_value_t = 5)]
    qe_k: usize,
    /// Query expansion: the exponent of each neighbour's similarity in its weight.
    #[arg(
        long,
        requires = "qe",
        default_value_t = 3.0,
        allow_negative_numbers = true
    )]
    qe_alpha: f64,
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
    #[error("{}: {found} {what}, but {} has {expected}", path.display(), other.display())]
    Shape {
        path: PathBuf,
        found: usize,
        what: &'static str,
        other: PathBuf,
        expected: usize,
    },
    #[error("{}: the features have no dimensions (0 columns)", .0.display())]
    NoDimensions(PathBuf),
    #[error("{0}")]
    Usage(String),
    #[error(
        "{}: row {row} has a squared length of {squared:.1e}, so its distances overflow to infinity; scale the features down",
        path.display()
    )]
    Overflow {
        path: PathBuf,
        row: usize,
        squared: f64,
    },
}

/// The query expansion when `--qe` was given, checked against the `items` (queries and gallery) there are.
fn expansion(args: &MetricsArgs, items: usize) -> Result<Option<QueryExpansion>, ScoreError> {
    if !args.qe {
        return Ok(None);
    }
    let qe = QueryExpansion {
        k: args.qe_k,
        alpha: args.qe_alpha,
    };
    qe.check(items)
        .map_err(|e| ScoreError::Usage(format!("--qe: {e}")))?;
    Ok(Some(qe))
}

/// The re-ranking parameters when `--rerank` was given, checked against the `items` (queries and gallery) there are.
fn rerank_params(args: &MetricsArgs, items: usize) -> Result<Option<Rerank>, ScoreError> {
    if !args.rerank {
        return Ok(None);
    }
    let params = Rerank {
        k1: args.k1,
        k2: args.k2,
        lambda: args.lambda,
    };
    params
        .check(items)
        .map_err(|e| ScoreError::Usage(format!("--rerank: {e}")))?;
    Ok(Some(params))
}

/// Refuses features whose distances would not be finite in f32: a squared distance is at most twice the sum of the
/// two squared lengths, so each squared length must stay under a quarter of `f32::MAX`.
fn check_scale(path: &std::path::Path, m: &mgat_eval::array::Matrix) -> Result<(), ScoreError> {
    let limit = f64::from(f32::MAX) / 4.0;
    for (row, values) in m.data.chunks(m.cols.max(1)).enumerate() {
        let squared: f64 = values.iter().map(|&v| f64::from(v) * f64::from(v)).sum();
        if squared > limit {
            return Err(ScoreError::Overflow {
                path: path.to_path_buf(),
                row,
                squared,
            });
        }
    }
    Ok(())
}

pub fn run(args: MetricsArgs) -> Result<ExitCode> {
    let protocol = match args.protocol {
        ProtocolArg::Market1501 => Protocol::Market1501,
        ProtocolArg::Cuhk03 => Protocol::Cuhk03,
    };
    let read =
        |name: &str| -> Result<(PathBuf, Vec<i64>)> { Ok(load_one(&args.dir, name, load_ids)?) };
    let (q_pids_path, q_pids) = read("q_pids")?;
    let (g_pids_path, g_pids) = read("g_pids")?;
    let (q_cam_path, q_camids) = read("q_camids")?;
    let (g_cam_path, g_camids) = read("g_camids")?;
    same_length(
        &q_cam_path,
        q_camids.len(),
        "entries",
        &q_pids_path,
        q_pids.len(),
    )?;
    same_length(
        &g_cam_path,
        g_camids.len(),
        "entries",
        &g_pids_path,
        g_pids.len(),
    )?;
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
            if q.cols == 0 {
                return Err(ScoreError::NoDimensions(qf.clone()).into());
            }
            same_length(qf, q.rows, "rows", &q_pids_path, q_pids.len())?;
            same_length(gf, g.rows, "rows", &g_pids_path, g_pids.len())?;
            same_length(gf, g.cols, "columns (feature dimensions)", qf, q.cols)?;
            check_scale(qf, &q)?;
            check_scale(gf, &g)?;
            let (q, g) = match expansion(&args, q.rows + g.rows)? {
                Some(qe) => qe
                    .expand(&q, &g)
                    .map_err(|e| ScoreError::Usage(e.to_string()))?,
                None => (q, g),
            };
            let metric = match args.metric {
                MetricArg::Euclidean => Metric::Euclidean,
                MetricArg::Cosine => Metric::Cosine,
            };
            match rerank_params(&args, q.rows + g.rows)? {
                Some(params) => {
                    let joint = Features::new(&q, &g, metric, args.normalize);
                    drop((q, g));
                    rerank(&joint, &params, |rows| evaluator.add_rows(rows))
                        .map_err(ScoreError::from)?;
                }
                None => evaluator
                    .add_features(&q, &g, metric, args.normalize)
                    .map_err(ScoreError::from)?,
            }
        }
        _ => {
            let (path, d) = load_one(&args.dir, "distmat", load_matrix)?;
            same_length(
                &path,
                d.rows,
                "rows (one per query)",
                &q_pids_path,
                q_pids.len(),
            )?;
            same_length(
                &path,
                d.cols,
                "columns (one per gallery image)",
                &g_pids_path,
                g_pids.len(),
            )?;
            match rerank_params(&args, d.rows + d.cols)? {
                Some(params) => {
                    let (qq_path, qq) = load_one(&args.dir, "distmat_qq", load_matrix)?;
                    let (gg_path, gg) = load_one(&args.dir, "distmat_gg", load_matrix)?;
                    for (p, m, n) in [(&qq_path, &qq, d.rows), (&gg_path, &gg, d.cols)] {
                        same_length(p, m.rows, "rows", &path, n)?;
                        same_length(p, m.cols, "columns", &path, n)?;
                    }
                    let joint = Matrices {
                        qg: &d.data,
                        qq: &qq.data,
                        gg: &gg.data,
                        q: d.rows,
                        g: d.cols,
                    };
                    rerank(&joint, &params, |rows| evaluator.add_rows(rows))
                        .map_err(ScoreError::from)?;
                }
                None => evaluator.add_rows(&d.data).map_err(ScoreError::from)?,
            }
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

/// An error naming both files unless `found` (of `path`) equals `expected` (of `other`).
fn same_length(
    path: &Path,
    found: usize,
    what: &'static str,
    other: &Path,
    expected: usize,
) -> Result<(), ScoreError> {
    match found == expected {
        true => Ok(()),
        false => Err(ScoreError::Shape {
            path: path.to_path_buf(),
            found,
            what,
            other: other.to_path_buf(),
            expected,
        }),
    }
}

/// `DIR/NAME` as `.npy`, `.csv` or `.txt`, loaded with `load`: the first that exists; when several do, they must
/// hold the same values (none is preferred silently over another).
fn load_one<T: PartialEq>(
    dir: &Path,
    name: &str,
    load: impl Fn(&Path) -> Result<T, ArrayError>,
) -> Result<(PathBuf, T), ScoreError> {
    let found: Vec<PathBuf> = ["npy", "csv", "txt"]
        .iter()
        .map(|ext| dir.join(format!("{name}.{ext}")))
        .filter(|p| p.symlink_metadata().is_ok())
        .collect();
    let Some(first) = found.first() else {
        return Err(ScoreError::Usage(format!(
            "{}: no {name}.npy, {name}.csv or {name}.txt",
            dir.display()
        )));
    };
    let value = load(first)?;
    for other in &found[1..] {
        if load(other)? != value {
            return Err(ScoreError::Usage(format!(
                "{} and {} hold different values; keep one",
                first.display(),
                other.display()
            )));
        }
    }
    Ok((first.clone(), value))
}

fn print_table(m: &Metrics, protocol: ProtocolArg) {
    println!(
        "{} protocol: {} queries ({} with a valid match), {} gallery images",
        format!("{protocol:?}").to_lowercase(),
        m.num_query,
        m.num_valid_query,
        m.num_gallery
    );
    for k in mgat_eval::metrics::REPORTED_RANKS {
        if let Some(v) = m.rank(k) {
            println!("  rank-{k:<3} {:6.2}%", 100.0 * v);
        }
    }
    println!("  mAP      {:6.2}%", 100.0 * m.map);
    println!("  mINP     {:6.2}%", 100.0 * m.minp);
}
