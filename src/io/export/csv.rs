//! Per-image score tables as RFC 4180 CSV: header `path,<score columns>`, CRLF line ends,
//! fields quoted when they contain a comma, a quote, CR/LF or leading/trailing spaces (quotes
//! doubled inside). Scores use the shortest decimal that reads back to the same f64; a missing
//! score is an empty field, a NaN is `NaN`.
use std::path::Path;

use super::ExportError;
use super::atomic::write_atomically;

/// One image's row.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoreRow {
    /// The image's path as written in the `path` column.
    pub path: String,
    /// One entry per score column (`None`: not computed).
    pub scores: Vec<Option<f64>>,
}

/// Quotes a field per RFC 4180 when needed.
pub fn quote_field(field: &str) -> String {
    let needs = field.contains([',', '"', '\r', '\n'])
        || field.starts_with(char::is_whitespace)
        || field.ends_with(char::is_whitespace);
    if needs {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field.to_string()
    }
}

/// The CSV text for `rows` under the header `path,<columns>`.
pub fn scores_csv_string(columns: &[&str], rows: &[ScoreRow]) -> Result<String, ExportError> {
    let mut s = String::new();
    let header: Vec<String> = std::iter::once("path")
        .chain(columns.iter().copied())
        .map(quote_field)
        .collect();
    s.push_str(&header.join(","));
    s.push_str("\r\n");
    for (i, row) in rows.iter().enumerate() {
        if row.scores.len() != columns.len() {
            return Err(ExportError::Invalid(format!(
                "CSV row {} ({}) has {} scores for {} columns",
                i + 1,
                row.path,
                row.scores.len(),
                columns.len()
            )));
        }
        s.push_str(&quote_field(&row.path));
        for v in &row.scores {
            s.push(',');
            if let Some(v) = v {
                s.push_str(&v.to_string());
            }
        }
        s.push_str("\r\n");
    }
    Ok(s)
}

/// Writes the score table atomically (UTF-8, no BOM).
pub fn write_scores_csv(
    path: &Path,
    columns: &[&str],
    rows: &[ScoreRow],
) -> Result<(), ExportError> {
    let text = scores_csv_string(columns, rows)?;
    write_atomically(path, |w| Ok(w.write_all(text.as_bytes())?))
}
