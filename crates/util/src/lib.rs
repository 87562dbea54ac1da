//! mgat's shared compute helpers: file I/O that names the path in every error and writes durably and atomically,
//! SHA-256 digests (of bytes, files and canonical JSON), and seeded random streams.

pub mod digest;
pub mod fsio;
pub mod rng;
