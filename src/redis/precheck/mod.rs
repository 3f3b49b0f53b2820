//! `tandem redis precheck`: what would fail or go wrong before anything is written.
//! Each item passes, warns or fails with a one-line reason and a fix. `redis sync` and
//! `redis twoway` run it briefly at start and stop on a failing item.
//!
//! `checks.rs` holds the items; this file the report and its rendering.

mod checks;

use serde::Serialize;

use crate::redis::url::Endpoint;
pub use checks::run;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Pass,
    Warn,
    Fail,
}

#[derive(Debug, Clone, Serialize)]
pub struct Item {
    /// A stable name for automation: `reach.source`, `maxmemory-policy`, …
    pub name: String,
    pub verdict: Verdict,
    pub reason: String,
    /// What to do about it (empty when it passes).
    pub fix: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Use {
    /// One-way: the source is replicated into the target.
    Sync,
    /// Two-way: each side is also the other's source (DUMP for conflicts).
    TwoWay,
}

pub struct PrecheckConfig {
    pub source: Endpoint,
    pub target: Endpoint,
    pub what: Use,
    /// The sync's db filter and map (`--include-db`, `--db-map`…); none: every db as is.
    pub filter: crate::redis::filter::FilterConfig,
}

#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub items: Vec<Item>,
}

impl Report {
    fn add(&mut self, name: &str, verdict: Verdict, reason: String, fix: &str) {
        self.items.push(Item {
            name: name.to_string(),
            verdict,
            reason,
            fix: fix.to_string(),
        });
    }

    pub fn pass(&mut self, name: &str, reason: String) {
        self.add(name, Verdict::Pass, reason, "");
    }

    pub fn warn(&mut self, name: &str, reason: String, fix: &str) {
        self.add(name, Verdict::Warn, reason, fix);
    }

    pub fn fail(&mut self, name: &str, reason: String, fix: &str) {
        self.add(name, Verdict::Fail, reason, fix);
    }

    pub fn failed(&self) -> impl Iterator<Item = &Item> {
        self.items.iter().filter(|i| i.verdict == Verdict::Fail)
    }

    pub fn text(&self) -> String {
        let mut out = String::new();
        for i in &self.items {
            let tag = match i.verdict {
                Verdict::Pass => "PASS",
                Verdict::Warn => "WARN",
                Verdict::Fail => "FAIL",
            };
            out.push_str(&format!("{tag} {}: {}", i.name, i.reason));
            if !i.fix.is_empty() {
                out.push_str(&format!(" (fix: {})", i.fix));
            }
            out.push('\n');
        }
        out
    }

    pub fn json(&self) -> String {
        serde_json::json!({
            "ok": self.failed().next().is_none(),
            "items": self.items,
        })
        .to_string()
    }
}
