//! End-to-end tests of reports: results.csv against the cache and byte-stable, summary statistics against an
//! independent computation, paper-table verdicts and `--check`, `mgat diff` between commits against a hand-computed
//! Welch t-test, and the paper's experiment specs.

mod common;

use common::{Project, Run, TOY_BASE, TOY_DATA, git};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

/// The toy base with a head × seed grid.
fn spec() -> String {
    format!(
        "name: t\ndescription: report test\n{TOY_BASE}grid:\n  model.head: [none, mgat]\nseeds: [1, 2, 3]\nreport:\n  metrics: [rank1, mAP, mINP]\n"
    )
}

/// Splits a CSV line whose only quoted field is the first (cell names contain commas).
fn fields(line: &str) -> Vec<String> {
    let (first, rest) = match line.strip_prefix('"') {
        Some(quoted) => {
            let end = quoted.find('"').unwrap();
            (quoted[..end].to_string(), &quoted[end + 2..])
        }
        None => {
            let (f, r) = line.split_once(',').unwrap_or((line, ""));
            (f.to_string(), r)
        }
    };
    std::iter::once(first)
        .chain(rest.split(',').map(str::to_string))
        .collect()
}

/// Rows of a CSV as column name → value.
fn rows(text: &str) -> Vec<BTreeMap<String, String>> {
    let mut lines = text.lines();
    let header = fields(lines.next().unwrap());
    lines
        .map(|l| header.iter().cloned().zip(fields(l)).collect())
        .collect()
}

fn mean_std(xs: &[f64]) -> (f64, f64) {
    let n = xs.len() as f64;
    let m = xs.iter().sum::<f64>() / n;
    let v = xs.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0);
    (m, v.sqrt())
}

