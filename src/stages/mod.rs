//! Running a stage: the registry of stage kinds ([`registry`]: each kind is one compute crate implementing
//! [`mgat_stage::Stage`] in its `stage.rs`, whose code is what its keys' fingerprint covers), and the checks around
//! a run. This module only hands a stage its typed key, the folders it reads (checked against `datasets.lock` and
//! its key before and after it runs) and its placement; nothing here decides what a stage computes. Adding a kind
//! takes its crate (a `stage.rs` and `[package.metadata.mgat] stage` in its manifest, which build.rs fingerprints),
//! one line in [`registry`], and the function in `plan::keys` that builds its key from a cell.

pub mod registry;

pub use registry::{StageConfig, StageKind};

use crate::data::LockError;
use crate::data::LockFile;
use crate::data::hash::{HashError, hash_tree};
use crate::plan::{Placement, Stage as PlannedStage};
use indicatif::ProgressBar;
pub use mgat_stage::Summary;
use mgat_stage::{Failure, Inputs, Stage};
use mgat_util::fsio::IoError;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A stage's result: where it computed and its summary for the manifest.
#[derive(Debug, Clone)]
pub struct Produced {
    pub device: mgat_stage::DeviceChoice,
    pub summary: Summary,
}

/// A progress bar as a stage reports to it.
struct Bar<'a>(&'a ProgressBar);

impl mgat_stage::Progress for Bar<'_> {
    fn set_length(&self, total: u64) {
        self.0.set_length(total);
    }
    fn set_position(&self, done: u64) {
        self.0.set_position(done);
    }
    fn advance(&self, n: u64) {
        self.0.inc(n);
    }
    fn set_message(&self, message: String) {
        self.0.set_message(message);
    }
}

/// Computes `stage` into `out` with its kind's [`Stage`] impl; `placement` is the plan's, with the device a
/// `--devices` slot gave it, if any. A kind that uses a device computes on a pool of `threads` threads of its own.
pub fn run(
    stage: &PlannedStage,
    config: &StageConfig,
    inputs: &Inputs,
    placement: &Placement,
    threads: usize,
    out: &Path,
    bar: &ProgressBar,
) -> Result<Produced, StageError> {
    if config.kind() != stage.kind {
        return Err(StageError::Plan(format!(
            "{} has another kind's configuration",
            stage.label()
        )));
    }
    let runner = KindRunner {
        inputs,
        placement,
        out,
        bar: Bar(bar),
    };
    match stage.kind.uses_device() {
        true => on_compute_pool(threads, || registry::dispatch(config, &runner)),
        false => registry::dispatch(config, &runner),
    }
}

/// What a kind's `run` is handed besides its key.
struct KindRunner<'a> {
    inputs: &'a Inputs,
    placement: &'a Placement,
    out: &'a Path,
    bar: Bar<'a>,
}

impl registry::Runner for KindRunner<'_> {
    type Output = Result<Produced, StageError>;

    fn run<S: Stage>(&self, key: &S::Key) -> Self::Output {
        let produced = S::run(key, self.inputs, self.placement, self.out, &self.bar)?;
        Ok(Produced {
            device: produced.device,
            summary: Summary::of::<S>(&produced.summary)?,
        })
    }
}

/// The inputs of `stage`: its dataset checked file by file against its `datasets.lock` entry (through the stat
/// cache, so an unchanged tree costs one `stat` per file), and the entries it consumes (`entries`, by kind, already
/// checked against their manifests), whose outputs must hash to the digests in its key (`upstream`).
pub fn gather_inputs(
    stage: &PlannedStage,
    lock: &LockFile,
    stat_cache: &dyn Fn(&Path) -> PathBuf,
    entries: BTreeMap<StageKind, PathBuf>,
    upstream: &BTreeMap<StageKind, String>,
    bar: &ProgressBar,
) -> Result<Inputs, StageError> {
    let generated = entries
        .iter()
        .find_map(|(kind, dir)| kind.dataset_root(dir));
    let entries: BTreeMap<&'static str, PathBuf> = entries
        .into_iter()
        .map(|(kind, dir)| (kind.name(), dir))
        .collect();
    check_consumed(&entries, upstream)?;
    let root = match generated {
        Some(root) => root,
        None => lock.root(&stage.dataset)?.unwrap_or_default(),
    };
    if !stage.kind.reads_dataset() {
        // It writes the dataset; it reads none.
        return Ok(Inputs {
            dataset_root: root,
            dataset_files: Vec::new(),
            entries,
        });
    }
    let entry = lock.entry(&stage.dataset)?;
    bar.set_length(entry.files);
    bar.set_message(format!("verifying {} against datasets.lock", stage.dataset));
    let files = hash_tree(&root, Some(&stat_cache(&root)), &|| bar.inc(1))?;
    lock.check_tree(&stage.dataset, &root, &files)?;
    bar.set_position(0);
    Ok(Inputs {
        dataset_root: root,
        dataset_files: files.into_iter().map(|f| (f.path, f.sha256)).collect(),
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
    if !stage.kind.reads_dataset() {
        return Ok(());
    }
    let root = &inputs.dataset_root;
    let files = hash_tree(root, Some(&stat_cache(root)), &|| {})?;
    lock.check_tree(&stage.dataset, root, &files)
        .map_err(|e| StageError::ChangedWhileRunning(Box::new(e)))
}

/// Each consumed output (index.json, model.safetensors) hashed in full against the digest in the stage's key, so
/// that no result is computed from, or committed over, bytes other than the ones its key names.
fn check_consumed(
    entries: &BTreeMap<&'static str, PathBuf>,
    upstream: &BTreeMap<StageKind, String>,
) -> Result<(), StageError> {
    for (kind, expected) in upstream {
        let (Some(dir), Some(file)) = (entries.get(kind.name()), kind.consumed_output()) else {
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

#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error(transparent)]
    Stage(#[from] Failure),
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error(transparent)]
    Hash(#[from] HashError),
    #[error(transparent)]
    Io(#[from] IoError),
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
    /// Whether the error is the user's input (dataset, lock, settings) rather than a failure of the computation: a
    /// stage's own errors are classified where they are born, in its crate.
    pub fn is_bad_input(&self) -> bool {
        match self {
            StageError::Stage(failure) => failure.bad_input,
            StageError::Lock(_) | StageError::ChangedWhileRunning(_) => true,
            StageError::Hash(e) => e.is_bad_input(),
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
        std::fs::write(dir.join(mgat_data::index::INDEX_FILE), b"{}").unwrap();
        let entries = BTreeMap::from([(StageKind::Index.name(), dir.to_path_buf())]);
        // By hand: SHA-256 of the two bytes `{}`.
        let good = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a";
        let upstream = BTreeMap::from([(StageKind::Index, good.to_string())]);
        check_consumed(&entries, &upstream).unwrap();
        std::fs::write(dir.join(mgat_data::index::INDEX_FILE), b"[]").unwrap();
        let err = check_consumed(&entries, &upstream).unwrap_err();
        assert!(matches!(err, StageError::ConsumedChanged { .. }), "{err}");
        assert!(err.to_string().contains("nothing was committed"), "{err}");
        assert!(
            !err.is_bad_input(),
            "damage in the cache, not the user's input"
        );
    }
}
