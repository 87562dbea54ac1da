//! `mgat run`, `mgat plan` and `mgat explain`: load specs, plan them against the lock and the cache, and run,
//! list or explain their stages.

use super::slurm_args::{Executor, ExecutorArgs, job_command};
use super::{Context, UsageError};
use crate::cache::Lookup;
use crate::exec::StageEnv;
use crate::exec::schedule::Schedule;
use crate::exec::slurm::{self, Finished};
use crate::exec::{Outcome, RunOptions, RunReport, local};
use crate::plan::reasons::key_changes;
use crate::plan::{KeyInputs, Plan, StageKey, StageKind};
use crate::provenance::LazyGitState;
use crate::spec::{Override, Spec};
use anyhow::Result;
use clap::Args;
use mgat_stage::DeviceChoice;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::process::ExitCode;

/// `--set PATH=VALUE`, on every command that plans specs.
#[derive(Args, Debug, Clone, Default)]
pub struct SetArgs {
    /// Set a setting of every spec's base as if the spec said it (repeatable), e.g. `--set model.gamma=2 --set
    /// train.epochs=5`. Keys move exactly as that edit would. A run with overrides writes its reports under
    /// .mgat/reports/, never under reports/.
    #[arg(long = "set", value_name = "PATH=VALUE")]
    pub set: Vec<Override>,
}

impl SetArgs {
    /// Where a run writes its reports: the committed `reports/`, or `.mgat/reports/` when settings are overridden
    /// (results the specs in the repository would not give).
    pub fn reports_dir(&self, ctx: &Context) -> PathBuf {
        match self.set.is_empty() {
            true => ctx.project.reports(),
            false => ctx.project.overridden_reports(),
        }
    }
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Experiment spec files (YAML).
    #[arg(required = true)]
    specs: Vec<PathBuf>,
    /// Stages run at once, each with an equal share of the cores [default: one per core when every cell trains a
    /// small model on the CPU, else 1].
    #[arg(long, short = 'j', allow_negative_numbers = true, value_parser = super::at_least_one)]
    jobs: Option<usize>,
    /// Only cells whose name matches this glob (`*` and `?`), e.g. 'head=mgat,*'.
    #[arg(long, value_name = "GLOB")]
    only: Option<String>,
    /// Keep running independent stages after a failure (the default).
    #[arg(long, overrides_with = "fail_fast")]
    keep_going: bool,
    /// Stop launching stages after the first failure.
    #[arg(long, overrides_with = "keep_going")]
    fail_fast: bool,
    /// Run stages up to this kind only (synth, index, train or eval), e.g. to prepare data before training.
    #[arg(long, value_name = "KIND", value_parser = parse_kind)]
    until: Option<StageKind>,
    /// A pool of devices, e.g. cuda:0,cuda:1: up to one train or eval stage runs on each at once (cells with
    /// train.device auto take any), beside the CPU stages of --jobs. `cpu` may be listed, more than once.
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    devices: Vec<DeviceChoice>,
    #[command(flatten)]
    executor: ExecutorArgs,
    #[command(flatten)]
    overrides: SetArgs,
    #[command(flatten)]
    remote: super::remote_cmd::RunRemoteArgs,
}

/// `--devices` normalised (`cuda` → `cuda:0`): each `cpu` or `cuda:N`, a CUDA device at most once and only in a
/// CUDA build.
fn device_pool(devices: &[DeviceChoice]) -> Result<Vec<DeviceChoice>, UsageError> {
    let mut pool: Vec<DeviceChoice> = Vec::new();
    for &d in devices {
        match d {
            DeviceChoice::Auto => {
                return Err(UsageError(
                    "--devices: `auto`: expected cpu, cuda or cuda:N".into(),
                ));
            }
            DeviceChoice::Cuda(_) if !cfg!(feature = "cuda") => {
                return Err(UsageError(format!(
                    "--devices: `{d}`: this mgat binary was built without CUDA (scripts/build-cuda.sh)"
                )));
            }
            DeviceChoice::Cuda(_) if pool.contains(&d) => {
                return Err(UsageError(format!(
                    "--devices: `{d}` is listed twice; one stage per GPU at a time"
                )));
            }
            _ => pool.push(d),
        }
    }
    Ok(pool)
}

pub fn parse_kind(s: &str) -> Result<StageKind, String> {
    StageKind::from_name(s)
        .ok_or_else(|| format!("expected synth, index, train or eval, got `{s}`"))
}

#[derive(Args, Debug)]
pub struct PlanArgs {
    spec: PathBuf,
    /// Print {"overrides": [...], "cells":[{"name", "config", "stages":[{"kind", "key", "cached", "on_remote"}]}]}.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    overrides: SetArgs,
    /// Also say which stages the remote holds (the one named, else $MGAT_REMOTE or .mgat/config.yaml's).
    #[arg(long, value_name = "URL", num_args = 0..=1, default_missing_value = "")]
    remote: Option<String>,
}

