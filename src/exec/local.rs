//! The local executor: runs the stages a selection of cells needs, in dependency order on `--jobs` worker
//! threads, each under its cache key's lock, committing outputs atomically. A failed stage skips its dependents;
//! with keep-going (the default) every independent stage still runs.

use super::{Outcome, RunOptions, RunReport, log_outcome};
use crate::cache::Manifest;
use crate::plan::Stage;
use crate::provenance::{GitState, hostname, utc_timestamp};
use crate::stages::{self, StageEnv};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use std::collections::HashMap;
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
    let mut state: HashMap<usize, Option<Outcome>> = selected
        .iter()
        .map(|&s| {
            let stage = &env.plan.stages[s];
            (
                s,
                env.cache
                    .contains(stage.kind.name(), &stage.key)
                    .then_some(Outcome::Cached),
            )
        })
        .collect();
    let mut launched: Vec<usize> = Vec::new();
    let mut stop = false;
    let (tx, rx) = mpsc::channel::<(usize, Outcome)>();
    std::thread::scope(|scope| {
        let mut running = 0usize;
        loop {
            while !stop && running < opts.jobs.max(1) {
                let Some(s) = next_ready(env, selected, &state, &launched) else {
                    break;
                };
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
    let stage = &env.plan.stages[s];
    let failed = |message: String| Outcome::Failed {
        message,
        bad_input: false,
    };
    let kind = stage.kind.name();
    let _lock = match env.cache.lock(kind, &stage.key, || {
        bar.set_message("waiting for another mgat process")
    }) {
        Ok(lock) => lock,
        Err(e) => return failed(e.to_string()),
    };
    if env.cache.contains(kind, &stage.key) {
        return Outcome::Reused;
    }
    let partial = env.cache.partial_dir(kind, &stage.key);
    // A train stage resumes from the checkpoints a killed run left; other kinds start over.
    let cleared = if stage.kind.resumes() {
        Ok(())
    } else {
        std::fs::remove_dir_all(&partial).or_else(ignore_missing)
    };
    let fresh = cleared.and_then(|()| std::fs::create_dir_all(&partial));
    if let Err(e) = fresh {
        return failed(format!("{}: {e}", partial.display()));
    }
    let (started, clock) = (SystemTime::now(), Instant::now());
    let produced = match stages::run(env, s, &partial, bar) {
        Ok(p) => p,
        Err(e) => {
            if !stage.kind.resumes() {
                let _ = std::fs::remove_dir_all(&partial);
            }
            return Outcome::Failed {
                message: e.to_string(),
                bad_input: e.is_bad_input(),
            };
        }
    };
    let manifest = Manifest {
        kind: kind.to_string(),
        key: stage.key.clone(),
        inputs: serde_json::to_value(&stage.inputs).unwrap_or_default(),
        outputs: Default::default(),
        started: utc_timestamp(started),
        finished: utc_timestamp(SystemTime::now()),
        duration_s: clock.elapsed().as_secs_f64(),
        host: hostname(),
        device: produced.device,
        git: git.clone(),
        mgat_version: env!("CARGO_PKG_VERSION").to_string(),
        summary: produced.summary,
    };
    match env.cache.commit(&partial, manifest) {
        Ok(_) => Outcome::Ran(clock.elapsed()),
        Err(e) => failed(e.to_string()),
    }
}

fn ignore_missing(e: std::io::Error) -> std::io::Result<()> {
    if e.kind() == std::io::ErrorKind::NotFound {
        Ok(())
    } else {
        Err(e)
    }
}
