//! Re-ID ranking metrics, equal to torchreid's `eval_market1501` / `eval_cuhk03` with ties broken by gallery index:
//! per query, gallery items of the same identity and camera are dropped, queries left without a match are skipped,
//! and CMC, AP = (1/m)·Σ_i i/pos_i and INP = m/pos_last are averaged over the remaining queries. The Market-1501
//! path never sorts a gallery row: only the matches are sorted, and every other item is placed among them.
//! CUHK03's single-gallery-shot CMC is the exact expectation over drawing one gallery image per identity.
//! Queries run in parallel; sums are taken in query order in f64, so results do not depend on thread count.

use super::array::Matrix;
use super::distance::{DimensionMismatch, for_each_block};
use crate::config::{Metric, Protocol};
use crate::ranked::{RankedItem, RankedLists, RankedQuery, ranked_items};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// Identities and cameras of queries and gallery.
#[derive(Debug, Clone, Copy)]
pub struct Ids<'a> {
    pub q_pids: &'a [i64],
    pub g_pids: &'a [i64],
    pub q_camids: &'a [i64],
    pub g_camids: &'a [i64],
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Metrics {
    pub num_query: usize,
    pub num_gallery: usize,
    pub num_valid_query: usize,
    /// CMC at ranks 1..=max_rank (clamped to the gallery size).
    pub cmc: Vec<f64>,
    #[serde(rename = "mAP")]
    pub map: f64,
    #[serde(rename = "mINP")]
    pub minp: f64,
}

/// The ranks reports show.
pub const REPORTED_RANKS: [usize; 4] = [1, 5, 10, 20];

impl Metrics {
    /// CMC at rank `k` (1-based), if the curve reaches it.
    pub fn rank(&self, k: usize) -> Option<f64> {
        k.checked_sub(1).and_then(|i| self.cmc.get(i)).copied()
    }

    /// The `metrics.json` record.
    pub fn record(&self) -> MetricsFile {
        MetricsFile {
            num_query: self.num_query,
            num_gallery: self.num_gallery,
            num_valid_query: self.num_valid_query,
            cmc: REPORTED_RANKS
                .iter()
                .filter_map(|&k| Some((k, self.rank(k)?)))
                .collect(),
            cmc_curve: self.cmc.clone(),
            map: self.map,
            minp: self.minp,
        }
    }

    /// The eval stage's manifest summary.
    pub fn summary(&self) -> EvalSummary {
        EvalSummary {
            rank1: self.rank(1),
            map: self.map,
            minp: self.minp,
            num_valid_query: self.num_valid_query,
        }
    }
}

/// `metrics.json`: written by the eval stage and `mgat metrics --json`, read by reports. CMC is given at the
/// reported ranks the curve reaches (the curve stops at `max_rank`, clamped to the gallery size).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsFile {
    pub num_query: usize,
    pub num_gallery: usize,
    pub num_valid_query: usize,
    pub cmc: BTreeMap<usize, f64>,
    pub cmc_curve: Vec<f64>,
    #[serde(rename = "mAP")]
    pub map: f64,
    #[serde(rename = "mINP")]
    pub minp: f64,
}

impl MetricsFile {
    /// CMC at rank `k`, if the curve reaches it.
    pub fn rank(&self, k: usize) -> Option<f64> {
        k.checked_sub(1)
            .and_then(|i| self.cmc_curve.get(i))
            .copied()
    }
}

/// The eval stage's figures in its manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalSummary {
    pub rank1: Option<f64>,
    #[serde(rename = "mAP")]
    pub map: f64,
    #[serde(rename = "mINP")]
    pub minp: f64,
    pub num_valid_query: usize,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum MetricsError {
    #[error("{what} has {found} entries, expected {expected} ({of})")]
    Length {
        what: &'static str,
        found: usize,
        expected: usize,
        of: &'static str,
    },
    #[error(
        "no query has a valid match in the gallery (every match is missing or shares the query's camera)"
    )]
    NoValidQuery,
    #[error("max_rank must be at least 1")]
    MaxRank,
    #[error("the gallery is empty")]
    EmptyGallery,
}

