//! Ranked lists: each query's first gallery items in the order the evaluation ranked them (distance, then gallery
//! index, as the metrics count them), each marked as the protocol counts it: a true match, a false one, or ignored
//! (the query's identity seen by the query's own camera, which no protocol scores). The eval stage writes them to
//! `ranked.json` with small JPEG thumbnails of the queries a report shows — the worst, the median and the best by
//! average precision — under `thumbs/`, and the report's "Ranked lists" and `mgat rank` read both back through
//! [`read_ranked`] and [`read_thumbnail`].

use crate::metrics::Ids;
use image::RgbImage;
use mgat_stage::OutputError;
use serde::{Deserialize, Serialize};
use std::path::Path;

pub const RANKED_FILE: &str = "ranked.json";
pub const THUMBS_DIR: &str = "thumbs";
/// How many items the protocol counts in each list (ignored items come on top).
pub const LIST_LENGTH: usize = 10;
/// Thumbnail size: a person crop's 2:1 shape, small enough that a page embeds a few hundred.
pub const THUMB_HEIGHT: u32 = 64;
pub const THUMB_WIDTH: u32 = 32;
const THUMB_QUALITY: u8 = 80;
/// The largest `ranked.json` read back: 100 bytes per item of an MSMT17-size query set is 13 MB.
const MAX_RANKED_BYTES: u64 = 64 << 20;
/// The largest thumbnail read back.
const MAX_THUMB_BYTES: u64 = 64 << 10;

/// How the protocol counts a ranked gallery item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mark {
    /// The query's identity, seen by another camera.
    Match,
    /// Another identity.
    Miss,
    /// The query's identity seen by the query's own camera: skipped by the protocol.
    Ignored,
}

/// A ranked gallery item: its index in the gallery and its mark.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RankedItem(pub u32, pub Mark);

/// One query's list: its index among the queries, its average precision and its first gallery items, until
/// [`LIST_LENGTH`] are counted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RankedQuery {
    pub query: u32,
    pub ap: f64,
    pub items: Vec<RankedItem>,
}

/// Which of the queries a report shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pick {
    Worst,
    Median,
    Best,
}

impl Pick {
    pub fn label(self) -> &'static str {
        match self {
            Pick::Worst => "worst",
            Pick::Median => "median",
            Pick::Best => "best",
        }
    }
}

/// `ranked.json`: the list of every query with a valid match, in query order, and the ones picked for reports (their
/// positions in `queries`), whose images `thumbs/` holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RankedLists {
    pub length: usize,
    pub queries: Vec<RankedQuery>,
    pub picked: Vec<(Pick, usize)>,
}

impl RankedLists {
    /// The lists, with the worst, median and best query by average precision picked (ties: the lower query index
    /// first), each once.
    pub fn new(queries: Vec<RankedQuery>) -> Self {
        let mut by_ap: Vec<usize> = (0..queries.len()).collect();
        by_ap.sort_by(|&a, &b| {
            queries[a]
                .ap
                .total_cmp(&queries[b].ap)
                .then(queries[a].query.cmp(&queries[b].query))
        });
        let mut picked: Vec<(Pick, usize)> = Vec::new();
        if let (Some(&worst), Some(&best)) = (by_ap.first(), by_ap.last()) {
            let median = by_ap[(by_ap.len() - 1) / 2];
            for (pick, at) in [
                (Pick::Worst, worst),
                (Pick::Median, median),
                (Pick::Best, best),
            ] {
                if !picked.iter().any(|&(_, seen)| seen == at) {
                    picked.push((pick, at));
                }
            }
        }
        Self {
            length: LIST_LENGTH,
            queries,
            picked,
        }
    }

    /// The picked queries with their lists.
    pub fn picked(&self) -> impl Iterator<Item = (Pick, &RankedQuery)> {
        self.picked
            .iter()
            .filter_map(|&(pick, at)| Some((pick, self.queries.get(at)?)))
    }

