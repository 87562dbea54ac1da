//! Executors: run the stages a selection of cells needs and say what happened to each. `local` computes them in
//! this process; `slurm` submits each as a batch job running `mgat stage` and follows the queue.

pub mod local;
pub mod schedule;
pub mod slurm;

use crate::cache::Cache;
use crate::data::LockFile;
use crate::plan::{Plan, Stage};
use std::time::Duration;

/// What an executor runs stages against: the cache, the lock and the plan.
pub struct StageEnv<'a> {
    pub cache: &'a Cache,
    pub lock: &'a LockFile,
    pub plan: &'a Plan,
}

#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Stages at once (train and eval stages on a `devices` pool not counted) and the threads each computes with.
    pub schedule: schedule::Schedule,
    pub keep_going: bool,
    /// `--devices` (`cpu` or `cuda:N`, normalised): each train or eval stage takes one exclusively for its run. Empty:
    /// they run within `jobs` on their cell's `train.device`.
    pub devices: Vec<mgat_stage::DeviceChoice>,
}

/// What happened to one stage.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Complete in the cache before this run started.
    Cached,
    /// Computed by this run.
    Ran(Duration),
    /// Computed by another process while this one waited for the key's lock.
    Reused,
    Failed {
        message: String,
        bad_input: bool,
    },
    /// Not run: a stage it consumes failed (or the run stopped at the first failure).
    Skipped,
}

/// Outcomes of the selected stages, by plan index.
#[derive(Debug, Clone, Default)]
pub struct RunReport {
    pub outcomes: Vec<(usize, Outcome)>,
}

impl RunReport {
    pub fn count(&self, pred: impl Fn(&Outcome) -> bool) -> usize {
        self.outcomes.iter().filter(|(_, o)| pred(o)).count()
    }

    pub fn failed(&self) -> impl Iterator<Item = (usize, &str, bool)> {
        self.outcomes.iter().filter_map(|(s, o)| match o {
            Outcome::Failed { message, bad_input } => Some((*s, message.as_str(), *bad_input)),
            _ => None,
        })
    }
}

pub(crate) fn log_outcome(stage: &Stage, outcome: &Outcome) {
    match outcome {
        Outcome::Ran(d) => tracing::info!(
            "ran {} ({}) in {:.1}s",
            stage.label(),
            stage.dataset,
            d.as_secs_f64()
        ),
        Outcome::Reused => {
            tracing::info!("reused {}: another mgat process computed it", stage.label())
        }
        Outcome::Failed { message, .. } => tracing::error!("{} failed: {message}", stage.label()),
        Outcome::Cached | Outcome::Skipped => {}
    }
}
