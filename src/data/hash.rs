//! Hashing a tree of files: list it from directory entries, `stat` and SHA-256 every file on all cores (`rayon`),
//! and keep a stat record of it (a [`StatedTree`]: the stat of every folder and file, and each file's SHA-256) so
//! that a warm re-hash costs one `stat` per folder and file: a folder whose stat is unchanged is not listed again
//! and a file whose stat is unchanged is not read again. Datasets and reports keep their record in a stat cache file;
//! the stage cache keeps its entries' records in its trust ledger.

use mgat_util::digest::{hex, sha256_file};
use mgat_util::fsio::IoError;
use rayon::prelude::*;
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// One file of a tree: its path relative to the root (`/`-separated), size and content hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileDigest {
    pub path: String,
    pub bytes: u64,
    pub sha256: String,
}

#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error(transparent)]
    Io(#[from] IoError),
    #[error("{0}: file name is not valid UTF-8")]
    NonUtf8(PathBuf),
    #[error("{}: a symbolic link that leads nowhere ({error}); remove it or point it at a file", path.display())]
    BrokenLink {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{}: {what}, not a regular file or a folder; a tree mgat hashes holds only those", path.display())]
    NotAFile { path: PathBuf, what: &'static str },
}

impl HashError {
    /// Whether the tree itself is wrong (a name, a link, a special file, a file its owner made unreadable) rather
    /// than the machine failing to read it.
    pub fn is_bad_input(&self) -> bool {
        match self {
            HashError::Io(e) => e.error.kind() == std::io::ErrorKind::PermissionDenied,
            _ => true,
        }
    }
}

/// Every regular file under `root`, sorted by relative path, with its hash. With a stat cache file, folders and
/// files whose (size, mtime, ctime, inode, device) are unchanged since the cache was written are not listed or read again, and the
/// cache is rewritten when what it would hold changed.
pub fn hash_tree(
    root: &Path,
    stat_cache: Option<&Path>,
    on_file: &(dyn Fn() + Sync),
) -> Result<Vec<FileDigest>, HashError> {
    let cache_text = stat_cache
        .and_then(|p| {
            crate::inputfile::read_text_bounded(p, crate::inputfile::limit::STAT_RECORD).ok()
        })
        .unwrap_or_default();
    let previous = StatedTree::parse(&cache_text).unwrap_or_default();
    let tree = hash_tree_known(root, &previous, on_file)?;
    if let Some(cache_path) = stat_cache {
        let text = tree.recordable().to_lines();
        if text != cache_text {
            // A failed cache write only costs speed next time.
            let _ = mgat_util::fsio::write_atomic(cache_path, text.as_bytes());
        }
    }
    Ok(tree.files.into_iter().map(|(d, _)| d).collect())
}

/// What the stat records compare: a file (or folder) whose size, mtime, ctime, inode and device are unchanged is
/// taken as unchanged. The ctime is what makes this hold against a deliberate rewrite: `touch -r` and `cp -p` can
/// set a file's mtime back, but any write, rename into place or `chmod` moves its ctime to now, and no ordinary tool
/// sets it back (only changing the system clock, as root, can: out of scope, as in Bazel's digest cache).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stat {
    pub size: u64,
    pub mtime_ns: i128,
    pub ctime_ns: i128,
    pub inode: u64,
    pub device: u64,
}

impl Stat {
    /// The stat of `path`, following links.
    pub fn of(path: &Path) -> std::io::Result<Stat> {
        std::fs::metadata(path).map(|m| Stat::from(&m))
    }
}

impl From<&std::fs::Metadata> for Stat {
    fn from(m: &std::fs::Metadata) -> Self {
        Stat {
            size: m.size(),
            mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
            ctime_ns: i128::from(m.ctime()) * 1_000_000_000 + i128::from(m.ctime_nsec()),
            inode: m.ino(),
            device: m.dev(),
        }
    }
}

/// A hashed tree with the stat of every folder and file, each taken before it was listed or read: a tree whose
/// stats all still hold has the same names (a folder's mtime changes when a name in it is added, removed or
/// renamed) with the same contents (a file's changes when it is written).
///
/// As text, one line per folder, `d<TAB>path<TAB>inode<TAB>size<TAB>mtime_ns<TAB>ctime_ns<TAB>device` (the root's
/// path is empty), then one per file, `f<TAB>…<TAB>sha256`, each group in path order.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct StatedTree {
    pub dirs: Vec<(String, Stat)>,
    pub files: Vec<(FileDigest, Stat)>,
}

