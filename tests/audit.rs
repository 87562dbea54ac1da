//! End to end: `mgat audit` recomputes committed rows in a throwaway cache (a hand-edited metric is caught, the
//! user's cache is not touched), and `mgat diff` between commits says why keys moved (a changed `train.lr` with
//! both values; a kind's code with the file that changed).

mod common;

use common::{Project, TOY_BASE, TOY_DATA, git, tree};
use serde_json::Value;

fn spec(lr: &str) -> String {
    format!(
        "name: t\n{}grid:\n  model.head: [none, mgat]\nseeds: [1, 2]\n",
        TOY_BASE.replace("lr: 0.003", &format!("lr: {lr}"))
    )
}

/// A git project with the toy dataset, the spec at `lr` run and its report committed.
fn committed_project(name: &str, lr: &str) -> Project {
    let p = Project::new(name);
    p.lock_synth("toy", TOY_DATA);
    p.write(".gitignore", ".mgat/\n");
    p.write("experiments/t.yaml", &spec(lr));
    p.mgat(&["run", "experiments/t.yaml", "-q"]).success();
    git(&p.dir, &["init", "-q", "-b", "main"]);
    git(&p.dir, &["add", "-A"]);
    git(&p.dir, &["commit", "-q", "-m", "first run"]);
    p
}

#[test]
fn audit_reproduces_committed_rows_and_names_an_edited_metric() {
    let p = committed_project("audit", "0.003");
    let before = tree(&p.cache_dir());
    let run = p.mgat(&[
        "audit",
        "experiments/t.yaml",
        "--sample",
        "2",
        "--seed",
        "1",
        "--json",
        "-q",
    ]);
    run.success();
    let rows: Value = serde_json::from_str(&run.stdout()).unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 2, "{rows:?}");
    for row in rows {
        assert_eq!(row["reproduced"], true, "{row}");
        assert_eq!(row["verdict"], "reproduced byte-identically");
        assert!(row["seconds"].as_f64().unwrap() > 0.0, "{row}");
    }
    assert_eq!(
        tree(&p.cache_dir()),
        before,
        "the user's cache is untouched"
    );

    // A TMPDIR that is a file is named, and so is a git that cannot be started.
    let tmpdir_file = p.write("not-a-folder", "");
    let out = p
        .command(&["audit", "experiments/t.yaml", "--sample", "1", "-q"])
        .env("TMPDIR", &tmpdir_file)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "cannot make the audit's scratch cache under the temporary folder {} (TMPDIR)",
            tmpdir_file.display()
        )),
        "{stderr}"
    );
    let out = p
        .command(&["diff"])
        .env("PATH", "/nonexistent")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot run git (is git installed and on PATH?)"),
        "{stderr}"
    );

    // One metric edited by hand: the audit of that row fails and names the metric and both values.
    let results = p.path("reports/t/results.csv");
    let text = std::fs::read_to_string(&results).unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("\"head=mgat,seed=2\""))
        .unwrap();
    let fields: Vec<&str> = line.split(',').collect();
    // cell (2 fields), model.head, seed, dataset, lock_digest, train_key, eval_key, then rank1.
    let rank1 = fields[8];
    let edited_line = line.replacen(&format!(",{rank1},"), ",0.123456,", 1);
    std::fs::write(&results, text.replace(line, &edited_line)).unwrap();
    let run = p.mgat(&[
        "audit",
        "experiments/t.yaml",
        "--cells",
        "head=mgat,seed=2",
        "-q",
    ]);
    assert_eq!(run.code(), 1, "{}\n{}", run.stdout(), run.stderr());
    let out = run.stdout();
    assert!(
        out.contains("t head=mgat,seed=2") && out.contains(&format!("rank1 0.123456 → {rank1}")),
        "{out}"
    );
    assert!(out.contains("0 of 1 rows reproduced"), "{out}");
    assert_eq!(tree(&p.cache_dir()), before);

    // The device column is a claim: a row that says it trained on a GPU is not verifiable on this CPU machine
    // (exit 3), never reproduced, even with its metrics as they were.
    let claimed = text.replacen(",cpu,", ",cuda:0,", 1);
    std::fs::write(&results, &claimed).unwrap();
    let first = claimed.lines().nth(1).unwrap();
    let cell = first[1..first[1..].find('"').unwrap() + 1].to_string();
    let run = p.mgat(&["audit", "experiments/t.yaml", "--cells", &cell, "-q"]);
    assert_eq!(run.code(), 3, "{}\n{}", run.stdout(), run.stderr());
    assert!(
        run.stdout().contains(
            "not verifiable here: the row says it trained on cuda:0, and this audit trained on cpu"
        ),
        "{}",
        run.stdout()
    );
    std::fs::write(&results, &text).unwrap();

    let none = p.mgat(&["audit", "experiments/t.yaml", "--cells", "nothing*"]);
    assert_eq!(none.code(), 2, "{}", none.stderr());
    assert!(
        none.stderr()
            .contains("--cells 'nothing*' matches no committed row")
    );
    p.write(
        "experiments/u.yaml",
        &spec("0.003").replace("name: t", "name: u"),
    );
    let missing = p.mgat(&["audit", "experiments/u.yaml"]);
    assert_eq!(missing.code(), 2, "{}", missing.stderr());
    assert!(
        missing
            .stderr()
            .contains("reports/u/results.csv: no committed results"),
        "{}",
        missing.stderr()
    );
}

