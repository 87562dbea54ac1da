//! Training batches: the seeded P×K identity sampler, augmentation (horizontal flip, pad-and-crop, random erasing),
//! and a loader that decodes the next batches on worker threads while the model trains on the current one.

use crate::key::TrainSettings;
use image::RgbImage;
use mgat_data::image::{ImageError, PinnedTree, normalized};
use mgat_data::index::Item;
use mgat_util::rng::Rng;
use std::sync::mpsc;

/// One batch: images as N×3×H×W values (row-major) and their training labels.
pub struct Batch {
    pub images: Vec<f32>,
    pub labels: Vec<u32>,
}

/// The batches of `epoch`: each picks P distinct identities at random and K images of each (without replacement
/// where an identity has K or more). Seeded by (seed, epoch), so a resumed run sees the same batches.
pub fn epoch_batches(cfg: &TrainSettings, train: &[Item], epoch: u32) -> Vec<Vec<usize>> {
    let k = cfg.instances as usize;
    let p = cfg.batch_size as usize / k;
    let mut by_pid: Vec<Vec<usize>> = Vec::new();
    for (i, item) in train.iter().enumerate() {
        let label = item.pid as usize;
        if by_pid.len() <= label {
            by_pid.resize(label + 1, Vec::new());
        }
        by_pid[label].push(i);
    }
    let iters = cfg
        .iters_per_epoch
        .map_or((train.len() / cfg.batch_size as usize).max(1), |n| {
            n as usize
        });
    let mut rng = Rng::new(cfg.seed, &[0x5a4d, u64::from(epoch)]);
    (0..iters)
        .map(|_| {
            let mut pids: Vec<usize> = (0..by_pid.len())
                .filter(|&l| !by_pid[l].is_empty())
                .collect();
            rng.shuffle(&mut pids);
            pids.iter()
                .cycle()
                .take(p)
                .flat_map(|&l| {
                    let mut images = by_pid[l].clone();
                    rng.shuffle(&mut images);
                    (0..k)
                        .map(|j| {
                            if j < images.len() {
                                images[j]
                            } else {
                                images[rng.below(images.len() as u32) as usize]
                            }
                        })
                        .collect::<Vec<_>>()
                })
                .collect()
        })
        .collect()
}

/// Flip, pad-and-crop, normalise and random erasing, drawn from `rng`.
fn augment(img: &RgbImage, cfg: &TrainSettings, rng: &mut Rng) -> Vec<f32> {
    let (h, w) = (cfg.height as usize, cfg.width as usize);
    let mut chw = normalized(img, cfg.flip && rng.chance(0.5));
    if cfg.pad > 0 {
        // Zero padding in normalised space is the mean colour; crop back to size at a random offset.
        let pad = cfg.pad as usize;
        let (dy, dx) = (
            rng.below(2 * cfg.pad + 1) as isize - pad as isize,
            rng.below(2 * cfg.pad + 1) as isize - pad as isize,
        );
        chw = shifted(&chw, h, w, dy, dx);
    }
    if rng.chance(cfg.random_erasing as f32) {
        erase(&mut chw, h, w, rng);
    }
    chw
}

/// The CHW image `src` (h × w) moved so that output (y, x) is input (y + dy, x + dx) where that is inside, 0
/// elsewhere: pad-and-crop, copied as whole row segments.
fn shifted(src: &[f32], h: usize, w: usize, dy: isize, dx: isize) -> Vec<f32> {
    let mut out = vec![0f32; 3 * h * w];
    let x0 = (-dx).clamp(0, w as isize) as usize;
    let x1 = (w as isize - dx).clamp(0, w as isize) as usize;
    for c in 0..3 {
        for y in 0..h {
            let sy = y as isize + dy;
            if sy < 0 || sy >= h as isize || x0 >= x1 {
                continue;
            }
            let (to, from) = (c * h * w + y * w, c * h * w + sy as usize * w);
            let sx0 = (x0 as isize + dx) as usize;
            out[to + x0..to + x1].copy_from_slice(&src[from + sx0..from + sx0 + (x1 - x0)]);
        }
    }
    out
}

/// Random erasing (Zhong et al.): a rectangle of 2–40% of the area and aspect 0.3–3.3 set to the mean colour.
fn erase(chw: &mut [f32], h: usize, w: usize, rng: &mut Rng) {
    for _ in 0..100 {
        let area = (h * w) as f32 * rng.range(0.02, 0.4);
        let aspect = rng.range(0.3, 3.33);
        let (eh, ew) = (
            (area * aspect).sqrt() as usize,
            (area / aspect).sqrt() as usize,
        );
        if eh == 0 || ew == 0 || eh >= h || ew >= w {
            continue;
        }
        let (y0, x0) = (
            rng.below((h - eh) as u32) as usize,
            rng.below((w - ew) as u32) as usize,
        );
        for c in 0..3 {
            for y in y0..y0 + eh {
                chw[c * h * w + y * w + x0..c * h * w + y * w + x0 + ew].fill(0.0);
            }
        }
        return;
    }
}

