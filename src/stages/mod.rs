//! The stage kinds: what each computes from its inputs into its partial directory, behind one [`Stage`] trait. The
//! executor handles keys, locking, caching and manifests; a stage only produces outputs and a summary, by calling
//! into its compute crate (`mgat-synth`, `mgat-data`, `mgat-train`, `mgat-eval`), whose code is what its key's
//! fingerprint covers. Adding a kind is one impl here and one arm in [`run`] (and its [`StageConfig`] and
//! [`Summary`] variants).

use crate::data::LockError;
use crate::data::LockFile;
use crate::data::hash::{HashError, hash_tree};
use crate::plan::{Placement, Stage as PlannedStage, StageConfig, StageKind};
use indicatif::ProgressBar;
use mgat_data::DatasetIndex;
use mgat_data::index::{INDEX_FILE, IndexError};
use mgat_eval::config::EvalKey;
use mgat_model::config::Precision;
use mgat_model::params::{ModelError, device};
use mgat_synth::{SynthError, SynthParams};
use mgat_train::key::TrainKey;
use mgat_util::fsio::IoError;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Each kind's figures for listings and reports, as its manifest records them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Summary {
    Synth(mgat_synth::SynthSummary),
    Index(mgat_data::index::IndexSummary),
    Train(mgat_train::TrainSummary),
    Eval(mgat_eval::metrics::EvalSummary),
}

/// What a stage reads besides its key: the dataset (checked against `datasets.lock`), its index for train and
/// eval, and the folders of the cache entries it consumes, by kind.
pub struct Inputs {
    pub root: PathBuf,
    pub index: Option<DatasetIndex>,
    pub entries: BTreeMap<StageKind, PathBuf>,
}

impl Inputs {
    fn entry(&self, kind: StageKind) -> Result<&Path, StageError> {
        self.entries
            .get(&kind)
            .map(PathBuf::as_path)
            .ok_or_else(|| StageError::Plan(format!("no {} entry among the inputs", kind.name())))
    }

    fn index(&self) -> Result<&DatasetIndex, StageError> {
        self.index
            .as_ref()
            .ok_or_else(|| StageError::Plan("no index among the inputs".into()))
    }
}

/// One stage kind: its typed key configuration, its typed summary, and how it computes.
pub trait Stage {
    type Config;
    type Summary: Into<Summary>;
    /// Computes the outputs into `out`; the device it ran on and its summary.
    fn run(
        config: &Self::Config,
        inputs: &Inputs,
        placement: &Placement,
        out: &Path,
        bar: &ProgressBar,
    ) -> Result<(String, Self::Summary), StageError>;
}

pub struct Synth;
pub struct Index;
pub struct Train;
pub struct Eval;

impl Stage for Synth {
    type Config = SynthParams;
    type Summary = mgat_synth::SynthSummary;
    fn run(
        params: &SynthParams,
        _: &Inputs,
        _: &Placement,
        out: &Path,
        bar: &ProgressBar,
    ) -> Result<(String, Self::Summary), StageError> {
        let images = mgat_synth::image_count(params, &Default::default());
        bar.set_length(images as u64);
        bar.set_message(format!("generating {images} images"));
        let summary =
            mgat_synth::generate(params, &out.join(mgat_synth::DATA_DIR), &|| bar.inc(1))?;
        Ok(("cpu".into(), summary))
    }
}

impl Stage for Index {
    type Config = mgat_data::Format;
    type Summary = mgat_data::index::IndexSummary;
    fn run(
        format: &mgat_data::Format,
        inputs: &Inputs,
        _: &Placement,
        out: &Path,
        bar: &ProgressBar,
    ) -> Result<(String, Self::Summary), StageError> {
        bar.set_message("indexing");
        let summary = mgat_data::index::write_index(*format, &inputs.root, out)?;
        Ok(("cpu".into(), summary))
    }
}

