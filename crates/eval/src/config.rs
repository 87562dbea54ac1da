//! The evaluation settings: distance metric, protocol, normalisation, flip, ranks, batch size, query expansion and
//! re-ranking, with their defaults. Everything an eval stage reads besides the trained model and the dataset.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Metric {
    Euclidean,
    Cosine,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Market1501,
    Cuhk03,
}

/// Feature extraction and scoring; changing only these re-runs eval and reuses the trained model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvalConfig {
    pub metric: Metric,
    pub normalize: bool,
    /// Average the features of the image and its horizontal flip.
    pub flip: bool,
    pub max_rank: u32,
    pub protocol: Protocol,
    pub batch_size: u32,
    /// k-reciprocal re-ranking of the distances before scoring (off unless set).
    pub rerank: Option<crate::rerank::Rerank>,
    /// α-weighted average query expansion of the features before their distances (off unless set).
    pub query_expansion: Option<crate::query_expansion::QueryExpansion>,
}

impl Default for EvalConfig {
    fn default() -> Self {
        Self {
            metric: Metric::Euclidean,
            normalize: false,
            flip: false,
            max_rank: 50,
            protocol: Protocol::Market1501,
            batch_size: 128,
            rerank: None,
            query_expansion: None,
        }
    }
}

/// What an eval stage is keyed by besides its inputs' digests (the trained weights, the index, the dataset): the
/// evaluation settings, and the network it rebuilds to load the weights into, at the input size it was trained at.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalKey {
    pub eval: EvalConfig,
    pub model: mgat_model::key::ModelKey,
    pub height: u32,
    pub width: u32,
}
