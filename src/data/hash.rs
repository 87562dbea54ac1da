//! Hashing a dataset tree: list it from directory entries, `stat` and SHA-256 every file on all cores (`rayon`), and
//! keep a stat cache (path, size, mtime, inode → sha256) so that a warm re-hash costs one `stat` per file and reads
//! only files that changed.

use crate::digest::{hex, sha256_file};
use crate::fsio::IoError;
use rayon::prelude::*;
use sha2::{Digest, Sha256};
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
}

/// Every regular file under `root`, sorted by relative path, with its hash. With a stat cache file, files whose
/// (size, mtime, inode) are unchanged since the cache was written are not read again, and the cache is rewritten
/// when what it would hold changed.
pub fn hash_tree(
    root: &Path,
    stat_cache: Option<&Path>,
    on_file: &(dyn Fn() + Sync),
) -> Result<Vec<FileDigest>, HashError> {
    let cache_text = stat_cache
        .and_then(|p| std::fs::read_to_string(p).ok())
        .unwrap_or_default();
    let cached = StatCache::parse(&cache_text);
    let tree = hash_tree_known(
        root,
        &|rel, stat| match cached.get(rel) {
            Some((s, sha)) if s == stat => Some(sha.to_string()),
            _ => None,
        },
        on_file,
    )?;
    if let Some(cache_path) = stat_cache {
        // A failed cache write only costs speed next time.
        let _ = save_stat_cache(cache_path, &tree.files, &cached);
    }
    Ok(tree.files.into_iter().map(|(d, _)| d).collect())
}

/// A hashed tree with the stat of every folder and file, as it was before it was read: a tree whose stats all
/// still hold has the same files with the same contents (a folder's mtime changes when a name in it is added,
/// removed or renamed; a file's when it is written).
#[derive(Debug)]
pub(crate) struct StatedTree {
    /// Folders by path relative to the root (the root is ""), in path order.
    pub dirs: Vec<(String, Stat)>,
    /// Files in path order.
    pub files: Vec<(FileDigest, Stat)>,
}

/// Every regular file under `root` with its hash, and the stats of folders and files. `known` gives the hash of a
/// file whose stat it recognises, so that only other files are read.
pub(crate) fn hash_tree_known(
    root: &Path,
    known: &(dyn Fn(&str, &Stat) -> Option<String> + Sync),
    on_file: &(dyn Fn() + Sync),
) -> Result<StatedTree, HashError> {
    let (dirs, files) = walk(root)?;
    let files = files
        .par_iter()
        .map(|(rel, stat)| {
            let sha256 = match known(rel, stat) {
                Some(sha) => sha,
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
    format!("sha256:{}", hex(&hasher.finalize()))
}

/// What the stat caches compare: a file (or folder) whose size, mtime and inode are unchanged is taken as unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stat {
    pub size: u64,
    pub mtime_ns: i128,
    pub inode: u64,
}

impl Stat {
    /// The stat of `path`, following links.
    pub fn of(path: &Path) -> std::io::Result<Stat> {
        std::fs::metadata(path).map(|m| Stat {
            size: m.size(),
            mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
            inode: m.ino(),
        })
    }
}

/// Every folder and every file under `root` with its stat, in path order. A folder is stat'ed before it is listed;
/// each file relative to its open folder (no path walk from the root per file), in parallel.
#[allow(clippy::type_complexity)]
fn walk(root: &Path) -> Result<(Vec<(String, Stat)>, Vec<(String, Stat)>), HashError> {
    let meta = std::fs::metadata(root).map_err(|e| io_err(root, e))?;
    if !meta.is_dir() {
        return Err(io_err(root, std::io::Error::other("not a directory")));
    }
    let listed = list_dirs(root, &meta)?;
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

/// Every directory under `root` with its files (symbolic links followed), from directory listings alone: the file
/// type and inode come with each entry, so only a symbolic link costs a `stat` here. A directory reached twice (a
/// link cycle) is read once.
fn list_dirs(root: &Path, root_meta: &std::fs::Metadata) -> Result<Vec<DirFiles>, HashError> {
    use std::os::unix::fs::DirEntryExt;
    let mut seen_dirs = std::collections::HashSet::from([(root_meta.dev(), root_meta.ino())]);
    let mut pending = vec![(String::new(), root_meta.dev())];
    let mut listed = Vec::new();
    while let Some((rel_dir, dev)) = pending.pop() {
        let dir = root.join(&rel_dir);
        let stat = Stat::of(&dir).map_err(|e| io_err(&dir, e))?;
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(|e| io_err(&dir, e))? {
            let entry = entry.map_err(|e| io_err(&dir, e))?;
            let name = entry
                .file_name()
                .into_string()
                .map_err(|_| HashError::NonUtf8(entry.path()))?;
            let mut kind = entry.file_type().map_err(|e| io_err(&entry.path(), e))?;
            let mut id = (dev, entry.ino());
            if kind.is_symlink() {
                let target =
                    std::fs::metadata(entry.path()).map_err(|e| io_err(&entry.path(), e))?;
                kind = target.file_type();
                id = (target.dev(), target.ino());
            }
            if kind.is_dir() && seen_dirs.insert(id) {
                let rel = match rel_dir.is_empty() {
                    true => name,
                    false => format!("{rel_dir}/{name}"),
                };
                pending.push((rel, id.0));
            } else if kind.is_file() {
                names.push(name);
            }
        }
        listed.push(DirFiles {
            rel: rel_dir,
            stat,
            names,
        });
    }
    Ok(listed)
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
                inode: st.st_ino,
            };
            Ok((rel, stat))
        })
        .collect()
}

