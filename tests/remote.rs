//! End to end through a folder remote: a grid pushed from one project and pulled into another with an empty cache
//! reproduces its report byte for byte computing nothing; a tampered file, an unsigned entry and an untrusted key
//! are refused and named (and nothing of them enters the cache); a record-less push is invisible; an audit compares
//! what it recomputes with the remote's entries; remote gc keeps what specs reference; bad remotes are exit 2.

mod common;

use common::{Project, TOY_BASE, TOY_DATA};
use std::path::Path;

const SPEC: &str = "name: t\ngrid:\n  model.head: [none, mgat]\nseeds: [1]\n";

/// A project with the toy dataset and spec, `mgat` run with `HOME` inside it (so keys go there).
fn project(name: &str) -> Project {
    let p = Project::new(name);
    p.lock_synth("toy", TOY_DATA);
    p.write("experiments/t.yaml", &format!("{TOY_BASE}{SPEC}"));
    p
}

fn mgat(p: &Project, args: &[&str]) -> common::Run {
    common::Run(
        p.command(args)
            .env("HOME", p.path("home"))
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("MGAT_REMOTE")
            .env_remove("MGAT_SIGNING_KEY")
            .output()
            .expect("run mgat"),
    )
}

/// Makes a key in `p`'s home and returns its public line.
fn keygen(p: &Project, name: &str) -> String {
    let out = mgat(p, &["cache", "keygen", name]);
    out.success();
    let stdout = out.stdout();
    let line = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("- "))
        .unwrap();
    line.trim_start().trim_start_matches("- ").to_string()
}

/// A second project with the same spec and lock, an empty cache, and a config trusting `keys`.
fn consumer(from: &Project, name: &str, remote: &Path, keys: &[&str]) -> Project {
    let q = Project::new(name);
    for file in ["datasets.lock", "experiments/t.yaml"] {
        q.write(file, &std::fs::read_to_string(from.path(file)).unwrap());
    }
    let trusted: String = keys.iter().map(|k| format!("  - {k}\n")).collect();
    q.write(
        ".mgat/config.yaml",
        &format!("remote: {}\ntrusted_keys:\n{trusted}", remote.display()),
    );
    q
}

#[test]
fn a_pushed_grid_is_pulled_verified_and_reproduces_the_report_computing_nothing() {
    let p = project("remote-push");
    mgat(&p, &["run", "experiments/t.yaml", "-q"]).success();
    let public = keygen(&p, "lab-1");
    let remote = p.path("remote");
    let pushed = mgat(&p, &["cache", "push", "--remote", remote.to_str().unwrap()]);
    pushed.success();
    assert!(
        pushed.stdout().contains("signed by `lab-1`"),
        "{}",
        pushed.stdout()
    );
    // A second push uploads nothing.
    let again = mgat(&p, &["cache", "push", "--remote", remote.to_str().unwrap()]);
    assert!(
        again.stdout().contains("pushed 0 entries"),
        "{}",
        again.stdout()
    );

    let q = consumer(&p, "remote-pull", &remote, &[&public]);
    let plan = mgat(&q, &["plan", "experiments/t.yaml", "--remote"]);
    plan.success();
    assert!(plan.stdout().contains("on remote"), "{}", plan.stdout());
    let run = mgat(&q, &["run", "experiments/t.yaml"]);
    run.success();
    assert_eq!(run.summary("ran"), 0, "{}", run.stderr());
    for file in ["results.csv", "keys.json", "summary.md"] {
        assert_eq!(
            std::fs::read(q.path("reports/t").join(file)).unwrap(),
            std::fs::read(p.path("reports/t").join(file)).unwrap(),
            "{file}"
        );
    }
    // What was pulled passes the local check too.
    mgat(&q, &["cache", "verify"]).success();
    // An audit recomputes a row from scratch and finds the remote's entries for it identical and signed.
    let audit = mgat(
        &q,
        &[
            "audit",
            "experiments/t.yaml",
            "--sample",
            "1",
            "--remote",
            "-q",
        ],
    );
    audit.success();
    assert!(
        audit.stdout().contains(
            "4 recomputed entries match what it publishes (4 signed by a trusted key), 0 differ"
        ),
        "{}",
        audit.stdout()
    );

    // Remote gc keeps everything the spec references, and an old unreferenced file goes.
    let stray = remote.join("blobs/00/00stray");
    std::fs::create_dir_all(stray.parent().unwrap()).unwrap();
    std::fs::write(&stray, "x").unwrap();
    let gc = mgat(&q, &["cache", "gc", "--remote"]);
    gc.success();
    assert!(
        gc.stdout().contains("0 entries and 0 files"),
        "a fresh file is kept: {}",
        gc.stdout()
    );
    let old = std::fs::File::options().write(true).open(&stray).unwrap();
    old.set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(7200))
        .unwrap();
    let gc = mgat(&q, &["cache", "gc", "--remote", "--yes"]);
    assert!(
        gc.stdout().contains("0 entries and 1 files removed"),
        "{}",
        gc.stdout()
    );
    assert!(!stray.exists());
    mgat(&q, &["cache", "pull"]).success();
}

