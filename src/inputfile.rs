//! The one guarded way mgat reads a file a clone, a user or a cache holds (specs, the lock, paper.yaml, results.csv,
//! keys.json, report records, manifests, the ledger, stat caches, checkpoints): a regular file, of at most a size
//! bound for its kind. A FIFO would block a read forever, a device such as `/dev/zero` (directly or through a
//! committed symlink) would be read without end, a folder or a link loop cannot be read; each is refused at once,
//! saying what the path is. [`read_bounded`] opens without blocking and checks the opened file itself, so a path
//! swapped after a check cannot slip through.

use std::io::Read;
use std::path::Path;

/// Size bounds, per kind of file: far above any real one, far below what would exhaust memory.
pub mod limit {
    const MIB: u64 = 1024 * 1024;
    /// A spec, `paper.yaml`, `datasets.lock`.
    pub const TEXT_CONFIG: u64 = 16 * MIB;
    /// `results.csv`, `keys.json`, `reports/index.html`, a report's `.rendered-from.json`.
    pub const REPORT_FILE: u64 = 256 * MIB;
    /// A cache entry's `manifest.json`, a Slurm failure record, a recorded digest.
    pub const CACHE_RECORD: u64 = 64 * MIB;
    /// The trust ledger and the stat caches: a line per file of every entry or dataset.
    pub const STAT_RECORD: u64 = 1024 * MIB;
}

/// The bytes of the file at `path`: refused unless it is a regular file of at most `limit` bytes. A missing file is
/// the `NotFound` error, for the caller to decide what absence means.
pub fn read_bounded(path: &Path, limit: u64) -> Result<Vec<u8>, std::io::Error> {
    let refused = |message: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, message);
    let file = mgat_util::fsio::open_regular(path)?;
    let meta = file.metadata()?;
    if meta.len() > limit {
        return Err(refused(format!(
            "{} is {} bytes, more than the {limit} such a file may be",
            path.display(),
            meta.len()
        )));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(limit + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(refused(format!(
            "{} grew past {limit} bytes while it was read",
            path.display()
        )));
    }
    Ok(bytes)
}

/// [`read_bounded`] as UTF-8 text.
pub fn read_text_bounded(path: &Path, limit: u64) -> Result<String, std::io::Error> {
    String::from_utf8(read_bounded(path, limit)?).map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{} is not UTF-8 text", path.display()),
        )
    })
}

/// `Ok` for a regular file, or for a path that does not exist (the caller decides what absence means); otherwise
/// an error that says what the path is instead.
pub fn check_regular(path: &Path) -> Result<(), std::io::Error> {
    let what = match std::fs::metadata(path) {
        Ok(meta) => match mgat_util::fsio::not_regular(meta.file_type()) {
            None => return Ok(()),
            Some(what) => what,
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => "a symbolic link loop",
        Err(e) => return Err(e),
    };
    Err(std::io::Error::new(
        std::io::ErrorKind::InvalidInput,
        format!("{} is {what}, not a regular file", path.display()),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bounded_read_refuses_special_files_without_blocking_and_oversized_ones() {
        let dir = mgat_testutil::tempdir();
        let file = dir.join("f");
        std::fs::write(&file, b"abc").unwrap();
        assert_eq!(read_bounded(&file, 3).unwrap(), b"abc");
        assert!(
            read_bounded(&file, 2)
                .unwrap_err()
                .to_string()
                .contains("more than the 2")
        );
        assert_eq!(
            read_bounded(&dir.join("absent"), 9).unwrap_err().kind(),
            std::io::ErrorKind::NotFound
        );
        let message = |p: &Path| read_bounded(p, 1 << 20).unwrap_err().to_string();
        assert!(message(&dir).contains("is a folder"));
        assert!(message(Path::new("/dev/zero")).contains("a character device"));
        // A committed symlink to a device is the device.
        let link = dir.join("zero");
        std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
        assert!(message(&link).contains("a character device"));
        // A FIFO with no writer: refused at once, not waited on.
        let (fifo, loop_start) = fifo_and_link_loop(&dir);
        assert!(message(&fifo).contains("a FIFO"));
        assert!(message(&loop_start).contains("a symbolic link loop"));
        std::fs::write(&file, [0xff, 0xfe]).unwrap();
        assert!(
            read_text_bounded(&file, 9)
                .unwrap_err()
                .to_string()
                .contains("not UTF-8")
        );
    }

    #[test]
    fn special_files_are_named_and_refused() {
        let dir = mgat_testutil::tempdir();
        let file = dir.join("f");
        std::fs::write(&file, b"x").unwrap();
        check_regular(&file).unwrap();
        check_regular(&dir.join("absent")).unwrap();
        let message = |p: &Path| check_regular(p).unwrap_err().to_string();
        assert!(message(&dir).ends_with("is a folder, not a regular file"));
        assert!(message(Path::new("/dev/zero")).contains("a character device"));
        let (fifo, loop_start) = fifo_and_link_loop(&dir);
        assert!(message(&fifo).contains("a FIFO"));
        assert!(message(&loop_start).contains("a symbolic link loop"));
    }

    /// A FIFO and the start of a symbolic link loop in `dir`.
    fn fifo_and_link_loop(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
        let fifo = dir.join("pipe");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let a = dir.join("a");
        std::os::unix::fs::symlink(dir.join("b"), &a).unwrap();
        std::os::unix::fs::symlink(&a, dir.join("b")).unwrap();
        (fifo, a)
    }
}
