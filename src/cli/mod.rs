//! The `mgat` command line: argument parsing (clap), project paths, logging, and exit codes (0 success, 1 a stage
//! or check failed, 2 bad input: spec, lock, dataset or arguments).

mod audit_cmd;
mod cache_cmd;
mod data_cmd;
mod device_cmd;
mod fingerprint_cmd;
mod metrics_cmd;
mod rehearse_cmd;
mod remote_cmd;
mod report_cmd;
mod run_cmd;
mod slurm_args;
mod stage_cmd;
mod weights_cmd;

use crate::cache::Cache;
use crate::data::{LockError, LockFile};
use crate::plan::PlanError;
use crate::spec::SpecError;
use clap::{Args, Parser, Subcommand};
use mgat_data::index::IndexError;
use mgat_synth::SynthParams;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    name = "mgat",
    version,
    about = "Reproduce Masked Graph Attention Network re-ID experiments: grids of cached stages"
)]
struct Cli {
    /// Stage cache folder [default: $MGAT_CACHE, else .mgat/cache under the project root].
    #[arg(long, global = true, value_name = "DIR")]
    cache: Option<PathBuf>,
    /// Dataset lock file [default: datasets.lock under the project root].
    #[arg(long, global = true, value_name = "FILE")]
    lock: Option<PathBuf>,
    /// Only warnings and errors; no progress bars.
    #[arg(short, long, global = true)]
    quiet: bool,
    /// Debug logging.
    #[arg(short, long, global = true, conflicts_with = "quiet")]
    verbose: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run every stage the specs' cells need that is not cached.
    Run(run_cmd::RunArgs),
    /// List cells and their stages with keys and cache status, running nothing.
    Plan(run_cmd::PlanArgs),
    /// Say why each stage of a cell would run: which key component differs from the closest cached entry.
    Explain(run_cmd::ExplainArgs),
    /// Each stage kind's code fingerprint and the source files it covers.
    Fingerprint(fingerprint_cmd::FingerprintArgs),
    /// Inspect, verify and clean the stage cache.
    #[command(subcommand)]
    Cache(cache_cmd::CacheCommand),
    /// Generate, lock and verify datasets.
    #[command(subcommand)]
    Data(data_cmd::DataCommand),
    /// Check a compute device: one training step against the same step in f64 on the CPU.
    #[command(subcommand)]
    Device(device_cmd::DeviceCommand),
    /// Inspect a checkpoint (which backbone it fits) or convert a PyTorch .pth to safetensors.
    #[command(subcommand)]
    Weights(weights_cmd::WeightsCommand),
    /// Score a distance matrix or query/gallery features with the re-ID protocol (CMC, mAP, mINP).
    Metrics(metrics_cmd::MetricsArgs),
    /// Regenerate reports/<spec>/ (results.csv, summary tables, figures) from the cache; render the paper's tables.
    Report(report_cmd::ReportArgs),
    /// Every cell of the specs end to end with a small model and a few iterations, on the locked datasets or
    /// official-size synthetic stand-ins, into a folder of its own; then what the real run needs.
    Rehearse(rehearse_cmd::RehearseArgs),
    /// Draw a cell's ranked lists (its worst, median and best query by average precision) as a PNG.
    Rank(report_cmd::RankArgs),
    /// Compare reports/*/results.csv between two git revisions (default HEAD and the working tree), and say why
    /// keys moved.
    Diff(report_cmd::DiffArgs),
    /// Recompute committed report rows from scratch in a throwaway cache and check they come out the same.
    Audit(audit_cmd::AuditArgs),
    /// Compute one planned stage (what each Slurm job runs).
    #[command(hide = true)]
    Stage(stage_cmd::StageArgs),
}

/// A count such as `--jobs`: a whole number of at least 1. Arguments using it allow a leading `-`, so that `-j -1`
/// gets this sentence rather than clap's "unexpected argument".
pub fn at_least_one(s: &str) -> Result<usize, String> {
    match s.trim().parse::<i64>() {
        Ok(n) if n >= 1 => usize::try_from(n).map_err(|e| e.to_string()),
        _ => Err(format!("expected a whole number of 1 or more, got `{s}`")),
    }
}

