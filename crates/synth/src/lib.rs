//! The synthetic dataset: people drawn from per-identity clothing (colours, patterns, bags, hair) under per-camera
//! conditions (background, lighting, colour cast, blur, noise) and per-image pose changes, written as JPEGs in the
//! exact Market-1501 layout and naming, junk (`-1_…`) and distractor (`0000_…`) gallery files included.
//! Deterministic: every image draws from its own seeded stream and only exact IEEE arithmetic (no transcendental
//! functions), so the same parameters give byte-identical files on any machine and thread count.

pub mod layout;
pub mod stage;

/// The folder inside a synth entry that holds the dataset root.
pub const DATA_DIR: &str = "data";

use image::ExtendedColorType;
use image::ImageEncoder;
use image::codecs::jpeg::JpegEncoder;
use image::codecs::png::PngEncoder;
use layout::Encoding;
pub use layout::Layout;
use mgat_util::fsio::IoError;
use mgat_util::rng::Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::path::Path;

/// Generator parameters. Half the identities (rounded up) are training identities, the rest test identities.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SynthParams {
    pub seed: u64,
    pub ids: u32,
    pub cameras: u32,
    /// Average images per identity per camera it is seen in.
    pub images_per_camera: u32,
    pub height: u32,
    pub width: u32,
    /// Junk gallery images (`-1_…`: bad detections, ignored by the protocol).
    pub junk: u32,
    /// Distractor gallery images (`0000_…`: people of no test identity).
    pub distractors: u32,
    /// JPEG quality, 1–100.
    pub quality: u8,
}

