//! mgat: a reproducible experiment pipeline for "Masked Graph Attention Network for Person Re-identification".
//!
//! This crate is the orchestration, in data-flow order: `spec` (YAML specs into cells) → `plan` (cells into keyed
//! stages) → `exec` (run what is not cached) → `stages` (the registry of stage kinds) → `cache` (entries and
//! manifests) → `report` (tables, figures, diffs), with `cli` on top. What the stages compute, runners included,
//! lives in the compute crates under `crates/` (each kind's `stage.rs` in `mgat-synth`, `mgat-data`, `mgat-train`,
//! `mgat-eval` implements `mgat_stage::Stage`; below them `mgat-model` and `mgat-util`), which cannot read
//! orchestration state; each stage kind's key holds the fingerprint of what the compiler built for exactly its
//! crates (build.rs and `mgat-fingerprint`).

pub mod cache;
pub mod cli;
pub mod data;
pub mod exec;
pub mod inputfile;
pub mod plan;
pub mod project;
pub mod provenance;
pub mod report;
pub mod spec;
pub mod stages;
mod yamlpos;

/// Set by the `mgat` binary when it chose RAYON_NUM_THREADS itself (the user did not): a Slurm job then picks its
/// own on its node.
pub const THREADS_PINNED_BY_MGAT: &str = "MGAT_THREADS_PINNED";
