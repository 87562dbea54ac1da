//! Training losses: ID cross-entropy with optional label smoothing, the optimisation-feedback loss
//! MSE(X, stopgrad(X')), batch-hard triplet loss, and batch accuracy.

use candle_core::{D, DType, Tensor};

/// Mean cross-entropy of `logits` (N×C) against `labels` (N, u32), with label smoothing ε:
/// (1 − ε)·NLL + ε·mean over classes of −log p.
pub fn cross_entropy(
    logits: &Tensor,
    labels: &Tensor,
    smoothing: f64,
) -> candle_core::Result<Tensor> {
    let n = labels.dim(0)?;
    let logp = candle_nn::ops::log_softmax(logits, D::Minus1)?;
    let nll = logp
        .gather(&labels.reshape((n, 1))?, 1)?
        .neg()?
        .mean_all()?;
    if smoothing == 0.0 {
        return Ok(nll);
    }
    let uniform = logp.mean(D::Minus1)?.neg()?.mean_all()?;
    (nll * (1.0 - smoothing))? + (uniform * smoothing)?
}

/// OF loss: mean squared error between X and X', with X' detached so that it pulls X toward X'.
pub fn of_loss(x: &Tensor, refined: &Tensor) -> candle_core::Result<Tensor> {
    (x - refined.detach())?.sqr()?.mean_all()
}

/// Batch-hard triplet loss: for each anchor, its farthest positive and nearest negative (euclidean).
pub fn triplet_hard(x: &Tensor, labels: &Tensor, margin: f64) -> candle_core::Result<Tensor> {
    let n = x.dim(0)?;
    let sq = x.sqr()?.sum_keepdim(1)?;
    let d = (sq.broadcast_add(&sq.t()?)? - (x.matmul(&x.t()?)? * 2.0)?)?
        .relu()?
        .affine(1.0, 1e-12)?
        .sqrt()?;
    let same = labels
        .reshape((n, 1))?
        .broadcast_as((n, n))?
        .eq(&labels.reshape((1, n))?.broadcast_as((n, n))?)?
        .to_dtype(x.dtype())?;
    let hardest_positive = (&d * &same)?.max(D::Minus1)?;
    let far = d.max_keepdim(D::Minus1)?.max_keepdim(0)?.affine(1.0, 1.0)?;
    let hardest_negative = (&d + same.broadcast_mul(&far)?)?.min(D::Minus1)?;
    (hardest_positive - hardest_negative)?
        .affine(1.0, margin)?
        .relu()?
        .mean_all()
}

/// Fraction of rows whose largest logit is the label.
pub fn accuracy(logits: &Tensor, labels: &Tensor) -> candle_core::Result<f64> {
    let predicted = logits.argmax(D::Minus1)?.to_dtype(DType::U32)?;
    predicted
        .eq(labels)?
        .to_dtype(DType::F64)?
        .mean_all()?
        .to_scalar::<f64>()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn cross_entropy_matches_a_hand_computation() {
        let logits = Tensor::new(&[[2.0f64, 0.0, 0.0], [0.0, 1.0, 3.0]], &Device::Cpu).unwrap();
        let labels = Tensor::new(&[0u32, 1], &Device::Cpu).unwrap();
        let lse = |v: [f64; 3]| v.iter().map(|x| x.exp()).sum::<f64>().ln();
        let (l0, l1) = (lse([2.0, 0.0, 0.0]), lse([0.0, 1.0, 3.0]));
        let nll = ((l0 - 2.0) + (l1 - 1.0)) / 2.0;
        let got = cross_entropy(&logits, &labels, 0.0)
            .unwrap()
            .to_scalar::<f64>()
            .unwrap();
        assert!((got - nll).abs() < 1e-12);
        let uniform = ((3.0 * l0 - 2.0) / 3.0 + (3.0 * l1 - 4.0) / 3.0) / 2.0;
        let smoothed = cross_entropy(&logits, &labels, 0.1)
            .unwrap()
            .to_scalar::<f64>()
            .unwrap();
        assert!((smoothed - (0.9 * nll + 0.1 * uniform)).abs() < 1e-12);
        assert_eq!(accuracy(&logits, &labels).unwrap(), 0.5);
    }

    #[test]
    fn triplet_picks_the_hardest_pairs() {
        // 1-D points: labels 0 at 0 and 1, labels 1 at 1.5 and 4.
        let x = Tensor::new(&[[0.0f64], [1.0], [1.5], [4.0]], &Device::Cpu).unwrap();
        let labels = Tensor::new(&[0u32, 0, 1, 1], &Device::Cpu).unwrap();
        // Anchors: 0: pos 1, neg 1.5 → 1 − 1.5 + m; 1: pos 1, neg .5; 2: pos 2.5, neg .5; 3: pos 2.5, neg 3.
        let m = 0.3;
        let expected = ([1.0 - 1.5, 1.0 - 0.5, 2.5 - 0.5, 2.5 - 3.0]
            .iter()
            .map(|v: &f64| (v + m).max(0.0))
            .sum::<f64>())
            / 4.0;
        let got = triplet_hard(&x, &labels, m)
            .unwrap()
            .to_scalar::<f64>()
            .unwrap();
        assert!((got - expected).abs() < 1e-6, "{got} vs {expected}");
    }

    #[test]
    fn of_loss_only_moves_x() {
        let x = candle_core::Var::new(&[[1.0f64, 2.0]], &Device::Cpu).unwrap();
        let refined = candle_core::Var::new(&[[0.0f64, 0.0]], &Device::Cpu).unwrap();
        let loss = of_loss(x.as_tensor(), refined.as_tensor()).unwrap();
        assert_eq!(loss.to_scalar::<f64>().unwrap(), 2.5);
        let grads = loss.backward().unwrap();
        assert_eq!(
            grads.get(x.as_tensor()).unwrap().to_vec2::<f64>().unwrap(),
            [[1.0, 2.0]]
        );
        assert!(grads.get(refined.as_tensor()).is_none());
    }
}