#[test]
fn tampered_unsigned_and_untrusted_entries_are_refused_and_nothing_of_them_is_imported() {
    let p = project("remote-refuse");
    mgat(&p, &["run", "experiments/t.yaml", "-q", "--until", "train"]).success();
    let public = keygen(&p, "lab-1");
    let signed = p.path("signed");
    mgat(&p, &["cache", "push", "--remote", signed.to_str().unwrap()]).success();
    let unsigned = p.path("unsigned");
    mgat(
        &p,
        &[
            "cache",
            "push",
            "--unsigned",
            "--remote",
            unsigned.to_str().unwrap(),
        ],
    )
    .success();

    // One byte changed in one weights file on the remote.
    let record = common::entries_in(&p.cache_dir(), "train")[0].clone();
    let weights = p
        .cache_dir()
        .join("train")
        .join(&record)
        .join("model.safetensors");
    let digest = mgat_util::digest::sha256_file(&weights).unwrap().0;
    let blob = signed.join("blobs").join(&digest[..2]).join(&digest);
    let mut bytes = std::fs::read(&blob).unwrap();
    bytes[100] ^= 1;
    std::fs::write(&blob, bytes).unwrap();
    let q = consumer(&p, "remote-refuse-q", &signed, &[&public]);
    let pull = mgat(&q, &["cache", "pull"]);
    assert_eq!(pull.code(), 1, "{}", pull.stderr());
    assert!(
        pull.stderr().contains(&format!(
            "train {record}: refused: output model.safetensors"
        )) && pull.stderr().contains("the manifest says"),
        "{}",
        pull.stderr()
    );
    assert!(
        !q.entries("train").contains(&record),
        "the tampered entry is not imported"
    );
    assert!(!q.entries("index").is_empty(), "the sound entries are");
    assert!(!q.cache_dir().join("train/.partial").join(&record).exists());

    // Unsigned: refused unless the user says so; untrusted: the same.
    let q = consumer(&p, "remote-unsigned", &unsigned, &[&public]);
    let pull = mgat(&q, &["cache", "pull"]);
    assert_eq!(pull.code(), 1);
    assert!(
        pull.stderr().contains("it is not signed"),
        "{}",
        pull.stderr()
    );
    assert!(q.entries("train").is_empty());
    mgat(&q, &["cache", "pull", "--trust-unsigned"]).success();
    assert!(!q.entries("train").is_empty());
    let stranger = keygen(&q, "stranger");
    let r = consumer(&p, "remote-untrusted", &p.path("unused"), &[&stranger]);
    let pull = mgat(&r, &["cache", "pull", "--remote", signed.to_str().unwrap()]);
    assert_eq!(pull.code(), 1);
    assert!(
        pull.stderr().contains("signed only by `lab-1`"),
        "{}",
        pull.stderr()
    );
    assert!(r.entries("index").is_empty() && r.entries("train").is_empty());

    // A pull killed halfway left a partial folder: the next pull starts it over and imports a sound entry.
    let q = consumer(&p, "remote-killed-pull", &unsigned, &[]);
    let partial = q.cache_dir().join("train/.partial").join(&record);
    std::fs::create_dir_all(&partial).unwrap();
    std::fs::write(partial.join("model.safetensors"), "half").unwrap();
    mgat(&q, &["cache", "pull", "--trust-unsigned"]).success();
    assert!(q.entries("train").contains(&record));
    mgat(&q, &["cache", "verify"]).success();

    // A remote that refuses a file fails the push, and no entry becomes visible there.
    let refusing = p.path("refusing");
    std::fs::create_dir_all(&refusing).unwrap();
    std::fs::write(refusing.join("mgat-remote.json"), "{\"mgat_remote\": 1}").unwrap();
    std::fs::write(refusing.join("blobs"), "a file where a folder must be").unwrap();
    let push = mgat(
        &p,
        &[
            "cache",
            "push",
            "--unsigned",
            "--remote",
            refusing.to_str().unwrap(),
        ],
    );
    assert_eq!(push.code(), 1, "{}", push.stderr());
    assert!(
        push.stderr().contains("refusing/blobs"),
        "{}",
        push.stderr()
    );
    assert!(!refusing.join("entries").exists());

    // A push killed before its record is written leaves files no pull sees.
    std::fs::remove_dir_all(unsigned.join("entries/train")).unwrap();
    let r = consumer(&p, "remote-killed", &unsigned, &[]);
    let pull = mgat(
        &r,
        &["cache", "pull", "--trust-unsigned", "experiments/t.yaml"],
    );
    pull.success();
    assert!(r.entries("train").is_empty());
}

