//! Opening files and moving through them: the browser's roots and scan, the current image,
//! the selection, and the loader that decodes what the viewer needs (current file first,
//! then its neighbours) within the memory budget.
use std::path::{Path, PathBuf};

use eframe::egui;

use crate::app::action::{Action, SelectMode};
use crate::app::commands::Command;
use crate::app::jobs::Jobs;
use crate::app::jobs::dialogs::{Dialog, Pick};
use crate::app::jobs::files::{self, LoadedFile, Thumbnail};
use crate::app::jobs::runner::{JobStatus, repaint};
use crate::app::state::AppState;
use crate::app::state::labels::ImageKey;
use crate::io::image::ImageStack;

/// Frames skipped by Page Up / Page Down.
const PAGE: isize = 10;

/// Runs a file or navigation command; false when `command` is not one.
pub fn run(state: &mut AppState, jobs: &mut Jobs, command: Command, ctx: &egui::Context) -> bool {
    match command {
        Command::OpenFiles => jobs.ask(
            Dialog::new(
                "Open images (DICOM, PNG, JPEG, TIFF, BMP, NIfTI) or a DICOMDIR",
                Pick::Files,
                Action::Open,
            ),
            ctx,
        ),
        Command::OpenFolder => jobs.ask(
            Dialog::new("Open a folder of images", Pick::Folder, Action::Open),
            ctx,
        ),
        Command::NextFrame => step(state, jobs, 1, ctx),
        Command::PreviousFrame => step(state, jobs, -1, ctx),
        Command::PageForward => step(state, jobs, PAGE, ctx),
        Command::PageBack => step(state, jobs, -PAGE, ctx),
        Command::FirstFrame => step(state, jobs, isize::MIN / 2, ctx),
        Command::LastFrame => step(state, jobs, isize::MAX / 2, ctx),
        _ => return false,
    }
    true
}

/// Applies a file or navigation action; false when `action` is not one.
pub fn apply(state: &mut AppState, jobs: &mut Jobs, action: &Action, ctx: &egui::Context) -> bool {
    match action {
        Action::Show(key) => show(state, jobs, key.clone(), ctx),
        Action::Select { path, mode } => select(state, jobs, path.clone(), *mode, ctx),
        Action::Step(n) => step(state, jobs, *n, ctx),
        Action::GoTo(index) => {
            if let Some(key) = state.sequence().get(*index).cloned() {
                show(state, jobs, key, ctx);
            }
        }
        _ => return false,
    }
    true
}

/// Adds `paths` to the browser's roots and rescans them.
pub fn open(state: &mut AppState, jobs: &mut Jobs, paths: Vec<PathBuf>, ctx: &egui::Context) {
    if paths.is_empty() {
        return;
    }
    for p in &paths {
        state.persisted.remember(p);
        if !state.browser.roots.contains(p) {
            state.browser.roots.push(p.clone());
        }
    }
    if let Some(job) = jobs.scan.take() {
        job.cancel();
    }
    // Rescan every root: a cancelled scan may have left earlier roots incomplete (the browser
    // ignores files it already holds).
    jobs.scan = Some(files::scan(state.browser.roots.clone(), repaint(ctx)));
}

/// Makes `key` the current image (fitting the view when the series changes).
pub fn show(state: &mut AppState, jobs: &mut Jobs, key: ImageKey, ctx: &egui::Context) {
    let group_of = |state: &AppState, path: &Path| state.browser.locate(path).map(|(g, _)| g);
    let old_group = state
        .viewer
        .current
        .as_ref()
        .and_then(|k| group_of(state, &k.path));
    if old_group.is_none() || old_group != group_of(state, &key.path) {
        state.viewer.fit = true;
        state.viewer.pan = [0.0, 0.0];
    }
    state.labels.end_stroke();
    state.selection = vec![key.path.clone()];
    state.viewer.current = Some(key);
    state.viewer.opened_by_app = false;
    ensure_loading(state, jobs, ctx);
}

