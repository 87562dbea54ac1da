//! The training loader alone, for `benches/loader_bench.sh`: the P×K sampler, then per image reading the file (its
//! SHA-256 checked, as in a train stage), JPEG decoding, resizing to 256×128, flip, pad-and-crop, random erasing
//! and normalisation, on WORKERS decoding threads, over the first BATCHES batches of 64 of a Market-1501-layout
//! tree's training set. Prints `images_per_s=…`.
//!
//! Usage: cargo run --release -p mgat-train --example loader_speed -- ROOT WORKERS BATCHES

use mgat_data::image::PinnedTree;
use mgat_data::index::{Format, index};
use mgat_train::data::stream_epoch;
use mgat_train::key::TrainSettings;
use std::path::PathBuf;
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [root, workers, batches] = args.as_slice() else {
        return Err("usage: loader_speed ROOT WORKERS BATCHES".into());
    };
    let (root, workers, batches) = (PathBuf::from(root), workers.parse()?, batches.parse()?);
    let train = index(Format::Market1501, &root)?.train;
    // A train stage is handed every file's digest by the lock check; here they are computed before the clock starts.
    let digests = train
        .iter()
        .map(|item| {
            let (sha, _) = mgat_util::digest::sha256_file(&root.join(&item.path))?;
            Ok((item.path.clone(), sha))
        })
        .collect::<Result<Vec<_>, std::io::Error>>()?;
    let tree = PinnedTree::new(&root, digests);
    let cfg = TrainSettings {
        seed: 1,
        height: 256,
        width: 128,
        batch_size: 64,
        instances: 4,
        flip: true,
        pad: 10,
        random_erasing: 0.5,
        ..TrainSettings::default()
    };
    let started = Instant::now();
    let mut images = 0usize;
    for batch in stream_epoch(&tree, &train, &cfg, workers, 0, 0)
        .iter()
        .take(batches)
    {
        images += batch?.labels.len();
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "images={images} seconds={seconds:.3} images_per_s={:.1}",
        images as f64 / seconds
    );
    Ok(())
}