impl Stage for Train {
    type Config = TrainKey;
    type Summary = mgat_train::TrainSummary;
    fn run(
        key: &TrainKey,
        inputs: &Inputs,
        placement: &Placement,
        out: &Path,
        bar: &ProgressBar,
    ) -> Result<(String, Self::Summary), StageError> {
        let (device, device_name) = device(&placement.device)?;
        if key.train.precision == Precision::Bf16 && device.is_cpu() {
            return Err(StageError::Setting(format!(
                "train.precision: bf16 needs a CUDA device, and this stage runs on {device_name} \
                 (set train.device to cuda, or train.precision to fp32)"
            )));
        }
        let index = inputs.index()?;
        let identities = key.train.batch_size / key.train.instances.max(1);
        if identities as usize > index.num_train_pids {
            return Err(StageError::Setting(format!(
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
        let log = mgat_train::train(
            key,
            placement.workers,
            index,
            &inputs.root,
            out,
            &device,
            placement.pretrained.as_deref(),
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
        Ok((device_name, mgat_train::TrainSummary::of(&log)))
    }
}

impl Stage for Eval {
    type Config = EvalKey;
    type Summary = mgat_eval::metrics::EvalSummary;
    fn run(
        key: &EvalKey,
        inputs: &Inputs,
        placement: &Placement,
        out: &Path,
        bar: &ProgressBar,
    ) -> Result<(String, Self::Summary), StageError> {
        let (device, device_name) = device(&placement.device)?;
        let weights = inputs.entry(StageKind::Train)?.join(mgat_train::MODEL_FILE);
        let eval_inputs = mgat_eval::stage::EvalInputs {
            root: &inputs.root,
            index: inputs.index()?,
            weights: &weights,
            device: &device,
        };
        let progress = mgat_eval::stage::EvalProgress {
            on_length: &|n| bar.set_length(n),
            on_images: &|n| bar.inc(n as u64),
            on_phase: &|phase| bar.set_message(phase.to_string()),
        };
        let summary = mgat_eval::stage::evaluate(key, &eval_inputs, out, &progress)?;
        Ok((device_name, summary))
    }
}

/// Each kind's summary into the manifest's [`Summary`].
macro_rules! summary_from {
    ($($variant:ident($summary:ty)),* $(,)?) => {$(
        impl From<$summary> for Summary {
            fn from(s: $summary) -> Self {
                Summary::$variant(s)
            }
        }
    )*};
}

summary_from!(
    Synth(mgat_synth::SynthSummary),
    Index(mgat_data::index::IndexSummary),
    Train(mgat_train::TrainSummary),
    Eval(mgat_eval::metrics::EvalSummary),
);

/// A stage's result: where it computed and its summary for the manifest.
#[derive(Debug, Clone)]
pub struct Produced {
    pub device: String,
    pub summary: Summary,
}

/// Computes `stage` into `out` with its kind's [`Stage`] impl (the registration of every kind); `placement` is the
/// plan's, with the device a `--devices` slot gave it, if any. Train and eval compute on a pool of `threads` threads
/// of their own.
pub fn run(
    stage: &PlannedStage,
    config: &StageConfig,
    inputs: &Inputs,
    placement: &Placement,
    threads: usize,
    out: &Path,
    bar: &ProgressBar,
) -> Result<Produced, StageError> {
    fn produced<S: Stage>(
        r: Result<(String, S::Summary), StageError>,
    ) -> Result<Produced, StageError> {
        r.map(|(device, summary)| Produced {
            device,
            summary: summary.into(),
        })
    }
    match (stage.kind, config) {
        (StageKind::Synth, StageConfig::Synth(c)) => {
            produced::<Synth>(Synth::run(c, inputs, placement, out, bar))
        }
        (StageKind::Index, StageConfig::Index { format }) => {
            produced::<Index>(Index::run(format, inputs, placement, out, bar))
        }
        (StageKind::Train, StageConfig::Train(c)) => on_compute_pool(threads, || {
            produced::<Train>(Train::run(c, inputs, placement, out, bar))
        }),
        (StageKind::Eval, StageConfig::Eval(c)) => on_compute_pool(threads, || {
            produced::<Eval>(Eval::run(c, inputs, placement, out, bar))
        }),
        _ => Err(StageError::Plan(format!(
            "{} has another kind's configuration",
            stage.label()
        ))),
    }
}

/// The inputs of `stage`: its dataset checked file by file against its `datasets.lock` entry (through the stat
/// cache, so an unchanged tree costs one `stat` per file), the index for train and eval, and the entries it consumes
/// (`entries`, by kind, already checked against their manifests), whose outputs must hash to the digests in its key
/// (`upstream`).
pub fn gather_inputs(
    stage: &PlannedStage,
    lock: &LockFile,
    stat_cache: &dyn Fn(&Path) -> PathBuf,
    entries: BTreeMap<StageKind, PathBuf>,
    upstream: &BTreeMap<StageKind, String>,
    bar: &ProgressBar,
) -> Result<Inputs, StageError> {
    check_consumed(&entries, upstream)?;
    let root = match entries.get(&StageKind::Synth) {
        Some(dir) => dir.join(mgat_synth::DATA_DIR),
        None => lock.root(&stage.dataset)?.unwrap_or_default(),
    };
    if stage.kind == StageKind::Synth {
        // It writes the dataset; it reads none.
        return Ok(Inputs {
            root,
            index: None,
            entries,
        });
    }
    let entry = lock.entry(&stage.dataset)?;
    bar.set_length(entry.files);
    bar.set_message(format!("verifying {} against datasets.lock", stage.dataset));
    let files = hash_tree(&root, Some(&stat_cache(&root)), &|| bar.inc(1))?;
    lock.check_tree(&stage.dataset, &root, &files)?;
    bar.set_position(0);
    let index = match entries.get(&StageKind::Index) {
        Some(dir) if matches!(stage.kind, StageKind::Train | StageKind::Eval) => {
            Some(read_json(&dir.join(INDEX_FILE))?)
        }
        _ => None,
    };
    Ok(Inputs {
        root,
        index,
        entries,
    })
}

/// After `stage` ran, before its entry is committed: what it read is still what its key says. Its dataset is checked
/// against the lock again (a file changed while the stage ran moved its ctime, so it is hashed again; the stage fails
/// as bad input and nothing is committed), and so are the outputs it consumed.
pub fn recheck_inputs(
    stage: &PlannedStage,
    lock: &LockFile,
    stat_cache: &dyn Fn(&Path) -> PathBuf,
    inputs: &Inputs,
    upstream: &BTreeMap<StageKind, String>,
) -> Result<(), StageError> {
    check_consumed(&inputs.entries, upstream)?;
    if stage.kind == StageKind::Synth {
        return Ok(());
    }
    let files = hash_tree(&inputs.root, Some(&stat_cache(&inputs.root)), &|| {})?;
    lock.check_tree(&stage.dataset, &inputs.root, &files)
        .map_err(|e| StageError::ChangedWhileRunning(Box::new(e)))
}

/// Each consumed output (index.json, model.safetensors) hashed in full against the digest in the stage's key, so
/// that no result is computed from, or committed over, bytes other than the ones its key names.
fn check_consumed(
    entries: &BTreeMap<StageKind, PathBuf>,
    upstream: &BTreeMap<StageKind, String>,
) -> Result<(), StageError> {
    for (kind, expected) in upstream {
        let (Some(dir), Some(file)) = (entries.get(kind), kind.consumed_output()) else {
            continue;
        };
        let path = dir.join(file);
        let (sha, _) = mgat_util::digest::sha256_file(&path).map_err(IoError::at(&path))?;
        let found = mgat_util::digest::labelled(&sha);
        if &found != expected {
            return Err(StageError::ConsumedChanged {
                path,
                expected: expected.clone(),
                found,
            });
        }
    }
    Ok(())
}

/// A JSON output of a cache entry, typed; one that does not parse is damage the manifest check missed.
fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, StageError> {
    let bytes = mgat_util::fsio::read(path)?;
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
    Train(#[from] mgat_train::TrainError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Eval(#[from] mgat_eval::stage::EvalError),
    #[error("{0}")]
    Setting(String),
    #[error("cannot start the stage's threads: {0}")]
    Threads(#[from] rayon::ThreadPoolBuildError),
    /// An internal inconsistency between the plan and the cache.
    #[error("{0}")]
    Plan(String),
    /// A consumed output does not hash to the digest in the stage's key (damaged after it was checked).
    #[error("{}: its SHA-256 is {found}, but the stage's key names {expected}; nothing was committed (the next run checks the entry again)", path.display())]
    ConsumedChanged {
        path: PathBuf,
        expected: String,
        found: String,
    },
    /// The dataset changed while the stage ran.
    #[error("the dataset changed while the stage ran; nothing was committed: {0}")]
    ChangedWhileRunning(Box<LockError>),
}

impl StageError {
    /// Whether the error is the user's input (dataset, lock) rather than a failure of the computation.
    pub fn is_bad_input(&self) -> bool {
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
            // A dataset image that does not decode (corrupt, a decompression bomb, unreadable) is the dataset's
            // fault: the lock pins its bytes, not that they are an image.
            StageError::Lock(_)
            | StageError::ChangedWhileRunning(_)
            | StageError::Index(_)
            | StageError::Setting(_)
            | StageError::Train(mgat_train::TrainError::Image(_))
            | StageError::Eval(mgat_eval::stage::EvalError::Extract(
                mgat_eval::extract::ExtractError::Image(_),
            )) => true,
            StageError::Model(e)
            | StageError::Train(mgat_train::TrainError::Model(e))
            | StageError::Eval(mgat_eval::stage::EvalError::Model(e)) => bad_model(e),
            _ => false,
        }
    }
}

/// Runs `f` on a pool of `threads` threads of its own, so that the thread driving a model is one of the threads its
/// kernels run on (the others help with each parallel kernel instead of spinning beside a driver thread that
/// competes with them for the cores), and so that stages running side by side do not take each other's threads.
fn on_compute_pool<R: Send>(
    threads: usize,
    f: impl FnOnce() -> Result<R, StageError> + Send,
) -> Result<R, StageError> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads.max(1))
        .thread_name(|i| format!("mgat-stage-{i}"))
        .build()?;
    pool.install(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_consumed_output_must_hash_to_the_digest_in_the_key() {
        let dir = mgat_testutil::tempdir();
        std::fs::write(dir.join(INDEX_FILE), b"{}").unwrap();
        let entries = BTreeMap::from([(StageKind::Index, dir.to_path_buf())]);
        // By hand: SHA-256 of the two bytes `{}`.
        let good = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";
        let upstream = BTreeMap::from([(StageKind::Index, good.to_string())]);
        check_consumed(&entries, &upstream).unwrap();
        std::fs::write(dir.join(INDEX_FILE), b"[]").unwrap();
        let err = check_consumed(&entries, &upstream).unwrap_err();
        assert!(matches!(err, StageError::ConsumedChanged { .. }), "{err}");
        assert!(err.to_string().contains("nothing was committed"), "{err}");
        assert!(
            !err.is_bad_input(),
            "damage in the cache, not the user's input"
        );
    }
}