/// When the image the app opened on cannot be read, moves on to the next file of its series
/// or folder that is not known to be unreadable: a series whose first file is damaged opens
/// on an image, and the damaged file stays listed (and shown, with why, when the user picks it).
fn pass_over_an_unreadable_opening(state: &mut AppState, jobs: &mut Jobs, ctx: &egui::Context) {
    if !state.viewer.opened_by_app {
        return;
    }
    let Some(key) = state.viewer.current.clone() else {
        return;
    };
    let unreadable =
        |state: &AppState, path: &Path| state.browser.unreadable.iter().any(|(p, _)| p == path);
    if !unreadable(state, &key.path) {
        return;
    }
    let Some((g, i)) = state.browser.locate(&key.path) else {
        return;
    };
    let next = state.browser.groups[g].items[i + 1..]
        .iter()
        .map(|item| item.path.clone())
        .find(|path| !unreadable(state, path));
    if let Some(path) = next {
        show(state, jobs, ImageKey { path, frame: 0 }, ctx);
        state.viewer.opened_by_app = true;
    }
}

fn select(
    state: &mut AppState,
    jobs: &mut Jobs,
    path: PathBuf,
    mode: SelectMode,
    ctx: &egui::Context,
) {
    match mode {
        SelectMode::Replace => show(state, jobs, ImageKey { path, frame: 0 }, ctx),
        SelectMode::Toggle => {
            if let Some(i) = state.selection.iter().position(|p| *p == path) {
                state.selection.remove(i);
            } else {
                state.selection.push(path);
            }
        }
        SelectMode::Extend => extend_selection(state, path),
    }
}

/// Selects every file from the first selected one to `path`, in browser order.
fn extend_selection(state: &mut AppState, path: PathBuf) {
    let order: Vec<&PathBuf> = state
        .browser
        .groups
        .iter()
        .flat_map(|g| g.items.iter().map(|i| &i.path))
        .collect();
    let anchor = state.selection.first().cloned();
    let a = anchor.and_then(|a| order.iter().position(|p| **p == a));
    let b = order.iter().position(|p| **p == path);
    if let (Some(a), Some(b)) = (a, b) {
        let (lo, hi) = (a.min(b), a.max(b));
        let mut selection: Vec<PathBuf> = order[lo..=hi].iter().map(|p| (*p).clone()).collect();
        // Keep the anchor first so that a further Shift+click extends from it.
        if a > b {
            selection.reverse();
        }
        state.selection = selection;
    } else {
        state.selection = vec![path];
    }
}

/// Moves `n` frames through the current series (clamped at its ends).
pub fn step(state: &mut AppState, jobs: &mut Jobs, n: isize, ctx: &egui::Context) {
    let sequence = state.sequence();
    let Some(current) = &state.viewer.current else {
        return;
    };
    let Some(at) = sequence.iter().position(|k| k == current) else {
        return;
    };
    let to = (at as isize)
        .saturating_add(n)
        .clamp(0, sequence.len() as isize - 1) as usize;
    if to != at {
        let key = sequence[to].clone();
        state.labels.end_stroke();
        state.selection = vec![key.path.clone()];
        state.viewer.current = Some(key);
        ensure_loading(state, jobs, ctx);
    }
}

/// Starts the loader when the current file is not decoded yet: the current file first, then
/// the rest of its series outward from it, so that scrolling finds its neighbours ready.
pub fn ensure_loading(state: &mut AppState, jobs: &mut Jobs, ctx: &egui::Context) {
    let Some(current) = state.viewer.current.as_ref().map(|k| k.path.clone()) else {
        return;
    };
    let unreadable =
        |state: &AppState, p: &Path| state.browser.unreadable.iter().any(|(u, _)| u == p);
    if state.images.contains_key(&current)
        || unreadable(state, &current)
        || (jobs.load.is_some() && jobs.load_queue.contains(&current))
    {
        return;
    }
    let mut queue = vec![current.clone()];
    if let Some((g, i)) = state.browser.locate(&current) {
        let items = &state.browser.groups[g].items;
        for d in 1..items.len() {
            for j in [i.checked_add(d), i.checked_sub(d)].into_iter().flatten() {
                if let Some(item) = items.get(j) {
                    queue.push(item.path.clone());
                }
            }
        }
    }
    queue.retain(|p| !state.images.contains_key(p) && !unreadable(state, p));
    if let Some(job) = jobs.load.take() {
        job.cancel();
    }
    jobs.load_queue.clone_from(&queue);
    jobs.load = Some(files::load(queue, repaint(ctx)));
}