impl SynthParams {
    /// What is out of range, as (parameter, value, expected).
    pub fn invalid(&self) -> Option<(&'static str, String, &'static str)> {
        let checks: [(bool, &'static str, String, &'static str); 8] = [
            (
                self.ids >= 4 && self.ids <= 9999,
                "ids",
                self.ids.to_string(),
                "4 to 9999 identities",
            ),
            (
                (2..=9).contains(&self.cameras),
                "cameras",
                self.cameras.to_string(),
                "2 to 9 cameras",
            ),
            (
                (2..=1000).contains(&self.images_per_camera),
                "images_per_camera",
                self.images_per_camera.to_string(),
                "2 to 1000",
            ),
            (
                self.junk <= 100_000,
                "junk",
                self.junk.to_string(),
                "at most 100000 images",
            ),
            (
                self.distractors <= 100_000,
                "distractors",
                self.distractors.to_string(),
                "at most 100000 images",
            ),
            (
                self.height >= 32 && self.height <= 1024,
                "height",
                self.height.to_string(),
                "32 to 1024 pixels",
            ),
            (
                self.width >= 16 && self.width <= 512,
                "width",
                self.width.to_string(),
                "16 to 512 pixels",
            ),
            (
                (1..=100).contains(&self.quality),
                "quality",
                self.quality.to_string(),
                "1 to 100",
            ),
        ];
        checks
            .into_iter()
            .find(|c| !c.0)
            .map(|(_, name, value, expected)| (name, value, expected))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SynthError {
    #[error("synthetic dataset parameter {name} = {value}: expected {expected}")]
    Invalid {
        name: &'static str,
        value: String,
        expected: &'static str,
    },
    #[error(transparent)]
    Io(#[from] IoError),
    #[error("JPEG encoding failed: {0}")]
    Encode(#[from] image::ImageError),
}

/// Counts of what was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SynthSummary {
    pub train_images: usize,
    pub query_images: usize,
    pub gallery_images: usize,
    pub train_ids: usize,
    pub test_ids: usize,
}

impl SynthSummary {
    fn of(jobs: &[Job]) -> Self {
        let count = |split: Split| jobs.iter().filter(|j| j.shot.split == split).count();
        let ids = |split: Split| {
            jobs.iter()
                .filter(|j| j.shot.split == split)
                .map(|j| j.shot.pid)
                .collect::<BTreeSet<_>>()
                .len()
        };
        SynthSummary {
            train_images: count(Split::Train),
            query_images: count(Split::Query),
            gallery_images: count(Split::Gallery) + count(Split::Junk),
            train_ids: ids(Split::Train),
            test_ids: ids(Split::Query),
        }
    }
}

/// Writes the dataset in Market-1501 layout at the parameters' scale under `out` (which must not hold another
/// dataset), calling `on_image` after each file.
pub fn generate(
    params: &SynthParams,
    out: &Path,
    on_image: &(dyn Fn() + Sync),
) -> Result<SynthSummary, SynthError> {
    generate_layout(params, &Layout::default(), out, on_image)
}

/// Writes the dataset in `layout` (file names, folders, list files, image format; at the parameters' scale or a
/// release's exact split sizes).
pub fn generate_layout(
    params: &SynthParams,
    layout: &Layout,
    out: &Path,
    on_image: &(dyn Fn() + Sync),
) -> Result<SynthSummary, SynthError> {
    if let Some((name, value, expected)) = params.invalid() {
        return Err(SynthError::Invalid {
            name,
            value,
            expected,
        });
    }
    let params = &layout.params(params);
    let jobs = layout.jobs(params);
    let dirs: BTreeSet<&str> = jobs
        .iter()
        .filter_map(|j| j.path.rsplit_once('/').map(|(dir, _)| dir))
        .chain(layout.folders().iter().copied())
        .collect();
    for dir in dirs {
        let path = out.join(dir);
        std::fs::create_dir_all(&path)
            .map_err(|source| SynthError::Io(IoError::new(path, source)))?;
    }
    let cameras: Vec<Camera> = (1..=params.cameras)
        .map(|c| Camera::new(params.seed, c))
        .collect();
    let encoding = layout.encoding();
    jobs.par_iter().try_for_each(|job| {
        let bytes = render(params, &cameras, &job.shot, encoding)?;
        let path = out.join(&job.path);
        std::fs::write(&path, bytes)
            .map_err(|source| SynthError::Io(IoError::new(path, source)))?;
        on_image();
        Ok::<_, SynthError>(())
    })?;
    for (name, text) in layout.list_files(&jobs) {
        let path = out.join(name);
        std::fs::write(&path, text).map_err(|source| SynthError::Io(IoError::new(path, source)))?;
    }
    Ok(SynthSummary::of(&jobs))
}

/// How many images `generate_layout` writes.
pub fn image_count(params: &SynthParams, layout: &Layout) -> usize {
    layout.jobs(&layout.params(params)).len()
}

pub(crate) const JUNK_PID: i32 = -1;
pub(crate) const DISTRACTOR_PID: i32 = 0;

/// Which split a drawn image belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Split {
    Train,
    Query,
    Gallery,
    /// Market-1501's bad detections (pid −1), in the gallery folder and ignored by the protocol.
    Junk,
}

/// One image to draw: its split, whose appearance (`pid`; [`JUNK_PID`] and [`DISTRACTOR_PID`] draw a new person
/// per image) under which camera, and the sequence and frame its name and pose come from.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Shot {
    pub split: Split,
    pub pid: i32,
    pub camera: u32,
    pub seq: u32,
    /// Distinguishes images of the same person and camera (the frame number).
    pub frame: u32,
}

/// A shot and the file it is written to (relative to the dataset root, `/`-separated).
#[derive(Debug, Clone)]
pub(crate) struct Job {
    pub path: String,
    pub shot: Shot,
}

pub(crate) fn market_name(pid: i32, camera: u32, seq: u32, frame: u32, bbox: u32) -> String {
    let pid = if pid < 0 {
        pid.to_string()
    } else {
        format!("{pid:04}")
    };
    format!("{pid}_c{camera}s{seq}_{frame:06}_{bbox:02}.jpg")
}

/// The cameras that see one identity: two or more, drawn from `rng`.
pub(crate) fn cameras_of(p: &SynthParams, rng: &mut Rng) -> Vec<u32> {
    let mut cams: Vec<u32> = (1..=p.cameras).collect();
    rng.shuffle(&mut cams);
    cams.truncate(2 + rng.below(p.cameras - 1) as usize);
    cams.sort_unstable();
    cams
}

/// The deterministic list of images at the parameters' scale: identities split into train and test, each seen by 2
/// or more cameras; for a test identity the first image of each camera is its query from that camera (at most one
/// per camera); then junk and distractors.
pub(crate) fn shots(p: &SynthParams) -> Vec<Shot> {
    let mut rng = Rng::new(p.seed, &[1]);
    let mut pids: Vec<i32> = (1..=p.ids as i32).collect();
    rng.shuffle(&mut pids);
    let n_train = p.ids.div_ceil(2) as usize;
    let (train, test) = pids.split_at(n_train);
    let mut shots = Vec::new();
    for (&pid, is_test) in train
        .iter()
        .map(|x| (x, false))
        .chain(test.iter().map(|x| (x, true)))
    {
        let mut rng = Rng::new(p.seed, &[2, pid as u64]);
        for camera in cameras_of(p, &mut rng) {
            let n = (p.images_per_camera - 1 + rng.below(3)).max(2);
            let seq = 1 + rng.below(6);
            let mut frame = 100 + rng.below(5000);
            for i in 0..n {
                frame += 20 + rng.below(60);
                let split = match (is_test, i) {
                    (false, _) => Split::Train,
                    (true, 0) => Split::Query,
                    (true, _) => Split::Gallery,
                };
                shots.push(Shot {
                    split,
                    pid,
                    camera,
                    seq,
                    frame,
                });
            }
        }
    }
    for (pid, count) in [(JUNK_PID, p.junk), (DISTRACTOR_PID, p.distractors)] {
        let mut rng = Rng::new(p.seed, &[3, pid as u64]);
        for i in 0..count {
            let camera = 1 + rng.below(p.cameras);
            shots.push(Shot {
                split: if pid == JUNK_PID {
                    Split::Junk
                } else {
                    Split::Gallery
                },
                pid,
                camera,
                seq: 1 + rng.below(6),
                frame: 100 + 37 * i,
            });
        }
    }
    shots
}

type Rgb = [f32; 3];

#[derive(Debug, Clone, Copy)]
enum Pattern {
    Solid,
    HStripes(f32),
    VStripes(f32),
    Checker(f32),
    Split,
    Logo,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Bag {
    None,
    Backpack,
    Handbag,
}

/// What makes an identity recognisable: clothing colours and pattern, hair, bag, build.
#[derive(Debug, Clone)]
struct Appearance {
    upper: Rgb,
    upper2: Rgb,
    pattern: Pattern,
    lower: Rgb,
    shorts: bool,
    skin: Rgb,
    hair: Rgb,
    long_hair: bool,
    bag: Bag,
    bag_colour: Rgb,
    shoes: Rgb,
    build: f32,
    stature: f32,
}

const LOWER_PALETTE: [Rgb; 8] = [
    [0.08, 0.08, 0.1],
    [0.12, 0.16, 0.35],
    [0.45, 0.45, 0.47],
    [0.66, 0.6, 0.45],
    [0.3, 0.42, 0.62],
    [0.88, 0.88, 0.86],
    [0.38, 0.26, 0.16],
    [0.2, 0.3, 0.2],
];

impl Appearance {
    fn new(rng: &mut Rng) -> Self {
        let upper = hsv(
            rng.unit() * 6.0,
            rng.range(0.35, 0.95),
            rng.range(0.3, 0.95),
        );
        let upper2 = hsv(rng.unit() * 6.0, rng.range(0.2, 0.9), rng.range(0.2, 1.0));
        let pattern = match rng.below(6) {
            0 | 1 => Pattern::Solid,
            2 => Pattern::HStripes(rng.range(3.0, 8.0)),
            3 => Pattern::VStripes(rng.range(2.0, 5.0)),
            4 => Pattern::Checker(rng.range(2.0, 4.0)),
            _ if rng.chance(0.5) => Pattern::Split,
            _ => Pattern::Logo,
        };
        let base = LOWER_PALETTE[rng.below(LOWER_PALETTE.len() as u32) as usize];
        let lower = base.map(|c| (c + rng.range(-0.06, 0.06)).clamp(0.0, 1.0));
        let tone = rng.range(0.35, 0.95);
        Self {
            upper,
            upper2,
            pattern,
            lower,
            shorts: rng.chance(0.2),
            skin: [tone, tone * 0.78, tone * 0.62],
            hair: hsv(
                rng.range(0.0, 0.6),
                rng.range(0.2, 0.7),
                rng.range(0.05, 0.6),
            ),
            long_hair: rng.chance(0.3),
            bag: [Bag::None, Bag::None, Bag::Backpack, Bag::Handbag][rng.below(4) as usize],
            bag_colour: hsv(rng.unit() * 6.0, rng.range(0.0, 0.8), rng.range(0.1, 0.7)),
            shoes: hsv(rng.unit() * 6.0, rng.range(0.0, 0.5), rng.range(0.05, 0.9)),
            build: rng.range(0.85, 1.15),
            stature: rng.range(0.92, 1.04),
        }
    }
}

/// A camera's look: background, floor, lighting gain with colour cast, blur and sensor noise.
#[derive(Debug, Clone)]
struct Camera {
    sky: Rgb,
    ground: Rgb,
    floor: Rgb,
    floor_y: f32,
    gain: Rgb,
    blur: bool,
    noise: f32,
    blobs: Vec<([f32; 4], Rgb)>,
}

impl Camera {
    fn new(seed: u64, camera: u32) -> Self {
        let mut rng = Rng::new(seed, &[4, u64::from(camera)]);
        let brightness = rng.range(0.7, 1.25);
        let cast = [
            rng.range(0.85, 1.15),
            rng.range(0.9, 1.1),
            rng.range(0.85, 1.15),
        ];
        let blobs = (0..3 + rng.below(4))
            .map(|_| {
                let rect = [
                    rng.unit(),
                    rng.range(0.0, 0.7),
                    rng.range(0.1, 0.4),
                    rng.range(0.05, 0.3),
                ];
                (
                    rect,
                    hsv(rng.unit() * 6.0, rng.range(0.0, 0.5), rng.range(0.2, 0.9)),
                )
            })
            .collect();
        Self {
            sky: hsv(rng.unit() * 6.0, rng.range(0.0, 0.4), rng.range(0.3, 0.9)),
            ground: hsv(rng.unit() * 6.0, rng.range(0.0, 0.4), rng.range(0.2, 0.8)),
            floor: hsv(rng.unit() * 6.0, rng.range(0.0, 0.3), rng.range(0.2, 0.7)),
            floor_y: rng.range(0.72, 0.9),
            gain: cast.map(|c| c * brightness),
            blur: rng.chance(0.5),
            noise: rng.range(0.01, 0.05),
            blobs,
        }
    }
}

/// Per-image variation: placement, scale, stride, mirror, lighting jitter, occluder.
struct Pose {
    dx: f32,
    dy: f32,
    scale: f32,
    stride: f32,
    mirror: bool,
    light: f32,
    shift: f32,
    occluder: Option<([f32; 4], Rgb)>,
}

impl Pose {
    fn new(rng: &mut Rng, junk: bool) -> Self {
        let (dx, scale) = if junk {
            (
                rng.range(0.3, 0.5) * if rng.chance(0.5) { 1.0 } else { -1.0 },
                rng.range(1.0, 1.6),
            )
        } else {
            (rng.range(-0.07, 0.07), rng.range(0.92, 1.06))
        };
        let occluder = rng.chance(0.12).then(|| {
            let rect = [
                rng.range(-0.2, 0.6),
                rng.range(0.55, 0.8),
                rng.range(0.3, 0.6),
                0.5,
            ];
            (
                rect,
                hsv(rng.unit() * 6.0, rng.range(0.0, 0.6), rng.range(0.2, 0.8)),
            )
        });
        Self {
            dx,
            dy: rng.range(-0.03, 0.03),
            scale,
            stride: rng.range(0.0, 0.07),
            mirror: rng.chance(0.5),
            light: rng.range(0.88, 1.12),
            shift: rng.range(-0.1, 0.1),
            occluder,
        }
    }
}

/// Draws one shot and encodes it (JPEG at the parameters' quality, or PNG).
fn render(
    p: &SynthParams,
    cameras: &[Camera],
    shot: &Shot,
    encoding: Encoding,
) -> Result<Vec<u8>, SynthError> {
    let camera = &cameras[shot.camera as usize - 1];
    let appearance = match shot.pid {
        JUNK_PID | DISTRACTOR_PID => Appearance::new(&mut Rng::new(
            p.seed,
            &[6, shot.pid as u64, u64::from(shot.frame)],
        )),
        pid => Appearance::new(&mut Rng::new(p.seed, &[5, pid as u64])),
    };
    let mut rng = Rng::new(
        p.seed,
        &[
            7,
            shot.pid as u64,
            u64::from(shot.camera),
            u64::from(shot.frame),
        ],
    );
    let pose = Pose::new(&mut rng, shot.pid == JUNK_PID);
    let mut canvas = Canvas::new(p.width as usize, p.height as usize);
    canvas.background(camera, pose.shift);
    canvas.person(&appearance, &pose);
    if let Some((rect, colour)) = pose.occluder {
        canvas.rect(
            rect[0],
            rect[1],
            rect[0] + rect[2],
            rect[1] + rect[3],
            |_, _| colour,
        );
    }
    if pose.mirror {
        canvas.mirror();
    }
    let pixels = canvas.finish(camera, pose.light, &mut rng);
    let mut out = Vec::new();
    match encoding {
        Encoding::Jpeg => JpegEncoder::new_with_quality(&mut out, p.quality).encode(
            &pixels,
            p.width,
            p.height,
            ExtendedColorType::Rgb8,
        )?,
        Encoding::Png => PngEncoder::new(&mut out).write_image(
            &pixels,
            p.width,
            p.height,
            ExtendedColorType::Rgb8,
        )?,
    }
    Ok(out)
}

/// A float RGB image drawn in coordinates relative to its width and height (0..1).
struct Canvas {
    w: usize,
    h: usize,
    px: Vec<Rgb>,
}

impl Canvas {
    fn new(w: usize, h: usize) -> Self {
        Self {
            w,
            h,
            px: vec![[0.0; 3]; w * h],
        }
    }

