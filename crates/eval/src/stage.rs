//! The eval stage kind: rebuilds the network a train entry trained, extracts query and gallery features with the
//! backbone alone, scores them with the dataset's protocol and writes `metrics.json`, `cmc.csv` and the ranked lists
//! (`ranked.json` and `thumbs/`, [`crate::ranked`]).

use crate::config::EvalKey;
use crate::extract::{ExtractError, Extraction};
use crate::metrics::{EvalSummary, Evaluator, Ids, MetricsError, ScoringError};
use crate::ranked;
use candle_core::{DType, Device};
use mgat_data::DatasetIndex;
use mgat_data::index::Item;
use mgat_model::Network;
use mgat_model::params::{ModelError, Params, open_device};
use mgat_stage::{Failure, Inputs, OutputError, Placement, Produced, Progress, Stage};
use mgat_util::fsio::IoError;
use std::fmt::Write as _;
use std::path::Path;

pub const METRICS_FILE: &str = "metrics.json";
pub const CMC_FILE: &str = "cmc.csv";

#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Extract(#[from] ExtractError),
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    #[error(transparent)]
    Scoring(#[from] ScoringError),
    #[error(transparent)]
    Io(#[from] IoError),
    /// Re-ranking or query expansion settings the evaluated set cannot satisfy (more neighbours than items).
    #[error("{0}")]
    Settings(String),
    /// An output file that could not be written.
    #[error("{0}")]
    Output(String),
}

pub struct Eval;

impl Stage for Eval {
    const KIND: &'static str = "eval";
    const CONSUMES: &'static [&'static str] = &["train", "index", "synth"];
    const RESULT_FILE: Option<&'static str> = Some(METRICS_FILE);
    const USES_DEVICE: bool = true;
    const FLOAT_NUMERICS: bool = true;
    type Key = EvalKey;
    type Summary = EvalSummary;

    fn run(
        key: &EvalKey,
        inputs: &Inputs,
        placement: &Placement,
        out: &Path,
        progress: &dyn Progress,
    ) -> Result<Produced<EvalSummary>, Failure> {
        let (device, device_name) =
            open_device(placement.device).map_err(|e| classify(e.into()))?;
        let index = mgat_data::stage::read_index(inputs.entry("index")?)?;
        let weights = inputs.entry("train")?.join(mgat_model::MODEL_FILE);
        let dataset = mgat_data::image::PinnedTree::of(inputs);
        let eval_inputs = EvalInputs {
            dataset: &dataset,
            index: &index,
            weights: &weights,
            device: &device,
        };
        let progress = EvalProgress {
            on_length: &|n| progress.set_length(n),
            on_images: &|n| progress.advance(n as u64),
            on_phase: &|phase| progress.set_message(phase.to_string()),
        };
        let summary = evaluate(key, &eval_inputs, out, &progress).map_err(classify)?;
        Ok(Produced {
            device: device_name,
            summary,
        })
    }
}

/// The metrics an eval entry (at `entry`) computed, read from its `metrics.json`.
pub fn read_metrics(entry: &Path) -> Result<crate::metrics::MetricsFile, OutputError> {
    let path = entry.join(METRICS_FILE);
    let bytes = std::fs::read(&path).map_err(|e| OutputError::new(&path, e))?;
    serde_json::from_slice(&bytes).map_err(|e| OutputError::new(&path, e))
}

/// The CMC curve an eval entry computed, read from its `cmc.csv` (rank 1 first).
pub fn read_cmc(entry: &Path) -> Result<Vec<f64>, OutputError> {
    let path = entry.join(CMC_FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| OutputError::new(&path, e))?;
    let mut lines = text.lines();
    if lines.next() != Some("rank,cmc") {
        return Err(OutputError::new(&path, "the header is not `rank,cmc`"));
    }
    lines
        .enumerate()
        .map(|(i, line)| {
            let value = line
                .split_once(',')
                .map(|(rank, v)| (rank.parse::<usize>(), v.parse::<f64>()));
            match value {
                Some((Ok(rank), Ok(v))) if rank == i + 1 => Ok(v),
                _ => Err(OutputError::new(
                    &path,
                    format!("line {}: `{line}` is not `{},<value>`", i + 2, i + 1),
                )),
            }
        })
        .collect()
}

/// An image that does not decode is the dataset's fault; weights or a device that do not fit are the user's; the
/// rest fails the computation.
fn classify(error: EvalError) -> Failure {
    let bad_input = match &error {
        EvalError::Extract(ExtractError::Image(_)) | EvalError::Settings(_) => true,
        EvalError::Model(e) => e.is_bad_input(),
        _ => false,
    };
    Failure {
        bad_input,
        error: error.into(),
    }
}

/// What an evaluation reads: the dataset's images (pinned to their digests) and its index, the trained weights, the
/// device.
pub struct EvalInputs<'a> {
    pub dataset: &'a mgat_data::image::PinnedTree,
    pub index: &'a DatasetIndex,
    pub weights: &'a Path,
    pub device: &'a Device,
}

