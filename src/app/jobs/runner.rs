//! The one way the app runs background work: a worker thread per job, progress, partial
//! results and the result sent back over a channel, cooperative cancellation through a shared
//! flag. The app polls [`Job::poll`] once per frame. Partial results (`I`, e.g. each file a
//! folder scan finds) let the UI show the first items long before a large job ends.
//!
//! A job fails with a [`JobError`]: the library's typed error itself (its source chain kept),
//! turned into words only where the user reads it.
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::thread::JoinHandle;

use eframe::egui;

/// Why a job failed: the error the work returned (any library error, or a message), or a
/// panic of the worker.
pub struct JobError(Box<dyn std::error::Error + Send + Sync>);

impl JobError {
    /// The job stopped because it was asked to.
    pub fn cancelled() -> Self {
        "cancelled".into()
    }

    /// What the user reads: the error and each of its causes, "error: cause: cause".
    pub fn message(&self) -> String {
        let mut message = self.0.to_string();
        let mut source = self.0.source();
        while let Some(cause) = source {
            let text = cause.to_string();
            if !message.contains(&text) {
                message.push_str(": ");
                message.push_str(&text);
            }
            source = cause.source();
        }
        message
    }
}

/// Any library error (kept whole, with its causes) or a message.
impl<E: Into<Box<dyn std::error::Error + Send + Sync>>> From<E> for JobError {
    fn from(error: E) -> Self {
        Self(error.into())
    }
}

impl fmt::Display for JobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message())
    }
}

impl fmt::Debug for JobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "JobError({:?})", self.message())
    }
}

impl PartialEq for JobError {
    fn eq(&self, other: &Self) -> bool {
        self.message() == other.message()
    }
}

impl Clone for JobError {
    fn clone(&self) -> Self {
        self.message().into()
    }
}

/// What a job's work returns.
pub type JobResult<T> = Result<T, JobError>;

/// A callback that wakes the UI after a job event (egui's `request_repaint`).
pub fn repaint(ctx: &egui::Context) -> impl Fn() + Send + Sync + 'static {
    let ctx = ctx.clone();
    move || ctx.request_repaint()
}

/// Handed to the worker: report progress, check for cancellation.
#[derive(Clone)]
pub struct JobContext<T, I = ()> {
    sender: Sender<JobEvent<T, I>>,
    cancelled: Arc<AtomicBool>,
    repaint: Arc<dyn Fn() + Send + Sync>,
}

impl<T, I> JobContext<T, I> {
    /// `fraction` in 0..=1 (or `None` when unknown) and a short message.
    pub fn progress(&self, fraction: Option<f32>, message: impl Into<String>) {
        let _ = self.sender.send(JobEvent::Progress {
            fraction,
            message: message.into(),
        });
        (self.repaint)();
    }

    /// Hands one partial result to the UI (it appears after the next [`Job::poll`]).
    pub fn emit(&self, item: I) {
        let _ = self.sender.send(JobEvent::Item(item));
        (self.repaint)();
    }

    /// The cancel flag itself, for library calls that poll an `AtomicBool`.
    pub fn cancel_flag(&self) -> &AtomicBool {
        &self.cancelled
    }

    /// Whether the UI asked the job to stop; the worker should check it regularly and return.
    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Relaxed)
    }
}

/// A message from the worker thread to the UI.
pub enum JobEvent<T, I = ()> {
    /// A progress report.
    Progress {
        /// Share done, in 0..=1, or `None` when unknown.
        fraction: Option<f32>,
        /// What the worker is doing, in a few words.
        message: String,
    },
    /// One partial result.
    Item(I),
    /// The job's outcome (sent once, last; a panic arrives as an error).
    Finished(JobResult<T>),
}

/// What the UI sees of a job after polling.
#[derive(Debug, Clone, PartialEq)]
pub enum JobStatus<T> {
    /// The job has not finished yet.
    Running {
        /// Share done, in 0..=1, or `None` when unknown.
        fraction: Option<f32>,
        /// What the worker is doing, in a few words.
        message: String,
    },
    /// The job finished with its result.
    Succeeded(T),
    /// The job failed (or panicked); the error says why.
    Failed(JobError),
    /// The job stopped with an error after [`Job::cancel`] was called.
    Cancelled,
}

/// A running or finished background job producing a `T`, and partial results `I` on the way.
pub struct Job<T, I = ()> {
    /// What the job does, shown to the user.
    pub title: String,
    receiver: Receiver<JobEvent<T, I>>,
    cancelled: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
    last_progress: (Option<f32>, String),
    items: Vec<I>,
}