#[test]
fn run_writes_results_and_tables_that_match_the_cache_and_rewrites_them_byte_identically() {
    let p = Project::new("report");
    p.lock_synth("toy", TOY_DATA);
    p.write("experiments/t.yaml", &spec());
    let run = p.mgat(&["-q", "run", "experiments/t.yaml", "-j", "2"]);
    run.success();
    assert!(
        run.stdout()
            .contains("report reports/t/: 6 cells in results.csv"),
        "{}",
        run.stdout()
    );
    let results_path = p.path("reports/t/results.csv");
    let first = std::fs::read(&results_path).unwrap();
    let results = rows(&String::from_utf8(first.clone()).unwrap());
    assert_eq!(results.len(), 6);
    assert_eq!(results[0]["cell"], "head=none,seed=1");
    assert_eq!(results[5]["cell"], "head=mgat,seed=3");

    // Every metric equals the eval stage's metrics.json in the cache, at six decimals.
    for row in &results {
        let metrics_path = p
            .cache_dir()
            .join("eval")
            .join(&row["eval_key"])
            .join("metrics.json");
        let metrics: Value =
            serde_json::from_str(&std::fs::read_to_string(metrics_path).unwrap()).unwrap();
        for (column, pointer) in [
            ("rank1", "/cmc/1"),
            ("rank5", "/cmc/5"),
            ("mAP", "/mAP"),
            ("mINP", "/mINP"),
        ] {
            let expected = format!("{:.6}", metrics.pointer(pointer).unwrap().as_f64().unwrap());
            assert_eq!(row[column], expected, "{column} of {}", row["cell"]);
        }
        assert_eq!(row["dataset"], "toy");
        assert!(p.cache_dir().join("train").join(&row["train_key"]).is_dir());
    }

    // Summary: mean and sample std over the three seeds, computed here from results.csv.
    let summary = rows(&std::fs::read_to_string(p.path("reports/t/summary.csv")).unwrap());
    for metric in ["rank1", "mAP", "mINP"] {
        for head in ["none", "mgat"] {
            let values: Vec<f64> = results
                .iter()
                .filter(|r| r["model.head"] == head)
                .map(|r| r[metric].parse().unwrap())
                .collect();
            let (m, s) = mean_std(&values);
            let line = summary
                .iter()
                .find(|r| r["metric"] == metric && r["model.head"] == head)
                .unwrap_or_else(|| panic!("no {metric}/{head} in summary.csv"));
            let got_m: f64 = line["all mean"].parse().unwrap();
            let got_s: f64 = line["all std"].parse().unwrap();
            assert!(
                (got_m - m).abs() < 2e-6,
                "{metric} {head}: mean {got_m} vs {m}"
            );
            assert!(
                (got_s - s).abs() < 2e-6,
                "{metric} {head}: std {got_s} vs {s}"
            );
            assert_eq!(line["all n"], "3");
            // 95% half-width: t₀.₉₇₅(2) = 4.302653 (printed tables) × s / √3.
            let got_h: f64 = line["all ci95"].parse().unwrap();
            let h = 4.302653 * s / 3f64.sqrt();
            assert!(
                (got_h - h).abs() < 2e-6,
                "{metric} {head}: ci95 {got_h} vs {h}"
            );
        }
    }
    let md = std::fs::read_to_string(p.path("reports/t/summary.md")).unwrap();
    assert!(md.contains("## mINP (%)"), "{md}");
    let tex = std::fs::read_to_string(p.path("reports/t/summary.tex")).unwrap();
    assert!(tex.contains("\\toprule"), "{tex}");
    // Δ vs baseline: mgat's difference from head=none, computed here from results.csv.
    let delta = rows(&std::fs::read_to_string(p.path("reports/t/delta.csv")).unwrap());
    for metric in ["rank1", "mAP"] {
        let mean_of = |head: &str| {
            let v: Vec<f64> = results
                .iter()
                .filter(|r| r["model.head"] == head)
                .map(|r| r[metric].parse().unwrap())
                .collect();
            mean_std(&v).0
        };
        let line = delta
            .iter()
            .find(|r| r["metric"] == metric)
            .unwrap_or_else(|| panic!("no {metric} in delta.csv"));
        assert_eq!(
            (line["cell"].as_str(), line["baseline"].as_str()),
            ("head=mgat", "head=none")
        );
        let diff: f64 = line["diff"].parse().unwrap();
        assert!((diff - (mean_of("mgat") - mean_of("none"))).abs() < 2e-6);
    }
    assert!(md.contains("## Δ vs baseline"), "{md}");
    for figure in ["cmc", "training", "diagnostics"] {
        let png = std::fs::read(p.path(&format!("reports/t/figures/{figure}.png"))).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "{figure}.png");
        let svg =
            std::fs::read_to_string(p.path(&format!("reports/t/figures/{figure}.svg"))).unwrap();
        assert!(
            svg.contains("head=mgat"),
            "{figure}.svg has no legend entry"
        );
    }

    // Regenerating from the unchanged cache rewrites identical bytes.
    let again = p.mgat(&["report", "experiments/t.yaml"]);
    again.success();
    assert_eq!(std::fs::read(&results_path).unwrap(), first);
    let rerun = p.mgat(&["-q", "run", "experiments/t.yaml"]);
    assert_eq!(rerun.summary("ran"), 0);
    assert_eq!(std::fs::read(&results_path).unwrap(), first);
}

const HEADER: &str = "cell,model.head,seed,dataset,lock_digest,train_key,eval_key,rank1,rank5,rank10,rank20,mAP,mINP,train_seconds,images_per_s,device,git_commit,git_dirty";

/// A results.csv with (head, seed, rank-1, mAP) rows.
fn results_csv(rows: &[(&str, u64, f64, f64)]) -> String {
    let mut out = format!("{HEADER}\n");
    // Stage keys are 64 hex digits; every row names the same two here.
    let (train_key, eval_key) = ("a".repeat(64), "b".repeat(64));
    for (head, seed, r1, map) in rows {
        out.push_str(&format!(
            "\"head={head},seed={seed}\",{head},{seed},market1501,sha256:0,{train_key},{eval_key},{r1:.6},0.9,0.95,0.99,{map:.6},0.1,10.0,100.0,cpu,abc,false\n"
        ));
    }
    out
}

