//! Domain handlers: what a command or action does, and how each domain applies what its jobs
//! report. [`dispatch`](super::dispatch) calls them; they call the jobs and each other
//! downwards (view and files first, project last) and never call back into dispatch.
pub mod files;
pub mod labels;
pub mod model;
pub mod pacs;
pub mod project;
pub mod view;
pub mod weights;
