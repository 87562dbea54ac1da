//! The interface every stage kind implements ([`Stage`]), in a crate of its own so that each kind is one compute
//! crate (`mgat-synth`, `mgat-data`, `mgat-train`, `mgat-eval`, each with a `stage.rs`) and the `mgat` binary only
//! registers them. Everything that decides what a stage computes — the arguments passed to the computation, which
//! consumed files it reads, how its outputs are laid out — lives in the kind's crate, whose code is what its keys'
//! fingerprint covers; the binary hands it only the typed key, the consumed entries' folders and the placement.

mod device;

pub use device::DeviceChoice;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// One stage kind: its name and facts, its typed key and summary, and how it computes. The `mgat` binary lists each
/// kind once in its registry and reads everything else it needs to know about the kind from here.
pub trait Stage {
    /// The kind's name, as in cache folders and manifests.
    const KIND: &'static str;
    /// The kinds whose entries it reads, by [`Stage::KIND`]. A kind a cell has no stage of (a dataset that is not
    /// synthetic has no synth stage) is left out.
    const CONSUMES: &'static [&'static str];
    /// The file of its entry that holds what it computed, whose digest reports record and, for a kind that others
    /// consume, their keys carry; None where the lock pins the output instead (a generated dataset).
    const RESULT_FILE: Option<&'static str>;
    /// Whether it reads the dataset's files (checked against `datasets.lock` before and after it runs).
    const READS_DATASET: bool = true;
    /// Whether its key depends on the dataset alone, so that every cell on a dataset shares one stage of it.
    const PER_DATASET: bool = false;
    /// Whether it computes on the placement's device and threads (cells sharing it must agree on them).
    const USES_DEVICE: bool = false;
    /// Whether its results depend on the CPU's floating-point class (its kernels multiply floats), which its key
    /// then carries.
    const FLOAT_NUMERICS: bool = false;
    /// Whether a killed run continues from what it left in its partial directory.
    const RESUMES: bool = false;
    /// The part of the key this kind reads: exactly the settings it computes from.
    type Key: Serialize + DeserializeOwned;
    /// Its figures for listings and reports, stored in the manifest ([`Summary`]).
    type Summary: Serialize + DeserializeOwned;
    /// Computes the outputs into `out`.
    fn run(
        key: &Self::Key,
        inputs: &Inputs,
        placement: &Placement,
        out: &Path,
        progress: &dyn Progress,
    ) -> Result<Produced<Self::Summary>, Failure>;

    /// The dataset an entry of this kind provides to the stages that consume it (at `entry`), for a kind that
    /// generates one.
    fn dataset_root(entry: &Path) -> Option<PathBuf> {
        let _ = entry;
        None
    }
}

/// What a stage reads besides its key: the dataset's folder and its files' digests (already checked against
/// `datasets.lock`) and the
/// folders of the cache entries it consumes, by kind name (already checked against their manifests and its key).
pub struct Inputs {
    pub dataset_root: PathBuf,
    /// Every file of the dataset (path relative to its root, `/`-separated, and SHA-256 hex), as checked against
    /// `datasets.lock` when the stage started: a stage reads each file against its digest here.
    pub dataset_files: Vec<(String, String)>,
    pub entries: BTreeMap<&'static str, PathBuf>,
}

impl Inputs {
    /// The folder of the consumed entry of `kind`.
    pub fn entry(&self, kind: &str) -> Result<&Path, Failure> {
        self.entries
            .get(kind)
            .map(PathBuf::as_path)
            .ok_or_else(|| Failure::internal(format!("no {kind} entry among the stage's inputs")))
    }
}

/// Where a stage computes and with what, outside its key: none of it changes an output bit.
#[derive(Debug, Clone, PartialEq)]
pub struct Placement {
    pub device: DeviceChoice,
    /// Image-decoding threads.
    pub workers: u32,
    /// The pretrained checkpoint's path (its content is in the key).
    pub pretrained: Option<PathBuf>,
}

