//! α-weighted average query expansion (fast-reid's `aqe`, `TEST.AQE`): every query and gallery feature is replaced
//! by the mean of its k nearest neighbours' features among queries and gallery together (itself first), each
//! weighted by its cosine similarity raised to α. One expansion, as fast-reid's default `QE_TIME` of 1.
//!
//! It follows fast-reid's arithmetic in float32: similarities are products of L2-normalised features; the
//! neighbours are ordered by similarity, highest first (ties by index, where numpy's `argpartition` leaves them in
//! no documented order); each weighted feature `x_j · s_j^α` is added in that order and the sum divided by k. It is
//! streamed: similarities are computed a block of rows at a time (one matrix product each) and only each row's k
//! best are kept, so nothing of size (query+gallery)² is held.

use crate::array::Matrix;
use crate::distance::{DimensionMismatch, block_products, l2_normalized};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueryExpansion {
    /// Neighbours averaged, the item itself among them.
    pub k: usize,
    /// The exponent of each neighbour's similarity in its weight.
    pub alpha: f64,
}

impl Default for QueryExpansion {
    /// fast-reid's defaults (`QE_K: 5`, `ALPHA: 3.0`).
    fn default() -> Self {
        Self { k: 5, alpha: 3.0 }
    }
}

/// Bytes of similarities held at once.
const BLOCK_BYTES: usize = 64 << 20;

impl QueryExpansion {
    /// Why these parameters cannot expand `n` items (queries and gallery), if they cannot.
    pub fn check(&self, n: usize) -> Result<(), String> {
        if self.k == 0 || self.k > n {
            return Err(format!(
                "k = {}: expected 1 to the {n} queries and gallery items there are",
                self.k
            ));
        }
        if !(self.alpha.is_finite() && (0.0..=MAX_ALPHA).contains(&self.alpha)) {
            return Err(format!(
                "alpha = {}: expected a number from 0 to {MAX_ALPHA}",
                self.alpha
            ));
        }
        Ok(())
    }

    /// The expanded query and gallery features.
    pub fn expand(
        &self,
        query: &Matrix,
        gallery: &Matrix,
    ) -> Result<(Matrix, Matrix), DimensionMismatch> {
        if query.cols != gallery.cols {
            return Err(DimensionMismatch {
                query: query.cols,
                gallery: gallery.cols,
            });
        }
        let d = query.cols;
        let all: Vec<f32> = query
            .data
            .iter()
            .chain(gallery.data.iter())
            .copied()
            .collect();
        let n = query.rows + gallery.rows;
        let all = Matrix {
            rows: n,
            cols: d,
            data: all.into(),
        };
        let unit = l2_normalized(&all);
        let alpha = self.alpha as f32;
        let k = self.k.min(n);
        let block_rows = (BLOCK_BYTES / (4 * n.max(1))).max(1);
        let mut sims = vec![0f32; block_rows.min(n) * n];
        let mut out = vec![0f32; n * d];
        for start in (0..n).step_by(block_rows) {
            let rows = block_rows.min(n - start);
            let block = &mut sims[..rows * n];
            block_products(
                &unit.data[start * d..(start + rows) * d],
                &unit.data,
                d,
                block,
            );
            for (r, row) in block.chunks(n).enumerate() {
                let expanded = &mut out[(start + r) * d..(start + r + 1) * d];
                for &j in &nearest(row, k) {
                    let weight = row[j].powf(alpha);
                    for (acc, x) in expanded.iter_mut().zip(all.row(j)) {
                        *acc += x * weight;
                    }
                }
                let count = k as f32;
                expanded.iter_mut().for_each(|v| *v /= count);
            }
        }
        let (q, g) = out.split_at(query.rows * d);
        let matrix = |rows: usize, data: &[f32]| Matrix {
            rows,
            cols: d,
            data: data.to_vec().into(),
        };
        Ok((matrix(query.rows, q), matrix(gallery.rows, g)))
    }
}

/// The largest α accepted: similarities are at most 1, so a larger α only drives every weight but the item's own to 0.
pub const MAX_ALPHA: f64 = 1000.0;

