//! k-reciprocal re-ranking (Zhong et al., CVPR 2017) as torchreid's `re_ranking` computes it, without ever holding a
//! (query + gallery)² matrix.
//!
//! The reference stacks the query–query, query–gallery and gallery–gallery distances into one N × N matrix
//! (N = queries + gallery), squares it (so torchreid's squared euclidean distances become fourth powers: a quirk
//! kept here), divides each column by its maximum and transposes, argsorts every row in full, and fills dense
//! N × N `V` matrices. Here each row of that normalised matrix is computed, used and dropped, in blocks:
//!
//! 1. per item, the maximum of its column and its `max(k1 + 1, k2)` nearest items (ties: the lower index first;
//!    numpy's argsort leaves their order unspecified);
//! 2. per item, its k-reciprocal set, expanded by the candidates' own `k1/2`-reciprocal sets that share more than
//!    two thirds with it, weighted by `exp(−distance)` and normalised: a sparse row of `V`;
//! 3. local query expansion (`k2`): each row of `V` replaced by the mean of its `k2` nearest items' rows;
//! 4. per query, the Jaccard distance to every gallery item through an inverted index of `V`'s columns, blended
//!    with the normalised original distance: `(1 − λ)·jaccard + λ·original`, one row at a time.
//!
//! Memory is the features (or the given matrices), `N × (k1 + 1)` neighbour indices, the sparse `V` (a few dozen
//! entries per row) and one block of distance rows. Arithmetic is float32 in the reference's order where it matters
//! (the normalisation, the weights, the accumulation of the Jaccard numerator), so results agree with it to float
//! rounding.

use crate::array::Matrix;
use crate::config::Metric;
use crate::distance::{block_distances, l2_normalized, squared_norm};
use rayon::prelude::*;

/// The re-ranking parameters; the paper's (and torchreid's) defaults are k1 = 20, k2 = 6, λ = 0.3.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rerank {
    pub k1: usize,
    pub k2: usize,
    /// In f64 like every setting of a spec; the blend is computed in f32, as torchreid's numpy code computes it
    /// (`1 - λ` in Python floats, then cast).
    pub lambda: f64,
}

impl Default for Rerank {
    fn default() -> Self {
        Self {
            k1: 20,
            k2: 6,
            lambda: 0.3,
        }
    }
}

impl Rerank {
    /// Why these parameters cannot re-rank `n` items, if they cannot.
    pub fn check(&self, n: usize) -> Result<(), String> {
        if self.k1 == 0 || self.k2 == 0 {
            return Err(format!(
                "k1 = {} and k2 = {} must be at least 1",
                self.k1, self.k2
            ));
        }
        if self.k2 > self.k1 {
            return Err(format!(
                "k2 = {} must be at most k1 = {}: query expansion averages over the k1 nearest",
                self.k2, self.k1
            ));
        }
        if !(0.0..=1.0).contains(&self.lambda) {
            return Err(format!("lambda = {} must be within [0, 1]", self.lambda));
        }
        if self.k1.max(self.k2) >= n {
            return Err(format!(
                "k1 = {} and k2 = {} need more than {} query and gallery items together, there are {n}",
                self.k1,
                self.k2,
                self.k1.max(self.k2)
            ));
        }
        Ok(())
    }

    /// Neighbours kept per item.
    fn kept(&self) -> usize {
        (self.k1 + 1).max(self.k2)
    }
}

/// The distances re-ranking reads: of the joint set, queries first, then the gallery. `tile(rows, cols, out)` fills
/// `out` (row-major) with the part `rows` × `cols` of the matrix the reference builds (row `i`, column `j`: the
/// distance the reference has at `[j][i]` before it transposes, which is the distance between items `i` and `j`),
/// `at(i, j)` one entry of it. When `symmetric()`, entry `[i][j]` equals `[j][i]` by construction, so a tile also
/// serves, transposed, for the rows of its columns.
pub trait JointDistances: Sync {
    fn queries(&self) -> usize;
    /// Queries and gallery items together.
    fn items(&self) -> usize;
    fn symmetric(&self) -> bool;
    fn tile(&self, rows: std::ops::Range<usize>, cols: std::ops::Range<usize>, out: &mut [f32]);
    fn at(&self, i: usize, j: usize) -> f32;
    /// Row `i`'s distances to the gallery items (columns `queries()..len()`), into `out`.
    fn to_gallery(&self, rows: std::ops::Range<usize>, out: &mut [f32]);
}

