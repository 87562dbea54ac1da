//! Bilinear resizing of RGB8 images, bit for bit what the image crate's `imageops::resize` with `FilterType::Triangle`
//! computes (image 0.25: a vertical pass into f32, then a horizontal pass, each output the in-order f32 sum of
//! inputs times weights normalised by their sum, clamped to [0, 255] and rounded half away from zero), but on three
//! channels in flat buffers with the weights computed once per dimension: the generic version spent more than half of
//! the training loader's time (its resize and a `roundf` call per channel).

use image::RgbImage;

/// Each output position's first input index and its weights, as the image crate's Triangle filter computes them.
struct Taps {
    left: Vec<usize>,
    weights: Vec<Vec<f32>>,
}

impl Taps {
    fn new(input: u32, output: u32) -> Taps {
        let ratio = input as f32 / output as f32;
        let sratio = if ratio < 1.0 { 1.0 } else { ratio };
        let support = sratio; // the Triangle filter's support, 1, scaled
        let mut taps = Taps {
            left: Vec::with_capacity(output as usize),
            weights: Vec::with_capacity(output as usize),
        };
        for out in 0..output {
            let centre = (out as f32 + 0.5) * ratio;
            let left = ((centre - support).floor() as i64).clamp(0, i64::from(input) - 1);
            let right = ((centre + support).ceil() as i64).clamp(left + 1, i64::from(input));
            let centre = centre - 0.5;
            let mut weights: Vec<f32> = (left..right)
                .map(|i| triangle((i as f32 - centre) / sratio))
                .collect();
            let mut sum = 0.0;
            for w in &weights {
                sum += w;
            }
            for w in &mut weights {
                *w /= sum;
            }
            taps.left.push(left as usize);
            taps.weights.push(weights);
        }
        taps
    }
}

fn triangle(x: f32) -> f32 {
    if x.abs() < 1.0 { 1.0 - x.abs() } else { 0.0 }
}

/// `value` clamped to [0, 255] and rounded half away from zero, as `f32::round` does: for a non-negative value the
/// fraction above its integer part is exact, so comparing it with 0.5 rounds the same without a `roundf` call.
fn to_u8(value: f32) -> u8 {
    let value = value.clamp(0.0, 255.0);
    let whole = value as u32;
    let fraction = value - whole as f32;
    (whole + u32::from(fraction >= 0.5)) as u8
}

/// `image` resized to `width` × `height`.
pub fn resize_rgb8(image: &RgbImage, width: u32, height: u32) -> RgbImage {
    let (in_w, in_h) = image.dimensions();
    if (in_w, in_h) == (width, height) || in_w == 0 || in_h == 0 {
        return image::imageops::resize(
            image,
            width,
            height,
            image::imageops::FilterType::Triangle,
        );
    }
    let src = image.as_raw();
    let (iw, w, h) = (in_w as usize, width as usize, height as usize);
    // Vertical pass: `height` rows of the input's width, in f32.
    let rows = Taps::new(in_h, height);
    let mut tmp = vec![0f32; h * iw * 3];
    for (y, (&left, weights)) in rows.left.iter().zip(&rows.weights).enumerate() {
        let out = &mut tmp[y * iw * 3..(y + 1) * iw * 3];
        for (i, &weight) in weights.iter().enumerate() {
            let row = &src[(left + i) * iw * 3..(left + i + 1) * iw * 3];
            for (t, &p) in out.iter_mut().zip(row) {
                *t += f32::from(p) * weight;
            }
        }
    }
    // Horizontal pass: each output column from its taps, rounded.
    let columns = Taps::new(in_w, width);
    let mut out = vec![0u8; h * w * 3];
    for y in 0..h {
        let row = &tmp[y * iw * 3..(y + 1) * iw * 3];
        let dst = &mut out[y * w * 3..(y + 1) * w * 3];
        for (x, (&left, weights)) in columns.left.iter().zip(&columns.weights).enumerate() {
            let mut t = [0f32; 3];
            for (i, &weight) in weights.iter().enumerate() {
                let p = &row[(left + i) * 3..(left + i) * 3 + 3];
                t[0] += p[0] * weight;
                t[1] += p[1] * weight;
                t[2] += p[2] * weight;
            }
            dst[x * 3] = to_u8(t[0]);
            dst[x * 3 + 1] = to_u8(t[1]);
            dst[x * 3 + 2] = to_u8(t[2]);
        }
    }
    RgbImage::from_raw(width, height, out).expect("width × height × 3 values")
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::imageops::{FilterType, resize};

    #[test]
    fn it_is_the_image_crates_triangle_resize_bit_for_bit() {
        let mut rng = mgat_util::rng::Rng::new(5, &[]);
        // Up and down in each direction, odd sizes, the loader's 128×64 → 256×128 and the thumbnails' size.
        let sizes = [
            ((64, 128), (128, 256)),
            ((64, 128), (32, 64)),
            ((37, 91), (128, 256)),
            ((300, 20), (17, 63)),
            ((1, 1), (5, 3)),
            ((7, 9), (7, 2)),
        ];
        for ((iw, ih), (ow, oh)) in sizes {
            let image = RgbImage::from_fn(iw, ih, |_, _| {
                image::Rgb([
                    rng.below(256) as u8,
                    rng.below(256) as u8,
                    rng.below(256) as u8,
                ])
            });
            let expected = resize(&image, ow, oh, FilterType::Triangle);
            assert_eq!(
                resize_rgb8(&image, ow, oh),
                expected,
                "{iw}×{ih} → {ow}×{oh}"
            );
        }
    }

    #[test]
    fn rounding_is_half_away_from_zero_as_f32_round() {
        let mut rng = mgat_util::rng::Rng::new(9, &[]);
        let special = [
            0.0, 0.49999997, 0.5, 0.50000006, 1.5, 2.5, 254.5, 254.49998, 255.0, 300.0, -3.0,
        ];
        let random = (0..100_000).map(|_| rng.range(-1.0, 256.0));
        for v in special.into_iter().chain(random) {
            let expected = v.clamp(0.0, 255.0).round() as u8;
            assert_eq!(to_u8(v), expected, "{v}");
        }
    }
}
