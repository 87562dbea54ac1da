//! The `synth` stage: generates the synthetic dataset of a lock entry into `data/` (Market-1501 layout).

use super::{Produced, StageError};
use crate::cache::Summary;
use crate::data::synth::{generate, image_count};
use crate::plan::{Stage, StageConfig};
use indicatif::ProgressBar;
use std::path::Path;

/// The folder inside a synth entry that holds the dataset root.
pub const DATA_DIR: &str = "data";

pub fn run(stage: &Stage, out: &Path, bar: &ProgressBar) -> Result<Produced, StageError> {
    let StageConfig::Synth(params) = &stage.inputs.config else {
        return Err(StageError::Plan(format!(
            "{} has no synth parameters",
            stage.label()
        )));
    };
    bar.set_length(image_count(params, &Default::default()) as u64);
    bar.set_message(format!(
        "generating {} images",
        image_count(params, &Default::default())
    ));
    let summary = generate(params, &out.join(DATA_DIR), &|| bar.inc(1))?;
    Ok(Produced {
        device: "cpu".into(),
        summary: Summary::Synth(summary),
    })
}