    /// Fills the rectangle [x0, x1) × [y0, y1) (relative units) with `colour(rx, ry)`, where rx, ry ∈ [0, 1) are
    /// positions inside the rectangle.
    fn rect(&mut self, x0: f32, y0: f32, x1: f32, y1: f32, colour: impl Fn(f32, f32) -> Rgb) {
        let (w, h) = (self.w as f32, self.h as f32);
        let (px0, px1) = (
            ((x0 * w).round().max(0.0)) as usize,
            ((x1 * w).round().min(w)) as usize,
        );
        let (py0, py1) = (
            ((y0 * h).round().max(0.0)) as usize,
            ((y1 * h).round().min(h)) as usize,
        );
        for y in py0..py1 {
            for x in px0..px1 {
                let rx = ((x as f32 + 0.5) / w - x0) / (x1 - x0);
                let ry = ((y as f32 + 0.5) / h - y0) / (y1 - y0);
                self.px[y * self.w + x] = colour(rx, ry);
            }
        }
    }

    /// Fills an ellipse centred at (cx, cy) with radius `r` in units of the image width (round in pixels).
    fn disc(&mut self, cx: f32, cy: f32, r: f32, colour: impl Fn(f32) -> Rgb) {
        let (w, h) = (self.w as f32, self.h as f32);
        let (pcx, pcy, pr) = (cx * w, cy * h, r * w);
        for y in ((pcy - pr).max(0.0) as usize)..((pcy + pr).ceil().min(h) as usize) {
            for x in ((pcx - pr).max(0.0) as usize)..((pcx + pr).ceil().min(w) as usize) {
                let (dx, dy) = (x as f32 + 0.5 - pcx, y as f32 + 0.5 - pcy);
                if dx * dx + dy * dy <= pr * pr {
                    self.px[y * self.w + x] = colour(dy / pr);
                }
            }
        }
    }

