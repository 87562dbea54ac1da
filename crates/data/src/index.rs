//! Dataset indexers: walk a dataset root in its on-disk layout into a typed index of (path, pid, camid) per split.
//! Identity and camera come from the file name only, never the parent path. Market-1501 junk (pid −1) is dropped;
//! distractors (pid 0) stay in the gallery; training pids are relabelled 0..n in ascending order of raw pid;
//! query and gallery pids keep their raw values. Camera ids are 0-based, as in torchreid.

use mgat_util::fsio::IoError;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The on-disk layouts mgat reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Format {
    #[serde(rename = "market1501")]
    Market1501,
    #[serde(rename = "dukemtmc-reid")]
    DukeMtmcReid,
    /// CUHK03-NP, `detected` or `labeled`: the root is that folder, in Market layout.
    #[serde(rename = "cuhk03-np")]
    Cuhk03Np,
    #[serde(rename = "msmt17")]
    Msmt17,
    /// mgat's synthetic dataset, generated in Market-1501 layout.
    #[serde(rename = "synth")]
    Synth,
}

impl Format {
    pub const ALL: [Format; 5] = [
        Format::Market1501,
        Format::DukeMtmcReid,
        Format::Cuhk03Np,
        Format::Msmt17,
        Format::Synth,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Format::Market1501 => "market1501",
            Format::DukeMtmcReid => "dukemtmc-reid",
            Format::Cuhk03Np => "cuhk03-np",
            Format::Msmt17 => "msmt17",
            Format::Synth => "synth",
        }
    }

    pub fn parse(name: &str) -> Option<Format> {
        Self::ALL.into_iter().find(|f| f.name() == name)
    }
}

/// One image: path relative to the dataset root (`/`-separated), identity and 0-based camera.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    pub path: String,
    pub pid: i64,
    pub camid: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DatasetIndex {
    pub format: Format,
    pub train: Vec<Item>,
    pub query: Vec<Item>,
    pub gallery: Vec<Item>,
    pub num_train_pids: usize,
    pub num_cameras: usize,
}

/// What an index holds, in counts: the index stage's manifest summary.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexSummary {
    pub train_images: usize,
    pub train_ids: usize,
    pub query_images: usize,
    pub gallery_images: usize,
    pub cameras: usize,
}