#[derive(Args, Debug)]
pub struct ExplainArgs {
    spec: PathBuf,
    /// The cell's name as `mgat plan` lists it.
    #[arg(long)]
    cell: String,
    #[command(flatten)]
    overrides: SetArgs,
}

/// Loads `paths` with `overrides` and plans them; `compute` says the stages are to be computed, so pretrained
/// weights must be readable.
pub fn load_plan(
    ctx: &Context,
    paths: &[PathBuf],
    overrides: &[Override],
    compute: bool,
) -> Result<(Vec<Spec>, Plan, crate::data::LockFile)> {
    let specs = Spec::load_all(paths, overrides)?;
    let (plan, lock) = plan_specs(ctx, &specs, compute)?;
    Ok((specs, plan, lock))
}

/// Plans `specs` against the project's lock, with the keys of the stages whose consumed entries are cached.
fn plan_specs(
    ctx: &Context,
    specs: &[Spec],
    compute: bool,
) -> Result<(Plan, crate::data::LockFile)> {
    let lock = ctx.load_lock()?;
    let mut plan = Plan::new(specs, &lock, ctx.purpose(compute))?;
    resolve_keys(ctx, &mut plan);
    Ok((plan, lock))
}

/// Fills in the keys of the plan's stages whose consumed entries are in the cache (by their manifests).
pub fn resolve_keys(ctx: &Context, plan: &mut Plan) {
    plan.resolve(&|kind, key, file| ctx.cache.output_digest(kind, key, file));
}

impl RunArgs {
    pub fn specs(&self) -> &[PathBuf] {
        &self.specs
    }

    pub fn overrides(&self) -> &[Override] {
        &self.overrides.set
    }

    /// Whether the run submits its jobs to Slurm and returns without waiting for them.
    pub fn detaches(&self) -> bool {
        self.executor.detaches()
    }

    /// The same run using no remote (an error if the user named one): `why` says why.
    pub fn offline(self, why: &str) -> Result<RunArgs, UsageError> {
        Ok(RunArgs {
            remote: self.remote.offline(why)?,
            ..self
        })
    }

    /// The same run with `overrides` in place of its own.
    pub fn with_overrides(self, overrides: Vec<Override>) -> RunArgs {
        RunArgs {
            overrides: SetArgs { set: overrides },
            ..self
        }
    }
}

pub fn run(ctx: &Context, args: RunArgs) -> Result<ExitCode> {
    let reports = args.overrides.reports_dir(ctx);
    run_into(ctx, args, &reports)
}

/// Runs the stages `args` selects and writes the specs' reports under `reports`.
pub fn run_into(ctx: &Context, args: RunArgs, reports: &std::path::Path) -> Result<ExitCode> {
    let slurm_options = args.executor.slurm_options()?;
    let devices = device_pool(&args.devices)?;
    if !devices.is_empty() && matches!(args.executor.executor, Executor::Slurm) {
        return Err(UsageError(
            "--devices is for the local executor; with Slurm each job gets its GPU from --gres"
                .into(),
        )
        .into());
    }
    let specs = Spec::load_all(&args.specs, &args.overrides.set)?;
    ctx.cache.hold_live_roots()?;
    let schedule = Schedule::for_grid(
        args.jobs,
        specs
            .iter()
            .flat_map(|s| &s.cells)
            .filter(|c| args.only.as_ref().is_none_or(|g| glob_match(g, &c.name))),
    );
    schedule.pin();
    let (mut plan, lock) = plan_specs(ctx, &specs, true)?;
    let cells: Vec<usize> = (0..plan.cells.len())
        .filter(|&c| {
            args.only
                .as_ref()
                .is_none_or(|g| glob_match(g, &plan.cells[c].cell.name))
        })
        .collect();
    if cells.is_empty() {
        let glob = args.only.unwrap_or_default();
        return Err(
            UsageError(format!("--only '{glob}' matches no cell (see `mgat plan`)")).into(),
        );
    }
    let mut selected = plan.stages_of(&cells);
    if let Some(last) = args.until {
        selected.retain(|&s| plan.stages[s].kind <= last);
    }
    let remote = args.remote.open(ctx)?;
    if let Some(remote) = &remote {
        remote.read_through(ctx, &mut plan, &selected);
    }
    let env = StageEnv {
        cache: &ctx.cache,
        lock: &lock,
        plan: &plan,
    };
    let opts = RunOptions {
        schedule,
        keep_going: !args.fail_fast,
        devices,
    };
    tracing::info!(
        "{} cells, {} stages, {} at once with {} thread{} each, cache {}",
        cells.len(),
        selected.len(),
        schedule.jobs,
        schedule.threads,
        if schedule.threads == 1 { "" } else { "s" },
        ctx.cache.root().display()
    );
    let report = match args.executor.executor {
        Executor::Local => local::run(
            &env,
            &selected,
            opts,
            &ctx.progress(),
            &LazyGitState::new(ctx.project.root()),
        ),
        Executor::Slurm => {
            if args.jobs.is_some() {
                tracing::warn!(
                    "--jobs has no effect with --executor slurm: Slurm schedules the jobs"
                );
            }
            let command = job_command(ctx, &args.specs, &args.overrides.set)?;
            match slurm::run(&env, &selected, &slurm_options, &command, &ctx.progress())? {
                Finished::Waited(report) => report,
                Finished::Detached(jobs) => return Ok(detached(&plan, &jobs)),
            }
        }
    };
    // The keys of the stages that ran are known now.
    resolve_keys(ctx, &mut plan);
    let code = summarize(ctx, &specs, &plan, &cells, &report, reports)?;
    if let Some(remote) = &remote {
        let computed: Vec<usize> = report
            .outcomes
            .iter()
            .filter(|(_, o)| matches!(o, Outcome::Ran(_)))
            .map(|(s, _)| *s)
            .collect();
        remote.push_computed(ctx, &plan, &computed)?;
    }
    Ok(code)
}