    fn background(&mut self, cam: &Camera, shift: f32) {
        let floor = cam.floor;
        self.rect(0.0, 0.0, 1.0, cam.floor_y, |_, ry| {
            lerp(cam.sky, cam.ground, ry)
        });
        self.rect(0.0, cam.floor_y, 1.0, 1.0, |_, ry| {
            lerp(floor, scale(floor, 0.8), ry)
        });
        for &([x, y, bw, bh], colour) in &cam.blobs {
            self.rect(
                x + shift - bw / 2.0,
                y,
                x + shift + bw / 2.0,
                y + bh,
                |_, _| colour,
            );
        }
    }

    fn person(&mut self, a: &Appearance, pose: &Pose) {
        let cx = 0.5 + pose.dx;
        let top = 0.04 + pose.dy;
        let ph = 0.92 * a.stature * pose.scale;
        let bw = 0.46 * a.build * pose.scale;
        let y = |f: f32| top + f * ph;
        let aspect = self.h as f32 / self.w as f32;
        let head_r = 0.065 * ph * aspect;
        if a.long_hair {
            self.rect(
                cx - head_r * 1.1,
                y(0.07),
                cx + head_r * 1.1,
                y(0.25),
                |_, _| a.hair,
            );
        }
        // Legs (trousers, or shorts over skin), then shoes.
        let lw = 0.4 * bw;
        for x0 in [cx - 0.02 - lw - pose.stride, cx + 0.02 + pose.stride] {
            let knee = if a.shorts { 0.45 } else { 1.0 };
            self.rect(x0, y(0.52), x0 + lw, y(0.93), |_, ry| {
                if ry < knee { a.lower } else { a.skin }
            });
            self.rect(x0 - 0.01, y(0.93), x0 + lw + 0.02, y(0.97), |_, _| a.shoes);
        }
        if a.bag == Bag::Backpack {
            self.rect(
                cx + bw / 2.0 - 0.06,
                y(0.16),
                cx + bw / 2.0 + 0.1,
                y(0.46),
                |_, _| a.bag_colour,
            );
        }
        // Arms with sleeves, hands, torso with the identity's pattern.
        for x0 in [cx - bw / 2.0 - 0.1, cx + bw / 2.0] {
            self.rect(x0, y(0.15), x0 + 0.1, y(0.46), |_, ry| {
                if ry < 0.85 { a.upper } else { a.skin }
            });
        }
        let (upper, upper2, pattern) = (a.upper, a.upper2, a.pattern);
        self.rect(
            cx - bw / 2.0,
            y(0.14),
            cx + bw / 2.0,
            y(0.53),
            move |rx, ry| torso_colour(pattern, upper, upper2, rx, ry),
        );
        if a.bag == Bag::Handbag {
            self.rect(
                cx + bw / 2.0 + 0.02,
                y(0.44),
                cx + bw / 2.0 + 0.15,
                y(0.58),
                |_, _| a.bag_colour,
            );
        }
        let (skin, hair) = (a.skin, a.hair);
        self.disc(cx, y(0.075), head_r / aspect, move |ry| {
            if ry < -0.25 { hair } else { skin }
        });
    }

