//! Where the synthetic generator puts each image and what it calls it, in each real dataset's own layout: folders,
//! file names, image format and list files (Market-1501 `0002_c1s1_000451_01.jpg`, DukeMTMC-reID
//! `0005_c2_f0046985.jpg`, CUHK03-NP `0003_c1_01.png`, MSMT17 `train/0000/0000_000_01_0303morning_0015_0.jpg` with
//! `list_*.txt`), at the parameters' scale or at an official release's exact split sizes, so that every indexer can
//! be tested end to end on its own layout.

use crate::{
    DISTRACTOR_PID, JUNK_PID, Job, Shot, Split, SynthParams, cameras_of, market_name, shots,
};
use mgat_data::index::Format;
use mgat_data::official::{Official, SplitSizes};
use mgat_util::rng::Rng;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Market-1501's `bounding_box_test/` holds 3,819 junk images besides the 15,913 the protocol uses (Zheng et al.,
/// ICCV 2015).
const MARKET_JUNK: u32 = 3_819;

/// A layout and a scale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// Market-1501 naming for [`Format::Synth`] too.
    pub format: Format,
    /// The release whose exact split sizes to generate; `None` for the parameters' scale.
    pub official: Option<Official>,
}

impl Default for Layout {
    fn default() -> Self {
        Layout {
            format: Format::Synth,
            official: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Encoding {
    Jpeg,
    Png,
}

impl Layout {
    /// Junk images are Market-1501's alone, distractors Market-1501's (pid 0) and DukeMTMC-reID's (gallery-only
    /// identities).
    pub fn takes_junk(&self) -> bool {
        matches!(self.format, Format::Market1501 | Format::Synth)
    }

    pub fn takes_distractors(&self) -> bool {
        matches!(
            self.format,
            Format::Market1501 | Format::Synth | Format::DukeMtmcReid
        )
    }

    /// The parameters the layout draws with: CUHK03-NP identities are seen by a camera pair.
    pub(crate) fn params(&self, p: &SynthParams) -> SynthParams {
        let mut p = p.clone();
        if self.format == Format::Cuhk03Np {
            p.cameras = 2;
        }
        if !self.takes_junk() {
            p.junk = 0;
        }
        if !self.takes_distractors() {
            p.distractors = 0;
        }
        p
    }

    pub(crate) fn encoding(&self) -> Encoding {
        match self.format {
            Format::Cuhk03Np => Encoding::Png,
            _ => Encoding::Jpeg,
        }
    }

    /// Folders the layout has even when empty.
    pub(crate) fn folders(&self) -> &'static [&'static str] {
        match self.format {
            Format::Msmt17 => &["train", "test"],
            _ => &["bounding_box_train", "query", "bounding_box_test"],
        }
    }

    /// Every image with its path.
    pub(crate) fn jobs(&self, p: &SynthParams) -> Vec<Job> {
        let shots = match &self.official {
            Some(release) => official_shots(p, &release.sizes, self.format),
            None => shots(p),
        };
        match self.format {
            Format::Market1501 | Format::Synth => shots.into_iter().map(market_job).collect(),
            Format::DukeMtmcReid => duke_jobs(shots),
            Format::Cuhk03Np => cuhk03_jobs(shots),
            Format::Msmt17 => msmt17_jobs(shots),
        }
    }

    /// Text files beside the images: MSMT17's `list_{train,val,query,gallery}.txt` (`relative/path.jpg LABEL`).
    pub(crate) fn list_files(&self, jobs: &[Job]) -> Vec<(&'static str, String)> {
        if self.format != Format::Msmt17 {
            return Vec::new();
        }
        let mut lists: BTreeMap<&'static str, String> = BTreeMap::new();
        for (i, job) in jobs.iter().enumerate() {
            let (dir, rel) = job.path.split_once('/').unwrap_or(("", &job.path));
            let list = match (job.shot.split, dir) {
                (Split::Train, _) if i % 14 == 13 => "list_val.txt",
                (Split::Train, _) => "list_train.txt",
                (Split::Query, _) => "list_query.txt",
                _ => "list_gallery.txt",
            };
            let label = rel
                .split('/')
                .next()
                .unwrap_or_default()
                .trim_start_matches('0');
            let label = if label.is_empty() { "0" } else { label };
            let _ = writeln!(lists.entry(list).or_default(), "{rel} {label}");
        }
        lists.into_iter().collect()
    }
}

fn split_dir(split: Split) -> &'static str {
    match split {
        Split::Train => "bounding_box_train",
        Split::Query => "query",
        Split::Gallery | Split::Junk => "bounding_box_test",
    }
}

fn market_job(shot: Shot) -> Job {
    Job {
        path: format!(
            "{}/{}",
            split_dir(shot.split),
            market_name(shot.pid, shot.camera, shot.seq, shot.frame, 1)
        ),
        shot,
    }
}

/// `0005_c2_f0046985.jpg`; each distractor image becomes its own gallery-only identity above the others.
fn duke_jobs(shots: Vec<Shot>) -> Vec<Job> {
    let mut next_distractor = shots.iter().map(|s| s.pid).max().unwrap_or(0) + 1;
    shots
        .into_iter()
        .map(|shot| {
            let pid = if shot.pid == DISTRACTOR_PID {
                next_distractor += 1;
                next_distractor - 1
            } else {
                shot.pid
            };
            Job {
                path: format!(
                    "{}/{pid:04}_c{}_f{:07}.jpg",
                    split_dir(shot.split),
                    shot.camera,
                    shot.frame
                ),
                shot,
            }
        })
        .collect()
}

/// `0003_c1_01.png`: the last field counts an identity's images over all splits.
fn cuhk03_jobs(shots: Vec<Shot>) -> Vec<Job> {
    let mut counts: BTreeMap<i32, u32> = BTreeMap::new();
    shots
        .into_iter()
        .map(|shot| {
            let n = counts.entry(shot.pid).or_default();
            *n += 1;
            Job {
                path: format!(
                    "{}/{:04}_c{}_{:02}.png",
                    split_dir(shot.split),
                    shot.pid,
                    shot.camera,
                    *n
                ),
                shot,
            }
        })
        .collect()
}

/// `train/0000/0000_000_01_0303morning_0015_0.jpg`: training and test identities are each numbered from 0 in their
/// own folder; the second field counts an identity's images.
fn msmt17_jobs(shots: Vec<Shot>) -> Vec<Job> {
    let number = |test: bool| -> BTreeMap<i32, usize> {
        let pids: std::collections::BTreeSet<i32> = shots
            .iter()
            .filter(|s| (s.split != Split::Train) == test)
            .map(|s| s.pid)
            .collect();
        pids.into_iter().enumerate().map(|(i, p)| (p, i)).collect()
    };
    let (train_ids, test_ids) = (number(false), number(true));
    let mut counts: BTreeMap<(bool, usize), u32> = BTreeMap::new();
    shots
        .into_iter()
        .map(|shot| {
            let test = shot.split != Split::Train;
            let pid = if test {
                test_ids[&shot.pid]
            } else {
                train_ids[&shot.pid]
            };
            let n = counts.entry((test, pid)).or_default();
            *n += 1;
            let dir = if test { "test" } else { "train" };
            Job {
                path: format!(
                    "{dir}/{pid:04}/{pid:04}_{:03}_{:02}_0303morning_{:04}_{}.jpg",
                    *n - 1,
                    shot.camera,
                    shot.frame,
                    shot.seq % 3
                ),
                shot,
            }
        })
        .collect()
}

/// `total` spread over `parts` as evenly as possible (the first `total % parts` get one more).
fn spread(total: usize, parts: usize) -> Vec<usize> {
    (0..parts)
        .map(|i| total / parts.max(1) + usize::from(i < total % parts.max(1)))
        .collect()
}

/// Shots with exactly a release's split sizes: each training identity's images, then each test identity's queries
/// and gallery images over its cameras in turn (so every query has a gallery image from another camera), then the
/// gallery-only identities (Market-1501's pid 0, DukeMTMC-reID's distractor identities) and Market-1501's junk.
fn official_shots(p: &SynthParams, sizes: &SplitSizes, format: Format) -> Vec<Shot> {
    let mut out = Vec::new();
    let mut next_pid = 1;
    let mut person = |split_counts: &[(Split, usize)], out: &mut Vec<Shot>| {
        let pid = next_pid;
        next_pid += 1;
        let cams = cameras_of(p, &mut Rng::new(p.seed, &[9, pid as u64]));
        let mut k = 0;
        for &(split, n) in split_counts {
            for _ in 0..n {
                out.push(Shot {
                    split,
                    pid,
                    camera: cams[k % cams.len()],
                    seq: 1 + (k as u32 % 6),
                    frame: 100 + 37 * k as u32,
                });
                k += 1;
            }
        }
    };
    for n in spread(sizes.train_images, sizes.train_ids) {
        person(&[(Split::Train, n)], &mut out);
    }
    let gallery = spread(sizes.gallery_images, sizes.gallery_ids);
    let queries = spread(sizes.query_images, sizes.query_ids);
    for (i, &q) in queries.iter().enumerate() {
        let g = gallery.get(i).copied().unwrap_or(0);
        person(&[(Split::Query, q), (Split::Gallery, g)], &mut out);
    }
    let gallery_only = gallery.get(sizes.query_ids..).unwrap_or_default();
    match format {
        Format::Market1501 | Format::Synth => {
            for k in 0..gallery_only.iter().sum::<usize>() {
                out.push(stray(p, DISTRACTOR_PID, Split::Gallery, k as u32));
            }
            for k in 0..MARKET_JUNK {
                out.push(stray(p, JUNK_PID, Split::Junk, k));
            }
        }
        _ => {
            for &n in gallery_only {
                person(&[(Split::Gallery, n)], &mut out);
            }
        }
    }
    out
}

/// A junk or distractor image: a new person per image.
fn stray(p: &SynthParams, pid: i32, split: Split, k: u32) -> Shot {
    Shot {
        split,
        pid,
        camera: 1 + k % p.cameras,
        seq: 1 + k % 6,
        frame: 100 + 37 * k,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mgat_data::index::index;
    use mgat_data::official::{SplitSizes, check, releases};

    fn touch_tree(layout: &Layout, p: &SynthParams) -> mgat_testutil::TempDir {
        let root = mgat_testutil::tempdir();
        let jobs = layout.jobs(&layout.params(p));
        for job in &jobs {
            let path = root.join(&job.path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, b"").unwrap();
        }
        for dir in layout.folders() {
            std::fs::create_dir_all(root.join(dir)).unwrap();
        }
        for (name, text) in layout.list_files(&jobs) {
            std::fs::write(root.join(name), text).unwrap();
        }
        root
    }

    #[test]
    fn every_release_planned_at_full_size_indexes_to_its_official_split_sizes() {
        let p = SynthParams {
            cameras: 6,
            ..crate::tests::small()
        };
        for format in [
            Format::Market1501,
            Format::DukeMtmcReid,
            Format::Cuhk03Np,
            Format::Msmt17,
        ] {
            for release in releases(format) {
                let layout = Layout {
                    format,
                    official: Some(*release),
                };
                let jobs = layout.jobs(&layout.params(&p));
                let unique: std::collections::HashSet<&str> =
                    jobs.iter().map(|j| j.path.as_str()).collect();
                assert_eq!(
                    unique.len(),
                    jobs.len(),
                    "{}: file names are unique",
                    release.name
                );
                if format == Format::Msmt17 {
                    continue; // 126,441 files: its indexer is exercised at a small scale below
                }
                let root = touch_tree(&layout, &p);
                let idx = index(format, &root).unwrap();
                assert_eq!(
                    check(format, SplitSizes::of(&idx)),
                    Ok(Some(*release)),
                    "{}",
                    release.name
                );
            }
        }
    }

    #[test]
    fn each_layout_at_the_parameters_scale_indexes_to_what_was_planned() {
        let p = crate::tests::small();
        for format in [
            Format::Market1501,
            Format::DukeMtmcReid,
            Format::Cuhk03Np,
            Format::Msmt17,
        ] {
            let layout = Layout {
                format,
                official: None,
            };
            let drawn = layout.params(&p);
            let jobs = layout.jobs(&drawn);
            let root = touch_tree(&layout, &p);
            let idx = index(format, &root).unwrap();
            let count = |split: Split| jobs.iter().filter(|j| j.shot.split == split).count();
            assert_eq!(idx.train.len(), count(Split::Train), "{format:?}");
            assert_eq!(idx.query.len(), count(Split::Query), "{format:?}");
            assert_eq!(idx.gallery.len(), count(Split::Gallery), "{format:?}");
            assert_eq!(idx.num_train_pids, 6, "{format:?}");
            let query_ids: std::collections::BTreeSet<i64> =
                idx.query.iter().map(|i| i.pid).collect();
            assert_eq!(query_ids.len(), 6, "{format:?}");
            if format == Format::Cuhk03Np {
                assert!(
                    idx.train
                        .iter()
                        .all(|i| i.path.ends_with(".png") && i.camid < 2)
                );
            }
        }
    }
}