impl StatedTree {
    /// The tree in `text`; None when any line does not parse (a record that lost a line could leave out a name of
    /// a folder it still vouches for).
    pub fn parse(text: &str) -> Option<StatedTree> {
        let mut tree = StatedTree::default();
        for line in text.lines() {
            tree.push_line(line)?;
        }
        tree.dirs.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        tree.files.sort_unstable_by(|a, b| a.0.path.cmp(&b.0.path));
        Some(tree)
    }

    fn push_line(&mut self, line: &str) -> Option<()> {
        let mut f = line.split('\t');
        let (tag, path) = (f.next()?, f.next()?.to_string());
        let stat = Stat {
            inode: f.next()?.parse().ok()?,
            size: f.next()?.parse().ok()?,
            mtime_ns: f.next()?.parse().ok()?,
            ctime_ns: f.next()?.parse().ok()?,
            device: f.next()?.parse().ok()?,
        };
        match (tag, f.next(), f.next()) {
            ("d", None, _) => self.dirs.push((path, stat)),
            ("f", Some(sha256), None) => {
                let sha256 = sha256.to_string();
                let bytes = stat.size;
                self.files.push((
                    FileDigest {
                        path,
                        bytes,
                        sha256,
                    },
                    stat,
                ));
            }
            _ => return None,
        }
        Some(())
    }

    /// The tree as text, for a tree whose names hold no tab or line break ([`StatedTree::recordable`]).
    pub fn to_lines(&self) -> String {
        let mut out = String::new();
        for (path, s) in &self.dirs {
            let _ = writeln!(
                out,
                "d\t{path}\t{}\t{}\t{}\t{}\t{}",
                s.inode, s.size, s.mtime_ns, s.ctime_ns, s.device
            );
        }
        for (f, s) in &self.files {
            let _ = writeln!(
                out,
                "f\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
                f.path, s.inode, s.size, s.mtime_ns, s.ctime_ns, s.device, f.sha256
            );
        }
        out
    }

    /// The part of the tree a stat record may hold, so that what it records can vouch for what it saw:
    /// - only what was last written 2 s ago or earlier (a write within the same clock tick keeps the mtime; the
    ///   ctime is compared, not required to be settled, so a file whose mtime was set back is recordable);
    /// - only names a line can hold (no tab or line break);
    /// - a folder only with every one of its names, since a folder whose stat holds is not listed again: one with a
    ///   name left out is left out too, and so is every folder above it.
    pub fn recordable(&self) -> StatedTree {
        let before = settled_before_ns();
        let keeps =
            |path: &str, stat: &Stat| stat.mtime_ns < before && !path.contains(['\t', '\n', '\r']);
        let mut incomplete: HashSet<&str> = HashSet::new();
        let mut files = Vec::new();
        for (file, stat) in &self.files {
            match keeps(&file.path, stat) {
                true => files.push((file.clone(), *stat)),
                false => drop(incomplete.insert(parent_of(&file.path))),
            }
        }
        let mut deepest_first: Vec<&(String, Stat)> = self.dirs.iter().collect();
        deepest_first.sort_by_key(|d| std::cmp::Reverse(depth(&d.0)));
        let mut dirs = Vec::new();
        for (path, stat) in deepest_first {
            match keeps(path, stat) && !incomplete.contains(path.as_str()) {
                true => dirs.push((path.clone(), *stat)),
                false if path.is_empty() => {}
                false => drop(incomplete.insert(parent_of(path))),
            }
        }
        dirs.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        StatedTree { dirs, files }
    }

