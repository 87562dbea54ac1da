//! The content-addressed stage cache: `<cache>/<kind>/<key>/` holds a stage's outputs and `manifest.json`.
//!
//! - Stages are computed in `<cache>/<kind>/.partial/<key>/` and renamed into place only when complete, so an entry
//!   that exists was whole when committed; a per-key file lock (`<cache>/<kind>/.locks/<key>.lock`) makes a second
//!   process wait for, then reuse, an entry another process is computing.
//! - An entry is *sound* when its manifest parses, names this kind and key, and every file in the entry is listed
//!   in it with the recorded size and SHA-256 (and nothing else is there). [`Cache::trusted`] checks that before an
//!   entry's outputs are used, through the trust ledger ([`ledger`]), so an entry found sound before costs one
//!   `stat` per folder and file. A damaged entry is moved to `<cache>/.quarantine/` with a warning, and its stage
//!   runs again; nothing damaged is ever read.

pub mod gc;
mod layout;
mod ledger;
pub mod live;
pub mod remote;

pub use layout::CacheBucket;

use crate::data::hash::{FileDigest, StatedTree, hash_tree, hash_tree_known};
use crate::plan::{KeyInputs, StageKey, StageKind};
use crate::provenance::GitState;
use ledger::Ledger;
use mgat_stage::Summary;
use mgat_util::digest::labelled;
use mgat_util::fsio::{self, IoError};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::fs::{File, TryLockError};
use std::path::{Path, PathBuf};

pub const MANIFEST: &str = "manifest.json";

/// One output file of a stage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputFile {
    pub sha256: String,
    pub bytes: u64,
}

/// What a cache entry records about how it was made: written by the executor, read by everything else.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub kind: StageKind,
    pub key: StageKey,
    pub inputs: KeyInputs,
    /// Output files by path relative to the entry, with their sha256.
    pub outputs: BTreeMap<String, OutputFile>,
    pub started: String,
    pub finished: String,
    pub duration_s: f64,
    pub host: String,
    pub device: mgat_stage::DeviceChoice,
    /// The `--devices` slot (0-based position in the list) the stage held, when it ran on a pool.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_slot: Option<usize>,
    pub git: GitState,
    pub mgat_version: String,
    pub summary: Summary,
    /// SHA-256 of the canonical JSON of every other field: a manifest edited or damaged anywhere is detected
    /// without reading its outputs.
    #[serde(default)]
    pub checksum: String,
}

impl Manifest {
    /// The checksum of this manifest's fields (its own `checksum` left out).
    pub fn compute_checksum(&self) -> String {
        let mut value = serde_json::to_value(self).unwrap_or_default();
        if let Some(fields) = value.as_object_mut() {
            fields.remove("checksum");
        }
        mgat_util::digest::sha256_bytes(mgat_util::digest::canonical_json(&value).as_bytes())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error(transparent)]
    Io(#[from] IoError),
    #[error("{} is not a stage cache (no such folder)", .0.display())]
    Missing(PathBuf),
}

/// Why an entry on disk cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Damage {
    #[error("no manifest.json")]
    NoManifest,
    #[error("unreadable manifest: {0}")]
    BadManifest(String),
    #[error("the manifest describes {0}")]
    Elsewhere(String),
    #[error("missing output {0}")]
    Missing(String),
    #[error("{path}: sha256 {found} ({bytes} bytes), the manifest says {expected}")]
    Changed {
        path: String,
        found: String,
        bytes: u64,
        expected: String,
    },
    #[error("unexpected file {0}")]
    Unexpected(String),
    #[error("cannot be read: {0}")]
    Unreadable(String),
    #[error("the folder's name: {0}")]
    Misnamed(String),
}

/// What the cache holds under a key, judged by the manifest alone.
#[derive(Debug)]
pub enum Lookup {
    Absent,
    Present(Box<Manifest>),
    Damaged(Damage),
}

/// A complete entry on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryRef {
    pub kind: String,
    pub key: String,
    pub path: PathBuf,
}

/// An entry or partial directory that no spec references: what `cache gc` removes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Garbage {
    pub kind: StageKind,
    pub key: String,
    pub path: PathBuf,
}

/// A problem `verify` found in an entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Corruption {
    pub entry: EntryRef,
    pub problem: Damage,
}

/// Which entries [`Cache::verify`] re-hashes.
pub enum Verify<'a> {
    /// Every entry, a damaged manifest included.
    All,
    /// The entries with a sound manifest that the function selects.
    Where(&'a (dyn Fn(&Manifest) -> bool + Sync)),
}

