//! Tests of the metrics against torchreid's recorded outputs, an independent brute-force implementation of the
//! same protocol, hand-computed cases, enumeration of every CUHK03 draw, and properties of random cases.

use super::*;
use crate::array::{load_ids, load_matrix};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// torchreid's reference cases (copied from the project's shared reid-cases into tests/data).
fn case_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/data/reid-cases")
        .join(name)
}

struct Case {
    dist: Vec<f32>,
    q_pids: Vec<i64>,
    g_pids: Vec<i64>,
    q_camids: Vec<i64>,
    g_camids: Vec<i64>,
}

impl Case {
    fn ids(&self) -> Ids<'_> {
        Ids {
            q_pids: &self.q_pids,
            g_pids: &self.g_pids,
            q_camids: &self.q_camids,
            g_camids: &self.g_camids,
        }
    }
    fn market(&self, max_rank: usize) -> Metrics {
        evaluate(&self.dist, self.ids(), Protocol::Market1501, max_rank).unwrap()
    }
}

fn load_case(dir: &Path) -> Case {
    let ids = |n: &str| load_ids(&dir.join(format!("{n}.npy"))).unwrap();
    Case {
        dist: load_matrix(&dir.join("distmat.npy")).unwrap().data.to_vec(),
        q_pids: ids("q_pids"),
        g_pids: ids("g_pids"),
        q_camids: ids("q_camids"),
        g_camids: ids("g_camids"),
    }
}

fn assert_matches(m: &Metrics, expected: &Value, tol: f64) {
    for (k, v) in expected["cmc"].as_object().unwrap() {
        let k: usize = k.parse().unwrap();
        assert!(
            (m.rank(k).unwrap() - v.as_f64().unwrap()).abs() < tol,
            "rank-{k}: {:?} vs {v}",
            m.rank(k)
        );
    }
    let curve = expected["cmc_curve"].as_array().unwrap();
    for (i, v) in curve.iter().enumerate() {
        assert!((m.cmc[i] - v.as_f64().unwrap()).abs() < tol, "cmc[{i}]");
    }
    assert!(
        (m.map - expected["mAP"].as_f64().unwrap()).abs() < tol,
        "mAP {} vs {}",
        m.map,
        expected["mAP"]
    );
    if let Some(minp) = expected.get("mINP") {
        assert!(
            (m.minp - minp.as_f64().unwrap()).abs() < tol,
            "mINP {} vs {minp}",
            m.minp
        );
    }
    if let Some(n) = expected.get("num_valid_query") {
        assert_eq!(m.num_valid_query as u64, n.as_u64().unwrap());
    }
}

#[test]
fn equals_torchreid_on_the_reference_cases() {
    for name in ["m1_basic", "m2_junk_distractors"] {
        let dir = case_dir(name);
        let expected: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap())
                .unwrap();
        let m = load_case(&dir).market(50);
        assert_matches(&m, &expected["torchreid_py_market"], 1e-6);
        assert_matches(&m, &expected["torchreid_cython_market_f32"], 1e-6);
        assert_matches(&m, &expected["ref_market_stable"], 1e-6);
    }
}

#[test]
fn junk_removed_like_the_market_loader_equals_torchreid() {
    let dir = case_dir("m2_junk_distractors");
    let expected: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    let c = load_case(&dir);
    let keep: Vec<usize> = (0..c.g_pids.len()).filter(|&j| c.g_pids[j] != -1).collect();
    let g = c.g_pids.len();
    let dist: Vec<f32> = (0..c.q_pids.len())
        .flat_map(|q| keep.iter().map(move |&j| (q, j)))
        .map(|(q, j)| c.dist[q * g + j])
        .collect();
    let pick = |v: &[i64]| keep.iter().map(|&j| v[j]).collect::<Vec<_>>();
    let removed = Case {
        dist,
        q_pids: c.q_pids.clone(),
        g_pids: pick(&c.g_pids),
        q_camids: c.q_camids.clone(),
        g_camids: pick(&c.g_camids),
    };
    assert_matches(
        &removed.market(50),
        &expected["market_protocol_junk_removed"]["torchreid_py_market"],
        1e-6,
    );
}

