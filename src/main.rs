fn main() -> std::process::ExitCode {
    mvfa_studio::cli::main()
}
