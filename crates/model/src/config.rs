//! The model settings a spec names by value: backbone, head, where the graph is built and how it is normalised, and
//! the arithmetic of training. The spec parser reads them; the model and its key hold them.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backbone {
    Resnet18,
    Resnet34,
    Resnet50,
}

impl Backbone {
    /// The name a spec writes (`model.backbone`).
    pub fn name(self) -> &'static str {
        match self {
            Backbone::Resnet18 => "resnet18",
            Backbone::Resnet34 => "resnet34",
            Backbone::Resnet50 => "resnet50",
        }
    }
}

/// The graph head applied to the batch during training: none (baseline), plain GAT (X' = ÂX) or MGAT
/// (X' = (Â⊙M)X).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Head {
    None,
    Gat,
    Mgat,
}

/// Where the graph is built (the seed leaves this open): on the backbone's pooled features X, or on the BN-neck's
/// output BN(X).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GraphInput {
    #[default]
    Backbone,
    Bnneck,
}

/// How the graph's input is normalised before the edge lengths and the node update (the seed leaves this open).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GraphNorm {
    #[default]
    None,
    L2,
}

/// The arithmetic of training's convolutions and matmuls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    #[default]
    Fp32,
    Bf16,
}
