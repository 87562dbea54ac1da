//! The MGAT / GAT head, applied to a training batch treated as a complete graph (the paper's method):
//! e_ij = ‖x_i − x_j‖₂ (or its square), a_ij = exp(−γ·e_ij), Â = a row-normalised (L1), M_ij = +1 for the same
//! identity and −1 otherwise, X' = (Â⊙M)·X (MGAT) or Â·X (plain GAT), optionally followed by a learnable d×d
//! weight and a residual connection. The mask is built from the labels, so any batch order is right.
//!
//! Where the graph is built is left open by the seed: the head runs on G, the backbone's X or the BN-neck's BN(X)
//! (`model.graph_input`), optionally L2-normalised (`model.graph_norm`); the network picks G, this module maps
//! G to X'.

use super::params::{Init, ModelError, Params};
use crate::key::ModelKey;
use candle_core::{DType, Tensor, Var};

pub struct GraphHead {
    gamma: f64,
    mask: bool,
    squared: bool,
    residual: bool,
    weight: Option<Var>,
}

impl GraphHead {
    /// The head of `model`, or None for the baseline (`head: none`).
    pub fn new(p: &mut Params, model: &ModelKey, dim: usize) -> Result<Option<Self>, ModelError> {
        let Some((cfg, mask)) = model.graph() else {
            return Ok(None);
        };
        let weight = match cfg.weight {
            true => Some(p.weight(
                "head.weight",
                &[dim, dim],
                Init::Normal((1.0 / dim as f64).sqrt()),
            )?),
            false => None,
        };
        Ok(Some(Self {
            gamma: cfg.gamma,
            mask,
            squared: cfg.squared_distance,
            residual: cfg.residual,
            weight,
        }))
    }

    /// X' for the N×D batch `x` with identity labels `labels` (N, u32), and the attention Â (before the mask).
    pub fn forward(&self, x: &Tensor, labels: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
        let attention = attention(x, self.gamma, self.squared)?;
        let a = match self.mask {
            true => (&attention * label_mask(labels, x.dtype())?)?,
            false => attention.clone(),
        };
        let mut y = a.matmul(x)?;
        if let Some(w) = &self.weight {
            y = y.matmul(w.as_tensor())?;
        }
        if self.residual {
            y = (y + x)?;
        }
        Ok((y, attention))
    }
}

/// Â: a_ij = exp(−γ·e_ij) with e the (squared) euclidean distance, each row divided by its sum.
pub fn attention(x: &Tensor, gamma: f64, squared: bool) -> candle_core::Result<Tensor> {
    let n = x.dim(0)?;
    let sq = x.sqr()?.sum_keepdim(1)?;
    let d2 = sq
        .broadcast_add(&sq.t()?)?
        .sub(&(x.matmul(&x.t()?)? * 2.0)?)?
        .relu()?;
    // The diagonal is zero by definition; setting it exactly keeps sqrt's gradient at 0 finite (and unused).
    let off_diagonal =
        (Tensor::ones((n, n), x.dtype(), x.device())? - Tensor::eye(n, x.dtype(), x.device())?)?;
    let e = if squared {
        (d2 * &off_diagonal)?
    } else {
        ((d2 + 1e-12)?.sqrt()? * &off_diagonal)?
    };
    let a = (e * -gamma)?.exp()?;
    a.broadcast_div(&a.sum_keepdim(1)?)
}

/// The share of each row's attention off the diagonal that falls on the same identity, averaged over rows:
/// mean_i Σ_{j≠i, y_j=y_i} Â_ij / Σ_{j≠i} Â_ij. A head that ignores identity scores (K − 1)/(N − 1) on P×K batches.
pub fn same_identity_share(attention: &Tensor, labels: &Tensor) -> candle_core::Result<f64> {
    let n = attention.dim(0)?;
    let a = attention.to_dtype(DType::F64)?.to_vec2::<f64>()?;
    let y = labels.to_vec1::<u32>()?;
    let mut share = 0.0;
    for (i, row) in a.iter().enumerate() {
        let (mut same, mut off) = (0.0, 0.0);
        for (j, v) in row.iter().enumerate().filter(|(j, _)| *j != i) {
            off += v;
            if y[j] == y[i] {
                same += v;
            }
        }
        share += if off > 0.0 { same / off } else { 0.0 };
    }
    Ok(share / n.max(1) as f64)
}

