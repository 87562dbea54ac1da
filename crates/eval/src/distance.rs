//! Distances between query and gallery features, computed in blocks of query rows (a matrix product per block) so
//! that a Market-scale problem (3368 × 15913 × 2048) never holds the whole distance matrix: squared euclidean
//! (torchreid's `euclidean`: ‖q‖² + ‖g‖² − 2q·g) or cosine (1 − q̂·ĝ), with optional L2 normalisation first.

use super::array::Matrix;
use crate::config::Metric;
use std::borrow::Cow;

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("query features have {query} dimensions, gallery features {gallery}")]
pub struct DimensionMismatch {
    pub query: usize,
    pub gallery: usize,
}

/// Bytes of distances held at once.
const BLOCK_BYTES: usize = 64 << 20;

/// Calls `each` with consecutive blocks of distance rows (row-major, `gallery.rows` columns), covering all queries
/// in order.
pub fn for_each_block<E: From<DimensionMismatch>>(
    query: &Matrix,
    gallery: &Matrix,
    metric: Metric,
    normalize: bool,
    mut each: impl FnMut(&[f32]) -> Result<(), E>,
) -> Result<(), E> {
    if query.cols != gallery.cols {
        return Err(DimensionMismatch {
            query: query.cols,
            gallery: gallery.cols,
        }
        .into());
    }
    let unit = normalize || metric == Metric::Cosine;
    let (q, g) = if unit {
        (
            Cow::Owned(l2_normalized(query)),
            Cow::Owned(l2_normalized(gallery)),
        )
    } else {
        (Cow::Borrowed(query), Cow::Borrowed(gallery))
    };
    let (d, ng) = (q.cols, g.rows);
    let g_norms: Vec<f32> = (0..ng).map(|j| squared_norm(g.row(j))).collect();
    let block_rows = (BLOCK_BYTES / (4 * ng.max(1))).max(1);
    let mut block = vec![0f32; block_rows.min(q.rows) * ng];
    for start in (0..q.rows).step_by(block_rows) {
        let rows = block_rows.min(q.rows - start);
        let out = &mut block[..rows * ng];
        let lhs = &q.data[start * d..(start + rows) * d];
        block_distances(lhs, &g.data, &g_norms, d, metric, out);
        each(out)?;
    }
    Ok(())
}

/// The distances of the rows of `lhs` (row-major, `d` columns) to the rows of `rhs` (whose squared norms are
/// `rhs_norms`), into `out` (row-major, a row per `lhs` row): one matrix product, then the metric's formula.
pub(crate) fn block_distances(
    lhs: &[f32],
    rhs: &[f32],
    rhs_norms: &[f32],
    d: usize,
    metric: Metric,
    out: &mut [f32],
) {
    let n = rhs_norms.len();
    block_products(lhs, rhs, d, out);
    for (row, l) in out.chunks_mut(n.max(1)).zip(lhs.chunks(d.max(1))) {
        let ln = squared_norm(l);
        match metric {
            Metric::Euclidean => row
                .iter_mut()
                .zip(rhs_norms)
                .for_each(|(v, rn)| *v = ln + rn - 2.0 * *v),
            Metric::Cosine => row.iter_mut().for_each(|v| *v = 1.0 - *v),
        }
    }
}

/// The dot products of the rows of `lhs` (row-major, `d` columns) with the rows of `rhs`, into `out` (row-major, a
/// row per `lhs` row): one matrix product.
pub(crate) fn block_products(lhs: &[f32], rhs: &[f32], d: usize, out: &mut [f32]) {
    let (rows, n) = (lhs.len() / d.max(1), rhs.len() / d.max(1));
    debug_assert_eq!(out.len(), rows * n);
    // SAFETY: out is rows×n row-major, lhs rows×d row-major, rhs n×d row-major read as its d×n transpose; every
    // stride and extent stays inside those slices.
    unsafe {
        gemm::gemm(
            rows,
            n,
            d,
            out.as_mut_ptr(),
            1,
            n as isize,
            false,
            lhs.as_ptr(),
            1,
            d as isize,
            rhs.as_ptr(),
            d as isize,
            1,
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::Rayon(0),
        );
    }
}

pub(crate) fn squared_norm(v: &[f32]) -> f32 {
    v.iter().map(|x| x * x).sum()
}

/// Rows scaled to unit length (torchreid's F.normalize: divided by max(‖x‖, 1e-12)).
pub fn l2_normalized(m: &Matrix) -> Matrix {
    let mut data = m.data.to_vec();
    for row in data.chunks_mut(m.cols.max(1)) {
        let norm = squared_norm(row).sqrt().max(1e-12);
        row.iter_mut().for_each(|x| *x /= norm);
    }
    Matrix {
        rows: m.rows,
        cols: m.cols,
        data: data.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(rows: usize, cols: usize, f: impl Fn(usize) -> f32) -> Matrix {
        Matrix {
            rows,
            cols,
            data: (0..rows * cols).map(f).collect::<Vec<_>>().into(),
        }
    }

    fn all(q: &Matrix, g: &Matrix, metric: Metric, normalize: bool) -> Vec<f32> {
        let mut out = Vec::new();
        for_each_block::<DimensionMismatch>(q, g, metric, normalize, |b| {
            out.extend_from_slice(b);
            Ok(())
        })
        .unwrap();
        out
    }

    #[test]
    fn match_a_direct_computation_in_f64() {
        let q = m(7, 5, |i| ((i * 37 % 11) as f32 - 5.0) * 0.3);
        let g = m(9, 5, |i| ((i * 53 % 13) as f32 - 6.0) * 0.2);
        let euclid = all(&q, &g, Metric::Euclidean, false);
        let cosine = all(&q, &g, Metric::Cosine, false);
        for i in 0..7 {
            for j in 0..9 {
                let (a, b) = (q.row(i), g.row(j));
                let sq: f64 = a
                    .iter()
                    .zip(b)
                    .map(|(x, y)| (*x as f64 - *y as f64).powi(2))
                    .sum();
                assert!(
                    (euclid[i * 9 + j] as f64 - sq).abs() < 1e-4,
                    "euclidean {i},{j}"
                );
                let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
                let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
                let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
                assert!(
                    (cosine[i * 9 + j] as f64 - (1.0 - dot / (na * nb))).abs() < 1e-5,
                    "cosine {i},{j}"
                );
            }
        }
        let normalized = all(&q, &g, Metric::Euclidean, true);
        // For unit vectors, squared euclidean = 2·(1 − cos).
        assert!(
            normalized
                .iter()
                .zip(&cosine)
                .all(|(e, c)| (e - 2.0 * c).abs() < 1e-5)
        );
    }

    #[test]
    fn blocks_cover_every_row_in_order() {
        let q = m(3000, 2, |i| i as f32 * 0.001);
        let g = m(6000, 2, |i| (i % 7) as f32);
        let mut rows = 0;
        for_each_block::<DimensionMismatch>(&q, &g, Metric::Euclidean, false, |b| {
            assert_eq!(b.len() % 6000, 0);
            rows += b.len() / 6000;
            Ok(())
        })
        .unwrap();
        assert_eq!(rows, 3000);
        let bad = m(2, 3, |_| 0.0);
        assert_eq!(
            for_each_block::<DimensionMismatch>(&bad, &g, Metric::Cosine, false, |_| Ok(())),
            Err(DimensionMismatch {
                query: 3,
                gallery: 2
            })
        );
    }
}
