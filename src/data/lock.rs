//! `datasets.lock`: the pinned identity of every dataset a spec may name (format, root, file count, bytes, and a
//! digest over every file's path, size and sha256). The per-file list behind each digest is kept in the cache
//! (`<cache>/.file-lists/NAME/DIGEST.tsv`), so that a mismatch can name each added, removed or changed file.

use super::hash::{FileDigest, tree_digest};
use crate::yamlpos::{Pos, PosIndex, split_serde_error};
use mgat_data::Format;
use mgat_synth::SynthParams;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockEntry {
    pub format: Format,
    /// Dataset root: a path relative to the lock file's folder, an absolute path, or `${ENV_VAR}` forms. Absent for
    /// synthetic datasets, which are generated from `synth`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub synth: Option<SynthParams>,
    pub files: u64,
    pub bytes: u64,
    pub digest: String,
    /// The official release whose split sizes the tree has (`Market-1501`, `CUHK03-NP detected`, …), or
    /// [`NONSTANDARD`] when it was locked with `--allow-nonstandard`. Absent for synthetic data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<String>,
}

/// `release` of a tree locked although its split sizes are no official release's.
pub const NONSTANDARD: &str = "nonstandard";

impl LockEntry {
    /// The entry for a hashed tree.
    pub fn new(
        format: Format,
        root: Option<String>,
        synth: Option<SynthParams>,
        files: &[FileDigest],
    ) -> Self {
        let bytes = files.iter().map(|f| f.bytes).sum();
        Self {
            format,
            root,
            synth,
            files: files.len() as u64,
            bytes,
            digest: tree_digest(files),
            release: None,
        }
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct LockDoc {
    #[serde(default)]
    datasets: BTreeMap<String, LockEntry>,
}

/// Files that differ between a lock entry's file list and the tree on disk.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Drift {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<String>,
}

impl Drift {
    pub fn between(locked: &[FileDigest], actual: &[FileDigest]) -> Drift {
        let locked: BTreeMap<&str, &FileDigest> =
            locked.iter().map(|f| (f.path.as_str(), f)).collect();
        let actual: BTreeMap<&str, &FileDigest> =
            actual.iter().map(|f| (f.path.as_str(), f)).collect();
        fn names<'a>(m: &BTreeMap<&'a str, &FileDigest>) -> BTreeSet<&'a str> {
            m.keys().copied().collect()
        }
        let (l, a) = (names(&locked), names(&actual));
        Drift {
            added: a.difference(&l).map(|s| s.to_string()).collect(),
            removed: l.difference(&a).map(|s| s.to_string()).collect(),
            changed: l
                .intersection(&a)
                .filter(|p| locked[*p] != actual[*p])
                .map(|s| s.to_string())
                .collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }
}

impl std::fmt::Display for Drift {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (label, files) in [
            ("added", &self.added),
            ("removed", &self.removed),
            ("changed", &self.changed),
        ] {
            for file in files {
                writeln!(f, "  {label:<8} {file}")?;
            }
        }
        Ok(())
    }
}

/// A tree that differs from its lock entry: both sides' counts and digests, and the files that differ.
#[derive(Debug)]
pub struct Mismatch {
    pub file: PathBuf,
    pub name: String,
    pub root: PathBuf,
    pub actual: LockEntry,
    pub locked: LockEntry,
    pub drift: String,
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (a, l) = (&self.actual, &self.locked);
        write!(
            f,
            "dataset `{}` at {} does not match {}: {} files, {} bytes, {} (locked: {} files, {} bytes, {})\n{}",
            self.name,
            self.root.display(),
            self.file.display(),
            a.files,
            a.bytes,
            a.digest,
            l.files,
            l.bytes,
            l.digest,
            self.drift
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("{file}: cannot read the lock file: {source}")]
    Read {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("{file}:{line}:{column}: {message}")]
    Invalid {
        file: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error(
        "{file}: no dataset `{name}` (locked: {known}); add it with `mgat data lock {name} --format F --root DIR`"
    )]
    Unknown {
        file: PathBuf,
        name: String,
        known: String,
    },
    #[error(
        "{file}:{line}: dataset `{name}`: root `{root}` uses ${{{var}}}, which is not set in the environment"
    )]
    UnsetVar {
        file: PathBuf,
        line: usize,
        name: String,
        root: String,
        var: String,
    },
    #[error("{0}")]
    Mismatch(Box<Mismatch>),
    #[error(transparent)]
    Io(#[from] mgat_util::fsio::IoError),
    #[error("{}: cannot serialise the lock: {message}", path.display())]
    Serialise { path: PathBuf, message: String },
}

