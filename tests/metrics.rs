//! End-to-end tests of `mgat metrics` against torchreid's recorded outputs (tests/data/reid-cases) and its input
//! errors.

mod common;

use common::Project;
use serde_json::Value;
use std::path::{Path, PathBuf};

fn case(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/reid-cases")
        .join(name)
}

fn expected(name: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(case(name).join("expected.json")).unwrap())
        .unwrap()
}

fn metrics_json(p: &Project, args: &[&str]) -> Value {
    let mut all = vec!["metrics", "--json"];
    all.extend(args);
    serde_json::from_str(&p.mgat(&all).success().stdout()).unwrap()
}

/// `tests/data/<set>/`: reference fixtures written by `scripts/make-<set>-fixtures.py`.
fn fixtures(set: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(set)
}

/// A fixture case's folder and its `params.json`.
fn fixture(set: &str, name: &str) -> (std::path::PathBuf, Value) {
    let case = fixtures(set).join(name);
    let text = std::fs::read_to_string(case.join("params.json")).unwrap();
    (case, serde_json::from_str(&text).unwrap())
}

fn assert_close(got: &Value, want: &Value) {
    for k in ["1", "5", "10", "20"] {
        let (g, w) = (
            got["cmc"][k].as_f64().unwrap(),
            want["cmc"][k].as_f64().unwrap(),
        );
        assert!((g - w).abs() < 1e-6, "rank-{k}: {g} vs {w}");
    }
    let (gc, wc) = (
        got["cmc_curve"].as_array().unwrap(),
        want["cmc_curve"].as_array().unwrap(),
    );
    assert_eq!(gc.len(), wc.len());
    assert!(
        gc.iter()
            .zip(wc)
            .all(|(g, w)| (g.as_f64().unwrap() - w.as_f64().unwrap()).abs() < 1e-6)
    );
    for k in ["mAP", "mINP", "num_valid_query"] {
        if let Some(w) = want.get(k) {
            assert!(
                (got[k].as_f64().unwrap() - w.as_f64().unwrap()).abs() < 1e-6,
                "{k}"
            );
        }
    }
}

#[test]
fn scores_the_reference_distance_matrices_like_torchreid() {
    let p = Project::new("metrics");
    for name in ["m1_basic", "m2_junk_distractors"] {
        let got = metrics_json(&p, &["--dir", case(name).to_str().unwrap()]);
        assert_close(&got, &expected(name)["torchreid_py_market"]);
        assert_close(&got, &expected(name)["ref_market_stable"]);
        assert_eq!(got["num_query"], 50);
        assert_eq!(got["num_gallery"], 300);
    }
}

#[test]
fn scores_features_with_cosine_distance_like_torchreid() {
    let p = Project::new("metrics-cos");
    let dir = case("m1_basic");
    let (qf, gf) = (dir.join("qf.npy"), dir.join("gf.npy"));
    let got = metrics_json(
        &p,
        &[
            "--dir",
            dir.to_str().unwrap(),
            "--qf",
            qf.to_str().unwrap(),
            "--gf",
            gf.to_str().unwrap(),
            "--metric",
            "cosine",
        ],
    );
    let want = &expected("m1_basic")["cosine_from_features"];
    assert_close(&got, &want["torchreid_py_market_on_cosine_distmat"]);
    assert_close(&got, &want["ref"]);
}

#[test]
fn text_inputs_give_the_same_scores_as_npy() {
    let p = Project::new("metrics-text");
    let src = case("m1_basic");
    for (from, to) in [
        ("distmat.csv", "distmat.csv"),
        ("q_pids.txt", "q_pids.txt"),
        ("g_pids.txt", "g_pids.txt"),
        ("q_camids.txt", "q_camids.txt"),
        ("g_camids.txt", "g_camids.txt"),
    ] {
        std::fs::copy(src.join(from), p.path(to)).unwrap();
    }
    let text = metrics_json(&p, &["--dir", p.dir.to_str().unwrap()]);
    assert_close(&text, &expected("m1_basic")["torchreid_py_market"]);
}