/// Streams the batches of one epoch, decoded by `workers` threads, at most two batches ahead of the consumer. The
/// decoding threads are plain threads started per batch, not a pool: nothing of theirs spins while the model runs.
pub fn stream_epoch(
    dataset: &PinnedTree,
    train: &[Item],
    cfg: &TrainSettings,
    workers: u32,
    epoch: u32,
    start_batch: usize,
) -> mpsc::Receiver<Result<Batch, ImageError>> {
    let (tx, rx) = mpsc::sync_channel(2);
    let batches = epoch_batches(cfg, train, epoch);
    let (dataset, train, cfg) = (dataset.clone(), train.to_vec(), cfg.clone());
    std::thread::spawn(move || {
        for (b, batch) in batches.iter().enumerate().skip(start_batch) {
            let message = decode_batch(&dataset, &train, &cfg, workers, (epoch, b), batch);
            if tx.send(message).is_err() {
                return; // the trainer stopped listening
            }
        }
    });
    rx
}

/// Decodes and augments batch `b` of `epoch`: slot i on thread i mod `workers`, each slot from its own seeded
/// stream, so the result does not depend on the thread count.
fn decode_batch(
    dataset: &PinnedTree,
    train: &[Item],
    cfg: &TrainSettings,
    workers: u32,
    (epoch, b): (u32, usize),
    batch: &[usize],
) -> Result<Batch, ImageError> {
    let workers = (workers as usize).clamp(1, batch.len().max(1));
    let decode = |slot: usize| -> Result<Vec<f32>, ImageError> {
        let item = &train[batch[slot]];
        let img = dataset.load_resized(&item.path, cfg.height, cfg.width)?;
        let mut rng = Rng::new(cfg.seed, &[0xa06, u64::from(epoch), b as u64, slot as u64]);
        Ok(augment(&img, cfg, &mut rng))
    };
    let mut images: Vec<Vec<f32>> = vec![Vec::new(); batch.len()];
    std::thread::scope(|scope| {
        let threads: Vec<_> = (0..workers)
            .map(|t| {
                scope.spawn(move || {
                    (t..batch.len())
                        .step_by(workers)
                        .map(|slot| (slot, decode(slot)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for thread in threads {
            let decoded = thread
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            for (slot, image) in decoded {
                images[slot] = image?;
            }
        }
        Ok::<_, ImageError>(())
    })?;
    Ok(Batch {
        images: images.concat(),
        labels: batch.iter().map(|&i| train[i].pid as u32).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{HashMap, HashSet};

    #[test]
    fn a_shift_is_the_per_pixel_pad_and_crop() {
        let (h, w) = (5, 4);
        let src: Vec<f32> = (0..3 * h * w).map(|v| v as f32 + 0.5).collect();
        for dy in -6..=6 {
            for dx in -6..=6 {
                let mut expected = vec![0f32; 3 * h * w];
                for c in 0..3 {
                    for y in 0..h {
                        for x in 0..w {
                            let (sy, sx) = (y as isize + dy, x as isize + dx);
                            if sy >= 0 && sx >= 0 && (sy as usize) < h && (sx as usize) < w {
                                expected[c * h * w + y * w + x] =
                                    src[c * h * w + sy as usize * w + sx as usize];
                            }
                        }
                    }
                }
                assert_eq!(shifted(&src, h, w, dy, dx), expected, "dy {dy}, dx {dx}");
            }
        }
    }

    fn items(counts: &[usize]) -> Vec<Item> {
        counts
            .iter()
            .enumerate()
            .flat_map(|(pid, &n)| {
                (0..n).map(move |i| Item {
                    path: format!("{pid}_{i}.jpg"),
                    pid: pid as i64,
                    camid: 0,
                })
            })
            .collect()
    }

    #[test]
    fn batches_are_p_identities_by_k_images_and_seeded() {
        let train = items(&[5, 2, 8, 4, 6, 4]);
        let cfg = TrainSettings {
            batch_size: 12,
            instances: 4,
            seed: 3,
            ..TrainSettings::default()
        };
        let batches = epoch_batches(&cfg, &train, 0);
        assert_eq!(batches.len(), train.len() / 12);
        for b in &batches {
            assert_eq!(b.len(), 12);
            let mut per_pid: HashMap<i64, Vec<usize>> = HashMap::new();
            for &i in b {
                per_pid.entry(train[i].pid).or_default().push(i);
            }
            assert_eq!(per_pid.len(), 3, "P = 3 distinct identities");
            for (pid, images) in per_pid {
                assert_eq!(images.len(), 4);
                let distinct: HashSet<_> = images.iter().collect();
                let available = train.iter().filter(|t| t.pid == pid).count();
                assert_eq!(
                    distinct.len(),
                    available.min(4),
                    "without replacement when possible"
                );
            }
        }
        assert_eq!(batches, epoch_batches(&cfg, &train, 0));
        assert_ne!(batches, epoch_batches(&cfg, &train, 1));
    }
}