/// How far it got: `on_length(total images)` once, then `on_images(n)` as features are extracted.
pub struct EvalProgress<'a> {
    pub on_length: &'a dyn Fn(u64),
    pub on_images: &'a dyn Fn(usize),
    pub on_phase: &'a dyn Fn(&str),
}

/// Evaluates the weights at `inputs.weights` as `key` says, writing `metrics.json` and `cmc.csv` into `out`.
pub fn evaluate(
    key: &EvalKey,
    inputs: &EvalInputs,
    out: &Path,
    progress: &EvalProgress,
) -> Result<EvalSummary, EvalError> {
    let (index, eval) = (inputs.index, &key.eval);
    let mut params = Params::new(inputs.device.clone(), DType::F32, 0);
    let net = Network::new(&mut params, &key.model, index.num_train_pids)?;
    params.load(inputs.weights, |_| true)?;
    let extraction = Extraction {
        backbone: &net.backbone,
        device: inputs.device,
        height: key.height,
        width: key.width,
        flip: eval.flip,
        batch_size: eval.batch_size as usize,
    };
    (progress.on_length)((index.query.len() + index.gallery.len()) as u64);
    (progress.on_phase)("extracting features");
    let qf = extraction.features(inputs.dataset, &index.query, progress.on_images)?;
    let gf = extraction.features(inputs.dataset, &index.gallery, progress.on_images)?;
    let (qf, gf) = match &eval.query_expansion {
        Some(qe) => {
            (progress.on_phase)("expanding queries");
            qe.check(qf.rows + gf.rows)
                .map_err(|e| EvalError::Settings(format!("eval.query_expansion: {e}")))?;
            qe.expand(&qf, &gf)
                .map_err(|e| EvalError::Settings(e.to_string()))?
        }
        None => (qf, gf),
    };
    (progress.on_phase)("scoring");
    let pids = |items: &[Item]| items.iter().map(|i| i.pid).collect::<Vec<_>>();
    let cams = |items: &[Item]| items.iter().map(|i| i64::from(i.camid)).collect::<Vec<_>>();
    let (q_pids, g_pids) = (pids(&index.query), pids(&index.gallery));
    let (q_camids, g_camids) = (cams(&index.query), cams(&index.gallery));
    let ids = Ids {
        q_pids: &q_pids,
        g_pids: &g_pids,
        q_camids: &q_camids,
        g_camids: &g_camids,
    };
    let mut evaluator = Evaluator::new(ids, eval.protocol, eval.max_rank as usize)?
        .keep_ranked_lists(ranked::LIST_LENGTH);
    match &eval.rerank {
        Some(params) => {
            params
                .check(qf.rows + gf.rows)
                .map_err(|e| EvalError::Settings(format!("eval.rerank: {e}")))?;
            let joint = crate::rerank::Features::new(&qf, &gf, eval.metric, eval.normalize);
            crate::rerank::rerank(&joint, params, |rows| evaluator.add_rows(rows))
                .map_err(EvalError::Metrics)?;
        }
        None => evaluator.add_features(&qf, &gf, eval.metric, eval.normalize)?,
    }
    let lists = evaluator.ranked_lists();
    let metrics = evaluator.finish()?;
    (progress.on_phase)("writing ranked lists");
    ranked::write(&lists, out, &|side, i| {
        let items = match side {
            ranked::Side::Query => &index.query,
            ranked::Side::Gallery => &index.gallery,
        };
        let item = items
            .get(i as usize)
            .ok_or_else(|| format!("no item {i} in the index"))?;
        inputs
            .dataset
            .load_resized(&item.path, ranked::THUMB_HEIGHT, ranked::THUMB_WIDTH)
            .map_err(|e| e.to_string())
    })
    .map_err(|e| EvalError::Output(e.to_string()))?;

    let json = serde_json::to_string_pretty(&metrics.record())
        .map_err(|e| IoError::new(out, std::io::Error::other(e)))?;
    mgat_util::fsio::write_atomic(&out.join(METRICS_FILE), (json + "\n").as_bytes())?;
    let mut csv = String::from("rank,cmc\n");
    for (k, v) in metrics.cmc.iter().enumerate() {
        let _ = writeln!(csv, "{},{v:.6}", k + 1);
    }
    mgat_util::fsio::write_atomic(&out.join(CMC_FILE), csv.as_bytes())?;
    Ok(metrics.summary())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cmc_curve_reads_back_rank_by_rank() {
        let dir = mgat_testutil::tempdir();
        std::fs::write(dir.join(CMC_FILE), "rank,cmc\n1,0.500000\n2,0.750000\n").unwrap();
        assert_eq!(read_cmc(&dir).unwrap(), [0.5, 0.75]);
        std::fs::write(dir.join(CMC_FILE), "rank,cmc\n1,0.5\n3,0.75\n").unwrap();
        assert!(read_cmc(&dir).unwrap_err().to_string().contains("line 3"));
        std::fs::remove_file(dir.join(CMC_FILE)).unwrap();
        assert!(read_cmc(&dir).unwrap_err().to_string().contains(CMC_FILE));
    }
}
