//! Evaluation: reading distance matrices and ids, re-ID metrics (Market-1501 and CUHK03 protocols), distances
//! between feature sets and k-reciprocal re-ranking.

pub mod array;
pub mod config;
pub mod distance;
pub mod extract;
#[cfg(test)]
mod fixtures;
pub mod metrics;
pub mod query_expansion;
pub mod ranked;
pub mod rerank;
pub mod stage;
