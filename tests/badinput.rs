//! End-to-end tests of bad input and changed inputs: each gets a clear error naming the file (and line, and value)
//! with exit 2, and nothing is computed from it. Pretrained weights are checked when loaded; read-only commands
//! work without them.

mod common;

use common::{Project, TOY_BASE, TOY_DATA};

fn toy(name: &str) -> Project {
    let p = Project::new(name);
    p.lock_synth("toy", TOY_DATA);
    p
}

/// `mgat ARGS` must exit 2 with `needle` in its error.
fn refused(p: &Project, args: &[&str], needle: &str) {
    let out = p.mgat(args);
    assert_eq!(out.code(), 2, "{args:?}: {}", out.stderr());
    assert!(
        out.stderr().contains(needle),
        "{args:?}: expected `{needle}` in:\n{}",
        out.stderr()
    );
}

#[test]
fn spec_mistakes_are_named_at_their_line() {
    let p = toy("spec-errors");
    let cases: [(&str, String, &str); 9] = [
        // An unclosed `[` at the end of the file is a syntax error, not a list of the wrong type.
        (
            "unclosed-at-end",
            "name: a\nbase: [\n".to_string(),
            "a.yaml:3:1: not valid YAML",
        ),
        (
            "dup-axis",
            format!("name: a\n{TOY_BASE}grid:\n  model.gamma: [1, 2]\n  model.gamma: [3]\n"),
            "a.yaml:8:3: duplicate key `model.gamma` in `grid`",
        ),
        (
            "dup-base",
            "name: a\nbase:\n  dataset: {name: toy}\n  model: {width: 8}\n  model: {width: 4}\n"
                .into(),
            "a.yaml:5:3: duplicate key `model` in `base`",
        ),
        (
            "no-seeds",
            format!("name: a\n{TOY_BASE}seeds: []\n"),
            "a.yaml:6:8: seeds is empty",
        ),
        (
            "unknown-dataset",
            format!("name: a\n{TOY_BASE}grid:\n  dataset.name: [toy, nope]\n"),
            "a.yaml:7:17: ",
        ),
        (
            "unclosed",
            format!("name: a\n{TOY_BASE}grid:\n  model.head: [mgat\n"),
            "a `[` list is not closed",
        ),
        (
            "enum-number",
            format!("name: a\n{TOY_BASE}grid:\n  model.head: [mgat, 3]\n"),
            "expected one of `none`, `gat`, `mgat`",
        ),
        (
            "long-name",
            format!("name: {}\n{TOY_BASE}", "x".repeat(300)),
            "expected up to 100 letters",
        ),
        (
            "bom",
            format!("\u{feff}name: a\n{TOY_BASE}"),
            "a.yaml:1:1: the file starts with a byte-order mark",
        ),
    ];
    for (what, text, needle) in cases {
        p.write("experiments/a.yaml", &text);
        let out = p.mgat(&["plan", "experiments/a.yaml"]);
        assert_eq!(out.code(), 2, "{what}: {}", out.stderr());
        assert!(
            out.stderr().contains(needle),
            "{what}: expected `{needle}` in:\n{}",
            out.stderr()
        );
    }
    let huge: Vec<String> = (1..=100).map(|i| i.to_string()).collect();
    let axes = [
        "model.gamma",
        "train.lr",
        "model.of_weight",
        "model.triplet_weight",
    ]
    .map(|a| format!("  {a}: [{}]\n", huge.join(", ")))
    .concat();
    p.write(
        "experiments/a.yaml",
        &format!("name: a\n{TOY_BASE}grid:\n{axes}"),
    );
    refused(
        &p,
        &["plan", "experiments/a.yaml"],
        "the grid expands to 100000000 cells",
    );
}

#[test]
fn two_specs_with_one_name_are_refused() {
    let p = toy("same-name");
    p.write("experiments/a.yaml", &format!("name: same\n{TOY_BASE}"));
    p.write("experiments/b.yaml", &format!("name: same\n{TOY_BASE}"));
    refused(
        &p,
        &["run", "experiments/a.yaml", "experiments/b.yaml"],
        "both would write reports/same/",
    );
    assert!(
        p.entries("synth").is_empty() && p.entries("index").is_empty(),
        "nothing ran"
    );
}