/// Given matrices: query–gallery (Q × G), query–query (Q × Q) and gallery–gallery (G × G), as torchreid's engine
/// passes them.
pub struct Matrices<'a> {
    pub qg: &'a [f32],
    pub qq: &'a [f32],
    pub gg: &'a [f32],
    pub q: usize,
    pub g: usize,
}

impl Matrices<'_> {
    /// The reference's stacked matrix at row `r`, column `c`.
    fn stacked(&self, r: usize, c: usize) -> f32 {
        let (q, g) = (self.q, self.g);
        match (r < q, c < q) {
            (true, true) => self.qq[r * q + c],
            (true, false) => self.qg[r * g + (c - q)],
            (false, true) => self.qg[c * g + (r - q)],
            (false, false) => self.gg[(r - q) * g + (c - q)],
        }
    }
}

impl JointDistances for Matrices<'_> {
    fn queries(&self) -> usize {
        self.q
    }
    fn items(&self) -> usize {
        self.q + self.g
    }
    /// Given matrices need not be exactly symmetric (torch's products are not): every entry is read as given.
    fn symmetric(&self) -> bool {
        false
    }
    fn tile(&self, rows: std::ops::Range<usize>, cols: std::ops::Range<usize>, out: &mut [f32]) {
        let width = cols.len();
        for (i, row) in rows.zip(out.chunks_mut(width)) {
            for (j, v) in cols.clone().zip(row.iter_mut()) {
                *v = self.stacked(j, i);
            }
        }
    }
    fn at(&self, i: usize, j: usize) -> f32 {
        self.stacked(j, i)
    }
    fn to_gallery(&self, rows: std::ops::Range<usize>, out: &mut [f32]) {
        let (q, g) = (self.q, self.g);
        for (i, row) in rows.zip(out.chunks_mut(g)) {
            for (c, v) in row.iter_mut().enumerate() {
                *v = self.stacked(q + c, i);
            }
        }
    }
}

/// Features of the queries then the gallery (row-major), with the distance the evaluation uses.
pub struct Features {
    joint: Vec<f32>,
    norms: Vec<f32>,
    dims: usize,
    queries: usize,
    metric: Metric,
}

impl Features {
    /// The joint features of `query` and `gallery`, L2-normalised first when `normalize` or the metric is cosine.
    pub fn new(query: &Matrix, gallery: &Matrix, metric: Metric, normalize: bool) -> Self {
        let unit = normalize || metric == Metric::Cosine;
        let prepared = |m: &Matrix| match unit {
            true => l2_normalized(m).data.to_vec(),
            false => m.data.to_vec(),
        };
        let mut joint = prepared(query);
        joint.extend(prepared(gallery));
        let dims = query.cols;
        let norms = joint.chunks(dims.max(1)).map(squared_norm).collect();
        Self {
            joint,
            norms,
            dims,
            queries: query.rows,
            metric,
        }
    }

    fn rows(&self, rows: std::ops::Range<usize>) -> &[f32] {
        &self.joint[rows.start * self.dims..rows.end * self.dims]
    }
}

impl JointDistances for Features {
    fn queries(&self) -> usize {
        self.queries
    }
    fn items(&self) -> usize {
        self.norms.len()
    }
    fn symmetric(&self) -> bool {
        true
    }
    fn tile(&self, rows: std::ops::Range<usize>, cols: std::ops::Range<usize>, out: &mut [f32]) {
        let norms = &self.norms[cols.clone()];
        block_distances(
            self.rows(rows),
            self.rows(cols),
            norms,
            self.dims,
            self.metric,
            out,
        );
    }
    fn at(&self, i: usize, j: usize) -> f32 {
        let (a, b) = (self.rows(i..i + 1), self.rows(j..j + 1));
        let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
        match self.metric {
            Metric::Euclidean => self.norms[i] + self.norms[j] - 2.0 * dot,
            Metric::Cosine => 1.0 - dot,
        }
    }
    /// In tiles of [`TILE`] gallery items, so that the product never packs the whole gallery.
    fn to_gallery(&self, rows: std::ops::Range<usize>, out: &mut [f32]) {
        let (q, n) = (self.queries, self.items());
        let g = n - q;
        let mut tile = vec![0f32; rows.len() * TILE.min(g)];
        for start in (q..n).step_by(TILE) {
            let cols = start..(start + TILE).min(n);
            let width = cols.len();
            let part = &mut tile[..rows.len() * width];
            self.tile(rows.clone(), cols, part);
            for (row, values) in out.chunks_mut(g).zip(part.chunks(width)) {
                row[start - q..start - q + width].copy_from_slice(values);
            }
        }
    }
}