    /// The hash of `path` when its recorded stat is `stat`.
    fn known(&self, path: &str, stat: &Stat) -> Option<&str> {
        let i = self
            .files
            .binary_search_by(|f| f.0.path.as_str().cmp(path))
            .ok()?;
        let (file, recorded) = &self.files[i];
        (recorded == stat).then_some(file.sha256.as_str())
    }
}

/// The folder a relative path lies in ("" for the root).
fn parent_of(path: &str) -> &str {
    path.rfind('/').map_or("", |i| &path[..i])
}

/// How many folders deep a relative folder path is (0 for the root).
fn depth(path: &str) -> usize {
    match path.is_empty() {
        true => 0,
        false => 1 + path.matches('/').count(),
    }
}

/// The time before which a stat is settled, in ns since the epoch: now − 2 s.
fn settled_before_ns() -> i128 {
    let settled = SystemTime::now()
        .checked_sub(Duration::from_secs(2))
        .unwrap_or(UNIX_EPOCH);
    settled
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as i128
}

/// Every regular file under `root` with its hash, and the stats of folders and files. A folder whose stat
/// `previous` records unchanged is not listed (its names are the recorded ones), and a file whose stat it records
/// unchanged is not read.
pub(crate) fn hash_tree_known(
    root: &Path,
    previous: &StatedTree,
    on_file: &(dyn Fn() + Sync),
) -> Result<StatedTree, HashError> {
    let (dirs, files) = walk(root, previous)?;
    let files = files
        .par_iter()
        .map(|(rel, stat)| {
            let sha256 = match previous.known(rel, stat) {
                Some(sha) => sha.to_string(),
                None => {
                    let path = root.join(rel);
                    sha256_file(&path)
                        .map_err(|source| HashError::Io(IoError::new(path, source)))?
                        .0
                }
            };
            on_file();
            Ok((
                FileDigest {
                    path: rel.clone(),
                    bytes: stat.size,
                    sha256,
                },
                *stat,
            ))
        })
        .collect::<Result<_, HashError>>()?;
    Ok(StatedTree { dirs, files })
}

/// The digest of a tree: SHA-256 over one line `path\tsize\tsha256\n` per file, in path order.
pub fn tree_digest(files: &[FileDigest]) -> String {
    let mut hasher = Sha256::new();
    let mut line = String::new();
    for f in files {
        line.clear();
        let _ = writeln!(line, "{}\t{}\t{}", f.path, f.bytes, f.sha256);
        hasher.update(line.as_bytes());
    }
    mgat_util::digest::labelled(&hex(&hasher.finalize()))
}

/// Folder and file stats as a walk found them.
type Walked = (Vec<(String, Stat)>, Vec<(String, Stat)>);

/// Every folder and every file under `root` with its stat, in path order. Each file is stat'ed relative to its
/// open folder (no path walk from the root per file), in parallel.
fn walk(root: &Path, previous: &StatedTree) -> Result<Walked, HashError> {
    let meta = std::fs::metadata(root).map_err(|e| io_err(root, e))?;
    if !meta.is_dir() {
        return Err(io_err(root, std::io::Error::other("not a directory")));
    }
    let listed = list_dirs(root, previous)?;
    let mut files: Vec<(String, Stat)> = listed
        .par_iter()
        .map(|dir| stat_files(root, dir))
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .flatten()
        .collect();
    files.par_sort_unstable_by(|a, b| a.0.cmp(&b.0));
    let mut dirs: Vec<(String, Stat)> = listed.into_iter().map(|d| (d.rel, d.stat)).collect();
    dirs.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    Ok((dirs, files))
}

fn io_err(path: &Path, source: std::io::Error) -> HashError {
    HashError::Io(IoError::new(path.to_path_buf(), source))
}