#[test]
fn lock_mistakes_are_named() {
    let p = Project::new("lock-errors");
    refused(&p, &["data", "verify"], "no lock file to verify");
    refused(&p, &["cache", "verify"], "is not a stage cache");
    p.lock_synth("toy", TOY_DATA);
    let lock = std::fs::read_to_string(p.path("datasets.lock")).unwrap();
    p.write("datasets.lock", &lock.replace("files: 255", "files: 254"));
    refused(
        &p,
        &["data", "verify", "toy"],
        "files: 254, bytes: 553198, but its digest covers 255 files",
    );
    p.write("datasets.lock", &lock);
    let help = p.mgat(&["data", "lock", "--help"]).stdout();
    assert!(help.contains("<cache>/.file-lists/"), "{help}");
}

#[test]
fn a_missing_dataset_root_is_refused_while_planning_a_run() {
    let p = Project::new("missing-root");
    p.mgat(&[
        "-q",
        "data",
        "synth",
        "--out",
        "real",
        "--seed",
        "3",
        "--ids",
        "12",
        "--cameras",
        "2",
    ])
    .success();
    p.mgat(&[
        "-q",
        "data",
        "lock",
        "real",
        "--format",
        "market1501",
        "--root",
        "real",
        "--allow-nonstandard",
    ])
    .success();
    p.write(
        "experiments/a.yaml",
        &format!("name: a\n{}", TOY_BASE.replace("name: toy", "name: real")),
    );
    std::fs::rename(p.path("real"), p.path("moved")).unwrap();
    refused(&p, &["run", "experiments/a.yaml"], "its root");
    assert!(p.entries("index").is_empty(), "nothing ran");
    // Inspecting needs no data.
    p.mgat(&["plan", "experiments/a.yaml"]).success();
}

#[test]
fn pretrained_weights_are_checked_at_load_and_not_needed_to_inspect() {
    let p = toy("weights");
    p.write("experiments/a.yaml", &format!("name: a\n{TOY_BASE}"));
    p.mgat(&["-q", "run", "experiments/a.yaml"]).success();
    // A trained model has the backbone's tensors: use it as the pretrained checkpoint of a second spec.
    let trained = p
        .cache_dir()
        .join("train")
        .join(&p.entries("train")[0])
        .join("model.safetensors");
    std::fs::copy(&trained, p.path("w.safetensors")).unwrap();
    let spec = format!(
        "name: b\n{}",
        TOY_BASE.replace("head: none}", "head: none, pretrained: w.safetensors}")
    );
    p.write("experiments/b.yaml", &spec);
    p.mgat(&["-q", "run", "experiments/b.yaml"]).success();

    // Two names for one file, and a copy of it: three cells that share one train stage (its key holds the
    // weights' content, not their path), as before placements were compared.
    std::fs::copy(p.path("w.safetensors"), p.path("copy.safetensors")).unwrap();
    let grid = format!(
        "name: c\n{}grid:\n  model.pretrained: [w.safetensors, ./w.safetensors, copy.safetensors]\n",
        TOY_BASE.replace("head: none}", "head: none, pretrained: w.safetensors}")
    );
    p.write("experiments/c.yaml", &grid);
    let planned = p.mgat(&["plan", "experiments/c.yaml"]).success().stdout();
    assert!(planned.contains("3 cells, 4 distinct stages"), "{planned}");
    // Where the cells disagree on the device the shared stage runs on, that is named.
    p.write(
        "experiments/c.yaml",
        &format!("{grid}zip: []\ninclude:\n  - {{model.pretrained: copy.safetensors, train.device: cpu}}\n"),
    );
    refused(
        &p,
        &["plan", "experiments/c.yaml"],
        "disagree on where it runs (train.device auto against cpu)",
    );
    std::fs::remove_file(p.path("experiments/c.yaml")).unwrap();

    // Without the weights, inspecting works from the cache; running does not.
    std::fs::rename(p.path("w.safetensors"), p.path("w.moved")).unwrap();
    p.mgat(&["plan", "experiments/b.yaml"]).success();
    p.mgat(&["explain", "experiments/b.yaml", "--cell", "seed=1"])
        .success();
    p.mgat(&["report", "experiments/b.yaml"]).success();
    p.mgat(&["cache", "gc"]).success();
    refused(&p, &["run", "experiments/b.yaml"], "w.safetensors");

    // Weights replaced after a stage was planned (a Slurm job starts hours later): the job's stage is refused.
    std::fs::rename(p.path("w.moved"), p.path("w.safetensors")).unwrap();
    std::fs::remove_dir_all(p.cache_dir().join("train")).unwrap();
    let plan: serde_json::Value = serde_json::from_str(
        &p.mgat(&["plan", "experiments/b.yaml", "--json"])
            .success()
            .stdout(),
    )
    .unwrap();
    let train_key = plan["cells"][0]["stages"][2]["key"]
        .as_str()
        .unwrap()
        .to_string();
    let mut changed = std::fs::read(p.path("w.safetensors")).unwrap();
    let last = changed.len() - 1;
    changed[last] ^= 1;
    std::fs::write(p.path("w.safetensors"), &changed).unwrap();
    refused(
        &p,
        &["stage", "train", &train_key, "experiments/b.yaml"],
        "changed since it was planned",
    );
}

