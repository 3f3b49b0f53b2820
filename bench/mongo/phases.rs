//! The two measurements of a run, each against its ceiling: the copy (a plain client's
//! `insert_many` into an empty server) and the catch-up apply (a plain client's
//! `bulkWrite` in transactions of the same size as tandem's, checkpoint included).
//!
//! Three fresh servers per run: the source, the ceiling's target and tandem's target.
//! The ceiling's target receives the same documents and then the same changes as the
//! source, so at the end all three must hold the same `docs` collection.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mongodb::bson::{DateTime, Document, RawDocumentBuf, doc};
use mongodb::options::{ReadConcern, TransactionOptions, WriteConcern, WriteModel};
use mongodb::{Client, Collection};

use super::data::{self, Change, DB, DOCS, MARKERS};
use super::procfs;
use super::scrape;
use super::server::Secantus;
use super::tandem::{Tandem, Usage};
use super::util::{Ctx, Result};

/// Documents per insert and operations per transaction: tandem's defaults, so the
/// ceiling writes in the same units.
const BATCH: usize = 1000;
pub(crate) const LINK: &str = "bench";

/// One phase's numbers.
#[derive(Clone, Debug)]
pub struct Measured {
    /// Documents (copy) or operations (apply) per second.
    pub ceiling: f64,
    pub tandem: f64,
    pub cpu_ms_per_10k: f64,
    pub peak_rss_mb: f64,
    /// Where the time went: CPU seconds of each server over the phase.
    pub note: String,
}

