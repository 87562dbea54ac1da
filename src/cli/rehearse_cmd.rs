//! `mgat rehearse`: every cell of the specs end to end with a small model and a few iterations, on the datasets the
//! project's lock names where they are on this machine and, for any other, on a layout-true synthetic tree at its
//! release's official split sizes, generated once into the rehearsal's folder. Everything goes under `--out` (its
//! own lock, cache and reports, the paper's tables among them), never under `reports/`, so a rehearsal cannot be
//! mistaken for results; it ends with what the real run would need.

use super::data_cmd::{generate_tree, lock_dataset};
use super::run_cmd::{RunArgs, run_into};
use super::{Context, UsageError};
use crate::data::{Format, LockFile};
use crate::report::paper::{PAPER_FILE, PAPER_REPORT, PaperTables, render};
use crate::spec::{Override, RunConfig, Spec};
use anyhow::Result;
use clap::Args;
use mgat_data::official;
use mgat_synth::{Layout, SynthParams};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// What a rehearsal changes in every cell (before the user's `--set`): a ResNet-18 of width 8 from scratch at
/// 64×32, one epoch of three iterations of P×K = 4×4, on the CPU.
pub const REHEARSAL: [&str; 12] = [
    "model.backbone=resnet18",
    "model.width=8",
    "model.pretrained=null",
    "train.device=cpu",
    "train.height=64",
    "train.width=32",
    "train.batch_size=16",
    "train.instances=4",
    "train.epochs=1",
    "train.iters_per_epoch=3",
    "train.warmup_epochs=0",
    "train.lr_steps=[]",
];

/// The seed of the stand-in trees.
const STAND_IN_SEED: u64 = 1;

#[derive(Args, Debug)]
pub struct RehearseArgs {
    /// Where the rehearsal's lock, stand-in datasets, cache and reports go.
    #[arg(long, default_value = ".mgat/rehearsal")]
    out: PathBuf,
    #[command(flatten)]
    run: RunArgs,
}

pub fn rehearse(ctx: &Context, mut args: RehearseArgs) -> Result<ExitCode> {
    args.run = args
        .run
        .offline("a rehearsal never uses a remote: its entries are not results")?;
    let out = super::absolute(&args.out, &std::env::current_dir()?);
    let reports = ctx.project.reports();
    if out.starts_with(&reports) {
        return Err(UsageError(format!(
            "--out {}: a rehearsal never writes under {}",
            args.out.display(),
            reports.display()
        ))
        .into());
    }
    let mut overrides: Vec<Override> = REHEARSAL
        .iter()
        .map(|o| o.parse().map_err(UsageError))
        .collect::<Result<_, _>>()?;
    overrides.extend(args.run.overrides().iter().cloned());
    let real = Spec::load_all(args.run.specs(), args.run.overrides())?;
    println!(
        "rehearsing {} cells of {} with {}",
        real.iter().map(|s| s.cells.len()).sum::<usize>(),
        names(&real),
        REHEARSAL.join(" ")
    );
    let rehearsal = Context::at(
        ctx.project.clone(),
        out.join("cache"),
        out.join(crate::project::LOCK_FILE),
        ctx.quiet,
    );
    // On a pool of its own: the run fixes the global pool's threads when it has read the cells.
    rayon::ThreadPoolBuilder::new()
        .build()?
        .install(|| prepare_datasets(ctx, &rehearsal, &real, &out))?;
    let rehearsed_reports = out.join("reports");
    mgat_util::fsio::create_dir_all(&rehearsed_reports)?;
    let paper_yaml = reports.join(PAPER_FILE);
    if paper_yaml.is_file() {
        mgat_util::fsio::write_atomic(
            &rehearsed_reports.join(PAPER_FILE),
            &mgat_util::fsio::read(&paper_yaml)?,
        )?;
    }
    let started = std::time::Instant::now();
    let detached = args.run.detaches();
    let code = run_into(
        &rehearsal,
        args.run.with_overrides(overrides),
        &rehearsed_reports,
    )?;
    if detached {
        // The jobs are queued: the reports and paper.md come with the run that collects them.
        return Ok(code);
    }
    let wall = started.elapsed().as_secs_f64();
    if let Some((paper, compared)) = PaperTables::compare_if_present(&rehearsed_reports)? {
        let path = rehearsed_reports.join(PAPER_REPORT);
        let text = format!(
            "> A rehearsal (`mgat rehearse`, with {}): the pipeline at full data size with a toy model. These \
             numbers are not results.\n\n{}",
            REHEARSAL.join(" "),
            render(&paper, &compared)
        );
        mgat_util::fsio::write_atomic(&path, text.as_bytes())?;
        println!(
            "wrote {} (the paper's tables from the rehearsal)",
            path.display()
        );
    }
    println!("rehearsal: {wall:.1} s");
    let lock = rehearsal.load_lock()?;
    print!("{}", needs(&real, &lock)?);
    Ok(code)
}

