//! `mgat rehearse`: every cell end to end with the rehearsal's small model, in a folder of its own (lock, cache,
//! reports), the project's lock, reports and cache untouched, and what the real run needs computed from the specs
//! as written.

mod common;

use common::{LOCK_TOY_ON_DISK, Project, TOY_BASE};

#[test]
fn a_rehearsal_runs_every_cell_in_its_own_folder_and_says_what_the_real_run_needs() {
    let p = Project::new("rehearse");
    p.synth_toy_on_disk();
    p.lock_toy_on_disk();
    assert_eq!(LOCK_TOY_ON_DISK[2], "toy");
    // Two epochs of whole batches of 16 in the real spec; the rehearsal trains one epoch of three iterations.
    let spec = format!(
        "name: t\n{}grid:\n  model.head: [none, mgat]\nseeds: [1, 2]\n",
        TOY_BASE.replace("epochs: 1,", "epochs: 2,")
    );
    p.write("experiments/t.yaml", &spec);
    let lock_before = std::fs::read(p.path("datasets.lock")).unwrap();
    let run = p.mgat(&["-q", "rehearse", "experiments/t.yaml", "--out", "rehearsal"]);
    run.success();
    let out = run.stdout();
    assert!(out.contains("toy: the project's, as locked"), "{out}");

    // Its reports, lock and cache are under --out; the project's are as they were.
    let results = std::fs::read_to_string(p.path("rehearsal/reports/t/results.csv")).unwrap();
    assert_eq!(results.lines().count(), 1 + 4);
    assert!(!p.path("reports").exists(), "nothing under reports/");
    for kind in ["index", "train", "eval"] {
        assert!(
            p.entries(kind).is_empty(),
            "no {kind} entry in the project's cache"
        );
    }
    assert_eq!(std::fs::read(p.path("datasets.lock")).unwrap(), lock_before);
    assert!(p.path("rehearsal/datasets.lock").is_file());
    // The cells trained the rehearsal's model: one epoch of three iterations.
    let keys = std::fs::read_to_string(p.path("rehearsal/reports/t/keys.json")).unwrap();
    assert!(
        keys.contains("\"iters_per_epoch\":3") && keys.contains("\"epochs\":1"),
        "{keys}"
    );

    // The real run, counted here from the spec and the toy tree: 4 train stages of 2 epochs × ⌊train / 16⌋ × 16
    // images, 4 eval stages of query + gallery images (no flip).
    let index = |split: &str| {
        std::fs::read_dir(p.path(&format!("data/toy/{split}")))
            .unwrap()
            .flatten()
            .filter(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                name.ends_with(".jpg") && !name.starts_with("-1") && !name.starts_with("0000")
            })
            .count() as u64
    };
    let train = index("bounding_box_train");
    let test = index("query")
        + std::fs::read_dir(p.path("data/toy/bounding_box_test"))
            .unwrap()
            .flatten()
            .filter(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                name.ends_with(".jpg") && !name.starts_with("-1")
            })
            .count() as u64;
    let per_train = 2 * (train / 16) * 16;
    let expected = format!(
        "the real run: 4 train stages ({} images through the network, forward and backward), 4 eval stages ({} images forward)",
        4 * per_train,
        4 * test
    );
    assert!(out.contains(&expected), "expected `{expected}` in\n{out}");

    // Again: everything is cached.
    let again = p.mgat(&["-q", "rehearse", "experiments/t.yaml", "--out", "rehearsal"]);
    again.success();
    assert!(
        again.stdout().contains("stages: 0 ran"),
        "{}",
        again.stdout()
    );

    // Never under reports/; a dataset whose name suggests no layout is named.
    let refused = p.mgat(&["rehearse", "experiments/t.yaml", "--out", "reports/r"]);
    assert_eq!(refused.code(), 2, "{}", refused.stderr());
    assert!(
        refused.stderr().contains("never writes under"),
        "{}",
        refused.stderr()
    );
    // A rehearsal's entries are not results: it never pulls or pushes them.
    let pushed = p.mgat(&["rehearse", "experiments/t.yaml", "--out", "r2", "--push"]);
    assert_eq!(pushed.code(), 2, "{}", pushed.stderr());
    assert!(
        pushed.stderr().contains("never uses a remote"),
        "{}",
        pushed.stderr()
    );
    p.write(
        "experiments/m.yaml",
        &format!(
            "name: m\n{}",
            TOY_BASE.replace("name: toy", "name: mystery")
        ),
    );
    let unknown = p.mgat(&["rehearse", "experiments/m.yaml", "--out", "rehearsal"]);
    assert_eq!(unknown.code(), 2, "{}", unknown.stderr());
    assert!(
        unknown.stderr().contains("dataset `mystery` is not locked"),
        "{}",
        unknown.stderr()
    );
}
