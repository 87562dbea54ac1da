//! `mgat audit`: recompute committed report rows from scratch in a throwaway cache (data stages included, datasets
//! re-hashed against the lock, pretrained weights re-hashed) and compare them with what is committed under
//! `reports/<spec>/`. The user's cache is neither read nor written, and nothing in the checkout is.

use super::run_cmd::{glob_match, resolve_keys};
use super::{Context, UsageError};
use crate::exec::schedule::Schedule;
use crate::exec::{RunOptions, StageEnv, local};
use crate::plan::Plan;
use crate::project::Project;
use crate::provenance::LazyGitState;
use crate::report::audit::{Committed, Outcome, RowAudit, select_rows, table, verdicts};
use crate::report::results::{RESULTS_FILE, Results};
use crate::spec::Spec;
use anyhow::{Context as _, Result};
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args, Debug)]
pub struct AuditArgs {
    /// Specs whose committed reports/<name>/results.csv rows to recompute.
    #[arg(required = true)]
    specs: Vec<PathBuf>,
    /// Audit a random sample of this many rows per spec (drawn with --seed) instead of all.
    #[arg(long, value_name = "N")]
    sample: Option<usize>,
    /// Seed of the --sample draw.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Only rows whose cell matches this glob (`*` and `?`), e.g. 'head=mgat,*'.
    #[arg(long, value_name = "GLOB")]
    cells: Option<String>,
    /// Print the verdicts as JSON.
    #[arg(long)]
    json: bool,
    /// Stages run at once, each with an equal share of the cores [default: as `mgat run`].
    #[arg(long, short = 'j', allow_negative_numbers = true, value_parser = super::at_least_one)]
    jobs: Option<usize>,
    #[command(flatten)]
    overrides: super::run_cmd::SetArgs,
    /// Also compare the recomputed entries with what a remote publishes under the same keys (the one named, else
    /// $MGAT_REMOTE or .mgat/config.yaml's): a published entry that differs fails the audit.
    #[arg(long, value_name = "URL", num_args = 0..=1, default_missing_value = "")]
    remote: Option<String>,
}

pub fn audit(ctx: &Context, args: AuditArgs) -> Result<ExitCode> {
    if args.sample == Some(0) {
        return Err(UsageError("--sample 0: expected at least 1".into()).into());
    }
    let specs = Spec::load_all(&args.specs, &args.overrides.set)?;
    // Before the committed rows are read (polars starts threads): every cell counts.
    let schedule = Schedule::for_grid(args.jobs, specs.iter().flat_map(|s| &s.cells));
    schedule.pin();
    let committed = specs
        .iter()
        .map(|spec| load_committed(&ctx.project, spec, &args))
        .collect::<Result<Vec<_>>>()?;
    if committed.iter().all(|c| c.selected.is_empty()) {
        let glob = args.cells.as_deref().unwrap_or("*");
        return Err(UsageError(format!("--cells '{glob}' matches no committed row")).into());
    }
    let remote = match &args.remote {
        Some(url) => Some(super::remote_cmd::RemoteArgs::naming(url.clone()).require(ctx, false)?),
        None => None,
    };
    let scratch = Scratch::new()?;
    let actx = ctx.with_cache(scratch.0.clone());
    let lock = actx.load_lock()?;
    let mut plan = Plan::new(&specs, &lock, actx.purpose(true))?;
    resolve_keys(&actx, &mut plan);
    let cells: Vec<usize> = (0..plan.cells.len())
        .filter(|&c| {
            let pc = &plan.cells[c];
            let mine = &committed[pc.spec];
            mine.selected
                .iter()
                .any(|&r| mine.results.rows[r].cell == pc.cell.name)
        })
        .collect();
    let selected = plan.stages_of(&cells);
    let env = StageEnv {
        cache: &actx.cache,
        lock: &lock,
        plan: &plan,
    };
    let opts = RunOptions {
        schedule,
        keep_going: true,
        devices: Vec::new(),
    };
    tracing::info!(
        "auditing {} rows: {} stages from scratch in {}",
        cells.len(),
        selected.len(),
        scratch.0.display()
    );
    let report = local::run(
        &env,
        &selected,
        opts,
        &actx.progress(),
        &LazyGitState::new(ctx.project.root()),
    );
    resolve_keys(&actx, &mut plan);
    let mut audits = Vec::new();
    for (i, (spec, mine)) in specs.iter().zip(&committed).enumerate() {
        audits.extend(verdicts(spec, i, mine, &plan, &report, &actx.cache)?);
    }
    if args.json {
        let rows: Vec<_> = audits.iter().map(RowAudit::json).collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        print!("{}", table(&audits));
    }
    if let Some(remote) = &remote {
        let against = super::remote_cmd::audit_against(&actx.cache, remote, &plan, &selected)?;
        for line in against.lines(remote) {
            match args.json {
                true => eprintln!("{line}"),
                false => println!("{line}"),
            }
        }
        if !against.differ.is_empty() {
            return Ok(ExitCode::FAILURE);
        }
    }
    Ok(audit_exit_code(&audits))
}

/// 0 when every row reproduced; 3 when every row reproduced except rows that name a device this machine did not
/// compute on; 1 when any row did not reproduce.
fn audit_exit_code(audits: &[RowAudit]) -> ExitCode {
    match Outcome::of(audits) {
        Outcome::Reproduced => ExitCode::SUCCESS,
        Outcome::NotVerifiableHere => ExitCode::from(3),
        Outcome::Differs => ExitCode::FAILURE,
    }
}

/// The committed rows of `spec` and which of them `args` selects.
fn load_committed(project: &Project, spec: &Spec, args: &AuditArgs) -> Result<Committed> {
    let dir = project.report_dir(&spec.name);
    let select = |results: &Results| {
        select_rows(
            results,
            |cell| args.cells.as_ref().is_none_or(|g| glob_match(g, cell)),
            args.sample,
            args.seed,
        )
    };
    Committed::read(&dir, select)?.ok_or_else(|| {
        UsageError(format!(
            "{}: no committed results to audit (run the spec and commit its report first)",
            dir.join(RESULTS_FILE).display()
        ))
        .into()
    })
}

/// The throwaway cache: a fresh folder under the system's temporary folder, removed when the audit ends.
struct Scratch(PathBuf);

impl Scratch {
    /// A fresh folder under the system's temporary folder (`TMPDIR`), named in the error when it cannot be made.
    fn new() -> Result<Scratch> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        let dir = std::env::temp_dir().join(format!("mgat-audit-{}-{nanos}", std::process::id()));
        mgat_util::fsio::create_dir_all(&dir).with_context(|| {
            format!(
                "cannot make the audit's scratch cache under the temporary folder {} (TMPDIR)",
                std::env::temp_dir().display()
            )
        })?;
        Ok(Scratch(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