/// Bytes of distance rows held at once.
const BLOCK_BYTES: usize = 64 << 20;
/// Items per side of a distance tile (16 MB of distances, and a product that packs 2048 feature rows at a time).
const TILE: usize = 2048;
/// Columns of a tile whose candidates one task updates, reading the tile row by row.
const COLUMN_BAND: usize = 64;
/// Candidates kept per item beyond those needed, by squared distance, so that dividing by the column maximum
/// (which can make two distances equal) cannot push a needed neighbour out.
const TIE_MARGIN: usize = 8;

/// A sparse row of `V`: (column, weight), by column.
type SparseRow = Vec<(u32, f32)>;

/// Re-ranks every query against the gallery: calls `each(rows)` with consecutive blocks of re-ranked Q × G distance
/// rows (row-major), covering all queries in order. `params` must have passed [`Rerank::check`].
pub fn rerank<E>(
    d: &dyn JointDistances,
    params: &Rerank,
    mut each: impl FnMut(&[f32]) -> Result<(), E>,
) -> Result<(), E> {
    let (n, q) = (d.items(), d.queries());
    let g = n - q;
    let (maxima, nearest) = neighbours(d, params);
    let v = expansion_weights(d, params, &maxima, &nearest);
    let v = match params.k2 {
        1 => v,
        k2 => query_expansion(&v, &nearest, k2),
    };
    drop(nearest);
    let by_column = gallery_columns(&v, q, n);
    let block_rows = (BLOCK_BYTES / (4 * g.max(1))).max(1);
    let mut block = vec![0f32; block_rows.min(q) * g];
    let (keep, blend) = ((1.0 - params.lambda) as f32, params.lambda as f32);
    for start in (0..q).step_by(block_rows) {
        let rows = block_rows.min(q - start);
        let out = &mut block[..rows * g];
        d.to_gallery(start..start + rows, out);
        out.par_chunks_mut(g).enumerate().for_each(|(r, row)| {
            let i = start + r;
            let shared = jaccard_numerators(&v[i], &by_column, g);
            for (value, t) in row.iter_mut().zip(shared) {
                let original = (*value * *value) / maxima[i];
                let jaccard = 1.0 - t / (2.0 - t);
                *value = jaccard * keep + original * blend;
            }
        });
        each(out)?;
    }
    Ok(())
}

/// Per item: the maximum of its squared distances (the reference's column maximum) and its nearest items in the
/// normalised matrix, nearest first. The matrix is computed in tiles; for symmetric distances only the tiles on
/// and above the diagonal, each used for its rows and, transposed, for the rows of its columns.
fn neighbours(d: &dyn JointDistances, params: &Rerank) -> (Vec<f32>, Vec<Vec<u32>>) {
    let n = d.items();
    let cap = params.kept() + TIE_MARGIN;
    let mut states: Vec<Candidates> = (0..n).map(|_| Candidates::default()).collect();
    let mut tile = vec![0f32; TILE.min(n) * TILE.min(n)];
    for a in (0..n).step_by(TILE) {
        let rows = a..(a + TILE).min(n);
        let first = if d.symmetric() { a } else { 0 };
        for b in (first..n).step_by(TILE) {
            let cols = b..(b + TILE).min(n);
            let (height, width) = (rows.len(), cols.len());
            let out = &mut tile[..height * width];
            d.tile(rows.clone(), cols.clone(), out);
            out.iter_mut().for_each(|v| *v *= *v);
            let out = &*out;
            states[rows.clone()]
                .par_iter_mut()
                .zip(out.par_chunks(width))
                .for_each(|(state, row)| state.absorb(row, b, cap));
            if d.symmetric() && b != a {
                // The tile's columns, read row by row in bands of columns (not one column down all rows).
                states[cols]
                    .par_chunks_mut(COLUMN_BAND)
                    .enumerate()
                    .for_each(|(band, states)| {
                        let first = band * COLUMN_BAND;
                        for (r, row) in out.chunks(width).enumerate() {
                            let row = &row[first..first + states.len()];
                            for (state, &v) in states.iter_mut().zip(row) {
                                state.take(v, (a + r) as u32);
                            }
                        }
                        states.iter_mut().for_each(|state| state.trim(cap));
                    });
            }
        }
    }
    states
        .into_par_iter()
        .map(|state| state.nearest(params.kept()))
        .unzip()
}

