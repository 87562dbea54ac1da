//! The `index` stage: checks the dataset tree against its `datasets.lock` entry (refusing any difference) and writes
//! `index.json`, the typed (path, pid, camid) list of each split.

use super::{Produced, StageEnv, StageError};
use crate::cache::Summary;
use crate::data::index::index;
use crate::plan::Stage;
use indicatif::ProgressBar;
use std::path::Path;

pub const INDEX_FILE: &str = "index.json";

pub fn run(
    env: &StageEnv,
    stage: &Stage,
    out: &Path,
    bar: &ProgressBar,
) -> Result<Produced, StageError> {
    let (root, _) = env.verified_dataset(stage, bar)?;
    let entry = env.lock.entry(&stage.dataset)?;
    bar.set_message("indexing");
    let idx = index(entry.format, &root)?;
    let json = serde_json::to_vec(&idx).map_err(|e| StageError::Plan(e.to_string()))?;
    crate::fsio::write_atomic(&out.join(INDEX_FILE), &json)?;
    Ok(Produced {
        device: "cpu".into(),
        summary: Summary::Index(idx.summary()),
    })
}
