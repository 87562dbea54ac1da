//! The `mgat` binary: everything lives in the library's `cli` module.

/// jemalloc, configured by [`JEMALLOC_CONF`], where glibc unmaps every large block on free: a training step's
/// activations then reuse the previous step's memory instead of page-faulting in gigabytes of fresh zeroed pages
/// (with glibc, a fifth of a ResNet-50 step on CPU went to page faults).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options (read before `main`; `_RJEM_MALLOC_CONF` in the environment overrides them): freed pages stay
/// with the process for reuse (`dirty_decay_ms:-1`, so the footprint is the peak, as with PyTorch's allocator),
/// large blocks come from the ordinary arenas (`oversize_threshold:0`, which otherwise purge at once), and memory is
/// backed by transparent huge pages where the kernel allows (`thp:always`), which also makes jemalloc zero a reused
/// block with memset rather than by purging it and faulting it back in.
#[unsafe(export_name = "_rjem_malloc_conf")]
static JEMALLOC_CONF: Option<&'static u8> =
    Some(&b"thp:always,oversize_threshold:0,dirty_decay_ms:-1\0"[0]);

fn main() -> std::process::ExitCode {
    pin_thread_count();
    restore_sigpipe();
    mgat::cli::main()
}

/// Rust ignores SIGPIPE, so `mgat plan | head` would panic on the closed pipe; a command-line tool should end
/// quietly instead, as with the default action.
fn restore_sigpipe() {
    // SAFETY: setting a signal disposition to its default has no preconditions.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
}

/// candle looks up its thread count on every CPU operation, parsing /proc/cpuinfo each time unless
/// RAYON_NUM_THREADS is set (measured: ~10% of a training step), and counts physical cores only. Setting it once
/// to the logical core count fixes both. candle's element-wise thread pool spins 25,000 rounds before parking after
/// every operation, on cores the gemm kernels need next (measured: 4% of a quickstart step); 2,000 keeps its
/// wake-up fast without that.
fn pin_thread_count() {
    // SAFETY: called first thing in main, before any thread exists, so nothing reads the environment concurrently.
    unsafe {
        if std::env::var_os("RAYON_NUM_THREADS").is_none() {
            let n = std::thread::available_parallelism().map_or(1, |n| n.get());
            std::env::set_var("RAYON_NUM_THREADS", n.to_string());
            std::env::set_var(mgat::THREADS_PINNED_BY_MGAT, "1");
        }
        if std::env::var_os("CANDLE_BARRIER_POOL_SPIN_LIMIT").is_none() {
            std::env::set_var("CANDLE_BARRIER_POOL_SPIN_LIMIT", "2000");
        }
    }
}