/// Held while a process computes (or checks for) one key; released on drop or process death.
#[derive(Debug)]
pub struct KeyLock {
    _file: File,
}

#[derive(Debug, Clone)]
pub struct Cache {
    root: PathBuf,
    /// Entries found sound by this process, with their manifests: entries never change once committed, so each is
    /// read and checked once.
    sound: std::sync::Arc<std::sync::Mutex<HashMap<(StageKind, StageKey), Manifest>>>,
    /// Saved when the last handle is dropped.
    ledger: std::sync::Arc<Ledger>,
    /// Set in processes that compute: every entry they look up or lock becomes a root that gc keeps while they live.
    live: std::sync::Arc<std::sync::OnceLock<live::LiveRoots>>,
}

impl Cache {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        let root = root.into();
        Self {
            ledger: std::sync::Arc::new(Ledger::new(CacheBucket::Stat.dir(&root).join("ledger"))),
            root,
            sound: Default::default(),
            live: Default::default(),
        }
    }

    /// From now on, every entry this process looks up ([`Cache::trusted`]) or locks ([`Cache::lock`]) is a root that
    /// `cache gc` keeps for as long as the process lives.
    pub fn hold_live_roots(&self) -> Result<(), CacheError> {
        if self.live.get().is_none() {
            let _ = self.live.set(live::LiveRoots::register(&self.root)?);
        }
        Ok(())
    }

    /// Makes `(kind, key)` a live root, when this process holds them.
    fn hold(&self, kind: StageKind, key: &StageKey) -> Result<(), CacheError> {
        match self.live.get() {
            Some(live) => live.hold(kind, key),
            None => Ok(()),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// An error unless the cache folder exists (for commands that only read it).
    pub fn require(&self) -> Result<(), CacheError> {
        match self.root.is_dir() {
            true => Ok(()),
            false => Err(CacheError::Missing(self.root.clone())),
        }
    }

    /// The folder of `bucket` in this cache.
    pub fn bucket(&self, bucket: CacheBucket) -> PathBuf {
        bucket.dir(&self.root)
    }

    pub fn entry_dir(&self, kind: StageKind, key: &StageKey) -> PathBuf {
        self.folder(kind, key.as_str())
    }

    /// The entry folder named `name`, which a listing found and which may not be a key.
    fn folder(&self, kind: StageKind, name: &str) -> PathBuf {
        self.bucket(CacheBucket::Entries(kind)).join(name)
    }

    pub fn partial_dir(&self, kind: StageKind, key: &StageKey) -> PathBuf {
        self.bucket(CacheBucket::Partial(kind)).join(key.as_str())
    }

    /// The lock file of the key, or of the folder `name` a listing found.
    fn lock_path(&self, kind: StageKind, name: &str) -> PathBuf {
        self.bucket(CacheBucket::Locks(kind))
            .join(format!("{name}.lock"))
    }

    /// The manifest of an entry, parsed and checked to name this kind and key; outputs are not read.
    pub fn lookup(&self, kind: StageKind, key: &StageKey) -> Lookup {
        let dir = self.entry_dir(kind, key);
        match read_manifest(&dir.join(MANIFEST)) {
            Ok(m) if m.kind == kind && m.key == *key => Lookup::Present(Box::new(m)),
            Ok(m) => Lookup::Damaged(Damage::Elsewhere(format!("{} {}", m.kind.name(), m.key))),
            Err(_) if !dir.exists() => Lookup::Absent,
            Err(damage) => Lookup::Damaged(damage),
        }
    }

    /// What a folder that [`Cache::entries`] listed holds, by its manifest: damaged when its kind or its name is not
    /// one a stage has.
    pub fn lookup_listed(&self, entry: &EntryRef) -> Lookup {
        let Some(kind) = entry.kind() else {
            return Lookup::Damaged(Damage::Elsewhere(format!(
                "an unknown stage kind `{}`",
                entry.kind
            )));
        };
        match StageKey::parse(&entry.key) {
            Ok(key) => self.lookup(kind, &key),
            Err(e) => Lookup::Damaged(Damage::Misnamed(e.to_string())),
        }
    }

    /// Whether a sound-looking entry (by its manifest) exists, without touching anything.
    pub fn contains(&self, kind: StageKind, key: &StageKey) -> bool {
        matches!(self.lookup(kind, key), Lookup::Present(_))
    }

    /// `sha256:…` of output `file` of the entry under `key`, once the entry is found sound ([`Cache::trusted`]:
    /// through the trust ledger, once per process); None when it is absent, damaged or unreadable.
    pub fn output_digest(&self, kind: StageKind, key: &StageKey, file: &str) -> Option<String> {
        let manifest = self.trusted(kind, key).ok().flatten()?;
        manifest.outputs.get(file).map(|o| labelled(&o.sha256))
    }

    /// The entry's manifest once its outputs are checked against it (through the trust ledger). An absent entry is
    /// None; a damaged one is quarantined with a warning and is None too, so that its stage runs again.
    pub fn trusted(&self, kind: StageKind, key: &StageKey) -> Result<Option<Manifest>, CacheError> {
        self.hold(kind, key)?;
        let id = (kind, key.clone());
        if let Some(known) = self.sound.lock().ok().and_then(|s| s.get(&id).cloned()) {
            return Ok(Some(known));
        }
        let previous = match self.ledger.vouch(kind, key, &self.entry_dir(kind, key)) {
            Ok(manifest) => return Ok(Some(self.remember_sound(manifest))),
            Err(previous) => previous,
        };
        let damage = match self.lookup(kind, key) {
            Lookup::Absent => return Ok(None),
            Lookup::Present(m) => match self.check_outputs(&m, &previous) {
                Ok(tree) => {
                    self.ledger.record(&m, &tree);
                    return Ok(Some(self.remember_sound(*m)));
                }
                Err(d) => d,
            },
            Lookup::Damaged(d) => d,
        };
        self.quarantine(kind, key.as_str(), &damage)?;
        Ok(None)
    }

    fn remember_sound(&self, manifest: Manifest) -> Manifest {
        if let Ok(mut s) = self.sound.lock() {
            s.insert((manifest.kind, manifest.key.clone()), manifest.clone());
        }
        manifest
    }

    /// Quarantines the entry under `key` if it is damaged by its manifest alone; says whether one is present after.
    pub fn settle(&self, kind: StageKind, key: &StageKey) -> Result<bool, CacheError> {
        match self.lookup(kind, key) {
            Lookup::Absent => Ok(false),
            Lookup::Present(_) => Ok(true),
            Lookup::Damaged(damage) => {
                self.quarantine(kind, key.as_str(), &damage)?;
                Ok(false)
            }
        }
    }

    /// Compares the files of `manifest`'s entry with its list, listing only folders and hashing only files whose
    /// stat `previous` does not record unchanged; the tree as checked.
    fn check_outputs(
        &self,
        manifest: &Manifest,
        previous: &StatedTree,
    ) -> Result<StatedTree, Damage> {
        let dir = self.entry_dir(manifest.kind, &manifest.key);
        let tree = hash_tree_known(&dir, previous, &|| {})
            .map_err(|e| Damage::Unreadable(e.to_string()))?;
        let files: Vec<&FileDigest> = tree.files.iter().map(|(f, _)| f).collect();
        compare_outputs(&manifest.outputs, &files)?;
        Ok(tree)
    }

    /// Moves the entry folder `name` (a key, or whatever a listing found) to `<cache>/.quarantine/`, with a warning
    /// naming the damage.
    pub fn quarantine(
        &self,
        kind: StageKind,
        name: &str,
        damage: &Damage,
    ) -> Result<PathBuf, CacheError> {
        self.quarantine_folder(kind, name, &self.folder(kind, name), damage)
    }

    /// [`Cache::quarantine`] for an entry as a listing found it: its folder by its real path, whose name may not
    /// even be UTF-8 (`name` is then its lossy spelling, used for the quarantine's name and the ledger).
    pub fn quarantine_listed(
        &self,
        kind: StageKind,
        entry: &EntryRef,
        damage: &Damage,
    ) -> Result<PathBuf, CacheError> {
        self.quarantine_folder(kind, &entry.key, &entry.path, damage)
    }

    fn quarantine_folder(
        &self,
        kind: StageKind,
        name: &str,
        folder: &Path,
        damage: &Damage,
    ) -> Result<PathBuf, CacheError> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let quarantine = self.bucket(CacheBucket::Quarantine);
        let dest = quarantine.join(format!("{}-{name}-{nanos}", kind.name()));
        fsio::create_dir_all(&quarantine)?;
        if let (Ok(key), Ok(mut s)) = (StageKey::parse(name), self.sound.lock()) {
            s.remove(&(kind, key));
        }
        self.ledger.drop_record(kind, name);
        fsio::rename_durable(folder, &dest)?;
        tracing::warn!(
            "{} {}: {damage}; moved to {} (its stage runs again when next needed)",
            kind.name(),
            crate::plan::short(name),
            dest.display()
        );
        Ok(dest)
    }

    /// Takes the key's lock, calling `on_wait` first if another process holds it.
    pub fn lock(
        &self,
        kind: StageKind,
        key: &StageKey,
        on_wait: impl FnOnce(),
    ) -> Result<KeyLock, CacheError> {
        self.hold(kind, key)?;
        let (file, path) = self.lock_file(kind, key.as_str())?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                on_wait();
                file.lock().map_err(IoError::at(&path))?;
            }
            Err(TryLockError::Error(e)) => return Err(IoError::new(&path, e).into()),
        }
        Ok(KeyLock { _file: file })
    }

    /// Hashes the partial directory's files into the manifest, writes it durably, and renames the directory into
    /// place; whatever damaged entry is in the way is quarantined first. The caller holds the key's lock.
    pub fn commit(&self, partial: &Path, mut manifest: Manifest) -> Result<PathBuf, CacheError> {
        let files = hash_tree(partial, None, &|| {})
            .map_err(|e| IoError::new(partial, std::io::Error::other(e.to_string())))?;
        manifest.outputs = files
            .into_iter()
            .filter(|f| f.path != MANIFEST)
            .map(|f| {
                (
                    f.path,
                    OutputFile {
                        sha256: f.sha256,
                        bytes: f.bytes,
                    },
                )
            })
            .collect();
        manifest.checksum = manifest.compute_checksum();
        let manifest_path = partial.join(MANIFEST);
        let text = serde_json::to_string_pretty(&manifest)
            .map_err(|e| IoError::new(&manifest_path, std::io::Error::other(e)))?;
        fsio::write_atomic(&manifest_path, (text + "\n").as_bytes())?;
        let dest = self.entry_dir(manifest.kind, &manifest.key);
        if let Lookup::Damaged(damage) = self.lookup(manifest.kind, &manifest.key) {
            self.quarantine(manifest.kind, manifest.key.as_str(), &damage)?;
        }
        fsio::rename_durable(partial, &dest)?;
        Ok(dest)
    }

    /// Moves a pulled entry from `partial` into place once its files match `manifest` exactly (the check a local
    /// entry gets: every listed file with its size and SHA-256, nothing else); `manifest_text` (the bytes its
    /// signature covers) becomes its `manifest.json`. The caller holds the key's lock. `Ok(Err(_))` says what
    /// differs; nothing is moved then.
    pub fn import(
        &self,
        partial: &Path,
        manifest: &Manifest,
        manifest_text: &[u8],
    ) -> Result<Result<PathBuf, Damage>, CacheError> {
        let files = hash_tree(partial, None, &|| {})
            .map_err(|e| IoError::new(partial, std::io::Error::other(e.to_string())))?;
        let found: Vec<&FileDigest> = files.iter().collect();
        if let Err(damage) = compare_outputs(&manifest.outputs, &found) {
            return Ok(Err(damage));
        }
        fsio::write_atomic(&partial.join(MANIFEST), manifest_text)?;
        let dest = self.entry_dir(manifest.kind, &manifest.key);
        if let Lookup::Damaged(damage) = self.lookup(manifest.kind, &manifest.key) {
            self.quarantine(manifest.kind, manifest.key.as_str(), &damage)?;
        }
        fsio::rename_durable(partial, &dest)?;
        Ok(Ok(dest))
    }

    /// The bytes of an entry's `manifest.json`, as its signature covers them.
    pub fn manifest_text(&self, kind: StageKind, key: &StageKey) -> Result<String, CacheError> {
        let path = self.entry_dir(kind, key).join(MANIFEST);
        crate::inputfile::read_text_bounded(&path, crate::inputfile::limit::CACHE_RECORD)
            .map_err(|e| IoError::new(&path, e).into())
    }

    /// Every entry folder, ordered by kind then key.
    pub fn entries(&self) -> Result<Vec<EntryRef>, CacheError> {
        let mut out = Vec::new();
        for kind in self.kind_names()? {
            let dir = self.root.join(&kind);
            for entry in std::fs::read_dir(&dir)
                .map_err(IoError::at(&dir))?
                .flatten()
            {
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

    /// Re-hashes every entry's files against its manifest (no stat cache): all entries with [`Verify::All`], or
    /// only those whose sound manifest a [`Verify::Where`] selects.
    pub fn verify(
        &self,
        which: Verify<'_>,
        on_entry: &(dyn Fn() + Sync),
    ) -> Result<Vec<Corruption>, CacheError> {
        use rayon::prelude::*;
        let entries = self.entries()?;
        let problems = entries
            .par_iter()
            .filter_map(|entry| {
                let damage = match (self.lookup_listed(entry), &which) {
                    (Lookup::Present(m), Verify::Where(select)) if !select(&m) => return None,
                    (Lookup::Present(m), _) => self.check_outputs(&m, &StatedTree::default()).err(),
                    (Lookup::Damaged(d), Verify::All) => Some(d),
                    (Lookup::Damaged(_), Verify::Where(_)) | (Lookup::Absent, _) => None,
                };
                on_entry();
                damage.map(|problem| Corruption {
                    entry: entry.clone(),
                    problem,
                })
            })
            .collect();
        Ok(problems)
    }

    /// Entries whose (kind, key) `keep` refuses, and partial directories no process is working on.
    pub fn garbage(
        &self,
        keep: &dyn Fn(StageKind, &str) -> bool,
    ) -> Result<Vec<Garbage>, CacheError> {
        let mut out: Vec<Garbage> = self
            .entries()?
            .into_iter()
            .filter_map(|e| {
                let kind = e.kind()?;
                (!keep(kind, &e.key)).then_some(Garbage {
                    kind,
                    key: e.key,
                    path: e.path,
                })
            })
            .collect();
        for kind in StageKind::ALL {
            let Ok(partials) = std::fs::read_dir(self.bucket(CacheBucket::Partial(kind))) else {
                continue;
            };
            for p in partials.flatten() {
                let key = p.file_name().to_string_lossy().into_owned();
                let idle = File::options()
                    .write(true)
                    .open(self.lock_path(kind, &key))
                    .map_or(true, |f| f.try_lock().is_ok());
                if idle {
                    out.push(Garbage {
                        kind,
                        key,
                        path: p.path(),
                    });
                }
            }
        }
        Ok(out)
    }

    /// The key's lock file, created if needed (not locked yet), and its path.
    fn lock_file(&self, kind: StageKind, key: &str) -> Result<(File, PathBuf), CacheError> {
        let path = self.lock_path(kind, key);
        fsio::create_dir_all(&self.bucket(CacheBucket::Locks(kind)))?;
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(IoError::at(&path))?;
        Ok((file, path))
    }

    /// Removes an entry or partial directory [`Cache::garbage`] found, under its key's lock, so that no process
    /// computing or reading that key sees it half removed. False when another process holds the lock (it is kept).
    pub fn remove(&self, garbage: &Garbage) -> Result<bool, CacheError> {
        let (file, path) = self.lock_file(garbage.kind, &garbage.key)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Ok(false),
            Err(TryLockError::Error(e)) => return Err(IoError::new(&path, e).into()),
        }
        self.ledger.drop_record(garbage.kind, &garbage.key);
        fsio::remove_dir_all(&garbage.path)?;
        Ok(true)
    }

    /// The stage kind folders of the cache (hidden folders hold locks, stat caches, file lists and quarantine).
    fn kind_names(&self) -> Result<Vec<String>, CacheError> {
        match std::fs::read_dir(&self.root) {
            Ok(k) => Ok(k
                .flatten()
                .filter(|e| e.path().is_dir())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|name| !CacheBucket::is_hidden(name))
                .collect()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(IoError::new(&self.root, e).into()),
        }
    }

    /// Where the stat cache for a dataset root lives.
    pub fn stat_cache_path(&self, dataset_root: &Path) -> PathBuf {
        let canonical = dataset_root
            .canonicalize()
            .unwrap_or_else(|_| dataset_root.to_path_buf());
        let id = mgat_util::digest::sha256_bytes(canonical.to_string_lossy().as_bytes());
        self.bucket(CacheBucket::Stat)
            .join(format!("{}.tsv", &id[..24]))
    }
}

impl EntryRef {
    /// The stage kind of the entry's folder, if it is one.
    pub fn kind(&self) -> Option<StageKind> {
        StageKind::from_name(&self.kind)
    }
}

fn read_manifest(path: &Path) -> Result<Manifest, Damage> {
    let text =
        match crate::inputfile::read_text_bounded(path, crate::inputfile::limit::CACHE_RECORD) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(Damage::NoManifest),
            Err(e) => return Err(Damage::Unreadable(e.to_string())),
        };
    let manifest: Manifest =
        serde_json::from_str(&text).map_err(|e| Damage::BadManifest(e.to_string()))?;
    match manifest.compute_checksum() == manifest.checksum {
        true => Ok(manifest),
        false => Err(Damage::BadManifest(
            "its checksum does not match its content".into(),
        )),
    }
}

