//! Reading images: JPEG/PNG decoding (refusing truncated JPEGs), bilinear resizing and ImageNet normalisation to
//! CHW floats. Used by training batches and test-time feature extraction alike.

use image::RgbImage;
use image::imageops::FilterType;
use std::path::{Path, PathBuf};

const MEAN: [f32; 3] = [0.485, 0.456, 0.406];
const STD: [f32; 3] = [0.229, 0.224, 0.225];

#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ImageError {
    pub path: PathBuf,
    pub message: String,
}

/// Decodes an image file and resizes it to height × width (bilinear). A JPEG must end with its end-of-image
/// marker: the decoder would fill a truncated one with grey instead of failing.
pub fn load_resized(path: &Path, height: u32, width: u32) -> Result<RgbImage, ImageError> {
    let bad = |message: String| ImageError {
        path: path.to_path_buf(),
        message,
    };
    let bytes = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    if bytes.starts_with(&[0xFF, 0xD8]) && !ends_with_eoi(&bytes) {
        return Err(bad(
            "truncated JPEG: the file ends before its end-of-image marker".into(),
        ));
    }
    let img = image::load_from_memory(&bytes).map_err(|e| bad(e.to_string()))?;
    Ok(image::imageops::resize(
        &img.to_rgb8(),
        width,
        height,
        FilterType::Triangle,
    ))
}

/// CHW values of an image, ImageNet-normalised, optionally mirrored.
pub fn normalized(img: &RgbImage, mirror: bool) -> Vec<f32> {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let mut out = vec![0f32; 3 * h * w];
    for (x, y, px) in img.enumerate_pixels() {
        let xo = if mirror {
            w - 1 - x as usize
        } else {
            x as usize
        };
        for c in 0..3 {
            out[c * h * w + y as usize * w + xo] = (px[c] as f32 / 255.0 - MEAN[c]) / STD[c];
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