#[test]
fn bad_inputs_exit_2_naming_the_file() {
    let p = Project::new("metrics-bad");
    let src = case("m1_basic");
    for f in ["distmat.csv", "q_pids.txt", "g_pids.txt", "q_camids.txt"] {
        std::fs::copy(src.join(f), p.path(f)).unwrap();
    }
    let dir = p.dir.to_str().unwrap().to_string();
    let missing = p.mgat(&["metrics", "--dir", &dir]);
    assert_eq!(missing.code(), 2);
    assert!(
        missing.stderr().contains("g_camids"),
        "{}",
        missing.stderr()
    );

    let cams: String = (0..299).map(|_| "1\n").collect();
    p.write("g_camids.txt", &cams);
    let short = p.mgat(&["metrics", "--dir", &dir]);
    assert_eq!(short.code(), 2);
    assert!(
        short.stderr().contains("g_camids.txt: 299 entries, but ")
            && short.stderr().contains("g_pids.txt has 300"),
        "{}",
        short.stderr()
    );

    p.write("g_camids.txt", &format!("{cams}1\n"));
    let original = std::fs::read_to_string(src.join("distmat.csv")).unwrap();
    let text = format!("nan{}", &original[original.find(',').unwrap()..]);
    p.write("distmat.csv", &text);
    let nan = p.mgat(&["metrics", "--dir", &dir]);
    assert_eq!(nan.code(), 2);
    assert!(
        nan.stderr()
            .contains("distmat.csv: NaN or infinity at row 0"),
        "{}",
        nan.stderr()
    );

    // Two encodings of one input must agree; neither wins silently.
    std::fs::copy(src.join("distmat.csv"), p.path("distmat.csv")).unwrap();
    std::fs::copy(
        case("m2_junk_distractors").join("distmat.npy"),
        p.path("distmat.npy"),
    )
    .unwrap();
    let two = p.mgat(&["metrics", "--dir", &dir]);
    assert_eq!(two.code(), 2);
    assert!(
        two.stderr().contains("hold different values"),
        "{}",
        two.stderr()
    );
    std::fs::remove_file(p.path("distmat.npy")).unwrap();

    // A folder or a FIFO by the name is named for what it is, not reported absent; the FIFO is not waited on.
    std::fs::create_dir(p.path("distmat.npy")).unwrap();
    let folder = p.mgat(&["metrics", "--dir", &dir]);
    assert_eq!(folder.code(), 2, "{}", folder.stderr());
    assert!(
        folder
            .stderr()
            .contains("distmat.npy is a folder, not a regular file"),
        "{}",
        folder.stderr()
    );
    std::fs::remove_dir(p.path("distmat.npy")).unwrap();
    common::mkfifo(&p.path("distmat.npy"));
    let fifo = p.mgat(&["metrics", "--dir", &dir]);
    assert_eq!(fifo.code(), 2, "{}", fifo.stderr());
    assert!(
        fifo.stderr()
            .contains("distmat.npy is a FIFO (named pipe), not a regular file"),
        "{}",
        fifo.stderr()
    );
    std::fs::remove_file(p.path("distmat.npy")).unwrap();

    // Features with no dimensions are not scored.
    let mut header = "{'descr': '<f4', 'fortran_order': False, 'shape': (50, 0), }".to_string();
    while !(10 + header.len() + 1).is_multiple_of(64) {
        header.push(' ');
    }
    header.push('\n');
    let mut npy = b"\x93NUMPY\x01\x00".to_vec();
    npy.extend((header.len() as u16).to_le_bytes());
    npy.extend(header.as_bytes());
    std::fs::write(p.path("qf.npy"), &npy).unwrap();
    let qf = p.path("qf.npy");
    let qf = qf.to_str().unwrap();
    let zero = p.mgat(&["metrics", "--dir", &dir, "--qf", qf, "--gf", qf]);
    assert_eq!(zero.code(), 2, "{}", zero.stderr());
    assert!(zero.stderr().contains("no dimensions"), "{}", zero.stderr());

    // Finite features whose distances overflow f32: 1e20² is beyond f32::MAX.
    let rows = |n: usize| "1e20,1e20\n".repeat(n);
    std::fs::write(p.path("qf.csv"), rows(50)).unwrap();
    std::fs::write(p.path("gf.csv"), rows(300)).unwrap();
    let (qf, gf) = (p.path("qf.csv"), p.path("gf.csv"));
    let huge = p.mgat(&[
        "metrics",
        "--dir",
        &dir,
        "--qf",
        qf.to_str().unwrap(),
        "--gf",
        gf.to_str().unwrap(),
    ]);
    assert_eq!(huge.code(), 2, "{}", huge.stderr());
    assert!(
        huge.stderr()
            .contains("qf.csv: row 0 has a squared length of 2.0e40"),
        "{}",
        huge.stderr()
    );
}