/// After `--detach`: which jobs hold which stages, and how to pick the results up.
fn detached(plan: &Plan, jobs: &[(usize, String)]) -> ExitCode {
    for (s, id) in jobs {
        println!("job {id}: {}", plan.stages[*s].label());
    }
    println!(
        "{} stages in the Slurm queue; run the same command without --detach to wait for them and write the reports",
        jobs.len()
    );
    ExitCode::SUCCESS
}

/// The summary line, the reports and the failed cells; the exit code.
fn summarize(
    ctx: &Context,
    specs: &[Spec],
    plan: &Plan,
    cells: &[usize],
    report: &RunReport,
    reports: &std::path::Path,
) -> Result<ExitCode> {
    let ran = report.count(|o| matches!(o, Outcome::Ran(_)));
    let cached = report.count(|o| matches!(o, Outcome::Cached));
    let reused = report.count(|o| matches!(o, Outcome::Reused));
    let failed = report.count(|o| matches!(o, Outcome::Failed { .. }));
    let skipped = report.count(|o| matches!(o, Outcome::Skipped));
    println!(
        "stages: {ran} ran, {cached} cached, {reused} reused, {failed} failed, {skipped} skipped"
    );
    super::report_cmd::write_reports(ctx, specs, plan, reports)?;
    let failures: Vec<_> = report.failed().collect();
    if failures.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    println!("failed cells:");
    for &c in cells {
        let pc = &plan.cells[c];
        if let Some((s, message, _)) = failures.iter().find(|(s, ..)| pc.stages.contains(s)) {
            let first_line = message.lines().next().unwrap_or_default();
            println!(
                "  {}: {} failed: {first_line}",
                pc.cell.name,
                plan.stages[*s].label()
            );
        }
    }
    let bad_input = failures.iter().any(|(_, _, bad)| *bad);
    Ok(ExitCode::from(if bad_input { 2 } else { 1 }))
}

pub fn plan(ctx: &Context, args: PlanArgs) -> Result<ExitCode> {
    let overrides = &args.overrides.set;
    let (_specs, mut plan, _lock) =
        load_plan(ctx, std::slice::from_ref(&args.spec), overrides, false)?;
    let remote = match &args.remote {
        Some(url) => Some(super::remote_cmd::RemoteArgs::naming(url.clone()).require(ctx, false)?),
        None => None,
    };
    if let Some(remote) = &remote {
        super::remote_cmd::resolve_through(ctx, remote, &mut plan);
    }
    // By the manifests alone (each read once, in parallel): outputs are checked when a stage or report reads them.
    let present: Vec<bool> = {
        use rayon::prelude::*;
        plan.stages
            .par_iter()
            .map(|st| {
                st.key
                    .as_ref()
                    .is_some_and(|k| ctx.cache.contains(st.kind, k))
            })
            .collect()
    };
    let cached = |s: usize| present[s];
    let on_remote: Vec<bool> = plan
        .stages
        .iter()
        .enumerate()
        .map(|(s, st)| match (&remote, &st.key) {
            (Some(remote), Some(key)) if !cached(s) => remote.holds(st.kind, key),
            _ => Ok(false),
        })
        .collect::<Result<_, _>>()?;
    let status = |s: usize| match (cached(s), on_remote[s]) {
        (true, _) => "cached",
        (false, true) => "on remote",
        (false, false) => "to run",
    };
    if args.json {
        let cells: Vec<Value> = plan
            .cells
            .iter()
            .map(|pc| {
                let stages: Vec<Value> = pc
                    .stages
                    .iter()
                    .map(|&s| {
                        let st = &plan.stages[s];
                        json!({"kind": st.kind, "id": st.id, "key": st.key, "cached": cached(s), "on_remote": on_remote[s]})
                    })
                    .collect();
                json!({"name": pc.cell.name, "config": pc.cell.config, "stages": stages})
            })
            .collect();
        let overrides: Vec<&str> = overrides.iter().map(|o| o.arg.as_str()).collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({ "overrides": overrides, "cells": cells }))?
        );
        return Ok(ExitCode::SUCCESS);
    }
    for o in overrides {
        println!("with --set {}", o.arg);
    }
    for pc in &plan.cells {
        println!("{}", pc.cell.name);
        for &s in &pc.stages {
            println!("  {:<26} {}", plan.stages[s].label(), status(s));
        }
    }
    let count = |what: &str| {
        (0..plan.stages.len())
            .filter(|&s| status(s) == what)
            .count()
    };
    let held = match &remote {
        Some(remote) => format!(", {} on {}", count("on remote"), remote.describe()),
        None => String::new(),
    };
    println!(
        "{} cells, {} distinct stages, {} to run{held}",
        plan.cells.len(),
        plan.stages.len(),
        count("to run")
    );
    Ok(ExitCode::SUCCESS)
}

