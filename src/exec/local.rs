//! The local executor: runs the stages a selection of cells needs, in dependency order on `--jobs` worker
//! threads, each under its cache key's lock, committing outputs atomically. A failed stage skips its dependents;
//! with keep-going (the default) every independent stage still runs.
//!
//! With a `--devices` pool, each train and eval stage holds one listed device (a slot) exclusively while it runs,
//! outside `--jobs`: a cell whose `train.device` is `auto` takes any free slot, one that names a device takes a slot
//! of that device, one that says `cpu` when the pool has no CPU runs within `--jobs`. A stage that fails on its
//! device (out of memory included) is reported with the device and never retried on another.
//!
//! Trust: before anything runs, every cached entry of the selection is checked against its manifest (through the
//! stat cache); a damaged one is quarantined and its stage runs again. A stage's inputs are checked again (free
//! within one process) right before it starts.
//!
//! Early cutoff: a stage whose key was unknown at plan time (an entry it consumes did not exist) gets it when
//! its inputs are complete, from the digests of the outputs it consumes; when an entry already exists under that key
//! (an upstream stage re-ran and produced the same bytes), it is cached and nothing runs.

use super::StageEnv;
use super::{Outcome, RunOptions, RunReport, log_outcome};
use crate::cache::{CacheError, Manifest};
use crate::plan::{KeyInputs, Placement, Stage, StageKey, StageKind};
use crate::provenance::{LazyGitState, hostname, utc_timestamp};
use crate::stages;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use mgat_stage::DeviceChoice;
use std::collections::BTreeMap;
use std::collections::{HashMap, HashSet};
use std::sync::mpsc;
use std::time::{Instant, SystemTime};