/// A failure of scoring features: the metrics' own errors, or feature sets of different dimensions.
#[derive(Debug, thiserror::Error)]
pub enum ScoringError {
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    #[error(transparent)]
    Dimensions(#[from] DimensionMismatch),
}

/// What one query contributes.
#[derive(Debug, Clone, PartialEq)]
struct QueryScore {
    /// Probability that the first match is at rank r + 1, for r < max_rank.
    first_hit: FirstHit,
    ap: f64,
    inp: f64,
    /// Its ranked list, when the evaluator keeps them ([`Evaluator::keep_ranked_lists`]).
    ranked: Vec<RankedItem>,
}

#[derive(Debug, Clone, PartialEq)]
enum FirstHit {
    /// The 1-based rank of the first match (it may exceed max_rank).
    Rank(usize),
    /// Distribution of the first match's rank over ranks 1..=max_rank (CUHK03's expectation).
    Distribution(Vec<f64>),
}

/// Evaluates queries block by block (rows of the Q×G distance matrix), so that a distance matrix never has to be
/// held whole.
pub struct Evaluator<'a> {
    ids: Ids<'a>,
    max_rank: usize,
    scores: Vec<Option<QueryScore>>,
    gallery: GalleryIdentities,
    cuhk03: bool,
    /// The length of the ranked lists kept, if any.
    list_length: Option<usize>,
}

/// The gallery grouped by identity, computed once: each item's identity index, and each identity's items.
struct GalleryIdentities {
    index_of: Vec<usize>,
    items: Vec<Vec<usize>>,
    by_pid: HashMap<i64, usize>,
}

impl GalleryIdentities {
    fn new(g_pids: &[i64]) -> Self {
        let mut by_pid: HashMap<i64, usize> = HashMap::new();
        let mut items: Vec<Vec<usize>> = Vec::new();
        let index_of = g_pids
            .iter()
            .enumerate()
            .map(|(j, p)| {
                let i = *by_pid.entry(*p).or_insert_with(|| {
                    items.push(Vec::new());
                    items.len() - 1
                });
                items[i].push(j);
                i
            })
            .collect();
        Self {
            index_of,
            items,
            by_pid,
        }
    }

    /// Gallery items of identity `pid` (empty when it has none).
    fn of(&self, pid: i64) -> &[usize] {
        self.by_pid.get(&pid).map_or(&[], |&i| &self.items[i])
    }
}

impl<'a> Evaluator<'a> {
    pub fn new(ids: Ids<'a>, protocol: Protocol, max_rank: usize) -> Result<Self, MetricsError> {
        let len = |what, found: usize, expected: usize, of| {
            if found == expected {
                Ok(())
            } else {
                Err(MetricsError::Length {
                    what,
                    found,
                    expected,
                    of,
                })
            }
        };
        len(
            "q_camids",
            ids.q_camids.len(),
            ids.q_pids.len(),
            "one per query id",
        )?;
        len(
            "g_camids",
            ids.g_camids.len(),
            ids.g_pids.len(),
            "one per gallery id",
        )?;
        if ids.g_pids.is_empty() {
            return Err(MetricsError::EmptyGallery);
        }
        if max_rank == 0 {
            return Err(MetricsError::MaxRank);
        }
        Ok(Self {
            ids,
            max_rank: max_rank.min(ids.g_pids.len()),
            scores: Vec::with_capacity(ids.q_pids.len()),
            gallery: GalleryIdentities::new(ids.g_pids),
            cuhk03: protocol == Protocol::Cuhk03,
            list_length: None,
        })
    }

    /// Keeps each scored query's ranked list of `length` counted items ([`crate::ranked`]); read them with
    /// [`Evaluator::ranked_lists`] before [`Evaluator::finish`].
    pub fn keep_ranked_lists(mut self, length: usize) -> Self {
        self.list_length = Some(length);
        self
    }

    /// The ranked lists of the queries scored so far that have a valid match, in query order.
    pub fn ranked_lists(&self) -> RankedLists {
        RankedLists::new(
            self.scores
                .iter()
                .enumerate()
                .filter_map(|(q, s)| {
                    let s = s.as_ref()?;
                    Some(RankedQuery {
                        query: q as u32,
                        ap: s.ap,
                        items: s.ranked.clone(),
                    })
                })
                .collect(),
        )
    }

