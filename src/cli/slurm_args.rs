//! `mgat run`'s executor flags: `--executor local|slurm` and the Slurm job settings, checked before anything runs.

use super::{Context, UsageError};
use crate::exec::slurm::{JobCommand, SlurmOptions, check_time};
use clap::{Args, ValueEnum};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Executor {
    /// Run stages in this process (`--jobs` at a time).
    Local,
    /// Submit each stage as a Slurm batch job running `mgat stage`, chained by dependencies.
    Slurm,
}

#[derive(Args, Debug)]
pub struct ExecutorArgs {
    /// Where stages run.
    #[arg(long, value_enum, default_value_t = Executor::Local)]
    pub executor: Executor,
    /// Slurm partition for every job.
    #[arg(long, value_name = "P")]
    partition: Option<String>,
    /// Generic resources for train and eval jobs only, e.g. gpu:1.
    #[arg(long, value_name = "GRES")]
    gres: Option<String>,
    /// Time limit per job (MM, HH:MM:SS, D-HH:MM:SS, …).
    #[arg(long, value_name = "TIME", value_parser = check_time_arg)]
    time: Option<String>,
    /// Slurm account to charge.
    #[arg(long, value_name = "A")]
    account: Option<String>,
    /// CPUs per job (mgat's threads follow the CPUs a job may use).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    cpus_per_task: Option<u32>,
    /// Submit and return at once; run again later to wait for the jobs and write the reports.
    #[arg(long)]
    detach: bool,
    /// Seconds between queue polls.
    #[arg(long, value_name = "SECONDS", default_value_t = 1.0)]
    poll: f64,
}

fn check_time_arg(s: &str) -> Result<String, String> {
    check_time(s).map(|()| s.to_string())
}

impl ExecutorArgs {
    /// Whether the run submits its jobs and returns without waiting for them.
    pub fn detaches(&self) -> bool {
        self.executor == Executor::Slurm && self.detach
    }

    /// The Slurm settings; an error when one is given with the local executor or the poll interval is not positive.
    pub fn slurm_options(&self) -> Result<SlurmOptions, UsageError> {
        if self.executor == Executor::Local {
            let given = [
                ("--partition", self.partition.is_some()),
                ("--gres", self.gres.is_some()),
                ("--time", self.time.is_some()),
                ("--account", self.account.is_some()),
                ("--cpus-per-task", self.cpus_per_task.is_some()),
                ("--detach", self.detach),
            ];
            if let Some((flag, _)) = given.iter().find(|(_, set)| *set) {
                return Err(UsageError(format!("{flag} needs --executor slurm")));
            }
        }
        if !(self.poll.is_finite() && self.poll > 0.0) {
            return Err(UsageError(format!(
                "--poll {}: expected seconds > 0",
                self.poll
            )));
        }
        Ok(SlurmOptions {
            partition: self.partition.clone(),
            gres: self.gres.clone(),
            time: self.time.clone(),
            account: self.account.clone(),
            cpus_per_task: self.cpus_per_task,
            detach: self.detach,
            poll: Duration::from_secs_f64(self.poll),
        })
    }
}

/// The command each job runs: this binary with this project's cache, lock and the specs as absolute paths.
pub fn job_command(
    ctx: &Context,
    specs: &[PathBuf],
    overrides: &[crate::spec::Override],
) -> anyhow::Result<JobCommand> {
    let exe = std::env::current_exe()?;
    let cwd = std::env::current_dir()?;
    Ok(JobCommand {
        exe,
        root: ctx.project.root().to_path_buf(),
        cache: ctx.cache.root().to_path_buf(),
        lock: ctx.lock_path.clone(),
        specs: specs.iter().map(|p| cwd.join(p)).collect(),
        overrides: overrides.iter().map(|o| o.arg.clone()).collect(),
    })
}
