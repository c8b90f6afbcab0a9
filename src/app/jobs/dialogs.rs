//! File dialogs on a worker thread: the native dialog blocks its thread until the user
//! answers, so it never runs on the UI thread. The answer comes back as the action to apply.
use std::path::PathBuf;

use super::runner::Job;
use crate::app::action::Action;

/// A file dialog and what its answer becomes (plain data: the native dialog is made on the
/// worker).
pub struct Dialog {
    title: String,
    pick: Pick,
    filters: Vec<(String, Vec<String>)>,
    file_name: Option<String>,
    then: fn(Vec<PathBuf>) -> Action,
}

/// What the dialog asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pick {
    /// One existing file.
    File,
    /// Several existing files.
    Files,
    /// One folder.
    Folder,
    /// A file to write.
    SaveFile,
}

impl Dialog {
    /// A dialog titled `title` asking for `pick`; `then` turns the chosen paths into the
    /// action to apply (a cancelled dialog applies nothing).
    pub fn new(title: &str, pick: Pick, then: fn(Vec<PathBuf>) -> Action) -> Self {
        Self {
            title: title.to_string(),
            pick,
            filters: Vec::new(),
            file_name: None,
            then,
        }
    }

    /// Offers only files with these extensions, under `name`.
    pub fn filter(mut self, name: &str, extensions: &[&str]) -> Self {
        let extensions = extensions.iter().map(|e| e.to_string()).collect();
        self.filters.push((name.to_string(), extensions));
        self
    }

    /// The file name proposed by a save dialog.
    pub fn file_name(mut self, name: &str) -> Self {
        self.file_name = Some(name.to_string());
        self
    }

    fn native(&self) -> rfd::FileDialog {
        let mut dialog = rfd::FileDialog::new().set_title(&self.title);
        for (name, extensions) in &self.filters {
            dialog = dialog.add_filter(name, extensions);
        }
        if let Some(name) = &self.file_name {
            dialog = dialog.set_file_name(name);
        }
        dialog
    }
}

/// Shows `dialog` on a worker thread; the job's result is the action its answer asks for.
pub fn show(dialog: Dialog, repaint: impl Fn() + Send + Sync + 'static) -> Job<Option<Action>> {
    Job::spawn("Waiting for the file dialog", repaint, move |_| {
        let native = dialog.native();
        let paths: Vec<PathBuf> = match dialog.pick {
            Pick::File => native.pick_file().into_iter().collect(),
            Pick::Files => native.pick_files().unwrap_or_default(),
            Pick::Folder => native.pick_folder().into_iter().collect(),
            Pick::SaveFile => native.save_file().into_iter().collect(),
        };
        Ok((!paths.is_empty()).then(|| (dialog.then)(paths)))
    })
}