#[test]
fn ranks_beyond_max_rank_are_left_empty() {
    let p = toy("max-rank");
    p.write(
        "experiments/a.yaml",
        &format!("name: a\n{TOY_BASE}  eval: {{max_rank: 5}}\n"),
    );
    p.mgat(&["-q", "run", "experiments/a.yaml"]).success();
    let csv = std::fs::read_to_string(p.path("reports/a/results.csv")).unwrap();
    let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
    let row: Vec<&str> = csv.lines().nth(1).unwrap().split(',').collect();
    let at = |name: &str| row[header.iter().position(|h| *h == name).unwrap()];
    assert!(!at("rank1").is_empty() && !at("rank5").is_empty());
    assert_eq!((at("rank10"), at("rank20")), ("", ""), "{csv}");
}

/// Values the spec's checks let through until they aborted on allocation, and arguments that got the wrong exit
/// code or clap's "unexpected argument": each is refused with exit 2 and a sentence naming the value.
#[test]
fn sizes_beyond_what_a_machine_holds_and_bad_arguments_exit_2() {
    let p = toy("bounds");
    for (from, to, needle) in [
        (
            "width: 8",
            "width: 200000",
            "model.width: invalid value `200000`",
        ),
        (
            "height: 64",
            "height: 1000000",
            "train.height: invalid value `1000000`",
        ),
        (
            "pad: 4,",
            "pad: 4000000000,",
            "train.pad: invalid value `4000000000`",
        ),
        (
            "workers: 2}",
            "workers: 2, device: \"cuda:99999999999\"}",
            "train.device",
        ),
    ] {
        assert!(TOY_BASE.contains(from), "{from}");
        p.write(
            "experiments/b.yaml",
            &format!("name: b\n{}", TOY_BASE.replacen(from, to, 1)),
        );
        refused(&p, &["plan", "experiments/b.yaml"], needle);
    }
    p.write("experiments/t.yaml", &format!("name: t\n{TOY_BASE}"));
    refused(
        &p,
        &["run", "experiments/t.yaml", "-j", "-1"],
        "expected a whole number of 1 or more, got `-1`",
    );
    refused(
        &p,
        &["device", "check", "--tolerance", "-1"],
        "expected a number greater than 0, got `-1`",
    );
    refused(
        &p,
        &["device", "check", "--channels", "4000000000"],
        "--channels",
    );
    refused(
        &p,
        &[
            "data",
            "synth",
            "--out",
            "x",
            "--seed",
            "1",
            "--junk",
            "4000000000",
        ],
        "--junk 4000000000: expected at most 100000 images",
    );
    // 16 identities per batch; the toy training set has 12.
    p.write(
        "experiments/p.yaml",
        &format!(
            "name: p\n{}",
            TOY_BASE.replace("batch_size: 16", "batch_size: 64")
        ),
    );
    refused(
        &p,
        &["run", "experiments/p.yaml"],
        "16 identities per batch, but the training set has 12",
    );
    refused(&p, &["diff"], "is not in a git repository");
    refused(&p, &["report", "--paper"], "paper.yaml: no such file");
}