/// How far a stage got, for a progress bar.
pub trait Progress: Sync {
    fn set_length(&self, total: u64);
    fn set_position(&self, done: u64);
    fn advance(&self, n: u64);
    fn set_message(&self, message: String);
}

/// An output file of a cache entry that its kind's typed reader could not read: damage the manifest check missed,
/// or a file written by other code.
#[derive(Debug)]
pub struct OutputError {
    pub path: PathBuf,
    pub message: String,
}

impl OutputError {
    pub fn new(path: &Path, message: impl std::fmt::Display) -> Self {
        Self {
            path: path.to_path_buf(),
            message: message.to_string(),
        }
    }
}

impl std::fmt::Display for OutputError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.message)
    }
}

impl std::error::Error for OutputError {}

/// What a stage produced besides its files: the device it ran on and its summary.
pub struct Produced<S> {
    /// The concrete device (`cpu` or `cuda:N`).
    pub device: DeviceChoice,
    pub summary: S,
}

/// A stage's summary as its manifest stores it: `{"<kind>": {…}}`, opaque to the cache and read back typed only
/// through the kind's own [`Stage::Summary`] ([`Summary::read`]).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Summary(serde_json::Value);

impl Summary {
    pub fn of<S: Stage>(summary: &S::Summary) -> Result<Self, Failure> {
        let value = serde_json::to_value(summary).map_err(|e| Failure::internal(e.to_string()))?;
        Ok(Self(serde_json::Value::Object(
            [(S::KIND.to_string(), value)].into_iter().collect(),
        )))
    }

    /// The summary of a `S` stage, or `None` when it is another kind's or does not parse.
    pub fn read<S: Stage>(&self) -> Option<S::Summary> {
        serde_json::from_value(self.0.get(S::KIND)?.clone()).ok()
    }

    /// The kind it was stored by.
    pub fn kind(&self) -> Option<&str> {
        self.0.as_object()?.keys().next().map(String::as_str)
    }
}

/// Why a stage failed, classified where the error is born: bad input (the dataset, a setting, a checkpoint: the
/// user's to fix, exit 2) or a failure of the computation or the machine.
#[derive(Debug)]
pub struct Failure {
    pub bad_input: bool,
    pub error: Box<dyn std::error::Error + Send + Sync>,
}

impl Failure {
    pub fn bad_input(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self {
            bad_input: true,
            error: error.into(),
        }
    }

    pub fn computation(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self {
            bad_input: false,
            error: error.into(),
        }
    }

    /// An inconsistency between the plan and what the stage was handed.
    pub fn internal(message: String) -> Self {
        Self::computation(message)
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.error.fmt(f)
    }
}

impl std::error::Error for Failure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.error.source()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Toy;
    impl Stage for Toy {
        const KIND: &'static str = "toy";
        const CONSUMES: &'static [&'static str] = &[];
        const RESULT_FILE: Option<&'static str> = None;
        type Key = u32;
        type Summary = Vec<u32>;
        fn run(
            _: &u32,
            _: &Inputs,
            _: &Placement,
            _: &Path,
            _: &dyn Progress,
        ) -> Result<Produced<Vec<u32>>, Failure> {
            Err(Failure::internal("unused".into()))
        }
    }

    #[test]
    fn a_summary_is_tagged_with_its_kind_and_read_back_typed() {
        let stored = Summary::of::<Toy>(&vec![1, 2]).unwrap();
        assert_eq!(serde_json::to_string(&stored).unwrap(), r#"{"toy":[1,2]}"#);
        assert_eq!(stored.kind(), Some("toy"));
        assert_eq!(stored.read::<Toy>(), Some(vec![1, 2]));
        let other: Summary = serde_json::from_str(r#"{"train":{"epochs":3}}"#).unwrap();
        assert_eq!(other.read::<Toy>(), None);
    }
}