const PAPER: &str = "\
paper: test paper
tables:
  - id: ablation
    title: Ablation
    paper_table: Table 1
    results: [q]
    tolerance: 1.0
    columns:
      - {dataset: market1501, metric: rank1}
      - {dataset: market1501, metric: mAP}
    rows:
      - label: MGAT
        select: {model.head: mgat}
        source: Table 1, row 2
        reported: {market1501/rank1: 61.0, market1501/mAP: 35.0}
      - label: GAT
        select: {model.head: gat}
        reported: {market1501/rank1: null, market1501/mAP: null}
";

#[test]
fn paper_tables_show_verdicts_and_check_fails_outside_tolerance() {
    let p = Project::new("paper");
    p.write("datasets.lock", "datasets: {}\n");
    p.write(
        "reports/q/results.csv",
        &results_csv(&[
            ("mgat", 1, 0.60, 0.30),
            ("mgat", 2, 0.62, 0.31),
            ("mgat", 3, 0.61, 0.305),
        ]),
    );
    p.write("reports/paper.yaml", PAPER);
    let run = p.mgat(&["report", "--paper"]);
    run.success();
    let out = run.stdout();
    // 95% half-widths t₀.₉₇₅(2)·s/√3 = 4.303·s/√3: rank-1 61.0 ± 2.5 vs 61.0 → within; mAP 30.5 ± 1.2 vs 35.0 is
    // 4.5 points off, beyond tolerance 1 + 1.2 → outside; GAT has no reported value and no run.
    assert!(
        out.contains(
            "| MGAT | market1501 | rank-1 | 61.0 | 61.0 ± 2.5 (3) | +0.0 | within tolerance |"
        ),
        "{out}"
    );
    assert!(
        out.contains(
            "| MGAT | market1501 | mAP | 35.0 | 30.5 ± 1.2 (3) | -4.5 | OUTSIDE tolerance |"
        ),
        "{out}"
    );
    assert!(
        out.contains("| GAT | market1501 | rank-1 | – | – | – | not run |"),
        "{out}"
    );
    assert_eq!(
        std::fs::read_to_string(p.path("reports/paper.md")).unwrap(),
        out
    );
    assert_eq!(p.mgat(&["report", "--paper", "--check"]).code(), 1);

    // Filling in a value within tolerance is a one-line edit, and the check passes.
    p.write(
        "reports/paper.yaml",
        &PAPER.replace("market1501/mAP: 35.0", "market1501/mAP: 32.5"),
    );
    p.mgat(&["report", "--paper", "--check"]).success();

    // A column whose dataset nothing names (a typo) is bad input, not a row "not run" that lets the check pass.
    p.write(
        "reports/paper.yaml",
        &PAPER.replace("market1501", "market1051"),
    );
    let typo = p.mgat(&["report", "--paper", "--check"]);
    assert_eq!(typo.code(), 2, "{}", typo.stderr());
    assert!(
        typo.stderr().contains("dataset `market1051`"),
        "{}",
        typo.stderr()
    );

    // A bad paper.yaml names its line.
    p.write(
        "reports/paper.yaml",
        &PAPER.replace("metric: mAP}", "metric: top1}"),
    );
    let bad = p.mgat(&["report", "--paper"]);
    assert_eq!(bad.code(), 2);
    assert!(
        bad.stderr()
            .contains("paper.yaml:10: tables[0].columns[1]: unknown metric `top1`"),
        "{}",
        bad.stderr()
    );
}

/// Two-sided p-value of Student's t by Simpson integration of the density from 0 to |t| (independent of mgat's
/// incomplete-beta implementation).
fn t_two_sided_by_integration(t: f64, df: f64) -> f64 {
    let ln_gamma = |x: f64| -> f64 {
        // Stirling series, accurate to ~1e-10 for x ≥ 7; shift smaller arguments up.
        let mut shift = 0.0;
        let mut x = x;
        while x < 7.0 {
            shift -= x.ln();
            x += 1.0;
        }
        shift + (x - 0.5) * x.ln() - x + 0.5 * (2.0 * std::f64::consts::PI).ln() + 1.0 / (12.0 * x)
            - 1.0 / (360.0 * x.powi(3))
            + 1.0 / (1260.0 * x.powi(5))
    };
    let c = (ln_gamma((df + 1.0) / 2.0) - ln_gamma(df / 2.0)).exp()
        / (df * std::f64::consts::PI).sqrt();
    let density = |x: f64| c * (1.0 + x * x / df).powf(-(df + 1.0) / 2.0);
    let n = 20_000;
    let h = t.abs() / n as f64;
    let mut sum = density(0.0) + density(t.abs());
    for i in 1..n {
        sum += density(i as f64 * h) * if i % 2 == 1 { 4.0 } else { 2.0 };
    }
    1.0 - 2.0 * sum * h / 3.0
}