impl DatasetIndex {
    pub fn summary(&self) -> IndexSummary {
        IndexSummary {
            train_images: self.train.len(),
            train_ids: self.num_train_pids,
            query_images: self.query.len(),
            gallery_images: self.gallery.len(),
            cameras: self.num_cameras,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error(transparent)]
    Io(#[from] IoError),
    #[error("{0}: missing; a {1} root holds {2}")]
    MissingDir(PathBuf, &'static str, &'static str),
    #[error("{file}: cannot read identity and camera from the file name ({expected})")]
    BadName {
        file: PathBuf,
        expected: &'static str,
    },
    #[error(
        "{list}:{line}: `{entry}`: label {label} differs from the identity {pid} in the file name"
    )]
    LabelMismatch {
        list: PathBuf,
        line: usize,
        entry: String,
        label: i64,
        pid: i64,
    },
    #[error("{list}:{line}: `{entry}`: expected `relative/path.jpg LABEL`")]
    BadListLine {
        list: PathBuf,
        line: usize,
        entry: String,
    },
    #[error("{0}: the dataset has no {1} images")]
    Empty(PathBuf, &'static str),
}

/// Indexes the dataset at `root` in `format`.
/// The index stage's output: the typed (path, pid, camid) list of each split, as JSON.
pub const INDEX_FILE: &str = "index.json";

/// Indexes the `format` tree at `root` into `out/index.json`; what it holds.
pub fn write_index(format: Format, root: &Path, out: &Path) -> Result<IndexSummary, IndexError> {
    let idx = index(format, root)?;
    let json = serde_json::to_vec(&idx).map_err(|e| IoError::new(out, std::io::Error::other(e)))?;
    mgat_util::fsio::write_atomic(&out.join(INDEX_FILE), &json)?;
    Ok(idx.summary())
}

pub fn index(format: Format, root: &Path) -> Result<DatasetIndex, IndexError> {
    let (train, query, gallery) = match format {
        Format::Market1501 | Format::Synth | Format::DukeMtmcReid | Format::Cuhk03Np => {
            market_layout(format, root)?
        }
        Format::Msmt17 => msmt17_layout(root)?,
    };
    for (items, split) in [
        (&train, "training"),
        (&query, "query"),
        (&gallery, "gallery"),
    ] {
        if items.is_empty() {
            return Err(IndexError::Empty(root.to_path_buf(), split));
        }
    }
    let (train, num_train_pids) = relabel(train);
    let cameras: BTreeSet<u32> = train
        .iter()
        .chain(&query)
        .chain(&gallery)
        .map(|i| i.camid)
        .collect();
    Ok(DatasetIndex {
        format,
        train,
        query,
        gallery,
        num_train_pids,
        num_cameras: cameras.len(),
    })
}

type Splits = (Vec<Item>, Vec<Item>, Vec<Item>);

const MARKET_DIRS: &str = "bounding_box_train/, query/ and bounding_box_test/";
const MARKET_NAME: &str = "expected PID_cC… like 0002_c1s1_000451_03.jpg";

fn market_layout(format: Format, root: &Path) -> Result<Splits, IndexError> {
    let split = |dir: &str| -> Result<Vec<Item>, IndexError> {
        let path = root.join(dir);
        if !path.is_dir() {
            return Err(IndexError::MissingDir(path, format.name(), MARKET_DIRS));
        }
        let mut items = Vec::new();
        for file in image_files(&path)? {
            let name = file
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            let (pid, camid) = parse_market_name(name).ok_or_else(|| IndexError::BadName {
                file: file.clone(),
                expected: MARKET_NAME,
            })?;
            if pid == -1 {
                continue; // Market-1501 junk images
            }
            items.push(Item {
                path: format!("{dir}/{name}"),
                pid,
                camid,
            });
        }
        Ok(items)
    };
    Ok((
        split("bounding_box_train")?,
        split("query")?,
        split("bounding_box_test")?,
    ))
}

/// `PID_cC…`: the identity before the first `_`, the 1-based camera digits after `c` (Market `c1s1`, Duke `c2`,
/// CUHK03-NP `c1`).
fn parse_market_name(name: &str) -> Option<(i64, u32)> {
    let mut parts = name.split('_');
    let pid: i64 = parts.next()?.parse().ok()?;
    let cam_part = parts.next()?.strip_prefix('c')?;
    let digits: String = cam_part.chars().take_while(char::is_ascii_digit).collect();
    let cam: u32 = digits.parse().ok()?;
    (pid >= -1 && cam >= 1).then_some((pid, cam - 1))
}

const MSMT_NAME: &str = "expected PID_INDEX_CAM_… like 0000_000_01_0303morning_0015_0.jpg";

/// MSMT17 (V1 `train/`+`test/` or V2 `mask_train_v2/`+`mask_test_v2/`) with `list_{train,val,query,gallery}.txt`:
/// train is list_train + list_val. The pid in the file name must equal the list's label.
fn msmt17_layout(root: &Path) -> Result<Splits, IndexError> {
    let (train_dir, test_dir) = if root.join("mask_train_v2").is_dir() {
        ("mask_train_v2", "mask_test_v2")
    } else {
        ("train", "test")
    };
    for dir in [train_dir, test_dir] {
        if !root.join(dir).is_dir() {
            return Err(IndexError::MissingDir(
                root.join(dir),
                "msmt17",
                "train/ and test/ (or mask_train_v2/, mask_test_v2/) and list_*.txt",
            ));
        }
    }
    let read = |list: &str, dir: &str| read_msmt_list(&root.join(list), dir);
    let mut train = read("list_train.txt", train_dir)?;
    train.extend(read("list_val.txt", train_dir)?);
    Ok((
        train,
        read("list_query.txt", test_dir)?,
        read("list_gallery.txt", test_dir)?,
    ))
}

fn read_msmt_list(list: &Path, dir: &str) -> Result<Vec<Item>, IndexError> {
    let text = std::fs::read_to_string(list)
        .map_err(|source| IndexError::Io(IoError::new(list.to_path_buf(), source)))?;
    let mut items = Vec::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let bad_line = || IndexError::BadListLine {
            list: list.to_path_buf(),
            line: i + 1,
            entry: line.to_string(),
        };
        let mut fields = line.split_whitespace();
        let (Some(rel), Some(label), None) = (fields.next(), fields.next(), fields.next()) else {
            return Err(bad_line());
        };
        let label: i64 = label.parse().map_err(|_| bad_line())?;
        let name = rel.rsplit('/').next().unwrap_or(rel);
        let bad_name = || IndexError::BadName {
            file: PathBuf::from(dir).join(rel),
            expected: MSMT_NAME,
        };
        let parts: Vec<&str> = name.split('_').collect();
        let pid: i64 = parts
            .first()
            .and_then(|p| p.parse().ok())
            .ok_or_else(bad_name)?;
        let cam: u32 = parts
            .get(2)
            .and_then(|c| c.parse().ok())
            .filter(|&c| c >= 1)
            .ok_or_else(bad_name)?;
        if pid != label {
            return Err(IndexError::LabelMismatch {
                list: list.to_path_buf(),
                line: i + 1,
                entry: line.to_string(),
                label,
                pid,
            });
        }
        items.push(Item {
            path: format!("{dir}/{rel}"),
            pid,
            camid: cam - 1,
        });
    }
    Ok(items)
}

