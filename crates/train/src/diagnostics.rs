//! What the graph head does to its batch, measured on every training batch and averaged per epoch: the lengths of
//! its input and output, how much it mixes, how much of that goes to the same identity, how far it moves its input
//! and whether its output keeps the input's direction. `train_log.csv` has them per epoch, and the train stage's
//! summary its last epoch's, which results.csv carries per cell.

use candle_core::{DType, Tensor};
use mgat_model::Outputs;
use mgat_model::head::{direction_kept, offdiag_share, relative_change, same_identity_share};
use serde::{Deserialize, Serialize};

/// One epoch's diagnostics (means over its batches), or one batch's.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Diagnostics {
    /// Mean ‖X‖ of the backbone features (a collapse shows as a falling length).
    pub feature_norm: f64,
    /// Mean ‖X'‖ of the head's output (‖X‖ for the baseline).
    pub refined_norm: f64,
    /// Mean share of the off-diagonal attention on the same identity ([`same_identity_share`]); none for the
    /// baseline.
    pub same_identity_attention: Option<f64>,
    /// Mean share of each row's attention off the diagonal ([`offdiag_share`]): how much the graph mixes at all,
    /// taken before the mask, so it cannot say whether the mixing helps; none for the baseline.
    pub offdiag_attention: Option<f64>,
    /// Mean ‖X' − G‖ / ‖G‖ ([`relative_change`]): how far the head moves its input; 0 for the baseline.
    pub graph_change: f64,
    /// Mean cos(X', G) ([`direction_kept`]): whether the output keeps its input's direction (near 1) or the mask
    /// turns it against it (negative); 1 for the baseline.
    pub graph_cosine: f64,
}

/// One diagnostic, by name: what results.csv, `train_log.csv`, diffs and audits call it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Diagnostic {
    FeatureNorm,
    RefinedNorm,
    SameIdentityAttention,
    OffdiagAttention,
    GraphChange,
    GraphCosine,
}

impl Diagnostic {
    /// Every diagnostic, in file order.
    pub const ALL: [Diagnostic; 6] = [
        Diagnostic::FeatureNorm,
        Diagnostic::RefinedNorm,
        Diagnostic::SameIdentityAttention,
        Diagnostic::OffdiagAttention,
        Diagnostic::GraphChange,
        Diagnostic::GraphCosine,
    ];

    /// The column name in `train_log.csv` and results.csv.
    pub fn name(self) -> &'static str {
        match self {
            Diagnostic::FeatureNorm => "feature_norm",
            Diagnostic::RefinedNorm => "refined_norm",
            Diagnostic::SameIdentityAttention => "same_identity_attention",
            Diagnostic::OffdiagAttention => "offdiag_attention",
            Diagnostic::GraphChange => "graph_change",
            Diagnostic::GraphCosine => "graph_cosine",
        }
    }

    /// What it is, for table headers.
    pub fn label(self) -> &'static str {
        match self {
            Diagnostic::FeatureNorm => "‖X‖",
            Diagnostic::RefinedNorm => "‖X′‖",
            Diagnostic::SameIdentityAttention => "same-identity share",
            Diagnostic::OffdiagAttention => "off-diagonal share",
            Diagnostic::GraphChange => "‖X′ − G‖ / ‖G‖",
            Diagnostic::GraphCosine => "cos(X′, G)",
        }
    }

    /// Whether only a graph head has it (the baseline has no attention to measure).
    pub fn needs_graph(self) -> bool {
        matches!(
            self,
            Diagnostic::SameIdentityAttention | Diagnostic::OffdiagAttention
        )
    }

    /// Its value in `d`.
    pub fn of(self, d: &Diagnostics) -> Option<f64> {
        match self {
            Diagnostic::FeatureNorm => Some(d.feature_norm),
            Diagnostic::RefinedNorm => Some(d.refined_norm),
            Diagnostic::SameIdentityAttention => d.same_identity_attention,
            Diagnostic::OffdiagAttention => d.offdiag_attention,
            Diagnostic::GraphChange => Some(d.graph_change),
            Diagnostic::GraphCosine => Some(d.graph_cosine),
        }
    }
}

impl Diagnostics {
    /// The diagnostics of one batch's forward pass (`labels`: its identities).
    pub fn of_batch(o: &Outputs, labels: &Tensor) -> candle_core::Result<Self> {
        let attention = |f: &dyn Fn(&Tensor) -> candle_core::Result<f64>| {
            o.attention.as_ref().map(f).transpose()
        };
        Ok(Self {
            feature_norm: mean_row_norm(&o.features)?,
            refined_norm: mean_row_norm(&o.refined)?,
            same_identity_attention: attention(&|a| same_identity_share(a, labels))?,
            offdiag_attention: attention(&offdiag_share)?,
            graph_change: relative_change(&o.refined, &o.graph_input)?,
            graph_cosine: direction_kept(&o.refined, &o.graph_input)?,
        })
    }

    /// The mean of each diagnostic over `batches` (none where any batch has none); None for no batches.
    pub fn mean(batches: &[Diagnostics]) -> Option<Self> {
        let n = batches.len() as f64;
        let mean = |value: fn(&Diagnostics) -> f64| batches.iter().map(value).sum::<f64>() / n;
        let optional = |value: fn(&Diagnostics) -> Option<f64>| {
            batches
                .iter()
                .map(value)
                .sum::<Option<f64>>()
                .map(|s| s / n)
        };
        (!batches.is_empty()).then(|| Self {
            feature_norm: mean(|d| d.feature_norm),
            refined_norm: mean(|d| d.refined_norm),
            same_identity_attention: optional(|d| d.same_identity_attention),
            offdiag_attention: optional(|d| d.offdiag_attention),
            graph_change: mean(|d| d.graph_change),
            graph_cosine: mean(|d| d.graph_cosine),
        })
    }
}

/// The mean euclidean length of the rows of an N×D batch.
fn mean_row_norm(x: &Tensor) -> candle_core::Result<f64> {
    let norms = x.detach().sqr()?.sum_keepdim(1)?.sqrt()?.mean_all()?;
    Ok(f64::from(norms.to_dtype(DType::F32)?.to_scalar::<f32>()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(offdiag: Option<f64>, cosine: f64) -> Diagnostics {
        Diagnostics {
            feature_norm: 2.0,
            refined_norm: 1.0,
            same_identity_attention: offdiag.map(|v| v / 4.0),
            offdiag_attention: offdiag,
            graph_change: 0.5,
            graph_cosine: cosine,
        }
    }

    #[test]
    fn the_epoch_mean_is_the_mean_of_its_batches() {
        let mean = Diagnostics::mean(&[batch(Some(0.5), 1.0), batch(Some(0.25), -0.5)]).unwrap();
        assert_eq!(mean.offdiag_attention, Some(0.375));
        assert_eq!(mean.same_identity_attention, Some(0.09375));
        assert_eq!(mean.graph_cosine, 0.25);
        assert_eq!(mean.feature_norm, 2.0);
        assert_eq!(
            Diagnostics::mean(&[batch(None, 1.0)])
                .unwrap()
                .offdiag_attention,
            None
        );
        assert_eq!(Diagnostics::mean(&[]), None);
    }

    #[test]
    fn only_the_attention_shares_need_a_graph() {
        let baseline = batch(None, 1.0);
        for d in Diagnostic::ALL {
            assert_eq!(
                Diagnostic::of(d, &baseline).is_none(),
                d.needs_graph(),
                "{d:?}"
            );
        }
    }
}
