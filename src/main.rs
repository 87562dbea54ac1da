//! The `mgat` binary: everything lives in the library's `cli` module.

fn main() -> std::process::ExitCode {
    mgat::cli::main()
}
