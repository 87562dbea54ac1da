//! mgat: a reproducible experiment pipeline for "Masked Graph Attention Network for Person Re-identification".
//! Modules follow the data flow: spec → plan/cache → data → exec → cli.

pub mod data;
pub mod digest;
pub mod provenance;
pub mod spec;
mod yamlpos;

#[cfg(test)]
mod testutil;
