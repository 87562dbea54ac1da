//! `mgat stage KIND ID SPEC…` (hidden): computes one planned stage, with whatever it consumes that is not cached,
//! in this process. It is what every Slurm job runs: its key is resolved when it starts, from the entries it
//! consumes, and an entry that already exists under it is adopted.

use super::{Context, UsageError};
use crate::exec::StageEnv;
use crate::exec::local;
use crate::exec::slurm::{FailureRecord, record_failure};
use crate::exec::{Outcome, RunOptions};
use crate::plan::{Plan, StageKind};
use crate::provenance::LazyGitState;
use anyhow::Result;
use clap::Args;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Args, Debug)]
pub struct StageArgs {
    #[arg(value_parser = super::run_cmd::parse_kind)]
    kind: StageKind,
    /// The stage's full id, as `mgat plan --json` lists it.
    id: String,
    /// The specs the stage was planned from.
    #[arg(required = true)]
    specs: Vec<PathBuf>,
    #[command(flatten)]
    overrides: super::run_cmd::SetArgs,
}

pub fn stage(ctx: &Context, args: StageArgs) -> Result<ExitCode> {
    ctx.cache.hold_live_roots()?;
    let (_specs, plan, lock) =
        super::run_cmd::load_plan(ctx, &args.specs, &args.overrides.set, true)?;
    let s = plan
        .stages
        .iter()
        .position(|st| st.kind == args.kind && st.id == args.id)
        .ok_or_else(|| {
            UsageError(format!(
                "no {} stage with id {} in these specs: the specs, datasets.lock or mgat changed since it was planned, \
                 or this machine's CPU computes floats differently from the one that planned it (its class here: {})",
                args.kind.name(),
                args.id,
                mgat_model::numerics::cpu_class()
            ))
        })?;
    let env = StageEnv {
        cache: &ctx.cache,
        lock: &lock,
        plan: &plan,
    };
    let opts = RunOptions {
        schedule: crate::exec::schedule::Schedule::whole_machine(),
        keep_going: false,
        devices: Vec::new(),
    };
    let selected = with_upstream(&plan, s);
    let report = local::run(
        &env,
        &selected,
        opts,
        &ctx.progress(),
        &LazyGitState::new(ctx.project.root()),
    );
    match report
        .outcomes
        .iter()
        .find(|(i, _)| *i == s)
        .map(|(_, o)| o)
    {
        Some(Outcome::Ran(_) | Outcome::Cached | Outcome::Reused) => Ok(ExitCode::SUCCESS),
        _ => {
            let mut bad = false;
            for (i, message, bad_input) in report.failed() {
                eprintln!("error: {} failed: {message}", plan.stages[i].label());
                let record = FailureRecord {
                    message: message.to_string(),
                    bad_input,
                };
                record_failure(ctx.cache.root(), &record);
                bad |= bad_input;
            }
            Ok(ExitCode::from(if bad { 2 } else { 1 }))
        }
    }
}

/// `s` and every stage it consumes, directly or not, in plan (dependency) order.
fn with_upstream(plan: &Plan, s: usize) -> Vec<usize> {
    let mut needed = vec![false; plan.stages.len()];
    let mut todo = vec![s];
    while let Some(i) = todo.pop() {
        if !needed[i] {
            needed[i] = true;
            todo.extend(&plan.stages[i].deps);
        }
    }
    (0..plan.stages.len()).filter(|&i| needed[i]).collect()
}