/// An independent, deliberately plain implementation of the protocol: a full stable sort of each row, then
/// torchreid's python formulas.
fn brute_force(c: &Case, max_rank: usize) -> Option<(Vec<f64>, f64, f64, usize)> {
    let g = c.g_pids.len();
    let max_rank = max_rank.min(g);
    let (mut cmc, mut ap, mut inp, mut valid) = (vec![0f64; max_rank], 0f64, 0f64, 0usize);
    for q in 0..c.q_pids.len() {
        let row = &c.dist[q * g..(q + 1) * g];
        let mut order: Vec<usize> = (0..g).collect();
        order.sort_by(|&a, &b| row[a].partial_cmp(&row[b]).unwrap()); // stable: ties keep index order
        let raw: Vec<bool> = order
            .iter()
            .filter(|&&j| !(c.g_pids[j] == c.q_pids[q] && c.g_camids[j] == c.q_camids[q]))
            .map(|&j| c.g_pids[j] == c.q_pids[q])
            .collect();
        if !raw.iter().any(|&b| b) {
            continue;
        }
        valid += 1;
        let first = raw.iter().position(|&b| b).unwrap();
        for (r, v) in cmc.iter_mut().enumerate() {
            if r >= first {
                *v += 1.0;
            }
        }
        let (mut hits, mut sum, mut last) = (0f64, 0f64, 0);
        for (i, &b) in raw.iter().enumerate() {
            if b {
                hits += 1.0;
                sum += hits / (i + 1) as f64;
                last = i + 1;
            }
        }
        ap += sum / hits;
        inp += hits / last as f64;
    }
    (valid > 0).then(|| {
        (
            cmc.iter().map(|v| v / valid as f64).collect(),
            ap / valid as f64,
            inp / valid as f64,
            valid,
        )
    })
}

/// xorshift64*: test data only.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn random_case(rng: &mut Rng, nq: usize, ng: usize, ids: u64, cams: u64, levels: u64) -> Case {
    Case {
        // Few distinct levels give many ties.
        dist: (0..nq * ng)
            .map(|_| rng.below(levels) as f32 * 0.5)
            .collect(),
        q_pids: (0..nq).map(|_| rng.below(ids) as i64).collect(),
        g_pids: (0..ng).map(|_| rng.below(ids + 1) as i64).collect(),
        q_camids: (0..nq).map(|_| rng.below(cams) as i64).collect(),
        g_camids: (0..ng).map(|_| rng.below(cams) as i64).collect(),
    }
}

#[test]
fn equals_a_brute_force_implementation_on_random_cases_with_ties() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for trial in 0..300 {
        let (nq, ng) = (1 + rng.below(12) as usize, 1 + rng.below(40) as usize);
        let (ids, cams, levels) = (1 + rng.below(6), 1 + rng.below(3), 1 + rng.below(8));
        let c = random_case(&mut rng, nq, ng, ids, cams, levels);
        let max_rank = 1 + rng.below(60) as usize;
        match (
            brute_force(&c, max_rank),
            evaluate(&c.dist, c.ids(), Protocol::Market1501, max_rank),
        ) {
            (None, Err(e)) => assert_eq!(e, MetricsError::NoValidQuery),
            (Some((cmc, ap, inp, valid)), Ok(m)) => {
                assert_eq!(m.num_valid_query, valid, "trial {trial}");
                assert_eq!(m.cmc.len(), cmc.len());
                for (a, b) in m.cmc.iter().zip(&cmc) {
                    assert!((a - b).abs() < 1e-12, "trial {trial}: cmc {a} vs {b}");
                }
                assert!(
                    (m.map - ap).abs() < 1e-12 && (m.minp - inp).abs() < 1e-12,
                    "trial {trial}"
                );
            }
            (b, m) => panic!("trial {trial}: brute force {b:?} vs {m:?}"),
        }
    }
}

