//! Helpers for the end-to-end tests: temporary project folders and running the `mgat` binary in them.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

/// `mgat data lock` of the toy dataset written by [`Project::synth_toy_on_disk`].
pub const LOCK_TOY_ON_DISK: [&str; 8] = [
    "data",
    "lock",
    "toy",
    "--format",
    "market1501",
    "--root",
    "data/toy",
    "--allow-nonstandard",
];

/// Makes a FIFO (named pipe) at `path`.
pub fn mkfifo(path: &Path) {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: a NUL-terminated path.
    assert_eq!(
        unsafe { libc::mkfifo(c.as_ptr(), 0o644) },
        0,
        "{}",
        path.display()
    );
}

/// A small synthetic dataset (255 files) for tests that train: `p.lock_synth("toy", TOY_DATA)`.
pub const TOY_DATA: &str = "--seed 21 --ids 24 --cameras 3 --images-per-camera 4 --height 64 --width 32 --junk 4 --distractors 6";

/// A spec's `base:` on the toy dataset: a ResNet-18 of width 8 trained for one epoch (about 2 s a stage).
pub const TOY_BASE: &str = "\
base:
  dataset: {name: toy}
  model: {backbone: resnet18, width: 8, bnneck: true, head: none}
  train: {height: 64, width: 32, batch_size: 16, instances: 4, epochs: 1, warmup_epochs: 0, lr: 0.003, schedule: constant, lr_steps: [], pad: 4, random_erasing: 0.0, workers: 2}
";

/// A temporary project folder (removed on drop) with its own cache under `.mgat/cache`.
pub struct Project {
    pub dir: PathBuf,
}

impl Drop for Project {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Project {
    pub fn new(name: &str) -> Project {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("mgat-it-{name}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("experiments")).unwrap();
        Project { dir }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    pub fn write(&self, rel: &str, text: &str) -> PathBuf {
        let path = self.path(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap();
        path
    }

    /// `mgat ARGS` in the project folder.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_mgat"));
        cmd.args(args)
            .current_dir(&self.dir)
            .env_remove("MGAT_CACHE");
        cmd
    }

    pub fn mgat(&self, args: &[&str]) -> Run {
        Run(self.command(args).output().expect("run mgat"))
    }

    /// Locks a synthetic dataset `name` generated with `flags`.
    pub fn lock_synth(&self, name: &str, flags: &str) {
        let mut args = vec!["data", "lock", name, "--format", "synth"];
        args.extend(flags.split_whitespace());
        self.mgat(&args).success();
    }

    /// Writes the toy dataset as files in Market-1501 layout under `data/toy`; returns the folder.
    pub fn synth_toy_on_disk(&self) -> PathBuf {
        let data = self.path("data/toy");
        let mut args = vec!["data", "synth", "--out", data.to_str().unwrap()];
        args.extend(TOY_DATA.split_whitespace());
        self.mgat(&args).success();
        data
    }

    /// Locks `data/toy` as dataset `toy` in Market-1501 format (its sizes are not the release's).
    pub fn lock_toy_on_disk(&self) {
        self.mgat(&LOCK_TOY_ON_DISK).success();
    }

    pub fn cache_dir(&self) -> PathBuf {
        self.dir.join(".mgat/cache")
    }

    /// Complete entries of a stage kind.
    pub fn entries(&self, kind: &str) -> Vec<String> {
        entries_in(&self.cache_dir(), kind)
    }
}

/// Complete entries of a stage kind in the cache at `cache`, sorted.
pub fn entries_in(cache: &Path, kind: &str) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(cache.join(kind)) else {
        return Vec::new();
    };
    let mut keys: Vec<String> = dir
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    keys.sort();
    keys
}

pub struct Run(pub Output);

impl Run {
    pub fn code(&self) -> i32 {
        self.0.status.code().unwrap_or(-1)
    }
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.0.stdout).into_owned()
    }
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.0.stderr).into_owned()
    }
    pub fn success(&self) -> &Self {
        assert_eq!(
            self.code(),
            0,
            "mgat failed\nstdout:\n{}\nstderr:\n{}",
            self.stdout(),
            self.stderr()
        );
        self
    }
    /// The numbers on the `stages: …` summary line, by word (`ran`, `cached`, `reused`, `failed`, `skipped`).
    pub fn summary(&self, word: &str) -> usize {
        let out = self.stdout();
        let line = out
            .lines()
            .find(|l| l.starts_with("stages: "))
            .unwrap_or_else(|| panic!("no summary in:\n{out}"));
        line.trim_start_matches("stages: ")
            .split(", ")
            .find_map(|part| {
                part.strip_suffix(&format!(" {word}"))
                    .map(|n| n.parse().unwrap())
            })
            .unwrap_or_else(|| panic!("no `{word}` in {line}"))
    }
}

/// `git ARGS` in `dir` as a throwaway identity, without signing; fails the test when git does.
pub fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .args(["-c", "user.name=t", "-c", "user.email=t@t"])
        .args(["-c", "commit.gpgsign=false"])
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Files and their sha256 under a folder, for comparing two trees.
pub fn tree(root: &Path) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((
                    p.strip_prefix(root).unwrap().display().to_string(),
                    std::fs::metadata(&p).unwrap().len(),
                ));
            }
        }
    }
    out.sort();
    out
}

/// A spec on dataset `dataset` with a small head × γ grid.
pub fn spec(name: &str, dataset: &str, extra: &str) -> String {
    format!(
        "name: {name}\nbase:\n  dataset: {{name: {dataset}}}\n  model: {{backbone: resnet18, width: 8}}\n  train: {{height: 64, width: 32, batch_size: 16, instances: 4, epochs: 2, warmup_epochs: 0, lr_steps: [1]}}\ngrid:\n  model.head: [none, mgat]\n  model.gamma: [0.5, 2]\nseeds: [1]\n{extra}"
    )
}

pub const SMALL_SYNTH: &str = "--seed 5 --ids 10 --cameras 3 --images-per-camera 2 --height 64 --width 32 --junk 2 --distractors 2";
/// Large enough that generating it takes seconds on 2 cores, so a run can be killed or overlapped mid-stage.
pub const SLOW_SYNTH: &str = "--seed 9 --ids 1600 --cameras 6 --images-per-camera 3 --height 128 --width 64 --junk 50 --distractors 50";
