//! The train stage kind: trains the network its key describes on the dataset its index lists, writing the weights,
//! `train_log.csv` and resumable checkpoints.

use crate::key::TrainKey;
use crate::{TrainError, TrainSummary};
use mgat_model::config::Precision;
use mgat_model::params::open_device;
use mgat_stage::{Failure, Inputs, OutputError, Placement, Produced, Progress, Stage};
use std::path::Path;

pub struct Train;

impl Stage for Train {
    const KIND: &'static str = "train";
    const CONSUMES: &'static [&'static str] = &["index", "synth"];
    const RESULT_FILE: Option<&'static str> = Some(crate::MODEL_FILE);
    const USES_DEVICE: bool = true;
    const FLOAT_NUMERICS: bool = true;
    const RESUMES: bool = true;
    type Key = TrainKey;
    type Summary = TrainSummary;

    fn run(
        key: &TrainKey,
        inputs: &Inputs,
        placement: &Placement,
        out: &Path,
        progress: &dyn Progress,
    ) -> Result<Produced<TrainSummary>, Failure> {
        let (device, device_name) =
            open_device(placement.device).map_err(|e| classify(e.into()))?;
        if key.train.precision == Precision::Bf16 && device.is_cpu() {
            return Err(Failure::bad_input(format!(
                "train.precision: bf16 needs a CUDA device, and this stage runs on {device_name} \
                 (set train.device to cuda, or train.precision to fp32)"
            )));
        }
        let index = mgat_data::stage::read_index(inputs.entry("index")?)?;
        let identities = key.train.batch_size / key.train.instances.max(1);
        if identities as usize > index.num_train_pids {
            return Err(Failure::bad_input(format!(
                "train.batch_size: {} / train.instances {} = {identities} identities per batch, but the training \
                 set has {}: lower train.batch_size",
                key.train.batch_size, key.train.instances, index.num_train_pids
            )));
        }
        tracing::info!(
            "training {:?} ({:?} head) on {device_name}",
            key.model.backbone,
            key.model.head
        );
        let log = crate::train(
            key,
            placement.workers,
            &index,
            &mgat_data::image::PinnedTree::of(inputs),
            out,
            &device,
            placement.pretrained.as_deref(),
            &|done, total, epoch| {
                progress.set_length(total);
                progress.set_position(done);
                if let Some(e) = epoch {
                    progress.set_message(format!(
                        "epoch {} loss {:.3} acc {:.2} {:.0} img/s",
                        e.epoch, e.loss, e.accuracy, e.images_per_s
                    ));
                }
            },
        )
        .map_err(classify)?;
        Ok(Produced {
            device: device_name,
            summary: TrainSummary::of(&log),
        })
    }
}

/// The epochs a train entry (at `entry`) logged, read from its `train_log.csv`.
pub fn read_log(entry: &Path) -> Result<Vec<crate::EpochLog>, OutputError> {
    let path = entry.join(crate::LOG_FILE);
    let text = std::fs::read_to_string(&path).map_err(|e| OutputError::new(&path, e))?;
    crate::parse_log_csv(&text).map_err(|e| OutputError::new(&path, e))
}

/// An image that does not decode is the dataset's fault (the lock pins its bytes, not that they are an image); a
/// checkpoint or device that does not fit is the user's; the rest fails the computation.
fn classify(error: TrainError) -> Failure {
    let bad_input = match &error {
        TrainError::Image(_) => true,
        TrainError::Model(e) => e.is_bad_input(),
        _ => false,
    };
    Failure {
        bad_input,
        error: error.into(),
    }
}
