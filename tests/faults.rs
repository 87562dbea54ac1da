//! The fault harness: kills at random points, overlapping runs on one cache, and every kind of damage to every kind
//! of cache file, each followed by a run that must end with the results of an undisturbed one and a clean
//! `cache verify`. Counts are printed (run with `--nocapture` to see them).

mod common;

use common::{Project, TOY_BASE, TOY_DATA};
use std::process::Stdio;
use std::time::{Duration, Instant};

/// Two cells, two epochs each: synth → index → 2 × (train → eval), about 1.5 s on 2 cores.
const SPEC: &str = "\
name: t
base:
  dataset: {name: toy}
  model: {backbone: resnet18, width: 8, bnneck: true, head: none}
  train: {height: 64, width: 32, batch_size: 16, instances: 4, epochs: 2, warmup_epochs: 0, lr: 0.003, schedule: constant, lr_steps: [], pad: 4, random_erasing: 0.0, workers: 2}
grid:
  model.head: [none, mgat]
";

fn project(name: &str) -> Project {
    let p = Project::new(name);
    p.lock_synth("toy", TOY_DATA);
    p.write("experiments/t.yaml", SPEC);
    p
}

/// results.csv without the columns that record when, how fast and by which commit (they differ between runs).
fn results(p: &Project) -> Vec<String> {
    let text = std::fs::read_to_string(p.path("reports/t/results.csv")).unwrap_or_default();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap_or_default().split(',').collect();
    let keep: Vec<usize> = (0..header.len())
        .filter(|&i| {
            !matches!(
                header[i],
                "train_seconds" | "images_per_s" | "git_commit" | "git_dirty"
            )
        })
        .collect();
    std::iter::once(header.join(","))
        .chain(lines.map(|l| {
            let fields = split_csv(l);
            keep.iter()
                .map(|&i| fields[i].clone())
                .collect::<Vec<_>>()
                .join(",")
        }))
        .collect()
}

/// CSV fields, with the cell name's quotes kept as one field.
fn split_csv(line: &str) -> Vec<String> {
    let (mut fields, mut field, mut quoted) = (Vec::new(), String::new(), false);
    for c in line.chars() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => fields.push(std::mem::take(&mut field)),
            c => field.push(c),
        }
    }
    fields.push(field);
    fields
}

fn run(p: &Project) {
    p.mgat(&["-q", "run", "experiments/t.yaml"]).success();
}

fn verify_clean(p: &Project) {
    let out = p.mgat(&["cache", "verify"]);
    assert_eq!(out.code(), 0, "cache verify: {}", out.stdout());
}

