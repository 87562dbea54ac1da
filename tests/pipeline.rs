//! End-to-end tests of the pipeline core through the `mgat` binary: caching, crash safety, concurrent runs,
//! dataset locks, spec errors and plan/explain output.

mod common;

use common::{Project, SLOW_SYNTH, SMALL_SYNTH, spec, tree};
use std::time::{Duration, Instant};

#[test]
fn a_second_run_of_the_same_spec_runs_nothing_new() {
    let p = Project::new("rerun");
    p.lock_synth("toy", SMALL_SYNTH);
    p.write("experiments/a.yaml", &spec("a", "toy", ""));
    let first = p.mgat(&["run", "experiments/a.yaml"]);
    first.success();
    // 1 synth, 1 index; the baseline reads no γ, so 1 + 2 train and 1 + 2 eval stages.
    assert_eq!(first.summary("ran"), 8, "{}", first.stderr());
    let second = p.mgat(&["run", "experiments/a.yaml"]);
    assert_eq!(second.summary("ran"), 0);
    assert_eq!(second.summary("cached"), 8);
    assert_eq!(p.entries("synth").len(), 1);
    assert_eq!(p.entries("index").len(), 1);
    assert_eq!(p.entries("train").len(), 3);
    assert_eq!(p.entries("eval").len(), 3);
    p.mgat(&["cache", "verify"]).success();
}

