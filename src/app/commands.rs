//! User commands and their keyboard shortcuts. Menus, buttons and shortcuts all go through
//! [`Command`] so that every action has one implementation.
use eframe::egui::{Key, KeyboardShortcut, Modifiers};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Choose a CLIP weights file and load it in the background.
    OpenWeights,
    /// Cancel the running background job, if any.
    CancelJob,
    /// Toggle the "always use the CPU" setting (takes effect at the next start).
    ToggleForceCpu,
    Quit,
}

impl Command {
    pub const ALL: [Command; 4] = [
        Command::OpenWeights,
        Command::CancelJob,
        Command::ToggleForceCpu,
        Command::Quit,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Command::OpenWeights => "Open CLIP weights…",
            Command::CancelJob => "Cancel job",
            Command::ToggleForceCpu => "Always use the CPU",
            Command::Quit => "Quit",
        }
    }

    pub fn shortcut(self) -> Option<KeyboardShortcut> {
        match self {
            Command::OpenWeights => Some(KeyboardShortcut::new(Modifiers::COMMAND, Key::O)),
            Command::CancelJob => Some(KeyboardShortcut::new(Modifiers::NONE, Key::Escape)),
            Command::ToggleForceCpu => None,
            Command::Quit => Some(KeyboardShortcut::new(Modifiers::COMMAND, Key::Q)),
        }
    }
}