impl<T: Send + 'static, I: Send + 'static> Job<T, I> {
    /// Starts `work` on a new thread. `repaint` is called after each event so that the UI
    /// wakes up (pass `ctx.request_repaint()` from egui).
    pub fn spawn(
        title: impl Into<String>,
        repaint: impl Fn() + Send + Sync + 'static,
        work: impl FnOnce(&JobContext<T, I>) -> JobResult<T> + Send + 'static,
    ) -> Self {
        let (sender, receiver) = mpsc::channel();
        let cancelled = Arc::new(AtomicBool::new(false));
        let ctx = JobContext {
            sender,
            cancelled: cancelled.clone(),
            repaint: Arc::new(repaint),
        };
        let handle = std::thread::spawn(move || {
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(&ctx)))
                .unwrap_or_else(|panic| Err(panic_message(&panic).into()));
            let _ = ctx.sender.send(JobEvent::Finished(result));
            (ctx.repaint)();
        });
        Self {
            title: title.into(),
            receiver,
            cancelled,
            handle: Some(handle),
            last_progress: (None, "starting".into()),
            items: Vec::new(),
        }
    }

    /// The partial results received by the polls so far, oldest first; they are handed over
    /// once.
    pub fn take_items(&mut self) -> Vec<I> {
        std::mem::take(&mut self.items)
    }

    /// The latest progress report: fraction (when known) and message.
    pub fn progress(&self) -> (Option<f32>, &str) {
        (self.last_progress.0, &self.last_progress.1)
    }

    /// Asks the worker to stop at its next check.
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::Relaxed);
    }

    /// Drains the channel; returns the latest status. A finished job stays finished.
    pub fn poll(&mut self) -> JobStatus<T> {
        loop {
            match self.receiver.try_recv() {
                Ok(JobEvent::Progress { fraction, message }) => {
                    self.last_progress = (fraction, message)
                }
                Ok(JobEvent::Item(item)) => self.items.push(item),
                Ok(JobEvent::Finished(result)) => {
                    if let Some(handle) = self.handle.take() {
                        let _ = handle.join();
                    }
                    return match result {
                        Err(_) if self.cancelled.load(Ordering::Relaxed) => JobStatus::Cancelled,
                        Ok(value) => JobStatus::Succeeded(value),
                        Err(message) => JobStatus::Failed(message),
                    };
                }
                Err(TryRecvError::Empty) => {
                    return JobStatus::Running {
                        fraction: self.last_progress.0,
                        message: self.last_progress.1.clone(),
                    };
                }
                Err(TryRecvError::Disconnected) => {
                    return JobStatus::Failed("the worker stopped without a result".into());
                }
            }
        }
    }

    /// Blocks until the job ends (for tests and the CLI).
    pub fn wait(mut self) -> JobStatus<T> {
        loop {
            match self.poll() {
                JobStatus::Running { .. } => {
                    std::thread::sleep(std::time::Duration::from_millis(5))
                }
                done => return done,
            }
        }
    }
}

/// A job that runs `work` on each of `paths` in order and hands over each result as it comes
/// (with progress "i of n files"; cancellation is checked between files).
pub fn each_file<I: Send + 'static>(
    title: &str,
    repaint: impl Fn() + Send + Sync + 'static,
    paths: Vec<PathBuf>,
    work: impl Fn(&Path) -> I + Send + 'static,
) -> Job<(), (PathBuf, I)> {
    Job::spawn(title, repaint, move |job| {
        let total = paths.len();
        for (i, path) in paths.into_iter().enumerate() {
            if job.is_cancelled() {
                return Err(JobError::cancelled());
            }
            job.progress(
                Some(i as f32 / total as f32),
                format!("{} of {total} files", i + 1),
            );
            let result = work(&path);
            job.emit((path, result));
        }
        Ok(())
    })
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    let detail = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown cause".into());
    format!("internal error in the background job: {detail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_progress_and_result() {
        let job: Job<i32> = Job::spawn(
            "sum",
            || {},
            |ctx| {
                ctx.progress(Some(0.5), "half");
                Ok(1 + 1)
            },
        );
        assert_eq!(job.wait(), JobStatus::Succeeded(2));
    }

    #[test]
    fn partial_results_arrive_before_the_end() {
        let (go, wait) = std::sync::mpsc::channel::<()>();
        let mut job: Job<usize, u32> = Job::spawn(
            "count",
            || {},
            move |ctx| {
                ctx.emit(7);
                let _ = wait.recv();
                Ok(1)
            },
        );
        let mut items = Vec::new();
        for _ in 0..1000 {
            assert!(matches!(job.poll(), JobStatus::Running { .. }));
            items.extend(job.take_items());
            if !items.is_empty() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        assert_eq!(items, vec![7]);
        go.send(()).unwrap();
        assert_eq!(job.wait(), JobStatus::Succeeded(1));
    }

    #[test]
    fn cancellation_is_reported_as_cancelled() {
        let job: Job<()> = Job::spawn(
            "spin",
            || {},
            |ctx| {
                while !ctx.is_cancelled() {
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
                Err("cancelled".into())
            },
        );
        job.cancel();
        assert_eq!(job.wait(), JobStatus::Cancelled);
    }

    #[test]
    fn a_panicking_worker_becomes_an_error() {
        let job: Job<()> = Job::spawn("boom", || {}, |_| panic!("bad tensor"));
        match job.wait() {
            JobStatus::Failed(error) => {
                assert!(error.message().contains("bad tensor"), "{error}")
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}
