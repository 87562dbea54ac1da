//! Stage runners: what each stage kind computes from its inputs into its partial directory. The executor handles
//! locking, caching and manifests; a runner only produces outputs and a summary.

mod eval;
mod index;
mod synth;
mod train;
pub use train::cell_config;

pub use eval::{CMC_FILE, METRICS_FILE};

use crate::cache::Cache;
use crate::cache::Summary;
use crate::data::DatasetIndex;
use crate::data::hash::HashError;
use crate::data::hash::hash_tree;
use crate::data::index::IndexError;
use crate::data::synth::SynthError;
use crate::data::{LockError, LockFile};
use crate::fsio::IoError;
use crate::plan::{Plan, StageKind};
use crate::plan::{Stage, StageConfig, TrainKey};
use indicatif::ProgressBar;
use std::path::{Path, PathBuf};

/// What a runner needs besides its own stage: the cache (to read upstream entries), the lock and the plan.
pub struct StageEnv<'a> {
    pub cache: &'a Cache,
    pub lock: &'a LockFile,
    pub plan: &'a Plan,
}

/// A runner's result: where it computed and figures for the manifest's summary.
#[derive(Debug, Clone)]
pub struct Produced {
    pub device: String,
    pub summary: Summary,
}

impl StageEnv<'_> {
    /// The stage of `kind` that `stage` consumes.
    pub fn input(&self, stage: &Stage, kind: StageKind) -> Result<&Stage, StageError> {
        self.plan.input(stage, kind).ok_or_else(|| {
            StageError::Plan(format!(
                "{} consumes no {} stage",
                stage.label(),
                kind.name()
            ))
        })
    }

    /// The train key of a train stage, or of the train stage an eval stage consumes.
    pub fn train_key<'a>(&'a self, stage: &'a Stage) -> Result<&'a TrainKey, StageError> {
        let train = match stage.kind {
            StageKind::Train => stage,
            _ => self.input(stage, StageKind::Train)?,
        };
        match &train.inputs.config {
            StageConfig::Train(key) => Ok(key),
            _ => Err(StageError::Plan(format!(
                "{} has no train configuration",
                train.label()
            ))),
        }
    }

    /// The folder of the `kind` entry `stage` consumes (checked against its manifest by the executor before
    /// this stage started).
    pub fn input_dir(&self, stage: &Stage, kind: StageKind) -> Result<PathBuf, StageError> {
        let input = self.input(stage, kind)?;
        Ok(self.cache.entry_dir(input.kind, &input.key))
    }

    /// The dataset `stage` reads, after checking every file against its `datasets.lock` entry (through the stat
    /// cache, so an unchanged tree costs one `stat` per file): its root on this machine and its index.
    pub fn verified_dataset(
        &self,
        stage: &Stage,
        bar: &ProgressBar,
    ) -> Result<(PathBuf, Option<DatasetIndex>), StageError> {
        let root = match stage.inputs.upstream.get(&StageKind::Synth) {
            Some(_) => self
                .input_dir(stage, StageKind::Synth)?
                .join(synth::DATA_DIR),
            None => self.lock.root(&stage.dataset)?.unwrap_or_default(),
        };
        let entry = self.lock.entry(&stage.dataset)?;
        bar.set_length(entry.files);
        bar.set_message(format!("verifying {} against datasets.lock", stage.dataset));
        let files = hash_tree(&root, Some(&self.cache.stat_cache_path(&root)), &|| {
            bar.inc(1)
        })?;
        self.lock.check_tree(&stage.dataset, &root, &files)?;
        bar.set_position(0);
        let index = match stage.kind {
            StageKind::Synth | StageKind::Index => None,
            StageKind::Train | StageKind::Eval => {
                let path = self
                    .input_dir(stage, StageKind::Index)?
                    .join(index::INDEX_FILE);
                Some(read_json(&path)?)
            }
        };
        Ok((root, index))
    }
}

/// A JSON output of a cache entry, typed; one that does not parse is damage the manifest check missed.
fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, StageError> {
    let bytes = crate::fsio::read(path)?;
    serde_json::from_slice(&bytes).map_err(|e| StageError::Plan(format!("{}: {e}", path.display())))
}

#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error(transparent)]
    Synth(#[from] SynthError),
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error(transparent)]
    Hash(#[from] HashError),
    #[error(transparent)]
    Io(#[from] IoError),
    #[error(transparent)]
    Train(#[from] crate::train::TrainError),
    #[error(transparent)]
    Model(#[from] crate::model::params::ModelError),
    #[error(transparent)]
    Extract(#[from] crate::eval::extract::ExtractError),
    #[error(transparent)]
    Metrics(#[from] crate::eval::metrics::MetricsError),
    #[error(transparent)]
    Scoring(#[from] crate::eval::metrics::ScoringError),
    #[error("{0}")]
    Setting(String),
    /// An internal inconsistency between the plan and the cache.
    #[error("{0}")]
    Plan(String),
}

impl StageError {
    /// Whether the error is the user's input (dataset, lock) rather than a failure of the computation.
    pub fn is_bad_input(&self) -> bool {
        use crate::model::params::ModelError;
        let bad_model = |e: &ModelError| {
            matches!(
                e,
                ModelError::Shape { .. }
                    | ModelError::Missing { .. }
                    | ModelError::ChangedWeights { .. }
                    | ModelError::Checkpoint { .. }
                    | ModelError::Misfit { .. }
                    | ModelError::Device(..)
            )
        };
        match self {
            StageError::Lock(_) | StageError::Index(_) | StageError::Setting(_) => true,
            StageError::Model(e) | StageError::Train(crate::train::TrainError::Model(e)) => {
                bad_model(e)
            }
            _ => false,
        }
    }
}

/// Runs stage `s` of the plan, writing its outputs under `out`.
/// Computes stage `s` into `out`; a train or eval stage runs on `device` when given (a `--devices` slot), else on its
/// cell's `train.device`.
pub fn run(
    env: &StageEnv,
    s: usize,
    out: &Path,
    bar: &ProgressBar,
    device: Option<&str>,
) -> Result<Produced, StageError> {
    let stage = &env.plan.stages[s];
    match stage.kind {
        StageKind::Synth => synth::run(stage, out, bar),
        StageKind::Index => index::run(env, stage, out, bar),
        StageKind::Train => on_compute_pool(|| train::run(env, stage, out, bar, device)),
        StageKind::Eval => on_compute_pool(|| eval::run(env, stage, out, bar, device)),
    }
}

/// Runs `f` on a worker of rayon's global pool, so that the thread driving a model is one of the threads its
/// kernels run on: the other workers help with each parallel kernel instead of spinning beside a driver thread that
/// competes with them for the cores.
fn on_compute_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    let mut result = None;
    rayon::scope(|s| s.spawn(|_| result = Some(f())));
    result.expect("a rayon scope returns after its tasks ran")
}
