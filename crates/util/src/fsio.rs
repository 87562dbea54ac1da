//! File-system access with the path in every error, and the one durable atomic write: the bytes go to a sibling
//! temporary file that is synced, renamed into place, and the folder synced, so after a crash readers see the old
//! file or the new one, never half of one.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

/// An I/O failure and the path it concerns. Its message says both, the path once (a reason that already begins
/// with it, as [`open_regular`]'s do, is not prefixed again); the I/O error is not also given as its `source()`, so
/// that a report of the whole error chain (`{:#}`) says the reason once.
#[derive(Debug, thiserror::Error)]
pub struct IoError {
    pub path: PathBuf,
    pub error: std::io::Error,
}

impl std::fmt::Display for IoError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let path = self.path.display().to_string();
        let reason = self.error.to_string();
        match reason.strip_prefix(&path) {
            Some(rest) if rest.starts_with(' ') => write!(f, "{reason}"),
            _ => write!(f, "{path}: {reason}"),
        }
    }
}

impl IoError {
    pub fn new(path: impl Into<PathBuf>, source: impl Into<std::io::Error>) -> Self {
        Self {
            path: path.into(),
            error: source.into(),
        }
    }

    /// A closure that attaches `path` to an error, for `map_err`.
    pub fn at(path: &Path) -> impl FnOnce(std::io::Error) -> IoError + '_ {
        move |source| IoError::new(path, source)
    }

    pub fn is_not_found(&self) -> bool {
        self.error.kind() == std::io::ErrorKind::NotFound
    }
}

/// Opens `path` for reading when it is a regular file, without ever blocking: a FIFO would block an open or a read
/// forever, a device such as `/dev/zero` would be read without end, a folder or a link loop cannot be read. Each is
/// refused at once (`InvalidInput`), saying what the path is; the opened file itself is checked, so a path swapped
/// after a check cannot slip through. A missing file is the `NotFound` error.
pub fn open_regular(path: &Path) -> Result<File, std::io::Error> {
    use std::os::unix::fs::OpenOptionsExt;
    let refused = |what: &str| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{} is {what}, not a regular file", path.display()),
        )
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => refused("a symbolic link loop"),
            _ => e,
        })?;
    match not_regular(file.metadata()?.file_type()) {
        None => Ok(file),
        Some(what) => Err(refused(what)),
    }
}

/// What a file type is when it is not a regular file.
pub fn not_regular(kind: std::fs::FileType) -> Option<&'static str> {
    use std::os::unix::fs::FileTypeExt;
    if kind.is_file() {
        None
    } else if kind.is_dir() {
        Some("a folder")
    } else if kind.is_fifo() {
        Some("a FIFO (named pipe)")
    } else if kind.is_char_device() {
        Some("a character device")
    } else if kind.is_block_device() {
        Some("a block device")
    } else if kind.is_socket() {
        Some("a socket")
    } else {
        Some("not a regular file")
    }
}

pub fn read(path: &Path) -> Result<Vec<u8>, IoError> {
    std::fs::read(path).map_err(IoError::at(path))
}

pub fn read_to_string(path: &Path) -> Result<String, IoError> {
    std::fs::read_to_string(path).map_err(IoError::at(path))
}

pub fn create_dir_all(path: &Path) -> Result<(), IoError> {
    std::fs::create_dir_all(path).map_err(IoError::at(path))
}

/// Removes a folder tree; one that does not exist is fine.
pub fn remove_dir_all(path: &Path) -> Result<(), IoError> {
    match std::fs::remove_dir_all(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(IoError::new(path, e)),
        _ => Ok(()),
    }
}

/// Renames `from` to `to` and syncs `to`'s folder, so the rename survives a crash.
pub fn rename_durable(from: &Path, to: &Path) -> Result<(), IoError> {
    std::fs::rename(from, to).map_err(IoError::at(to))?;
    sync_parent(to)
}

/// Writes `bytes` to `path` atomically and durably, creating the parent folder. Files are 0644 (less the umask).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), IoError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        create_dir_all(dir)?;
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp{}", std::process::id()));
    let written = File::create(&tmp).and_then(|mut f| {
        f.write_all(bytes)?;
        f.sync_all()
    });
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(IoError::new(&tmp, e));
    }
    rename_durable(&tmp, path)
}

/// Whether a file name is one of [`write_atomic`]'s temporaries (left behind only by a killed write).
pub fn is_temporary(name: &str) -> bool {
    name.starts_with('.') && name.contains(".tmp")
}

/// Syncs the folder holding `path` (a rename or a new file in it is then on disk).
pub fn sync_parent(path: &Path) -> Result<(), IoError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(IoError::at(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_io_error_says_its_path_and_reason_once_in_a_chain() {
        let err = read(Path::new("/no/such/file")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "/no/such/file: No such file or directory (os error 2)"
        );
        assert!(std::error::Error::source(&err).is_none());
        let dir = mgat_testutil::tempdir();
        let err = IoError::new(&*dir, open_regular(&dir).unwrap_err());
        assert_eq!(
            err.to_string(),
            format!("{} is a folder, not a regular file", dir.display())
        );
    }

    #[test]
    fn atomic_write_replaces_whole_files_and_names_paths_in_errors() {
        let dir = mgat_testutil::tempdir();
        let path = dir.join("sub/f.txt");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        let leftovers: Vec<_> = std::fs::read_dir(dir.join("sub"))
            .unwrap()
            .flatten()
            .collect();
        assert_eq!(leftovers.len(), 1, "no temporary file stays behind");
        let err = read(&dir.join("missing")).unwrap_err();
        assert!(
            err.is_not_found() && err.to_string().contains("missing"),
            "{err}"
        );
        let blocked = write_atomic(&path.join("under-a-file"), b"x").unwrap_err();
        assert!(blocked.to_string().contains("f.txt"), "{blocked}");
    }
}
