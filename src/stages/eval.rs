//! The `eval` stage: rebuilds the trained network, extracts query and gallery features with the backbone alone,
//! scores them with the dataset's protocol and writes `metrics.json` and `cmc.csv`.

use super::train::{cell_config, indexed_dataset};
use super::{Produced, StageEnv, StageError};
use crate::eval::extract::Extraction;
use crate::eval::metrics::{Evaluator, Ids};
use crate::model::Network;
use crate::model::params::{Params, device};
use crate::plan::Stage;
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
) -> Result<Produced, StageError> {
    let (train_stage, index_stage) = (
        &env.plan.stages[stage.deps[0]],
        &env.plan.stages[stage.deps[1]],
    );
    let (index, root) = indexed_dataset(env, index_stage)?;
    let cfg = cell_config(env, stage);
    let (device, device_name) = device(&cfg.train.device)?;
    let mut params = Params::new(device.clone(), DType::F32, 0);
    let net = Network::new(&mut params, &cfg.model, index.num_train_pids)?;
    params.load(
        &env.cache
            .entry_dir(train_stage.kind.name(), &train_stage.key)
            .join(MODEL_FILE),
        |_| true,
    )?;

    let extraction = Extraction {
        backbone: &net.backbone,
        device: &device,
        height: cfg.train.height,
        width: cfg.train.width,
        flip: cfg.eval.flip,
        batch_size: cfg.eval.batch_size as usize,
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
    let mut evaluator = Evaluator::new(ids, cfg.eval.protocol, cfg.eval.max_rank as usize)?;
    evaluator.add_features(&qf, &gf, cfg.eval.metric, cfg.eval.normalize)?;
    let metrics = evaluator.finish()?;

    let json = metrics.to_json();
    let path = out.join(METRICS_FILE);
    std::fs::write(
        &path,
        serde_json::to_string_pretty(&json).unwrap_or_default() + "\n",
    )
    .map_err(|source| StageError::Io { path, source })?;
    let mut csv = String::from("rank,cmc\n");
    for (k, v) in metrics.cmc.iter().enumerate() {
        let _ = writeln!(csv, "{},{v:.6}", k + 1);
    }
    let path = out.join(CMC_FILE);
    std::fs::write(&path, csv).map_err(|source| StageError::Io { path, source })?;
    let summary = serde_json::json!({"rank1": metrics.rank(1), "mAP": metrics.map, "mINP": metrics.minp, "num_valid_query": metrics.num_valid_query});
    Ok(Produced {
        device: device_name,
        summary,
    })
}
