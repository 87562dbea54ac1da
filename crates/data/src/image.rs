//! Reading images: JPEG/PNG decoding (refusing truncated JPEGs), bilinear resizing ([`crate::resize`]) and ImageNet
//! normalisation to CHW floats. Used by training batches and test-time feature extraction alike.

use image::RgbImage;
use std::path::{Path, PathBuf};

const MEAN: [f32; 3] = [0.485, 0.456, 0.406];
const STD: [f32; 3] = [0.229, 0.224, 0.225];

#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ImageError {
    pub path: PathBuf,
    pub message: String,
}

/// A dataset's folder with the SHA-256 of every file in it, as they were checked against `datasets.lock` when the
/// stage started. Every image a stage reads comes through [`PinnedTree::load_resized`], which hashes the bytes it
/// read and refuses any that are not the pinned ones: a file swapped while a stage runs, even one put back before
/// it ends, can never reach a result. Cheap to clone (shared).
#[derive(Debug, Clone)]
pub struct PinnedTree {
    root: PathBuf,
    digests: std::sync::Arc<std::collections::HashMap<String, String>>,
}

impl PinnedTree {
    /// `digests`: (path relative to `root` with `/` separators, SHA-256 hex) of every file.
    pub fn new(root: &Path, digests: impl IntoIterator<Item = (String, String)>) -> Self {
        Self {
            root: root.to_path_buf(),
            digests: std::sync::Arc::new(digests.into_iter().collect()),
        }
    }

    /// The dataset a stage was handed, pinned to the digests its files had when it started.
    pub fn of(inputs: &mgat_stage::Inputs) -> Self {
        Self::new(&inputs.dataset_root, inputs.dataset_files.iter().cloned())
    }

    /// The bytes of `rel` (relative to the root), refused unless they hash to the pinned digest.
    pub fn read(&self, rel: &str) -> Result<Vec<u8>, ImageError> {
        let path = self.root.join(rel);
        let bad = |message: String| ImageError {
            path: path.clone(),
            message,
        };
        let pinned = self
            .digests
            .get(rel)
            .ok_or_else(|| bad("not among the files datasets.lock pins".into()))?;
        let bytes = std::fs::read(&path).map_err(|e| bad(e.to_string()))?;
        let found = mgat_util::digest::sha256_bytes(&bytes);
        if &found != pinned {
            return Err(bad(format!(
                "its SHA-256 is {found}, but datasets.lock pinned {pinned} when the stage started: the file changed \
                 while the stage ran, and nothing was computed from it"
            )));
        }
        Ok(bytes)
    }

    /// The image `rel` decoded and resized to height × width ([`decode_resized`]), from its pinned bytes.
    pub fn load_resized(&self, rel: &str, height: u32, width: u32) -> Result<RgbImage, ImageError> {
        let bytes = self.read(rel)?;
        decode_resized(&self.root.join(rel), &bytes, height, width)
    }
}

