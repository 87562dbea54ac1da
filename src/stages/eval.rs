//! The `eval` stage: rebuilds the trained network, extracts query and gallery features with the backbone alone,
//! scores them with the dataset's protocol and writes `metrics.json` and `cmc.csv`.

use super::train::cell_config;
use super::{Produced, StageEnv, StageError};
use crate::cache::Summary;
use crate::eval::extract::Extraction;
use crate::eval::metrics::{Evaluator, Ids};
use crate::model::Network;
use crate::model::params::{Params, device};
use crate::plan::Stage;
use crate::plan::{EvalKey, StageConfig, StageKind};
use crate::train::MODEL_FILE;
use candle_core::DType;
use indicatif::ProgressBar;
use std::fmt::Write as _;
use std::path::Path;

pub const METRICS_FILE: &str = "metrics.json";
pub const CMC_FILE: &str = "cmc.csv";

pub fn run(
    env: &StageEnv,
    stage: &Stage,
    out: &Path,
    bar: &ProgressBar,
    pool_device: Option<&str>,
) -> Result<Produced, StageError> {
    let (root, index) = env.verified_dataset(stage, bar)?;
    let index =
        index.ok_or_else(|| StageError::Plan(format!("{} read no index", stage.label())))?;
    let StageConfig::Eval(EvalKey { eval }) = &stage.inputs.config else {
        return Err(StageError::Plan(format!(
            "{} has no eval configuration",
            stage.label()
        )));
    };
    let trained = env.train_key(stage)?;
    let (device, device_name) =
        device(pool_device.unwrap_or(&cell_config(env, stage).train.device))?;
    let mut params = Params::new(device.clone(), DType::F32, 0);
    let net = Network::new(&mut params, &trained.model, index.num_train_pids)?;
    params.load(
        &env.input_dir(stage, StageKind::Train)?.join(MODEL_FILE),
        |_| true,
    )?;

    let extraction = Extraction {
        backbone: &net.backbone,
        device: &device,
        height: trained.train.height,
        width: trained.train.width,
        flip: eval.flip,
        batch_size: eval.batch_size as usize,
    };
    bar.set_length((index.query.len() + index.gallery.len()) as u64);
    bar.set_message("extracting features");
    let tick = |n: usize| bar.inc(n as u64);
    let qf = extraction.features(&root, &index.query, &tick)?;
    let gf = extraction.features(&root, &index.gallery, &tick)?;
    bar.set_message("scoring");
    let pids = |items: &[crate::data::index::Item]| items.iter().map(|i| i.pid).collect::<Vec<_>>();
    let cams = |items: &[crate::data::index::Item]| {
        items.iter().map(|i| i64::from(i.camid)).collect::<Vec<_>>()
    };
    let (q_pids, g_pids, q_camids, g_camids) = (
        pids(&index.query),
        pids(&index.gallery),
        cams(&index.query),
        cams(&index.gallery),
    );
    let ids = Ids {
        q_pids: &q_pids,
        g_pids: &g_pids,
        q_camids: &q_camids,
        g_camids: &g_camids,
    };
    let mut evaluator = Evaluator::new(ids, eval.protocol, eval.max_rank as usize)?;
    evaluator.add_features(&qf, &gf, eval.metric, eval.normalize)?;
    let metrics = evaluator.finish()?;

    let json = serde_json::to_string_pretty(&metrics.record())
        .map_err(|e| StageError::Plan(e.to_string()))?;
    crate::fsio::write_atomic(&out.join(METRICS_FILE), (json + "\n").as_bytes())?;
    let mut csv = String::from("rank,cmc\n");
    for (k, v) in metrics.cmc.iter().enumerate() {
        let _ = writeln!(csv, "{},{v:.6}", k + 1);
    }
    crate::fsio::write_atomic(&out.join(CMC_FILE), csv.as_bytes())?;
    Ok(Produced {
        device: device_name,
        summary: Summary::Eval(metrics.summary()),
    })
}
