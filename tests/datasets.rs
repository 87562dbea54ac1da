//! End-to-end tests of real dataset layouts: `mgat data synth --layout` writes each layout's own names and files,
//! `mgat data lock --format` indexes it, and the official split sizes are checked (Market-1501 at full size).

mod common;

use common::Project;

const SMALL: &[&str] = &[
    "--seed",
    "5",
    "--ids",
    "16",
    "--cameras",
    "3",
    "--images-per-camera",
    "2",
    "--height",
    "64",
    "--width",
    "32",
];

fn synth(p: &Project, out: &str, layout: &str, extra: &[&str]) -> String {
    let mut args = vec!["data", "synth", "--out", out, "--layout", layout];
    args.extend(SMALL);
    args.extend(extra);
    let run = p.mgat(&args);
    run.success();
    run.stdout()
}

/// `wrote …: 80 train images of 8 ids, 16 query and 60 gallery images of 8 test ids` → (80, 8, 16, 60).
fn written(line: &str) -> [usize; 4] {
    let numbers: Vec<usize> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .collect();
    let n = numbers.len();
    [
        numbers[n - 5],
        numbers[n - 4],
        numbers[n - 3],
        numbers[n - 2],
    ]
}

#[test]
fn each_layout_is_written_in_its_own_naming_and_indexed_by_its_own_indexer() {
    let p = Project::new("layouts");
    p.write("datasets.lock", "");
    for (layout, extra, sample) in [
        (
            "market1501",
            &["--junk", "3", "--distractors", "4"][..],
            "bounding_box_train",
        ),
        (
            "dukemtmc-reid",
            &["--distractors", "4"][..],
            "bounding_box_test",
        ),
        ("cuhk03-np", &[][..], "query"),
        ("msmt17", &[][..], "train"),
    ] {
        let wrote = synth(&p, layout, layout, extra);
        let [train, train_ids, query, gallery] = written(&wrote);
        let names: Vec<String> = walk(&p.path(layout).join(sample));
        let looks_right = |n: &str| match layout {
            "market1501" => n.contains("_c") && n.contains('s') && n.ends_with("_01.jpg"),
            "dukemtmc-reid" => n.contains("_f") && n.ends_with(".jpg"),
            "cuhk03-np" => n.ends_with(".png"),
            _ => n.contains("_0303morning_"),
        };
        assert!(names.iter().all(|n| looks_right(n)), "{layout}: {names:?}");
        if layout == "msmt17" {
            for list in [
                "list_train.txt",
                "list_val.txt",
                "list_query.txt",
                "list_gallery.txt",
            ] {
                assert!(p.path(layout).join(list).is_file(), "{list}");
            }
        }
        // A small tree is not an official release: refused with the table, then locked with --allow-nonstandard.
        let refused = p.mgat(&["data", "lock", layout, "--format", layout, "--root", layout]);
        assert_eq!(refused.code(), 2, "{layout}: {}", refused.stderr());
        assert!(
            refused.stderr().contains("ids expected"),
            "{}",
            refused.stderr()
        );
        let locked = p.mgat(&[
            "data",
            "lock",
            layout,
            "--format",
            layout,
            "--root",
            layout,
            "--allow-nonstandard",
        ]);
        locked.success();
        // Market junk is dropped by the indexer; everything else indexes as written.
        let junk = if layout == "market1501" { 3 } else { 0 };
        let expected = format!(
            "{train} train images of {train_ids} ids, {query} query images of {} ids, {} gallery images",
            train_ids,
            gallery - junk
        );
        assert!(
            locked.stdout().contains(&expected),
            "{layout}: {} vs {expected}",
            locked.stdout()
        );
    }
    let lock = std::fs::read_to_string(p.path("datasets.lock")).unwrap();
    assert_eq!(lock.matches("release: nonstandard").count(), 4, "{lock}");
    p.mgat(&["data", "verify"]).success();
}

fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        if entry.path().is_dir() {
            out.extend(walk(&entry.path()));
        } else {
            out.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    assert!(!out.is_empty(), "{}", dir.display());
    out
}

const LOCK_MARKET: &[&str] = &[
    "data",
    "lock",
    "market",
    "--format",
    "market1501",
    "--root",
    "m",
];

fn swap_query_and_gallery(p: &Project) {
    std::fs::rename(p.path("m/query"), p.path("m/q")).unwrap();
    std::fs::rename(p.path("m/bounding_box_test"), p.path("m/query")).unwrap();
    std::fs::rename(p.path("m/q"), p.path("m/bounding_box_test")).unwrap();
}

