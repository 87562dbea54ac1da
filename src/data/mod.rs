//! Dataset pinning: tree hashing with its stat cache, and `datasets.lock`. Reading datasets (indexers, images) is
//! the `mgat-data` crate's, and the synthetic generator is `mgat-synth`'s.

pub mod hash;
pub mod lock;

pub use lock::{LockEntry, LockError, LockFile};
pub use mgat_data::{DatasetIndex, Format};