/// A tolerance or similar: a finite number greater than 0.
pub fn positive_number(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(x) if x > 0.0 && x.is_finite() => Ok(x),
        _ => Err(format!("expected a number greater than 0, got `{s}`")),
    }
}

/// A bad command-line value found after parsing (unknown cell, bad format name, …): exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// Where things are: the project (its root is the nearest ancestor of the working directory with a `datasets.lock`,
/// else the working directory), the cache and the lock file.
pub struct Context {
    pub project: crate::project::Project,
    pub cache: Cache,
    pub lock_path: PathBuf,
    pub quiet: bool,
    /// Digests of pretrained checkpoints, remembered by path (`<cache>/.weights/`).
    weight_records: PathBuf,
}

impl Context {
    fn new(cli: &Cli) -> anyhow::Result<Context> {
        let cwd = std::env::current_dir()?;
        let project = crate::project::Project::containing(&cwd);
        let cache_dir = cli
            .cache
            .clone()
            .or_else(|| {
                std::env::var_os("MGAT_CACHE")
                    .filter(|v| !v.is_empty())
                    .map(PathBuf::from)
            })
            .unwrap_or_else(|| project.default_cache());
        let lock_path = cli.lock.clone().unwrap_or_else(|| project.default_lock());
        Ok(Context::at(
            project,
            absolute(&cache_dir, &cwd),
            absolute(&lock_path, &cwd),
            cli.quiet,
        ))
    }

    fn at(
        project: crate::project::Project,
        cache_dir: PathBuf,
        lock_path: PathBuf,
        quiet: bool,
    ) -> Context {
        Context {
            project,
            weight_records: crate::cache::CacheBucket::Weights.dir(&cache_dir),
            cache: Cache::new(cache_dir),
            lock_path,
            quiet,
        }
    }

    /// The same project with the cache (and the weight records in it) at `dir`.
    pub fn with_cache(&self, dir: PathBuf) -> Context {
        Context::at(
            self.project.clone(),
            dir,
            self.lock_path.clone(),
            self.quiet,
        )
    }

    /// What a plan is for: computing stages needs the weights and data; inspecting works from the cache.
    pub fn purpose(&self, compute: bool) -> crate::plan::Purpose<'_> {
        let records = self.weight_records.as_path();
        match compute {
            true => crate::plan::Purpose::Compute { records },
            false => crate::plan::Purpose::Inspect { records },
        }
    }

    pub fn load_lock(&self) -> Result<LockFile, LockError> {
        LockFile::load(
            &self.lock_path,
            &self.cache.bucket(crate::cache::CacheBucket::FileLists),
        )
    }

    /// Progress bars, hidden with `-q` (and by indicatif when stderr is not a terminal).
    pub fn progress(&self) -> indicatif::MultiProgress {
        let target = if self.quiet {
            indicatif::ProgressDrawTarget::hidden()
        } else {
            indicatif::ProgressDrawTarget::stderr()
        };
        indicatif::MultiProgress::with_draw_target(target)
    }
}

fn absolute(path: &Path, cwd: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        cwd.join(path)
    }
}

/// Synthetic dataset parameters as command-line flags (shared by `data synth` and `data lock --format synth`).
#[derive(Args, Debug, Clone)]
pub struct SynthArgs {
    /// Generator seed: the same seed and parameters give byte-identical files.
    #[arg(long)]
    seed: Option<u64>,
    /// Identities in all; half (rounded up) are training identities, the rest test identities.
    #[arg(long, default_value_t = 100)]
    ids: u32,
    #[arg(long, default_value_t = 6)]
    cameras: u32,
    /// Average images of an identity per camera that sees it.
    #[arg(long, default_value_t = 4)]
    images_per_camera: u32,
    #[arg(long, default_value_t = 128)]
    height: u32,
    #[arg(long, default_value_t = 64)]
    width: u32,
    /// Junk gallery images (pid −1) [default: 20; Market-1501 layout only].
    #[arg(long)]
    junk: Option<u32>,
    /// Distractor gallery images (pid 0) [default: 40; Market-1501 and DukeMTMC-reID layouts only].
    #[arg(long)]
    distractors: Option<u32>,
    /// JPEG quality.
    #[arg(long, default_value_t = 90)]
    quality: u8,
}