/// The plan of the spec at `spec` alone (with `overrides`) and the index of its cell named `name`, or a usage error
/// naming a few of its cells.
pub fn plan_cell(
    ctx: &Context,
    spec: &std::path::Path,
    overrides: &[Override],
    name: &str,
) -> Result<(Plan, usize)> {
    let (_specs, plan, _lock) = load_plan(ctx, &[spec.to_path_buf()], overrides, false)?;
    if let Some(c) = plan.cells.iter().position(|pc| pc.cell.name == name) {
        return Ok((plan, c));
    }
    let names: Vec<&str> = plan
        .cells
        .iter()
        .take(5)
        .map(|pc| pc.cell.name.as_str())
        .collect();
    Err(UsageError(format!(
        "no cell `{name}` in {} (cells are named like {})",
        spec.display(),
        names.join(", ")
    ))
    .into())
}

pub fn explain(ctx: &Context, args: ExplainArgs) -> Result<ExitCode> {
    let (plan, c) = plan_cell(ctx, &args.spec, &args.overrides.set, &args.cell)?;
    let pc = &plan.cells[c];
    println!("{}", pc.cell.name);
    for &s in &pc.stages {
        let stage = &plan.stages[s];
        let kind = stage.kind.name();
        let lookup = match &stage.key {
            Some(key) => ctx.cache.lookup(stage.kind, key),
            None => Lookup::Absent,
        };
        match lookup {
            Lookup::Present(_) => {
                println!("  {}: cached", stage.label());
                continue;
            }
            Lookup::Damaged(damage) => {
                println!(
                    "  {}: would run again: the cached entry is damaged ({damage})",
                    stage.label()
                );
                continue;
            }
            Lookup::Absent => {}
        }
        let candidates: Vec<(StageKey, KeyInputs)> = ctx
            .cache
            .entries()?
            .into_iter()
            .filter(|e| e.kind == kind)
            .filter_map(|e| match ctx.cache.lookup_listed(&e) {
                Lookup::Present(m) => Some((m.key, m.inputs)),
                _ => None,
            })
            .collect();
        let closest = candidates
            .iter()
            .map(|(key, inputs)| (key, key_changes(inputs, &stage.inputs, &pending(&plan, s))))
            .min_by_key(|(_, d)| d.len());
        match closest {
            None => println!(
                "  {}: would run: no cached {kind} entry to compare with",
                stage.label()
            ),
            Some((key, diffs)) => {
                println!(
                    "  {}: would run; closest cached entry {} differs in:",
                    stage.label(),
                    key.short()
                );
                for d in diffs {
                    println!("    - {d}");
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The kinds whose outputs stage `s` consumes but whose stages have no key yet (not computed).
fn pending(plan: &Plan, s: usize) -> Vec<StageKind> {
    plan.stages[s]
        .deps
        .iter()
        .map(|&d| &plan.stages[d])
        .filter(|d| d.kind.consumed_output().is_some() && d.key.is_none())
        .map(|d| d.kind)
        .collect()
}

/// Shell-style glob with `*` (any run) and `?` (any one character).
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_matches_like_a_shell() {
        assert!(glob_match("head=mgat,*", "head=mgat,gamma=1,seed=2"));
        assert!(!glob_match("head=mgat,*", "head=gat,gamma=1,seed=2"));
        assert!(glob_match("*seed=?", "head=none,seed=3"));
        assert!(!glob_match("*seed=?", "head=none,seed=13"));
        assert!(glob_match("*", ""));
    }
}
