//! `cargo bench --bench mongo -- [--docs N] [--ops N] [--runs R] [--tandem PATH] [--no-oplog]`
//!
//! tandem's MongoDB copy and catch-up apply against the target's own rate for the same
//! writes (the server, secantus, is slow, so it is the ceiling). Needs the release
//! binary (`cargo build --release --bin tandem`) and secantusd-py (scripts/servers.sh).
//! The report is printed and written to `target/bench-mongo.md`; tandem's logs of the
//! last run stay in `target/bench-mongo/`.

#[path = "mongo/data.rs"]
mod data;
#[path = "mongo/phases.rs"]
mod phases;
#[path = "mongo/procfs.rs"]
mod procfs;
#[path = "mongo/report.rs"]
mod report;
#[path = "mongo/scrape.rs"]
mod scrape;
#[path = "mongo/server.rs"]
mod server;
#[path = "mongo/tandem.rs"]
mod tandem;
#[path = "mongo/twoway.rs"]
mod twoway;
#[path = "mongo/util.rs"]
mod util;

use std::path::PathBuf;
use std::process::ExitCode;

use data::{Mix, Plan};
use phases::{Fetch, Rig};
use report::{Header, RunResult};
use util::{Ctx, Result};

const USAGE: &str = "usage: cargo bench --bench mongo -- [--docs N (100000)] [--ops N (50000)] \
                     [--runs R (1)] [--workers N (4)] [--tandem PATH (target/release/tandem)] [--no-oplog] [--no-twoway]";

struct Config {
    docs: u64,
    ops: u64,
    runs: usize,
    workers: usize,
    oplog: bool,
    twoway: bool,
    tandem: PathBuf,
    root: PathBuf,
}

fn positive(v: Option<String>, flag: &str) -> Result<u64> {
    match v.as_deref().map(str::parse::<u64>) {
        Some(Ok(n)) if n > 0 => Ok(n),
        _ => Err(format!("{flag} needs a positive number\n{USAGE}")),
    }
}

fn parse_args() -> Result<Config> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut c = Config {
        docs: 100_000,
        ops: 50_000,
        runs: 1,
        workers: 4,
        oplog: true,
        twoway: true,
        tandem: root.join("target/release/tandem"),
        root,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--docs" => c.docs = positive(args.next(), "--docs")?,
            "--ops" => c.ops = positive(args.next(), "--ops")?,
            "--runs" => c.runs = positive(args.next(), "--runs")? as usize,
            "--workers" => c.workers = positive(args.next(), "--workers")? as usize,
            "--tandem" => c.tandem = args.next().ok_or(USAGE)?.into(),
            "--no-oplog" => c.oplog = false,
            "--no-twoway" => c.twoway = false,
            // `cargo bench` passes `--bench` to every bench target.
            "--bench" => {}
            _ => return Err(format!("unknown argument {a:?}\n{USAGE}")),
        }
    }
    check(&c)?;
    Ok(c)
}

fn check(c: &Config) -> Result<()> {
    if !c.tandem.exists() {
        return Err(format!(
            "{} is missing: run `cargo build --release --bin tandem` first",
            c.tandem.display()
        ));
    }
    // A quarter of the changes delete a loaded document; they must not run out.
    let phases = 1 + u64::from(c.oplog) + 2 * u64::from(c.twoway);
    if !Plan::new(c.docs).room(c.ops * phases) {
        return Err(format!(
            "--ops {} deletes more documents than --docs {} holds: use at most {} ops",
            c.ops,
            c.docs,
            4 * (c.docs - 1) / phases
        ));
    }
    Ok(())
}

/// One run on fresh servers (dropped, so killed, at the end).
async fn run_once(
    c: &Config,
    docs: &[mongodb::bson::RawDocumentBuf],
    k: usize,
) -> Result<RunResult> {
    let rig = Rig::start(&c.tandem, c.root.join("target/bench-mongo")).await?;
    let mut plan = Plan::new(c.docs);
    eprintln!("run {k}: copy of {} documents", c.docs);
    let (copy, count) = phases::copy(&rig, docs, c.workers).await?;
    eprintln!(
        "run {k}: catch-up apply of {} changes, change stream",
        c.ops
    );
    let cs = phases::apply(
        &rig,
        Fetch::ChangeStream,
        &plan.changes(c.ops, Mix::Updates),
        c.workers,
    )
    .await?;
    let oplog = if c.oplog {
        eprintln!("run {k}: catch-up apply of {} changes, oplog", c.ops);
        Some(
            phases::apply(
                &rig,
                Fetch::Oplog,
                &plan.changes(c.ops, Mix::Replaces),
                c.workers,
            )
            .await?,
        )
    } else {
        None
    };
    let tw = if c.twoway {
        eprintln!("run {k}: two-way against one-way, {} changes each", c.ops);
        let one = plan.changes(c.ops, Mix::Updates);
        let two = plan.changes(c.ops, Mix::Updates);
        Some(twoway::compare(&rig, &one, &two).await?)
    } else {
        None
    };
    eprintln!("run {k}: comparing the targets with the source");
    let mut notes = vec![format!("copy: {}", copy.note), count];
    notes.push(format!("apply, change stream: {}", cs.note));
    if let Some(o) = &oplog {
        notes.push(format!("apply, oplog: {}", o.note));
    }
    if let Some(t) = &tw {
        notes.push(format!("two-way: {}", t.note));
    }
    notes.extend(phases::verify(&rig).await?);
    Ok(RunResult {
        copy,
        change_stream: cs,
        oplog,
        twoway: tw,
        notes,
    })
}

async fn bench(c: &Config) -> Result<String> {
    let docs = data::documents(c.docs);
    let header = Header {
        docs: c.docs,
        ops: c.ops,
        runs: c.runs,
        nproc: std::thread::available_parallelism().map_or(1, |n| n.get()),
        doc_bytes: docs.iter().map(|d| d.as_bytes().len()).sum::<usize>() / docs.len(),
        workers: c.workers,
        server: server::version(),
    };
    let mut runs = Vec::new();
    for k in 1..=c.runs {
        let r = run_once(c, &docs, k)
            .await
            .map_err(|e| format!("run {k}: {e}"))?;
        runs.push(r);
    }
    Ok(report::markdown(&header, &runs))
}

fn main() -> ExitCode {
    let result = parse_args().and_then(|c| {
        let rt = tokio::runtime::Runtime::new().ctx("starting the tokio runtime")?;
        let md = rt.block_on(bench(&c))?;
        let path = c.root.join("target/bench-mongo.md");
        std::fs::write(&path, &md).ctx(format!("writing {}", path.display()))?;
        println!("{md}");
        eprintln!("report written to {}", path.display());
        Ok(())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench mongo: error: {e}");
            ExitCode::FAILURE
        }
    }
}