/// One item's running maximum of squared distances and its nearest candidates (squared distance, item) so far.
struct Candidates {
    max: f32,
    best: Vec<(f32, u32)>,
    /// The largest value among `best` once it has been cut to `cap`: a larger value cannot be among the `cap`
    /// smallest, so it is not kept (equal ones are: ties are decided by the item).
    bound: f32,
}

impl Default for Candidates {
    fn default() -> Self {
        Self {
            max: 0.0,
            best: Vec::new(),
            bound: f32::INFINITY,
        }
    }
}

impl Candidates {
    /// Takes in the squared distances to items `first..`, keeping the `cap` smallest of all seen.
    fn absorb(&mut self, values: &[f32], first: usize, cap: usize) {
        for (j, &v) in values.iter().enumerate() {
            self.take(v, (first + j) as u32);
        }
        self.trim(cap);
    }

    /// Takes in the squared distance `v` to `item`; [`Candidates::trim`] then cuts the candidates back.
    fn take(&mut self, v: f32, item: u32) {
        self.max = self.max.max(v);
        if v <= self.bound {
            self.best.push((v, item));
        }
    }

    /// Keeps the `cap` smallest candidates.
    fn trim(&mut self, cap: usize) {
        if self.best.len() > cap {
            let order = |x: &(f32, u32), y: &(f32, u32)| x.0.total_cmp(&y.0).then(x.1.cmp(&y.1));
            self.best.select_nth_unstable_by(cap, order);
            self.best.truncate(cap);
            self.best.shrink_to(2 * cap);
            self.bound = self
                .best
                .iter()
                .map(|c| c.0)
                .fold(f32::NEG_INFINITY, f32::max);
        }
    }

    /// The maximum, and the `k` nearest by the normalised distance (squared / maximum), ties by the lower index.
    fn nearest(mut self, k: usize) -> (f32, Vec<u32>) {
        let max = self.max;
        self.best
            .sort_unstable_by(|x, y| (x.0 / max).total_cmp(&(y.0 / max)).then(x.1.cmp(&y.1)));
        (max, self.best.iter().take(k).map(|&(_, j)| j).collect())
    }
}

/// The items among the first `k + 1` neighbours of `i` that have `i` among their own first `k + 1`.
fn reciprocal(nearest: &[Vec<u32>], i: usize, k: usize) -> Vec<u32> {
    nearest[i][..k + 1]
        .iter()
        .copied()
        .filter(|&f| nearest[f as usize][..k + 1].contains(&(i as u32)))
        .collect()
}

/// Each item's sparse row of `V`: its expanded k-reciprocal set weighted by `exp(−normalised distance)`, summing
/// to one.
fn expansion_weights(
    d: &dyn JointDistances,
    params: &Rerank,
    maxima: &[f32],
    nearest: &[Vec<u32>],
) -> Vec<SparseRow> {
    let half = (params.k1 as f64 / 2.0).round_ties_even() as usize;
    (0..d.items())
        .into_par_iter()
        .map(|i| {
            let set = reciprocal(nearest, i, params.k1);
            let mut expanded = set.clone();
            for &candidate in &set {
                let theirs = reciprocal(nearest, candidate as usize, half);
                let shared = theirs.iter().filter(|c| set.contains(c)).count();
                if shared as f64 > 2.0 / 3.0 * theirs.len() as f64 {
                    expanded.extend(theirs);
                }
            }
            expanded.sort_unstable();
            expanded.dedup();
            let weights: Vec<f32> = expanded
                .iter()
                .map(|&j| {
                    let v = d.at(i, j as usize);
                    (-(v * v / maxima[i])).exp()
                })
                .collect();
            let total: f32 = weights.iter().sum();
            expanded
                .into_iter()
                .zip(weights)
                .map(|(j, w)| (j, w / total))
                .collect()
        })
        .collect()
}