#[test]
fn a_killed_run_leaves_no_complete_entry_and_a_rerun_finishes_identically() {
    let p = Project::new("kill");
    p.lock_synth("big", SLOW_SYNTH);
    p.write("experiments/a.yaml", &spec("a", "big", ""));
    let mut child = p
        .command(&["run", "experiments/a.yaml", "-q", "--until", "index"])
        .spawn()
        .unwrap();
    let partial = p.cache_dir().join("synth/.partial");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mid_stage = loop {
        let images = std::fs::read_dir(&partial)
            .ok()
            .and_then(|mut d| d.next())
            .and_then(|e| std::fs::read_dir(e.ok()?.path().join("data/bounding_box_train")).ok())
            .map_or(0, |d| d.count());
        if images > 50 || Instant::now() > deadline {
            break images > 50;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(mid_stage, "the synth stage never started writing");
    assert!(
        p.entries("synth").is_empty(),
        "a killed stage must not look complete"
    );

    let rerun = p.mgat(&["run", "experiments/a.yaml", "-q", "--until", "index"]);
    assert_eq!(rerun.summary("ran"), 2);
    p.mgat(&["cache", "verify"]).success();
    // The same outputs as an uninterrupted run in a fresh cache.
    let fresh = p.mgat(&[
        "run",
        "experiments/a.yaml",
        "-q",
        "--until",
        "index",
        "--cache",
        "fresh-cache",
    ]);
    assert_eq!(fresh.summary("ran"), 2);
    let key = &p.entries("synth")[0];
    let a = std::fs::read_to_string(p.cache_dir().join("synth").join(key).join("manifest.json"))
        .unwrap();
    let b = std::fs::read_to_string(p.path("fresh-cache/synth").join(key).join("manifest.json"))
        .unwrap();
    let outputs =
        |m: &str| serde_json::from_str::<serde_json::Value>(m).unwrap()["outputs"].clone();
    assert_eq!(outputs(&a), outputs(&b));
    // Same files and sizes besides the manifest (whose timings differ).
    let files = |root: std::path::PathBuf| {
        tree(&root)
            .into_iter()
            .filter(|(f, _)| f != "manifest.json")
            .collect::<Vec<_>>()
    };
    let (resumed, uninterrupted) = (
        files(p.cache_dir().join("synth").join(key)),
        files(p.path("fresh-cache/synth").join(key)),
    );
    assert!(
        resumed == uninterrupted,
        "{} vs {} files",
        resumed.len(),
        uninterrupted.len()
    );
}

#[test]
fn concurrent_runs_of_overlapping_specs_compute_each_shared_stage_once() {
    let p = Project::new("concurrent");
    p.lock_synth("big", SLOW_SYNTH);
    p.write("experiments/a.yaml", &spec("a", "big", ""));
    p.write(
        "experiments/b.yaml",
        &spec("b", "big", "").replace("[0.5, 2]", "[2, 5]"),
    );
    let a = p
        .command(&["run", "experiments/a.yaml", "--until", "index"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The second run starts only once the first is computing the shared synth stage, so they overlap.
    let partial = p.cache_dir().join("synth/.partial");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while std::fs::read_dir(&partial).map_or(true, |mut d| d.next().is_none()) {
        assert!(
            std::time::Instant::now() < deadline,
            "the first run never started the synth stage"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let b = p
        .command(&["run", "experiments/b.yaml", "--until", "index"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (a, b) = (
        common::Run(a.wait_with_output().unwrap()),
        common::Run(b.wait_with_output().unwrap()),
    );
    assert_eq!(
        a.summary("ran") + b.summary("ran"),
        2,
        "synth and index computed once in all\n{}\n{}",
        a.stderr(),
        b.stderr()
    );
    assert_eq!(
        a.summary("reused") + a.summary("cached") + b.summary("reused") + b.summary("cached"),
        2
    );
    assert!(
        b.summary("reused") >= 1,
        "the second run waited for the first: {}",
        b.stdout()
    );
    let ran_synth = [&a, &b]
        .iter()
        .map(|r| r.stderr().matches("ran synth").count())
        .sum::<usize>();
    assert_eq!(ran_synth, 1);
    p.mgat(&["cache", "verify"]).success();
}

#[test]
fn a_changed_dataset_is_named_by_verify_and_refused_by_index() {
    let p = Project::new("drift");
    p.mgat(&[
        "data",
        "synth",
        "--out",
        "data/m",
        "--seed",
        "2",
        "--ids",
        "8",
        "--cameras",
        "2",
        "--height",
        "64",
        "--width",
        "32",
    ])
    .success();
    let locked = p.mgat(&[
        "data",
        "lock",
        "m",
        "--format",
        "market1501",
        "--root",
        "data/m",
        "--allow-nonstandard",
    ]);
    assert!(
        locked.success().stdout().contains("locked m:"),
        "{}",
        locked.stdout()
    );
    assert!(
        std::fs::read_to_string(p.path("datasets.lock"))
            .unwrap()
            .contains("root: data/m")
    );
    p.mgat(&["data", "verify", "m"]).success();

    let train = p.path("data/m/bounding_box_train");
    let mut files: Vec<_> = std::fs::read_dir(&train)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    files.sort();
    std::fs::write(&files[0], b"not the same bytes").unwrap();
    std::fs::remove_file(&files[1]).unwrap();
    std::fs::write(train.join("0999_c1s1_000001_01.jpg"), b"new").unwrap();
    let name = |f: &std::path::Path| {
        format!(
            "bounding_box_train/{}",
            f.file_name().unwrap().to_string_lossy()
        )
    };

    let verify = p.mgat(&["data", "verify"]);
    assert_eq!(verify.code(), 2);
    let err = verify.stderr();
    assert!(
        err.contains(&format!("changed  {}", name(&files[0]))),
        "{err}"
    );
    assert!(
        err.contains(&format!("removed  {}", name(&files[1]))),
        "{err}"
    );
    assert!(
        err.contains("added    bounding_box_train/0999_c1s1_000001_01.jpg"),
        "{err}"
    );

    p.write("experiments/m.yaml", &spec("m", "m", ""));
    let run = p.mgat(&["run", "experiments/m.yaml"]);
    assert_eq!(run.code(), 2, "{}", run.stdout());
    assert!(run.stdout().contains("does not match"), "{}", run.stdout());
    assert!(p.entries("index").is_empty());
}

#[test]
fn bad_specs_exit_2_with_file_line_and_value_before_any_stage_runs() {
    let p = Project::new("badspec");
    p.lock_synth("toy", SMALL_SYNTH);
    let bad = spec("a", "toy", "").replace("[0.5, 2]", "[0.5, -2]");
    p.write("experiments/a.yaml", &bad);
    let run = p.mgat(&["run", "experiments/a.yaml"]);
    assert_eq!(run.code(), 2);
    assert!(
        run.stderr().contains("experiments/a.yaml:8:"),
        "{}",
        run.stderr()
    );
    assert!(
        run.stderr()
            .contains("invalid value `-2`: expected a number > 0"),
        "{}",
        run.stderr()
    );
    assert!(p.entries("synth").is_empty());
    let missing = p.mgat(&["run", "experiments/nope.yaml"]);
    assert_eq!(missing.code(), 2);
    assert!(
        missing.stderr().contains("nope.yaml"),
        "{}",
        missing.stderr()
    );
}

#[test]
fn plan_json_lists_cells_configs_and_stage_status() {
    let p = Project::new("plan");
    p.lock_synth("toy", SMALL_SYNTH);
    p.write("experiments/a.yaml", &spec("a", "toy", ""));
    let out = p.mgat(&["plan", "experiments/a.yaml", "--json"]);
    let plan: serde_json::Value = serde_json::from_str(&out.success().stdout()).unwrap();
    let cells = plan["cells"].as_array().unwrap();
    assert_eq!(cells.len(), 4);
    assert_eq!(cells[0]["name"], "head=none,gamma=0.5,seed=1");
    assert_eq!(cells[3]["config"]["model"]["gamma"], 2.0);
    let kinds: Vec<_> = cells[0]["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["kind"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(kinds, ["synth", "index", "train", "eval"]);
    assert_eq!(cells[0]["stages"][0]["cached"], false);
    p.mgat(&["run", "experiments/a.yaml", "-q", "--until", "index"])
        .success();
    let again: serde_json::Value =
        serde_json::from_str(&p.mgat(&["plan", "experiments/a.yaml", "--json"]).stdout()).unwrap();
    assert_eq!(again["cells"][0]["stages"][1]["cached"], true);
    assert_eq!(again["cells"][0]["stages"][2]["cached"], false);
}

#[test]
fn explain_names_the_changed_key_component() {
    let p = Project::new("explain");
    p.lock_synth("toy", SMALL_SYNTH);
    p.lock_synth("toy2", &SMALL_SYNTH.replace("--seed 5", "--seed 6"));
    p.write("experiments/a.yaml", &spec("a", "toy", ""));
    p.mgat(&["run", "experiments/a.yaml", "-q", "--until", "index"])
        .success();
    p.write("experiments/b.yaml", &spec("b", "toy2", ""));
    let out = p.mgat(&[
        "explain",
        "experiments/b.yaml",
        "--cell",
        "head=mgat,gamma=2,seed=1",
    ]);
    let text = out.success().stdout();
    assert!(text.contains("- seed 5 → 6"), "{text}");
    assert!(text.contains("- dataset digest sha256:"), "{text}");
    assert!(text.contains("no cached train entry"), "{text}");
    let unknown = p.mgat(&["explain", "experiments/b.yaml", "--cell", "nope"]);
    assert_eq!(unknown.code(), 2);
}

#[test]
fn gc_removes_only_unreferenced_entries_and_only_with_yes() {
    let p = Project::new("gc");
    p.lock_synth("toy", SMALL_SYNTH);
    p.lock_synth("toy2", &SMALL_SYNTH.replace("--seed 5", "--seed 6"));
    p.write("experiments/a.yaml", &spec("a", "toy", ""));
    // A spec on a dataset this machine has not locked references nothing and does not stop gc.
    p.write(
        "experiments/elsewhere.yaml",
        &spec("elsewhere", "market1501", ""),
    );
    p.write("old.yaml", &spec("old", "toy2", ""));
    p.mgat(&["run", "experiments/a.yaml", "-q", "--until", "index"])
        .success();
    p.mgat(&["run", "old.yaml", "-q", "--until", "index"])
        .success();
    assert_eq!(p.entries("synth").len(), 2);
    let dry = p.mgat(&["cache", "gc"]);
    assert!(
        dry.success().stdout().contains("dry run: 2 entries"),
        "{}",
        dry.stdout()
    );
    assert!(
        dry.stdout().contains("name datasets not in"),
        "{}",
        dry.stdout()
    );
    assert_eq!(p.entries("synth").len(), 2);
    p.mgat(&["cache", "gc", "--yes"]).success();
    assert_eq!(p.entries("synth").len(), 1);
    assert_eq!(p.entries("index").len(), 1);
    let plan = p.mgat(&["plan", "experiments/a.yaml", "--json"]);
    assert!(
        plan.stdout().contains("\"cached\": true"),
        "the referenced entries stay"
    );
}

#[test]
fn data_synth_is_deterministic_and_refuses_to_overwrite() {
    let p = Project::new("synth");
    let args = |out: &str| -> Vec<String> {
        format!("data synth --out {out} --seed 3 --ids 6 --cameras 2 --height 64 --width 32")
            .split(' ')
            .map(String::from)
            .collect()
    };
    let run = |out: &str| p.mgat(&args(out).iter().map(String::as_str).collect::<Vec<_>>());
    run("d1").success();
    run("d2").success();
    let hash = |d: &str| {
        common::tree(&p.path(d))
            .iter()
            .map(|(f, _)| std::fs::read(p.path(d).join(f)).unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(hash("d1"), hash("d2"));
    let again = run("d1");
    assert_eq!(again.code(), 2);
    assert!(again.stderr().contains("not empty"), "{}", again.stderr());
    let bad = p.mgat(&[
        "data",
        "synth",
        "--out",
        "d3",
        "--seed",
        "1",
        "--cameras",
        "12",
    ]);
    assert_eq!(bad.code(), 2);
    assert!(bad.stderr().contains("--cameras 12"), "{}", bad.stderr());
}

#[test]
fn stages_side_by_side_on_one_thread_each_give_the_bytes_of_one_at_a_time_on_every_core() {
    let p = Project::new("schedule");
    p.lock_synth("toy", common::TOY_DATA);
    p.write(
        "experiments/t.yaml",
        &format!(
            "name: t\n{}grid:\n  model.head: [none, mgat]\nseeds: [1, 2]\n",
            common::TOY_BASE
        ),
    );
    let run = |jobs: &str, cache: &str| {
        let out = p
            .command(&["run", "experiments/t.yaml", "-j", jobs, "--cache", cache])
            .env_remove("RAYON_NUM_THREADS")
            .output()
            .unwrap();
        common::Run(out).success().stderr()
    };
    run("1", "one");
    let side_by_side = run("64", "each");
    assert!(
        side_by_side.contains("64 at once with 1 thread each"),
        "{side_by_side}"
    );
    // Same keys, same bytes: weights and metrics of every train and eval entry.
    for (kind, file) in [("train", "model.safetensors"), ("eval", "metrics.json")] {
        let keys = |cache: &str| common::entries_in(&p.path(cache), kind);
        assert_eq!(keys("one"), keys("each"), "{kind}");
        assert_eq!(keys("one").len(), 4, "{kind}");
        for key in keys("one") {
            let read = |cache: &str| {
                std::fs::read(p.path(cache).join(kind).join(&key).join(file)).unwrap()
            };
            assert!(
                read("one") == read("each"),
                "{kind} {key}: {file} differs between the schedules"
            );
        }
    }
    // Side by side indeed: some two train stages of the second run overlapped in time.
    let spans: Vec<(String, String)> = common::entries_in(&p.path("each"), "train")
        .iter()
        .map(|key| {
            let manifest = p.path("each").join("train").join(key).join("manifest.json");
            let m: serde_json::Value =
                serde_json::from_slice(&std::fs::read(manifest).unwrap()).unwrap();
            (
                m["started"].as_str().unwrap().to_string(),
                m["finished"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let overlapped = spans
        .iter()
        .enumerate()
        .any(|(i, a)| spans[i + 1..].iter().any(|b| a.0 < b.1 && b.0 < a.1));
    assert!(overlapped, "no two train stages ran at once: {spans:?}");
}

/// `--set PATH=VALUE` keys the cells exactly as the same edit of the spec's file would, is checked like the file
/// (errors name the argument, exit 2), and a run with it writes its report under .mgat/reports/, never reports/.
#[test]
fn set_overrides_key_cells_like_the_edit_and_runs_with_them_report_outside_reports() {
    let p = Project::new("set");
    p.lock_synth("toy", SMALL_SYNTH);
    let original = spec("a", "toy", "");
    p.write("experiments/a.yaml", &original);
    assert!(original.contains("epochs: 2"));
    p.write("edited/a.yaml", &original.replace("epochs: 2", "epochs: 1"));
    let stages = |args: &[&str]| -> Vec<serde_json::Value> {
        let out = p.mgat(args).success().stdout();
        let plan: serde_json::Value = serde_json::from_str(&out).unwrap();
        plan["cells"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["stages"].clone())
            .collect()
    };
    let overridden = stages(&[
        "plan",
        "experiments/a.yaml",
        "--json",
        "--set",
        "train.epochs=1",
    ]);
    let edited = stages(&["plan", "edited/a.yaml", "--json"]);
    let unchanged = stages(&["plan", "experiments/a.yaml", "--json"]);
    assert_eq!(overridden, edited);
    assert_ne!(overridden, unchanged);
    for (arg, needle) in [
        (
            "train.epochs=0",
            "--set train.epochs=0: train.epochs: invalid value `0`",
        ),
        (
            "model.gamma=2",
            "--set model.gamma=2: `model.gamma` is a grid axis of this spec",
        ),
        (
            "train.epoch=1",
            "--set train.epoch=1: `train.epoch` is not a setting of `base`",
        ),
        (
            "eval.query_expansion={k: 0, alpha: 3}",
            "--set eval.query_expansion={k: 0, alpha: 3}: eval.query_expansion.k: invalid value `0`",
        ),
    ] {
        let out = p.mgat(&["plan", "experiments/a.yaml", "--set", arg]);
        assert_eq!(out.code(), 2, "{arg}: {}", out.stderr());
        assert!(out.stderr().contains(needle), "{arg}: {}", out.stderr());
    }
    let run = p.mgat(&[
        "run",
        "experiments/a.yaml",
        "--only",
        "head=none,*",
        "--set",
        "train.epochs=1",
    ]);
    run.success();
    assert!(
        run.stdout().contains("report .mgat/reports/a/"),
        "{}",
        run.stdout()
    );
    assert!(
        !p.path("reports").exists(),
        "a run with --set wrote under reports/"
    );
    let summary = std::fs::read_to_string(p.path(".mgat/reports/a/summary.md")).unwrap();
    assert!(
        summary.starts_with("# a (with --set train.epochs=1)"),
        "{summary}"
    );
}

/// `eval.rerank` is an eval-only setting: as a grid axis its cells share every stage but eval, and it is range-checked.
#[test]
fn eval_rerank_as_an_axis_moves_only_eval_keys() {
    let p = Project::new("rerank-axis");
    p.lock_synth("toy", SMALL_SYNTH);
    let base = spec("a", "toy", "").replace(
        "grid:\n  model.head: [none, mgat]\n  model.gamma: [0.5, 2]\n",
        "grid:\n  eval.rerank: [null, {k1: 4, k2: 2, lambda: 0.3}]\n",
    );
    assert!(base.contains("eval.rerank"), "{base}");
    p.write("experiments/a.yaml", &base);
    let out = p
        .mgat(&["plan", "experiments/a.yaml", "--json"])
        .success()
        .stdout();
    let plan: serde_json::Value = serde_json::from_str(&out).unwrap();
    let cells = plan["cells"].as_array().unwrap();
    assert_eq!(cells.len(), 2);
    let key = |c: usize, kind: &str| {
        cells[c]["stages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["kind"] == kind)
            .map(|s| s["id"].clone())
            .unwrap()
    };
    for kind in ["synth", "index", "train"] {
        assert_eq!(key(0, kind), key(1, kind), "{kind}");
    }
    assert_ne!(key(0, "eval"), key(1, "eval"));
    assert_eq!(cells[1]["name"], "rerank=k1:4+k2:2+lambda:0.3,seed=1");
    p.write("experiments/a.yaml", &base.replace("k1: 4", "k1: 0"));
    let bad = p.mgat(&["plan", "experiments/a.yaml"]);
    assert_eq!(bad.code(), 2, "{}", bad.stderr());
    assert!(
        bad.stderr().contains("eval.rerank.k1: invalid value `0`"),
        "{}",
        bad.stderr()
    );
}

/// `eval.query_expansion` is an eval-only setting too: as a grid axis its cells share every stage but eval, and both
/// evaluate (the expanded one scoring different features).
#[test]
fn eval_query_expansion_as_an_axis_runs_and_moves_only_eval_keys() {
    let p = Project::new("qe-axis");
    p.lock_synth("toy", SMALL_SYNTH);
    let base = spec("a", "toy", "").replace(
        "grid:\n  model.head: [none, mgat]\n  model.gamma: [0.5, 2]\n",
        "grid:\n  eval.query_expansion: [null, {k: 3, alpha: 3}]\n",
    );
    assert!(base.contains("eval.query_expansion"), "{base}");
    p.write("experiments/a.yaml", &base);
    let run = p.mgat(&["run", "experiments/a.yaml", "-q"]);
    run.success();
    assert_eq!(
        run.summary("ran"),
        5,
        "synth, index, train once; eval twice"
    );
    let results = std::fs::read_to_string(p.path("reports/a/results.csv")).unwrap();
    let rows: Vec<&str> = results.lines().skip(1).collect();
    assert_eq!(rows.len(), 2, "{results}");
    assert!(
        results.contains("query_expansion=k:3+alpha:3,seed=1"),
        "{results}"
    );
}
