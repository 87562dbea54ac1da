//! The Slurm executor: every selected stage that is not cached becomes an `sbatch` job running `mgat stage` on that
//! one stage, chained with `--dependency=afterok:` and `--kill-on-invalid-dep=yes`, GPU requests on train and eval
//! jobs only. It then follows the jobs with `squeue` (no accounting database needed) and reads each outcome from the
//! cache, which the jobs share through a filesystem every node sees.

use super::{Outcome, RunReport, log_outcome};
use crate::cache::Lookup;
use crate::exec::StageEnv;
use crate::plan::{Stage, StageKey, StageKind, short};
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Where and how the jobs run.
#[derive(Debug, Clone, Default)]
pub struct SlurmOptions {
    pub partition: Option<String>,
    /// Generic resources for train and eval jobs, e.g. `gpu:1`.
    pub gres: Option<String>,
    /// Time limit per job, in a format sbatch accepts (checked by [`check_time`]).
    pub time: Option<String>,
    pub account: Option<String>,
    pub cpus_per_task: Option<u32>,
    /// Submit and return without waiting.
    pub detach: bool,
    /// How often to poll the queue.
    pub poll: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum SlurmError {
    #[error("Slurm is not available, nothing was submitted: {0}")]
    Unavailable(String),
    #[error(
        "sbatch refused {stage}: {message}\n(cancelled the {cancelled} job(s) this run had submitted before it)"
    )]
    Submit {
        stage: String,
        message: String,
        cancelled: usize,
    },
    #[error("squeue failed while following the jobs: {0}")]
    Queue(String),
    #[error(transparent)]
    Cache(#[from] crate::cache::CacheError),
}

/// What each job runs: this mgat binary, pointed at the same project, cache, lock and specs.
#[derive(Debug, Clone)]
pub struct JobCommand {
    pub exe: PathBuf,
    pub root: PathBuf,
    pub cache: PathBuf,
    pub lock: PathBuf,
    pub specs: Vec<PathBuf>,
    /// The run's `--set` arguments: the job plans the specs as the run did.
    pub overrides: Vec<String>,
}

impl JobCommand {
    /// The shell line sbatch wraps: `mgat --cache … --lock … -q stage [--set PATH=VALUE…] KIND KEY SPEC…`.
    fn script(&self, stage: &Stage) -> String {
        let mut words = vec![
            quote(&self.exe),
            "--cache".into(),
            quote(&self.cache),
            "--lock".into(),
            quote(&self.lock),
            "-q".into(),
            "stage".into(),
        ];
        for o in &self.overrides {
            words.push("--set".into());
            words.push(quote(Path::new(o)));
        }
        words.extend([stage.kind.name().into(), stage.id.clone()]);
        words.extend(self.specs.iter().map(|p| quote(p)));
        format!("exec {}", words.join(" "))
    }

    fn log_dir(&self) -> PathBuf {
        crate::cache::CacheBucket::SlurmLogs.dir(&self.cache)
    }
}

/// Where a job's `mgat stage` leaves its failure (message, bad input or not), which the exit code alone cannot
/// carry through `squeue`.
pub fn failure_record(cache: &Path, job_id: &str) -> PathBuf {
    crate::cache::CacheBucket::SlurmFailures
        .dir(cache)
        .join(format!("{job_id}.json"))
}

/// Why a job's stage failed: written by the job (`mgat stage`), read by the executor that submitted it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FailureRecord {
    pub message: String,
    pub bad_input: bool,
}

/// Inside a Slurm job (SLURM_JOB_ID set), records why the stage failed for the executor that submitted it.
pub fn record_failure(cache: &Path, record: &FailureRecord) {
    if let (Ok(id), Ok(json)) = (std::env::var("SLURM_JOB_ID"), serde_json::to_vec(record)) {
        // Without the record the executor still reports the failure, only without the job's message.
        let _ = mgat_util::fsio::write_atomic(&failure_record(cache, &id), &json);
    }
}

/// Single-quotes a path for the shell.
fn quote(path: &Path) -> String {
    format!("'{}'", path.to_string_lossy().replace('\'', r"'\''"))
}

