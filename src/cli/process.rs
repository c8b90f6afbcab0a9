//! Process set-up shared by the two binaries, `mvfa-studio` and the developer binary
//! `mvfa-dev`: the allocator settings, SIGPIPE and interrupt handling of headless commands,
//! and the printed error with the exit status.
use std::process::ExitCode;

/// Runs a headless command: a closed output pipe ends the process quietly, Ctrl+C and
/// SIGTERM remove unfinished output files, and an error is printed as `error: ...` with a
/// failure status. Call it before any other thread is started.
pub fn run_headless(command: impl FnOnce() -> anyhow::Result<ExitCode>) -> ExitCode {
    default_sigpipe();
    clean_up_on_interrupt();
    exit_code(command())
}

/// Runs a long-running service (`serve`): like [`run_headless`] but SIGPIPE keeps Rust's
/// default (ignored), so a network peer that goes away cannot end the process.
pub fn run_service(command: impl FnOnce() -> anyhow::Result<ExitCode>) -> ExitCode {
    clean_up_on_interrupt();
    exit_code(command())
}

/// The status of a finished command; an error is printed to stderr first.
pub fn exit_code(result: anyhow::Result<ExitCode>) -> ExitCode {
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {}", error_message(&err));
            ExitCode::FAILURE
        }
    }
}

/// Lets a closed output pipe (`mvfa-studio inspect dir | head -1`) end the process quietly,
/// as it does for other command-line tools, instead of panicking in `println!` (Rust ignores
/// SIGPIPE, so every write to the closed pipe fails). Not for the GUI, whose connections must
/// not kill it.
fn default_sigpipe() {
    #[cfg(unix)]
    // SAFETY: called once at start-up, before any thread is spawned; SIG_DFL is a valid action
    // for SIGPIPE.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Ends the process on Ctrl+C (SIGINT) or SIGTERM after removing the temporary files of the
/// atomic writes in progress ([`crate::io::export::atomic::remove_temporary_files`]), with
/// the shell's status for the signal (130, 143). The signals are blocked in every thread and
/// taken by a thread of their own with `sigwait`, so no code runs in signal context. Must run
/// before any other thread is started (threads inherit the blocked set); child processes get
/// an empty set from the standard library. Not for the GUI.
fn clean_up_on_interrupt() {
    #[cfg(unix)]
    {
        // SAFETY: the set is initialised by sigemptyset before use; pthread_sigmask and
        // sigwait get valid pointers; no other thread exists yet (see above).
        let set = unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGINT);
            libc::sigaddset(&mut set, libc::SIGTERM);
            if libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
                return;
            }
            set
        };
        let waiter = std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                loop {
                    let mut signal = 0;
                    // SAFETY: see above.
                    if unsafe { libc::sigwait(&set, &mut signal) } != 0 {
                        continue;
                    }
                    let removed = crate::io::export::atomic::remove_temporary_files();
                    let name = if signal == libc::SIGINT {
                        "interrupted"
                    } else {
                        "terminated"
                    };
                    eprintln!("\n{name}: removed {removed} unfinished output file(s)");
                    std::process::exit(128 + signal);
                }
            });
        if waiter.is_err() {
            // Without the waiter the signals must keep their default action.
            // SAFETY: as above.
            unsafe {
                libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
            }
        }
    }
}

/// The error and its causes joined with ": ", leaving out a cause whose text the message
/// already holds (errors that quote their source would otherwise repeat the OS reason).
fn error_message(err: &anyhow::Error) -> String {
    let mut message = err.to_string();
    for cause in err.chain().skip(1) {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
    }
    message
}

/// Keeps glibc's malloc from returning every large tensor buffer to the kernel.
///
/// By default glibc serves allocations above a dynamic threshold (128 KiB at start, raised to
/// the size of the largest mmapped block freed so far, at most 32 MiB) with their own `mmap`,
/// and unmaps them on `free`: each new activation of a few MiB then costs a page fault per
/// 4 KiB page, plus zeroing, on the next use. The threshold used to be raised early by
/// burn-ndarray's 16 MiB copies of transposed weights; without those copies
/// (vendor/burn-ndarray, patch 1) every ViT-L activation went through mmap, which doubled the
/// page faults of a training step and made small ops up to 3x slower. Fixed values make this
/// independent of which buffers happen to be freed first: blocks under 64 MiB (all activations
/// of batch 1, and batch 8's 43 MB attention scores) are reused from the heap, and up to
/// 128 MiB of free heap is kept. Measured against 32/64 MiB: forward at batch 8 1494 -> 1336
/// ms per image, batch 1 about 6% faster, peak RSS +30 MB (docs/perf/cpu-profile.md).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn tune_allocator() {
    // SAFETY: mallopt only changes allocator parameters; called before any other thread
    // exists. A refused value (returns 0) leaves glibc's default, which is only slower.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 64 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 128 << 20);
    }
}

/// Nothing to tune outside glibc.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn tune_allocator() {}
