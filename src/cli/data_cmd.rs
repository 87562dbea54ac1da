//! `mgat data synth|lock|verify`: generate the synthetic dataset, pin a dataset in `datasets.lock`, and check
//! datasets against their lock entries.

use super::{Context, SynthArgs, UsageError};
use crate::data::DatasetIndex;
use crate::data::hash::{FileDigest, hash_tree};
use crate::data::lock::{NONSTANDARD, expand_env};
use crate::data::{Format, LockEntry};
use anyhow::{Context as _, Result};
use clap::Subcommand;
use indicatif::ProgressBar;
use mgat_data::index::index;
use mgat_data::official::{self, SplitSizes};
use mgat_synth::{Layout, SynthParams, generate, generate_layout, image_count};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Subcommand, Debug)]
pub enum DataCommand {
    /// Write a synthetic dataset in a real dataset's layout (Market-1501 by default), to lock with that --format.
    Synth {
        /// Output folder; must not exist or be empty.
        #[arg(long)]
        out: PathBuf,
        /// market1501, dukemtmc-reid, cuhk03-np (PNG, two cameras) or msmt17 (with its list files).
        #[arg(long, default_value = "market1501")]
        layout: String,
        /// The layout's official split sizes (CUHK03-NP: detected) instead of --ids and --images-per-camera;
        /// Market-1501 gets its 3,819 junk images.
        #[arg(long)]
        official_size: bool,
        #[command(flatten)]
        params: SynthArgs,
    },
    /// Hash a dataset and write its entry in datasets.lock (and the per-file list in <cache>/.file-lists/).
    Lock {
        /// The name specs use (`dataset.name`).
        name: String,
        /// market1501, dukemtmc-reid, cuhk03-np, msmt17 or synth.
        #[arg(long)]
        format: String,
        /// Dataset root (not for synth): a path, or a form with ${ENV_VAR} kept as written.
        #[arg(long)]
        root: Option<String>,
        /// Lock a tree whose split sizes are none of its format's official releases (recorded in the lock).
        #[arg(long)]
        allow_nonstandard: bool,
        #[command(flatten)]
        params: SynthArgs,
    },
    /// Check datasets against their lock entries, naming every added, removed or changed file.
    Verify {
        /// One dataset; all when omitted.
        name: Option<String>,
    },
}

pub fn run(ctx: &Context, cmd: DataCommand) -> Result<ExitCode> {
    match cmd {
        DataCommand::Synth {
            out,
            layout,
            official_size,
            params,
        } => synth(
            ctx,
            &out,
            &synth_layout(&layout, official_size, &params)?,
            &params,
        ),
        DataCommand::Lock {
            name,
            format,
            root,
            allow_nonstandard,
            params,
        } => lock(
            ctx,
            &name,
            &format,
            root.as_deref(),
            allow_nonstandard,
            &params,
        ),
        DataCommand::Verify { name } => verify(ctx, name.as_deref()),
    }
}

/// The layout `--layout` names, refusing junk or distractors it does not have.
fn synth_layout(name: &str, official_size: bool, args: &SynthArgs) -> Result<Layout, UsageError> {
    let format = Format::parse(name)
        .filter(|f| *f != Format::Synth)
        .ok_or_else(|| {
            UsageError(format!(
                "--layout {name}: expected market1501, dukemtmc-reid, cuhk03-np or msmt17"
            ))
        })?;
    let layout = Layout {
        format,
        official: official_size.then(|| official::releases(format)[0]),
    };
    let given = |v: Option<u32>| v.is_some_and(|n| n > 0) && !official_size;
    if given(args.junk) && !layout.takes_junk() {
        return Err(UsageError(format!(
            "--junk: a {name} tree has no junk images (only Market-1501 does)"
        )));
    }
    if given(args.distractors) && !layout.takes_distractors() {
        return Err(UsageError(format!(
            "--distractors: a {name} tree has no distractors (Market-1501 and DukeMTMC-reID do)"
        )));
    }
    Ok(layout)
}

fn synth(ctx: &Context, out: &Path, layout: &Layout, args: &SynthArgs) -> Result<ExitCode> {
    generate_tree(ctx, out, layout, &args.params()?)?;
    Ok(ExitCode::SUCCESS)
}

