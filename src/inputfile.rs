//! What a file the user names (the lock file, a pretrained checkpoint, a checkpoint to inspect) must be before mgat
//! reads it: a regular file. A FIFO would block the read forever, a device such as `/dev/zero` would be read
//! without end, a folder or a link loop cannot be read; each is refused at once, saying what the path is.

use std::os::unix::fs::FileTypeExt;
use std::path::Path;

/// `Ok` for a regular file, or for a path that does not exist (the caller decides what absence means); otherwise
/// an error that says what the path is instead.
pub fn check_regular(path: &Path) -> Result<(), std::io::Error> {
    let what = match std::fs::metadata(path) {
        Ok(meta) => {
            let kind = meta.file_type();
            if kind.is_file() {
                return Ok(());
            } else if kind.is_dir() {
                "a folder"
            } else if kind.is_fifo() {
                "a FIFO (named pipe)"
            } else if kind.is_char_device() {
                "a character device"
            } else if kind.is_block_device() {
                "a block device"
            } else if kind.is_socket() {
                "a socket"
            } else {
                "not a regular file"
            }
        }
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
    fn special_files_are_named_and_refused() {
        let dir = mgat_testutil::tempdir();
        let file = dir.join("f");
        std::fs::write(&file, b"x").unwrap();
        check_regular(&file).unwrap();
        check_regular(&dir.join("absent")).unwrap();
        let message = |p: &Path| check_regular(p).unwrap_err().to_string();
        assert!(message(&dir).ends_with("is a folder, not a regular file"));
        assert!(message(Path::new("/dev/zero")).contains("a character device"));
        let fifo = dir.join("pipe");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        assert!(message(&fifo).contains("a FIFO"));
        let a = dir.join("a");
        std::os::unix::fs::symlink(dir.join("b"), &a).unwrap();
        std::os::unix::fs::symlink(&a, dir.join("b")).unwrap();
        assert!(message(&a).contains("a symbolic link loop"));
    }
}