/// Runs `selected` (plan indices in dependency order).
pub fn run(
    env: &StageEnv,
    selected: &[usize],
    opts: RunOptions,
    progress: &MultiProgress,
    git: &LazyGitState,
) -> RunReport {
    // Every entry the run could use is checked in full now (through the stat cache, in parallel), so that damage
    // anywhere is quarantined and recomputed by this run, and reports read only sound entries.
    use rayon::prelude::*;
    let mut state: HashMap<usize, Option<Outcome>> = selected
        .par_iter()
        .map(|&s| {
            let stage = &env.plan.stages[s];
            let outcome = match stage.key.as_ref().map(|k| env.cache.trusted(stage.kind, k)) {
                Some(Ok(Some(_))) => Some(Outcome::Cached),
                Some(Ok(None)) | None => None,
                Some(Err(e)) => Some(failed(e)),
            };
            (s, outcome)
        })
        .collect();
    // Keys known at plan time; the rest are resolved as the stages they consume complete.
    let mut keys: HashMap<usize, (StageKey, KeyInputs)> = selected
        .iter()
        .filter_map(|&s| {
            let stage = &env.plan.stages[s];
            stage.key.clone().map(|k| (s, (k, stage.inputs.clone())))
        })
        .collect();
    let mut launched: Vec<usize> = Vec::new();
    let mut checked: HashSet<usize> = HashSet::new();
    let mut stop = false;
    let mut pool = DevicePool::new(&opts.devices);
    let (tx, rx) = mpsc::channel::<(usize, Outcome, Option<usize>)>();
    std::thread::scope(|scope| {
        let (mut running, mut on_jobs) = (0usize, 0usize);
        loop {
            loop {
                let cpu_free = on_jobs < opts.schedule.jobs.max(1);
                let next = match stop {
                    true => None,
                    false => next_launch(env, selected, &mut state, &launched, &mut pool, cpu_free),
                };
                let Some((s, slot)) = next else {
                    break;
                };
                let release = |pool: &mut DevicePool| {
                    if let Some(slot) = slot {
                        pool.release(slot);
                    }
                };
                if !inputs_sound(env, s, &keys, &mut state, &mut checked) {
                    release(&mut pool);
                    continue; // a damaged input was quarantined and is now to run first
                }
                match resolve(env, s, &keys) {
                    Ok(resolved) => {
                        let cached = env.cache.trusted(env.plan.stages[s].kind, &resolved.0);
                        keys.insert(s, resolved);
                        match cached {
                            Ok(None) => {}
                            Ok(Some(_)) | Err(_) => {
                                release(&mut pool);
                                state.insert(
                                    s,
                                    Some(cached.map_or_else(failed, |_| Outcome::Cached)),
                                );
                                continue; // early cutoff: the same inputs, already computed
                            }
                        }
                    }
                    Err(message) => {
                        release(&mut pool);
                        state.insert(s, Some(failed(message)));
                        continue;
                    }
                }
                launched.push(s);
                running += 1;
                on_jobs += usize::from(slot.is_none());
                let tx = tx.clone();
                let bar = progress.add(stage_bar(&env.plan.stages[s]));
                let device = slot.map(|i| (i, pool.devices[i]));
                let job = Job {
                    s,
                    key: keys[&s].clone(),
                    entries: input_entries(env, s, &keys),
                    threads: opts.schedule.threads,
                };
                scope.spawn(move || {
                    let outcome = execute(env, &job, &bar, git, device.as_ref());
                    bar.finish_and_clear();
                    let _ = tx.send((s, outcome, device.map(|(i, _)| i)));
                });
            }
            if running == 0 {
                break;
            }
            let Ok((s, outcome, slot)) = rx.recv() else {
                break;
            };
            running -= 1;
            match slot {
                Some(slot) => pool.release(slot),
                None => on_jobs -= 1,
            }
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
    keys: &HashMap<usize, (StageKey, KeyInputs)>,
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
        let Some((key, _)) = keys.get(&d) else {
            continue;
        };
        match env.cache.trusted(stage.kind, key) {
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

/// Stage `s`'s key inputs and key from the entries it consumes (all complete and checked by now).
fn resolve(
    env: &StageEnv,
    s: usize,
    keys: &HashMap<usize, (StageKey, KeyInputs)>,
) -> Result<(StageKey, KeyInputs), String> {
    let key_of = |d: usize| keys.get(&d).map(|(k, _)| k.clone());
    let digest_of = |kind, key: &StageKey, file: &str| env.cache.output_digest(kind, key, file);
    env.plan
        .resolve_stage(s, &key_of, &digest_of)
        .map(|(inputs, key)| (key, inputs))
        .ok_or_else(|| {
            format!(
                "{}: an entry it consumes is missing from the cache",
                env.plan.stages[s].label()
            )
        })
}

/// The folders of the entries stage `s` consumes, by kind.
fn input_entries(
    env: &StageEnv,
    s: usize,
    keys: &HashMap<usize, (StageKey, KeyInputs)>,
) -> BTreeMap<StageKind, std::path::PathBuf> {
    env.plan.stages[s]
        .deps
        .iter()
        .filter_map(|&d| {
            let kind = env.plan.stages[d].kind;
            keys.get(&d)
                .map(|(key, _)| (kind, env.cache.entry_dir(kind, key)))
        })
        .collect()
}

/// A stage to compute: its plan index, resolved key and inputs, and the entries it consumes.
struct Job {
    s: usize,
    key: (StageKey, KeyInputs),
    entries: BTreeMap<StageKind, std::path::PathBuf>,
    /// Threads the stage computes with.
    threads: usize,
}

/// The first not-yet-launched stage whose inputs are all available and that can start now: with a free slot of its
/// device when it runs on the pool, else when `cpu_free`. The slot is claimed. A stage whose device the pool lacks
/// fails here.
fn next_launch(
    env: &StageEnv,
    selected: &[usize],
    state: &mut HashMap<usize, Option<Outcome>>,
    launched: &[usize],
    pool: &mut DevicePool,
    cpu_free: bool,
) -> Option<(usize, Option<usize>)> {
    let available = |d: &usize, state: &HashMap<usize, Option<Outcome>>| {
        matches!(
            state.get(d),
            Some(Some(Outcome::Cached | Outcome::Ran(_) | Outcome::Reused))
        )
    };
    for &s in selected {
        let stage = &env.plan.stages[s];
        if !matches!(state.get(&s), Some(None))
            || launched.contains(&s)
            || !stage.deps.iter().all(|d| available(d, state))
        {
            continue;
        }
        match pool.wants(stage) {
            Err(message) => {
                state.insert(
                    s,
                    Some(Outcome::Failed {
                        message,
                        bad_input: true,
                    }),
                );
            }
            Ok(None) if cpu_free => return Some((s, None)),
            Ok(Some(device)) => {
                if let Some(slot) = pool.claim(device) {
                    return Some((s, Some(slot)));
                }
            }
            Ok(None) => {}
        }
    }
    None
}

/// The `--devices` slots and which are held.
struct DevicePool {
    devices: Vec<DeviceChoice>,
    busy: Vec<bool>,
}

impl DevicePool {
    fn new(devices: &[DeviceChoice]) -> Self {
        Self {
            devices: devices.to_vec(),
            busy: vec![false; devices.len()],
        }
    }

    /// The device a stage needs a slot of (`auto`: any); `None` when it runs within `--jobs`.
    fn wants(&self, stage: &Stage) -> Result<Option<DeviceChoice>, String> {
        if self.devices.is_empty() || !matches!(stage.kind, StageKind::Train | StageKind::Eval) {
            return Ok(None);
        }
        match stage.placement.device {
            d if d == DeviceChoice::Auto || self.devices.contains(&d) => Ok(Some(d)),
            DeviceChoice::Cpu => Ok(None),
            d => Err(format!(
                "train.device {d} is not in --devices {}",
                self.devices
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(",")
            )),
        }
    }

    fn claim(&mut self, device: DeviceChoice) -> Option<usize> {
        let slot = (0..self.devices.len()).find(|&i| {
            !self.busy[i] && (device == DeviceChoice::Auto || self.devices[i] == device)
        })?;
        self.busy[slot] = true;
        Some(slot)
    }

    fn release(&mut self, slot: usize) {
        self.busy[slot] = false;
    }
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
/// `device` is the pool slot the stage holds, if any.
fn execute(
    env: &StageEnv,
    job: &Job,
    bar: &ProgressBar,
    git: &LazyGitState,
    device: Option<&(usize, DeviceChoice)>,
) -> Outcome {
    match compute(env, job, bar, git, device) {
        Ok(Outcome::Failed { message, bad_input }) if device.is_some() => Outcome::Failed {
            message: device.map_or(message.clone(), |d| on_device(&message, d.1)),
            bad_input,
        },
        Ok(outcome) => outcome,
        Err(e) => failed(e),
    }
}

/// A failure message that names the device, and says so first when the device ran out of memory.
fn on_device(message: &str, device: DeviceChoice) -> String {
    if message.to_ascii_lowercase().contains("out of memory") {
        format!("out of memory on {device} (not retried on another device): {message}")
    } else {
        format!("on {device}: {message}")
    }
}

fn compute(
    env: &StageEnv,
    job: &Job,
    bar: &ProgressBar,
    git: &LazyGitState,
    device: Option<&(usize, DeviceChoice)>,
) -> Result<Outcome, CacheError> {
    let stage = &env.plan.stages[job.s];
    let (key, inputs) = &job.key;
    let _lock = env.cache.lock(stage.kind, key, || {
        bar.set_message("waiting for another mgat process")
    })?;
    if env.cache.settle(stage.kind, key)? {
        return Ok(Outcome::Reused);
    }
    let partial = env.cache.partial_dir(stage.kind, key);
    // A train stage resumes from the checkpoints a killed run left; other kinds start over.
    if !stage.kind.resumes() {
        mgat_util::fsio::remove_dir_all(&partial)?;
    }
    mgat_util::fsio::create_dir_all(&partial)?;
    let (started, clock) = (SystemTime::now(), Instant::now());
    let placement = Placement {
        device: device.map_or(stage.placement.device, |d| d.1),
        ..stage.placement.clone()
    };
    let stat_cache = |root: &std::path::Path| env.cache.stat_cache_path(root);
    let computed = stages::gather_inputs(
        stage,
        env.lock,
        &stat_cache,
        job.entries.clone(),
        &inputs.upstream,
        bar,
    )
    .and_then(|stage_inputs| {
        let produced = stages::run(
            stage,
            &inputs.config,
            &stage_inputs,
            &placement,
            job.threads,
            &partial,
            bar,
        )?;
        stages::recheck_inputs(
            stage,
            env.lock,
            &stat_cache,
            &stage_inputs,
            &inputs.upstream,
        )?;
        Ok(produced)
    });
    let produced = match computed {
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
        key: key.clone(),
        inputs: inputs.clone(),
        outputs: Default::default(),
        started: utc_timestamp(started),
        finished: utc_timestamp(SystemTime::now()),
        duration_s: clock.elapsed().as_secs_f64(),
        host: hostname(),
        device: produced.device,
        device_slot: device.map(|d| d.0),
        git: git.get().clone(),
        mgat_version: env!("CARGO_PKG_VERSION").to_string(),
        summary: produced.summary,
        checksum: String::new(),
    };
    env.cache.commit(&partial, manifest)?;
    Ok(Outcome::Ran(clock.elapsed()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_is_held_by_one_stage_and_auto_takes_any_free_one() {
        let mut pool = DevicePool::new(&[DeviceChoice::Cuda(0), DeviceChoice::Cuda(1)]);
        assert_eq!(pool.claim(DeviceChoice::Cuda(1)), Some(1));
        assert_eq!(pool.claim(DeviceChoice::Cuda(1)), None, "held");
        assert_eq!(pool.claim(DeviceChoice::Auto), Some(0));
        assert_eq!(pool.claim(DeviceChoice::Auto), None, "all held");
        pool.release(1);
        assert_eq!(pool.claim(DeviceChoice::Auto), Some(1));
        assert_eq!(pool.claim(DeviceChoice::Cuda(7)), None);
    }

    #[test]
    fn an_out_of_memory_failure_says_so_and_names_the_device() {
        let m = on_device(
            "CUDA_ERROR_OUT_OF_MEMORY: out of memory",
            DeviceChoice::Cuda(1),
        );
        assert!(m.starts_with("out of memory on cuda:1 (not retried"), "{m}");
        assert_eq!(
            on_device("bad input", DeviceChoice::Cuda(0)),
            "on cuda:0: bad input"
        );
    }
}
