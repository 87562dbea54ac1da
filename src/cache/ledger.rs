//! The trust ledger: one file, `<cache>/.stat/ledger`, that remembers every entry this cache found sound, so that
//! checking it again costs one `stat` per folder and file of the entry and nothing else.
//!
//! A record holds the entry's manifest and the stat (size, mtime, ctime, inode, device) of each of its folders and
//! files, with
//! each file's SHA-256, all taken before the files were read and found to match the manifest. While every recorded
//! stat still holds, the entry has the same names (a folder's mtime changes when a name in it is added, removed or
//! renamed) with the same contents (a file's changes when it is written), so it is sound without reading anything;
//! when any stat differs, or the entry is gone, the record is dropped and the entry is checked in full again. This
//! is the trust the dataset stat caches give: a file rewritten in place with its old size and mtime restored
//! (`touch -r`, `cp -p`) has a new ctime, which no ordinary tool sets back, so it is checked again (`mgat cache
//! verify` re-hashes everything regardless). The record's manifest copy is used only while its own checksum holds,
//! so an edited ledger costs a full check and never puts its values into a report.
//!
//! Only what was last written 2 s ago or earlier is recorded (a write within the same clock tick keeps its mtime).
//! Changes are kept in memory and merged into the file when the last handle is dropped; two processes saving at
//! once can lose each other's new records, which costs a full check next time, never a wrong answer. The file is
//! line-based: a record is a line `kind<TAB>key<TAB>manifest JSON`, then the entry's [`StatedTree`] lines (`d…`
//! per folder, `f…` per file); a line that does not parse drops its record.

use super::{MANIFEST, Manifest};
use crate::data::hash::{Stat, StatedTree};
use crate::plan::{StageKey, StageKind};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

const HEADER: &str = "mgat trust ledger 1\n";

type Id = (StageKind, String);

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

/// A record parsed: the manifest and the entry's tree as it was checked.
struct Record {
    manifest: Manifest,
    tree: StatedTree,
}

impl Ledger {
    pub(super) fn new(path: PathBuf) -> Self {
        Ledger {
            path,
            state: Mutex::default(),
        }
    }

    /// The manifest of the entry at `dir` when its record holds: every recorded folder and file has its recorded
    /// stat. Otherwise the record is dropped, and the tree it recorded is returned, so that the full check lists
    /// only folders and reads only files whose stat changed.
    pub(super) fn vouch(
        &self,
        kind: StageKind,
        key: &StageKey,
        dir: &Path,
    ) -> Result<Manifest, StatedTree> {
        let id = (kind, key.to_string());
        let Some(text) = self.with_state(|state| state.record_text(&id)) else {
            return Err(StatedTree::default());
        };
        let record =
            parse_record(&text).filter(|r| r.manifest.kind == kind && r.manifest.key == *key);
        let holds = record.as_ref().is_some_and(|r| {
            let path = |rel: &str| match rel.is_empty() {
                true => dir.to_path_buf(),
                false => dir.join(rel),
            };
            let dirs = r.tree.dirs.iter().map(|(rel, stat)| (rel.as_str(), stat));
            let files = r.tree.files.iter().map(|(f, stat)| (f.path.as_str(), stat));
            dirs.chain(files)
                .all(|(rel, stat)| Stat::of(&path(rel)).is_ok_and(|now| now == *stat))
        });
        let genuine = record
            .as_ref()
            .is_some_and(|r| r.manifest.checksum == r.manifest.compute_checksum());
        match record {
            Some(record) if holds && genuine => Ok(record.manifest),
            record => {
                self.drop_record(kind, key.as_str());
                Err(record.map(|r| r.tree).unwrap_or_default())
            }
        }
    }

    /// Records an entry just found sound: its manifest and the tree it was checked against. Nothing is recorded
    /// unless all of the tree is recordable (nothing written within the last 2 s, no name a line cannot hold).
    pub(super) fn record(&self, manifest: &Manifest, tree: &StatedTree) {
        let recordable = tree.recordable();
        if recordable.dirs.len() != tree.dirs.len() || recordable.files.len() != tree.files.len() {
            return;
        }
        let Ok(json) = serde_json::to_string(manifest) else {
            return;
        };
        let text = format!(
            "{}\t{}\t{json}\n{}",
            manifest.kind.name(),
            manifest.key,
            tree.to_lines()
        );
        let id = (manifest.kind, manifest.key.to_string());
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
        let _ = mgat_util::fsio::write_atomic(&self.path, out.as_bytes());
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
    let text = crate::inputfile::read_text_bounded(path, crate::inputfile::limit::STAT_RECORD)
        .unwrap_or_default();
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

/// A record's text parsed; None when any line is malformed or the tree does not cover the manifest.
fn parse_record(text: &str) -> Option<Record> {
    let (first, tree_lines) = text.split_once('\n')?;
    let manifest: Manifest = serde_json::from_str(first.splitn(3, '\t').nth(2)?).ok()?;
    let tree = StatedTree::parse(tree_lines)?;
    covers(&manifest, &tree).then_some(Record { manifest, tree })
}

/// Whether a recorded tree covers the manifest and every output with each folder above it, so that a record cut
/// short cannot vouch for files it does not name.
fn covers(manifest: &Manifest, tree: &StatedTree) -> bool {
    let files: HashSet<&str> = tree.files.iter().map(|f| f.0.path.as_str()).collect();
    let dirs: HashSet<&str> = tree.dirs.iter().map(|d| d.0.as_str()).collect();
    std::iter::once(MANIFEST)
        .chain(manifest.outputs.keys().map(String::as_str))
        .all(|path| files.contains(path) && folders_above(path).all(|d| dirs.contains(d)))
}

/// The folders a relative path lies in, from the root ("") down.
fn folders_above(path: &str) -> impl Iterator<Item = &str> {
    std::iter::once("").chain(path.match_indices('/').map(|(i, _)| &path[..i]))
}
