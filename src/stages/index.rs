//! The `index` stage: checks the dataset tree against its `datasets.lock` entry (refusing any difference) and writes
//! `index.json`, the typed (path, pid, camid) list of each split.

use super::{Produced, StageEnv, StageError, synth::DATA_DIR};
use crate::data::hash::hash_tree;
use crate::data::index::index;
use crate::plan::{Stage, StageKind};
use indicatif::ProgressBar;
use std::path::{Path, PathBuf};

pub const INDEX_FILE: &str = "index.json";

pub fn run(
    env: &StageEnv,
    stage: &Stage,
    out: &Path,
    bar: &ProgressBar,
) -> Result<Produced, StageError> {
    let root = dataset_root(env, stage)?;
    let entry = env.lock.entry(&stage.dataset)?;
    bar.set_length(entry.files);
    bar.set_message(format!("verifying {} against datasets.lock", stage.dataset));
    let files = hash_tree(&root, Some(&env.cache.stat_cache_path(&root)), &|| {
        bar.inc(1)
    })?;
    env.lock.check_tree(&stage.dataset, &root, &files)?;
    bar.set_message("indexing");
    let idx = index(entry.format, &root)?;
    let path = out.join(INDEX_FILE);
    let json = serde_json::to_vec(&idx).map_err(|e| StageError::Io {
        path: path.clone(),
        source: e.into(),
    })?;
    std::fs::write(&path, json).map_err(|source| StageError::Io { path, source })?;
    let summary = serde_json::json!({
        "dataset": stage.dataset,
        "format": entry.format,
        "train_images": idx.train.len(),
        "train_ids": idx.num_train_pids,
        "query_images": idx.query.len(),
        "gallery_images": idx.gallery.len(),
        "cameras": idx.num_cameras,
    });
    Ok(Produced {
        device: "cpu".into(),
        summary,
    })
}

/// The dataset's root on this machine: the upstream synth entry's data, or the lock entry's root.
pub fn dataset_root(env: &StageEnv, stage: &Stage) -> Result<PathBuf, StageError> {
    if let Some(synth_key) = stage.inputs.upstream.get(&StageKind::Synth) {
        return Ok(env
            .cache
            .entry_dir(StageKind::Synth.name(), synth_key)
            .join(DATA_DIR));
    }
    Ok(env.lock.root(&stage.dataset)?.unwrap_or_default())
}