/// Each row replaced by the mean of the rows of its `k2` nearest items (itself first).
fn query_expansion(v: &[SparseRow], nearest: &[Vec<u32>], k2: usize) -> Vec<SparseRow> {
    nearest
        .par_iter()
        .map(|near| {
            let mut sum: std::collections::BTreeMap<u32, f32> = Default::default();
            for &r in &near[..k2] {
                for &(c, w) in &v[r as usize] {
                    *sum.entry(c).or_default() += w;
                }
            }
            sum.into_iter().map(|(c, w)| (c, w / k2 as f32)).collect()
        })
        .collect()
}

/// For each column of `V`, the gallery items (rows `q..n`) with a weight there: (gallery index, weight).
fn gallery_columns(v: &[SparseRow], q: usize, n: usize) -> Vec<Vec<(u32, f32)>> {
    let mut columns = vec![Vec::new(); n];
    for (r, row) in v.iter().enumerate().skip(q) {
        for &(c, w) in row {
            columns[c as usize].push(((r - q) as u32, w));
        }
    }
    columns
}

/// The Jaccard numerator of query row `row` with every gallery item: the sum over shared columns of the smaller
/// weight, accumulated column by column as the reference does.
fn jaccard_numerators(row: &SparseRow, by_column: &[Vec<(u32, f32)>], g: usize) -> Vec<f32> {
    let mut shared = vec![0f32; g];
    for &(c, w) in row {
        for &(item, w_item) in &by_column[c as usize] {
            shared[item as usize] += w.min(w_item);
        }
    }
    shared
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A dense transcription of the reference's steps, for small inputs: the independent computation the streamed
    /// version is checked against (besides torchreid's own outputs in tests/data/rerank).
    fn dense(d: &dyn JointDistances, p: &Rerank) -> Vec<f32> {
        let (n, q) = (d.items(), d.queries());
        let mut all = vec![0f32; n * n];
        d.tile(0..n, 0..n, &mut all);
        let mut o = all.clone();
        for i in 0..n {
            let row = &mut o[i * n..(i + 1) * n];
            row.iter_mut().for_each(|v| *v *= *v);
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            row.iter_mut().for_each(|v| *v /= max);
        }
        let rank: Vec<Vec<usize>> = (0..n)
            .map(|i| {
                let mut idx: Vec<usize> = (0..n).collect();
                idx.sort_by(|&a, &b| o[i * n + a].total_cmp(&o[i * n + b]).then(a.cmp(&b)));
                idx
            })
            .collect();
        let recip = |i: usize, k: usize| -> Vec<usize> {
            rank[i][..k + 1]
                .iter()
                .copied()
                .filter(|&f| rank[f][..k + 1].contains(&i))
                .collect()
        };
        let mut v = vec![0f32; n * n];
        for i in 0..n {
            let set = recip(i, p.k1);
            let mut exp = set.clone();
            for &c in &set {
                let t = recip(c, (p.k1 as f64 / 2.0).round_ties_even() as usize);
                if t.iter().filter(|x| set.contains(x)).count() as f64 > 2.0 / 3.0 * t.len() as f64
                {
                    exp.extend(t);
                }
            }
            exp.sort();
            exp.dedup();
            let w: Vec<f32> = exp.iter().map(|&j| (-o[i * n + j]).exp()).collect();
            let s: f32 = w.iter().sum();
            for (&j, w) in exp.iter().zip(w) {
                v[i * n + j] = w / s;
            }
        }
        let mut qe = vec![0f32; n * n];
        for i in 0..n {
            for &r in &rank[i][..p.k2] {
                for c in 0..n {
                    qe[i * n + c] += v[r * n + c];
                }
            }
            for c in 0..n {
                qe[i * n + c] /= p.k2 as f32;
            }
        }
        let g = n - q;
        let mut out = vec![0f32; q * g];
        for i in 0..q {
            for j in 0..g {
                let t: f32 = (0..n).map(|c| qe[i * n + c].min(qe[(q + j) * n + c])).sum();
                let jac = 1.0 - t / (2.0 - t);
                out[i * g + j] = jac * (1.0 - p.lambda) as f32 + o[i * n + q + j] * p.lambda as f32;
            }
        }
        out
    }

    fn features(rows: usize, dims: usize, seed: u64) -> Matrix {
        let mut rng = mgat_util::rng::Rng::new(seed, &[]);
        Matrix {
            rows,
            cols: dims,
            data: (0..rows * dims)
                .map(|_| rng.unit())
                .collect::<Vec<_>>()
                .into(),
        }
    }

    #[test]
    fn streamed_re_ranking_equals_the_dense_transcription() {
        let (qf, gf) = (features(12, 8, 1), features(40, 8, 2));
        for metric in [Metric::Euclidean, Metric::Cosine] {
            let joint = Features::new(&qf, &gf, metric, false);
            let p = Rerank {
                k1: 6,
                k2: 3,
                lambda: 0.3,
            };
            p.check(joint.items()).unwrap();
            let mut got = Vec::new();
            rerank::<()>(&joint, &p, |rows| {
                got.extend_from_slice(rows);
                Ok(())
            })
            .unwrap();
            let want = dense(&joint, &p);
            assert_eq!(got.len(), want.len());
            for (a, b) in got.iter().zip(&want) {
                assert!((a - b).abs() <= 1e-6, "{metric:?}: {a} vs {b}");
            }
        }
    }

    /// torchreid's `re_ranking` on its own distance matrices (scripts/make-rerank-fixtures.py).
    #[test]
    fn re_ranked_distances_match_torchreids_to_1e_5_from_its_matrices_and_from_the_features() {
        for case in ["paper-defaults", "no-query-expansion", "small-k"] {
            let fixture = crate::fixtures::Case::open("rerank", case);
            let load = |name: &str| fixture.matrix(name);
            let p = Rerank {
                k1: fixture.usize("k1"),
                k2: fixture.usize("k2"),
                lambda: fixture.f64("lambda"),
            };
            let (qg, qq, gg, want) = (
                load("distmat"),
                load("distmat_qq"),
                load("distmat_gg"),
                load("reranked"),
            );
            let matrices = Matrices {
                qg: &qg.data,
                qq: &qq.data,
                gg: &gg.data,
                q: qg.rows,
                g: qg.cols,
            };
            let features = Features::new(&load("qf"), &load("gf"), Metric::Euclidean, false);
            for (how, joint) in [
                ("matrices", &matrices as &dyn JointDistances),
                ("features", &features),
            ] {
                let mut got = Vec::new();
                rerank::<()>(joint, &p, |rows| {
                    got.extend_from_slice(rows);
                    Ok(())
                })
                .unwrap();
                assert_eq!(got.len(), want.data.len(), "{case} {how}");
                let worst = got
                    .iter()
                    .zip(want.data.iter())
                    .map(|(a, b)| (a - b).abs())
                    .fold(0f32, f32::max);
                assert!(
                    worst <= 1e-5,
                    "{case} from {how}: largest difference {worst:e}"
                );
            }
        }
    }

    #[test]
    fn parameters_that_cannot_re_rank_are_named() {
        assert!(
            Rerank {
                k1: 20,
                k2: 6,
                lambda: 0.3
            }
            .check(15)
            .unwrap_err()
            .contains("there are 15")
        );
        assert!(
            Rerank {
                k1: 0,
                k2: 6,
                lambda: 0.3
            }
            .check(100)
            .is_err()
        );
        assert!(
            Rerank {
                k1: 20,
                k2: 6,
                lambda: 1.5
            }
            .check(100)
            .is_err()
        );
        assert!(
            Rerank {
                k1: 5,
                k2: 6,
                lambda: 0.3
            }
            .check(100)
            .unwrap_err()
            .contains("k2 = 6 must be at most k1 = 5")
        );
    }
}
