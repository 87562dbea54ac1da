//! The trust ledger: one file, `<cache>/.stat/ledger`, that remembers every entry this cache found sound, so that
//! checking it again costs one `stat` per folder and file of the entry and nothing else.
//!
//! A record holds the entry's manifest and the stat (size, mtime, inode) of each of its folders and files, with
//! each file's SHA-256, all taken before the files were read and found to match the manifest. While every recorded
//! stat still holds, the entry has the same names (a folder's mtime changes when a name in it is added, removed or
//! renamed) with the same contents (a file's changes when it is written), so it is sound without reading anything;
//! when any stat differs, or the entry is gone, the record is dropped and the entry is checked in full again. This
//! is the trust the dataset stat caches already give, and it has the same limit: a file rewritten with its old
//! size and mtime restored, on purpose, is not noticed (`mgat cache verify` re-hashes everything).
//!
//! Only what was last written 2 s ago or earlier is recorded (a write within the same clock tick keeps its mtime).
//! Changes are kept in memory and merged into the file when the last handle is dropped; two processes saving at
//! once can lose each other's new records, which costs a full check next time, never a wrong answer. The file is
//! line-based: a record is a line `kind<TAB>key<TAB>manifest JSON`, then one line `d<TAB>path<TAB>inode<TAB>size
//! <TAB>mtime_ns` per folder and `f<TAB>…<TAB>sha256` per file; a line that does not parse drops its record.

use super::{MANIFEST, Manifest};
use crate::data::hash::{Stat, StatedTree, settled_before_ns};
use crate::plan::StageKind;
use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

const HEADER: &str = "mgat trust ledger 1\n";

type Id = (StageKind, String);

/// What a stale record knew of an entry's files: (stat, SHA-256) by path relative to the entry.
pub(super) type Known = HashMap<String, (Stat, String)>;

#[derive(Debug)]
pub(super) struct Ledger {
    path: PathBuf,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// The file's records as read (lazily, on first use): each record's text by entry.
    loaded: Option<HashMap<Id, String>>,
    /// Records made by this process, to be merged into the file.
    added: HashMap<Id, String>,
    /// Records this process found stale, to be removed from the file.
    dropped: HashSet<Id>,
}

/// A record parsed: the manifest, and the recorded stats with each file's SHA-256 (None for a folder).
struct Record {
    manifest: Manifest,
    stats: Vec<(String, Stat, Option<String>)>,
}

impl Ledger {
    pub(super) fn new(path: PathBuf) -> Self {
        Ledger {
            path,
            state: Mutex::default(),
        }
    }

    /// The manifest of the entry at `dir` when its record holds: every recorded folder and file has its recorded
    /// stat. Otherwise the record is dropped, and what it knew of files is returned: (stat, SHA-256) by path, so
    /// that the full check reads only files whose stat changed.
    pub(super) fn vouch(&self, kind: StageKind, key: &str, dir: &Path) -> Result<Manifest, Known> {
        let id = (kind, key.to_string());
        let Some(text) = self.with_state(|state| state.record_text(&id)) else {
            return Err(Known::new());
        };
        let record =
            parse_record(&text).filter(|r| r.manifest.kind == kind && r.manifest.key == key);
        let holds = record.as_ref().is_some_and(|r| {
            r.stats.iter().all(|(rel, stat, _)| {
                let path = match rel.is_empty() {
                    true => dir.to_path_buf(),
                    false => dir.join(rel),
                };
                Stat::of(&path).is_ok_and(|now| now == *stat)
            })
        });
        match record {
            Some(record) if holds => Ok(record.manifest),
            record => {
                self.drop_record(kind, key);
                Err(record.map_or_else(Known::new, |r| {
                    r.stats
                        .into_iter()
                        .filter_map(|(rel, stat, sha)| Some((rel, (stat, sha?))))
                        .collect()
                }))
            }
        }
    }

    /// Records an entry just found sound: its manifest and the tree it was checked against. Nothing is recorded
    /// when something in it was written within the last 2 s, or a name holds a tab or a line break.
    pub(super) fn record(&self, manifest: &Manifest, tree: &StatedTree) {
        let settled = settled_before_ns();
        let stats = tree
            .dirs
            .iter()
            .map(|(rel, stat)| (rel.as_str(), stat, None))
            .chain(
                tree.files
                    .iter()
                    .map(|(f, stat)| (f.path.as_str(), stat, Some(f.sha256.as_str()))),
            );
        let mut text = match serde_json::to_string(manifest) {
            Ok(json) => format!("{}\t{}\t{json}\n", manifest.kind.name(), manifest.key),
            Err(_) => return,
        };
        for (rel, stat, sha) in stats {
            if stat.mtime_ns >= settled || rel.contains(['\t', '\n', '\r']) {
                return;
            }
            let _ = match sha {
                None => writeln!(
                    text,
                    "d\t{rel}\t{}\t{}\t{}",
                    stat.inode, stat.size, stat.mtime_ns
                ),
                Some(sha) => writeln!(
                    text,
                    "f\t{rel}\t{}\t{}\t{}\t{sha}",
                    stat.inode, stat.size, stat.mtime_ns
                ),
            };
        }
        let id = (manifest.kind, manifest.key.clone());
        self.with_state(|state| {
            state.dropped.remove(&id);
            state.added.insert(id, text);
        });
    }