impl SynthArgs {
    fn params(&self) -> Result<SynthParams, UsageError> {
        let seed = self
            .seed
            .ok_or_else(|| UsageError("a synthetic dataset needs --seed N".into()))?;
        let params = SynthParams {
            seed,
            ids: self.ids,
            cameras: self.cameras,
            images_per_camera: self.images_per_camera,
            height: self.height,
            width: self.width,
            junk: self.junk.unwrap_or(20),
            distractors: self.distractors.unwrap_or(40),
            quality: self.quality,
        };
        match params.invalid() {
            Some((name, value, expected)) => Err(UsageError(format!(
                "--{} {value}: expected {expected}",
                name.replace('_', "-")
            ))),
            None => Ok(params),
        }
    }
}

/// Parses arguments, runs the command and maps errors to exit codes.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.quiet, cli.verbose);
    // `run`, `audit` and `rehearse` fix their schedule once they have read their specs; every other command computes at most
    // one stage at a time.
    if !matches!(
        cli.command,
        Command::Run(_) | Command::Audit(_) | Command::Rehearse(_)
    ) {
        crate::exec::schedule::Schedule::whole_machine().pin();
    }
    let result = Context::new(&cli).and_then(|ctx| match cli.command {
        Command::Run(args) => run_cmd::run(&ctx, args),
        Command::Plan(args) => run_cmd::plan(&ctx, args),
        Command::Explain(args) => run_cmd::explain(&ctx, args),
        Command::Fingerprint(args) => fingerprint_cmd::fingerprint(args),
        Command::Cache(cmd) => cache_cmd::run(&ctx, cmd),
        Command::Data(cmd) => data_cmd::run(&ctx, cmd),
        Command::Device(cmd) => device_cmd::run(cmd),
        Command::Weights(cmd) => weights_cmd::run(cmd),
        Command::Metrics(args) => metrics_cmd::run(args),
        Command::Report(args) => report_cmd::report(&ctx, args),
        Command::Rank(args) => report_cmd::rank(&ctx, args),
        Command::Rehearse(args) => rehearse_cmd::rehearse(&ctx, args),
        Command::Diff(args) => report_cmd::diff(&ctx, args),
        Command::Audit(args) => audit_cmd::audit(&ctx, args),
        Command::Stage(args) => stage_cmd::stage(&ctx, args),
    });
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(if is_bad_input(&err) { 2 } else { 1 })
        }
    }
}

fn is_bad_input(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.is::<SpecError>()
            || e.is::<LockError>()
            || e.is::<PlanError>()
            || e.is::<IndexError>()
            || e.is::<UsageError>()
            || e.is::<metrics_cmd::ScoreError>()
            || e.is::<mgat_eval::array::ArrayError>()
            || e.downcast_ref::<crate::cache::remote::RemoteError>()
                .is_some_and(|r| r.is_bad_input())
            || e.downcast_ref::<crate::data::hash::HashError>()
                .is_some_and(|h| h.is_bad_input())
            || e.downcast_ref::<crate::report::ReportError>()
                .is_some_and(|r| r.is_bad_input())
            || matches!(
                e.downcast_ref::<crate::cache::CacheError>(),
                Some(crate::cache::CacheError::Missing(_))
            )
    })
}

fn init_logging(quiet: bool, verbose: bool) {
    let level = match (quiet, verbose) {
        (true, _) => tracing::Level::WARN,
        (_, true) => tracing::Level::DEBUG,
        _ => tracing::Level::INFO,
    };
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_max_level(level)
        .with_target(false)
        .without_time()
        .with_ansi(ansi)
        .with_writer(std::io::stderr)
        .init();
}
