//! How many stages run at once on the CPU and how many threads each computes with, and fixing that for the
//! process before any thread starts.
//!
//! A small model's kernels are too short to keep two cores busy: on the quickstart's model (ResNet-18 of width 8,
//! batch 32 at 64×32) two train stages side by side with one thread each finish 1.32–1.47× sooner than one stage
//! after another with two threads each, with byte-identical weights (`benches/schedule.sh`). So where every
//! cell of a grid trains such a model on the CPU, `run` and `audit` run one stage per core by default (no more stages
//! than cells, so that a single cell still trains on every core); otherwise one stage at a time on every core, which
//! keeps a large model's memory to one stage's worth. `-j N` asks for N stages at once, each with an equal share of
//! the cores.

use crate::spec::Cell;
use crate::spec::config::{Backbone, RunConfig};

/// Stages at once (`jobs`, within which CPU stages run; a `--devices` pool's slots are beside it) and the threads
/// each computes with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    pub jobs: usize,
    pub threads: usize,
}

/// The most activation values a training step's first layer may produce (batch × height × width × channels, four times
/// that for ResNet-50's bottlenecks) for stages to run one per core by default. `benches/schedule.sh` measured
/// side-by-side stages 1.32–1.47× faster at the quickstart's 524,288, 1.27–1.42× at 2,097,152 and 1.23–1.24× at
/// 8,388,608 on 2 cores (two runs); larger models (the paper's ResNet-50 makes 536,870,912) keep one stage at a time on
/// every core, unmeasured there and with one stage's memory.
pub const SMALL_STEP: u64 = 1 << 23;

impl Schedule {
    /// One stage at a time on every core: what commands that run a single stage, or none, use.
    pub fn whole_machine() -> Schedule {
        let cores = cores();
        Schedule {
            jobs: 1,
            threads: threads_asked().unwrap_or(cores),
        }
    }

    /// For the selected `cells` of a grid: `jobs` stages at once when asked, each with an equal share of the
    /// cores; unasked, where every cell trains a small model on the CPU ([`SMALL_STEP`]), one stage per core, as
    /// many as there are cells (so that one cell still trains on every core); else one stage at a time. A
    /// `RAYON_NUM_THREADS` set by the user is the threads per stage.
    pub fn for_grid<'a>(
        jobs: Option<usize>,
        cells: impl IntoIterator<Item = &'a Cell>,
    ) -> Schedule {
        let cores = cores();
        let jobs = jobs.unwrap_or_else(|| {
            let cells: Vec<&Cell> = cells.into_iter().collect();
            match cells.iter().all(|c| small_on_cpu(&c.config)) {
                true => cores.min(cells.len()).max(1),
                false => 1,
            }
        });
        Schedule {
            jobs,
            threads: threads_asked().unwrap_or((cores / jobs).max(1)),
        }
    }

    /// Fixes the process's thread settings for this schedule. Must run before any thread starts (it changes the
    /// environment, which C code may read unguarded); when another thread already runs, it changes nothing and says
    /// so.
    ///
    /// - candle sizes its matrix products by `RAYON_NUM_THREADS`, which it reads on every CPU operation (parsing
    ///   /proc/cpuinfo each time when unset: ~10% of a training step), so it is set to the threads per stage.
    /// - candle's element-wise pool spins 25,000 rounds before parking after every operation, on cores the matrix
    ///   products need next (4% of a quickstart step); 2,000 keeps its wake-up fast without that.
    /// - rayon's global pool, which planning and hashing use, keeps every core; each stage computes on a pool of its
    ///   own ([`crate::stages::run`]).
    pub fn pin(&self) {
        if !alone_in_process() {
            tracing::warn!("threads already run: the thread settings stay as they are");
            return;
        }
        // SAFETY: no other thread exists (checked above), so nothing reads the environment concurrently.
        unsafe {
            if std::env::var_os("RAYON_NUM_THREADS").is_none() {
                std::env::set_var("RAYON_NUM_THREADS", self.threads.to_string());
                std::env::set_var(crate::THREADS_PINNED_BY_MGAT, "1");
            }
            if std::env::var_os("CANDLE_BARRIER_POOL_SPIN_LIMIT").is_none() {
                std::env::set_var("CANDLE_BARRIER_POOL_SPIN_LIMIT", "2000");
            }
        }
        // Fails only when the global pool already exists, and then it has its size already.
        let _ = rayon::ThreadPoolBuilder::new()
            .num_threads(cores())
            .build_global();
    }
}