/// Drops every opened file, decoded image and preview, and what the file jobs still hand
/// over (they belong to the previous session).
pub fn close_all(state: &mut AppState, jobs: &mut Jobs) {
    jobs.cancel_file_jobs();
    jobs.scan = None;
    jobs.load = None;
    jobs.thumbnails = None;
    jobs.thumbnails_tried.clear();
    state.browser.clear();
    state.images.clear();
    state.thumbnails.clear();
    state.selection.clear();
}

/// Applies what the scan, loader and preview jobs reported since the last frame.
pub fn poll(state: &mut AppState, jobs: &mut Jobs, ctx: &egui::Context) {
    poll_scan(state, jobs, ctx);
    poll_result_objects(state, jobs, ctx);
    poll_load(state, jobs, ctx);
    poll_thumbnails(state, jobs, ctx);
    pass_over_an_unreadable_opening(state, jobs, ctx);
    // A frame index beyond what the loaded file holds (a NIfTI volume counted as one frame
    // before loading, a project from another version of the file) falls back to the last one.
    if let Some(key) = state.viewer.current.clone()
        && let Some(stack) = state.images.get(&key.path)
        && key.frame >= stack.frames.len()
    {
        state.viewer.current = Some(ImageKey {
            frame: stack.frames.len() - 1,
            ..key
        });
    }
}

fn poll_scan(state: &mut AppState, jobs: &mut Jobs, ctx: &egui::Context) {
    let Some(job) = jobs.scan.as_mut() else {
        return;
    };
    let status = job.poll();
    let items = job.take_items();
    state.browser.add(items);
    if state.viewer.current.is_none()
        && let Some(item) = state.browser.groups.first().and_then(|g| g.items.first())
    {
        let key = ImageKey {
            path: item.path.clone(),
            frame: 0,
        };
        show(state, jobs, key, ctx);
        state.viewer.opened_by_app = true;
    }
    let done = match status {
        JobStatus::Running { .. } => None,
        JobStatus::Succeeded(()) => Some(format!(
            "{} files in the browser, {} unreadable",
            state.browser.len(),
            state.browser.unreadable.len()
        )),
        JobStatus::Cancelled => Some("Reading files was cancelled".into()),
        JobStatus::Failed(e) => Some(e.message()),
    };
    if let Some(message) = done {
        state.log.push(message);
        jobs.scan = None;
        // Files found after the viewer asked for its series are loaded now.
        ensure_loading(state, jobs, ctx);
    }
}

/// Reads the result objects the scan found (one job at a time; new ones wait for the next),
/// and keeps what it read for the viewer to lay over their sources.
fn poll_result_objects(state: &mut AppState, jobs: &mut Jobs, ctx: &egui::Context) {
    if let Some(job) = jobs.result_objects.as_mut() {
        let status = job.poll();
        for (path, read) in job.take_items() {
            match read {
                Ok(Some(object)) => {
                    state.log.push(format!(
                        "Read the result object {} ({} frames)",
                        path.display(),
                        object.frames.len()
                    ));
                    state.imported.add(object);
                }
                Ok(None) => state
                    .imported
                    .failed
                    .push((path, "not a Parametric Map or Segmentation".into())),
                Err(e) => {
                    state.log.push(e.to_string());
                    state.imported.failed.push((path, e.message));
                }
            }
        }
        if matches!(status, JobStatus::Running { .. }) {
            return;
        }
        jobs.result_objects = None;
    }
    let waiting: Vec<PathBuf> = state
        .browser
        .result_objects
        .iter()
        .filter(|p| !state.imported.knows(p))
        .cloned()
        .collect();
    if !waiting.is_empty() {
        jobs.result_objects = Some(files::read_result_objects(waiting, repaint(ctx)));
    }
}