/// How much the graph mixes at all: the share of each row's attention off the diagonal, averaged over rows:
/// mean_i Σ_{j≠i} Â_ij / Σ_j Â_ij. 0 when every node attends only to itself; (N − 1)/N for uniform attention.
pub fn offdiag_share(attention: &Tensor) -> candle_core::Result<f64> {
    let a = attention.to_dtype(DType::F64)?.to_vec2::<f64>()?;
    let mut share = 0.0;
    for (i, row) in a.iter().enumerate() {
        let total: f64 = row.iter().sum();
        let off = total - row[i];
        share += if total > 0.0 { off / total } else { 0.0 };
    }
    Ok(share / a.len().max(1) as f64)
}

/// How far the head moves its input: mean_i ‖X'_i − G_i‖ / ‖G_i‖ over the rows of the head's output X' and its
/// input G (0 for the baseline, whose X' is G).
pub fn relative_change(refined: &Tensor, graph_input: &Tensor) -> candle_core::Result<f64> {
    let x = refined.to_dtype(DType::F64)?.to_vec2::<f64>()?;
    let g = graph_input.to_dtype(DType::F64)?.to_vec2::<f64>()?;
    let norm = |v: &mut dyn Iterator<Item = f64>| v.map(|e| e * e).sum::<f64>().sqrt();
    let mut change = 0.0;
    for (xr, gr) in x.iter().zip(&g) {
        let base = norm(&mut gr.iter().copied());
        let moved = norm(&mut xr.iter().zip(gr).map(|(a, b)| a - b));
        change += if base > 0.0 { moved / base } else { 0.0 };
    }
    Ok(change / x.len().max(1) as f64)
}

/// Whether the head keeps its input's direction: mean_i cos(X'_i, G_i) over the rows of the head's output X' and its
/// input G; a row with a zero-length side counts 0 (no direction kept). 1 for the baseline, whose X' is G. Where the
/// masked graph subtracts other identities from a node more than it adds its own, X'_i turns against G_i and the
/// cosine goes negative: the mixing then fights the features instead of smoothing them.
pub fn direction_kept(refined: &Tensor, graph_input: &Tensor) -> candle_core::Result<f64> {
    let x = refined.to_dtype(DType::F64)?.to_vec2::<f64>()?;
    let g = graph_input.to_dtype(DType::F64)?.to_vec2::<f64>()?;
    let mut cosine = 0.0;
    for (xr, gr) in x.iter().zip(&g) {
        let dot: f64 = xr.iter().zip(gr).map(|(a, b)| a * b).sum();
        let lengths = xr.iter().map(|v| v * v).sum::<f64>().sqrt()
            * gr.iter().map(|v| v * v).sum::<f64>().sqrt();
        cosine += if lengths > 0.0 { dot / lengths } else { 0.0 };
    }
    Ok(cosine / x.len().max(1) as f64)
}