#[test]
fn bad_remotes_are_exit_2_with_the_reason() {
    let p = Project::new("remote-bad");
    p.lock_synth("toy", TOY_DATA);
    let folder = p.write("not-a-remote/file.txt", "x");
    let cases: [(&[&str], &str); 6] = [
        (
            &["cache", "pull", "--remote", "ftp://host/x"],
            "unknown scheme `ftp://`",
        ),
        (
            &["cache", "pull", "--remote", "s3://"],
            "expected s3://BUCKET/PREFIX",
        ),
        (
            &["cache", "pull", "--remote", "https://u:secret@host/x"],
            "credentials do not belong",
        ),
        (
            &[
                "cache",
                "pull",
                "--remote",
                folder.parent().unwrap().to_str().unwrap(),
            ],
            "is not a mgat remote",
        ),
        (
            &[
                "cache",
                "push",
                "--unsigned",
                "--remote",
                folder.parent().unwrap().to_str().unwrap(),
            ],
            "holds other files",
        ),
        (&["cache", "pull"], "no remote"),
    ];
    for (args, says) in cases {
        let out = mgat(&p, args);
        assert_eq!(out.code(), 2, "{args:?}: {}", out.stderr());
        assert!(out.stderr().contains(says), "{args:?}: {}", out.stderr());
        assert!(!out.stderr().contains("secret@"), "{}", out.stderr());
    }
    // A push without a key says how to make one; a config with a bad key names it.
    let out = mgat(&p, &["cache", "push", "--remote", "elsewhere"]);
    assert_eq!(out.code(), 2);
    assert!(
        out.stderr().contains("mgat cache keygen"),
        "{}",
        out.stderr()
    );
    p.write(".mgat/config.yaml", "trusted_keys: [lab:AAAA]\n");
    let out = mgat(&p, &["cache", "pull", "--remote", "elsewhere"]);
    assert_eq!(out.code(), 2);
    assert!(out.stderr().contains("trusted_keys[0]"), "{}", out.stderr());
}
