//! Hashing a dataset tree: list it from directory entries, `stat` and SHA-256 every file on all cores (`rayon`), and
//! keep a stat cache (path, size, mtime, inode → sha256) so that a warm re-hash costs one `stat` per file and reads
//! only files that changed.

use crate::digest::{hex, sha256_file};
use crate::fsio::IoError;
use rayon::prelude::*;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
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
    let files = walk(root)?;
    let cache_text = stat_cache
        .and_then(|p| std::fs::read_to_string(p).ok())
        .unwrap_or_default();
    let cached = parse_stat_cache(&cache_text);
    let hashed: Vec<(FileDigest, Stat)> = files
        .par_iter()
        .map(|(rel, stat)| {
            let sha256 = match cached.get(rel.as_str()) {
                Some((s, sha)) if s == stat => sha.to_string(),
                _ => {
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
    if let Some(cache_path) = stat_cache {
        // A failed cache write only costs speed next time.
        let _ = save_stat_cache(cache_path, &hashed, &cached);
    }
    Ok(hashed.into_iter().map(|(d, _)| d).collect())
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stat {
    size: u64,
    mtime_ns: i128,
    inode: u64,
}

/// Every file under `root` with its stat, in path order; the stats run in parallel.
fn walk(root: &Path) -> Result<Vec<(String, Stat)>, HashError> {
    let io_err = |path: &Path, source: std::io::Error| {
        HashError::Io(IoError::new(path.to_path_buf(), source))
    };
    let meta = std::fs::metadata(root).map_err(|e| io_err(root, e))?;
    if !meta.is_dir() {
        return Err(io_err(root, std::io::Error::other("not a directory")));
    }
    let mut files = list_files(root, &meta)?;
    files.par_sort_unstable();
    // Small trees (a cache entry's few outputs) are not worth splitting across threads.
    files
        .into_par_iter()
        .with_min_len(256)
        .map(|rel| {
            let path = root.join(&rel);
            let meta = std::fs::metadata(&path).map_err(|e| io_err(&path, e))?;
            let mtime_ns = i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec());
            Ok((
                rel,
                Stat {
                    size: meta.len(),
                    mtime_ns,
                    inode: meta.ino(),
                },
            ))
        })
        .collect()
}

/// Every file under `root` (symbolic links followed), by `/`-separated relative path, from directory listings alone:
/// the file type and inode come with each entry, so only a symbolic link costs a `stat` here. A directory reached
/// twice (a link cycle) is read once.
fn list_files(root: &Path, root_meta: &std::fs::Metadata) -> Result<Vec<String>, HashError> {
    let io_err = |path: &Path, source: std::io::Error| {
        HashError::Io(IoError::new(path.to_path_buf(), source))
    };
    use std::os::unix::fs::DirEntryExt;
    let mut seen_dirs = std::collections::HashSet::from([(root_meta.dev(), root_meta.ino())]);
    let mut dirs = vec![(String::new(), root_meta.dev())];
    let mut files = Vec::new();
    while let Some((rel_dir, dev)) = dirs.pop() {
        let dir = root.join(&rel_dir);
        for entry in std::fs::read_dir(&dir).map_err(|e| io_err(&dir, e))? {
            let entry = entry.map_err(|e| io_err(&dir, e))?;
            let name = entry
                .file_name()
                .into_string()
                .map_err(|_| HashError::NonUtf8(entry.path()))?;
            let rel = match rel_dir.is_empty() {
                true => name,
                false => format!("{rel_dir}/{name}"),
            };
            let mut kind = entry.file_type().map_err(|e| io_err(&entry.path(), e))?;
            let mut id = (dev, entry.ino());
            if kind.is_symlink() {
                let target =
                    std::fs::metadata(entry.path()).map_err(|e| io_err(&entry.path(), e))?;
                kind = target.file_type();
                id = (target.dev(), target.ino());
            }
            if kind.is_dir() && seen_dirs.insert(id) {
                dirs.push((rel, id.0));
            } else if kind.is_file() {
                files.push(rel);
            }
        }
    }
    Ok(files)
}

/// The stat cache's lines (`inode size mtime_ns sha256 path`, tab-separated) by path, borrowed from its text;
/// unreadable lines are left out (their files are hashed again).
fn parse_stat_cache(text: &str) -> HashMap<&str, (Stat, &str)> {
    text.lines()
        .filter_map(|line| {
            let mut f = line.splitn(5, '\t');
            let stat = Stat {
                inode: f.next()?.parse().ok()?,
                size: f.next()?.parse().ok()?,
                mtime_ns: f.next()?.parse().ok()?,
            };
            let sha = f.next()?;
            Some((f.next()?, (stat, sha)))
        })
        .collect()
}

fn save_stat_cache(
    path: &Path,
    hashed: &[(FileDigest, Stat)],
    loaded: &HashMap<&str, (Stat, &str)>,
) -> Result<(), IoError> {
    let fresh = SystemTime::now()
        .checked_sub(Duration::from_secs(2))
        .unwrap_or(UNIX_EPOCH);
    let fresh_ns = fresh
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as i128;
    let keep: Vec<&(FileDigest, Stat)> = hashed
        .iter()
        .filter(|(_, s)| s.mtime_ns < fresh_ns)
        .collect();
    let unchanged = keep.len() == loaded.len()
        && keep.iter().all(|(d, s)| {
            loaded
                .get(d.path.as_str())
                .is_some_and(|(ls, sha)| ls == s && *sha == d.sha256)
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