fn tiny(dist: &[f32], q: (&[i64], &[i64]), g: (&[i64], &[i64])) -> Case {
    Case {
        dist: dist.to_vec(),
        q_pids: q.0.to_vec(),
        q_camids: q.1.to_vec(),
        g_pids: g.0.to_vec(),
        g_camids: g.1.to_vec(),
    }
}

#[test]
fn hand_computed_rules() {
    // Query pid 1, camera 0. Gallery: [pid 1 cam 0 (dropped), pid 2, pid 1 cam 1, pid 0 (distractor), pid 1 cam 2].
    let c = tiny(
        &[0.1, 0.2, 0.3, 0.4, 0.5],
        (&[1], &[0]),
        (&[1, 2, 1, 0, 1], &[0, 1, 1, 1, 2]),
    );
    let m = c.market(50);
    // Valid ranking: pid2, match, distractor, match → matches at positions 2 and 4.
    assert_eq!(
        m.cmc,
        [0.0, 1.0, 1.0, 1.0, 1.0],
        "clamped to the gallery size; 1 after the first hit"
    );
    assert!((m.map - (1.0 / 2.0 + 2.0 / 4.0) / 2.0).abs() < 1e-12);
    assert!((m.minp - 2.0 / 4.0).abs() < 1e-12);

    // Ties: equal distance, lower gallery index first.
    let t = tiny(&[0.5, 0.5, 0.5], (&[1], &[0]), (&[3, 1, 4], &[1, 1, 1]));
    assert_eq!(t.market(3).cmc, [0.0, 1.0, 1.0]);
    let t = tiny(&[0.5, 0.5, 0.5], (&[1], &[0]), (&[1, 3, 4], &[1, 1, 1]));
    assert_eq!(t.market(3).cmc, [1.0, 1.0, 1.0]);

    // A query whose only match shares its camera is skipped.
    let s = tiny(
        &[0.1, 0.9, 0.2, 0.3],
        (&[1, 2], &[0, 0]),
        (&[1, 2], &[0, 1]),
    );
    let m = s.market(2);
    assert_eq!((m.num_query, m.num_valid_query), (2, 1));
    assert_eq!(m.cmc, [0.0, 1.0]);

    // No valid query at all is an error.
    let none = tiny(&[0.1], (&[1], &[0]), (&[1], &[0]));
    assert_eq!(
        evaluate(&none.dist, none.ids(), Protocol::Market1501, 5).unwrap_err(),
        MetricsError::NoValidQuery
    );
}

#[test]
fn cuhk03_cmc_is_the_exact_expectation_over_every_draw() {
    // One query (pid 1, camera 0); gallery identities 1 (3 valid images + 1 same-camera), 2 (2 images), 3 (3).
    let g_pids = [1, 2, 1, 3, 3, 2, 1, 3, 1];
    let g_cams = [1, 1, 1, 1, 1, 1, 1, 1, 0];
    let dist = [0.40, 0.10, 0.75, 0.20, 0.60, 0.50, 0.90, 0.95, 0.01];
    let c = tiny(&dist, (&[1], &[0]), (&g_pids, &g_cams));
    let m = evaluate(&c.dist, c.ids(), Protocol::Cuhk03, 10).unwrap();

    let valid: Vec<usize> = (0..9)
        .filter(|&j| !(g_pids[j] == 1 && g_cams[j] == 0))
        .collect();
    let of = |p: i64| {
        valid
            .iter()
            .copied()
            .filter(|&j| g_pids[j] == p)
            .collect::<Vec<_>>()
    };
    let (a, b, d) = (of(1), of(2), of(3));
    let mut expected = [0f64; 3];
    let draws = (a.len() * b.len() * d.len()) as f64;
    for &x in &a {
        for &y in &b {
            for &z in &d {
                let rank = 1 + [y, z].iter().filter(|&&o| dist[o] < dist[x]).count();
                for v in expected.iter_mut().skip(rank - 1) {
                    *v += 1.0 / draws;
                }
            }
        }
    }
    assert_eq!(m.cmc.len(), 9, "max_rank clamps to the gallery size");
    for (k, e) in expected.iter().enumerate() {
        assert!(
            (m.cmc[k] - e).abs() < 1e-12,
            "rank {}: {} vs {e}",
            k + 1,
            m.cmc[k]
        );
    }
    assert!((m.cmc[8] - 1.0).abs() < 1e-12);
    // AP and INP stay on the full filtered list, as in the Market protocol.
    let market = c.market(10);
    assert!((m.map - market.map).abs() < 1e-12 && (m.minp - market.minp).abs() < 1e-12);
}

