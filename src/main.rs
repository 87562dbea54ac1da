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
    restore_sigpipe();
    mgat::cli::main()
}

/// Rust ignores SIGPIPE, so `mgat plan | head` would panic on the closed pipe; a command-line tool should end
/// quietly instead, as with the default action.
fn restore_sigpipe() {
    // SAFETY: setting a signal disposition to its default has no preconditions.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
}