/// `metrics --rerank`, from the distance matrices torchreid's engine passes to `re_ranking` and from the features,
/// scores as torchreid's own re-ranked distances do (tests/data/rerank, scripts/make-rerank-fixtures.py), to 1e-6.
#[test]
fn rerank_scores_like_torchreids_re_ranked_distances() {
    let root = fixtures("rerank");
    for name in ["paper-defaults", "no-query-expansion", "small-k"] {
        let (case, params) = fixture("rerank", name);
        let p = Project::new("rerank");
        for f in ["q_pids", "g_pids", "q_camids", "g_camids"] {
            std::fs::copy(case.join(format!("{f}.npy")), p.path(&format!("{f}.npy"))).unwrap();
        }
        std::fs::copy(case.join("reranked.npy"), p.path("distmat.npy")).unwrap();
        let dir = p.dir.to_str().unwrap().to_string();
        let want = metrics_json(&p, &["--dir", &dir, "--max-rank", "20"]);
        let (k1, k2, lambda) = (
            params["k1"].to_string(),
            params["k2"].to_string(),
            params["lambda"].to_string(),
        );
        let rerank = [
            "--rerank",
            "--k1",
            &k1,
            "--k2",
            &k2,
            "--lambda",
            &lambda,
            "--max-rank",
            "20",
        ];
        let case_dir = case.to_str().unwrap().to_string();
        let mut from_matrices = vec!["--dir", &case_dir];
        from_matrices.extend(rerank);
        assert_close(&metrics_json(&p, &from_matrices), &want);
        let (qf, gf) = (case.join("qf.npy"), case.join("gf.npy"));
        let mut from_features = vec![
            "--dir",
            &dir,
            "--qf",
            qf.to_str().unwrap(),
            "--gf",
            gf.to_str().unwrap(),
        ];
        from_features.extend(rerank);
        assert_close(&metrics_json(&p, &from_features), &want);
    }
    // Parameters the items cannot satisfy are refused, naming the flag.
    let p = Project::new("rerank-bad");
    let case = root.join("small-k");
    let out = p.mgat(&[
        "metrics",
        "--dir",
        case.to_str().unwrap(),
        "--rerank",
        "--k1",
        "500",
    ]);
    assert_eq!(out.code(), 2, "{}", out.stderr());
    assert!(
        out.stderr().contains("--rerank: k1 = 500"),
        "{}",
        out.stderr()
    );
}

/// `metrics --qe`: features expanded as fast-reid's own `aqe` expands them score as fast-reid's cosine distances of
/// the expanded features do (tests/data/aqe, scripts/make-aqe-fixtures.py), to 1e-6; bad settings are exit 2.
#[test]
fn query_expansion_scores_like_fast_reids_aqe() {
    let root = fixtures("aqe");
    for name in ["fastreid-defaults", "wide-k", "no-weights"] {
        let (case, params) = fixture("aqe", name);
        let p = Project::new("aqe");
        let dir = case.to_str().unwrap().to_string();
        let want = metrics_json(&p, &["--dir", &dir, "--max-rank", "20"]);
        let (qf, gf) = (case.join("qf.npy"), case.join("gf.npy"));
        let (k, alpha) = (params["k"].to_string(), params["alpha"].to_string());
        let got = metrics_json(
            &p,
            &[
                "--dir",
                &dir,
                "--qf",
                qf.to_str().unwrap(),
                "--gf",
                gf.to_str().unwrap(),
                "--metric",
                "cosine",
                "--qe",
                "--qe-k",
                &k,
                "--qe-alpha",
                &alpha,
                "--max-rank",
                "20",
            ],
        );
        assert_close(&got, &want);
    }
    let p = Project::new("aqe-bad");
    let case = root.join("wide-k");
    let (qf, gf) = (case.join("qf.npy"), case.join("gf.npy"));
    for (flags, says) in [
        (&["--qe-k", "0"][..], "--qe: k = 0"),
        (&["--qe-k", "146"][..], "--qe: k = 146"),
        (&["--qe-alpha", "-1"][..], "--qe: alpha = -1"),
    ] {
        let mut args = vec![
            "metrics",
            "--dir",
            case.to_str().unwrap(),
            "--qf",
            qf.to_str().unwrap(),
            "--gf",
            gf.to_str().unwrap(),
            "--qe",
        ];
        args.extend(flags);
        let out = p.mgat(&args);
        assert_eq!(out.code(), 2, "{flags:?}: {}", out.stderr());
        assert!(out.stderr().contains(says), "{flags:?}: {}", out.stderr());
    }
}