fn names(specs: &[Spec]) -> String {
    specs
        .iter()
        .map(|s| s.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Writes the rehearsal's lock: each dataset the cells name, as the project's lock has it where it is on this
/// machine (a synthetic one, or a tree whose root exists), else a stand-in generated into `<out>/datasets/<name>`
/// at its release's official split sizes, in the layout the project's lock gives it or its name suggests.
fn prepare_datasets(ctx: &Context, rehearsal: &Context, specs: &[Spec], out: &Path) -> Result<()> {
    let project_lock = match ctx.lock_path.is_file() {
        true => Some(ctx.load_lock()?),
        false => None,
    };
    let mut wanted: Vec<&str> = specs
        .iter()
        .flat_map(|s| &s.cells)
        .map(|c| c.config.dataset.name.as_str())
        .collect();
    wanted.sort();
    wanted.dedup();
    // What an earlier rehearsal in this folder locked (each name is locked at most once below).
    let earlier = match rehearsal.lock_path.is_file() {
        true => Some(rehearsal.load_lock()?),
        false => None,
    };
    for name in wanted {
        let locked = project_lock.as_ref().and_then(|l| l.entry(name).ok());
        let already = earlier.as_ref().and_then(|l| l.entry(name).ok());
        if let Some(entry) = locked {
            let root = project_lock
                .as_ref()
                .and_then(|l| l.root(name).ok().flatten());
            let here = entry.format == Format::Synth || root.as_ref().is_some_and(|r| r.is_dir());
            if here {
                if already.as_ref().is_some_and(|a| a.digest == entry.digest) {
                    continue;
                }
                let root = root.map(|r| r.display().to_string());
                lock_dataset(
                    rehearsal,
                    name,
                    entry.format,
                    root.as_deref(),
                    true,
                    entry.synth.clone(),
                )?;
                let relocked = rehearsal.load_lock()?.entry(name)?.digest.clone();
                if relocked != entry.digest {
                    return Err(UsageError(format!(
                        "dataset `{name}` is not what {} pins ({} there, {relocked} here): `mgat data verify \
                         {name}` names the files that changed",
                        ctx.lock_path.display(),
                        entry.digest
                    ))
                    .into());
                }
                println!("  {name}: the project's, as locked");
                continue;
            }
        }
        let format = match locked {
            Some(entry) => entry.format,
            None => layout_of(name).ok_or_else(|| {
                UsageError(format!(
                    "dataset `{name}` is not locked and its name suggests no layout (market1501, dukemtmc-reid, \
                     cuhk03-np, msmt17): lock it with `mgat data lock`"
                ))
            })?,
        };
        let tree = out.join("datasets").join(name);
        if already.is_some() && tree.is_dir() {
            continue;
        }
        let release = official::releases(format)[0];
        println!(
            "  {name}: not on this machine; a {} stand-in at {}'s split sizes",
            format.name(),
            release.name
        );
        if !tree.is_dir() {
            let layout = Layout {
                format,
                official: Some(release),
            };
            generate_tree(ctx, &tree, &layout, &stand_in_params())?;
        }
        lock_dataset(
            rehearsal,
            name,
            format,
            Some(&tree.display().to_string()),
            false,
            None,
        )?;
    }
    Ok(())
}

/// The generator's parameters for a stand-in: the official split sizes replace the counts.
fn stand_in_params() -> SynthParams {
    SynthParams {
        seed: STAND_IN_SEED,
        ids: 100,
        cameras: 6,
        images_per_camera: 4,
        height: 128,
        width: 64,
        junk: 0,
        distractors: 0,
        quality: 90,
    }
}

/// The layout a dataset's name suggests.
fn layout_of(name: &str) -> Option<Format> {
    let name = name.to_ascii_lowercase();
    [
        ("market", Format::Market1501),
        ("duke", Format::DukeMtmcReid),
        ("cuhk03", Format::Cuhk03Np),
        ("msmt", Format::Msmt17),
    ]
    .into_iter()
    .find(|(prefix, _)| name.starts_with(prefix))
    .map(|(_, f)| f)
}

/// What the real run (the specs as written) needs: its distinct train and eval stages (cells that share a key
/// share a stage, as the plan shares them), and the images they process at the datasets' sizes.
fn needs(specs: &[Spec], lock: &LockFile) -> Result<String> {
    let mut trains: BTreeMap<String, Option<u64>> = BTreeMap::new();
    let mut evals: BTreeMap<String, Option<u64>> = BTreeMap::new();
    let mut sizes: BTreeMap<String, Option<(u64, u64)>> = BTreeMap::new();
    for cell in specs.iter().flat_map(|s| &s.cells) {
        let config = &cell.config;
        let dataset = &config.dataset.name;
        if !sizes.contains_key(dataset) {
            sizes.insert(dataset.clone(), split_sizes(lock, dataset)?);
        }
        let size = sizes[dataset];
        // The checkpoint's path stands for its digest: the same file, the same key.
        let key = crate::plan::keys::train_key(config, config.model.pretrained.clone());
        let train = serde_json::to_string(&(dataset, &key))?;
        trains.insert(train.clone(), size.map(|(t, _)| images_trained(config, t)));
        let passes = if config.eval.flip { 2 } else { 1 };
        evals.insert(
            format!("{train}{}", serde_json::to_string(&config.eval)?),
            size.map(|(_, test)| test * passes),
        );
    }
    let total = |m: &BTreeMap<String, Option<u64>>| -> String {
        let known: u64 = m.values().flatten().sum();
        let unknown = m.values().filter(|v| v.is_none()).count();
        match unknown {
            0 => format!("{known} images"),
            n => format!("{known} images, besides {n} on synthetic data"),
        }
    };
    Ok(format!(
        "the real run: {} train stages ({} through the network, forward and backward), {} eval stages ({} \
         forward); GPU time: no measured throughput of these models on a GPU here: at R images/s, N images take \
         N/R seconds (measure R on one cell: `mgat run SPEC --only CELL`)\n",
        trains.len(),
        total(&trains),
        evals.len(),
        total(&evals),
    ))
}

/// Images a train stage passes through the network: epochs × iterations × batch (an epoch is the training set
/// once, in whole batches, unless `iters_per_epoch` says otherwise).
fn images_trained(config: &RunConfig, train_images: u64) -> u64 {
    let t = &config.train;
    let batch = u64::from(t.batch_size);
    let iters = t
        .iters_per_epoch
        .map_or((train_images / batch.max(1)).max(1), u64::from);
    u64::from(t.epochs) * iters * batch
}

/// (training images, query + gallery images) of a locked tree, from its index; None for a synthetic dataset.
fn split_sizes(lock: &LockFile, name: &str) -> Result<Option<(u64, u64)>> {
    let entry = lock.entry(name)?;
    let Some(root) = lock.root(name)? else {
        return Ok(None);
    };
    let index = mgat_data::index::index(entry.format, &root)?;
    Ok(Some((
        index.train.len() as u64,
        (index.query.len() + index.gallery.len()) as u64,
    )))
}