    /// Forgets an entry (gone, damaged, or no longer matching its record).
    pub(super) fn drop_record(&self, kind: StageKind, key: &str) {
        let id = (kind, key.to_string());
        self.with_state(|state| {
            state.added.remove(&id);
            state.dropped.insert(id);
        });
    }

    /// Merges this process's changes into the file (read again first, so that records other processes saved in
    /// the meantime are kept). Does nothing when nothing changed; a failed write only costs speed next time.
    pub(super) fn save(&self) {
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        if state.added.is_empty() && state.dropped.is_empty() {
            return;
        }
        let mut records = read_records(&self.path);
        for id in &state.dropped {
            records.remove(id);
        }
        records.extend(state.added.drain());
        state.dropped.clear();
        let mut ids: Vec<&Id> = records.keys().collect();
        ids.sort_unstable_by(|a, b| (a.0.name(), &a.1).cmp(&(b.0.name(), &b.1)));
        let mut out = String::from(HEADER);
        for id in ids {
            out.push_str(&records[id]);
        }
        let _ = crate::fsio::write_atomic(&self.path, out.as_bytes());
        state.loaded = Some(records);
    }

    fn with_state<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        let mut guard = self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if guard.loaded.is_none() {
            guard.loaded = Some(read_records(&self.path));
        }
        f(&mut guard)
    }
}

impl State {
    fn record_text(&self, id: &Id) -> Option<String> {
        if self.dropped.contains(id) {
            return None;
        }
        self.added
            .get(id)
            .or_else(|| self.loaded.as_ref()?.get(id))
            .cloned()
    }
}

impl Drop for Ledger {
    fn drop(&mut self) {
        self.save();
    }
}

/// The file's records by entry (none when it is missing, unreadable or of another format).
fn read_records(path: &Path) -> HashMap<Id, String> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let Some(body) = text.strip_prefix(HEADER) else {
        return HashMap::new();
    };
    let mut records = HashMap::new();
    let mut current: Option<(Id, String)> = None;
    for line in body.split_inclusive('\n') {
        if line.starts_with("d\t") || line.starts_with("f\t") {
            if let Some((_, text)) = current.as_mut() {
                text.push_str(line);
            }
            continue;
        }
        records.extend(current.take());
        let mut fields = line.splitn(3, '\t');
        let kind = fields
            .next()
            .and_then(|k| StageKind::ALL.into_iter().find(|kind| kind.name() == k));
        if let (Some(kind), Some(key), Some(_)) = (kind, fields.next(), fields.next()) {
            current = Some(((kind, key.to_string()), line.to_string()));
        }
    }
    records.extend(current);
    records
}

/// A record's text parsed; None when any line is malformed or the manifest.json stat is missing from it.
fn parse_record(text: &str) -> Option<Record> {
    let mut lines = text.lines();
    let manifest_json = lines.next()?.splitn(3, '\t').nth(2)?;
    let manifest: Manifest = serde_json::from_str(manifest_json).ok()?;
    let mut stats = Vec::new();
    for line in lines {
        let mut f = line.split('\t');
        let (tag, rel) = (f.next()?, f.next()?);
        let stat = Stat {
            inode: f.next()?.parse().ok()?,
            size: f.next()?.parse().ok()?,
            mtime_ns: f.next()?.parse().ok()?,
        };
        let sha = match tag {
            "d" => None,
            "f" => Some(f.next()?.to_string()),
            _ => return None,
        };
        stats.push((rel.to_string(), stat, sha));
    }
    covers(&manifest, &stats).then_some(Record { manifest, stats })
}

/// Whether a record's stats cover the manifest and every output with each folder above it, so that a record cut
/// short cannot vouch for files it does not name.
fn covers(manifest: &Manifest, stats: &[(String, Stat, Option<String>)]) -> bool {
    let files: HashSet<&str> = stats
        .iter()
        .filter(|s| s.2.is_some())
        .map(|s| s.0.as_str())
        .collect();
    let dirs: HashSet<&str> = stats
        .iter()
        .filter(|s| s.2.is_none())
        .map(|s| s.0.as_str())
        .collect();
    std::iter::once(MANIFEST)
        .chain(manifest.outputs.keys().map(String::as_str))
        .all(|path| files.contains(path) && folders_above(path).all(|d| dirs.contains(d)))
}

/// The folders a relative path lies in, from the root ("") down.
fn folders_above(path: &str) -> impl Iterator<Item = &str> {
    std::iter::once("").chain(path.match_indices('/').map(|(i, _)| &path[..i]))
}
