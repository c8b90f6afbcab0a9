//! Evaluation: exact ROC AUC at image and pixel level, benchmark protocols.
pub mod auc;
pub mod fit_check;
pub mod protocol;
pub mod slice_context;