/// The job name: [`job_prefix`], then the first cell using the stage.
pub fn job_name(stage: &Stage, cache_tag: &str, cell: &str) -> String {
    format!("{}{cell}", job_prefix(stage, cache_tag))
}

/// How a rerun recognises a job of its own still queued: `mgat:<kind>:<id prefix>:<cache tag>:`. Two caches that
/// plan the same stage (two clones running one spec) never adopt each other's jobs, which would compute into the
/// other cache.
fn job_prefix(stage: &Stage, cache_tag: &str) -> String {
    format!(
        "mgat:{}:{}:{cache_tag}:",
        stage.kind.name(),
        short(&stage.id)
    )
}

/// The first 8 hex digits of the SHA-256 of the cache folder's path (canonical when it exists).
fn cache_tag(cache: &Path) -> String {
    let cache = std::fs::canonicalize(cache).unwrap_or_else(|_| cache.to_path_buf());
    let mut tag = mgat_util::digest::sha256_bytes(cache.to_string_lossy().as_bytes());
    tag.truncate(8);
    tag
}

/// Stage `s`'s key as the cache can tell it now: the plan's, or resolved from the entries it consumes (which jobs
/// may have computed since the plan was made).
fn current_key(env: &StageEnv, s: usize) -> Option<StageKey> {
    let stage = &env.plan.stages[s];
    if let Some(key) = &stage.key {
        return Some(key.clone());
    }
    let digest_of = |kind, key: &StageKey, file: &str| env.cache.output_digest(kind, key, file);
    env.plan
        .resolve_stage(s, &|d| current_key(env, d), &digest_of)
        .map(|(_, key)| key)
}

/// Accepts sbatch's time formats: M, M:S, H:M:S, D-H, D-H:M, D-H:M:S (all numbers).
pub fn check_time(time: &str) -> Result<(), String> {
    let numbers = |s: &str, max_parts: usize| {
        let parts: Vec<&str> = s.split(':').collect();
        parts.len() <= max_parts
            && parts
                .iter()
                .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
    };
    let ok = match time.split_once('-') {
        Some((days, rest)) => numbers(days, 1) && numbers(rest, 3),
        None => numbers(time, 3),
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "--time {time}: expected MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM or D-HH:MM:SS"
        ))
    }
}

/// Checks that `sbatch` exists and the controller answers, before anything is submitted.
pub fn check_available() -> Result<(), SlurmError> {
    for (tool, args) in [
        ("sbatch", &["--version"][..]),
        ("squeue", &["-h", "--me", "-o", "%i"][..]),
    ] {
        let output = Command::new(tool).args(args).output().map_err(|e| {
            SlurmError::Unavailable(if e.kind() == std::io::ErrorKind::NotFound {
                format!("`{tool}` is not on PATH (is this a Slurm login node?)")
            } else {
                format!("cannot run `{tool}`: {e}")
            })
        })?;
        if !output.status.success() {
            return Err(SlurmError::Unavailable(format!(
                "`{tool} {}` failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&output.stderr).trim()
            )));
        }
    }
    Ok(())
}

/// How a run with the Slurm executor ended.
pub enum Finished {
    /// Every job left the queue; outcomes by plan index.
    Waited(RunReport),
    /// `--detach`: the job ids submitted (or found still queued), by plan index.
    Detached(Vec<(usize, String)>),
}

/// A stage's job: its id, whether this run submitted it (else it was found queued), when.
struct Job {
    id: String,
    submitted: Instant,
}