#[test]
fn diff_between_commits_reports_the_planted_change_with_welch_p() {
    let p = Project::new("diff");
    p.write("datasets.lock", "datasets: {}\n");
    git(&p.dir, &["init", "-q", "-b", "main"]);
    let a = [
        ("mgat", 1, 0.50, 0.30),
        ("mgat", 2, 0.52, 0.31),
        ("mgat", 3, 0.51, 0.29),
        ("gat", 1, 0.40, 0.2),
    ];
    let b = [
        ("mgat", 1, 0.56, 0.30),
        ("mgat", 2, 0.55, 0.31),
        ("mgat", 3, 0.58, 0.29),
        ("none", 1, 0.30, 0.1),
    ];
    p.write("reports/q/results.csv", &results_csv(&a));
    git(&p.dir, &["add", "-A"]);
    git(&p.dir, &["commit", "-q", "-m", "a"]);
    p.write("reports/q/results.csv", &results_csv(&b));
    git(&p.dir, &["commit", "-q", "-am", "b"]);

    let run = p.mgat(&["diff", "HEAD~1", "HEAD", "--format", "json"]);
    run.success();
    let json: Value = serde_json::from_str(&run.stdout()).unwrap();
    let rank1 = json["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["cell"] == "head=mgat" && m["measure"] == "rank1")
        .unwrap();
    // By hand: A = 0.50, 0.52, 0.51 (mean 0.51, var 1e-4); B = 0.56, 0.55, 0.58 (mean 0.5633…, var 2.3333e-4).
    let (ma, va) = (0.51, 1e-4);
    let (mb, vb) = (
        1.69 / 3.0,
        (0.0033333f64.powi(2) + 0.0133333f64.powi(2) + 0.0166667f64.powi(2)) / 2.0,
    );
    let se2 = va / 3.0 + vb / 3.0;
    let t = (mb - ma) / se2.sqrt();
    let df = se2 * se2 / ((va / 3.0f64).powi(2) / 2.0 + (vb / 3.0f64).powi(2) / 2.0);
    let got = &rank1["welch"];
    assert!((rank1["delta"].as_f64().unwrap() - (mb - ma)).abs() < 1e-9);
    assert!(
        (got["t"].as_f64().unwrap() - t).abs() < 1e-3 * t,
        "t {} vs {t}",
        got["t"]
    );
    assert!(
        (got["df"].as_f64().unwrap() - df).abs() < 1e-3 * df,
        "df {} vs {df}",
        got["df"]
    );
    let p_expected = t_two_sided_by_integration(t, df);
    assert!(
        (got["p"].as_f64().unwrap() - p_expected).abs() < 1e-4,
        "p {} vs {p_expected}",
        got["p"]
    );
    assert!(p_expected < 0.05 && rank1["significant"] == true);
    let map = json["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["cell"] == "head=mgat" && m["measure"] == "mAP")
        .unwrap();
    assert_eq!(map["delta"].as_f64().unwrap(), 0.0);
    assert_eq!(map["significant"], false);
    assert_eq!(json["only_a"][0]["cell"], "head=gat");
    assert_eq!(json["only_b"][0]["cell"], "head=none");

    // The default compares HEAD with the working tree; the table marks the significant move.
    p.write("reports/q/results.csv", &results_csv(&a));
    let table = p.mgat(&["diff"]);
    table.success();
    let out = table.stdout();
    let line = out
        .lines()
        .find(|l| l.contains("head=mgat") && l.contains("rank1"))
        .unwrap();
    assert!(line.contains("-5.33") && line.ends_with('*'), "{out}");
    assert!(out.contains("only at HEAD: q head=none"), "{out}");

    let bad = p.mgat(&["diff", "no-such-rev"]);
    assert_eq!(bad.code(), 2);
    assert!(
        bad.stderr().contains("unknown revision `no-such-rev`"),
        "{}",
        bad.stderr()
    );
    let none = p.mgat(&["diff", "HEAD", "--spec", "other"]);
    assert_eq!(none.code(), 2);
    assert!(
        none.stderr()
            .contains("HEAD has no reports/other/results.csv"),
        "{}",
        none.stderr()
    );
}

#[test]
fn the_paper_specs_expand_to_their_grids_and_paper_yaml_renders() {
    let p = Project::new("paper-specs");
    let digest = |c: char| format!("sha256:{}", c.to_string().repeat(64));
    let mut lock = String::from("datasets:\n");
    for (name, format, c) in [
        ("market1501", "market1501", '1'),
        ("dukemtmc-reid", "dukemtmc-reid", '2'),
        ("cuhk03-np-detected", "cuhk03-np", '3'),
    ] {
        std::fs::create_dir_all(p.path(name)).unwrap();
        lock.push_str(&format!(
            "  {name}: {{format: {format}, root: {name}, files: 1, bytes: 1, digest: \"{}\"}}\n",
            digest(c)
        ));
    }
    p.write("datasets.lock", &lock);
    p.write(
        "weights/resnet50-0676ba61.pth",
        "stand-in: planning hashes the file, nothing loads it",
    );
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut all_keys = std::collections::HashSet::new();
    for (spec, cells, stages) in [
        ("paper-ablation", 72, 111),
        ("paper-gamma", 30, 61),
        ("paper-of-weight", 18, 37),
    ] {
        let file = format!("experiments/{spec}.yaml");
        std::fs::copy(repo.join(&file), p.path(&file)).unwrap();
        let run = Run(p
            .command(&["plan", "--json", &file])
            .env("MGAT_WEIGHTS", p.path("weights"))
            .output()
            .unwrap());
        run.success();
        let plan: Value = serde_json::from_str(&run.stdout()).unwrap();
        let cells_json = plan["cells"].as_array().unwrap();
        let keys: std::collections::HashSet<(String, String)> = cells_json
            .iter()
            .flat_map(|c| c["stages"].as_array().unwrap())
            .map(|s| {
                (
                    s["kind"].as_str().unwrap().to_string(),
                    s["id"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        assert_eq!((cells_json.len(), keys.len()), (cells, stages), "{spec}");
        all_keys.extend(keys);
    }
    // MGAT at γ = 1, λ_of = 1 (and λ_of = 0) on Market-1501 is one training in all three specs: 20 stages shared
    // (the ablation's re-ranked evals are its own).
    assert_eq!(all_keys.len(), 111 + 61 + 37 - 20);

    std::fs::create_dir_all(p.path("reports")).unwrap();
    std::fs::copy(
        repo.join("reports/paper.yaml"),
        p.path("reports/paper.yaml"),
    )
    .unwrap();
    let run = p.mgat(&["report", "--paper", "--check"]);
    run.success();
    let out = run.stdout();
    assert!(
        out.contains("| MGAT | market1501 | rank-1 | – | – | – | not run |"),
        "{out}"
    );
    assert!(out.contains("| Reference: Bag of Tricks ResNet-50 baseline | market1501 | rank-1 | 94.5 | – | – | reference only |"), "{out}");
}

/// Sets the mtime of everything under `dir` that `find` selects with `filter` an hour back (`touch -d`), as if
/// written long ago: stat records keep only what was written more than 2 s ago.
fn date_back_an_hour(dir: &std::path::Path, filter: &[&str]) {
    let status = std::process::Command::new("find")
        .arg(dir)
        .args(filter)
        .args(["-exec", "touch", "-d", "1 hour ago", "{}", "+"])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Reports are not rendered again when their inputs are unchanged, and never left stale: a metric that changes in
/// the cache (here an eval entry re-sealed with a new mAP, as a recomputation would leave it) changes the report.
#[test]
fn an_unchanged_report_is_kept_and_a_changed_metric_renders_it_again() {
    let p = Project::new("report-skip");
    p.lock_synth("toy", TOY_DATA);
    p.write(
        "experiments/t.yaml",
        &spec().replace("seeds: [1, 2, 3]", "seeds: [1]"),
    );
    p.mgat(&["-q", "run", "experiments/t.yaml"]).success();
    let again = p.mgat(&["report", "experiments/t.yaml"]);
    assert!(
        again
            .success()
            .stdout()
            .contains("unchanged since rendered"),
        "{}",
        again.stdout()
    );

    // Date the cache an hour back so that the next check records its entries in the trust ledger: the change below
    // must be seen through a recorded entry, not only through one checked in full.
    date_back_an_hour(&p.cache_dir(), &[]);
    p.mgat(&["report", "experiments/t.yaml"]).success();
    let key = &p.entries("eval")[0];
    let ledger = std::fs::read_to_string(p.cache_dir().join(".stat/ledger")).unwrap();
    assert!(ledger.contains(&format!("eval\t{key}\t")), "{ledger}");

    // Re-seal that eval entry with mAP 0.123456: new metrics.json, its sha256 in the manifest, a new checksum.
    let entry = p.cache_dir().join("eval").join(key);
    let mut metrics: Value =
        serde_json::from_slice(&std::fs::read(entry.join("metrics.json")).unwrap()).unwrap();
    metrics["mAP"] = serde_json::json!(0.123456);
    let bytes = serde_json::to_vec_pretty(&metrics).unwrap();
    std::fs::write(entry.join("metrics.json"), &bytes).unwrap();
    let mut manifest: mgat::cache::Manifest =
        serde_json::from_slice(&std::fs::read(entry.join("manifest.json")).unwrap()).unwrap();
    manifest.outputs.insert(
        "metrics.json".into(),
        mgat::cache::OutputFile {
            sha256: mgat_util::digest::sha256_bytes(&bytes),
            bytes: bytes.len() as u64,
        },
    );
    manifest.checksum = manifest.compute_checksum();
    std::fs::write(
        entry.join("manifest.json"),
        serde_json::to_vec_pretty(&manifest).unwrap(),
    )
    .unwrap();

    let rendered = p.mgat(&["report", "experiments/t.yaml"]);
    assert!(
        !rendered.success().stdout().contains("unchanged"),
        "{}",
        rendered.stdout()
    );
    let csv = std::fs::read_to_string(p.path("reports/t/results.csv")).unwrap();
    assert!(csv.contains("0.123456"), "{csv}");
    assert!(
        std::fs::read_to_string(p.path("reports/t/summary.md"))
            .unwrap()
            .contains("12.3")
    );

    // A report file changed by hand is rendered again too, also once the report's stat cache has recorded its
    // files (dated an hour back, so that the cache keeps them).
    // So is reports/index.html: holding the same bytes, it is not written again.
    date_back_an_hour(&p.path("reports/t"), &["-type", "f"]);
    date_back_an_hour(
        &p.path("reports"),
        &["-maxdepth", "1", "-name", "index.html"],
    );
    let index_mtime = || {
        std::fs::metadata(p.path("reports/index.html"))
            .and_then(|m| m.modified())
            .unwrap()
    };
    let dated = index_mtime();
    let kept = p.mgat(&["report", "experiments/t.yaml"]);
    assert!(
        kept.success().stdout().contains("unchanged since rendered"),
        "{}",
        kept.stdout()
    );
    assert_eq!(
        index_mtime(),
        dated,
        "an index page with the same bytes is left alone"
    );
    std::fs::write(p.path("reports/t/summary.md"), "edited").unwrap();
    p.mgat(&["report", "experiments/t.yaml"]).success();
    assert_ne!(
        std::fs::read_to_string(p.path("reports/t/summary.md")).unwrap(),
        "edited"
    );

    // A file an earlier rendering wrote and this one does not (a sweep the spec dropped) is removed; a record naming
    // a path outside the report removes nothing there.
    let record_path = p.path("reports/t/.rendered-from.json");
    let mut record: Value = serde_json::from_slice(&std::fs::read(&record_path).unwrap()).unwrap();
    for stale in ["figures/sweep-gamma.svg", "../keep.txt"] {
        record["files"][stale] = serde_json::json!("0");
        p.write(&format!("reports/t/{stale}"), "old");
    }
    std::fs::write(&record_path, serde_json::to_vec(&record).unwrap()).unwrap();
    p.write(
        "experiments/t.yaml",
        &spec()
            .replace("seeds: [1, 2, 3]", "seeds: [1]")
            .replace("report test", "report test, renamed"),
    );
    p.mgat(&["report", "experiments/t.yaml"]).success();
    assert!(!p.path("reports/t/figures/sweep-gamma.svg").exists());
    assert!(p.path("reports/keep.txt").exists());
    assert!(p.path("reports/t/figures/cmc.svg").exists());
    let index = std::fs::read_to_string(p.path("reports/index.html")).unwrap();
    assert!(index.contains("report test, renamed"), "{index}");
}

#[test]
fn a_linked_report_folder_or_a_forged_record_cannot_make_mgat_write_or_delete_outside_reports() {
    let p = Project::new("report-links");
    p.lock_synth("toy", TOY_DATA);
    p.write(
        "experiments/t.yaml",
        &format!("name: t\n{TOY_BASE}seeds: [1]\n"),
    );
    p.mgat(&["-q", "run", "experiments/t.yaml"]).success();
    let outside = p.path("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("victim.txt"), "keep me").unwrap();
    let listing = |dir: &Path| {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    // A record that names files outside its folder, and a figures folder that is a link out of reports/.
    let record = p.path("reports/t/.rendered-from.json");
    let mut forged: Value = serde_json::from_slice(&std::fs::read(&record).unwrap()).unwrap();
    for name in [
        "figures/victim.txt",
        "../../outside/victim.txt",
        "figures/../../../outside/victim.txt",
    ] {
        forged["files"][name] = Value::String("0".repeat(64));
    }
    forged["inputs"] = Value::String("forged".into());
    std::fs::write(&record, serde_json::to_vec(&forged).unwrap()).unwrap();
    let figures = p.path("reports/t/figures");
    std::fs::remove_dir_all(&figures).unwrap();
    std::os::unix::fs::symlink(&outside, &figures).unwrap();
    let run = p.mgat(&["-q", "run", "experiments/t.yaml"]);
    assert_eq!(run.code(), 2, "{}{}", run.stdout(), run.stderr());
    assert!(
        run.stderr().contains("figures: a symbolic link"),
        "{}",
        run.stderr()
    );
    assert_eq!(
        listing(&outside),
        ["victim.txt"],
        "nothing written or removed through the link"
    );
    // With the link gone the forged names are ignored: the report renders, the file outside stays.
    std::fs::remove_file(&figures).unwrap();
    p.mgat(&["-q", "run", "experiments/t.yaml"]).success();
    assert_eq!(
        std::fs::read_to_string(outside.join("victim.txt")).unwrap(),
        "keep me"
    );
    // A report folder that is itself a link receives nothing.
    let moved = p.path("elsewhere");
    std::fs::rename(p.path("reports/t"), &moved).unwrap();
    std::fs::create_dir_all(p.path("linked")).unwrap();
    std::os::unix::fs::symlink(p.path("linked"), p.path("reports/t")).unwrap();
    let run = p.mgat(&["-q", "report", "experiments/t.yaml"]);
    assert_eq!(run.code(), 2, "{}{}", run.stdout(), run.stderr());
    assert!(
        run.stderr().contains("reports/t: a symbolic link"),
        "{}",
        run.stderr()
    );
    assert!(listing(&p.path("linked")).is_empty());
}

#[test]
fn ranked_lists_are_on_the_page_and_mgat_rank_draws_them() {
    let p = Project::new("ranked");
    p.lock_synth("toy", TOY_DATA);
    p.write("experiments/t.yaml", &spec());
    // Before any run, there is nothing to draw.
    let early = p.mgat(&["rank", "experiments/t.yaml", "--cell", "head=mgat,seed=1"]);
    assert_eq!(early.code(), 2, "{}", early.stderr());
    assert!(
        early.stderr().contains("has not been evaluated"),
        "{}",
        early.stderr()
    );
    p.mgat(&["-q", "run", "experiments/t.yaml", "-j", "2"])
        .success();

    // ranked.json beside metrics.json: one list per query with a match, whose APs average to the mAP, and the
    // picks are the lowest, the median and the highest AP.
    let results = rows(&std::fs::read_to_string(p.path("reports/t/results.csv")).unwrap());
    let entry = p.cache_dir().join("eval").join(&results[3]["eval_key"]);
    let read = |file: &str| -> Value {
        serde_json::from_str(&std::fs::read_to_string(entry.join(file)).unwrap()).unwrap()
    };
    let (ranked, metrics) = (read("ranked.json"), read("metrics.json"));
    let lists = ranked["queries"].as_array().unwrap();
    assert_eq!(
        lists.len() as u64,
        metrics["num_valid_query"].as_u64().unwrap()
    );
    let aps: Vec<f64> = lists.iter().map(|q| q["ap"].as_f64().unwrap()).collect();
    let map = aps.iter().sum::<f64>() / aps.len() as f64;
    assert!((map - metrics["mAP"].as_f64().unwrap()).abs() < 1e-9);
    let picked: Vec<f64> = ranked["picked"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| aps[p[1].as_u64().unwrap() as usize])
        .collect();
    let mut sorted = aps.clone();
    sorted.sort_by(f64::total_cmp);
    assert_eq!(
        picked,
        [
            sorted[0],
            sorted[(sorted.len() - 1) / 2],
            sorted[sorted.len() - 1]
        ]
    );
    for q in lists {
        let items = q["items"].as_array().unwrap();
        let counted = items.iter().filter(|i| i[1] != "ignored").count();
        assert!(counted <= 10 && !items.is_empty(), "{q}");
    }

    // The page: one list per pick for the first seed of each group, every image embedded.
    let page = std::fs::read_to_string(p.path("reports/t/index.html")).unwrap();
    let section = &page[page
        .find("<section id=\"ranked\">")
        .expect("a ranked section")..];
    let section = &section[..section.find("</section>").unwrap()];
    assert_eq!(
        section.matches("<h3>").count(),
        2,
        "head=none and head=mgat"
    );
    assert!(section.contains("<h3>head=mgat,seed=1</h3>"));
    assert_eq!(section.matches("data-pick=").count(), 6);
    let images = section.matches("<img ").count();
    assert_eq!(
        images,
        section.matches("src=\"data:image/jpeg;base64,").count()
    );
    assert!(images >= 6 * 11, "{images} images");

    // `mgat rank` draws the same lists as a PNG: a row per pick, the query and its items.
    let out = p.path("rank.png");
    let rank = p.mgat(&[
        "rank",
        "experiments/t.yaml",
        "--cell",
        "head=mgat,seed=1",
        "--out",
        out.to_str().unwrap(),
    ]);
    rank.success();
    assert!(rank.stdout().contains("worst (AP "), "{}", rank.stdout());
    let png = image::open(&out).expect("a PNG").to_rgb8();
    let mgat = &section[section.find("<h3>head=mgat,seed=1</h3>").unwrap()..];
    let longest = mgat
        .split("data-pick=")
        .skip(1)
        .take(3)
        .map(|row| row.matches("<img ").count() as u32)
        .max()
        .unwrap();
    // Thumbnails at 2× (64 × 128) in 3-pixel frames with 4-pixel gaps: a blank slot after the query.
    assert_eq!(png.width(), 4 + (longest + 1) * (64 + 6 + 4));
    assert_eq!(png.height(), 44 + 4 + 3 * (22 + 128 + 6 + 4));
    let unknown = p.mgat(&["rank", "experiments/t.yaml", "--cell", "head=gat,seed=1"]);
    assert_eq!(unknown.code(), 2);
    assert!(
        unknown.stderr().contains("no cell `head=gat,seed=1`"),
        "{}",
        unknown.stderr()
    );
}
