//! The `train` stage: trains the cell's network on the index stage's training split, resuming from the last
//! epoch checkpoint in its partial directory, and leaves `model.safetensors` and `train_log.csv`. The dataset is
//! checked against `datasets.lock` first: it may have changed since it was indexed.

use super::{Produced, StageEnv, StageError};
use crate::cache::Summary;
use crate::model::params::device;
use crate::plan::{Stage, pretrained_path};
use crate::spec::RunConfig;
use crate::spec::config::Precision;
use crate::train::{TrainSummary, train};
use indicatif::ProgressBar;
use std::path::Path;

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
    let key = env.train_key(stage)?;
    // Where it runs and with how many decoding threads are the cell's, outside the key.
    let cell = cell_config(env, stage);
    let (device, device_name) = device(pool_device.unwrap_or(&cell.train.device))?;
    if key.train.precision == Precision::Bf16 && device.is_cpu() {
        return Err(StageError::Setting(format!(
            "train.precision: bf16 needs a CUDA device, and this stage runs on {device_name} \
             (set train.device to cuda, or train.precision to fp32)"
        )));
    }
    tracing::info!(
        "{}: training {:?} ({:?} head) on {device_name}",
        stage.label(),
        key.model.backbone,
        key.model.head
    );
    let pretrained = cell
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
        key,
        cell.train.workers,
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
    Ok(Produced {
        device: device_name,
        summary: Summary::Train(TrainSummary::of(&log)),
    })
}

/// The configuration of the (first) cell using `stage`: every cell sharing a stage agrees on what it reads.
pub fn cell_config<'a>(env: &'a StageEnv, stage: &Stage) -> &'a RunConfig {
    &env.plan.cells[stage.cells[0]].cell.config
}
