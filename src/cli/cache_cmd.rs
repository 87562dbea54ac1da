//! `mgat cache ls|verify|gc|push|pull|keygen`: list entries, re-hash outputs against manifests, remove entries
//! that no spec in `experiments/` references (dry run unless `--yes`), and move entries to and from a remote
//! ([`super::remote_cmd`]).

use super::Context;
use crate::cache::Lookup;
use crate::plan::Plan;
use crate::spec::Spec;
use anyhow::Result;
use clap::Subcommand;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Subcommand, Debug)]
pub enum CacheCommand {
    /// List complete entries: kind, key, when, how long, where, size.
    Ls,
    /// Re-hash every entry's outputs and report entries that differ from their manifest.
    Verify,
    /// Remove entries no spec in experiments/ references, and abandoned partial stages.
    Gc {
        /// Delete; without it, only list what would be deleted.
        #[arg(long)]
        yes: bool,
        /// Collect the remote's garbage instead (entries no spec in experiments/ and no committed report
        /// references, then files no entry names): a folder, s3://… (https:// remotes are read-only).
        #[arg(long, value_name = "URL", num_args = 0..=1, default_missing_value = "")]
        remote: Option<String>,
    },
    /// Upload entries to a remote, signed: those the specs' cells use, or every entry.
    Push {
        /// Experiment spec files whose entries to push [default: every entry in the cache].
        specs: Vec<PathBuf>,
        #[command(flatten)]
        remote: super::remote_cmd::RemoteArgs,
        #[command(flatten)]
        sign: super::remote_cmd::SignArgs,
    },
    /// Download entries from a remote, each verified (signature, manifest, every file's SHA-256) before it enters
    /// the cache: those the specs' cells use, or every entry the remote holds. Exit 1 if any was refused.
    Pull {
        /// Experiment spec files whose entries to pull [default: all the remote holds].
        specs: Vec<PathBuf>,
        #[command(flatten)]
        remote: super::remote_cmd::RemoteArgs,
    },
    /// Make a signing key pair: the secret key to a file, the public key printed for trusted_keys.
    Keygen {
        /// The key's name, e.g. lab-cluster-1 (what signatures and trusted_keys call it).
        name: String,
        /// Where the secret key goes [default: ~/.config/mgat/signing-key].
        #[arg(long, short = 'o', value_name = "FILE")]
        out: Option<PathBuf>,
    },
}

pub fn run(ctx: &Context, cmd: CacheCommand) -> Result<ExitCode> {
    match cmd {
        CacheCommand::Ls => ls(ctx),
        CacheCommand::Verify => verify(ctx),
        CacheCommand::Gc { yes, remote: None } => gc(ctx, yes),
        CacheCommand::Gc {
            yes,
            remote: Some(url),
        } => super::remote_cmd::gc(ctx, &super::remote_cmd::RemoteArgs::naming(url), yes),
        CacheCommand::Push {
            specs,
            remote,
            sign,
        } => super::remote_cmd::push(ctx, &specs, &remote, &sign),
        CacheCommand::Pull { specs, remote } => super::remote_cmd::pull(ctx, &specs, &remote),
        CacheCommand::Keygen { name, out } => super::remote_cmd::keygen(&name, out),
    }
}

fn ls(ctx: &Context) -> Result<ExitCode> {
    ctx.cache.require()?;
    let entries = ctx.cache.entries()?;
    println!(
        "{:<6} {:<12} {:<24} {:>9} {:<6} {:>10}",
        "kind", "key", "finished", "seconds", "device", "bytes"
    );
    for e in &entries {
        match ctx.cache.lookup_listed(e) {
            Lookup::Present(m) => {
                let bytes: u64 = m.outputs.values().map(|o| o.bytes).sum();
                println!(
                    "{:<6} {:<12} {:<24} {:>9.1} {:<6} {:>10}",
                    e.kind,
                    crate::plan::short(&e.key),
                    m.finished,
                    m.duration_s,
                    m.device,
                    bytes
                );
            }
            Lookup::Damaged(damage) => println!(
                "{:<6} {:<12} damaged: {damage}",
                e.kind,
                crate::plan::short(&e.key)
            ),
            Lookup::Absent => {}
        }
    }
    println!(
        "{} entries in {}",
        entries.len(),
        ctx.cache.root().display()
    );
    Ok(ExitCode::SUCCESS)
}

fn verify(ctx: &Context) -> Result<ExitCode> {
    ctx.cache.require()?;
    let entries = ctx.cache.entries()?;
    let bar = ctx
        .progress()
        .add(indicatif::ProgressBar::new(entries.len() as u64).with_message("verifying cache"));
    let corrupt = ctx
        .cache
        .verify(crate::cache::Verify::All, &|| bar.inc(1))?;
    bar.finish_and_clear();
    for c in &corrupt {
        println!("corrupt {} {}: {}", c.entry.kind, c.entry.key, c.problem);
        // Repaired, not only reported: moved aside with its ledger record dropped, so the next run recomputes it.
        match c.entry.kind() {
            Some(kind) => {
                let moved = ctx.cache.quarantine_listed(kind, &c.entry, &c.problem)?;
                println!("  moved to {}", moved.display());
            }
            None => println!("  left in place: not a stage kind's folder"),
        }
    }
    let bad: HashSet<&Path> = corrupt.iter().map(|c| c.entry.path.as_path()).collect();
    println!("{} entries verified, {} corrupt", entries.len(), bad.len());
    Ok(if bad.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn gc(ctx: &Context, yes: bool) -> Result<ExitCode> {
    let mut specs = Spec::load_all(&ctx.project.spec_files()?, &[])?;
    let lock = ctx.load_lock()?;
    // A cell whose dataset is not locked here has no key, so it references no entry (the paper's specs on a
    // machine without the real datasets).
    for spec in &mut specs {
        let before = spec.cells.len();
        spec.cells
            .retain(|c| lock.entry(&c.config.dataset.name).is_ok());
        if spec.cells.len() < before {
            println!(
                "{}: {} of {before} cells name datasets not in {}; they reference no entries",
                spec.path.display(),
                before - spec.cells.len(),
                ctx.lock_path.display()
            );
        }
    }
    // Taken before the plan's roots are read, held until the last removal: no run adds a root meanwhile.
    let collector = crate::cache::live::Collector::acquire(ctx.cache.root())?;
    let mut plan = Plan::new(&specs, &lock, ctx.purpose(false))?;
    super::run_cmd::resolve_keys(ctx, &mut plan);
    let roots = crate::cache::gc::Roots::of(&plan, &collector, &ctx.cache);
    let garbage = ctx.cache.garbage(&|kind, name| roots.hold(kind, name))?;
    let mut total = 0u64;
    for g in &garbage {
        let bytes = dir_bytes(&g.path);
        total += bytes;
        println!(
            "{} {:?} ({bytes} bytes)",
            if yes { "removing" } else { "would remove" },
            g.path
        );
        if yes && !ctx.cache.remove(g)? {
            println!("  kept {:?}: another mgat process is using it", g.path);
        }
    }
    let referenced = roots.resolved();
    if !collector.live.is_empty() {
        println!(
            "kept {} entries that running mgat processes are using",
            collector.live.len()
        );
    }
    if yes {
        println!(
            "removed {} entries ({total} bytes); {referenced} stages are referenced by {} specs",
            garbage.len(),
            specs.len()
        );
    } else {
        println!(
            "dry run: {} entries ({total} bytes) would be removed; pass --yes to delete",
            garbage.len()
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn dir_bytes(path: &Path) -> u64 {
    walkdir::WalkDir::new(path)
        .into_iter()
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum()
}