/// The indices of the `k` largest values of `row`, largest first (equal values by index).
fn nearest(row: &[f32], k: usize) -> Vec<usize> {
    let order = |a: &usize, b: &usize| row[*b].total_cmp(&row[*a]).then(a.cmp(b));
    let mut idx: Vec<usize> = (0..row.len()).collect();
    if k < idx.len() {
        idx.select_nth_unstable_by(k - 1, order);
        idx.truncate(k);
    }
    idx.sort_by(order);
    idx
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(rows: usize, cols: usize, data: &[f32]) -> Matrix {
        Matrix {
            rows,
            cols,
            data: data.to_vec().into(),
        }
    }

    /// The formula by brute force over the whole similarity matrix, in f64.
    fn brute(q: &Matrix, g: &Matrix, k: usize, alpha: f64) -> Vec<f64> {
        let rows: Vec<&[f32]> = (0..q.rows)
            .map(|i| q.row(i))
            .chain((0..g.rows).map(|i| g.row(i)))
            .collect();
        let norm = |v: &[f32]| v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
        let mut out = Vec::new();
        for a in &rows {
            let mut sims: Vec<(f64, usize)> = rows
                .iter()
                .enumerate()
                .map(|(j, b)| {
                    let dot: f64 = a
                        .iter()
                        .zip(*b)
                        .map(|(x, y)| f64::from(*x) * f64::from(*y))
                        .sum();
                    (dot / norm(a) / norm(b), j)
                })
                .collect();
            sims.sort_by(|x, y| y.0.total_cmp(&x.0));
            out.extend((0..a.len()).map(|c| {
                let sum: f64 = sims[..k]
                    .iter()
                    .map(|(s, j)| f64::from(rows[*j][c]) * s.powf(alpha))
                    .sum();
                sum / k as f64
            }));
        }
        out
    }

    #[test]
    fn expansion_is_the_weighted_mean_of_each_items_nearest_features() {
        let q = m(2, 3, &[1.0, 0.2, 0.0, 0.1, 1.0, 0.3]);
        let g = m(
            4,
            3,
            &[0.9, 0.1, 0.1, 0.0, 0.8, 0.5, 0.3, 0.3, 1.0, -0.5, 0.2, 0.1],
        );
        for (k, alpha) in [(1, 3.0), (3, 3.0), (6, 1.0), (2, 0.0)] {
            let (eq, eg) = QueryExpansion { k, alpha }.expand(&q, &g).unwrap();
            let got: Vec<f64> = eq
                .data
                .iter()
                .chain(eg.data.iter())
                .map(|x| f64::from(*x))
                .collect();
            let want = brute(&q, &g, k, alpha);
            for (a, b) in got.iter().zip(&want) {
                assert!(
                    (a - b).abs() < 1e-5,
                    "k {k} alpha {alpha}: {got:?} vs {want:?}"
                );
            }
        }
        // k = 1: each item is its own nearest neighbour, with weight 1.
        let (eq, _) = QueryExpansion { k: 1, alpha: 3.0 }.expand(&q, &g).unwrap();
        assert_eq!(eq.data, q.data);
    }

    /// What fast-reid's own `aqe` makes of the fixtures' features (tests/data/aqe, scripts/make-aqe-fixtures.py).
    #[test]
    fn expansion_matches_fast_reids_aqe() {
        for case in ["fastreid-defaults", "wide-k", "no-weights"] {
            let fixture = crate::fixtures::Case::open("aqe", case);
            let load = |name: &str| fixture.matrix(name);
            let qe = QueryExpansion {
                k: fixture.usize("k"),
                alpha: fixture.f64("alpha"),
            };
            let (eq, eg) = qe.expand(&load("qf"), &load("gf")).unwrap();
            for (got, want) in [(eq, load("expanded_qf")), (eg, load("expanded_gf"))] {
                assert_eq!((got.rows, got.cols), (want.rows, want.cols), "{case}");
                for (a, b) in got.data.iter().zip(want.data.iter()) {
                    assert!(
                        (a - b).abs() <= 1e-5 * b.abs().max(1.0),
                        "{case}: {a} vs {b}"
                    );
                }
            }
        }
    }

    #[test]
    fn parameters_and_shapes_the_items_cannot_take_are_named() {
        let qe = QueryExpansion { k: 10, alpha: 3.0 };
        assert!(qe.check(9).unwrap_err().contains("k = 10"));
        assert!(QueryExpansion { k: 0, alpha: 3.0 }.check(9).is_err());
        assert!(
            QueryExpansion { k: 2, alpha: -1.0 }
                .check(9)
                .unwrap_err()
                .contains("alpha = -1")
        );
        assert!(
            QueryExpansion {
                k: 2,
                alpha: f64::NAN
            }
            .check(9)
            .is_err()
        );
        let err = qe
            .expand(&m(1, 2, &[1.0, 0.0]), &m(1, 3, &[1.0, 0.0, 0.0]))
            .unwrap_err();
        assert_eq!(
            err,
            DimensionMismatch {
                query: 2,
                gallery: 3
            }
        );
        assert_eq!(nearest(&[0.5, 0.9, 0.9, 0.1], 3), vec![1, 2, 0]);
    }
}
