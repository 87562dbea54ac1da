//! The content-addressed stage cache: `<cache>/<kind>/<key>/` holds a stage's outputs and `manifest.json`. Stages
//! are computed in `<cache>/<kind>/.partial/<key>/` and renamed into place only when complete, so an entry that
//! exists is whole; a per-key file lock (`<cache>/<kind>/.locks/<key>.lock`) makes a second process wait for, then
//! reuse, an entry another process is computing.

use crate::digest::sha256_file;
use crate::provenance::GitState;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, HashSet};
use std::fs::{File, TryLockError};
use std::path::{Path, PathBuf};

pub const MANIFEST: &str = "manifest.json";

/// One output file of a stage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputFile {
    pub sha256: String,
    pub bytes: u64,
}

/// What a cache entry records about how it was made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub kind: String,
    pub key: String,
    /// The key inputs (see `plan::KeyInputs`).
    pub inputs: Value,
    /// Output files by path relative to the entry, with their sha256.
    pub outputs: BTreeMap<String, OutputFile>,
    pub started: String,
    pub finished: String,
    pub duration_s: f64,
    pub host: String,
    pub device: String,
    pub git: GitState,
    pub mgat_version: String,
    /// Stage-specific figures (counts, timings) for reports.
    pub summary: Value,
}

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: unreadable manifest: {message}")]
    BadManifest { path: PathBuf, message: String },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> CacheError + '_ {
    move |source| CacheError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A complete entry on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryRef {
    pub kind: String,
    pub key: String,
    pub path: PathBuf,
}

/// A problem `verify` found in an entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Corruption {
    pub entry: EntryRef,
    pub problem: String,
}

/// Held while a process computes (or checks for) one key; released on drop or process death.
#[derive(Debug)]
pub struct KeyLock {
    _file: File,
}

#[derive(Debug, Clone)]
pub struct Cache {
    root: PathBuf,
}

impl Cache {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn entry_dir(&self, kind: &str, key: &str) -> PathBuf {
        self.root.join(kind).join(key)
    }

    pub fn partial_dir(&self, kind: &str, key: &str) -> PathBuf {
        self.root.join(kind).join(".partial").join(key)
    }

    /// Whether a complete entry exists (renamed into place, so its manifest is there).
    pub fn contains(&self, kind: &str, key: &str) -> bool {
        self.entry_dir(kind, key).join(MANIFEST).is_file()
    }