/// Writes a synthetic tree of `params` in `layout` into `out` (which must not exist or be empty): into a partial
/// folder beside it, moved into place when complete.
pub(super) fn generate_tree(
    ctx: &Context,
    out: &Path,
    layout: &Layout,
    params: &SynthParams,
) -> Result<()> {
    if out.exists() && std::fs::read_dir(out).map_or(true, |mut d| d.next().is_some()) {
        return Err(UsageError(format!(
            "--out {}: exists and is not empty; choose a new folder",
            out.display()
        ))
        .into());
    }
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "dataset".into());
    let partial = out.with_file_name(format!(".{name}.partial-{}", std::process::id()));
    let bar = ctx
        .progress()
        .add(ProgressBar::new(image_count(params, layout) as u64).with_message("generating"));
    let summary = generate_layout(params, layout, &partial, &|| bar.inc(1));
    bar.finish_and_clear();
    let summary = summary.inspect_err(|_| {
        let _ = std::fs::remove_dir_all(&partial);
    })?;
    if out.exists() {
        std::fs::remove_dir(out).with_context(|| format!("replacing empty {}", out.display()))?;
    }
    std::fs::rename(&partial, out)
        .with_context(|| format!("moving the dataset into {}", out.display()))?;
    println!(
        "wrote {}: {} train images of {} ids, {} query and {} gallery images of {} test ids",
        out.display(),
        summary.train_images,
        summary.train_ids,
        summary.query_images,
        summary.gallery_images,
        summary.test_ids
    );
    Ok(())
}

fn lock(
    ctx: &Context,
    name: &str,
    format: &str,
    root: Option<&str>,
    allow_nonstandard: bool,
    args: &SynthArgs,
) -> Result<ExitCode> {
    if !crate::data::lock::is_dataset_name(name) {
        return Err(UsageError(format!(
            "dataset name `{name}`: expected letters, digits, `.`, `_` or `-` (not `.` or `..` alone)"
        ))
        .into());
    }
    let formats: Vec<&str> = Format::ALL.iter().map(|f| f.name()).collect();
    let format = Format::parse(format).ok_or_else(|| {
        UsageError(format!(
            "--format {format}: expected one of {}",
            formats.join(", ")
        ))
    })?;
    let params = match format {
        Format::Synth => Some(args.params()?),
        _ => None,
    };
    lock_dataset(ctx, name, format, root, allow_nonstandard, params)?;
    Ok(ExitCode::SUCCESS)
}

/// Locks dataset `name` into the context's lock file: a synthetic one by its `params`, any other by the tree at
/// `root` (which must be one of its format's official releases unless `allow_nonstandard`).
pub(super) fn lock_dataset(
    ctx: &Context,
    name: &str,
    format: Format,
    root: Option<&str>,
    allow_nonstandard: bool,
    params: Option<SynthParams>,
) -> Result<()> {
    let mut lock = ctx.load_lock()?;
    let (entry, files) = match (format, root) {
        (Format::Synth, Some(_)) => {
            return Err(
                UsageError("--root: a synth dataset is generated, it has no root".into()).into(),
            );
        }
        (Format::Synth, None) => {
            let params =
                params.ok_or_else(|| UsageError("a synthetic dataset needs --seed N".into()))?;
            let files = hash_generated(ctx, &params)?;
            (LockEntry::new(format, None, Some(params), &files), files)
        }
        (_, None) => {
            return Err(UsageError(format!(
                "--root DIR: a {} dataset needs its root folder",
                format.name()
            ))
            .into());
        }
        (_, Some(root)) => {
            let (stored, resolved) = root_forms(root, lock.path())?;
            let idx = index(format, &resolved)?;
            let release = official_release(&idx, &resolved, allow_nonstandard)?;
            let files = hash_with_bar(ctx, &resolved)?;
            let mut entry = LockEntry::new(format, Some(stored), None, &files);
            entry.release = release;
            (entry, files)
        }
    };
    println!(
        "locked {name}: {} files, {} bytes, {}",
        entry.files, entry.bytes, entry.digest
    );
    lock.set(name, entry, &files)?;
    Ok(())
}

/// Which official release the indexed tree is, by its split sizes; a tree that is none of them is refused (exit 2,
/// expected vs found per split) unless `allow_nonstandard`.
fn official_release(
    idx: &DatasetIndex,
    root: &Path,
    allow_nonstandard: bool,
) -> Result<Option<String>> {
    let found = SplitSizes::of(idx);
    println!(
        "{}: {} train images of {} ids, {} query images of {} ids, {} gallery images of {} ids",
        root.display(),
        found.train_images,
        found.train_ids,
        found.query_images,
        found.query_ids,
        found.gallery_images,
        found.gallery_ids
    );
    match official::check(idx.format, found) {
        Ok(Some(release)) => {
            println!("the official {} split sizes", release.name);
            Ok(Some(release.name.to_string()))
        }
        Ok(None) => Ok(None),
        Err(mismatch) if allow_nonstandard => {
            eprintln!("warning: {}: {mismatch}", root.display());
            eprintln!("locked as `release: {NONSTANDARD}` (--allow-nonstandard)");
            Ok(Some(NONSTANDARD.to_string()))
        }
        Err(mismatch) => Err(UsageError(format!(
            "{}: {mismatch}\n(a partial unzip, another variant, swapped query and gallery folders?) \
             To lock it anyway: --allow-nonstandard",
            root.display()
        ))
        .into()),
    }
}