fn image_files(dir: &Path) -> Result<Vec<PathBuf>, IndexError> {
    let io_err = |source| IndexError::Io(IoError::new(dir.to_path_buf(), source));
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_err)? {
        let path = entry.map_err(io_err)?.path();
        // A folder named like an image is not one (the lock pins the files in it, if any).
        if path.is_dir() {
            continue;
        }
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        if matches!(ext.as_deref(), Some("jpg" | "jpeg" | "png")) {
            files.push(path);
        }
    }
    // One folder's files: byte order of the whole path is the order of their names (and of `Path`'s component
    // order), without `Path`'s component parsing per comparison (15% of a warm lock of Market-1501).
    files.sort_unstable_by(|a, b| a.as_os_str().cmp(b.as_os_str()));
    Ok(files)
}

/// Maps training pids to 0..n in ascending order of raw pid.
fn relabel(mut train: Vec<Item>) -> (Vec<Item>, usize) {
    let pids: Vec<i64> = train
        .iter()
        .map(|i| i.pid)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    for item in &mut train {
        item.pid = pids
            .binary_search(&item.pid)
            .map_or(0, |label| label as i64);
    }
    (train, pids.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(root: &Path, rel: &str) {
        let path = root.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, b"x").unwrap();
    }

    #[test]
    fn market_drops_junk_keeps_distractors_relabels_train() {
        let root = mgat_testutil::tempdir();
        for f in [
            "bounding_box_train/0002_c1s1_000451_03.jpg",
            "bounding_box_train/0007_c2s3_070952_01.jpg",
            "bounding_box_train/0002_c6s1_000476_01.jpg",
            "bounding_box_train/Thumbs.db",
            "query/0001_c1s1_001051_00.jpg",
            "bounding_box_test/0001_c5s1_001426_01.jpg",
            "bounding_box_test/-1_c1s1_000401_03.jpg",
            "bounding_box_test/0000_c6s2_088393_02.jpg",
        ] {
            touch(&root, f);
        }
        // A folder named like an image is not one.
        std::fs::create_dir(root.join("bounding_box_train/0009_c1s1_000001_01.jpg")).unwrap();
        let idx = index(Format::Market1501, &root).unwrap();
        let train: Vec<_> = idx
            .train
            .iter()
            .map(|i| (i.path.as_str(), i.pid, i.camid))
            .collect();
        assert_eq!(
            train,
            [
                ("bounding_box_train/0002_c1s1_000451_03.jpg", 0, 0),
                ("bounding_box_train/0002_c6s1_000476_01.jpg", 0, 5),
                ("bounding_box_train/0007_c2s3_070952_01.jpg", 1, 1)
            ]
        );
        assert_eq!(idx.num_train_pids, 2);
        assert_eq!(
            idx.query,
            [Item {
                path: "query/0001_c1s1_001051_00.jpg".into(),
                pid: 1,
                camid: 0
            }]
        );
        let gallery: Vec<i64> = idx.gallery.iter().map(|i| i.pid).collect();
        assert_eq!(
            gallery,
            [0, 1],
            "junk dropped, distractor kept with raw pid 0"
        );
    }

    #[test]
    fn identity_comes_from_the_file_name_not_a_misleading_parent() {
        // A parent folder named like an identity and camera must not leak into the parse.
        let root = mgat_testutil::tempdir().join("0999_c9s9_trap");
        for f in [
            "bounding_box_train/0005_c3_f0044.jpg",
            "query/0010_c1_f0001.jpg",
            "bounding_box_test/0010_c8_f0002.jpg",
        ] {
            touch(&root, f);
        }
        let idx = index(Format::DukeMtmcReid, &root).unwrap();
        assert_eq!((idx.train[0].pid, idx.train[0].camid), (0, 2));
        assert_eq!((idx.query[0].pid, idx.query[0].camid), (10, 0));
        assert_eq!((idx.gallery[0].pid, idx.gallery[0].camid), (10, 7));
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn cuhk03_np_png_names() {
        let root = mgat_testutil::tempdir();
        for f in [
            "bounding_box_train/0003_c1_01.png",
            "bounding_box_train/0003_c2_06.png",
            "query/1368_c2_08.png",
            "bounding_box_test/1368_c1_01.png",
        ] {
            touch(&root, f);
        }
        let idx = index(Format::Cuhk03Np, &root).unwrap();
        assert_eq!(idx.train.len(), 2);
        assert_eq!(idx.num_train_pids, 1);
        assert_eq!((idx.query[0].pid, idx.query[0].camid), (1368, 1));
    }

    #[test]
    fn msmt17_lists_with_train_plus_val() {
        let root = mgat_testutil::tempdir();
        for f in [
            "train/0000/0000_000_01_0303morning_0015_0.jpg",
            "train/0001/0001_003_07_0303noon_0102_1.jpg",
            "test/0000/0000_000_05_0303morning_0008_0.jpg",
            "test/0000/0000_001_14_0303afternoon_0114_2.jpg",
        ] {
            touch(&root, f);
        }
        std::fs::write(
            root.join("list_train.txt"),
            "0000/0000_000_01_0303morning_0015_0.jpg 0\n",
        )
        .unwrap();
        std::fs::write(
            root.join("list_val.txt"),
            "0001/0001_003_07_0303noon_0102_1.jpg 1\n",
        )
        .unwrap();
        std::fs::write(
            root.join("list_query.txt"),
            "0000/0000_000_05_0303morning_0008_0.jpg 0\n",
        )
        .unwrap();
        std::fs::write(
            root.join("list_gallery.txt"),
            "0000/0000_001_14_0303afternoon_0114_2.jpg 0\n",
        )
        .unwrap();
        let idx = index(Format::Msmt17, &root).unwrap();
        assert_eq!(idx.train.len(), 2);
        assert_eq!((idx.train[1].pid, idx.train[1].camid), (1, 6));
        assert_eq!(
            idx.query[0].path,
            "test/0000/0000_000_05_0303morning_0008_0.jpg"
        );
        assert_eq!(idx.gallery[0].camid, 13);
        std::fs::write(
            root.join("list_gallery.txt"),
            "0000/0000_001_14_0303afternoon_0114_2.jpg 3\n",
        )
        .unwrap();
        let err = index(Format::Msmt17, &root).unwrap_err().to_string();
        assert!(
            err.contains("list_gallery.txt:1") && err.contains("label 3"),
            "{err}"
        );
    }

    #[test]
    fn unparseable_names_and_missing_dirs_are_errors() {
        let root = mgat_testutil::tempdir();
        touch(&root, "bounding_box_train/img001.jpg");
        touch(&root, "query/0001_c1s1_0.jpg");
        touch(&root, "bounding_box_test/0001_c2s1_0.jpg");
        let err = index(Format::Market1501, &root).unwrap_err().to_string();
        assert!(err.contains("img001.jpg"), "{err}");
        let empty = mgat_testutil::tempdir();
        assert!(matches!(
            index(Format::Market1501, &empty),
            Err(IndexError::MissingDir(..))
        ));
    }
}
