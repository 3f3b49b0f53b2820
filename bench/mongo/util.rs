//! Errors as messages, and bounded polling.

use std::fmt::Display;

/// Every expected failure is a message for the operator: `main` prints it and exits 1.
pub type Result<T> = std::result::Result<T, String>;

/// Adds what was being done to an error.
pub trait Ctx<T> {
    fn ctx(self, what: impl Display) -> Result<T>;
}

impl<T, E: Display> Ctx<T> for std::result::Result<T, E> {
    fn ctx(self, what: impl Display) -> Result<T> {
        self.map_err(|e| format!("{what}: {e}"))
    }
}

/// The last `n` lines of a log file, for error messages.
pub fn log_tail(path: &std::path::Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The median (upper one of an even count); NaN for no values.
pub fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
