//! `cargo bench --bench harness -- [--quick] [--scenario NAME]… [--runs N]`
//!
//! tandem against a native Redis replica; see docs/BENCHMARKS.md. Needs the release
//! binary: run `cargo build --release` first. The report is printed and written to
//! `target/bench-report.md`.

#[path = "harness/mod.rs"]
mod harness;

use std::path::PathBuf;
use std::process::ExitCode;

fn usage() -> ExitCode {
    eprintln!(
        "usage: cargo bench --bench harness -- [--quick] [--scenario NAME]… [--runs N] [--tandem PATH]\n\
         scenarios: {}",
        harness::SCENARIOS.join(", ")
    );
    ExitCode::FAILURE
}

fn main() -> ExitCode {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut quick = false;
    let mut runs = None;
    let mut only: Vec<String> = Vec::new();
    let mut bin = root.join("target/release/tandem");
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--quick" => quick = true,
            "--runs" => match args.next().and_then(|v| v.parse().ok()) {
                Some(n) if n > 0 => runs = Some(n),
                _ => return usage(),
            },
            "--scenario" => match args.next() {
                Some(s) if harness::SCENARIOS.contains(&s.as_str()) => only.push(s),
                _ => return usage(),
            },
            "--tandem" => match args.next() {
                Some(p) => bin = PathBuf::from(p),
                None => return usage(),
            },
            // `cargo bench` passes `--bench` to every bench target.
            "--bench" => {}
            _ => return usage(),
        }
    }
    if !bin.exists() {
        eprintln!(
            "note: {} is missing: run `cargo build --release` first; tandem columns will be n/a",
            bin.display()
        );
    }
    let mut cfg = harness::Config::new(quick, bin);
    if let Some(n) = runs {
        cfg.runs = n;
    }
    if !only.is_empty() {
        cfg.only = Some(only);
    }
    let report = harness::run(&cfg);
    let md = harness::report::markdown(&report);
    println!("{md}");
    let path = root.join("target/bench-report.md");
    if let Err(e) = std::fs::write(&path, &md) {
        eprintln!("cannot write {}: {e}", path.display());
        return ExitCode::FAILURE;
    }
    eprintln!("report written to {}", path.display());
    ExitCode::SUCCESS
}
