//! Roots held by live processes, as Nix keeps temporary roots: an entry that a running `mgat run` has read or is
//! computing is never garbage, whatever spec it came from.
//!
//! A process that computes (`run`, `stage`, `audit`) writes each `(kind, key)` it is about to read or compute to
//! its own file under `.runs/`, and holds that file locked for as long as it lives. `cache gc` takes the
//! collector's lock, keeps every entry a locked run file names, and deletes run files nobody holds (left by a
//! process that died). A run adds a root only while holding the collector's lock shared, and before it looks the
//! entry up, so gc never decides on a set of roots that a run is in the middle of growing.

use super::{CacheBucket, CacheError};
use crate::plan::{StageKey, StageKind};
use mgat_util::fsio::{self, IoError};
use std::collections::HashSet;
use std::fs::{File, TryLockError};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The collector's lock file in the `.runs/` bucket: shared while a run adds a root, exclusive while gc runs.
const COLLECTOR: &str = ".collector";

/// This process's run file: locked for its lifetime, and the roots it has written.
#[derive(Debug)]
pub struct LiveRoots {
    path: PathBuf,
    collector: PathBuf,
    file: Mutex<File>,
    held: Mutex<HashSet<(StageKind, StageKey)>>,
}

impl LiveRoots {
    /// Creates and locks this process's run file under `cache_root`.
    pub fn register(cache_root: &Path) -> Result<Self, CacheError> {
        let dir = CacheBucket::Runs.dir(cache_root);
        fsio::create_dir_all(&dir)?;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let path = dir.join(format!("{}-{nanos}", std::process::id()));
        let file = File::options()
            .create_new(true)
            .append(true)
            .open(&path)
            .map_err(IoError::at(&path))?;
        file.lock().map_err(IoError::at(&path))?;
        Ok(Self {
            collector: dir.join(COLLECTOR),
            path,
            file: Mutex::new(file),
            held: Mutex::default(),
        })
    }

    /// Makes `(kind, key)` a root for as long as this process lives; waits while a gc is deciding.
    pub fn hold(&self, kind: StageKind, key: &StageKey) -> Result<(), CacheError> {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        if held.contains(&(kind, key.clone())) {
            return Ok(());
        }
        let gate = open_collector(&self.collector)?;
        gate.lock_shared().map_err(IoError::at(&self.collector))?;
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        writeln!(file, "{} {}", kind.name(), key.as_str()).map_err(IoError::at(&self.path))?;
        held.insert((kind, key.clone()));
        Ok(())
    }
}

impl Drop for LiveRoots {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn open_collector(path: &Path) -> Result<File, CacheError> {
    Ok(File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(IoError::at(path))?)
}

/// gc's hold on the collector's lock: while it lives, no run adds a root.
pub struct Collector {
    _gate: File,
    /// Every `(kind, key name)` that a live process holds.
    pub live: HashSet<(StageKind, String)>,
}

impl Collector {
    /// Waits for runs adding a root to finish, then reads the roots of every live run and deletes the run files
    /// of processes that have ended.
    pub fn acquire(cache_root: &Path) -> Result<Self, CacheError> {
        let dir = CacheBucket::Runs.dir(cache_root);
        fsio::create_dir_all(&dir)?;
        let collector = dir.join(COLLECTOR);
        let gate = open_collector(&collector)?;
        gate.lock().map_err(IoError::at(&collector))?;
        let mut live = HashSet::new();
        for entry in std::fs::read_dir(&dir)
            .map_err(IoError::at(&dir))?
            .flatten()
        {
            let path = entry.path();
            if entry.file_name() == COLLECTOR {
                continue;
            }
            live.extend(roots_of_live_run(&path)?);
        }
        Ok(Self { _gate: gate, live })
    }
}

/// The roots in run file `path` when its process still holds it; none (and the file removed) when it does not.
fn roots_of_live_run(path: &Path) -> Result<Vec<(StageKind, String)>, CacheError> {
    let Ok(file) = File::options().write(true).open(path) else {
        return Ok(Vec::new());
    };
    match file.try_lock() {
        Ok(()) => {
            let _ = std::fs::remove_file(path);
            return Ok(Vec::new());
        }
        Err(TryLockError::WouldBlock) => {}
        Err(TryLockError::Error(e)) => return Err(IoError::new(path, e).into()),
    }
    let text = crate::inputfile::read_text_bounded(path, crate::inputfile::limit::CACHE_RECORD)
        .map_err(IoError::at(path))?;
    Ok(text
        .lines()
        .filter_map(|line| {
            let (kind, key) = line.split_once(' ')?;
            Some((StageKind::from_name(kind)?, key.to_string()))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> StageKey {
        StageKey::parse(&format!("{n:02x}").repeat(32)).unwrap()
    }

    #[test]
    fn a_live_runs_roots_are_seen_by_gc_and_a_dead_runs_file_is_removed() {
        let root = mgat_testutil::tempdir();
        let run = LiveRoots::register(&root).unwrap();
        run.hold(StageKind::Train, &key(1)).unwrap();
        run.hold(StageKind::Train, &key(1)).unwrap();
        run.hold(StageKind::Eval, &key(2)).unwrap();
        let gc = Collector::acquire(&root).unwrap();
        let want: HashSet<_> = [
            (StageKind::Train, key(1).as_str().to_string()),
            (StageKind::Eval, key(2).as_str().to_string()),
        ]
        .into();
        assert_eq!(gc.live, want);
        drop(gc);
        let file = run.path.clone();
        // A process that died leaves its file unlocked: gc holds nothing for it and removes it.
        std::mem::forget(run);
        let unlocked = std::fs::read(&file).unwrap();
        std::fs::remove_file(&file).unwrap();
        std::fs::write(&file, unlocked).unwrap();
        assert!(Collector::acquire(&root).unwrap().live.is_empty());
        assert!(!file.exists());
    }

    #[test]
    fn a_run_adding_a_root_waits_while_gc_decides() {
        let root = mgat_testutil::tempdir();
        let run = std::sync::Arc::new(LiveRoots::register(&root).unwrap());
        let gc = Collector::acquire(&root).unwrap();
        let adding = {
            let run = run.clone();
            std::thread::spawn(move || run.hold(StageKind::Train, &key(3)).unwrap())
        };
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert!(
            !adding.is_finished(),
            "a root was added while gc held the collector"
        );
        drop(gc);
        adding.join().unwrap();
        assert_eq!(Collector::acquire(&root).unwrap().live.len(), 1);
    }
}
