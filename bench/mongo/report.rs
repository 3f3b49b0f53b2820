//! The markdown report: medians over the runs, then each run's notes.

use std::fmt::Write;

use super::phases::Measured;
use super::util::median;

pub struct Header {
    pub docs: u64,
    pub ops: u64,
    pub runs: usize,
    pub nproc: usize,
    pub doc_bytes: usize,
    pub workers: usize,
    pub server: String,
}

pub struct RunResult {
    pub copy: Measured,
    pub change_stream: Measured,
    pub oplog: Option<Measured>,
    /// Its "ceiling" is one-way's rate for the same catch-up.
    pub twoway: Option<Measured>,
    pub notes: Vec<String>,
}

/// One table row: the medians of a phase over the runs.
struct Row<'a> {
    phase: &'a str,
    unit: &'a str,
    goal: f64,
    runs: Vec<&'a Measured>,
}

impl Row<'_> {
    fn med(&self, f: impl Fn(&Measured) -> f64) -> f64 {
        median(self.runs.iter().map(|m| f(m)).collect())
    }

    fn line(&self) -> String {
        let ratio = self.med(|m| m.tandem / m.ceiling);
        let met = if ratio >= self.goal { "met" } else { "missed" };
        format!(
            "| {} | {:.0} {u} | {:.0} {u} | {ratio:.2} | ≥ {:.2}: {met} | {:.0} | {:.1} |",
            self.phase,
            self.med(|m| m.ceiling),
            self.med(|m| m.tandem),
            self.goal,
            self.med(|m| m.cpu_ms_per_10k),
            self.med(|m| m.peak_rss_mb),
            u = self.unit,
        )
    }
}

pub fn markdown(h: &Header, runs: &[RunResult]) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# tandem MongoDB benchmark\n");
    let _ = writeln!(
        s,
        "N = {} documents (~{} B of BSON each), {} change operations per apply phase, {} run(s), \
         medians shown. Machine: {} cores (nproc). Every server is {} (pure Python on WiredTiger, \
         a one-node replica set), so each ceiling is the target's own rate for the same writes by \
         a plain client: `insert_many` (unordered, 1000 per batch) for the copy; `bulkWrite` in \
         transactions of 1000 operations plus a checkpoint upsert (snapshot / majority) for the apply. \
         tandem runs with `--workers {}`: copy workers, and parallel appliers in the apply (each \
         batch of up to 1000 operations split among them by document).\n",
        h.docs, h.doc_bytes, h.ops, h.runs, h.nproc, h.server, h.workers
    );
    let _ = writeln!(
        s,
        "| phase | ceiling | tandem | tandem/ceiling | goal | tandem CPU ms per 10k | tandem peak RSS MB |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---|---:|---:|");
    let mut rows = vec![
        Row {
            phase: "copy (`--mode full`)",
            unit: "docs/s",
            goal: 0.90,
            runs: runs.iter().map(|r| &r.copy).collect(),
        },
        Row {
            phase: "catch-up apply, change stream",
            unit: "ops/s",
            goal: 0.80,
            runs: runs.iter().map(|r| &r.change_stream).collect(),
        },
    ];
    let oplog: Vec<&Measured> = runs.iter().filter_map(|r| r.oplog.as_ref()).collect();
    if !oplog.is_empty() {
        rows.push(Row {
            phase: "catch-up apply, oplog (inserts, deletes, replacements)",
            unit: "ops/s",
            goal: 0.80,
            runs: oplog,
        });
    }
    let tw: Vec<&Measured> = runs.iter().filter_map(|r| r.twoway.as_ref()).collect();
    if !tw.is_empty() {
        rows.push(Row {
            phase: "two-way, one direction loaded (change stream); ceiling: one-way, one applier",
            unit: "ops/s",
            goal: 0.90,
            runs: tw,
        });
    }
    for r in &rows {
        let _ = writeln!(s, "{}", r.line());
    }
    let _ = writeln!(
        s,
        "\nCPU is tandem's utime+stime (from /proc, up to its exit for the copy, up to the \
         marker's arrival for the apply, start-up included) per 10k documents or operations; peak \
         RSS is its VmHWM (goal: ≤ 150 MB for a 1M-document copy)."
    );
    for (i, r) in runs.iter().enumerate() {
        let _ = writeln!(s, "\n## Run {}\n", i + 1);
        for n in &r.notes {
            let _ = writeln!(s, "- {n}");
        }
    }
    s
}
