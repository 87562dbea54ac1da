//! What a model is built from: the part of a train stage's key that the network and its losses read. The plan
//! builds it from a cell's configuration; the model reads its settings from it alone, so a setting the network uses
//! cannot be missing from the key.

use crate::config::{Backbone, GraphInput, GraphNorm};
use serde::{Deserialize, Serialize};

/// The network and its losses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelKey {
    pub backbone: Backbone,
    pub width: u32,
    pub last_stride: u32,
    pub bnneck: bool,
    /// `sha256:…` of the pretrained checkpoint (its content, not its path); none for random initialisation.
    pub pretrained_sha256: Option<String>,
    pub head: HeadKey,
    pub label_smoothing: f64,
    pub triplet_weight: f64,
    pub triplet_margin: f64,
}

/// The graph head: the baseline reads none of its settings, plain GAT all but the mask.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum HeadKey {
    None,
    Gat(GraphKey),
    Mgat { graph: GraphKey, mask: bool },
}

/// The settings of a graph head (GAT or MGAT).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GraphKey {
    pub input: GraphInput,
    pub norm: GraphNorm,
    pub gamma: f64,
    pub squared_distance: bool,
    pub weight: bool,
    pub residual: bool,
    pub of_weight: f64,
    pub id_loss_on_x: bool,
}

impl ModelKey {
    /// The graph head's settings, and whether it masks by identity; None for the baseline.
    pub fn graph(&self) -> Option<(&GraphKey, bool)> {
        match &self.head {
            HeadKey::None => None,
            HeadKey::Gat(g) => Some((g, false)),
            HeadKey::Mgat { graph, mask } => Some((graph, *mask)),
        }
    }
}