/// Submits the uncached stages of `selected` (plan indices, dependency order) and, unless detached, waits for them.
pub fn run(
    env: &StageEnv,
    selected: &[usize],
    opts: &SlurmOptions,
    command: &JobCommand,
    progress: &MultiProgress,
) -> Result<Finished, SlurmError> {
    check_available()?;
    std::fs::create_dir_all(command.log_dir())
        .map_err(|e| SlurmError::Unavailable(format!("{}: {e}", command.log_dir().display())))?;
    let queued = queued_jobs()?;
    let tag = cache_tag(env.cache.root());
    let mut outcomes: HashMap<usize, Outcome> = HashMap::new();
    let mut jobs: HashMap<usize, Job> = HashMap::new();
    let mut order: Vec<usize> = Vec::new();
    for &s in selected {
        let stage = &env.plan.stages[s];
        // A stage whose key is not known yet is submitted: its job resolves the key when it starts and adopts an
        // entry that exists by then.
        if let Some(key) = &stage.key
            && env.cache.settle(stage.kind, key)?
        {
            outcomes.insert(s, Outcome::Cached);
            continue;
        }
        let cell = stage
            .cells
            .first()
            .map_or("", |&c| env.plan.cells[c].cell.name.as_str());
        let name = job_name(stage, &tag, cell);
        let prefix = job_prefix(stage, &tag);
        let id = match queued.iter().find(|(_, n)| n.starts_with(&prefix)) {
            Some((id, _)) => {
                tracing::info!("{} is already queued as job {id}", stage.label());
                id.clone()
            }
            None => {
                let deps: Vec<&str> = stage
                    .deps
                    .iter()
                    .filter_map(|d| jobs.get(d).map(|j| j.id.as_str()))
                    .collect();
                submit(stage, &name, &deps, opts, command).map_err(|message| {
                    let submitted: Vec<String> = order
                        .iter()
                        .filter_map(|s| jobs.get(s).map(|j| j.id.clone()))
                        .collect();
                    cancel(&submitted);
                    SlurmError::Submit {
                        stage: stage.label(),
                        message,
                        cancelled: submitted.len(),
                    }
                })?
            }
        };
        jobs.insert(
            s,
            Job {
                id,
                submitted: Instant::now(),
            },
        );
        order.push(s);
    }
    tracing::info!(
        "{} jobs in the Slurm queue for {} stages ({} cached); logs in {}",
        order.len(),
        selected.len(),
        outcomes.len(),
        command.log_dir().display()
    );
    if opts.detach {
        return Ok(Finished::Detached(
            order.iter().map(|s| (*s, jobs[s].id.clone())).collect(),
        ));
    }
    wait(
        env,
        &order,
        &jobs,
        &mut outcomes,
        opts.poll,
        command,
        progress,
    )?;
    Ok(Finished::Waited(RunReport {
        outcomes: selected
            .iter()
            .map(|s| (*s, outcomes.remove(s).unwrap_or(Outcome::Skipped)))
            .collect(),
    }))
}

fn submit(
    stage: &Stage,
    name: &str,
    deps: &[&str],
    opts: &SlurmOptions,
    command: &JobCommand,
) -> Result<String, String> {
    let log = command
        .log_dir()
        .join(format!("{}-{}-%j.log", stage.kind.name(), short(&stage.id)));
    let mut sbatch = Command::new("sbatch");
    sbatch
        .arg("--parsable")
        .arg(format!("--job-name={name}"))
        .arg(format!("--output={}", log.display()))
        .arg(format!("--chdir={}", command.root.display()))
        .arg("--kill-on-invalid-dep=yes");
    if !deps.is_empty() {
        sbatch.arg(format!("--dependency=afterok:{}", deps.join(":")));
    }
    for (flag, value) in [
        ("--partition", &opts.partition),
        ("--time", &opts.time),
        ("--account", &opts.account),
    ] {
        if let Some(v) = value {
            sbatch.arg(format!("{flag}={v}"));
        }
    }
    if let Some(n) = opts.cpus_per_task {
        sbatch.arg(format!("--cpus-per-task={n}"));
    }
    if let (Some(gres), StageKind::Train | StageKind::Eval) = (&opts.gres, stage.kind) {
        sbatch.arg(format!("--gres={gres}"));
    }
    // The job picks its own thread count on its node unless the user pinned one.
    if std::env::var_os(crate::THREADS_PINNED_BY_MGAT).is_some() {
        sbatch
            .env_remove("RAYON_NUM_THREADS")
            .env_remove(crate::THREADS_PINNED_BY_MGAT);
    }
    sbatch.arg(format!("--wrap={}", command.script(stage)));
    let output = sbatch
        .output()
        .map_err(|e| format!("cannot run sbatch: {e}"))?;
    if !output.status.success() {
        return Err(String::from_utf8_lossy(&output.stderr).trim().to_string());
    }
    // --parsable prints `id` or `id;cluster`.
    let stdout = String::from_utf8_lossy(&output.stdout);
    stdout
        .trim()
        .split(';')
        .next()
        .filter(|id| !id.is_empty() && id.chars().all(|c| c.is_ascii_digit()))
        .map(str::to_string)
        .ok_or_else(|| format!("unexpected sbatch output `{}`", stdout.trim()))
}

