//! Where and when something ran: host name, git commit and dirty flag of the project, UTC timestamps.

use serde::{Deserialize, Serialize};
use std::path::Path;
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GitState {
    /// `HEAD`'s commit, or null outside a git checkout.
    pub commit: Option<String>,
    /// Tracked files other than the rendered `reports/` differ from `HEAD`.
    pub dirty: bool,
}

/// The git state of the checkout containing a folder, asked of git on first use only: a run that computes nothing
/// spawns no git process.
pub struct LazyGitState {
    dir: std::path::PathBuf,
    state: std::sync::OnceLock<GitState>,
}

impl LazyGitState {
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
            state: std::sync::OnceLock::new(),
        }
    }

    pub fn get(&self) -> &GitState {
        self.state.get_or_init(|| git_state(&self.dir))
    }
}

/// The git state of the checkout containing `dir` (the project root). The rendered reports under `reports/` are
/// what runs write, not what they compute from, so a run that follows another's report is not dirty for it.
pub fn git_state(dir: &Path) -> GitState {
    let run = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(dir)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let commit = run(&["rev-parse", "HEAD"]);
    let dirty = commit.is_some()
        && run(&[
            "status",
            "--porcelain",
            "--untracked-files=no",
            "--",
            ".",
            ":(exclude)reports",
        ])
        .is_some_and(|s| !s.is_empty());
    GitState { commit, dirty }
}

/// This machine's host name.
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates on success.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "unknown".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// `time` as an RFC 3339 UTC timestamp with millisecond precision.
pub fn utc_timestamp(time: SystemTime) -> String {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_millis()
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_changed_report_does_not_make_the_checkout_dirty_and_a_changed_source_does() {
        let dir = mgat_testutil::tempdir();
        let git = |args: &[&str]| {
            let ok = Command::new("git")
                .args(["-c", "user.name=t", "-c", "user.email=t@t"])
                .args(args)
                .current_dir(&*dir)
                .output()
                .unwrap()
                .status
                .success();
            assert!(ok, "git {args:?}");
        };
        git(&["init", "-q"]);
        std::fs::create_dir_all(dir.join("reports/a")).unwrap();
        std::fs::write(dir.join("reports/a/results.csv"), "x\n").unwrap();
        std::fs::write(dir.join("spec.yaml"), "x\n").unwrap();
        git(&["add", "."]);
        git(&["commit", "-qm", "init"]);
        assert!(!git_state(&dir).dirty);
        std::fs::write(dir.join("reports/a/results.csv"), "y\n").unwrap();
        assert!(!git_state(&dir).dirty, "a re-rendered report is an output");
        std::fs::write(dir.join("spec.yaml"), "y\n").unwrap();
        assert!(git_state(&dir).dirty);
    }

    #[test]
    fn timestamps_match_known_dates() {
        assert_eq!(utc_timestamp(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        // 2000-02-29T12:34:56.789Z (a leap day) is 951827696.789 s after the epoch.
        let t = UNIX_EPOCH + Duration::from_millis(951_827_696_789);
        assert_eq!(utc_timestamp(t), "2000-02-29T12:34:56.789Z");
    }
}