/// A loaded `datasets.lock`.
#[derive(Debug)]
pub struct LockFile {
    path: PathBuf,
    file_lists: PathBuf,
    text: String,
    doc: LockDoc,
}

impl LockFile {
    /// Loads the lock at `path`; a missing file is an empty lock (so the first `mgat data lock` can create it).
    /// Per-file lists are read from and written to `file_lists`.
    pub fn load(path: &Path, file_lists: &Path) -> Result<LockFile, LockError> {
        let text =
            match crate::inputfile::read_text_bounded(path, crate::inputfile::limit::TEXT_CONFIG) {
                Ok(text) => text,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
                Err(source) => {
                    return Err(LockError::Read {
                        file: path.to_path_buf(),
                        source,
                    });
                }
            };
        let index = PosIndex::new(&text);
        let invalid = |pos: Pos, message: String| LockError::Invalid {
            file: path.to_path_buf(),
            line: pos.line,
            column: pos.column,
            message,
        };
        if let Some(pos) = index.too_deep {
            return Err(invalid(pos, crate::yamlpos::too_deep_message()));
        }
        if let Some(d) = &index.duplicate {
            return Err(invalid(
                d.pos,
                format!("`{}` appears twice in `{}`", d.key, d.mapping.join(".")),
            ));
        }
        let doc: LockDoc = if text.trim().is_empty() {
            LockDoc::default()
        } else {
            serde_yaml::from_str(&text).map_err(|e| {
                let (pos, message) = split_serde_error(&e);
                let (line, column) = pos.map_or((0, 0), |p| (p.line, p.column));
                LockError::Invalid {
                    file: path.to_path_buf(),
                    line,
                    column,
                    message,
                }
            })?
        };
        let lock = LockFile {
            path: path.to_path_buf(),
            file_lists: file_lists.to_path_buf(),
            text,
            doc,
        };
        lock.check()?;
        Ok(lock)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.doc.datasets.keys().map(String::as_str)
    }

    pub fn entry(&self, name: &str) -> Result<&LockEntry, LockError> {
        self.doc
            .datasets
            .get(name)
            .ok_or_else(|| LockError::Unknown {
                file: self.path.clone(),
                name: name.to_string(),
                known: if self.doc.datasets.is_empty() {
                    "none".into()
                } else {
                    self.names().collect::<Vec<_>>().join(", ")
                },
            })
    }

    /// The dataset's root on this machine: `${VAR}` expanded, relative paths taken from the lock file's folder.
    pub fn root(&self, name: &str) -> Result<Option<PathBuf>, LockError> {
        let Some(root) = &self.entry(name)?.root else {
            return Ok(None);
        };
        let expanded = expand_env(root).map_err(|var| LockError::UnsetVar {
            file: self.path.clone(),
            line: self.line_of(&["datasets", name, "root"]),
            name: name.to_string(),
            root: root.clone(),
            var,
        })?;
        Ok(Some(self.dir().join(expanded)))
    }