    /// Takes the key's lock, calling `on_wait` first if another process holds it.
    pub fn lock(
        &self,
        kind: &str,
        key: &str,
        on_wait: impl FnOnce(),
    ) -> Result<KeyLock, CacheError> {
        let dir = self.root.join(kind).join(".locks");
        std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let path = dir.join(format!("{key}.lock"));
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(io_err(&path))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                on_wait();
                file.lock().map_err(io_err(&path))?;
            }
            Err(TryLockError::Error(e)) => return Err(io_err(&path)(e)),
        }
        Ok(KeyLock { _file: file })
    }

    /// Hashes the partial directory's files into the manifest, writes it, and renames the directory into place.
    /// The caller holds the key's lock.
    pub fn commit(&self, partial: &Path, mut manifest: Manifest) -> Result<PathBuf, CacheError> {
        manifest.outputs = hash_outputs(partial)?;
        let manifest_path = partial.join(MANIFEST);
        let text = serde_json::to_string_pretty(&manifest)
            .map_err(|e| io_err(&manifest_path)(e.into()))?;
        std::fs::write(&manifest_path, text + "\n").map_err(io_err(&manifest_path))?;
        File::open(&manifest_path)
            .and_then(|f| f.sync_all())
            .map_err(io_err(&manifest_path))?;
        let dest = self.entry_dir(&manifest.kind, &manifest.key);
        std::fs::rename(partial, &dest).map_err(io_err(&dest))?;
        Ok(dest)
    }

    pub fn manifest(&self, kind: &str, key: &str) -> Result<Manifest, CacheError> {
        read_manifest(&self.entry_dir(kind, key).join(MANIFEST))
    }

    /// Every complete entry, ordered by kind then key.
    pub fn entries(&self) -> Result<Vec<EntryRef>, CacheError> {
        let mut out = Vec::new();
        for kind in self.kind_names()? {
            let dir = self.root.join(&kind);
            for entry in std::fs::read_dir(&dir).map_err(io_err(&dir))?.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if !name.starts_with('.') && entry.path().is_dir() {
                    out.push(EntryRef {
                        kind: kind.clone(),
                        key: name,
                        path: entry.path(),
                    });
                }
            }
        }
        out.sort_by(|a, b| (&a.kind, &a.key).cmp(&(&b.kind, &b.key)));
        Ok(out)
    }

    /// Re-hashes every entry's outputs against its manifest.
    pub fn verify(&self, on_entry: &(dyn Fn() + Sync)) -> Result<Vec<Corruption>, CacheError> {
        use rayon::prelude::*;
        let entries = self.entries()?;
        let problems = entries
            .par_iter()
            .flat_map(|entry| {
                let found = verify_entry(entry);
                on_entry();
                found
                    .into_iter()
                    .map(|problem| Corruption {
                        entry: entry.clone(),
                        problem,
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        Ok(problems)
    }

    /// Entries whose (kind, key) is not in `keep`, and partial directories no process is working on.
    pub fn garbage(&self, keep: &HashSet<(String, String)>) -> Result<Vec<PathBuf>, CacheError> {
        let mut out: Vec<PathBuf> = self
            .entries()?
            .into_iter()
            .filter(|e| !keep.contains(&(e.kind.clone(), e.key.clone())))
            .map(|e| e.path)
            .collect();
        for kind in self.kind_names()? {
            let partial_root = self.root.join(&kind).join(".partial");
            let Ok(partials) = std::fs::read_dir(&partial_root) else {
                continue;
            };
            for p in partials.flatten() {
                let key = p.file_name().to_string_lossy().into_owned();
                let lock_path = self
                    .root
                    .join(&kind)
                    .join(".locks")
                    .join(format!("{key}.lock"));
                let idle = File::options()
                    .write(true)
                    .open(&lock_path)
                    .map_or(true, |f| f.try_lock().is_ok());
                if idle {
                    out.push(p.path());
                }
            }
        }
        Ok(out)
    }

    /// The stage kind folders of the cache (hidden folders hold locks, stat caches and file lists).
    fn kind_names(&self) -> Result<Vec<String>, CacheError> {
        match std::fs::read_dir(&self.root) {
            Ok(k) => Ok(k
                .flatten()
                .filter(|e| e.path().is_dir())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|name| !name.starts_with('.'))
                .collect()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(io_err(&self.root)(e)),
        }
    }

    /// Where the stat cache for a dataset root lives.
    pub fn stat_cache_path(&self, dataset_root: &Path) -> PathBuf {
        let canonical = dataset_root
            .canonicalize()
            .unwrap_or_else(|_| dataset_root.to_path_buf());
        let id = crate::digest::sha256_bytes(canonical.to_string_lossy().as_bytes());
        self.root.join(".stat").join(format!("{}.tsv", &id[..24]))
    }
}

fn read_manifest(path: &Path) -> Result<Manifest, CacheError> {
    let text = std::fs::read_to_string(path).map_err(io_err(path))?;
    serde_json::from_str(&text).map_err(|e| CacheError::BadManifest {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

fn hash_outputs(dir: &Path) -> Result<BTreeMap<String, OutputFile>, CacheError> {
    use rayon::prelude::*;
    let mut files = Vec::new();
    for entry in walkdir::WalkDir::new(dir).sort_by_file_name() {
        let entry = entry.map_err(|e| io_err(dir)(e.into()))?;
        if entry.file_type().is_file() {
            let rel = entry
                .path()
                .strip_prefix(dir)
                .unwrap_or(entry.path())
                .to_string_lossy()
                .replace('\\', "/");
            if rel != MANIFEST {
                files.push((rel, entry.into_path()));
            }
        }
    }
    files
        .par_iter()
        .map(|(rel, path)| {
            let (sha256, bytes) = sha256_file(path).map_err(io_err(path))?;
            Ok((rel.clone(), OutputFile { sha256, bytes }))
        })
        .collect()
}

fn verify_entry(entry: &EntryRef) -> Vec<String> {
    let manifest = match read_manifest(&entry.path.join(MANIFEST)) {
        Ok(m) => m,
        Err(e) => return vec![e.to_string()],
    };
    let actual = match hash_outputs(&entry.path) {
        Ok(a) => a,
        Err(e) => return vec![e.to_string()],
    };
    let mut problems = Vec::new();
    if manifest.kind != entry.kind || manifest.key != entry.key {
        problems.push(format!(
            "manifest says {} {}, entry is {} {}",
            manifest.kind, manifest.key, entry.kind, entry.key
        ));
    }
    for (path, expected) in &manifest.outputs {
        match actual.get(path) {
            None => problems.push(format!("missing output {path}")),
            Some(found) if found != expected => problems.push(format!(
                "{path}: sha256 {} (manifest: {})",
                found.sha256, expected.sha256
            )),
            Some(_) => {}
        }
    }
    problems.extend(
        actual
            .keys()
            .filter(|p| !manifest.outputs.contains_key(*p))
            .map(|p| format!("unexpected file {p}")),
    );
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(kind: &str, key: &str) -> Manifest {
        Manifest {
            kind: kind.into(),
            key: key.into(),
            inputs: Value::Null,
            outputs: BTreeMap::new(),
            started: String::new(),
            finished: String::new(),
            duration_s: 0.0,
            host: "h".into(),
            device: "cpu".into(),
            git: GitState {
                commit: None,
                dirty: false,
            },
            mgat_version: "0".into(),
            summary: Value::Null,
        }
    }

    fn committed(cache: &Cache, key: &str) -> PathBuf {
        let partial = cache.partial_dir("index", key);
        std::fs::create_dir_all(partial.join("sub")).unwrap();
        std::fs::write(partial.join("a.json"), b"{}").unwrap();
        std::fs::write(partial.join("sub/b.bin"), b"bytes").unwrap();
        assert!(!cache.contains("index", key));
        cache.commit(&partial, manifest("index", key)).unwrap()
    }

    #[test]
    fn commit_makes_a_complete_entry_that_verifies() {
        let dir = crate::testutil::tempdir();
        let cache = Cache::new(dir.join("c"));
        let entry = committed(&cache, "k1");
        assert!(cache.contains("index", "k1"));
        let m = cache.manifest("index", "k1").unwrap();
        assert_eq!(
            m.outputs["sub/b.bin"],
            OutputFile {
                sha256: crate::digest::sha256_bytes(b"bytes"),
                bytes: 5
            }
        );
        assert!(cache.verify(&|| {}).unwrap().is_empty());
        std::fs::write(entry.join("sub/b.bin"), b"tampered").unwrap();
        std::fs::write(entry.join("extra"), b"").unwrap();
        let problems: Vec<String> = cache
            .verify(&|| {})
            .unwrap()
            .into_iter()
            .map(|c| c.problem)
            .collect();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].starts_with("sub/b.bin: sha256"));
        assert_eq!(problems[1], "unexpected file extra");
    }

    #[test]
    fn garbage_is_unreferenced_entries_and_idle_partials() {
        let dir = crate::testutil::tempdir();
        let cache = Cache::new(dir.join("c"));
        committed(&cache, "keep");
        committed(&cache, "drop");
        std::fs::create_dir_all(cache.partial_dir("train", "idle")).unwrap();
        std::fs::create_dir_all(cache.partial_dir("train", "busy")).unwrap();
        let _held = cache.lock("train", "busy", || {}).unwrap();
        let keep = HashSet::from([("index".to_string(), "keep".to_string())]);
        let mut garbage = cache.garbage(&keep).unwrap();
        garbage.sort();
        assert_eq!(
            garbage,
            [
                cache.entry_dir("index", "drop"),
                cache.partial_dir("train", "idle")
            ]
        );
    }

    #[test]
    fn a_held_lock_makes_the_second_taker_wait() {
        let dir = crate::testutil::tempdir();
        let cache = Cache::new(dir.join("c"));
        let first = cache
            .lock("synth", "k", || panic!("nobody holds it yet"))
            .unwrap();
        let waited = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|s| {
            let handle = s.spawn(|| {
                cache
                    .lock("synth", "k", || {
                        waited.store(true, std::sync::atomic::Ordering::SeqCst)
                    })
                    .unwrap()
            });
            std::thread::sleep(std::time::Duration::from_millis(100));
            drop(first);
            handle.join().unwrap();
        });
        assert!(waited.load(std::sync::atomic::Ordering::SeqCst));
    }
}
