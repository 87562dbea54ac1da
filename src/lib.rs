//! mgat: a reproducible experiment pipeline for "Masked Graph Attention Network for Person Re-identification".
//! Modules follow the data flow: spec → plan/cache → data → model/train → eval → stages → report → exec → cli.

pub mod atomic;
pub mod cache;
pub mod cli;
pub mod data;
pub mod digest;
pub mod eval;
pub mod exec;
pub mod model;
pub mod plan;
pub mod provenance;
pub mod report;
pub mod rng;
pub mod spec;
pub mod stages;
pub mod train;
mod yamlpos;

#[cfg(test)]
mod testutil;