    /// Sets an entry and its per-file list, then writes both (each atomically). The lock file is read again,
    /// changed and written under an exclusive lock of its folder, so that concurrent `data lock`s of different
    /// names keep both entries.
    pub fn set(
        &mut self,
        name: &str,
        entry: LockEntry,
        files: &[FileDigest],
    ) -> Result<(), LockError> {
        let list_path = self.file_list_path(name, &entry.digest);
        let mut list = String::new();
        for f in files {
            let _ = writeln!(list, "{}\t{}\t{}", f.sha256, f.bytes, f.path);
        }
        mgat_util::fsio::write_atomic(&list_path, list.as_bytes())?;
        let dir = self.dir();
        let folder = std::fs::File::open(&dir).map_err(mgat_util::fsio::IoError::at(&dir))?;
        folder.lock().map_err(mgat_util::fsio::IoError::at(&dir))?;
        self.doc = LockFile::load(&self.path, &self.file_lists)?.doc;
        self.doc.datasets.insert(name.to_string(), entry);
        let body = serde_yaml::to_string(&self.doc).map_err(|e| LockError::Serialise {
            path: self.path.clone(),
            message: e.to_string(),
        })?;
        let text = format!("{LOCK_HEADER}{body}");
        mgat_util::fsio::write_atomic(&through_links(&self.path)?, text.as_bytes())?;
        self.text = text;
        Ok(())
    }

    /// The per-file list `mgat data lock` wrote for the entry's digest, if present and readable.
    fn file_list(&self, name: &str, digest: &str) -> Option<Vec<FileDigest>> {
        let text = crate::inputfile::read_text_bounded(
            &self.file_list_path(name, digest),
            crate::inputfile::limit::STAT_RECORD,
        )
        .ok()?;
        text.lines()
            .map(|line| {
                let mut f = line.splitn(3, '\t');
                let sha256 = f.next()?.to_string();
                let bytes = f.next()?.parse().ok()?;
                Some(FileDigest {
                    path: f.next()?.to_string(),
                    bytes,
                    sha256,
                })
            })
            .collect()
    }

    /// Checks a hashed tree against the entry `name`; on a mismatch, names every file that differs (when the
    /// per-file list is available).
    pub fn check_tree(
        &self,
        name: &str,
        root: &Path,
        files: &[FileDigest],
    ) -> Result<(), LockError> {
        let entry = self.entry(name)?;
        let actual = LockEntry::new(entry.format, None, None, files);
        if actual.digest == entry.digest {
            // The counts are derived from the same files as the digest: when they differ, the entry was edited.
            if (actual.files, actual.bytes) != (entry.files, entry.bytes) {
                return Err(LockError::Invalid {
                    file: self.path.clone(),
                    line: self.line_of(&["datasets", name, "files"]),
                    column: 1,
                    message: format!(
                        "dataset `{name}`: files: {}, bytes: {}, but its digest covers {} files of {} bytes (edited by hand? lock it again)",
                        entry.files, entry.bytes, actual.files, actual.bytes
                    ),
                });
            }
            return Ok(());
        }
        let drift = match self.file_list(name, &entry.digest) {
            Some(locked) => Drift::between(&locked, files).to_string(),
            None => format!(
                "  (no per-file list at {}: it is written by `mgat data lock` into the cache of the machine that ran it, \
                 so the files that differ cannot be named here)\n",
                self.file_list_path(name, &entry.digest).display()
            ),
        };
        Err(LockError::Mismatch(Box::new(Mismatch {
            file: self.path.clone(),
            name: name.to_string(),
            root: root.to_path_buf(),
            actual,
            locked: entry.clone(),
            drift,
        })))
    }

    fn file_list_path(&self, name: &str, digest: &str) -> PathBuf {
        self.file_lists.join(name).join(format!(
            "{}.tsv",
            digest.trim_start_matches(mgat_util::digest::PREFIX)
        ))
    }

    fn dir(&self) -> PathBuf {
        self.path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default()
    }

