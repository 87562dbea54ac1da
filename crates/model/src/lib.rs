//! The network: a ResNet backbone in torchvision naming, the MGAT / GAT head (training only), an optional BN-neck
//! and the ID classifier. At test time features come from the backbone alone.

pub mod checkpoint;

/// The trained weights in a train entry: written by the train stage, read by the eval stage.
pub const MODEL_FILE: &str = "model.safetensors";

pub mod config;
pub mod head;
pub mod key;
pub mod numerics;
pub mod ops;
pub mod params;
mod pickle_budget;
pub mod resnet;

use crate::config::{GraphInput, GraphNorm, Precision};
use crate::key::ModelKey;
use candle_core::{DType, Tensor, Var};
use head::GraphHead;
use params::{Init, ModelError, Params};
use resnet::{BatchNorm, ResNet};

pub struct Network {
    pub backbone: ResNet,
    pub head: Option<GraphHead>,
    /// The ID loss also applies to X (a graph head's setting).
    id_loss_on_x: bool,
    /// The graph is built on BN(X) rather than X (`model.graph_input: bnneck`).
    graph_on_bnneck: bool,
    /// The graph's input is L2-normalised (`model.graph_norm: l2`).
    graph_l2: bool,
    bnneck: Option<BatchNorm>,
    classifier: Var,
}

/// What one training forward pass produces.
pub struct Outputs {
    /// Backbone features X.
    pub features: Tensor,
    /// G, what the head reads and the OF loss compares with X': X, or BN(X), optionally L2-normalised; X for the
    /// baseline.
    pub graph_input: Tensor,
    /// Head output X' (X for the baseline).
    pub refined: Tensor,
    /// The head's attention Â before the mask (none for the baseline).
    pub attention: Option<Tensor>,
    /// Class scores from X'.
    pub logits: Tensor,
    /// Class scores from X, when the ID loss also applies to X.
    pub logits_x: Option<Tensor>,
}

impl Network {
    /// Builds the network for `classes` training identities, registering its parameters in `p`.
    pub fn new(p: &mut Params, cfg: &ModelKey, classes: usize) -> Result<Self, ModelError> {
        let backbone = ResNet::new(
            p,
            cfg.backbone,
            cfg.width as usize,
            cfg.last_stride as usize,
        )?;
        let dim = backbone.out_dim();
        let head = GraphHead::new(p, cfg, dim)?;
        let bnneck = if cfg.bnneck {
            Some(BatchNorm::new(p, "bottleneck", dim)?)
        } else {
            None
        };
        let classifier = p.weight("classifier.weight", &[classes, dim], Init::Normal(0.001))?;
        let graph = cfg.graph().map(|(g, _)| g);
        Ok(Self {
            backbone,
            head,
            id_loss_on_x: graph.is_some_and(|g| g.id_loss_on_x),
            graph_on_bnneck: graph.is_some_and(|g| g.input == GraphInput::Bnneck),
            graph_l2: graph.is_some_and(|g| g.norm == GraphNorm::L2),
            bnneck,
            classifier,
        })
    }

    /// The training forward pass on a batch with identity labels. With the graph on the backbone, the classifier
    /// reads BN-neck(X'); with the graph on the BN-neck, it reads X' directly (X' replaces BN(X)).
    pub fn forward_train(&self, images: &Tensor, labels: &Tensor) -> candle_core::Result<Outputs> {
        let features = self.backbone.forward(images, true)?;
        let Some(head) = &self.head else {
            let logits = self.classify(&self.neck(&features)?)?;
            return Ok(Outputs {
                graph_input: features.clone(),
                refined: features.clone(),
                features,
                attention: None,
                logits,
                logits_x: None,
            });
        };
        let neck_x = match self.graph_on_bnneck || self.id_loss_on_x {
            true => Some(self.neck(&features)?),
            false => None,
        };
        let graph_input = match (&neck_x, self.graph_on_bnneck) {
            (Some(n), true) => n.clone(),
            _ => features.clone(),
        };
        let graph_input = match self.graph_l2 {
            true => l2_normalize(&graph_input)?,
            false => graph_input,
        };
        let (refined, attention) = head.forward(&graph_input, labels)?;
        let logits = match self.graph_on_bnneck {
            true => self.classify(&refined)?,
            false => self.classify(&self.neck(&refined)?)?,
        };
        let logits_x = match (&neck_x, self.id_loss_on_x) {
            (Some(n), true) => Some(self.classify(n)?),
            _ => None,
        };
        Ok(Outputs {
            features,
            graph_input,
            refined,
            attention: Some(attention),
            logits,
            logits_x,
        })
    }

    /// The BN-neck in training mode, or the identity without one.
    fn neck(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        match &self.bnneck {
            Some(bn) => bn.forward(x, true),
            None => Ok(x.clone()),
        }
    }

    /// The ID classifier's scores for `x` (already through the BN-neck where the network has one).
    fn classify(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let w = self.classifier.as_tensor().t()?;
        match self.backbone.compute() {
            Some(dtype) if dtype != x.dtype() => x
                .to_dtype(dtype)?
                .matmul(&w.to_dtype(dtype)?)?
                .to_dtype(x.dtype()),
            _ => x.matmul(&w),
        }
    }

    /// Train with convolutions and the classifier in `precision` (bf16: their inputs and weights cast to bfloat16,
    /// outputs back to the parameters' dtype; master weights, BatchNorm, the head and the losses stay in f32).
    pub fn set_precision(&mut self, precision: Precision) {
        if precision == Precision::Bf16 {
            self.backbone.set_compute(DType::BF16);
        }
    }
}

/// Each row divided by its euclidean length (plus 1e-12 against division by zero).
fn l2_normalize(x: &Tensor) -> candle_core::Result<Tensor> {
    x.broadcast_div(&(x.sqr()?.sum_keepdim(1)? + 1e-12)?.sqrt()?)
}
