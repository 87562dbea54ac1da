//! The five operations a remote's storage offers (get, put, exists, list, delete), behind one trait, and the
//! folder remote that implements them with the file system (an NFS mount, a synced drive). Paths inside a remote
//! are `/`-separated and made by [`super::layout`] only. A put is atomic: a reader sees the whole object or none.

use std::io::Write;
use std::path::{Path, PathBuf};

/// Why storage could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The remote did not answer, or answered with a server error or a timeout: a run computes locally instead.
    #[error("{remote}: cannot be reached: {reason}")]
    Unreachable { remote: String, reason: String },
    /// The remote answered and refused (no permission, full, read-only).
    #[error("{remote}: {path}: refused: {reason}")]
    Refused {
        remote: String,
        path: String,
        reason: String,
    },
    #[error("{remote} is read-only (an https:// remote serves pulls only)")]
    ReadOnly { remote: String },
    #[error("{remote}: {path} is larger than the {limit} bytes it may be")]
    TooLarge {
        remote: String,
        path: String,
        limit: u64,
    },
    #[error("{remote} cannot list its objects ({what}); name the specs whose entries you want")]
    CannotList { remote: String, what: String },
    #[error("writing what {remote} sent: {error}")]
    Local {
        remote: String,
        error: mgat_util::fsio::IoError,
    },
}

/// What a remote's storage can do. Implementations never put credentials in their errors or `describe`.
pub trait Store: Send + Sync {
    /// The remote as it may be shown to a user: its URL without credentials.
    fn describe(&self) -> &str;
    /// Copies the object at `path` into `dest`, refusing it once more than `limit` bytes arrive; `Ok(false)` when
    /// there is no such object.
    fn get(&self, path: &str, limit: u64, dest: &mut dyn Write) -> Result<bool, StoreError>;
    /// Stores the file `source` at `path`, atomically.
    fn put_file(&self, path: &str, source: &Path) -> Result<(), StoreError>;
    /// Stores `bytes` at `path`, atomically.
    fn put_bytes(&self, path: &str, bytes: &[u8]) -> Result<(), StoreError>;
    fn exists(&self, path: &str) -> Result<bool, StoreError>;
    /// Every object under `prefix` (a folder path ending in `/`, or empty for all), sorted by path.
    fn list(&self, prefix: &str) -> Result<Vec<Listed>, StoreError>;
    /// Removes the object at `path`; one that is not there is fine.
    fn delete(&self, path: &str) -> Result<(), StoreError>;
}

/// One object a listing found.
#[derive(Debug, Clone, PartialEq)]
pub struct Listed {
    pub path: String,
    /// When it was last written, when the storage says.
    pub modified: Option<std::time::SystemTime>,
}

/// Copies `source` into `dest`, at most `limit` bytes; false if there were more.
pub fn copy_bounded(
    source: &mut dyn std::io::Read,
    dest: &mut dyn Write,
    limit: u64,
) -> std::io::Result<bool> {
    let copied = std::io::copy(&mut std::io::Read::take(source, limit + 1), dest)?;
    Ok(copied <= limit)
}

/// A remote in a folder. Objects are written to `.tmp/` beside them and renamed into place.
pub struct FolderStore {
    root: PathBuf,
    shown: String,
}

impl FolderStore {
    pub fn new(root: PathBuf) -> FolderStore {
        FolderStore {
            shown: root.display().to_string(),
            root,
        }
    }

    fn path(&self, path: &str) -> PathBuf {
        self.root.join(path)
    }

    fn io(&self, path: &Path, error: std::io::Error) -> StoreError {
        use std::io::ErrorKind::*;
        match error.kind() {
            PermissionDenied | ReadOnlyFilesystem | StorageFull | QuotaExceeded => {
                StoreError::Refused {
                    remote: self.shown.clone(),
                    path: path.display().to_string(),
                    reason: error.to_string(),
                }
            }
            _ => StoreError::Unreachable {
                remote: self.shown.clone(),
                reason: format!("{}: {error}", path.display()),
            },
        }
    }