    fn line_of(&self, path: &[&str]) -> usize {
        let path: Vec<String> = path.iter().map(|s| s.to_string()).collect();
        PosIndex::new(&self.text).find(&path).map_or(0, |p| p.line)
    }

    /// Each entry has a root or synth parameters as its format requires, and a well-formed digest.
    fn check(&self) -> Result<(), LockError> {
        let index = PosIndex::new(&self.text);
        for (name, e) in &self.doc.datasets {
            let bad_name = !is_dataset_name(name);
            let problem = bad_name
                .then(|| {
                    (
                        "",
                        "not a dataset name: use letters, digits, `-`, `_` and `.` (not `.` or `..` alone)"
                            .to_string(),
                    )
                })
                .or(match (e.format, &e.root, &e.synth) {
                (Format::Synth, _, None) => Some((
                    "format",
                    "a synth dataset needs `synth:` generator parameters".to_string(),
                )),
                (Format::Synth, Some(_), _) => Some((
                    "root",
                    "a synth dataset has no root: it is generated from `synth:`".into(),
                )),
                (Format::Synth, None, Some(s)) => s
                    .invalid()
                    .map(|(p, v, x)| ("synth", format!("{p} = {v}: expected {x}"))),
                (_, None, _) => Some((
                    "format",
                    format!("a {} dataset needs a `root`", e.format.name()),
                )),
                (_, _, Some(_)) => Some((
                    "synth",
                    "only format `synth` takes generator parameters".into(),
                )),
                _ => None,
            })
            .or_else(|| {
                (!is_digest(&e.digest)).then(|| {
                    (
                        "digest",
                        format!("`{}` is not `sha256:` and 64 hex digits", e.digest),
                    )
                })
            });
            if let Some((field, message)) = problem {
                let pos = index.find(&["datasets".to_string(), name.clone(), field.to_string()]);
                let (line, column) = pos.map_or((0, 0), |p| (p.line, p.column));
                return Err(LockError::Invalid {
                    file: self.path.clone(),
                    line,
                    column,
                    message: format!("dataset `{name}`: {message}"),
                });
            }
        }
        Ok(())
    }
}

const LOCK_HEADER: &str = "\
# datasets.lock: the datasets specs may name, each pinned by a digest over (path, size, sha256) of every file.
# Written by `mgat data lock`; checked by `mgat data verify` and by every index stage. A root may be relative to
# this file, absolute, or use ${ENV_VAR}.
";