    /// Scores the next `rows.len() / G` queries, whose distance rows are `rows` (row-major).
    pub fn add_rows(&mut self, rows: &[f32]) -> Result<(), MetricsError> {
        let g = self.ids.g_pids.len();
        let first = self.scores.len();
        let n = rows.len() / g;
        if !rows.len().is_multiple_of(g) || first + n > self.ids.q_pids.len() {
            return Err(MetricsError::Length {
                what: "distance rows",
                found: first + n,
                expected: self.ids.q_pids.len(),
                of: "one per query",
            });
        }
        let scored: Vec<Option<QueryScore>> = rows
            .par_chunks(g)
            .enumerate()
            .map(|(i, row)| {
                let q = first + i;
                let (pid, cam) = (self.ids.q_pids[q], self.ids.q_camids[q]);
                let same_pid = self.gallery.of(pid);
                let mut score = if self.cuhk03 {
                    cuhk03_query(row, pid, cam, self.ids, &self.gallery, self.max_rank)
                } else {
                    market_query(row, cam, self.ids, same_pid)
                };
                if let (Some(score), Some(length)) = (&mut score, self.list_length) {
                    score.ranked = ranked_items(row, cam, self.ids, same_pid, length);
                }
                score
            })
            .collect();
        self.scores.extend(scored);
        Ok(())
    }

    /// Scores query features against gallery features, computing the distances block by block.
    pub fn add_features(
        &mut self,
        query: &Matrix,
        gallery: &Matrix,
        metric: Metric,
        normalize: bool,
    ) -> Result<(), ScoringError> {
        for_each_block::<ScoringError>(query, gallery, metric, normalize, |rows| {
            Ok(self.add_rows(rows)?)
        })
    }

    pub fn finish(self) -> Result<Metrics, MetricsError> {
        if self.scores.len() != self.ids.q_pids.len() {
            let of = "one row per query";
            return Err(MetricsError::Length {
                what: "distance rows",
                found: self.scores.len(),
                expected: self.ids.q_pids.len(),
                of,
            });
        }
        let valid: Vec<&QueryScore> = self.scores.iter().flatten().collect();
        if valid.is_empty() {
            return Err(MetricsError::NoValidQuery);
        }
        let mut pmf = vec![0f64; self.max_rank];
        let (mut ap, mut inp) = (0f64, 0f64);
        for s in &valid {
            match &s.first_hit {
                FirstHit::Rank(r) if *r <= self.max_rank => pmf[r - 1] += 1.0,
                FirstHit::Rank(_) => {}
                FirstHit::Distribution(d) => pmf.iter_mut().zip(d).for_each(|(p, x)| *p += x),
            }
            ap += s.ap;
            inp += s.inp;
        }
        let n = valid.len() as f64;
        let cmc = pmf
            .iter()
            .scan(0f64, |acc, p| {
                *acc += p;
                Some((*acc / n).min(1.0))
            })
            .collect();
        Ok(Metrics {
            num_query: self.ids.q_pids.len(),
            num_gallery: self.ids.g_pids.len(),
            num_valid_query: valid.len(),
            cmc,
            map: ap / n,
            minp: inp / n,
        })
    }
}

/// Evaluates a whole Q×G distance matrix (row-major).
pub fn evaluate(
    distmat: &[f32],
    ids: Ids,
    protocol: Protocol,
    max_rank: usize,
) -> Result<Metrics, MetricsError> {
    let mut ev = Evaluator::new(ids, protocol, max_rank)?;
    let expected = ids.q_pids.len() * ids.g_pids.len();
    if distmat.len() != expected {
        return Err(MetricsError::Length {
            what: "distance matrix",
            found: distmat.len(),
            expected,
            of: "queries × gallery",
        });
    }
    ev.add_rows(distmat)?;
    ev.finish()
}

/// Gallery order key: smaller distance first, then lower gallery index.
#[inline]
fn before(da: f32, ia: usize, db: f32, ib: usize) -> bool {
    da < db || (da == db && ia < ib)
}

/// AP and INP from the 1-based positions of the matches (ascending) among the valid gallery items.
fn ap_inp(positions: &[usize]) -> (f64, f64) {
    let m = positions.len() as f64;
    let ap = positions
        .iter()
        .enumerate()
        .map(|(i, &p)| (i + 1) as f64 / p as f64)
        .sum::<f64>()
        / m;
    (ap, m / *positions.last().unwrap_or(&1) as f64)
}