/// Decodes an image file and resizes it to height × width (bilinear).
pub fn load_resized(path: &Path, height: u32, width: u32) -> Result<RgbImage, ImageError> {
    let bytes = std::fs::read(path).map_err(|e| ImageError {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    decode_resized(path, &bytes, height, width)
}

/// Decodes `bytes` (the file at `path`, for errors) and resizes it to height × width (bilinear). A JPEG must end with
/// its end-of-image marker: the decoder would fill a truncated one with grey instead of failing.
fn decode_resized(
    path: &Path,
    bytes: &[u8],
    height: u32,
    width: u32,
) -> Result<RgbImage, ImageError> {
    let bad = |message: String| ImageError {
        path: path.to_path_buf(),
        message,
    };
    if bytes.starts_with(&[0xFF, 0xD8]) && !ends_with_eoi(bytes) {
        return Err(bad(
            "truncated JPEG: the file ends before its end-of-image marker".into(),
        ));
    }
    let img = image::load_from_memory(bytes).map_err(|e| bad(e.to_string()))?;
    Ok(crate::resize::resize_rgb8(&img.to_rgb8(), width, height))
}

/// CHW values of an image, ImageNet-normalised, optionally mirrored.
pub fn normalized(img: &RgbImage, mirror: bool) -> Vec<f32> {
    let (w, h) = (img.width() as usize, img.height() as usize);
    // Each channel's 256 values computed once, by the same expression.
    let table: [[f32; 256]; 3] =
        std::array::from_fn(|c| std::array::from_fn(|v| (v as f32 / 255.0 - MEAN[c]) / STD[c]));
    let mut out = vec![0f32; 3 * h * w];
    let (src, plane) = (img.as_raw(), h * w);
    for y in 0..h {
        let row = &src[y * w * 3..(y + 1) * w * 3];
        for (x, px) in row.chunks_exact(3).enumerate() {
            let xo = if mirror { w - 1 - x } else { x };
            for c in 0..3 {
                out[c * plane + y * w + xo] = table[c][usize::from(px[c])];
            }
        }
    }
    out
}

/// Whether JPEG bytes end with the end-of-image marker FF D9 (trailing zero padding allowed).
fn ends_with_eoi(bytes: &[u8]) -> bool {
    let end = bytes.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    bytes[..end].ends_with(&[0xFF, 0xD9])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalised_values_are_the_per_pixel_expression() {
        let mut rng = mgat_util::rng::Rng::new(3, &[]);
        let (w, h) = (7, 5);
        let img = RgbImage::from_fn(w, h, |_, _| {
            image::Rgb([
                rng.below(256) as u8,
                rng.below(256) as u8,
                rng.below(256) as u8,
            ])
        });
        for mirror in [false, true] {
            let (w, h) = (w as usize, h as usize);
            let mut expected = vec![0f32; 3 * h * w];
            for (x, y, px) in img.enumerate_pixels() {
                let xo = if mirror {
                    w - 1 - x as usize
                } else {
                    x as usize
                };
                for c in 0..3 {
                    expected[c * h * w + y as usize * w + xo] =
                        (px[c] as f32 / 255.0 - MEAN[c]) / STD[c];
                }
            }
            assert_eq!(normalized(&img, mirror), expected, "mirror {mirror}");
        }
    }

    #[test]
    fn a_pinned_file_is_read_only_with_the_bytes_it_was_pinned_with() {
        let dir = mgat_testutil::tempdir();
        std::fs::create_dir_all(dir.join("train")).unwrap();
        std::fs::write(dir.join("train/a.jpg"), b"A").unwrap();
        let pinned = PinnedTree::new(
            &dir,
            [(
                "train/a.jpg".to_string(),
                mgat_util::digest::sha256_bytes(b"A"),
            )],
        );
        assert_eq!(pinned.read("train/a.jpg").unwrap(), b"A");
        // Swapped while a stage runs (and put back later): refused when read, so it reaches no result.
        std::fs::write(dir.join("train/a.jpg"), b"B").unwrap();
        let err = pinned.read("train/a.jpg").unwrap_err().to_string();
        assert!(err.contains("changed while the stage ran"), "{err}");
        std::fs::write(dir.join("train/a.jpg"), b"A").unwrap();
        assert!(pinned.read("train/a.jpg").is_ok());
        let err = pinned.read("train/b.jpg").unwrap_err().to_string();
        assert!(
            err.contains("not among the files datasets.lock pins"),
            "{err}"
        );
    }

    #[test]
    fn a_truncated_jpeg_is_an_error_naming_the_file() {
        let dir = mgat_testutil::tempdir();
        let img = RgbImage::from_pixel(16, 32, image::Rgb([200, 30, 30]));
        let path = dir.join("0001_c1s1_000001_00.jpg");
        img.save(&path).unwrap();
        assert_eq!(load_resized(&path, 8, 4).unwrap().dimensions(), (4, 8));
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() * 2 / 3]).unwrap();
        let err = load_resized(&path, 8, 4).unwrap_err().to_string();
        assert!(
            err.contains("0001_c1s1_000001_00.jpg") && err.contains("truncated JPEG"),
            "{err}"
        );
    }

    #[test]
    fn normalisation_and_mirror() {
        let mut img = RgbImage::new(2, 1);
        img.put_pixel(0, 0, image::Rgb([255, 0, 0]));
        let v = normalized(&img, false);
        assert!((v[0] - (1.0 - 0.485) / 0.229).abs() < 1e-6);
        assert!((v[1] - (0.0 - 0.485) / 0.229).abs() < 1e-6);
        let m = normalized(&img, true);
        assert_eq!((m[0], m[1]), (v[1], v[0]));
    }
}
