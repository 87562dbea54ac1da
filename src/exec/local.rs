//! The local executor: runs the stages a selection of cells needs, in dependency order on `--jobs` worker
//! threads, each under its cache key's lock, committing outputs atomically. A failed stage skips its dependents;
//! with keep-going (the default) every independent stage still runs.
//!
//! Trust: before anything runs, every cached entry of the selection is checked against its manifest (through the
//! stat cache); a damaged one is quarantined and its stage runs again. A stage's inputs are checked again (free
//! within one process) right before it starts.

use super::{Outcome, RunOptions, RunReport, log_outcome};
use crate::cache::{CacheError, Manifest};
use crate::plan::Stage;
use crate::provenance::{GitState, hostname, utc_timestamp};
use crate::stages::{self, StageEnv};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use std::collections::{HashMap, HashSet};
use std::sync::mpsc;
use std::time::{Instant, SystemTime};

/// Runs `selected` (plan indices in dependency order).
pub fn run(
    env: &StageEnv,
    selected: &[usize],
    opts: RunOptions,
    progress: &MultiProgress,
    git: &GitState,
) -> RunReport {
    // Every entry the run could use is checked in full now (through the stat cache, in parallel), so that damage
    // anywhere is quarantined and recomputed by this run, and reports read only sound entries.
    use rayon::prelude::*;
    let mut state: HashMap<usize, Option<Outcome>> = selected
        .par_iter()
        .map(|&s| {
            let stage = &env.plan.stages[s];
            let outcome = match env.cache.trusted(stage.kind, &stage.key) {
                Ok(Some(_)) => Some(Outcome::Cached),
                Ok(None) => None,
                Err(e) => Some(failed(e)),
            };
            (s, outcome)
        })
        .collect();
    let mut launched: Vec<usize> = Vec::new();
    let mut checked: HashSet<usize> = HashSet::new();
    let mut stop = false;
    let (tx, rx) = mpsc::channel::<(usize, Outcome)>();
    std::thread::scope(|scope| {
        let mut running = 0usize;
        loop {
            while !stop && running < opts.jobs.max(1) {
                let Some(s) = next_ready(env, selected, &state, &launched) else {
                    break;
                };
                if !inputs_sound(env, s, &mut state, &mut checked) {
                    continue; // a damaged input was quarantined and is now to run first
                }
                launched.push(s);
                running += 1;
                let tx = tx.clone();
                let bar = progress.add(stage_bar(&env.plan.stages[s]));
                scope.spawn(move || {
                    let outcome = execute(env, s, &bar, git);
                    bar.finish_and_clear();
                    let _ = tx.send((s, outcome));
                });
            }
            if running == 0 {
                break;
            }
            let Ok((s, outcome)) = rx.recv() else { break };
            running -= 1;
            progress.suspend(|| log_outcome(&env.plan.stages[s], &outcome));
            if matches!(outcome, Outcome::Failed { .. }) && !opts.keep_going {
                stop = true;
            }
            state.insert(s, Some(outcome));
        }
    });
    let outcomes = selected
        .iter()
        .map(|&s| (s, state.remove(&s).flatten().unwrap_or(Outcome::Skipped)))
        .collect();
    RunReport { outcomes }
}

fn failed(e: impl std::fmt::Display) -> Outcome {
    Outcome::Failed {
        message: e.to_string(),
        bad_input: false,
    }
}

/// Checks the outputs of the cached entries stage `s` consumes (each once per run); a damaged one is quarantined
/// and put back to run. Whether all of them are sound.
fn inputs_sound(
    env: &StageEnv,
    s: usize,
    state: &mut HashMap<usize, Option<Outcome>>,
    checked: &mut HashSet<usize>,
) -> bool {
    let mut sound = true;
    for &d in &env.plan.stages[s].deps {
        if !matches!(state.get(&d), Some(Some(Outcome::Cached | Outcome::Reused)))
            || !checked.insert(d)
        {
            continue;
        }
        let stage = &env.plan.stages[d];
        match env.cache.trusted(stage.kind, &stage.key) {
            Ok(Some(_)) => {}
            Ok(None) => {
                state.insert(d, None);
                checked.remove(&d);
                sound = false;
            }
            Err(e) => {
                state.insert(d, Some(failed(e)));
                sound = false;
            }
        }
    }
    sound
}

/// The first not-yet-launched stage whose inputs are all available.
fn next_ready(
    env: &StageEnv,
    selected: &[usize],
    state: &HashMap<usize, Option<Outcome>>,
    launched: &[usize],
) -> Option<usize> {
    let available = |d: &usize| {
        matches!(
            state.get(d),
            Some(Some(Outcome::Cached | Outcome::Ran(_) | Outcome::Reused))
        )
    };
    selected.iter().copied().find(|s| {
        matches!(state.get(s), Some(None))
            && !launched.contains(s)
            && env.plan.stages[*s].deps.iter().all(available)
    })
}

fn stage_bar(stage: &Stage) -> ProgressBar {
    let style = ProgressStyle::with_template(
        "{prefix:.bold} [{elapsed_precise}] {wide_bar} {pos}/{len} {msg}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    ProgressBar::new(0)
        .with_style(style)
        .with_prefix(stage.label())
}

/// Computes one stage under its key's lock, unless another process completed it meanwhile.
fn execute(env: &StageEnv, s: usize, bar: &ProgressBar, git: &GitState) -> Outcome {
    match compute(env, s, bar, git) {
        Ok(outcome) => outcome,
        Err(e) => failed(e),
    }
}

fn compute(
    env: &StageEnv,
    s: usize,
    bar: &ProgressBar,
    git: &GitState,
) -> Result<Outcome, CacheError> {
    let stage = &env.plan.stages[s];
    let _lock = env.cache.lock(stage.kind, &stage.key, || {
        bar.set_message("waiting for another mgat process")
    })?;
    if env.cache.settle(stage.kind, &stage.key)? {
        return Ok(Outcome::Reused);
    }
    let partial = env.cache.partial_dir(stage.kind, &stage.key);
    // A train stage resumes from the checkpoints a killed run left; other kinds start over.
    if !stage.kind.resumes() {
        crate::fsio::remove_dir_all(&partial)?;
    }
    crate::fsio::create_dir_all(&partial)?;
    let (started, clock) = (SystemTime::now(), Instant::now());
    let produced = match stages::run(env, s, &partial, bar) {
        Ok(p) => p,
        Err(e) => {
            if !stage.kind.resumes() {
                let _ = std::fs::remove_dir_all(&partial);
            }
            return Ok(Outcome::Failed {
                message: e.to_string(),
                bad_input: e.is_bad_input(),
            });
        }
    };
    let manifest = Manifest {
        kind: stage.kind,
        key: stage.key.clone(),
        inputs: stage.inputs.clone(),
        outputs: Default::default(),
        started: utc_timestamp(started),
        finished: utc_timestamp(SystemTime::now()),
        duration_s: clock.elapsed().as_secs_f64(),
        host: hostname(),
        device: produced.device,
        git: git.clone(),
        mgat_version: env!("CARGO_PKG_VERSION").to_string(),
        summary: produced.summary,
        checksum: String::new(),
    };
    env.cache.commit(&partial, manifest)?;
    Ok(Outcome::Ran(clock.elapsed()))
}
