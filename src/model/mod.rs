//! The network: a ResNet backbone in torchvision naming, the MGAT / GAT head (training only), an optional BN-neck
//! and the ID classifier. At test time features come from the backbone alone.

pub mod head;
pub mod ops;
pub mod params;
pub mod resnet;

use crate::plan::keys::ModelKey;
use crate::spec::config::Precision;
use candle_core::{DType, Tensor, Var};
use head::GraphHead;
use params::{Init, ModelError, Params};
use resnet::{BatchNorm, ResNet};

pub struct Network {
    pub backbone: ResNet,
    pub head: Option<GraphHead>,
    /// The ID loss also applies to X (a graph head's setting).
    id_loss_on_x: bool,
    bnneck: Option<BatchNorm>,
    classifier: Var,
}

/// What one training forward pass produces.
pub struct Outputs {
    /// Backbone features X.
    pub features: Tensor,
    /// Head output X' (X for the baseline).
    pub refined: Tensor,
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
        Ok(Self {
            backbone,
            head,
            id_loss_on_x: cfg.graph().is_some_and(|(g, _)| g.id_loss_on_x),
            bnneck,
            classifier,
        })
    }

    /// The training forward pass on a batch with identity labels.
    pub fn forward_train(&self, images: &Tensor, labels: &Tensor) -> candle_core::Result<Outputs> {
        let features = self.backbone.forward(images, true)?;
        let refined = match &self.head {
            Some(h) => h.forward(&features, labels)?,
            None => features.clone(),
        };
        let logits = self.classify(&refined)?;
        let logits_x = if self.id_loss_on_x {
            Some(self.classify(&features)?)
        } else {
            None
        };
        Ok(Outputs {
            features,
            refined,
            logits,
            logits_x,
        })
    }

    fn classify(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let x = match &self.bnneck {
            Some(bn) => bn.forward(x, true)?,
            None => x.clone(),
        };
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
