//! The `mvfa-studio` executable: runs `mvfa_studio::cli::main` (the desktop app when no
//! subcommand is given).
fn main() -> std::process::ExitCode {
    mvfa_studio::cli::process::tune_allocator();
    mvfa_studio::cli::main()
}
