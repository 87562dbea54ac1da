//! End-to-end tests of the Slurm executor against a real single-node Slurm (ignored unless asked for: `.ci/run`
//! starts one with `scripts/slurm-local.sh start` and runs `cargo test --release -- --include-ignored`): same
//! results as the local executor, nothing resubmitted when cached, a failed stage's dependents cancelled and only
//! the missing stages resubmitted; and clear errors when Slurm is not there (these run everywhere).

mod common;

use common::{Project, Run, TOY_BASE, TOY_DATA};
use std::collections::BTreeMap;
use std::time::Instant;

/// The toy base with a head × seed grid.
fn spec() -> String {
    format!("name: t\n{TOY_BASE}grid:\n  model.head: [none, mgat]\nseeds: [1, 2]\n")
}

fn project(name: &str, spec: &str) -> Project {
    let p = Project::new(name);
    p.lock_synth("toy", TOY_DATA);
    p.write("experiments/t.yaml", spec);
    p
}

fn job_logs(p: &Project) -> Vec<String> {
    let dir = p.cache_dir().join(".slurm/logs");
    let mut logs: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    logs.sort();
    logs
}

/// results.csv rows by cell, without the columns that measure time.
fn results_without_timing(p: &Project) -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(p.path("reports/t/results.csv")).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let timing: Vec<usize> = header
        .iter()
        .enumerate()
        .filter(|(_, h)| **h == "train_seconds" || **h == "images_per_s")
        .map(|(i, _)| i + 1) // the quoted cell name holds one comma
        .collect();
    lines
        .map(|l| {
            let fields: Vec<&str> = l.split(',').collect();
            let kept: Vec<&str> = fields
                .iter()
                .enumerate()
                .filter(|(i, _)| !timing.contains(i))
                .map(|(_, f)| *f)
                .collect();
            (format!("{},{}", fields[0], fields[1]), kept.join(","))
        })
        .collect()
}

#[test]
#[ignore = "needs a running Slurm: scripts/slurm-local.sh start (.ci/run starts one and includes ignored tests)"]
fn slurm_gives_the_local_results_and_a_second_run_submits_nothing() {
    let local = project("slurm-local", &spec());
    let started = Instant::now();
    local.mgat(&["-q", "run", "experiments/t.yaml"]).success();
    let local_s = started.elapsed().as_secs_f64();

    let slurm = project("slurm", &spec());
    let started = Instant::now();
    let run = slurm.mgat(&["-q", "run", "experiments/t.yaml", "--executor", "slurm"]);
    run.success();
    let slurm_s = started.elapsed().as_secs_f64();
    assert_eq!(run.summary("ran"), 10, "{}", run.stdout());
    assert_eq!(job_logs(&slurm).len(), 10, "one job per stage");
    eprintln!(
        "10 stages: local {local_s:.1}s, slurm {slurm_s:.1}s: {:.2}s overhead per stage",
        (slurm_s - local_s) / 10.0
    );
    let (a, b) = (
        results_without_timing(&local),
        results_without_timing(&slurm),
    );
    assert_eq!(a.len(), 4);
    assert_eq!(a, b, "slurm and local results differ");

    let again = slurm.mgat(&["-q", "run", "experiments/t.yaml", "--executor", "slurm"]);
    again.success();
    assert_eq!(again.summary("cached"), 10);
    assert_eq!(job_logs(&slurm).len(), 10, "a cached run submits nothing");
}

#[test]
#[ignore = "needs a running Slurm: scripts/slurm-local.sh start (.ci/run starts one and includes ignored tests)"]
fn detach_returns_at_once_and_the_next_run_adopts_the_queued_jobs() {
    let p = project("slurm-detach", &spec());
    let detached = p.mgat(&[
        "-q",
        "run",
        "experiments/t.yaml",
        "--executor",
        "slurm",
        "--detach",
    ]);
    detached.success();
    assert!(
        detached.stdout().contains("10 stages in the Slurm queue"),
        "{}",
        detached.stdout()
    );
    assert!(!p.path("reports/t/results.csv").exists(), "no results yet");
    // Another project runs the same spec meanwhile, with the same stages: it adopts none of the queued jobs, which
    // compute into the first project's cache, and submits its own.
    let other = project("slurm-detach-other", &spec());
    let beside = other.mgat(&[
        "run",
        "experiments/t.yaml",
        "--executor",
        "slurm",
        "--detach",
    ]);
    beside.success();
    assert!(
        !beside.stderr().contains("already queued")
            && beside.stdout().contains("10 stages in the Slurm queue"),
        "{}\n{}",
        beside.stdout(),
        beside.stderr()
    );
    let waited = p.mgat(&["run", "experiments/t.yaml", "--executor", "slurm"]);
    waited.success();
    assert_eq!(
        waited.summary("ran") + waited.summary("cached"),
        10,
        "{}",
        waited.stdout()
    );
    assert!(
        waited.stderr().contains("is already queued as job"),
        "the second run adopts the queued jobs: {}",
        waited.stderr()
    );
    assert_eq!(job_logs(&p).len(), 10, "no stage was submitted twice");
    assert!(p.path("reports/t/results.csv").is_file());
    let finished = other.mgat(&["run", "experiments/t.yaml", "--executor", "slurm"]);
    finished.success();
    assert_eq!(job_logs(&other).len(), 10, "{}", finished.stdout());
    assert!(other.path("reports/t/results.csv").is_file());
}

