//! mgat: a reproducible experiment pipeline for "Masked Graph Attention Network for Person Re-identification".
//! Modules follow the data flow: spec → plan/cache → data → model/train → eval → stages → report → exec → cli.

pub mod cache;
pub mod cli;
pub mod data;
pub mod digest;
pub mod eval;
pub mod exec;
pub mod fsio;
pub mod model;
pub mod plan;
pub mod provenance;
pub mod report;
pub mod rng;
pub mod spec;
pub mod stages;
pub mod train;
mod yamlpos;

/// Set by the `mgat` binary when it chose RAYON_NUM_THREADS itself (the user did not): a Slurm job then picks its
/// own on its node.
pub const THREADS_PINNED_BY_MGAT: &str = "MGAT_THREADS_PINNED";

#[cfg(test)]
mod testutil;