/// `text` with every `${VAR}` replaced by the variable's value; the error is the name of an unset variable.
/// A `${` without its `}` is kept as written.
pub fn expand_env(text: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        let Some(end) = rest[start..].find('}').map(|e| start + e) else {
            break;
        };
        let var = &rest[start + 2..end];
        out.push_str(&rest[..start]);
        out.push_str(&std::env::var(var).map_err(|_| var.to_string())?);
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn is_digest(d: &str) -> bool {
    d.strip_prefix(mgat_util::digest::PREFIX)
        .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Whether `name` may name a dataset: letters, digits, `-`, `_` and `.`, and not `.` or `..` alone (which name
/// folders, not datasets).
pub fn is_dataset_name(name: &str) -> bool {
    !matches!(name, "" | "." | "..")
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// The file a write to `path` should replace: `path` itself, or, when it is a symbolic link (a lock shared between
/// checkouts), the file it leads to, so that the link stays a link and the shared file gets the change.
fn through_links(path: &Path) -> Result<PathBuf, mgat_util::fsio::IoError> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_symlink() => {
            std::fs::canonicalize(path).map_err(mgat_util::fsio::IoError::at(path))
        }
        _ => Ok(path.to_path_buf()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(items: &[(&str, &str)]) -> Vec<FileDigest> {
        items
            .iter()
            .map(|(p, s)| FileDigest {
                path: p.to_string(),
                bytes: 1,
                sha256: s.to_string(),
            })
            .collect()
    }

    #[test]
    fn set_then_load_round_trips_and_detects_each_drift() {
        let dir = mgat_testutil::tempdir();
        let path = dir.join("datasets.lock");
        let mut lock = LockFile::load(&path, &dir.join("lists")).unwrap();
        let locked = files(&[("a.jpg", "11"), ("b.jpg", "22"), ("c.jpg", "33")]);
        lock.set(
            "m",
            LockEntry::new(
                Format::Market1501,
                Some("${MGAT_TEST_ROOT}/m".into()),
                None,
                &locked,
            ),
            &locked,
        )
        .unwrap();
        let lock = LockFile::load(&path, &dir.join("lists")).unwrap();
        assert_eq!(lock.entry("m").unwrap().files, 3);
        assert!(lock.check_tree("m", &dir, &locked).is_ok());
        let now = files(&[("a.jpg", "11"), ("b.jpg", "99"), ("d.jpg", "44")]);
        let err = lock.check_tree("m", &dir, &now).unwrap_err().to_string();
        assert!(
            err.contains("added    d.jpg")
                && err.contains("removed  c.jpg")
                && err.contains("changed  b.jpg"),
            "{err}"
        );
        let err = lock.root("m").unwrap_err().to_string();
        assert!(
            err.contains("MGAT_TEST_ROOT") && err.contains("datasets.lock:7:"),
            "{err}"
        );
    }

    #[test]
    fn env_expansion_replaces_set_variables_and_names_unset_ones() {
        let path = std::env::var("PATH").unwrap();
        assert_eq!(expand_env("a/${PATH}/b").unwrap(), format!("a/{path}/b"));
        assert_eq!(
            expand_env("${MGAT_SURELY_UNSET_VAR}/x").unwrap_err(),
            "MGAT_SURELY_UNSET_VAR"
        );
        assert_eq!(expand_env("plain/${open").unwrap(), "plain/${open");
    }

    #[test]
    fn bad_entries_name_file_and_line() {
        let dir = mgat_testutil::tempdir();
        let path = dir.join("datasets.lock");
        std::fs::write(&path, "datasets:\n  m:\n    format: market1501\n    files: 1\n    bytes: 1\n    digest: sha256:00\n").unwrap();
        let err = LockFile::load(&path, &dir.join("lists"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("datasets.lock:3:") && err.contains("needs a `root`"),
            "{err}"
        );
        std::fs::write(&path, "datasets:\n  m:\n    format: market\n").unwrap();
        let err = LockFile::load(&path, &dir.join("lists"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("datasets.lock:3:") && err.contains("market"),
            "{err}"
        );
        let lock = LockFile::load(&dir.join("absent.lock"), &dir.join("lists")).unwrap();
        assert!(
            lock.entry("x")
                .unwrap_err()
                .to_string()
                .contains("mgat data lock x")
        );
    }

    #[test]
    fn concurrent_locks_of_different_names_keep_both_entries() {
        let dir = mgat_testutil::tempdir();
        let path = dir.join("datasets.lock");
        for round in 0..6 {
            std::fs::write(&path, "").unwrap();
            std::thread::scope(|s| {
                for name in ["a", "b", "c"] {
                    let (path, lists) = (path.clone(), dir.join("lists"));
                    s.spawn(move || {
                        let mut lock = LockFile::load(&path, &lists).unwrap();
                        let digest = format!("sha256:{}", "0".repeat(64));
                        let entry = LockEntry {
                            format: mgat_data::Format::Market1501,
                            root: Some(format!("{name}-{round}")),
                            synth: None,
                            files: 0,
                            bytes: 0,
                            digest,
                            release: None,
                        };
                        lock.set(name, entry, &[]).unwrap();
                    });
                }
            });
            let lock = LockFile::load(&path, &dir.join("lists")).unwrap();
            for name in ["a", "b", "c"] {
                assert!(lock.entry(name).is_ok(), "round {round}: {name} lost");
            }
        }
    }
}