fn cancel(ids: &[String]) {
    if !ids.is_empty() {
        let _ = Command::new("scancel").args(ids).output();
    }
}

/// (id, name) of this user's jobs in the queue.
fn queued_jobs() -> Result<Vec<(String, String)>, SlurmError> {
    let out = squeue(&["-h", "--me", "-o", "%i|%j"])?;
    Ok(out
        .lines()
        .filter_map(|l| l.split_once('|'))
        .map(|(i, n)| (i.trim().to_string(), n.trim().to_string()))
        .collect())
}

fn squeue(args: &[&str]) -> Result<String, SlurmError> {
    let output = Command::new("squeue")
        .args(args)
        .output()
        .map_err(|e| SlurmError::Queue(e.to_string()))?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        // Asking only for jobs that have all left the queue is an error to squeue, and an empty answer to us.
        if stderr.contains("Invalid job id") {
            return Ok(String::new());
        }
        return Err(SlurmError::Queue(stderr.trim().to_string()));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Job id → (state, reason) for the jobs still in the queue, from `squeue -o '%i|%T|%r'`.
pub fn parse_queue(text: &str) -> HashMap<String, (String, String)> {
    text.lines()
        .filter_map(|line| {
            let mut parts = line.trim().splitn(3, '|');
            let id = parts.next()?.trim();
            let state = parts.next()?.trim();
            let reason = parts.next().unwrap_or("").trim();
            (!id.is_empty()).then(|| (id.to_string(), (state.to_string(), reason.to_string())))
        })
        .collect()
}

/// Polls until every job has left the queue; a job that left without its entry in the cache failed, unless a stage
/// it consumes failed first (then Slurm cancelled it: skipped).
fn wait(
    env: &StageEnv,
    order: &[usize],
    jobs: &HashMap<usize, Job>,
    outcomes: &mut HashMap<usize, Outcome>,
    poll: Duration,
    command: &JobCommand,
    progress: &MultiProgress,
) -> Result<(), SlurmError> {
    let bar = progress.add(ProgressBar::new(order.len() as u64));
    bar.set_style(
        ProgressStyle::with_template("slurm [{elapsed_precise}] {wide_bar} {pos}/{len} jobs {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut open: Vec<usize> = order.to_vec();
    while !open.is_empty() {
        let ids: Vec<&str> = open.iter().map(|s| jobs[s].id.as_str()).collect();
        let queue = parse_queue(&squeue(&["-h", "-j", &ids.join(","), "-o", "%i|%T|%r"])?);
        let mut still = Vec::new();
        for &s in &open {
            if queue.contains_key(&jobs[&s].id) {
                still.push(s);
                continue;
            }
            let outcome = finished(env, s, &jobs[&s], outcomes, command);
            progress.suspend(|| log_outcome(&env.plan.stages[s], &outcome));
            outcomes.insert(s, outcome);
            bar.inc(1);
        }
        open = still;
        let count = |state: &str| queue.values().filter(|(st, _)| st == state).count();
        bar.set_message(format!(
            "{} running, {} pending",
            count("RUNNING"),
            count("PENDING")
        ));
        if !open.is_empty() {
            std::thread::sleep(poll);
        }
    }
    bar.finish_and_clear();
    Ok(())
}

fn finished(
    env: &StageEnv,
    s: usize,
    job: &Job,
    outcomes: &HashMap<usize, Outcome>,
    command: &JobCommand,
) -> Outcome {
    let stage = &env.plan.stages[s];
    if let Some(key) = current_key(env, s)
        && let Lookup::Present(manifest) = env.cache.lookup(stage.kind, &key)
    {
        return Outcome::Ran(Duration::from_secs_f64(manifest.duration_s.max(0.0)));
    }
    let upstream_failed = stage.deps.iter().any(|d| {
        matches!(
            outcomes.get(d),
            Some(Outcome::Failed { .. } | Outcome::Skipped)
        )
    });
    if upstream_failed {
        return Outcome::Skipped;
    }
    let log = command.log_dir().join(format!(
        "{}-{}-{}.log",
        stage.kind.name(),
        short(&stage.id),
        job.id
    ));
    let record: Option<FailureRecord> = crate::inputfile::read_bounded(
        &failure_record(&command.cache, &job.id),
        crate::inputfile::limit::CACHE_RECORD,
    )
    .ok()
    .and_then(|bytes| serde_json::from_slice(&bytes).ok());
    let (message, bad_input) = match record {
        Some(r) => (r.message, r.bad_input),
        None => (
            format!(
                "Slurm job {} ended after {:.0}s without a result or an error (cancelled, timed out or killed?)",
                job.id,
                job.submitted.elapsed().as_secs_f64()
            ),
            false,
        ),
    };
    Outcome::Failed {
        message: format!("{message} (job {}, log {})", job.id, log.display()),
        bad_input,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_limits_in_sbatch_formats() {
        for ok in ["30", "30:00", "4:00:00", "1-0", "1-12:00", "2-00:30:00"] {
            assert!(check_time(ok).is_ok(), "{ok}");
        }
        for bad in ["", "1h", "1:2:3:4", "-1", "1-", "a-1", "1-1:2:3:4"] {
            assert!(check_time(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn queue_lines_parse_with_and_without_reason() {
        let q = parse_queue("12|PENDING|Dependency\n13|RUNNING|None\n\n14|COMPLETING\n");
        assert_eq!(q["12"], ("PENDING".to_string(), "Dependency".to_string()));
        assert_eq!(q["13"].0, "RUNNING");
        assert_eq!(q["14"], ("COMPLETING".to_string(), String::new()));
        assert_eq!(q.len(), 3);
    }

    #[test]
    fn job_script_quotes_paths() {
        let command = JobCommand {
            exe: "/opt/mgat bin/mgat".into(),
            root: "/p".into(),
            cache: "/c".into(),
            lock: "/p/it's.lock".into(),
            specs: vec!["/p/a.yaml".into()],
            overrides: vec!["train.lr_steps=[40, 70]".into()],
        };
        let stage = Stage {
            kind: StageKind::Train,
            id: "ab".repeat(32),
            key: None,
            inputs: crate::plan::KeyInputs::for_tests(StageKind::Train),
            deps: vec![],
            dataset: "d".into(),
            cells: vec![],
            placement: crate::plan::Placement {
                device: mgat_stage::DeviceChoice::Auto,
                workers: 1,
                pretrained: None,
            },
        };
        assert_eq!(
            command.script(&stage),
            format!(
                "exec '/opt/mgat bin/mgat' --cache '/c' --lock '/p/it'\\''s.lock' -q stage --set 'train.lr_steps=[40, 70]' \
                 train {} '/p/a.yaml'",
                "ab".repeat(32)
            )
        );
        // The cache's tag: the SHA-256 of "/c" (no such folder, so the path as given) begins facd442e (sha256sum).
        assert_eq!(
            job_name(&stage, &cache_tag(Path::new("/c")), "head=mgat,seed=1"),
            "mgat:train:abababababab:facd442e:head=mgat,seed=1"
        );
        let other = job_name(
            &stage,
            &cache_tag(Path::new("/elsewhere/cache")),
            "head=mgat,seed=1",
        );
        assert!(
            !other.starts_with(&job_prefix(&stage, &cache_tag(Path::new("/c")))),
            "another cache's job is not this cache's: {other}"
        );
    }
}
