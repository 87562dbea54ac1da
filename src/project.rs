//! The project's folders, owned by one type, as cargo's `Workspace` owns a workspace's: the root (the nearest
//! folder with a `datasets.lock`), its specs under `experiments/`, the committed reports under `reports/<spec>/`,
//! where runs with `--set` report (`.mgat/reports/`), and the default lock file and cache. The commands take these
//! folders from it; `mgat diff` still names `reports/` inside a git revision itself.

use mgat_util::fsio::IoError;
use std::path::{Path, PathBuf};

/// The lock file whose folder is a project's root.
pub const LOCK_FILE: &str = "datasets.lock";

#[derive(Debug, Clone, PartialEq)]
pub struct Project {
    root: PathBuf,
}

impl Project {
    /// The project containing `dir`: its nearest ancestor (or itself) with a `datasets.lock`, else `dir`.
    pub fn containing(dir: &Path) -> Project {
        let root = dir
            .ancestors()
            .find(|d| d.join(LOCK_FILE).is_file())
            .unwrap_or(dir);
        Project {
            root: root.to_path_buf(),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `experiments/`: the specs `cache gc` keeps the entries of and `report --paper` may name.
    pub fn experiments(&self) -> PathBuf {
        self.root.join("experiments")
    }

    /// Every `*.yaml`/`*.yml` file under `experiments/`, sorted; `NotFound` when there is no such folder.
    pub fn spec_files(&self) -> Result<Vec<PathBuf>, IoError> {
        let dir = self.experiments();
        let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map_err(IoError::at(&dir))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
            .collect();
        paths.sort();
        Ok(paths)
    }

    /// `reports/`: the committed reports, `paper.yaml` and the index page.
    pub fn reports(&self) -> PathBuf {
        self.root.join("reports")
    }

    /// `reports/<spec>/`.
    pub fn report_dir(&self, spec: &str) -> PathBuf {
        self.reports().join(spec)
    }

    /// Where a run with `--set` overrides writes its reports: results the committed specs would not give, never
    /// under `reports/`.
    pub fn overridden_reports(&self) -> PathBuf {
        self.root.join(".mgat").join("reports")
    }

    /// The lock file unless `--lock` names another.
    pub fn default_lock(&self) -> PathBuf {
        self.root.join(LOCK_FILE)
    }

    /// The cache unless `--cache` or `MGAT_CACHE` names another.
    pub fn default_cache(&self) -> PathBuf {
        self.root.join(".mgat").join("cache")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_root_is_the_nearest_folder_with_a_lock() {
        let dir = mgat_testutil::tempdir();
        std::fs::create_dir_all(dir.join("a/b")).unwrap();
        assert_eq!(
            Project::containing(&dir.join("a/b")).root(),
            dir.join("a/b")
        );
        std::fs::write(dir.join("a").join(LOCK_FILE), "datasets: {}\n").unwrap();
        let project = Project::containing(&dir.join("a/b"));
        assert_eq!(project.root(), dir.join("a"));
        assert_eq!(project.report_dir("q"), dir.join("a/reports/q"));
        assert!(project.spec_files().unwrap_err().is_not_found());
        std::fs::create_dir_all(dir.join("a/experiments")).unwrap();
        for f in ["b.yaml", "a.yml", "notes.txt"] {
            std::fs::write(dir.join("a/experiments").join(f), "").unwrap();
        }
        let names: Vec<_> = project
            .spec_files()
            .unwrap()
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["a.yml", "b.yaml"]);
    }
}