    fn mirror(&mut self) {
        for row in self.px.chunks_mut(self.w) {
            row.reverse();
        }
    }

    /// Applies the camera's gain and the image's lighting, optional 3×3 blur and noise, and quantises to RGB8.
    fn finish(mut self, cam: &Camera, light: f32, rng: &mut Rng) -> Vec<u8> {
        if cam.blur {
            self.blur();
        }
        let mut out = Vec::with_capacity(self.px.len() * 3);
        for p in &self.px {
            for (value, gain) in p.iter().zip(cam.gain) {
                let noise = (rng.unit() + rng.unit() + rng.unit() - 1.5) * 2.0 * cam.noise;
                let v = value * gain * light + noise;
                out.push((v.clamp(0.0, 1.0) * 255.0).round() as u8);
            }
        }
        out
    }

    fn blur(&mut self) {
        let (w, h) = (self.w as isize, self.h as isize);
        let src = self.px.clone();
        for y in 0..h {
            for x in 0..w {
                let mut acc = [0.0f32; 3];
                for (dy, dx) in [
                    (-1, -1),
                    (-1, 0),
                    (-1, 1),
                    (0, -1),
                    (0, 0),
                    (0, 1),
                    (1, -1),
                    (1, 0),
                    (1, 1),
                ] {
                    let (sx, sy) = ((x + dx).clamp(0, w - 1), (y + dy).clamp(0, h - 1));
                    let s = src[(sy * w + sx) as usize];
                    for c in 0..3 {
                        acc[c] += s[c];
                    }
                }
                self.px[(y * w + x) as usize] = acc.map(|v| v / 9.0);
            }
        }
    }
}

fn torso_colour(pattern: Pattern, a: Rgb, b: Rgb, rx: f32, ry: f32) -> Rgb {
    let odd = |v: f32| (v as i32) % 2 == 1;
    let second = match pattern {
        Pattern::Solid => false,
        Pattern::HStripes(n) => odd(ry * n * 2.0),
        Pattern::VStripes(n) => odd(rx * n * 2.0),
        Pattern::Checker(n) => odd(rx * n) != odd(ry * n * 1.5),
        Pattern::Split => rx >= 0.5,
        Pattern::Logo => (0.3..0.7).contains(&rx) && (0.2..0.45).contains(&ry),
    };
    if second { b } else { a }
}

fn lerp(a: Rgb, b: Rgb, t: f32) -> Rgb {
    [
        a[0] + (b[0] - a[0]) * t,
        a[1] + (b[1] - a[1]) * t,
        a[2] + (b[2] - a[2]) * t,
    ]
}

fn scale(a: Rgb, f: f32) -> Rgb {
    a.map(|c| c * f)
}

/// HSV to RGB with hue in [0, 6).
fn hsv(h: f32, s: f32, v: f32) -> Rgb {
    let c = v * s;
    let x = c * (1.0 - ((h % 2.0) - 1.0).abs());
    let m = v - c;
    let (r, g, b) = match h as u32 {
        0 => (c, x, 0.0),
        1 => (x, c, 0.0),
        2 => (0.0, c, x),
        3 => (0.0, x, c),
        4 => (x, 0.0, c),
        _ => (c, 0.0, x),
    };
    [r + m, g + m, b + m]
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use mgat_util::digest::sha256_file;
    use std::collections::{BTreeMap, HashSet};

    pub(crate) fn small() -> SynthParams {
        SynthParams {
            seed: 3,
            ids: 12,
            cameras: 3,
            images_per_camera: 2,
            height: 64,
            width: 32,
            junk: 3,
            distractors: 4,
            quality: 90,
        }
    }

    fn tree_hashes(root: &Path) -> BTreeMap<String, String> {
        walkdir::WalkDir::new(root)
            .into_iter()
            .map(|e| e.unwrap())
            .filter(|e| e.file_type().is_file())
            .map(|e| {
                (
                    e.path().strip_prefix(root).unwrap().display().to_string(),
                    sha256_file(e.path()).unwrap().0,
                )
            })
            .collect()
    }

    #[test]
    fn same_seed_gives_byte_identical_files_and_another_seed_does_not() {
        let (a, b, c) = (
            mgat_testutil::tempdir(),
            mgat_testutil::tempdir(),
            mgat_testutil::tempdir(),
        );
        generate(&small(), &a, &|| {}).unwrap();
        rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap()
            .install(|| generate(&small(), &b, &|| {}).unwrap());
        generate(&SynthParams { seed: 4, ..small() }, &c, &|| {}).unwrap();
        assert_eq!(tree_hashes(&a), tree_hashes(&b));
        assert_ne!(tree_hashes(&a), tree_hashes(&c));
    }

    #[test]
    fn layout_follows_market_1501() {
        let jobs = Layout::default().jobs(&small());
        assert_eq!(jobs.len(), image_count(&small(), &Layout::default()));
        let in_dir = |j: &Job, dir: &str| j.path.starts_with(&format!("{dir}/"));
        let file_name = |j: &Job| j.path.rsplit('/').next().unwrap().to_string();
        let names: HashSet<_> = jobs.iter().map(|j| j.path.clone()).collect();
        assert_eq!(names.len(), jobs.len(), "file names are unique");
        let pids_in = |dir: &str| -> HashSet<i32> {
            jobs.iter()
                .filter(|j| in_dir(j, dir))
                .map(|j| j.shot.pid)
                .collect()
        };
        let (train, query) = (pids_in("bounding_box_train"), pids_in("query"));
        assert_eq!(train.len(), 6);
        assert_eq!(query.len(), 6);
        assert!(train.is_disjoint(&query));
        let gallery: Vec<&Job> = jobs
            .iter()
            .filter(|j| in_dir(j, "bounding_box_test"))
            .collect();
        assert!(gallery.iter().any(|j| file_name(j).starts_with("-1_c")));
        assert!(gallery.iter().any(|j| file_name(j).starts_with("0000_c")));
        let mut per_id_cam = HashSet::new();
        for j in jobs.iter().filter(|j| in_dir(j, "query")) {
            assert!(
                per_id_cam.insert((j.shot.pid, j.shot.camera)),
                "at most one query per identity per camera"
            );
            let other_cam_match = gallery
                .iter()
                .any(|g| g.shot.pid == j.shot.pid && g.shot.camera != j.shot.camera);
            assert!(
                other_cam_match,
                "every query has a cross-camera gallery match"
            );
        }
        let re = |n: &str| {
            let parts: Vec<&str> = n.trim_end_matches(".jpg").split('_').collect();
            parts.len() == 4
                && parts[1].starts_with('c')
                && parts[1].contains('s')
                && parts[2].len() == 6
                && parts[3].len() == 2
        };
        assert!(
            jobs.iter().all(|j| re(&file_name(j))),
            "PPPP_cCsS_FFFFFF_BB.jpg"
        );
    }

    #[test]
    fn identities_differ_more_than_images_of_one_identity() {
        // Mean absolute pixel difference between two images of the same identity and camera must be smaller than
        // between different identities under that camera: learnable, while per-image changes keep it non-trivial.
        let p = SynthParams { ids: 40, ..small() };
        let cameras: Vec<Camera> = (1..=p.cameras).map(|c| Camera::new(p.seed, c)).collect();
        let decode = |shot: &Shot| {
            image::load_from_memory(&render(&p, &cameras, shot, Encoding::Jpeg).unwrap())
                .unwrap()
                .to_rgb8()
                .into_raw()
        };
        let diff = |a: &[u8], b: &[u8]| {
            a.iter()
                .zip(b)
                .map(|(x, y)| (*x as f64 - *y as f64).abs())
                .sum::<f64>()
                / a.len() as f64
        };
        let job = |pid, frame| Shot {
            split: Split::Train,
            pid,
            camera: 1,
            seq: 1,
            frame,
        };
        let (mut same, mut other) = (0.0, 0.0);
        for pid in 1..=20 {
            same += diff(&decode(&job(pid, 10)), &decode(&job(pid, 20)));
            other += diff(&decode(&job(pid, 10)), &decode(&job(pid + 20, 10)));
        }
        assert!(same > 0.0, "images of one identity vary");
        assert!(same < 0.8 * other, "same {same} vs other {other}");
    }

    #[test]
    fn invalid_parameters_are_named() {
        let err = generate(
            &SynthParams {
                cameras: 12,
                ..small()
            },
            Path::new("/nonexistent"),
            &|| {},
        )
        .unwrap_err();
        assert!(err.to_string().contains("cameras = 12"), "{err}");
        let huge = SynthParams {
            junk: 4_000_000_000,
            ..small()
        };
        assert_eq!(huge.invalid().map(|i| i.0), Some("junk"));
    }
}