fn poll_load(state: &mut AppState, jobs: &mut Jobs, ctx: &egui::Context) {
    let Some(job) = jobs.load.as_mut() else {
        return;
    };
    let status = job.poll();
    let items: Vec<LoadedFile> = job.take_items();
    for (path, result) in items {
        match result {
            Ok((stack, hash)) => {
                state.browser.set_frames(&path, stack.frames.len());
                state.project.hashes.insert(path.clone(), hash);
                state.images.insert(path, stack);
            }
            Err(reason) => {
                state.log.push(format!("{}: {reason}", path.display()));
                state.browser.add_unreadable(path, reason.to_string());
            }
        }
    }
    let over_budget = keep_within_budget(state);
    if over_budget || !matches!(status, JobStatus::Running { .. }) {
        if let JobStatus::Failed(e) = status {
            state.log.push(e.message());
        }
        if let Some(job) = jobs.load.take() {
            job.cancel();
        }
        jobs.load_queue.clear();
        ensure_loading(state, jobs, ctx);
    }
}

/// Drops decoded files, farthest from the current image first (other series before its own
/// neighbours), until they fit in the image budget; says whether the budget was exceeded, in
/// which case the loader should stop.
fn keep_within_budget(state: &mut AppState) -> bool {
    let bytes = |s: &ImageStack| s.frames.iter().map(|f| f.data.len() * 4).sum::<usize>();
    let mut total: usize = state.images.values().map(|s| bytes(s)).sum();
    if total <= state.image_budget {
        return false;
    }
    let current = state.viewer.current.as_ref().map(|k| k.path.clone());
    let here = current.as_deref().and_then(|c| state.browser.locate(c));
    let mut others: Vec<(usize, PathBuf)> = state
        .images
        .keys()
        .filter(|p| Some(*p) != current.as_ref())
        .map(|p| {
            let distance = match (here, state.browser.locate(p)) {
                (Some((g, i)), Some((h, j))) if g == h => i.abs_diff(j),
                _ => usize::MAX,
            };
            (distance, p.clone())
        })
        .collect();
    others.sort_by_key(|o| std::cmp::Reverse(o.0));
    for (_, path) in others {
        if total <= state.image_budget {
            break;
        }
        if let Some(stack) = state.images.remove(&path) {
            total -= bytes(&stack);
        }
    }
    true
}

/// Collects the previews made so far and, once no scan runs, starts making the missing ones
/// (in browser order). A file that cannot be read is listed as unreadable right away.
fn poll_thumbnails(state: &mut AppState, jobs: &mut Jobs, ctx: &egui::Context) {
    if let Some(job) = jobs.thumbnails.as_mut() {
        let status = job.poll();
        let items: Vec<Thumbnail> = job.take_items();
        for (path, result) in items {
            match result {
                Ok(image) => {
                    state.thumbnails.insert(path, image);
                }
                Err(reason) => state.browser.add_unreadable(path, reason.to_string()),
            }
        }
        if !matches!(status, JobStatus::Running { .. }) {
            jobs.thumbnails = None;
        }
        return;
    }
    if jobs.scan.is_some() {
        return;
    }
    let missing: Vec<PathBuf> = state
        .browser
        .groups
        .iter()
        .flat_map(|g| &g.items)
        .map(|i| i.path.clone())
        .filter(|p| !jobs.thumbnails_tried.contains(p))
        .collect();
    if missing.is_empty() {
        return;
    }
    jobs.thumbnails_tried.extend(missing.iter().cloned());
    jobs.thumbnails = Some(files::thumbnails(missing, repaint(ctx)));
}