/// The stat cache's lines (`inode size mtime_ns sha256 path`, tab-separated), borrowed from its text and sorted by
/// path for lookups; unreadable lines are left out (their files are hashed again).
struct StatCache<'a>(Vec<(&'a str, Stat, &'a str)>);

impl<'a> StatCache<'a> {
    fn parse(text: &'a str) -> Self {
        let mut lines: Vec<(&str, Stat, &str)> = text
            .lines()
            .filter_map(|line| {
                let mut f = line.splitn(5, '\t');
                let stat = Stat {
                    inode: f.next()?.parse().ok()?,
                    size: f.next()?.parse().ok()?,
                    mtime_ns: f.next()?.parse().ok()?,
                };
                let sha = f.next()?;
                Some((f.next()?, stat, sha))
            })
            .collect();
        // Written in path order, so normally already sorted.
        if !lines.is_sorted_by(|a, b| a.0 < b.0) {
            lines.sort_unstable_by(|a, b| a.0.cmp(b.0));
            lines.dedup_by(|a, b| a.0 == b.0);
        }
        StatCache(lines)
    }

    /// The recorded stat and sha256 of `path`.
    fn get(&self, path: &str) -> Option<(&Stat, &'a str)> {
        let i = self.0.binary_search_by(|e| e.0.cmp(path)).ok()?;
        Some((&self.0[i].1, self.0[i].2))
    }
}

/// Stats are recorded only for what was last written 2 s ago or earlier (a file written again within the same
/// clock tick would keep its mtime): the time before which that holds, in ns since the epoch.
pub(crate) fn settled_before_ns() -> i128 {
    let settled = SystemTime::now()
        .checked_sub(Duration::from_secs(2))
        .unwrap_or(UNIX_EPOCH);
    settled
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as i128
}

fn save_stat_cache(
    path: &Path,
    hashed: &[(FileDigest, Stat)],
    loaded: &StatCache,
) -> Result<(), IoError> {
    let fresh_ns = settled_before_ns();
    let keep: Vec<&(FileDigest, Stat)> = hashed
        .iter()
        .filter(|(_, s)| s.mtime_ns < fresh_ns)
        .collect();
    let unchanged = keep.len() == loaded.0.len()
        && keep.iter().all(|(d, s)| {
            loaded
                .get(&d.path)
                .is_some_and(|(ls, sha)| ls == s && sha == d.sha256)
        });
    if unchanged {
        return Ok(());
    }
    let mut out = String::new();
    for (d, s) in keep {
        let _ = writeln!(
            out,
            "{}\t{}\t{}\t{}\t{}",
            s.inode, s.size, s.mtime_ns, d.sha256, d.path
        );
    }
    crate::fsio::write_atomic(path, out.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::sha256_bytes;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn links_are_followed_and_a_link_cycle_is_read_once() {
        let dir = crate::testutil::tempdir();
        std::fs::create_dir_all(dir.join("a")).unwrap();
        std::fs::write(dir.join("a/x.jpg"), b"x").unwrap();
        std::os::unix::fs::symlink("..", dir.join("a/up")).unwrap();
        let outside = crate::testutil::tempdir();
        std::fs::write(outside.join("y.jpg"), b"y").unwrap();
        std::os::unix::fs::symlink(&*outside, dir.join("linked")).unwrap();
        let files = hash_tree(&dir, None, &|| {}).unwrap();
        let paths: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["a/x.jpg", "linked/y.jpg"]);
    }

    #[test]
    fn hashes_every_file_in_path_order() {
        let dir = crate::testutil::tempdir();
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

    #[test]
    fn stat_cache_entries_are_reused_and_changed_files_rehashed() {
        let dir = crate::testutil::tempdir();
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