/// Deep nesting is refused in linear time at its line, an alias bomb at its first alias, a dataset named twice or
/// named `.` in datasets.lock at its line, and a FIFO or a device as the lock or the pretrained checkpoint at once,
/// saying what the path is.
#[test]
fn yaml_bombs_duplicate_datasets_and_special_files_are_named() {
    let p = toy("bombs");
    let deep = format!(
        "name: d\n{TOY_BASE}grid:\n  model.gamma: {}{}\n",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    p.write("experiments/deep.yaml", &deep);
    let started = std::time::Instant::now();
    refused(&p, &["plan", "experiments/deep.yaml"], "deep.yaml:7:");
    refused(
        &p,
        &["plan", "experiments/deep.yaml"],
        "nested deeper than 64 levels",
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    let mut bomb = format!("name: b\n{TOY_BASE}grid:\n  model.gamma: &a [1,1,1,1,1,1,1,1,1]\n");
    for (i, (name, prev)) in ["b", "c", "d", "e", "f", "g"]
        .iter()
        .zip(["a", "b", "c", "d", "e", "f"])
        .enumerate()
    {
        bomb.push_str(&format!(
            "  x{i}: &{name} [{}]\n",
            vec![format!("*{prev}"); 9].join(",")
        ));
    }
    p.write("experiments/bomb.yaml", &bomb);
    refused(&p, &["plan", "experiments/bomb.yaml"], "bomb.yaml:8:");
    refused(
        &p,
        &["plan", "experiments/bomb.yaml"],
        "expand to too many values",
    );

    p.write("experiments/t.yaml", &format!("name: t\n{TOY_BASE}"));
    let lock = std::fs::read_to_string(p.path("datasets.lock")).unwrap();
    let entry = &lock[lock.find("  toy:").unwrap()..];
    p.write("twice.lock", &format!("{lock}{entry}"));
    refused(
        &p,
        &["--lock", "twice.lock", "plan", "experiments/t.yaml"],
        "`toy` appears twice in `datasets`",
    );
    p.write("dot.lock", &lock.replace("  toy:", "  .:"));
    refused(
        &p,
        &["--lock", "dot.lock", "plan", "experiments/t.yaml"],
        "not a dataset name",
    );
    refused(
        &p,
        &["--lock", "/dev/zero", "plan", "experiments/t.yaml"],
        "/dev/zero is a character device, not a regular file",
    );
    common::mkfifo(&p.path("pipe"));
    refused(
        &p,
        &["--lock", "pipe", "plan", "experiments/t.yaml"],
        "is a FIFO (named pipe)",
    );
    refused(
        &p,
        &["weights", "inspect", "pipe"],
        "is a FIFO (named pipe)",
    );
    p.write(
        "experiments/w.yaml",
        &format!(
            "name: w\n{}",
            TOY_BASE.replace("head: none}", "head: none, pretrained: pipe}")
        ),
    );
    refused(&p, &["run", "experiments/w.yaml"], "is a FIFO (named pipe)");
}

/// A dataset image that does not decode, locked as it is: the train stage names it and exits 2 (the dataset's
/// fault), not 1.
#[test]
fn an_image_that_does_not_decode_is_bad_input() {
    let p = Project::new("corrupt-image");
    let data = p.synth_toy_on_disk();
    let train = data.join("bounding_box_train");
    let mut images: Vec<_> = std::fs::read_dir(&train)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    images.sort();
    // Every image of one identity: an epoch samples every identity.
    let pid = |p: &std::path::Path| p.file_name().unwrap().to_string_lossy()[..4].to_string();
    for image in images.iter().filter(|i| pid(i) == pid(&images[0])) {
        std::fs::write(image, b"not a jpeg").unwrap();
    }
    p.lock_toy_on_disk();
    p.write("experiments/t.yaml", &format!("name: t\n{TOY_BASE}"));
    refused(
        &p,
        &["run", "experiments/t.yaml"],
        &format!("bounding_box_train/{}", pid(&images[0])),
    );
}

/// A dataset tree with a link that leads nowhere or in a circle, a FIFO named like an image, or a name that is not
/// UTF-8 is refused at `data lock` with exit 2 naming the path (it was exit 1, the reason said twice).
#[test]
fn broken_links_special_files_and_non_utf8_names_in_a_dataset_are_bad_input() {
    use std::os::unix::ffi::OsStrExt;
    let p = Project::new("tree-faults");
    let data = p.synth_toy_on_disk();
    let train = data.join("bounding_box_train");
    let lock = common::LOCK_TOY_ON_DISK;
    let loop_link = train.join("0001_c1s1_000009_00.jpg");
    let cases: [(&dyn Fn() -> std::path::PathBuf, &str); 4] = [
        (
            &|| {
                let link = train.join("0001_c1s1_000099_00.jpg");
                std::os::unix::fs::symlink("/no/such/image.jpg", &link).unwrap();
                link
            },
            "a symbolic link that leads nowhere (No such file or directory (os error 2)); remove",
        ),
        (
            &|| {
                std::os::unix::fs::symlink("0001_c1s1_000009_00.jpg", &loop_link).unwrap();
                loop_link.clone()
            },
            "a symbolic link that leads nowhere (Too many levels of symbolic links (os error 40))",
        ),
        (
            &|| {
                let fifo = train.join("0001_c1s1_000098_00.jpg");
                common::mkfifo(&fifo);
                fifo
            },
            "a FIFO, not a regular file or a folder",
        ),
        (
            &|| {
                let odd = data.join(std::ffi::OsStr::from_bytes(b"notes-\xff.txt"));
                std::fs::write(&odd, b"x").unwrap();
                odd
            },
            "file name is not valid UTF-8",
        ),
    ];
    for (make, needle) in cases {
        let path = make();
        let out = p.mgat(&lock);
        assert_eq!(out.code(), 2, "{}", out.stderr());
        let named = format!("{}: {needle}", path.display());
        assert!(
            out.stderr().contains(&named)
                || (needle.contains("UTF-8") && out.stderr().contains(needle)),
            "expected `{named}` in:\n{}",
            out.stderr()
        );
        assert!(
            out.stderr().matches("(os error").count() <= 1,
            "{}",
            out.stderr()
        );
        assert!(!p.path("datasets.lock").exists(), "a lock was written");
        std::fs::remove_file(&path).unwrap();
    }
}

#[test]
fn a_dataset_named_dot_or_dot_dot_is_refused_and_no_lock_is_written() {
    let p = Project::new("dot-name");
    for name in [".", ".."] {
        let mut args = vec!["data", "lock", name, "--format", "synth"];
        args.extend(TOY_DATA.split(' '));
        refused(&p, &args, "not `.` or `..` alone");
    }
    assert!(!p.path("datasets.lock").exists());
}

/// Runs `mgat ARGS` in `p`, failing the test if it has not ended within 30 s (a read blocked on a FIFO, or reading
/// `/dev/zero` without end).
fn ended_within_30s(p: &Project, args: &[&str]) -> std::process::Output {
    let mut child = p
        .command(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > std::time::Duration::from_secs(30) {
            let _ = child.kill();
            panic!("mgat {args:?} still running after 30 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn files_a_clone_brings_are_refused_when_they_are_fifos_or_devices_not_waited_on_or_read_without_end()
 {
    let p = toy("special-files");
    p.write(
        "experiments/t.yaml",
        &format!("name: t\n{TOY_BASE}seeds: [1]\n"),
    );
    common::mkfifo(&p.path("experiments/f.yaml"));
    let out = ended_within_30s(&p, &["plan", "experiments/f.yaml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("a FIFO"));
    // paper.yaml and a report's keys.json committed as links to /dev/zero.
    p.mgat(&["-q", "run", "experiments/t.yaml"]).success();
    std::os::unix::fs::symlink("/dev/zero", p.path("reports/paper.yaml")).unwrap();
    let out = ended_within_30s(&p, &["report", "--paper"]);
    assert_eq!(out.status.code(), Some(2), "bad input");
    assert!(String::from_utf8_lossy(&out.stderr).contains("a character device"));
    std::fs::remove_file(p.path("reports/t/keys.json")).unwrap();
    std::os::unix::fs::symlink("/dev/zero", p.path("reports/t/keys.json")).unwrap();
    let out = ended_within_30s(&p, &["audit", "experiments/t.yaml"]);
    assert_eq!(out.status.code(), Some(2), "bad input");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("a character device"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