#[test]
fn a_full_size_market1501_tree_is_recognised_and_a_partial_or_swapped_one_refused() {
    let p = Project::new("market-full");
    p.write("datasets.lock", "");
    p.mgat(&[
        "data",
        "synth",
        "--layout",
        "market1501",
        "--official-size",
        "--seed",
        "1",
        "--cameras",
        "6",
        "--height",
        "64",
        "--width",
        "32",
        "--out",
        "m",
    ])
    .success();
    let locked = p.mgat(LOCK_MARKET);
    locked.success();
    assert!(
        locked.stdout().contains(
            "12936 train images of 751 ids, 3368 query images of 750 ids, 15913 gallery images of 751 ids"
        ) && locked.stdout().contains("the official Market-1501 split sizes"),
        "{}",
        locked.stdout()
    );
    let lock = std::fs::read_to_string(p.path("datasets.lock")).unwrap();
    assert!(
        lock.contains("release: Market-1501") && lock.contains("files: 36036"),
        "{lock}"
    );

    // Query and gallery swapped: refused, and the lock is left as it was.
    swap_query_and_gallery(&p);
    let swapped = p.mgat(LOCK_MARKET);
    assert_eq!(swapped.code(), 2, "{}", swapped.stderr());
    assert_eq!(
        std::fs::read_to_string(p.path("datasets.lock")).unwrap(),
        lock
    );

    // Put back; then a partial unzip: a third of the gallery missing. The table names the split that differs.
    swap_query_and_gallery(&p);
    let mut gallery: Vec<_> = std::fs::read_dir(p.path("m/bounding_box_test"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    gallery.sort();
    for f in gallery.iter().step_by(3) {
        std::fs::remove_file(f).unwrap();
    }
    let partial = p.mgat(LOCK_MARKET);
    assert_eq!(partial.code(), 2, "{}", partial.stderr());
    let text = partial.stderr();
    let row = |split: &str| {
        text.lines()
            .find(|l| l.trim_start().starts_with(split))
            .unwrap_or_else(|| panic!("no {split} row in {text}"))
            .to_string()
    };
    assert!(
        row("gallery").contains("15913") && row("gallery").contains("differs"),
        "{text}"
    );
    assert!(
        !row("train").contains("differs") && !row("query").contains("differs"),
        "{text}"
    );
    assert!(text.contains("--allow-nonstandard"), "{text}");
    assert_eq!(
        std::fs::read_to_string(p.path("datasets.lock")).unwrap(),
        lock
    );
}

#[test]
fn junk_or_distractors_for_a_layout_without_them_and_unknown_layouts_are_refused() {
    let p = Project::new("layout-args");
    for (args, needle) in [
        (&["--layout", "msmt17", "--junk", "5"][..], "--junk"),
        (
            &["--layout", "cuhk03-np", "--distractors", "5"][..],
            "--distractors",
        ),
        (&["--layout", "market"][..], "--layout market"),
    ] {
        let mut all = vec!["data", "synth", "--out", "x", "--seed", "1"];
        all.extend(args);
        let run = p.mgat(&all);
        assert_eq!(run.code(), 2, "{args:?}: {}", run.stderr());
        assert!(run.stderr().contains(needle), "{}", run.stderr());
        assert!(!p.path("x").exists());
    }
}

/// `data verify` of a synthetic dataset re-hashes the cache's generated copy, which stages read, and names it when
/// damaged (it said "ok" from the regenerated files alone); `data lock` through a symlinked `datasets.lock` writes
/// the file the link leads to and keeps the link.
#[test]
fn data_verify_checks_a_synthetic_datasets_cached_copy_and_a_linked_lock_stays_linked() {
    let p = Project::new("synth-verify");
    std::fs::create_dir_all(p.path("shared")).unwrap();
    std::fs::write(p.path("shared/datasets.lock"), "datasets: {}\n").unwrap();
    std::os::unix::fs::symlink("shared/datasets.lock", p.path("datasets.lock")).unwrap();
    p.lock_synth("toy", common::TOY_DATA);
    assert!(
        p.path("datasets.lock")
            .symlink_metadata()
            .unwrap()
            .file_type()
            .is_symlink()
    );
    let shared = std::fs::read_to_string(p.path("shared/datasets.lock")).unwrap();
    assert!(shared.contains("toy:"), "{shared}");

    p.write(
        "experiments/t.yaml",
        &format!("name: t\n{}", common::TOY_BASE),
    );
    p.mgat(&["-q", "run", "experiments/t.yaml", "--until", "synth"])
        .success();
    let ok = p.mgat(&["data", "verify", "toy"]);
    ok.success();
    assert!(
        ok.stdout()
            .contains("toy: 1 cached copy re-hashed, 0 damaged"),
        "{}",
        ok.stdout()
    );
    let entry = p.cache_dir().join("synth").join(&p.entries("synth")[0]);
    let train = entry.join("data/bounding_box_train");
    let image = walk(&train)
        .into_iter()
        .find(|f| f.ends_with(".jpg"))
        .unwrap();
    let mut bytes = std::fs::read(train.join(&image)).unwrap();
    bytes[100] ^= 1;
    std::fs::write(train.join(&image), bytes).unwrap();
    let damaged = p.mgat(&["data", "verify", "toy"]);
    assert_eq!(damaged.code(), 2, "{}", damaged.stderr());
    assert!(
        damaged.stderr().contains("toy: its cached copy") && damaged.stderr().contains(&image),
        "{}",
        damaged.stderr()
    );
}