    /// Writes into a fresh temporary file under `.tmp/`, then renames it to `path`.
    fn put_with(
        &self,
        path: &str,
        write: impl FnOnce(&mut std::fs::File) -> std::io::Result<()>,
    ) -> Result<(), StoreError> {
        let dest = self.path(path);
        let tmp_dir = self.root.join(".tmp");
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let tmp = tmp_dir.join(format!("{}-{nanos}", std::process::id()));
        let result = std::fs::create_dir_all(&tmp_dir)
            .and_then(|()| std::fs::File::create(&tmp))
            .and_then(|mut file| {
                write(&mut file)?;
                file.sync_all()
            })
            .and_then(|()| match dest.parent() {
                Some(parent) => std::fs::create_dir_all(parent),
                None => Ok(()),
            })
            .and_then(|()| std::fs::rename(&tmp, &dest));
        if let Err(e) = result {
            let _ = std::fs::remove_file(&tmp);
            return Err(self.io(&dest, e));
        }
        mgat_util::fsio::sync_parent(&dest).map_err(|e| self.io(&dest, e.error))
    }
}

impl Store for FolderStore {
    fn describe(&self) -> &str {
        &self.shown
    }

    fn get(&self, path: &str, limit: u64, dest: &mut dyn Write) -> Result<bool, StoreError> {
        let full = self.path(path);
        let mut file = match mgat_util::fsio::open_regular(&full) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(self.io(&full, e)),
        };
        match copy_bounded(&mut file, dest, limit) {
            Ok(true) => Ok(true),
            Ok(false) => Err(StoreError::TooLarge {
                remote: self.shown.clone(),
                path: path.to_string(),
                limit,
            }),
            Err(e) => Err(self.io(&full, e)),
        }
    }

    fn put_file(&self, path: &str, source: &Path) -> Result<(), StoreError> {
        self.put_with(path, |file| {
            let mut from = mgat_util::fsio::open_regular(source)?;
            std::io::copy(&mut from, file).map(|_| ())
        })
    }

    fn put_bytes(&self, path: &str, bytes: &[u8]) -> Result<(), StoreError> {
        self.put_with(path, |file| file.write_all(bytes))
    }

    fn exists(&self, path: &str) -> Result<bool, StoreError> {
        Ok(self.path(path).is_file())
    }

    fn list(&self, prefix: &str) -> Result<Vec<Listed>, StoreError> {
        let start = self.path(prefix);
        if !start.exists() {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        for entry in walkdir::WalkDir::new(&start).sort_by_file_name() {
            let entry = entry.map_err(|e| StoreError::Unreachable {
                remote: self.shown.clone(),
                reason: e.to_string(),
            })?;
            let relative = entry
                .path()
                .strip_prefix(&self.root)
                .unwrap_or(entry.path());
            let text = relative.to_string_lossy().into_owned();
            if entry.file_type().is_file() && !text.starts_with(".tmp/") {
                out.push(Listed {
                    path: text,
                    modified: entry.metadata().ok().and_then(|m| m.modified().ok()),
                });
            }
        }
        Ok(out)
    }

    fn delete(&self, path: &str) -> Result<(), StoreError> {
        let full = self.path(path);
        match std::fs::remove_file(&full) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(self.io(&full, e)),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_folder_store_puts_atomically_gets_within_a_bound_and_lists_what_it_holds() {
        let tmp = mgat_testutil::tempdir();
        let dir = tmp.to_path_buf();
        let store = FolderStore::new(dir.clone());
        store.put_bytes("a/b/c.json", b"hello").unwrap();
        let mut got = Vec::new();
        assert!(store.get("a/b/c.json", 5, &mut got).unwrap());
        assert_eq!(got, b"hello");
        assert!(matches!(
            store.get("a/b/c.json", 4, &mut Vec::new()),
            Err(StoreError::TooLarge { limit: 4, .. })
        ));
        assert!(!store.get("missing", 10, &mut Vec::new()).unwrap());
        let listed = store.list("").unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].path, "a/b/c.json");
        assert!(listed[0].modified.is_some());
        assert!(store.list("a/").unwrap().len() == 1 && store.list("z/").unwrap().is_empty());
        // Nothing is left in .tmp/ once a put is done.
        assert_eq!(std::fs::read_dir(dir.join(".tmp")).unwrap().count(), 0);
        store.delete("a/b/c.json").unwrap();
        store.delete("a/b/c.json").unwrap();
        assert!(!store.exists("a/b/c.json").unwrap());
    }
}