impl Measured {
    fn new(count: usize, ceiling: Duration, tandem: Duration, u: Usage, note: String) -> Self {
        let n = count as f64;
        Measured {
            ceiling: n / ceiling.as_secs_f64(),
            tandem: n / tandem.as_secs_f64(),
            cpu_ms_per_10k: u.cpu.as_secs_f64() * 1000.0 * 10_000.0 / n,
            peak_rss_mb: u.peak_rss_kb as f64 / 1024.0,
            note,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Fetch {
    ChangeStream,
    Oplog,
}

impl Fetch {
    pub fn arg(self) -> &'static str {
        match self {
            Fetch::ChangeStream => "change-stream",
            Fetch::Oplog => "oplog",
        }
    }
}

pub struct Rig {
    pub(crate) source: Secantus,
    pub(crate) ceiling: Secantus,
    pub(crate) target: Secantus,
    pub(crate) src: Client,
    pub(crate) ceil: Client,
    pub(crate) tgt: Client,
    pub(crate) bin: PathBuf,
    pub(crate) logs: PathBuf,
    pub(crate) hz: u64,
}

impl Rig {
    /// Fresh servers; tandem's logs go to `logs` (kept for a look afterwards).
    pub async fn start(bin: &Path, logs: PathBuf) -> Result<Rig> {
        let (source, ceiling, target) = tokio::try_join!(
            Secantus::start("source"),
            Secantus::start("ceiling target"),
            Secantus::start("tandem target"),
        )?;
        let (src, ceil, tgt) =
            tokio::try_join!(source.client(), ceiling.client(), target.client())?;
        std::fs::create_dir_all(&logs).ctx(format!("creating {}", logs.display()))?;
        Ok(Rig {
            source,
            ceiling,
            target,
            src,
            ceil,
            tgt,
            bin: bin.to_path_buf(),
            logs,
            hz: procfs::ticks_per_sec(),
        })
    }

    pub(crate) fn tandem(&self, args: &[&str], log: &str) -> Result<Tandem> {
        let mut all: Vec<String> = vec![
            "--source".into(),
            self.source.uri.clone(),
            "--target".into(),
            self.target.uri.clone(),
        ];
        all.extend(args.iter().map(|a| a.to_string()));
        Tandem::spawn(&self.bin, &all, self.logs.join(log))
    }

    /// CPU time so far of each server: (source, ceiling target, tandem target).
    pub(crate) fn server_cpu(&self) -> [Duration; 3] {
        [&self.source, &self.ceiling, &self.target].map(|s| {
            procfs::stat(s.pid(), self.hz)
                .map(|st| st.cpu)
                .unwrap_or_default()
        })
    }
}

/// CPU seconds per server between two readings, as a note.
pub(crate) fn cpu_note(
    what: &str,
    a: [Duration; 3],
    b: [Duration; 3],
    wall: Duration,
    roles: &[usize],
) -> String {
    let names = ["source", "ceiling target", "tandem target"];
    let parts: Vec<String> = roles
        .iter()
        .map(|&i| format!("{} {:.1} s", names[i], (b[i] - a[i]).as_secs_f64()))
        .collect();
    format!(
        "{what}: {:.1} s wall; server CPU: {}",
        wall.as_secs_f64(),
        parts.join(", ")
    )
}

/// `insert_many`, unordered, in batches of [`BATCH`].
async fn load(c: &Client, docs: &[RawDocumentBuf]) -> Result<Duration> {
    let coll: Collection<RawDocumentBuf> = c.database(DB).collection(DOCS);
    let start = Instant::now();
    for chunk in docs.chunks(BATCH) {
        coll.insert_many(chunk)
            .ordered(false)
            .await
            .ctx("insert_many")?;
    }
    Ok(start.elapsed())
}

/// Copy: the ceiling loads the documents into an empty server; tandem copies them
/// from the source (loaded the same way first) and exits.
pub async fn copy(
    rig: &Rig,
    docs: &[RawDocumentBuf],
    workers: usize,
) -> Result<(Measured, String)> {
    // The marker collection exists before the copy, so the apply phases' markers need
    // no collection creation on the target.
    rig.src
        .database(DB)
        .create_collection(MARKERS)
        .await
        .ctx("creating the marker collection")?;
    let source_load = load(&rig.src, docs).await.ctx("loading the source")?;
    let c0 = rig.server_cpu();
    let ceiling = load(&rig.ceil, docs).await.ctx("the ceiling's load")?;
    let c1 = rig.server_cpu();
    let workers = workers.to_string();
    let mut t = rig.tandem(
        &["--mode", "full", "--workers", &workers, "--id", LINK],
        "copy.log",
    )?;
    let limit = Duration::from_secs(120) + Duration::from_millis(docs.len() as u64);
    let took = t.wait_exit(limit).await?;
    let c2 = rig.server_cpu();
    let check = count_check(&rig.tgt, docs.len() as u64).await?;
    let note = format!(
        "source load {:.0} docs/s; {}; {}",
        docs.len() as f64 / source_load.as_secs_f64(),
        cpu_note("ceiling", c0, c1, ceiling, &[1]),
        cpu_note("tandem", c1, c2, took, &[0, 2]),
    );
    Ok((
        Measured::new(docs.len(), ceiling, took, t.usage(), note),
        check,
    ))
}

async fn count_check(c: &Client, want: u64) -> Result<String> {
    let have = c
        .database(DB)
        .collection::<Document>(DOCS)
        .count_documents(doc! {})
        .await
        .ctx("counting the copied documents")?;
    Ok(if have == want {
        format!("copy: {have} documents on the target, as on the source")
    } else {
        format!("copy: WRONG: {have} documents on the target, {want} on the source")
    })
}

/// Catch-up apply: tandem's link is placed at "now" and stopped, the changes and a
/// marker are written on the source, and tandem is timed from its start until the
/// marker is on the target. The ceiling applies the same changes directly.
pub async fn apply(
    rig: &Rig,
    fetch: Fetch,
    changes: &[Change],
    workers: usize,
) -> Result<Measured> {
    let id = format!("{LINK}-{}", fetch.arg());
    // `--workers` is also the number of parallel appliers (each batch is split among
    // them by document): passed on, so the bench's --workers governs both phases.
    let workers = workers.to_string();
    let args = [
        "--mode",
        "incr",
        "--fetch",
        fetch.arg(),
        "--workers",
        &workers,
        "--id",
        &id,
    ];
    place_link(rig, &args, &id, fetch).await?;
    write_changes(&rig.src, changes).await?;
    let marker = format!("after-{}", fetch.arg());
    insert_marker(&rig.src, &marker).await?;
    // The timed run exposes its counters, to tell how full its transactions were.
    let port = scrape::free_port().ok_or("no free loopback port for --metrics-addr")?;
    let addr = format!("127.0.0.1:{port}");
    let mut timed = args.to_vec();
    timed.extend(["--metrics-addr", &addr]);
    let c0 = rig.server_cpu();
    let mut t = rig.tandem(&timed, &format!("apply-{}.log", fetch.arg()))?;
    let limit = Duration::from_secs(120) + Duration::from_millis(2 * changes.len() as u64);
    let tgt = &rig.tgt;
    let took = t
        .wait_until("the marker on the target", limit, || {
            has_marker(tgt, &marker)
        })
        .await?;
    let c1 = rig.server_cpu();
    let usage = t.usage();
    let batches = match scrape::applied(port).await {
        Some((b, n)) if b > 0 => format!(
            "{n} operations in {b} transactions over {workers} applier(s) ({:.0} per transaction)",
            n as f64 / b as f64
        ),
        _ => "transaction count unavailable (metrics endpoint did not answer)".to_string(),
    };
    t.stop(Duration::from_secs(60)).await?;
    let c2 = rig.server_cpu();
    let ceiling = ceiling_apply(&rig.ceil, changes).await?;
    let c3 = rig.server_cpu();
    let note = format!(
        "{}; {}; tandem applied {batches}",
        cpu_note("ceiling", c2, c3, ceiling, &[1]),
        cpu_note("tandem", c0, c1, took, &[0, 2]),
    );
    Ok(Measured::new(changes.len(), ceiling, took, usage, note))
}

/// Starts the link with no checkpoint, so it begins at "now"; stops it (exit 0) once
/// its checkpoint is written. A restart then resumes exactly there.
pub(crate) async fn place_link(rig: &Rig, args: &[&str], id: &str, fetch: Fetch) -> Result<()> {
    let mut t = rig.tandem(args, &format!("place-{}.log", fetch.arg()))?;
    let tgt = &rig.tgt;
    t.wait_until("the link's checkpoint", Duration::from_secs(60), || {
        checkpoint_is_incr(tgt, id)
    })
    .await?;
    t.stop(Duration::from_secs(60)).await
}

pub(crate) async fn checkpoint_is_incr(c: &Client, id: &str) -> Result<bool> {
    let d = c
        .database("__tandem")
        .collection::<Document>("checkpoints")
        .find_one(doc! {"_id": id})
        .await
        .ctx("reading the checkpoint")?;
    Ok(d.is_some_and(|d| d.get_str("phase") == Ok("incr")))
}

pub(crate) async fn insert_marker(c: &Client, id: &str) -> Result<()> {
    let m: Collection<Document> = c.database(DB).collection(MARKERS);
    m.insert_one(doc! {"_id": id})
        .await
        .ctx("writing the marker")?;
    Ok(())
}

pub(crate) async fn has_marker(c: &Client, id: &str) -> Result<bool> {
    let m: Collection<Document> = c.database(DB).collection(MARKERS);
    let d = m
        .find_one(doc! {"_id": id})
        .await
        .ctx("reading the marker")?;
    Ok(d.is_some())
}

/// The changes on the source, as ordered `bulkWrite`s of [`BATCH`] (untimed).
pub(crate) async fn write_changes(c: &Client, changes: &[Change]) -> Result<()> {
    for chunk in changes.chunks(BATCH) {
        let r = c
            .bulk_write(chunk.iter().map(data::model))
            .ordered(true)
            .await
            .ctx("writing the changes on the source")?;
        let done = r.inserted_count + r.matched_count + r.deleted_count;
        if done != chunk.len() as i64 {
            return Err(format!(
                "the source applied {done} of {} changes in a batch: the change plan is wrong",
                chunk.len()
            ));
        }
    }
    Ok(())
}

/// What tandem's applier amounts to, done by a plain client: per transaction, a
/// checkpoint upsert and [`BATCH`] operations, snapshot / majority as tandem does.
pub(crate) async fn ceiling_apply(c: &Client, changes: &[Change]) -> Result<Duration> {
    let batches: Vec<Vec<WriteModel>> = changes
        .chunks(BATCH)
        .map(|b| b.iter().map(data::model).collect())
        .collect();
    let ckpt: Collection<Document> = c.database("__tandem").collection("checkpoints");
    let opts = TransactionOptions::builder()
        .read_concern(ReadConcern::snapshot())
        .write_concern(WriteConcern::majority())
        .build();
    let mut s = c.start_session().await.ctx("starting a session")?;
    let start = Instant::now();
    for (i, models) in batches.into_iter().enumerate() {
        s.start_transaction()
            .with_options(opts.clone())
            .await
            .ctx("starting a transaction")?;
        ckpt.update_one(
            doc! {"_id": "ceiling"},
            doc! {"$set": {"batch": i as i64, "at": DateTime::now()}},
        )
        .upsert(true)
        .session(&mut s)
        .await
        .ctx("the ceiling's checkpoint")?;
        c.bulk_write(models)
            .ordered(true)
            .session(&mut s)
            .await
            .ctx("the ceiling's bulkWrite")?;
        s.commit_transaction().await.ctx("committing")?;
    }
    Ok(start.elapsed())
}

/// Both targets against the source, document by document in `_id` order.
pub async fn verify(rig: &Rig) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for (name, c) in [("tandem target", &rig.tgt), ("ceiling target", &rig.ceil)] {
        out.push(match first_difference(&rig.src, c).await? {
            None => format!("end state: the {name} holds exactly the source's documents"),
            Some(d) => format!("end state: WRONG: the {name} differs from the source: {d}"),
        });
    }
    Ok(out)
}

async fn first_difference(a: &Client, b: &Client) -> Result<Option<String>> {
    let (ca, cb) = (
        a.database(DB).collection::<RawDocumentBuf>(DOCS),
        b.database(DB).collection::<RawDocumentBuf>(DOCS),
    );
    let mut x = ca
        .find(doc! {})
        .sort(doc! {"_id": 1})
        .batch_size(BATCH as u32)
        .await
        .ctx("reading the source")?;
    let mut y = cb
        .find(doc! {})
        .sort(doc! {"_id": 1})
        .batch_size(BATCH as u32)
        .await
        .ctx("reading a target")?;
    let mut n = 0u64;
    loop {
        let more_x = x.advance().await.ctx("reading the source")?;
        let more_y = y.advance().await.ctx("reading a target")?;
        match (more_x, more_y) {
            (false, false) => return Ok(None),
            (true, false) => return Ok(Some(format!("it ends after {n} documents"))),
            (false, true) => return Ok(Some(format!("it has more than the source's {n}"))),
            (true, true) if x.current() != y.current() => {
                let id = |d: &mongodb::bson::RawDocument| {
                    d.get("_id")
                        .ok()
                        .flatten()
                        .map(|v| format!("{v:?}"))
                        .unwrap_or_default()
                };
                let show = |d: &mongodb::bson::RawDocument| {
                    Document::try_from(d)
                        .map(|d| d.to_string())
                        .unwrap_or_default()
                };
                return Ok(Some(format!(
                    "document #{n}: source _id {} {}, target _id {} {}",
                    id(x.current()),
                    show(x.current()),
                    id(y.current()),
                    show(y.current())
                )));
            }
            (true, true) => n += 1,
        }
    }
}
