//! The `train` stage: trains the cell's network on the index stage's training split, resuming from the last
//! epoch checkpoint in its partial directory, and leaves `model.safetensors` and `train_log.csv`.

use super::{
    Produced, StageEnv, StageError,
    index::{INDEX_FILE, dataset_root},
};
use crate::data::DatasetIndex;
use crate::model::params::device;
use crate::plan::{Stage, pretrained_path};
use crate::spec::RunConfig;
use crate::spec::config::Precision;
use crate::train::train;
use indicatif::ProgressBar;
use serde_json::json;
use std::path::{Path, PathBuf};

pub fn run(
    env: &StageEnv,
    stage: &Stage,
    out: &Path,
    bar: &ProgressBar,
) -> Result<Produced, StageError> {
    let (index, root) = indexed_dataset(env, &env.plan.stages[stage.deps[0]])?;
    let cfg = cell_config(env, stage);
    let (device, device_name) = device(&cfg.train.device)?;
    if cfg.train.precision == Precision::Bf16 && device.is_cpu() {
        return Err(StageError::Setting(format!(
            "train.precision: bf16 needs a CUDA device, and this stage runs on {device_name} \
             (set train.device to cuda, or train.precision to fp32)"
        )));
    }
    tracing::info!(
        "{}: training {:?} ({:?} head) on {device_name}",
        stage.label(),
        cfg.model.backbone,
        cfg.model.head
    );
    let pretrained = cfg
        .model
        .pretrained
        .as_ref()
        .map(|p| {
            pretrained_path(env.lock, p).map_err(|message| {
                StageError::Setting(format!("model.pretrained `{p}`: {message}"))
            })
        })
        .transpose()?;
    let log = train(
        cfg,
        &index,
        &root,
        out,
        &device,
        pretrained.as_deref(),
        &|done, total, epoch| {
            bar.set_length(total);
            bar.set_position(done);
            if let Some(e) = epoch {
                bar.set_message(format!(
                    "epoch {} loss {:.3} acc {:.2} {:.0} img/s",
                    e.epoch, e.loss, e.accuracy, e.images_per_s
                ));
            }
        },
    )?;
    let last = log.last();
    let seconds: f64 = log.iter().map(|e| e.seconds).sum();
    let images: f64 = log.iter().map(|e| e.images_per_s * e.seconds).sum();
    let summary = json!({
        "epochs": log.len(),
        "final_loss": last.map(|e| e.loss),
        "final_id_loss": last.map(|e| e.id_loss),
        "final_accuracy": last.map(|e| e.accuracy),
        "train_seconds": seconds,
        "images_per_s": images / seconds.max(1e-9),
    });
    Ok(Produced {
        device: device_name,
        summary,
    })
}

/// The configuration of the (first) cell using `stage`: every cell sharing a stage agrees on what it reads.
pub fn cell_config<'a>(env: &'a StageEnv, stage: &Stage) -> &'a RunConfig {
    &env.plan.cells[stage.cells[0]].cell.config
}

/// The dataset behind `index_stage`: its index, and its root on this machine.
pub fn indexed_dataset(
    env: &StageEnv,
    index_stage: &Stage,
) -> Result<(DatasetIndex, PathBuf), StageError> {
    Ok((
        read_index(env, index_stage)?,
        dataset_root(env, index_stage)?,
    ))
}

/// The index stage's `index.json`.
fn read_index(env: &StageEnv, index_stage: &Stage) -> Result<DatasetIndex, StageError> {
    let path = env
        .cache
        .entry_dir(index_stage.kind.name(), &index_stage.key)
        .join(INDEX_FILE);
    let text = std::fs::read(&path).map_err(|source| StageError::Io {
        path: path.clone(),
        source,
    })?;
    serde_json::from_slice(&text).map_err(|e| StageError::Io {
        path,
        source: e.into(),
    })
}