/// A directory's files: its `/`-separated path relative to the root (empty for the root), its stat from before it
/// was listed, and their names.
struct DirFiles {
    rel: String,
    stat: Stat,
    names: Vec<String>,
}

/// A folder's names: files and sub-folders.
#[derive(Default)]
struct Listing {
    files: Vec<String>,
    dirs: Vec<String>,
}

/// The listings a stat record implies: each recorded folder's files and sub-folders, by folder.
fn recorded_listings(previous: &StatedTree) -> HashMap<&str, Listing> {
    let mut listings: HashMap<&str, Listing> = HashMap::new();
    let name_of = |path: &str| path.rsplit('/').next().unwrap_or(path).to_string();
    for (path, _) in previous.dirs.iter().filter(|d| !d.0.is_empty()) {
        let listing = listings.entry(parent_of(path)).or_default();
        listing.dirs.push(name_of(path));
    }
    for (file, _) in &previous.files {
        let listing = listings.entry(parent_of(&file.path)).or_default();
        listing.files.push(name_of(&file.path));
    }
    listings
}

/// Every directory under `root` with its files (symbolic links followed). A folder is stat'ed first; when
/// `previous` records that same stat its names are the recorded ones, otherwise it is listed, from the directory
/// entries alone (the file type comes with each entry, so only a symbolic link costs a `stat`). A directory reached
/// twice (a link cycle) is read once.
fn list_dirs(root: &Path, previous: &StatedTree) -> Result<Vec<DirFiles>, HashError> {
    let recorded_stats: HashMap<&str, &Stat> =
        previous.dirs.iter().map(|(p, s)| (p.as_str(), s)).collect();
    let mut recorded = recorded_listings(previous);
    let mut seen_dirs = HashSet::new();
    let mut pending = vec![String::new()];
    let mut listed = Vec::new();
    while let Some(rel_dir) = pending.pop() {
        let dir = root.join(&rel_dir);
        let meta = std::fs::metadata(&dir).map_err(|e| io_err(&dir, e))?;
        if !seen_dirs.insert((meta.dev(), meta.ino())) {
            continue;
        }
        let stat = Stat::from(&meta);
        let listing = match recorded_stats.get(rel_dir.as_str()) {
            Some(&&s) if s == stat => recorded.remove(rel_dir.as_str()).unwrap_or_default(),
            _ => read_listing(&dir)?,
        };
        // Sorted, so that a folder reached by two links is read under the same name whichever way it was listed.
        let mut subdirs = listing.dirs;
        subdirs.sort_unstable();
        for sub in subdirs {
            pending.push(match rel_dir.is_empty() {
                true => sub,
                false => format!("{rel_dir}/{sub}"),
            });
        }
        listed.push(DirFiles {
            rel: rel_dir,
            stat,
            names: listing.files,
        });
    }
    Ok(listed)
}

/// A folder's files and sub-folders from its directory entries, symbolic links followed.
fn read_listing(dir: &Path) -> Result<Listing, HashError> {
    let mut listing = Listing::default();
    for entry in std::fs::read_dir(dir).map_err(|e| io_err(dir, e))? {
        let entry = entry.map_err(|e| io_err(dir, e))?;
        let name = entry
            .file_name()
            .into_string()
            .map_err(|_| HashError::NonUtf8(entry.path()))?;
        let mut kind = entry.file_type().map_err(|e| io_err(&entry.path(), e))?;
        if kind.is_symlink() {
            kind = std::fs::metadata(entry.path())
                .map_err(|error| HashError::BrokenLink {
                    path: entry.path(),
                    error,
                })?
                .file_type();
        }
        if kind.is_dir() {
            listing.dirs.push(name);
        } else if kind.is_file() {
            listing.files.push(name);
        } else {
            return Err(HashError::NotAFile {
                path: entry.path(),
                what: special_file_kind(kind),
            });
        }
    }
    Ok(listing)
}