/// How a root is written into the lock (relative to the lock's folder where it lies below it; `${VAR}` forms kept)
/// and where it is on this machine.
fn root_forms(root: &str, lock_path: &Path) -> Result<(String, PathBuf)> {
    if root.contains("${") {
        let expanded = expand_env(root)
            .map_err(|var| UsageError(format!("--root {root}: ${{{var}}} is not set")))?;
        return Ok((
            root.to_string(),
            lock_path.parent().unwrap_or(Path::new("")).join(expanded),
        ));
    }
    let resolved = Path::new(root)
        .canonicalize()
        .map_err(|e| UsageError(format!("--root {root}: {e}")))?;
    let lock_dir = lock_path.parent().and_then(|d| d.canonicalize().ok());
    let stored = match lock_dir
        .as_deref()
        .and_then(|d| resolved.strip_prefix(d).ok())
    {
        Some(rel) => rel.to_string_lossy().into_owned(),
        None => resolved.to_string_lossy().into_owned(),
    };
    Ok((stored, resolved))
}

fn verify(ctx: &Context, only: Option<&str>) -> Result<ExitCode> {
    if !ctx.lock_path.is_file() {
        return Err(UsageError(format!(
            "{}: no lock file to verify (create it with `mgat data lock`)",
            ctx.lock_path.display()
        ))
        .into());
    }
    let lock = ctx.load_lock()?;
    let names: Vec<String> = match only {
        Some(name) => {
            lock.entry(name)?;
            vec![name.to_string()]
        }
        None => lock.names().map(str::to_string).collect(),
    };
    let mut mismatches = 0;
    for name in &names {
        let entry = lock.entry(name)?;
        let (root, files) = match &entry.synth {
            Some(params) => (
                PathBuf::from(format!("(generated from seed {})", params.seed)),
                hash_generated(ctx, params)?,
            ),
            None => {
                let root = lock.root(name)?.unwrap_or_default();
                let files = hash_with_bar(ctx, &root)?;
                (root, files)
            }
        };
        match lock.check_tree(name, &root, &files) {
            Ok(()) => println!(
                "ok {name}: {} files, {} bytes, {}",
                entry.files, entry.bytes, entry.digest
            ),
            Err(e) => {
                mismatches += 1;
                eprintln!("error: {e}");
            }
        }
        if let Some(params) = &entry.synth {
            mismatches += verify_cached_copies(ctx, name, params)?;
        }
    }
    Ok(if mismatches == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    })
}

/// Re-hashes the cache's generated copies of synthetic dataset `name` (the synth entries of its parameters), which
/// stages read instead of generating it again; says how many there are and names each damaged one.
fn verify_cached_copies(
    ctx: &Context,
    name: &str,
    params: &mgat_synth::SynthParams,
) -> Result<usize> {
    if !ctx.cache.root().is_dir() {
        println!(
            "   {name}: no cached copy (no cache at {})",
            ctx.cache.root().display()
        );
        return Ok(0);
    }
    let config = crate::plan::StageConfig::Synth(params.clone());
    let copies = std::sync::atomic::AtomicUsize::new(0);
    let select = |m: &crate::cache::Manifest| {
        let selected = m.kind == crate::plan::StageKind::Synth && m.inputs.config == config;
        if selected {
            copies.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        selected
    };
    let damaged = ctx
        .cache
        .verify(crate::cache::Verify::Where(&select), &|| {})?;
    for d in &damaged {
        eprintln!(
            "error: {name}: its cached copy {} is damaged: {} (`mgat cache verify` moves it aside; the next run \
             generates it again)",
            d.entry.path.display(),
            d.problem
        );
    }
    let copies = copies.into_inner();
    println!(
        "   {name}: {copies} cached cop{} re-hashed, {} damaged",
        if copies == 1 { "y" } else { "ies" },
        damaged.len()
    );
    Ok(damaged.len())
}

fn hash_with_bar(ctx: &Context, root: &Path) -> Result<Vec<FileDigest>> {
    let bar = ctx
        .progress()
        .add(ProgressBar::no_length().with_message(format!("hashing {}", root.display())));
    let files = hash_tree(root, Some(&ctx.cache.stat_cache_path(root)), &|| bar.inc(1));
    bar.finish_and_clear();
    Ok(files?)
}

/// Generates a synthetic dataset into a scratch folder of the cache, hashes it and removes it.
fn hash_generated(ctx: &Context, params: &mgat_synth::SynthParams) -> Result<Vec<FileDigest>> {
    let scratch = ctx
        .cache
        .bucket(crate::cache::CacheBucket::Scratch)
        .join(format!("synth-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    let bar = ctx.progress().add(
        ProgressBar::new(image_count(params, &Layout::default()) as u64).with_message("generating"),
    );
    let generated = generate(params, &scratch, &|| bar.inc(1))
        .map_err(anyhow::Error::from)
        .and_then(|_| Ok(hash_tree(&scratch, None, &|| {})?));
    bar.finish_and_clear();
    let _ = std::fs::remove_dir_all(&scratch);
    generated
}