#[test]
fn diff_says_which_field_or_which_code_moved_the_keys() {
    let p = committed_project("diffwhy", "0.003");
    p.write("experiments/t.yaml", &spec("0.01"));
    p.mgat(&["run", "experiments/t.yaml", "-q"]).success();
    git(&p.dir, &["commit", "-q", "-am", "lr 0.01"]);

    let run = p.mgat(&["diff", "HEAD~1", "HEAD", "--format", "json"]);
    run.success();
    let json: Value = serde_json::from_str(&run.stdout()).unwrap();
    let why = json["why"].as_array().unwrap();
    for cell in ["head=none", "head=mgat"] {
        let of_cell: Vec<&Value> = why.iter().filter(|w| w["cell"] == cell).collect();
        assert!(
            of_cell
                .iter()
                .any(|w| w["kind"] == "train" && w["reason"] == "train.lr 0.003 → 0.01"),
            "{why:?}"
        );
        assert!(
            of_cell
                .iter()
                .any(|w| w["kind"] == "eval" && w["reason"] == "upstream train output changed"),
            "{why:?}"
        );
        // Nothing else moved: not the data stages, not the code.
        assert!(
            of_cell
                .iter()
                .all(|w| w["kind"] != "index" && w["kind"] != "synth"),
            "{why:?}"
        );
    }
    assert!(json["nondeterministic"].as_array().unwrap().is_empty());
    let table = p.mgat(&["diff", "HEAD~1", "HEAD"]);
    assert!(
        table
            .stdout()
            .contains("t head=mgat: train: train.lr 0.003 → 0.01"),
        "{}",
        table.stdout()
    );

    // A change to the train kind's code, as a rebuilt mgat would commit it: one of its files changes in git and
    // keys.json carries the new fingerprint (and so new train keys).
    let keys_path = p.path("reports/t/keys.json");
    let keys: Value = serde_json::from_slice(&std::fs::read(&keys_path).unwrap()).unwrap();
    let code = &keys["code"]["train"];
    let (old_print, file) = (
        code["fingerprint"].as_str().unwrap().to_string(),
        code["files"][0].as_str().unwrap().to_string(),
    );
    let untouched = code["files"][1].as_str().unwrap().to_string();
    p.write(&file, "// one version\n");
    p.write(&untouched, "// never changes\n");
    git(&p.dir, &["add", "-A"]);
    git(&p.dir, &["commit", "-q", "-m", "sources"]);
    p.write(&file, "// another version\n");
    let new_print = "f".repeat(64);
    let mut text = std::fs::read_to_string(&keys_path).unwrap();
    text = text.replace(&old_print, &new_print);
    let train_keys: Vec<String> = keys["cells"]
        .as_object()
        .unwrap()
        .values()
        .map(|k| k["train"].as_str().unwrap().to_string())
        .collect();
    for (n, key) in train_keys.iter().enumerate() {
        text = text.replace(key, &format!("{n:064}"));
    }
    std::fs::write(&keys_path, text).unwrap();
    git(&p.dir, &["commit", "-q", "-am", "train code"]);
    let run = p.mgat(&["diff", "HEAD~1", "HEAD", "--format", "json"]);
    run.success();
    let json: Value = serde_json::from_str(&run.stdout()).unwrap();
    let code_change = json["why"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["kind"] == "train" && w["reason"] == "code of kind train changed")
        .unwrap_or_else(|| panic!("{}", json["why"]));
    assert_eq!(code_change["files"], serde_json::json!([file]));
    // The metrics did not move while the keys did: nothing is flagged as non-deterministic.
    assert!(json["nondeterministic"].as_array().unwrap().is_empty());
}

#[test]
fn diff_flags_metrics_that_moved_under_the_same_keys() {
    let p = committed_project("nondet", "0.003");
    let results = p.path("reports/t/results.csv");
    let text = std::fs::read_to_string(&results).unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("\"head=none,seed=1\""))
        .unwrap();
    let rank1 = line.split(',').nth(8).unwrap();
    let edited = line.replacen(&format!(",{rank1},"), ",0.999999,", 1);
    std::fs::write(&results, text.replace(line, &edited)).unwrap();
    let run = p.mgat(&["diff"]);
    run.success();
    assert!(
        run.stdout().contains(&format!(
            "non-deterministic: t head=none,seed=1 rank1 {} → 0.999999 with the same keys",
            rank1.parse::<f64>().unwrap()
        )),
        "{}",
        run.stdout()
    );
}