/// What a file that is neither a regular file nor a folder is.
fn special_file_kind(kind: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    match () {
        _ if kind.is_fifo() => "a FIFO",
        _ if kind.is_socket() => "a socket",
        _ if kind.is_block_device() || kind.is_char_device() => "a device",
        _ => "a special file",
    }
}

/// Stats a directory's files through one open handle of it (`fstatat`, following links), in parallel for large
/// directories; each with its path relative to the root.
fn stat_files(root: &Path, dir: &DirFiles) -> Result<Vec<(String, Stat)>, HashError> {
    use std::os::fd::AsRawFd;
    let path = root.join(&dir.rel);
    let handle = std::fs::File::open(&path).map_err(|e| io_err(&path, e))?;
    let fd = handle.as_raw_fd();
    dir.names
        .par_iter()
        .with_min_len(256)
        .map(|name| {
            let failed = |e: std::io::Error| io_err(&path.join(name), e);
            // A name from a directory listing holds no NUL byte.
            let c_name = std::ffi::CString::new(name.as_bytes()).map_err(|e| failed(e.into()))?;
            let mut st = std::mem::MaybeUninit::<libc::stat>::uninit();
            // SAFETY: fd is an open directory for the whole call (handle outlives it), c_name is NUL-terminated,
            // and st is written in full by a successful fstatat before it is read.
            let st = unsafe {
                if libc::fstatat(fd, c_name.as_ptr(), st.as_mut_ptr(), 0) != 0 {
                    return Err(failed(std::io::Error::last_os_error()));
                }
                st.assume_init()
            };
            let rel = match dir.rel.is_empty() {
                true => name.clone(),
                false => format!("{}/{name}", dir.rel),
            };
            let stat = Stat {
                size: st.st_size as u64,
                mtime_ns: i128::from(st.st_mtime) * 1_000_000_000 + i128::from(st.st_mtime_nsec),
                ctime_ns: i128::from(st.st_ctime) * 1_000_000_000 + i128::from(st.st_ctime_nsec),
                inode: st.st_ino,
                device: st.st_dev,
            };
            Ok((rel, stat))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use mgat_util::digest::sha256_bytes;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn links_are_followed_and_a_link_cycle_is_read_once() {
        let dir = mgat_testutil::tempdir();
        std::fs::create_dir_all(dir.join("a")).unwrap();
        std::fs::write(dir.join("a/x.jpg"), b"x").unwrap();
        std::os::unix::fs::symlink("..", dir.join("a/up")).unwrap();
        let outside = mgat_testutil::tempdir();
        std::fs::write(outside.join("y.jpg"), b"y").unwrap();
        std::os::unix::fs::symlink(&*outside, dir.join("linked")).unwrap();
        let files = hash_tree(&dir, None, &|| {}).unwrap();
        let paths: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["a/x.jpg", "linked/y.jpg"]);
    }

    #[test]
    fn broken_links_link_loops_and_special_files_are_bad_input_that_names_them() {
        let dir = mgat_testutil::tempdir();
        std::fs::write(dir.join("x.jpg"), b"x").unwrap();
        let nowhere = dir.join("nowhere.jpg");
        std::os::unix::fs::symlink("/no/such/target", &nowhere).unwrap();
        let err = hash_tree(&dir, None, &|| {}).unwrap_err();
        assert!(err.is_bad_input());
        assert_eq!(
            err.to_string(),
            format!(
                "{}: a symbolic link that leads nowhere (No such file or directory (os error 2)); remove it or point \
                 it at a file",
                nowhere.display()
            )
        );
        std::fs::remove_file(&nowhere).unwrap();
        std::os::unix::fs::symlink("loop.jpg", dir.join("loop.jpg")).unwrap();
        let err = hash_tree(&dir, None, &|| {}).unwrap_err();
        assert!(
            err.is_bad_input()
                && err
                    .to_string()
                    .contains("Too many levels of symbolic links"),
            "{err}"
        );
        std::fs::remove_file(dir.join("loop.jpg")).unwrap();
        let fifo =
            std::ffi::CString::new(dir.join("fifo.jpg").into_os_string().into_encoded_bytes())
                .unwrap();
        // SAFETY: a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
        let err = hash_tree(&dir, None, &|| {}).unwrap_err();
        assert!(err.is_bad_input());
        assert!(err.to_string().ends_with("fifo.jpg: a FIFO, not a regular file or a folder; a tree mgat hashes holds only those"), "{err}");
    }

    #[test]
    fn a_file_its_owner_made_unreadable_is_bad_input_and_a_failing_disk_is_not() {
        // Root reads any file, so a real unreadable file cannot be made in a test run as root; this checks how each
        // error is classified (`su nobody -c 'mgat data lock …'` on a mode-000 image exits 2).
        let io = |kind: std::io::ErrorKind| {
            HashError::Io(IoError::new("x.jpg", std::io::Error::from(kind)))
        };
        assert!(io(std::io::ErrorKind::PermissionDenied).is_bad_input());
        assert!(!io(std::io::ErrorKind::Other).is_bad_input());
    }

    #[test]
    fn hashes_every_file_in_path_order() {
        let dir = mgat_testutil::tempdir();
        std::fs::create_dir_all(dir.join("b")).unwrap();
        std::fs::write(dir.join("b/x.jpg"), b"xx").unwrap();
        std::fs::write(dir.join("a.txt"), b"abc").unwrap();
        let files = hash_tree(&dir, None, &|| {}).unwrap();
        assert_eq!(files.len(), 2);
        assert_eq!(
            files[0],
            FileDigest {
                path: "a.txt".into(),
                bytes: 3,
                sha256: sha256_bytes(b"abc")
            }
        );
        assert_eq!(files[1].path, "b/x.jpg");
        let expected = format!(
            "a.txt\t3\t{}\nb/x.jpg\t2\t{}\n",
            sha256_bytes(b"abc"),
            sha256_bytes(b"xx")
        );
        assert_eq!(
            tree_digest(&files),
            format!("sha256:{}", sha256_bytes(expected.as_bytes()))
        );
    }

    /// Sets the mtime of `path` (a file or a folder) a minute back.
    fn age(path: &Path) {
        let past = SystemTime::now() - Duration::from_secs(60);
        let file = match path.is_dir() {
            true => std::fs::File::open(path),
            false => std::fs::File::options().write(true).open(path),
        };
        file.unwrap().set_modified(past).unwrap();
    }

    #[test]
    fn a_folder_whose_stat_holds_is_not_listed_again_and_one_that_changed_is() {
        let dir = mgat_testutil::tempdir();
        let (data, cache) = (dir.join("data"), dir.join("cache.tsv"));
        std::fs::create_dir_all(data.join("sub")).unwrap();
        for f in ["a", "sub/b", "sub/c"] {
            std::fs::write(data.join(f), f.as_bytes()).unwrap();
            age(&data.join(f));
        }
        age(&data.join("sub"));
        age(&data);
        let paths = |files: Vec<FileDigest>| files.into_iter().map(|f| f.path).collect::<Vec<_>>();
        assert_eq!(
            paths(hash_tree(&data, Some(&cache), &|| {}).unwrap()),
            ["a", "sub/b", "sub/c"]
        );
        // Drop `sub/c` from the record: while `sub/`'s stat holds, its names are the recorded ones.
        let text = std::fs::read_to_string(&cache).unwrap();
        let without_c: String = text
            .lines()
            .filter(|l| !l.starts_with("f\tsub/c\t"))
            .map(|l| format!("{l}\n"))
            .collect();
        assert_ne!(text, without_c);
        std::fs::write(&cache, &without_c).unwrap();
        assert_eq!(
            paths(hash_tree(&data, Some(&cache), &|| {}).unwrap()),
            ["a", "sub/b"]
        );
        // A name added to `sub/` changes its mtime, so it is listed again.
        std::fs::write(&cache, &without_c).unwrap();
        std::fs::write(data.join("sub/d"), b"d").unwrap();
        assert_eq!(
            paths(hash_tree(&data, Some(&cache), &|| {}).unwrap()),
            ["a", "sub/b", "sub/c", "sub/d"]
        );
    }

    #[test]
    fn a_stat_record_round_trips_and_one_bad_line_voids_it() {
        let stat = |n: u64| Stat {
            size: n,
            mtime_ns: -5,
            ctime_ns: -4,
            inode: n * 7,
            device: 3,
        };
        let digest = |path: &str| FileDigest {
            path: path.into(),
            bytes: 3,
            sha256: "ab".into(),
        };
        let tree = StatedTree {
            dirs: vec![(String::new(), stat(1)), ("x y".into(), stat(2))],
            files: vec![(digest("a"), stat(3)), (digest("x y/b"), stat(3))],
        };
        let text = tree.to_lines();
        assert_eq!(StatedTree::parse(&text), Some(tree));
        assert_eq!(
            StatedTree::parse(&text.replace("\tab\n", "\tab\textra\n")),
            None
        );
        assert_eq!(StatedTree::parse(&format!("{text}f\tz\t1\t2\n")), None);
    }

    /// A folder written long ago whose sub-folder and files are fresh: the record must not hold the folder without
    /// them, or the next hash would take the folder's stale listing and lose their files.
    #[test]
    fn a_folder_is_recorded_only_with_all_of_its_names() {
        let dir = mgat_testutil::tempdir();
        let (data, cache) = (dir.join("data"), dir.join("cache.tsv"));
        std::fs::create_dir_all(data.join("sub")).unwrap();
        std::fs::write(data.join("sub/f"), b"f").unwrap();
        std::fs::write(data.join("old"), b"o").unwrap();
        age(&data.join("old"));
        age(&data);
        assert_eq!(hash_tree(&data, Some(&cache), &|| {}).unwrap().len(), 2);
        let recorded = StatedTree::parse(&std::fs::read_to_string(&cache).unwrap()).unwrap();
        assert!(recorded.dirs.is_empty(), "{recorded:?}");
        assert_eq!(recorded.files.len(), 1);
        let again: Vec<String> = hash_tree(&data, Some(&cache), &|| {})
            .unwrap()
            .into_iter()
            .map(|f| f.path)
            .collect();
        assert_eq!(again, ["old", "sub/f"]);
    }

    #[test]
    fn stat_cache_entries_are_reused_and_changed_files_rehashed() {
        let dir = mgat_testutil::tempdir();
        let cache = dir.join("cache.tsv");
        let data = dir.join("data");
        std::fs::create_dir_all(&data).unwrap();
        std::fs::write(data.join("f"), b"one").unwrap();
        let old = SystemTime::now() - Duration::from_secs(60);
        std::fs::File::options()
            .write(true)
            .open(data.join("f"))
            .unwrap()
            .set_modified(old)
            .unwrap();
        hash_tree(&data, Some(&cache), &|| {}).unwrap();
        // Poison the cached hash: a warm run must return it, proving it did not re-read the file.
        let text = std::fs::read_to_string(&cache)
            .unwrap()
            .replace(&sha256_bytes(b"one"), "cafe");
        std::fs::write(&cache, text).unwrap();
        let count = AtomicUsize::new(0);
        let warm = hash_tree(&data, Some(&cache), &|| {
            count.fetch_add(1, Ordering::Relaxed);
        })
        .unwrap();
        assert_eq!(warm[0].sha256, "cafe");
        assert_eq!(count.load(Ordering::Relaxed), 1);
        std::fs::write(data.join("f"), b"two").unwrap();
        assert_eq!(
            hash_tree(&data, Some(&cache), &|| {}).unwrap()[0].sha256,
            sha256_bytes(b"two")
        );
    }
}