/// M_ij = +1 where labels i and j are equal, −1 elsewhere.
pub fn label_mask(labels: &Tensor, dtype: DType) -> candle_core::Result<Tensor> {
    let n = labels.dim(0)?;
    let rows = labels.reshape((n, 1))?.broadcast_as((n, n))?;
    let cols = labels.reshape((1, n))?.broadcast_as((n, n))?;
    (rows.eq(&cols)?.to_dtype(dtype)? * 2.0)? - 1.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Backbone, GraphInput, GraphNorm};
    use crate::key::{GraphKey, HeadKey};
    use candle_core::Device;
    use mgat_util::rng::Rng;

    /// A graph head kind, as `model.head` names it.
    #[derive(Debug, Clone, Copy)]
    enum Head {
        Gat,
        Mgat,
    }

    fn head(kind: Head, squared: bool, weight: bool, residual: bool, p: &mut Params) -> GraphHead {
        let graph = GraphKey {
            input: GraphInput::Backbone,
            norm: GraphNorm::None,
            gamma: 0.7,
            squared_distance: squared,
            weight,
            residual,
            of_weight: 1.0,
            id_loss_on_x: false,
        };
        let key = ModelKey {
            backbone: Backbone::Resnet50,
            width: 64,
            last_stride: 1,
            bnneck: false,
            pretrained_sha256: None,
            head: match kind {
                Head::Gat => HeadKey::Gat(graph),
                Head::Mgat => HeadKey::Mgat { graph, mask: true },
            },
            label_smoothing: 0.0,
            triplet_weight: 0.0,
            triplet_margin: 0.3,
        };
        GraphHead::new(p, &key, 3).unwrap().unwrap()
    }

    #[test]
    fn mask_is_plus_one_exactly_on_same_label_pairs_of_a_shuffled_batch() {
        let labels = [3u32, 1, 3, 0, 1, 3, 0, 2];
        let t = Tensor::new(&labels, &Device::Cpu).unwrap();
        let m = label_mask(&t, DType::F32)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        for i in 0..labels.len() {
            for j in 0..labels.len() {
                assert_eq!(
                    m[i][j],
                    if labels[i] == labels[j] { 1.0 } else { -1.0 },
                    "({i},{j})"
                );
            }
        }
    }

    #[test]
    fn attention_rows_sum_to_one_and_prefer_short_edges() {
        let x = Tensor::new(&[[0f64, 0.0], [0.1, 0.0], [5.0, 5.0]], &Device::Cpu).unwrap();
        let a = attention(&x, 1.0, false).unwrap().to_vec2::<f64>().unwrap();
        for row in &a {
            assert!((row.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        }
        assert!(a[0][1] > a[0][2]);
        // Row 0 by hand: exp(0), exp(−0.1), exp(−√50), normalised.
        let raw = [1.0, (-0.1f64).exp(), (-(50f64).sqrt()).exp()];
        let s: f64 = raw.iter().sum();
        assert!(raw.iter().zip(&a[0]).all(|(r, v)| (r / s - v).abs() < 1e-9));
    }

    #[test]
    fn same_identity_share_by_hand() {
        let a = Tensor::new(
            &[[0.5f64, 0.3, 0.2], [0.1, 0.1, 0.8], [0.25, 0.25, 0.5]],
            &Device::Cpu,
        )
        .unwrap();
        let labels = Tensor::new(&[0u32, 0, 1], &Device::Cpu).unwrap();
        // Row 0: 0.3 / 0.5; row 1: 0.1 / 0.9; row 2: 0 / 0.5.
        let want = (0.3 / 0.5 + 0.1 / 0.9 + 0.0) / 3.0;
        let got = same_identity_share(&a, &labels).unwrap();
        assert!((got - want).abs() < 1e-12, "{got} vs {want}");
    }

    /// Analytic gradients of L = Σ X'⊙R with respect to X (and W) against central differences, in f64.
    #[test]
    fn finite_difference_gradient_check() {
        let dev = Device::Cpu;
        let mut rng = Rng::new(11, &[]);
        let (n, d) = (6, 3);
        let labels = Tensor::new(&[0u32, 1, 0, 2, 1, 0], &dev).unwrap();
        let xs: Vec<f64> = (0..n * d).map(|_| rng.normal()).collect();
        let r = Tensor::from_vec(
            (0..n * d).map(|_| rng.normal()).collect::<Vec<f64>>(),
            (n, d),
            &dev,
        )
        .unwrap();
        for (kind, squared, weight, residual) in [
            (Head::Mgat, false, false, false),
            (Head::Gat, false, false, false),
            (Head::Mgat, true, false, false),
            (Head::Mgat, false, true, true),
        ] {
            let mut p = Params::new(dev.clone(), DType::F64, 2);
            let h = head(kind, squared, weight, residual, &mut p);
            let loss = |x: &Tensor| {
                h.forward(x, &labels)
                    .unwrap()
                    .0
                    .mul(&r)
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .to_scalar::<f64>()
                    .unwrap()
            };
            let x = Var::from_tensor(&Tensor::from_vec(xs.clone(), (n, d), &dev).unwrap()).unwrap();
            let grads = h
                .forward(x.as_tensor(), &labels)
                .unwrap()
                .0
                .mul(&r)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            let analytic = grads
                .get(x.as_tensor())
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f64>()
                .unwrap();
            let eps = 1e-6;
            for i in 0..n * d {
                let at = |delta: f64| {
                    let mut v = xs.clone();
                    v[i] += delta;
                    loss(&Tensor::from_vec(v, (n, d), &dev).unwrap())
                };
                let numeric = (at(eps) - at(-eps)) / (2.0 * eps);
                let err =
                    (numeric - analytic[i]).abs() / numeric.abs().max(analytic[i].abs()).max(1e-3);
                assert!(
                    err < 1e-6,
                    "{kind:?} squared={squared} weight={weight}: d/dx[{i}] analytic {} numeric {numeric}",
                    analytic[i]
                );
            }
        }
    }

    #[test]
    fn mixing_diagnostics_match_a_hand_computation() {
        // Rows: all on the diagonal; half off it; uniform over 3 → off-diagonal shares 0, 0.5, 2/3.
        let a = Tensor::new(
            &[
                [1.0f32, 0.0, 0.0],
                [0.25, 0.5, 0.25],
                [1.0 / 3.0, 1.0 / 3.0, 1.0 / 3.0],
            ],
            &Device::Cpu,
        )
        .unwrap();
        let expected = (0.0 + 0.5 + 2.0 / 3.0) / 3.0;
        assert!((offdiag_share(&a).unwrap() - expected).abs() < 1e-7);
        // G rows (3, 4) and (1, 0); X' rows (3, 4) (unmoved) and (1, 1) (moved by 1 against a length of 1).
        let g = Tensor::new(&[[3.0f32, 4.0], [1.0, 0.0]], &Device::Cpu).unwrap();
        let x = Tensor::new(&[[3.0f32, 4.0], [1.0, 1.0]], &Device::Cpu).unwrap();
        assert!((relative_change(&x, &g).unwrap() - 0.5).abs() < 1e-12);
        assert_eq!(relative_change(&g, &g).unwrap(), 0.0);
        // cos((3, 4), (3, 4)) = 1 and cos((1, 1), (1, 0)) = 1/√2; a zero row counts 0; opposite rows −1.
        let kept = direction_kept(&x, &g).unwrap();
        assert!((kept - (1.0 + 0.5f64.sqrt()) / 2.0).abs() < 1e-7, "{kept}");
        let zero = Tensor::new(&[[0.0f32, 0.0], [-1.0, 0.0]], &Device::Cpu).unwrap();
        assert!((direction_kept(&zero, &g).unwrap() + 0.5).abs() < 1e-12);
    }

    /// The case the off-diagonal share cannot see: two batches whose attention is identical (the same distances,
    /// so the same share off the diagonal) where the masked graph keeps centred features' direction and turns
    /// features with a large common part (all-positive backbone features) against themselves.
    #[test]
    fn direction_kept_tells_harmless_mixing_from_harmful_where_the_share_cannot() {
        let dev = Device::Cpu;
        let labels = Tensor::new(&[0u32, 0, 1, 1, 2, 2, 3, 3], &dev).unwrap();
        // Identity k's two images sit at e_k plus an offset common to every image.
        let batch = |common: f64| {
            let rows: Vec<f64> = (0..8)
                .flat_map(|i| (0..4).map(move |j| f64::from(u8::from(j == i / 2)) + common))
                .collect();
            Tensor::from_vec(rows, (8, 4), &dev).unwrap()
        };
        let (centred, offset) = (batch(-0.25), batch(3.0));
        let mgat = GraphHead {
            gamma: 0.1,
            mask: true,
            squared: false,
            residual: false,
            weight: None,
        };
        let (out_c, att_c) = mgat.forward(&centred, &labels).unwrap();
        let (out_o, att_o) = mgat.forward(&offset, &labels).unwrap();
        let (share_c, share_o) = (
            offdiag_share(&att_c).unwrap(),
            offdiag_share(&att_o).unwrap(),
        );
        assert!(
            (share_c - share_o).abs() < 1e-9 && share_c > 0.7,
            "{share_c} {share_o}"
        );
        let (kept_c, kept_o) = (
            direction_kept(&out_c, &centred).unwrap(),
            direction_kept(&out_o, &offset).unwrap(),
        );
        assert!(
            kept_c > 0.5 && kept_o < -0.5,
            "centred {kept_c}, offset {kept_o}"
        );
    }
}