/// A deterministic stream of numbers in [0, 1).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> f64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[test]
fn sigkill_at_50_random_points_then_a_rerun_gives_the_undisturbed_results() {
    let p = project("kills");
    let started = Instant::now();
    run(&p);
    let full = started.elapsed();
    let reference = results(&p);
    assert_eq!(reference.len(), 3, "{reference:?}");
    let mut rng = Lcg(7);
    let mut survived = 0;
    for i in 0..50 {
        std::fs::remove_dir_all(p.path(".mgat")).unwrap();
        std::fs::remove_dir_all(p.path("reports")).unwrap();
        let mut child = p
            .command(&["-q", "run", "experiments/t.yaml"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(full.mul_f64(rng.next() * 1.1));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        if p.cache_dir().exists() {
            verify_clean(&p);
        }
        run(&p);
        verify_clean(&p);
        assert_eq!(results(&p), reference, "kill {i}");
        survived += 1;
    }
    eprintln!(
        "kills survived: {survived}/50 (undisturbed run {:.2} s)",
        full.as_secs_f64()
    );
}

#[test]
fn three_overlapping_grids_at_once_compute_each_stage_once() {
    let p = project("overlap");
    let specs = [
        ("a", "[none, mgat]"),
        ("b", "[mgat, gat]"),
        ("c", "[gat, none]"),
    ];
    for (name, heads) in specs {
        let text = SPEC
            .replacen("name: t\n", &format!("name: {name}\n"), 1)
            .replace("[none, mgat]", heads);
        p.write(&format!("experiments/{name}.yaml"), &text);
    }
    let children: Vec<_> = specs
        .iter()
        .map(|(name, _)| {
            p.command(&["run", &format!("experiments/{name}.yaml")])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let runs: Vec<common::Run> = children
        .into_iter()
        .map(|c| common::Run(c.wait_with_output().unwrap()))
        .collect();
    for r in &runs {
        r.success();
    }
    let total = |word: &str| runs.iter().map(|r| r.summary(word)).sum::<usize>();
    // Distinct stages: synth, index, and a train and an eval stage per head.
    assert_eq!(total("ran"), 2 + 2 * 3, "each stage computed once in all");
    assert_eq!(total("ran") + total("reused") + total("cached"), 3 * 6);
    assert!(
        total("reused") >= 1,
        "the runs overlapped: one waited for another's stage"
    );
    verify_clean(&p);
    eprintln!(
        "overlapping runs: {} ran, {} reused, {} cached",
        total("ran"),
        total("reused"),
        total("cached")
    );
}

/// One file of each kind of entry, relative to the entry: its manifest and each output (one image of a dataset).
const TARGETS: [(&str, &str); 10] = [
    ("synth", "manifest.json"),
    ("synth", "data/bounding_box_train"),
    ("index", "manifest.json"),
    ("index", "index.json"),
    ("train", "manifest.json"),
    ("train", "model.safetensors"),
    ("train", "train_log.csv"),
    ("eval", "manifest.json"),
    ("eval", "metrics.json"),
    ("eval", "cmc.csv"),
];

/// A file under `path` (the first one, for a folder).
fn first_file(path: &std::path::Path) -> std::path::PathBuf {
    if path.is_file() {
        return path.to_path_buf();
    }
    let mut names: Vec<_> = std::fs::read_dir(path)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    names.sort();
    names.into_iter().find(|n| n.is_file()).unwrap()
}

fn damage(file: &std::path::Path, how: &str) {
    let bytes = std::fs::read(file).unwrap();
    match how {
        "flip" => {
            let mut b = bytes;
            let at = b.len() / 2;
            b[at] ^= 0x5a;
            std::fs::write(file, b).unwrap();
        }
        "truncate" => std::fs::write(file, &bytes[..bytes.len() / 2]).unwrap(),
        "delete" => std::fs::remove_file(file).unwrap(),
        "garble" => std::fs::write(file, b"\x00garbage{[").unwrap(),
        other => panic!("unknown damage {other}"),
    }
}

#[test]
fn every_damage_to_every_kind_of_cache_file_is_quarantined_and_recomputed() {
    let p = project("damage");
    run(&p);
    let reference = results(&p);
    let quarantined =
        || std::fs::read_dir(p.cache_dir().join(".quarantine")).map_or(0, |d| d.count());
    let mut recovered = 0;
    for (kind, rel) in TARGETS {
        for how in ["flip", "truncate", "delete", "garble"] {
            let entry = p.cache_dir().join(kind).join(&p.entries(kind)[0]);
            let file = first_file(&entry.join(rel));
            let before = quarantined();
            damage(&file, how);
            run(&p);
            assert_eq!(
                quarantined(),
                before + 1,
                "{how} {kind}/{rel}: the entry was not quarantined"
            );
            assert_eq!(results(&p), reference, "{how} {kind}/{rel}");
            verify_clean(&p);
            recovered += 1;
        }
    }
    eprintln!("faults recovered: {recovered}/{}", TARGETS.len() * 4);
}

#[test]
fn a_damaged_training_checkpoint_is_discarded_not_half_loaded() {
    let p = project("checkpoint");
    run(&p);
    let reference = results(&p);
    for how in ["flip", "truncate", "delete", "garble"] {
        std::fs::remove_dir_all(p.path(".mgat")).unwrap();
        // Stop the run once a checkpoint of the first epoch exists in a partial train folder.
        let mut child = p
            .command(&["-q", "run", "experiments/t.yaml"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let partial = p.cache_dir().join("train/.partial");
        let deadline = Instant::now() + Duration::from_secs(60);
        let checkpoint = loop {
            let found = std::fs::read_dir(&partial).ok().and_then(|d| {
                d.flatten()
                    .map(|e| e.path().join("checkpoint.json"))
                    .find(|c| c.is_file())
            });
            if let Some(c) = found {
                break c;
            }
            assert!(Instant::now() < deadline, "no checkpoint appeared");
            std::thread::sleep(Duration::from_millis(2));
        };
        child.kill().unwrap();
        child.wait().unwrap();
        let dir = checkpoint.parent().unwrap();
        let weights = std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .find(|f| {
                f.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("ckpt-")
            });
        // Damage the weights when they are there (the kill may land between the two writes), else the pointer.
        damage(&weights.unwrap_or(checkpoint), how);
        run(&p);
        assert_eq!(results(&p), reference, "{how} checkpoint");
        verify_clean(&p);
    }
}

/// Rewrites `file` in place with one byte changed (same size, same inode) and its mtime set back: what `touch -r` or
/// `cp -p` of a rotted backup leaves. Only the ctime tells.
fn rewrite_keeping_size_and_mtime(file: &std::path::Path) {
    let modified = std::fs::metadata(file).unwrap().modified().unwrap();
    let mut bytes = std::fs::read(file).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x01;
    std::fs::write(file, &bytes).unwrap();
    std::fs::File::options()
        .write(true)
        .open(file)
        .unwrap()
        .set_modified(modified)
        .unwrap();
}

/// The blind spot of stat records that trust (size, mtime, inode): a same-size rewrite with its mtime restored, of
/// the weights and of `metrics.json`, is found by `cache verify` (which also repairs: a second verify is clean) and
/// by a plain `run`, whose results stay those of an undisturbed run.
#[test]
fn a_same_size_rewrite_with_its_mtime_restored_is_caught_and_repaired() {
    let p = project("blind-spot");
    run(&p);
    let reference = results(&p);
    // The trust ledger records only what was written 2 s ago or earlier: record every entry.
    std::thread::sleep(Duration::from_millis(2100));
    run(&p);
    for (kind, rel) in [("train", "model.safetensors"), ("eval", "metrics.json")] {
        let file = || p.cache_dir().join(kind).join(&p.entries(kind)[0]).join(rel);
        rewrite_keeping_size_and_mtime(&file());
        let verify = p.mgat(&["cache", "verify"]);
        assert_eq!(verify.code(), 1, "{kind}/{rel}: {}", verify.stdout());
        assert!(verify.stdout().contains("moved to"), "{}", verify.stdout());
        verify_clean(&p);
        run(&p);
        assert_eq!(results(&p), reference, "{kind}/{rel} after verify");
        std::thread::sleep(Duration::from_millis(2100));
        run(&p);
        // The same damage, with no verify in between: the next run sees it.
        rewrite_keeping_size_and_mtime(&file());
        run(&p);
        assert_eq!(results(&p), reference, "{kind}/{rel} after a run");
        verify_clean(&p);
    }
}

/// Writes a one-cell spec of six epochs (several seconds of training) at `spec`, starts `mgat run` on it, and
/// returns once its train stage has begun.
fn run_until_training(p: &Project, spec: &str) -> std::process::Child {
    p.write(
        spec,
        &SPEC
            .replace("epochs: 2", "epochs: 6")
            .replace("  model.head: [none, mgat]\n", "  model.head: [none]\n"),
    );
    let child = p
        .command(&["run", spec, "-q"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let partial = p.cache_dir().join("train").join(".partial");
    let started = Instant::now();
    while !std::fs::read_dir(&partial).is_ok_and(|mut d| d.next().is_some()) {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no train stage started"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    child
}

/// A dataset file rewritten while a train stage runs: the stage fails as bad input (exit 2) when it reads the file
/// (its bytes against the digest pinned when it started) or, if it never reads it again, when it checks its dataset
/// before committing; no train entry is committed.
#[test]
fn a_dataset_changed_while_a_stage_runs_fails_it_and_commits_nothing() {
    let p = Project::new("midrun");
    let data = p.synth_toy_on_disk();
    p.lock_toy_on_disk();
    let child = run_until_training(&p, "experiments/t.yaml");
    // Past the stage's first check of its dataset (a stat per file, a few milliseconds), well before it ends.
    std::thread::sleep(Duration::from_millis(150));
    let image = first_file(&data.join("bounding_box_train"));
    rewrite_keeping_size_and_mtime(&image);
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{stdout}");
    assert!(stdout.contains("changed while the stage ran"), "{stdout}");
    assert!(p.entries("train").is_empty(), "no train entry committed");
}

/// `cache verify` names a folder whose name is not UTF-8, moves it aside and goes on: damage after it is still
/// reported and repaired.
#[test]
fn cache_verify_goes_past_a_folder_whose_name_is_not_utf8() {
    use std::os::unix::ffi::OsStrExt;
    let p = Project::new("verify-utf8");
    p.lock_synth("toy", TOY_DATA);
    p.write(
        "experiments/t.yaml",
        &format!("name: t\n{TOY_BASE}seeds: [1]\n"),
    );
    p.mgat(&["-q", "run", "experiments/t.yaml"]).success();
    let odd = p
        .cache_dir()
        .join("train")
        .join(std::ffi::OsStr::from_bytes(b"z\xff"));
    std::fs::create_dir_all(&odd).unwrap();
    let eval = p.cache_dir().join("eval").join(&p.entries("eval")[0]);
    std::fs::write(eval.join("metrics.json"), "damaged").unwrap();
    let out = p.mgat(&["cache", "verify"]);
    assert_eq!(out.code(), 1, "{}{}", out.stdout(), out.stderr());
    let text = out.stdout();
    assert!(text.contains("corrupt train z\u{fffd}"), "{text}");
    assert!(text.contains("corrupt eval"), "{text}");
    assert!(text.contains("2 corrupt"), "{text}");
    assert!(!odd.exists(), "moved aside");
}

/// `cache gc --yes` while a spec outside `experiments/` runs: the entries the run has read or written so far
/// (its synthetic data and index, while it trains) are roots of a live process, kept, and the run ends with all of
/// its entries in the cache. Once the run has ended they are garbage like any other.
#[test]
fn gc_during_a_run_keeps_the_entries_the_run_is_using() {
    let p = Project::new("gc-live");
    p.lock_synth("toy", TOY_DATA);
    let child = run_until_training(&p, "elsewhere/t.yaml");
    let gc = p.mgat(&["cache", "gc", "--yes"]);
    gc.success();
    assert!(
        gc.stdout()
            .contains("that running mgat processes are using"),
        "{}",
        gc.stdout()
    );
    assert_eq!(p.entries("synth").len(), 1, "{}", gc.stdout());
    assert_eq!(p.entries("index").len(), 1, "{}", gc.stdout());
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for kind in ["synth", "index", "train", "eval"] {
        assert_eq!(p.entries(kind).len(), 1, "{kind}");
    }
    // The run has ended: nothing holds its entries now.
    p.mgat(&["cache", "gc", "--yes"]).success();
    for kind in ["synth", "index", "train", "eval"] {
        assert!(p.entries(kind).is_empty(), "{kind}");
    }
    assert!(
        std::fs::read_dir(p.cache_dir().join(".runs"))
            .unwrap()
            .flatten()
            .all(|e| e.file_name() == ".collector"),
        "a run file outlived its run"
    );
}