/// Whether a cell trains on the CPU a model whose steps are small enough to share the cores by stage.
fn small_on_cpu(config: &RunConfig) -> bool {
    on_cpu(config) && step_size(config) <= SMALL_STEP
}

/// Whether a cell trains on the CPU: `cpu`, or `auto` in a build without CUDA.
fn on_cpu(config: &RunConfig) -> bool {
    match config.train.device {
        mgat_stage::DeviceChoice::Cpu => true,
        mgat_stage::DeviceChoice::Auto => !cfg!(feature = "cuda"),
        mgat_stage::DeviceChoice::Cuda(_) => false,
    }
}

/// Activation values a training step's first layer produces (four times that for ResNet-50's bottlenecks).
fn step_size(config: &RunConfig) -> u64 {
    let t = &config.train;
    let expansion = match config.model.backbone {
        Backbone::Resnet50 => 4,
        Backbone::Resnet18 | Backbone::Resnet34 => 1,
    };
    [
        t.batch_size,
        t.height,
        t.width,
        config.model.width,
        expansion,
    ]
    .iter()
    .fold(1u64, |acc, &x| acc.saturating_mul(u64::from(x)))
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Threads per stage the user set through `RAYON_NUM_THREADS`, before mgat set it.
fn threads_asked() -> Option<usize> {
    if std::env::var_os(crate::THREADS_PINNED_BY_MGAT).is_some() {
        return None;
    }
    std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|s| s.trim().parse::<usize>().ok())
        .filter(|&n| n > 0)
}

/// Whether this is the process's only thread (Linux: one entry in /proc/self/task; elsewhere assumed).
fn alone_in_process() -> bool {
    match std::fs::read_dir("/proc/self/task") {
        Ok(tasks) => tasks.count() == 1,
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> crate::spec::Spec {
        crate::spec::Spec::parse(std::path::Path::new("s.yaml"), yaml, &[]).unwrap()
    }

    const QUICKSTART_SIZED: &str = "name: s\nbase:\n  dataset: {name: d}\n  model: {backbone: resnet18, width: 8}\n  train: {height: 64, width: 32, batch_size: 32, instances: 4, device: cpu}\n";

    #[test]
    fn a_small_cpu_grid_runs_a_stage_per_core_and_a_large_one_a_stage_at_a_time() {
        let small = spec(QUICKSTART_SIZED);
        assert_eq!(step_size(&small.cells[0].config), 32 * 64 * 32 * 8);
        assert!(small_on_cpu(&small.cells[0].config));
        let large = spec(
            "name: s\nbase:\n  dataset: {name: d}\n  model: {backbone: resnet50}\n  train: {device: cpu}\n",
        );
        // The paper's setting: batch 64 at 256×128, width 64, bottlenecks.
        assert_eq!(step_size(&large.cells[0].config), 64 * 256 * 128 * 64 * 4);
        assert!(!small_on_cpu(&large.cells[0].config));
        let on_gpu = spec(&QUICKSTART_SIZED.replace("device: cpu", "device: cuda:0"));
        assert!(!small_on_cpu(&on_gpu.cells[0].config));
        assert_eq!(
            Schedule::for_grid(None, [&small.cells[0], &large.cells[0]]).jobs,
            1
        );
        // One cell: one stage on every core.
        let one = Schedule::for_grid(None, [&small.cells[0]]);
        assert_eq!(
            (one.jobs, one.threads),
            (1, threads_asked().unwrap_or(cores()))
        );
    }

    #[test]
    fn asked_jobs_share_the_cores() {
        let s = Schedule::for_grid(Some(cores() + 5), []);
        assert_eq!(s.jobs, cores() + 5);
        assert!(s.threads >= 1);
    }
}
