//! The built binaries: the clinician's `mvfa-studio` and the developer's `mvfa-dev`.
use std::path::Path;
use std::process::{Command, Output};

/// `mvfa-studio` with `NO_COLOR=1` (plain text to compare).
pub fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mvfa-studio"));
    c.env("NO_COLOR", "1");
    c
}

/// The developer binary `mvfa-dev` (`bench`, `smoke`) with `NO_COLOR=1`.
pub fn dev_bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mvfa-dev"));
    c.env("NO_COLOR", "1");
    c
}

/// Runs `cmd` to the end: its output and its stdout and stderr as text.
pub fn run(cmd: &mut Command) -> (Output, String, String) {
    let out = cmd.output().expect("the binary runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out, stdout, stderr)
}

/// The lines of a text (CSV) output.
pub fn csv_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Asserts that `dir` holds no hidden (temporary) file: outputs are written whole or not at all.
pub fn no_temp_files(dir: &Path) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        assert!(!name.starts_with('.'), "temporary file left behind: {name}");
    }
}
