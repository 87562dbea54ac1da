//! Each stage kind's code fingerprint covers exactly its compute crates: checked against the crate graph as
//! `cargo metadata` reports it (an independent reading of the manifests) and the source files on disk. A compute
//! crate's file or dependency missing from its kind's fingerprint fails here.

use mgat::plan::StageKind;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn metadata() -> Value {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = std::process::Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(ROOT)
        .output()
        .expect("run cargo metadata");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("cargo metadata prints JSON")
}

/// Workspace crates under `crates/`: name → (folder, normal dependencies as (name, is a path crate)).
fn compute_crates(meta: &Value) -> BTreeMap<String, (PathBuf, Vec<(String, bool)>)> {
    let mut out = BTreeMap::new();
    for p in meta["packages"].as_array().unwrap() {
        let manifest = PathBuf::from(p["manifest_path"].as_str().unwrap());
        let dir = manifest.parent().unwrap().to_path_buf();
        if !dir.starts_with(Path::new(ROOT).join("crates")) {
            continue;
        }
        let deps = p["dependencies"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["kind"].is_null())
            .map(|d| {
                (
                    d["name"].as_str().unwrap().to_string(),
                    d["path"].is_string(),
                )
            })
            .collect();
        out.insert(p["name"].as_str().unwrap().to_string(), (dir, deps));
    }
    out
}

/// Every `.rs` file under `dir`, repo-relative.
fn rust_files(dir: &Path, out: &mut BTreeSet<String>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let rel = path.strip_prefix(ROOT).unwrap();
            out.insert(rel.to_string_lossy().into_owned());
        }
    }
}

/// Whether `file` is a module declared only for tests (`#[cfg(test)]` on its `mod` line in the parent).
fn test_only(file: &str) -> bool {
    let path = Path::new(ROOT).join(file);
    let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
    let dir = path.parent().unwrap();
    let parents = [
        dir.with_extension("rs"),
        dir.join("mod.rs"),
        dir.join("lib.rs"),
    ];
    parents
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .any(|text| text.contains(&format!("#[cfg(test)]\nmod {stem};")))
}

#[test]
fn every_compute_source_and_dependency_is_in_its_kinds_fingerprint() {
    let crates = compute_crates(&metadata());
    let roots = [
        (StageKind::Synth, "mgat-synth"),
        (StageKind::Index, "mgat-data"),
        (StageKind::Train, "mgat-train"),
        (StageKind::Eval, "mgat-eval"),
    ];
    for (kind, root) in roots {
        let code = kind.code();
        let mut closure = BTreeSet::new();
        let mut todo = vec![root.to_string()];
        while let Some(name) = todo.pop() {
            if closure.insert(name.clone()) {
                todo.extend(
                    crates[&name]
                        .1
                        .iter()
                        .filter(|(_, path)| *path)
                        .map(|(n, _)| n.clone()),
                );
            }
        }
        let listed: BTreeSet<&str> = code.crates.iter().copied().collect();
        let expected: BTreeSet<&str> = closure.iter().map(String::as_str).collect();
        assert_eq!(
            listed,
            expected,
            "{} covers the crates of its closure",
            kind.name()
        );
        let files: BTreeSet<&str> = code.files.iter().copied().collect();
        let externals: BTreeSet<&str> = code
            .external
            .iter()
            .filter_map(|l| l.split(' ').next())
            .collect();
        for name in &closure {
            let (dir, deps) = &crates[name];
            let mut sources = BTreeSet::new();
            rust_files(&dir.join("src"), &mut sources);
            for file in sources.iter().filter(|f| !test_only(f)) {
                assert!(
                    files.contains(file.as_str()),
                    "{file} is missing from {}'s fingerprint",
                    kind.name()
                );
            }
            for (dep, _) in deps.iter().filter(|(_, path)| !path) {
                assert!(
                    externals.contains(dep.as_str()),
                    "{name}'s dependency {dep} is missing from {}'s fingerprint",
                    kind.name()
                );
            }
        }
        assert!(
            files.iter().all(|f| f.starts_with("crates/")),
            "{}'s fingerprint covers no orchestration code",
            kind.name()
        );
    }
    assert!(
        !StageKind::Train.code().crates.contains(&"mgat-eval")
            && !StageKind::Eval.code().crates.contains(&"mgat-train")
            && !StageKind::Train.code().crates.contains(&"mgat-synth"),
        "train and eval compile neither each other nor the generator"
    );
}

#[test]
fn the_fingerprint_command_lists_each_kind_with_its_files() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mgat"))
        .args(["fingerprint", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    for kind in StageKind::ALL {
        let entry = &json[kind.name()];
        assert_eq!(entry["fingerprint"].as_str(), Some(kind.fingerprint()));
        let files: Vec<&str> = entry["files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f.as_str().unwrap())
            .collect();
        assert_eq!(files, kind.code().files);
    }
    let fingerprints: BTreeSet<&str> = StageKind::ALL.iter().map(|k| k.fingerprint()).collect();
    assert_eq!(fingerprints.len(), 4, "one fingerprint per kind");
}