    /// Every item it names is within the evaluated sets, each list counts at most `length` items, and the picks
    /// point at lists: what a reader checks before it indexes anything by these numbers.
    fn check(&self, queries: usize, gallery: usize) -> Result<(), String> {
        if self.length != LIST_LENGTH {
            return Err(format!(
                "lists of {} items, expected {LIST_LENGTH}",
                self.length
            ));
        }
        for q in &self.queries {
            if q.query as usize >= queries {
                return Err(format!("query {} of {queries}", q.query));
            }
            if let Some(RankedItem(g, _)) = q.items.iter().find(|i| i.0 as usize >= gallery) {
                return Err(format!("query {}: gallery item {g} of {gallery}", q.query));
            }
            let counted = q.items.iter().filter(|i| i.1 != Mark::Ignored).count();
            if counted > self.length {
                return Err(format!("query {}: {counted} items counted", q.query));
            }
        }
        match self
            .picked
            .iter()
            .find(|&&(_, at)| at >= self.queries.len())
        {
            Some((_, at)) => Err(format!("a pick at list {at} of {}", self.queries.len())),
            None => Ok(()),
        }
    }
}

/// The first gallery items of a query's distance row `row` in ranked order, until `length` are counted: the
/// `length + ignored` nearest are selected (ignored items count for nothing), then sorted.
pub fn ranked_items(
    row: &[f32],
    cam: i64,
    ids: Ids,
    same_pid: &[usize],
    length: usize,
) -> Vec<RankedItem> {
    let ignored = same_pid.iter().filter(|&&j| ids.g_camids[j] == cam).count();
    let take = (length + ignored).min(row.len());
    if take == 0 {
        return Vec::new();
    }
    let order_of = |a: &u32, b: &u32| row[*a as usize].total_cmp(&row[*b as usize]).then(a.cmp(b));
    let mut order: Vec<u32> = (0..row.len() as u32).collect();
    if take < order.len() {
        order.select_nth_unstable_by(take - 1, order_of);
        order.truncate(take);
    }
    order.sort_unstable_by(order_of);
    let mut counted = 0;
    order
        .into_iter()
        .map_while(|j| {
            let same = same_pid.binary_search(&(j as usize)).is_ok();
            let mark = match (same, ids.g_camids[j as usize] == cam) {
                (true, true) => Mark::Ignored,
                (true, false) => Mark::Match,
                (false, _) => Mark::Miss,
            };
            (counted < length).then(|| {
                counted += usize::from(mark != Mark::Ignored);
                RankedItem(j, mark)
            })
        })
        .collect()
}

/// Whether a thumbnail shows a query or a gallery item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Query,
    Gallery,
}

/// A thumbnail's file name within `thumbs/`.
fn thumbnail_name(side: Side, index: u32) -> String {
    match side {
        Side::Query => format!("q{index}.jpg"),
        Side::Gallery => format!("g{index}.jpg"),
    }
}

/// Every image the picked lists show: each picked query and its items.
pub fn shown_images(lists: &RankedLists) -> Vec<(Side, u32)> {
    let mut shown: Vec<(Side, u32)> = Vec::new();
    for (_, q) in lists.picked() {
        shown.push((Side::Query, q.query));
        shown.extend(q.items.iter().map(|i| (Side::Gallery, i.0)));
    }
    shown.sort_by_key(|&(side, i)| (side == Side::Gallery, i));
    shown.dedup();
    shown
}

/// Writes `ranked.json` and a thumbnail of every image the picked lists show (`load(side, index)` reads one at
/// [`THUMB_HEIGHT`] × [`THUMB_WIDTH`]) into `out`.
pub fn write(
    lists: &RankedLists,
    out: &Path,
    load: &dyn Fn(Side, u32) -> Result<RgbImage, String>,
) -> Result<(), OutputError> {
    let json = serde_json::to_vec(lists).map_err(|e| OutputError::new(out, e))?;
    let path = out.join(RANKED_FILE);
    mgat_util::fsio::write_atomic(&path, &json).map_err(|e| OutputError::new(&path, e))?;
    let dir = out.join(THUMBS_DIR);
    std::fs::create_dir_all(&dir).map_err(|e| OutputError::new(&dir, e))?;
    for (side, index) in shown_images(lists) {
        let path = dir.join(thumbnail_name(side, index));
        let image = load(side, index).map_err(|e| OutputError::new(&path, e))?;
        let mut jpeg = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, THUMB_QUALITY)
            .encode_image(&image)
            .map_err(|e| OutputError::new(&path, e))?;
        mgat_util::fsio::write_atomic(&path, &jpeg).map_err(|e| OutputError::new(&path, e))?;
    }
    Ok(())
}