/// The first difference between a manifest's outputs and the files found in its entry.
fn compare_outputs(
    outputs: &BTreeMap<String, OutputFile>,
    files: &[&FileDigest],
) -> Result<(), Damage> {
    let found: BTreeMap<&str, &FileDigest> = files.iter().map(|f| (f.path.as_str(), *f)).collect();
    for (path, expected) in outputs {
        match found.get(path.as_str()) {
            None => return Err(Damage::Missing(path.clone())),
            Some(f) if f.sha256 != expected.sha256 || f.bytes != expected.bytes => {
                return Err(Damage::Changed {
                    path: path.clone(),
                    found: f.sha256.clone(),
                    bytes: f.bytes,
                    expected: expected.sha256.clone(),
                });
            }
            Some(_) => {}
        }
    }
    match files
        .iter()
        .find(|f| f.path != MANIFEST && !outputs.contains_key(&f.path))
    {
        Some(f) => Err(Damage::Unexpected(f.path.clone())),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mgat_data::index::IndexSummary;

    /// The key a test names `name`.
    fn k(name: &str) -> StageKey {
        StageKey::parse(&mgat_util::digest::sha256_bytes(name.as_bytes())).unwrap()
    }

    fn manifest(key: &str) -> Manifest {
        Manifest {
            kind: StageKind::Index,
            key: k(key),
            inputs: KeyInputs::for_tests(StageKind::Index),
            outputs: BTreeMap::new(),
            started: String::new(),
            finished: String::new(),
            duration_s: 0.0,
            host: "h".into(),
            device: mgat_stage::DeviceChoice::Cpu,
            device_slot: None,
            git: GitState {
                commit: None,
                dirty: false,
            },
            mgat_version: "0".into(),
            summary: Summary::of::<mgat_data::stage::Index>(&IndexSummary::default()).unwrap(),
            checksum: String::new(),
        }
    }

    fn committed(cache: &Cache, key: &str) -> PathBuf {
        let partial = cache.partial_dir(StageKind::Index, &k(key));
        std::fs::create_dir_all(partial.join("sub")).unwrap();
        std::fs::write(partial.join("a.json"), b"{}").unwrap();
        std::fs::write(partial.join("sub/b.bin"), b"bytes").unwrap();
        assert!(!cache.contains(StageKind::Index, &k(key)));
        cache.commit(&partial, manifest(key)).unwrap()
    }

    #[test]
    fn commit_makes_a_complete_entry_that_verifies() {
        let dir = mgat_testutil::tempdir();
        let cache = Cache::new(dir.join("c"));
        let entry = committed(&cache, "k1");
        assert!(cache.contains(StageKind::Index, &k("k1")));
        let m = cache.trusted(StageKind::Index, &k("k1")).unwrap().unwrap();
        assert_eq!(
            m.outputs["sub/b.bin"],
            OutputFile {
                sha256: mgat_util::digest::sha256_bytes(b"bytes"),
                bytes: 5
            }
        );
        assert!(cache.verify(Verify::All, &|| {}).unwrap().is_empty());
        std::fs::write(entry.join("sub/b.bin"), b"tampered").unwrap();
        let problems = cache.verify(Verify::All, &|| {}).unwrap();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            matches!(&problems[0].problem, Damage::Changed { path, .. } if path == "sub/b.bin")
        );
    }

    type Damaging = fn(&Path);

    /// Ways to damage an entry made by `committed`, each named by the key it is tried on.
    const DAMAGES: [(&str, Damaging); 7] = [
        ("flipped", |e| {
            std::fs::write(e.join("sub/b.bin"), b"bytez").unwrap()
        }),
        ("deleted-manifest", |e| {
            std::fs::remove_file(e.join(MANIFEST)).unwrap()
        }),
        ("garbage-manifest", |e| {
            std::fs::write(e.join(MANIFEST), b"{not json").unwrap()
        }),
        ("extra", |e| std::fs::write(e.join("extra"), b"").unwrap()),
        ("extra-in-sub", |e| {
            std::fs::write(e.join("sub/extra"), b"").unwrap()
        }),
        ("truncated", |e| {
            std::fs::write(e.join("a.json"), b"{").unwrap()
        }),
        ("deleted", |e| {
            std::fs::remove_file(e.join("a.json")).unwrap()
        }),
    ];

    /// A new process's check of the damaged entry `key` at `entry`: not trusted, and quarantined.
    fn seen_as_damaged(root: &Path, key: &str, entry: &Path) -> Cache {
        let next_process = Cache::new(root);
        assert!(
            next_process
                .trusted(StageKind::Index, &k(key))
                .unwrap()
                .is_none(),
            "{key}"
        );
        assert!(!entry.exists(), "{key}: quarantined");
        next_process
    }

    #[test]
    fn damaged_entries_are_quarantined_and_never_trusted() {
        let dir = mgat_testutil::tempdir();
        let cache = Cache::new(dir.join("c"));
        for (key, damage) in DAMAGES {
            let entry = committed(&cache, key);
            // Checked once, too fresh for the ledger to record: damage made after it (seen by the next process,
            // which has not checked the entry yet) must still be seen.
            assert!(cache.trusted(StageKind::Index, &k(key)).unwrap().is_some());
            damage(&entry);
            let next_process = seen_as_damaged(&dir.join("c"), key, &entry);
            // The next commit of the key finds nothing in its way.
            committed(&next_process, key);
            assert!(
                next_process
                    .trusted(StageKind::Index, &k(key))
                    .unwrap()
                    .is_some(),
                "{key}: recomputed"
            );
        }
        assert_eq!(
            std::fs::read_dir(CacheBucket::Quarantine.dir(&dir.join("c")))
                .unwrap()
                .count(),
            DAMAGES.len()
        );
    }

    /// Sets the mtime of every folder and file under `dir` a minute back, as if written long ago (what is written
    /// within the last 2 s is never recorded in the ledger).
    fn age(dir: &Path) {
        let past = std::time::SystemTime::now() - std::time::Duration::from_secs(60);
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            match path.is_dir() {
                true => age(&path),
                false => File::options()
                    .write(true)
                    .open(&path)
                    .unwrap()
                    .set_modified(past)
                    .unwrap(),
            }
        }
        File::open(dir).unwrap().set_modified(past).unwrap();
    }

    fn ledger_text(root: &Path) -> String {
        std::fs::read_to_string(root.join(".stat/ledger")).unwrap_or_default()
    }

    #[test]
    fn a_recorded_entry_is_trusted_from_its_stats_alone_until_one_changes() {
        let dir = mgat_testutil::tempdir();
        let root = dir.join("c");
        let entry = {
            let cache = Cache::new(&root);
            let entry = committed(&cache, "k");
            assert!(cache.trusted(StageKind::Index, &k("k")).unwrap().is_some());
            entry
        };
        let record = format!("index\t{}\t", k("k"));
        assert!(
            !ledger_text(&root).contains(&record),
            "files written within 2 s are not recorded"
        );
        age(&entry);
        drop(
            Cache::new(&root)
                .trusted(StageKind::Index, &k("k"))
                .unwrap(),
        );
        // A hand edit of the recorded manifest breaks its checksum: the record is not used (a full check, from
        // manifest.json).
        let text = ledger_text(&root);
        assert!(text.contains("\"host\":\"h\""));
        let poison = |text: &str, resealed: bool| {
            let edited = text.lines().map(|line| match line.strip_prefix(&record) {
                Some(json) => {
                    let mut m: Manifest = serde_json::from_str(json).unwrap();
                    m.host = "recorded".into();
                    if resealed {
                        m.checksum = m.compute_checksum();
                    }
                    format!("{record}{}", serde_json::to_string(&m).unwrap())
                }
                None => line.to_string(),
            });
            std::fs::write(
                root.join(".stat/ledger"),
                edited.collect::<Vec<_>>().join("\n") + "\n",
            )
            .unwrap();
        };
        poison(&text, false);
        let checked = Cache::new(&root)
            .trusted(StageKind::Index, &k("k"))
            .unwrap()
            .unwrap();
        assert_eq!(checked.host, "h", "an edited record is not trusted");
        // A record whose checksum holds is used from the stats alone, without reading manifest.json.
        age(&entry);
        drop(
            Cache::new(&root)
                .trusted(StageKind::Index, &k("k"))
                .unwrap(),
        );
        poison(&ledger_text(&root), true);
        let vouched = Cache::new(&root)
            .trusted(StageKind::Index, &k("k"))
            .unwrap()
            .unwrap();
        assert_eq!(vouched.host, "recorded");
        // The same bytes written again change a stat: the record no longer holds, the entry is checked in full and
        // recorded afresh once it is old enough.
        std::fs::write(entry.join("sub/b.bin"), b"bytes").unwrap();
        let checked = Cache::new(&root)
            .trusted(StageKind::Index, &k("k"))
            .unwrap()
            .unwrap();
        assert_eq!(checked.host, "h");
        age(&entry);
        drop(
            Cache::new(&root)
                .trusted(StageKind::Index, &k("k"))
                .unwrap(),
        );
        assert!(ledger_text(&root).contains("\"host\":\"h\""));
    }

    #[test]
    fn damage_to_a_recorded_entry_is_seen_by_the_next_process() {
        let dir = mgat_testutil::tempdir();
        let root = dir.join("c");
        for (key, damage) in DAMAGES {
            let entry = committed(&Cache::new(&root), key);
            age(&entry);
            drop(
                Cache::new(&root)
                    .trusted(StageKind::Index, &k(key))
                    .unwrap(),
            );
            assert!(
                ledger_text(&root).contains(&format!("\t{}\t", k(key))),
                "{key}: recorded"
            );
            damage(&entry);
            drop(seen_as_damaged(&root, key, &entry));
            assert!(
                !ledger_text(&root).contains(&format!("\t{key}\t")),
                "{key}: forgotten"
            );
        }
    }

    #[test]
    fn a_malformed_ledger_costs_a_full_check_and_nothing_else() {
        let dir = mgat_testutil::tempdir();
        let root = dir.join("c");
        let entry = committed(&Cache::new(&root), "k");
        age(&entry);
        drop(
            Cache::new(&root)
                .trusted(StageKind::Index, &k("k"))
                .unwrap(),
        );
        let text = ledger_text(&root);
        let damaged = [
            "garbage".to_string(),
            text.replace("\nd\t", "\nd\tx\t"),
            text.replace("\nf\t", "\nq\t"),
            text[..text.len() / 2].to_string(),
            // A record cut short, its stats holding: it names neither a file of `sub/` nor `sub/` itself.
            text.lines()
                .filter(|l| !l.contains("sub"))
                .map(|l| format!("{l}\n"))
                .collect(),
            text.replace("{\"kind\"", "{\"kind"),
        ];
        for bad in damaged {
            // Were a damaged record trusted, its poisoned host would show.
            let bad = bad.replace("\"host\":\"h\"", "\"host\":\"recorded\"");
            std::fs::write(root.join(".stat/ledger"), &bad).unwrap();
            let m = Cache::new(&root)
                .trusted(StageKind::Index, &k("k"))
                .unwrap();
            assert_eq!(m.map(|m| m.host).as_deref(), Some("h"), "{bad}");
        }
    }

    #[test]
    fn a_damaged_leftover_is_moved_aside_when_its_key_is_committed() {
        let dir = mgat_testutil::tempdir();
        let cache = Cache::new(dir.join("c"));
        let entry = committed(&cache, "k");
        std::fs::remove_file(entry.join(MANIFEST)).unwrap();
        committed(&cache, "k");
        assert!(cache.trusted(StageKind::Index, &k("k")).unwrap().is_some());
    }

    #[test]
    fn garbage_is_unreferenced_entries_and_idle_partials() {
        let dir = mgat_testutil::tempdir();
        let cache = Cache::new(dir.join("c"));
        committed(&cache, "keep");
        committed(&cache, "drop");
        std::fs::create_dir_all(cache.partial_dir(StageKind::Train, &k("idle"))).unwrap();
        std::fs::create_dir_all(cache.partial_dir(StageKind::Train, &k("busy"))).unwrap();
        let held = cache.lock(StageKind::Train, &k("busy"), || {}).unwrap();
        let garbage = cache
            .garbage(&|kind, key| kind == StageKind::Index && key == k("keep").as_str())
            .unwrap();
        let paths: Vec<&PathBuf> = garbage.iter().map(|g| &g.path).collect();
        assert_eq!(
            paths,
            [
                &cache.entry_dir(StageKind::Index, &k("drop")),
                &cache.partial_dir(StageKind::Train, &k("idle"))
            ]
        );
        // Removal takes the key's lock: an entry another process holds is kept.
        let reader = cache.lock(StageKind::Index, &k("drop"), || {}).unwrap();
        assert!(!cache.remove(&garbage[0]).unwrap(), "held by a reader");
        assert!(garbage[0].path.exists());
        drop(reader);
        assert!(cache.remove(&garbage[0]).unwrap());
        assert!(!garbage[0].path.exists());
        drop(held);
    }

    #[test]
    fn a_held_lock_makes_the_second_taker_wait_until_released() {
        let dir = mgat_testutil::tempdir();
        let cache = Cache::new(dir.join("c"));
        let first = cache
            .lock(StageKind::Synth, &k("k"), || panic!("nobody holds it yet"))
            .unwrap();
        let (waiting_tx, waiting_rx) = std::sync::mpsc::channel();
        std::thread::scope(|s| {
            let second = s.spawn(|| {
                cache
                    .lock(StageKind::Synth, &k("k"), || waiting_tx.send(()).unwrap())
                    .unwrap()
            });
            // The second taker reports that it waits; only then is the first lock released.
            waiting_rx.recv().unwrap();
            assert!(
                !second.is_finished(),
                "the second taker got the lock while the first held it"
            );
            drop(first);
            second.join().unwrap();
        });
    }
}