/// Market-1501: ranks of the matches among valid items. Only the matches are sorted; every gallery item ranked
/// before the last match is placed among them by binary search (the rest cost one comparison), and the query's
/// own identity's items, counted in that pass, are taken out again.
fn market_query(row: &[f32], cam: i64, ids: Ids, same_pid: &[usize]) -> Option<QueryScore> {
    let mut matches: Vec<(f32, usize)> = same_pid
        .iter()
        .filter(|&&j| ids.g_camids[j] != cam)
        .map(|&j| (row[j], j))
        .collect();
    if matches.is_empty() {
        return None;
    }
    matches.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let &(last_d, last_i) = matches.last()?;
    let slot = |d: f32, k: usize| matches.partition_point(|&(md, mi)| before(md, mi, d, k));
    let mut before_match = vec![0isize; matches.len() + 1];
    for (k, &d) in row.iter().enumerate() {
        if d <= last_d && before(d, k, last_d, last_i) {
            before_match[slot(d, k)] += 1;
        }
    }
    for &j in same_pid {
        if before(row[j], j, last_d, last_i) {
            before_match[slot(row[j], j)] -= 1; // a match, or a same-camera image the protocol drops
        }
    }
    let mut non_matches = 0;
    let positions: Vec<usize> = (0..matches.len())
        .map(|i| {
            non_matches += before_match[i];
            i + 1 + non_matches as usize
        })
        .collect();
    let (ap, inp) = ap_inp(&positions);
    Some(QueryScore {
        first_hit: FirstHit::Rank(positions[0]),
        ap,
        inp,
        ranked: Vec::new(),
    })
}

/// CUHK03: AP and INP on the full filtered ranking; CMC as the exact expectation over drawing one image of every
/// gallery identity. Given the drawn match x, each other identity p lands before it independently with
/// probability (its images before x) / (its images), so the rank is 1 + a Poisson-binomial count.
fn cuhk03_query(
    row: &[f32],
    pid: i64,
    cam: i64,
    ids: Ids,
    gi: &GalleryIdentities,
    max_rank: usize,
) -> Option<QueryScore> {
    let mut valid: Vec<usize> = (0..row.len())
        .filter(|&j| !(ids.g_pids[j] == pid && ids.g_camids[j] == cam))
        .collect();
    valid.sort_by(|&a, &b| row[a].total_cmp(&row[b]).then(a.cmp(&b)));
    let positions: Vec<usize> = valid
        .iter()
        .enumerate()
        .filter(|&(_, &j)| ids.g_pids[j] == pid)
        .map(|(i, _)| i + 1)
        .collect();
    if positions.is_empty() {
        return None;
    }
    let (ap, inp) = ap_inp(&positions);
    let mut count = vec![0usize; gi.items.len()];
    for &j in &valid {
        count[gi.index_of[j]] += 1; // valid images per identity (the query's same-camera images removed)
    }
    let own = gi.index_of[valid[positions[0] - 1]];
    let mut seen = vec![0usize; gi.items.len()];
    let mut pmf = vec![0f64; max_rank];
    let weight = 1.0 / positions.len() as f64;
    for &j in &valid {
        let p = gi.index_of[j];
        if p == own {
            let dist = poisson_binomial(
                seen.iter()
                    .zip(&count)
                    .enumerate()
                    .filter(|&(i, _)| i != own)
                    .map(|(_, (&s, &c))| s as f64 / c.max(1) as f64),
                max_rank,
            );
            pmf.iter_mut()
                .zip(dist)
                .for_each(|(acc, x)| *acc += weight * x);
        }
        seen[p] += 1;
    }
    Some(QueryScore {
        first_hit: FirstHit::Distribution(pmf),
        ap,
        inp,
        ranked: Vec::new(),
    })
}

/// P(exactly r of the independent events happen) for r < n, given each event's probability.
fn poisson_binomial(probs: impl Iterator<Item = f64>, n: usize) -> Vec<f64> {
    let mut dist = vec![0f64; n];
    dist[0] = 1.0;
    for q in probs.filter(|&q| q > 0.0) {
        for r in (0..n).rev() {
            let from_below = if r > 0 { dist[r - 1] * q } else { 0.0 };
            dist[r] = dist[r] * (1.0 - q) + from_below;
        }
    }
    dist
}

#[cfg(test)]
mod tests;
