//! The `mgat` binary: everything lives in the library's `cli` module.

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
/// to the logical core count fixes both.
fn pin_thread_count() {
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        let n = std::thread::available_parallelism().map_or(1, |n| n.get());
        // SAFETY: called first thing in main, before any thread exists, so nothing reads the environment concurrently.
        unsafe {
            std::env::set_var("RAYON_NUM_THREADS", n.to_string());
            std::env::set_var(mgat::THREADS_PINNED_BY_MGAT, "1");
        }
    }
}