/// The ranked lists an eval entry (at `entry`) wrote, checked against the sizes of the sets it evaluated.
pub fn read_ranked(
    entry: &Path,
    queries: usize,
    gallery: usize,
) -> Result<RankedLists, OutputError> {
    let path = entry.join(RANKED_FILE);
    let bytes = read_limited(&path, MAX_RANKED_BYTES)?;
    let lists: RankedLists =
        serde_json::from_slice(&bytes).map_err(|e| OutputError::new(&path, e))?;
    lists
        .check(queries, gallery)
        .map_err(|e| OutputError::new(&path, e))?;
    Ok(lists)
}

/// The JPEG bytes of the thumbnail of `side` item `index` in an eval entry (at `entry`).
pub fn read_thumbnail(entry: &Path, side: Side, index: u32) -> Result<Vec<u8>, OutputError> {
    let path = entry.join(THUMBS_DIR).join(thumbnail_name(side, index));
    let bytes = read_limited(&path, MAX_THUMB_BYTES)?;
    if !bytes.starts_with(&[0xFF, 0xD8]) {
        return Err(OutputError::new(&path, "not a JPEG"));
    }
    Ok(bytes)
}

/// The bytes of `path`, refused beyond `limit`.
fn read_limited(path: &Path, limit: u64) -> Result<Vec<u8>, OutputError> {
    use std::io::Read as _;
    let file = std::fs::File::open(path).map_err(|e| OutputError::new(path, e))?;
    let mut bytes = Vec::new();
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| OutputError::new(path, e))?;
    if bytes.len() as u64 > limit {
        return Err(OutputError::new(path, format!("larger than {limit} bytes")));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids<'a>(q: &'a [i64], g: &'a [i64], qc: &'a [i64], gc: &'a [i64]) -> Ids<'a> {
        Ids {
            q_pids: q,
            g_pids: g,
            q_camids: qc,
            g_camids: gc,
        }
    }

    /// By brute force: sort the whole row (distance, then index), mark every item, keep them until `length` are
    /// counted.
    fn brute(row: &[f32], pid: i64, cam: i64, ids: Ids, length: usize) -> Vec<RankedItem> {
        let mut order: Vec<usize> = (0..row.len()).collect();
        order.sort_by(|&a, &b| row[a].total_cmp(&row[b]).then(a.cmp(&b)));
        let mut out = Vec::new();
        let mut counted = 0;
        for j in order {
            if counted == length {
                break;
            }
            let mark = match (ids.g_pids[j] == pid, ids.g_camids[j] == cam) {
                (true, true) => Mark::Ignored,
                (true, false) => Mark::Match,
                _ => Mark::Miss,
            };
            counted += usize::from(mark != Mark::Ignored);
            out.push(RankedItem(j as u32, mark));
        }
        out
    }

    #[test]
    fn lists_match_a_full_sort_including_ties_and_ignored_items() {
        let mut rng = mgat_util::rng::Rng::new(7, &[]);
        for trial in 0..200 {
            let n = 1 + trial % 40;
            let g_pids: Vec<i64> = (0..n).map(|_| rng.below(5) as i64).collect();
            let g_cams: Vec<i64> = (0..n).map(|_| rng.below(3) as i64).collect();
            // Distances on a coarse grid, so ties are common.
            let row: Vec<f32> = (0..n).map(|_| rng.below(6) as f32 * 0.5).collect();
            let (pid, cam) = (rng.below(5) as i64, rng.below(3) as i64);
            let (q_pids, q_cams) = ([pid], [cam]);
            let ids = ids(&q_pids, &g_pids, &q_cams, &g_cams);
            let same: Vec<usize> = (0..n).filter(|&j| g_pids[j] == pid).collect();
            for length in [0, 1, 3, LIST_LENGTH] {
                assert_eq!(
                    ranked_items(&row, cam, ids, &same, length),
                    brute(&row, pid, cam, ids, length),
                    "trial {trial}, length {length}, row {row:?}"
                );
            }
        }
    }

    #[test]
    fn the_lists_agree_with_the_metrics_rank_1_and_ap() {
        use crate::config::Protocol;
        use crate::metrics::Evaluator;
        let mut rng = mgat_util::rng::Rng::new(11, &[]);
        let (nq, ng) = (40, 60);
        let pid = |rng: &mut mgat_util::rng::Rng| rng.below(8) as i64;
        let q_pids: Vec<i64> = (0..nq).map(|_| pid(&mut rng)).collect();
        let g_pids: Vec<i64> = (0..ng).map(|_| pid(&mut rng)).collect();
        let q_cams: Vec<i64> = (0..nq).map(|_| rng.below(3) as i64).collect();
        let g_cams: Vec<i64> = (0..ng).map(|_| rng.below(3) as i64).collect();
        let rows: Vec<f32> = (0..nq * ng).map(|_| rng.below(20) as f32).collect();
        let ids = ids(&q_pids, &g_pids, &q_cams, &g_cams);
        let mut ev = Evaluator::new(ids, Protocol::Market1501, 10)
            .unwrap()
            .keep_ranked_lists(LIST_LENGTH);
        ev.add_rows(&rows).unwrap();
        let lists = ev.ranked_lists();
        let metrics = ev.finish().unwrap();
        assert_eq!(lists.queries.len(), metrics.num_valid_query);
        let first_is_match = lists
            .queries
            .iter()
            .filter(|q| {
                q.items.iter().find(|i| i.1 != Mark::Ignored).map(|i| i.1) == Some(Mark::Match)
            })
            .count();
        assert_eq!(
            first_is_match as f64 / lists.queries.len() as f64,
            metrics.rank(1).unwrap()
        );
        let map = lists.queries.iter().map(|q| q.ap).sum::<f64>() / lists.queries.len() as f64;
        assert!((map - metrics.map).abs() < 1e-12);
        for q in &lists.queries {
            let row = &rows[q.query as usize * ng..][..ng];
            let (p, c) = (q_pids[q.query as usize], q_cams[q.query as usize]);
            assert_eq!(q.items, brute(row, p, c, ids, LIST_LENGTH));
        }
    }

    #[test]
    fn picks_are_the_worst_median_and_best_by_ap_each_once() {
        let q = |query: u32, ap: f64| RankedQuery {
            query,
            ap,
            items: vec![],
        };
        let lists = RankedLists::new(vec![q(0, 0.5), q(1, 0.1), q(2, 0.9), q(3, 0.5)]);
        let picked: Vec<(Pick, u32)> = lists.picked().map(|(p, q)| (p, q.query)).collect();
        // By AP: 1 (0.1), 0 (0.5), 3 (0.5), 2 (0.9); median at (4 − 1) / 2 = 1 → query 0.
        assert_eq!(
            picked,
            [(Pick::Worst, 1), (Pick::Median, 0), (Pick::Best, 2)]
        );
        let one = RankedLists::new(vec![q(4, 0.3)]);
        assert_eq!(one.picked, [(Pick::Worst, 0)]);
    }

    #[test]
    fn a_list_naming_items_outside_the_sets_is_refused() {
        let dir = mgat_testutil::tempdir();
        let lists = RankedLists::new(vec![RankedQuery {
            query: 1,
            ap: 1.0,
            items: vec![RankedItem(5, Mark::Match)],
        }]);
        std::fs::write(dir.join(RANKED_FILE), serde_json::to_vec(&lists).unwrap()).unwrap();
        assert_eq!(read_ranked(&dir, 2, 6).unwrap(), lists);
        let err = read_ranked(&dir, 2, 5).unwrap_err();
        assert!(err.to_string().contains("gallery item 5 of 5"), "{err}");
        let err = read_ranked(&dir, 1, 6).unwrap_err();
        assert!(err.to_string().contains("query 1 of 1"), "{err}");
    }
}
