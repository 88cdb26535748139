//! The `initguard` binary: all logic lives in the library.

fn main() -> std::process::ExitCode {
    initguard::cli::main()
}