#[test]
#[ignore = "needs a running Slurm: scripts/slurm-local.sh start (.ci/run starts one and includes ignored tests)"]
fn a_failed_stage_cancels_its_dependents_and_the_rerun_submits_only_what_is_missing() {
    // The second cell starts from a file that is not a checkpoint.
    let spec = spec()
        .replace("[none, mgat]", "[none]")
        .replace("[1, 2]", "[1]")
        + "include:\n  - {model.head: mgat, model.pretrained: ckpt/backbone.safetensors}\n";
    let p = project("slurm-fail", &spec);
    p.write("ckpt/backbone.safetensors", "not a checkpoint");
    let run = p.mgat(&[
        "run",
        "experiments/t.yaml",
        "--executor",
        "slurm",
        "--poll",
        "0.5",
        "--cpus-per-task",
        "1",
    ]);
    assert_eq!(run.code(), 2, "{}\n{}", run.stdout(), run.stderr());
    assert_eq!(run.summary("failed"), 1, "{}", run.stdout());
    assert_eq!(run.summary("skipped"), 1, "{}", run.stdout());
    assert!(
        run.stdout().contains("backbone.safetensors"),
        "{}",
        run.stdout()
    );
    let logs = job_logs(&p);
    assert_eq!(
        logs.len(),
        5,
        "synth, index, two trains and one eval ran: {logs:?}"
    );
    assert_eq!(
        logs.iter().filter(|l| l.starts_with("eval-")).count(),
        1,
        "the failed training's eval was cancelled before it started: {logs:?}"
    );

    // Put a real backbone checkpoint in place (the baseline's weights): the rerun submits the two missing stages
    // only (new weights, new keys), and the baseline's stages stay cached.
    let train = p.entries("train");
    assert_eq!(train.len(), 1);
    let weights = p
        .cache_dir()
        .join("train")
        .join(&train[0])
        .join("model.safetensors");
    std::fs::copy(weights, p.path("ckpt/backbone.safetensors")).unwrap();
    let rerun = p.mgat(&["-q", "run", "experiments/t.yaml", "--executor", "slurm"]);
    rerun.success();
    assert_eq!(
        (rerun.summary("ran"), rerun.summary("cached")),
        (2, 4),
        "{}",
        rerun.stdout()
    );
    assert_eq!(job_logs(&p).len(), 7);
}

#[test]
#[ignore = "needs an installed Slurm's configuration: scripts/slurm-local.sh start (.ci/run includes ignored tests)"]
fn an_unreachable_controller_is_an_error_before_submitting() {
    let p = project("slurm-down", &spec());
    // The running cluster's configuration, with the controller on a port where nothing listens.
    let conf = std::env::var("SLURM_CONF").unwrap_or_else(|_| "/etc/slurm/slurm.conf".into());
    let down = p.write(
        "down.conf",
        &(std::fs::read_to_string(conf).unwrap() + "SlurmctldPort=6999\n"),
    );
    let run = Run(p
        .command(&["run", "experiments/t.yaml", "--executor", "slurm"])
        .env("SLURM_CONF", down)
        .output()
        .unwrap());
    assert_eq!(run.code(), 1);
    assert!(
        run.stderr().contains(
            "Slurm is not available, nothing was submitted: `squeue -h --me -o %i` failed"
        ),
        "{}",
        run.stderr()
    );
    assert!(p.entries("synth").is_empty() && job_logs(&p).is_empty());
}

#[test]
fn a_missing_sbatch_is_an_error_before_submitting() {
    let p = project("no-slurm", &spec());
    let empty = p.path("empty-bin");
    std::fs::create_dir_all(&empty).unwrap();
    let run = Run(p
        .command(&["run", "experiments/t.yaml", "--executor", "slurm"])
        .env("PATH", &empty)
        .output()
        .unwrap());
    assert_eq!(run.code(), 1);
    assert!(
        run.stderr().contains("`sbatch` is not on PATH"),
        "{}",
        run.stderr()
    );
    assert!(p.entries("synth").is_empty(), "nothing ran");
}

#[test]
fn slurm_flags_need_the_slurm_executor() {
    let p = project("slurm-flags", &spec());
    let run = p.mgat(&["run", "experiments/t.yaml", "--partition", "gpu"]);
    assert_eq!(run.code(), 2);
    assert!(
        run.stderr().contains("--partition needs --executor slurm"),
        "{}",
        run.stderr()
    );
    let run = p.mgat(&[
        "run",
        "experiments/t.yaml",
        "--executor",
        "slurm",
        "--time",
        "1h",
    ]);
    assert_eq!(run.code(), 2);
    assert!(
        run.stderr().contains("--time 1h: expected"),
        "{}",
        run.stderr()
    );
}
