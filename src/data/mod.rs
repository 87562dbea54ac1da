//! Datasets: the synthetic generator, the indexers for real layouts, image reading, tree hashing and
//! `datasets.lock`.

pub mod hash;
pub mod image;
pub mod index;
pub mod lock;
pub mod official;
pub mod synth;
pub mod synth_layout;

pub use index::{DatasetIndex, Format};
pub use lock::{LockEntry, LockError, LockFile};