#[test]
fn properties_of_random_cases() {
    let mut rng = Rng(42);
    for _ in 0..100 {
        let (nq, ng) = (1 + rng.below(10) as usize, 2 + rng.below(50) as usize);
        let mut c = random_case(&mut rng, nq, ng, 4, 3, u64::MAX);
        c.dist
            .iter_mut()
            .enumerate()
            .for_each(|(i, d)| *d += i as f32 * 1e-3); // no ties
        let Ok(m) = evaluate(&c.dist, c.ids(), Protocol::Market1501, 50) else {
            continue;
        };
        assert!(m.cmc.windows(2).all(|w| w[0] <= w[1]), "CMC is monotone");
        assert!(
            m.cmc
                .iter()
                .chain([&m.map, &m.minp])
                .all(|v| (0.0..=1.0).contains(v))
        );
        assert!(
            (m.cmc.last().unwrap() - 1.0).abs() < 1e-12,
            "every valid query is found within the whole gallery"
        );
        // Permuting the gallery changes nothing when there are no ties.
        let perm: Vec<usize> = {
            let mut p: Vec<usize> = (0..ng).collect();
            for i in (1..ng).rev() {
                p.swap(i, rng.below(i as u64 + 1) as usize);
            }
            p
        };
        let pick = |v: &[i64]| perm.iter().map(|&j| v[j]).collect::<Vec<_>>();
        let dist = (0..nq)
            .flat_map(|q| perm.iter().map(move |&j| (q, j)))
            .map(|(q, j)| c.dist[q * ng + j])
            .collect();
        let shuffled = Case {
            dist,
            q_pids: c.q_pids.clone(),
            q_camids: c.q_camids.clone(),
            g_pids: pick(&c.g_pids),
            g_camids: pick(&c.g_camids),
        };
        let p = shuffled.market(50);
        assert_eq!(p.num_valid_query, m.num_valid_query);
        assert!(p.cmc.iter().zip(&m.cmc).all(|(a, b)| (a - b).abs() < 1e-12));
        assert!((p.map - m.map).abs() < 1e-12 && (p.minp - m.minp).abs() < 1e-12);
    }
}

#[test]
fn block_by_block_equals_whole() {
    let mut rng = Rng(7);
    let c = random_case(&mut rng, 20, 30, 5, 2, 10);
    let whole = c.market(10);
    let mut ev = Evaluator::new(c.ids(), Protocol::Market1501, 10).unwrap();
    for block in c.dist.chunks(30 * 7) {
        ev.add_rows(block).unwrap();
    }
    assert_eq!(ev.finish().unwrap(), whole);
}

#[test]
fn length_mismatches_are_errors() {
    let c = tiny(&[0.1, 0.2], (&[1], &[0]), (&[1, 2], &[1, 1]));
    let short = Ids {
        g_camids: &[1],
        ..c.ids()
    };
    assert!(matches!(
        Evaluator::new(short, Protocol::Market1501, 5),
        Err(MetricsError::Length {
            what: "g_camids",
            ..
        })
    ));
    assert!(matches!(
        evaluate(&[0.1], c.ids(), Protocol::Market1501, 5),
        Err(MetricsError::Length { .. })
    ));
}
