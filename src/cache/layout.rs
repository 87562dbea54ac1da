//! The cache's folders, owned by one type: every path under `<cache>/` is a [`CacheBucket`] (as uv's `CacheBucket`),
//! so no other module spells a folder name.
//!
//! | bucket | folder | holds |
//! |---|---|---|
//! | `Entries(kind)` | `<kind>/` | complete entries, `<kind>/<key>/` |
//! | `Partial(kind)` | `<kind>/.partial/` | stages being computed |
//! | `Locks(kind)` | `<kind>/.locks/` | one lock file per key |
//! | `Quarantine` | `.quarantine/` | damaged entries moved aside |
//! | `Stat` | `.stat/` | the trust ledger and the datasets' stat caches |
//! | `FileLists` | `.file-lists/` | `datasets.lock`'s per-file lists |
//! | `Weights` | `.weights/` | pretrained checkpoints' digests, by path |
//! | `SlurmLogs`, `SlurmFailures` | `.slurm/logs/`, `.slurm/failures/` | Slurm jobs' logs and failure records |
//! | `Scratch` | `.scratch/` | throw-away work (`data lock` of a synthetic dataset) |
//! | `Runs` | `.runs/` | the roots of live processes, one file each, and gc's lock |

use crate::plan::StageKind;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheBucket {
    Entries(StageKind),
    Partial(StageKind),
    Locks(StageKind),
    Quarantine,
    Stat,
    FileLists,
    Weights,
    SlurmLogs,
    SlurmFailures,
    Scratch,
    Runs,
}

impl CacheBucket {
    /// The bucket's folder under the cache root `root`.
    pub fn dir(self, root: &Path) -> PathBuf {
        match self {
            CacheBucket::Entries(kind) => root.join(kind.name()),
            CacheBucket::Partial(kind) => root.join(kind.name()).join(".partial"),
            CacheBucket::Locks(kind) => root.join(kind.name()).join(".locks"),
            CacheBucket::Quarantine => root.join(".quarantine"),
            CacheBucket::Stat => root.join(".stat"),
            CacheBucket::FileLists => root.join(".file-lists"),
            CacheBucket::Weights => root.join(".weights"),
            CacheBucket::SlurmLogs => root.join(".slurm").join("logs"),
            CacheBucket::SlurmFailures => root.join(".slurm").join("failures"),
            CacheBucket::Scratch => root.join(".scratch"),
            CacheBucket::Runs => root.join(".runs"),
        }
    }

    /// Whether a top-level name of the cache folder is a bucket of its own rather than a kind's entries.
    pub fn is_hidden(name: &str) -> bool {
        name.starts_with('.')
    }
}
