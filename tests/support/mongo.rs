//! MongoDB-wire servers for tests: `secantusd-py` (PyPI `secantusdb`, a one-node
//! replica set on WiredTiger) on ephemeral loopback ports, waited for by bounded
//! polling, killed on drop.
//!
//! `TANDEM_TEST_MONGODB_URI`, when set, names a real replica set that tests use as
//! their *source* (targets stay secantus servers): the oplog and change streams a real
//! mongod writes then flow through tandem. Each test uses its own database names.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mongodb::bson::{Bson, Document, doc};
use mongodb::{Client, Collection};

use super::free_port;

/// The server binary: `TANDEM_SECANTUSD` (set by scripts/servers.sh), or the venv the
/// script makes under target/.
pub fn secantus_binary() -> PathBuf {
    if let Ok(p) = std::env::var("TANDEM_SECANTUSD") {
        return p.into();
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/mongo-venv/bin/secantusd-py")
}

pub struct MongoServer {
    pub port: u16,
    child: Option<Child>,
    uri: String,
    dir: tempfile::TempDir,
}

#[derive(Default, Clone)]
pub struct MongoOpts {
    pub standalone: bool,
    pub extra: Vec<String>,
}

impl MongoServer {
    pub fn start() -> MongoServer {
        Self::start_with(MongoOpts::default())
    }

    /// A source: the real replica set of `TANDEM_TEST_MONGODB_URI` when set.
    pub fn source() -> MongoServer {
        match std::env::var("TANDEM_TEST_MONGODB_URI") {
            Ok(uri) if !uri.is_empty() => MongoServer {
                port: 0,
                child: None,
                uri,
                dir: tempfile::tempdir().unwrap(),
            },
            _ => Self::start(),
        }
    }

    pub fn start_with(o: MongoOpts) -> MongoServer {
        let dir = tempfile::Builder::new()
            .prefix("tandem-mongo-")
            .tempdir()
            .unwrap();
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("server.log")).unwrap();
        let mut cmd = Command::new(secantus_binary());
        cmd.args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .arg("--storage-path")
            .arg(dir.path().join("data"))
            .args(["--cache-size", "256M"])
            .args(&o.extra)
            .stdout(Stdio::null())
            .stderr(log);
        if o.standalone {
            cmd.arg("--standalone");
        }
        let child = cmd.spawn().unwrap_or_else(|e| {
            panic!(
                "cannot start {}: {e} (run scripts/servers.sh, which installs secantusdb)",
                secantus_binary().display()
            )
        });
        let mut s = MongoServer {
            port,
            child: Some(child),
            uri: format!("mongodb://127.0.0.1:{port}/?directConnection=true"),
            dir,
        };
        let start = Instant::now();
        for _ in 0..3000 {
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return s;
            }
            if let Some(Ok(Some(st))) = s.child.as_mut().map(|c| c.try_wait()) {
                panic!("secantusd exited with {st}: {}", s.log_tail());
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "secantusd did not listen within 30 s: {}",
                s.log_tail()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("secantusd did not listen: {}", s.log_tail())
    }

    pub fn uri(&self) -> String {
        self.uri.clone()
    }

    pub fn is_real(&self) -> bool {
        self.child.is_none()
    }

    pub fn log_tail(&self) -> String {
        let t = std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default();
        t.lines()
            .rev()
            .take(30)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n")
    }

    pub async fn client(&self) -> Client {
        let c = Client::with_uri_str(&self.uri).await.expect("client");
        // The server answers `hello` a little after it listens.
        let start = Instant::now();
        loop {
            match c.database("admin").run_command(doc! {"ping": 1}).await {
                Ok(_) => return c,
                Err(e) => assert!(
                    start.elapsed() < Duration::from_secs(30),
                    "ping {}: {e}",
                    self.uri
                ),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for MongoServer {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Poll an async condition every 20 ms until it holds; panic with `what` after `limit`.
pub async fn wait_for<F, Fut>(what: &str, limit: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    let mut tries = 0u64;
    loop {
        if cond().await {
            return;
        }
        tries += 1;
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} ({tries} tries) waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every document of a collection, sorted by the raw bytes of `_id` (a stable order
/// that needs no BSON comparison), as raw bytes: compared exactly.
pub async fn dump(c: &Client, db: &str, coll: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
    let coll: Collection<Document> = c.database(db).collection(coll);
    let mut cur = coll.find(doc! {}).await.expect("find");
    let mut out = Vec::new();
    while cur.advance().await.expect("advance") {
        let raw = cur.current();
        let id = raw
            .get("_id")
            .ok()
            .flatten()
            .map(|v| format!("{v:?}").into_bytes())
            .unwrap_or_default();
        out.push((id, raw.as_bytes().to_vec()));
    }
    out.sort();
    out
}

/// Asserts two collections hold the same documents byte for byte, naming the first
/// differing `_id`.
pub async fn assert_same_coll(a: &Client, b: &Client, db: &str, coll: &str) {
    let (x, y) = (dump(a, db, coll).await, dump(b, db, coll).await);
    for (l, r) in x.iter().zip(&y) {
        if l != r {
            let ld = Document::from_reader(&mut l.1.as_slice()).unwrap();
            let rd = Document::from_reader(&mut r.1.as_slice()).unwrap();
            panic!("{db}.{coll}: first difference\n source: {ld}\n target: {rd}");
        }
    }
    assert_eq!(
        x.len(),
        y.len(),
        "{db}.{coll}: source has {} documents, target {}",
        x.len(),
        y.len()
    );
}

/// Collection names and options, views included, of the user databases.
pub async fn catalog(c: &Client, dbs: &[&str]) -> Vec<(String, Document)> {
    let mut out = Vec::new();
    for db in dbs {
        let reply = c
            .database(db)
            .run_command(doc! {"listCollections": 1})
            .await
            .unwrap();
        for b in reply
            .get_document("cursor")
            .unwrap()
            .get_array("firstBatch")
            .unwrap()
        {
            let Bson::Document(d) = b else { continue };
            let name = d.get_str("name").unwrap().to_string();
            if name.starts_with("system.") {
                continue;
            }
            let mut o = d.get_document("options").cloned().unwrap_or_default();
            o.remove("uuid");
            out.push((format!("{db}.{name}"), o));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Index specs by name (`ns` dropped: old servers add it).
pub async fn index_specs(c: &Client, db: &str, coll: &str) -> Vec<Document> {
    let mut cur = c
        .database(db)
        .collection::<Document>(coll)
        .list_indexes()
        .await
        .unwrap();
    let mut out = Vec::new();
    while cur.advance().await.unwrap() {
        let mut d = Document::try_from(cur.current()).unwrap();
        d.remove("ns");
        out.push(d);
    }
    out.sort_by(|a, b| {
        a.get_str("name")
            .unwrap_or("")
            .cmp(b.get_str("name").unwrap_or(""))
    });
    out
}

/// The link's checkpoint document on a target.
pub async fn checkpoint(c: &Client, id: &str) -> Option<Document> {
    c.database("__tandem")
        .collection::<Document>("checkpoints")
        .find_one(doc! {"_id": id})
        .await
        .unwrap()
}

/// The source's newest operation time (the oplog's last entry).
pub async fn last_op(c: &Client) -> mongodb::bson::Timestamp {
    let hello = c
        .database("admin")
        .run_command(doc! {"hello": 1})
        .await
        .unwrap();
    match hello
        .get_document("lastWrite")
        .unwrap()
        .get_document("opTime")
        .unwrap()
        .get("ts")
    {
        Some(Bson::Timestamp(t)) => *t,
        other => panic!("hello.lastWrite.opTime.ts: {other:?}"),
    }
}

/// Waits for link `id` to finish its copy, then writes a marker document on the source
/// (database `tandem_marker`) and waits until it is on the target: everything written
/// on the source before it has been applied.
/// With parallel appliers the marker lands in one worker's transaction while the
/// others may still be committing their parts of the same batch. Each worker's
/// checkpoint moves to the batch's end, so the batch is whole once they all agree.
async fn batch_landed(target: &Client, link: &str, limit: Duration) {
    let ckpts: Collection<Document> = target.database("__tandem").collection("checkpoints");
    let filter = doc! {"$or": [{"_id": link}, {"_id": {"$gte": format!("{link}/"), "$lt": format!("{link}0")}}]};
    wait_for(
        &format!("the checkpoints of link {link} at one position"),
        limit,
        || async {
            let mut cur = ckpts.find(filter.clone()).await.unwrap();
            let mut seen = std::collections::BTreeSet::new();
            let mut workers = 0;
            while cur.advance().await.unwrap() {
                let d = cur.deserialize_current().unwrap();
                if d.get_str("_id").unwrap().contains('/') {
                    workers += 1;
                    seen.insert(format!("{:?}", d.get("ts")));
                }
            }
            workers == 0 || seen.len() == 1
        },
    )
    .await;
}

pub async fn wait_marker(source: &Client, target: &Client, id: &str, limit: Duration) {
    let link = id;
    wait_for(
        &format!("link {id} in the incremental phase"),
        limit,
        || async {
            checkpoint(target, id)
                .await
                .is_some_and(|d| d.get_str("phase").ok() == Some("incr"))
        },
    )
    .await;
    marker_round_trip(source, target, Some(link), limit).await;
}

/// A `--checkpoint-file`, as JSON (`None` while it does not exist).
pub fn checkpoint_file(path: &Path) -> Option<serde_json::Value> {
    let text = std::fs::read(path).ok()?;
    Some(serde_json::from_slice(&text).expect("the checkpoint file is JSON"))
}

/// [`wait_marker`] for a link whose checkpoint is the file `path`.
pub async fn wait_marker_file(source: &Client, target: &Client, path: &Path, limit: Duration) {
    wait_for(
        &format!("{} in the incremental phase", path.display()),
        limit,
        || async { checkpoint_file(path).is_some_and(|v| v["phase"] == "incr") },
    )
    .await;
    marker_round_trip(source, target, None, limit).await;
    // Without transactions the file moves after the batch's writes land: once the
    // marker is there, its batch is whole when the file names no batch in flight.
    wait_for(
        &format!("{} without a batch in flight", path.display()),
        limit,
        || async { checkpoint_file(path).is_some_and(|v| v["in_flight"].is_null()) },
    )
    .await;
}

/// Writes a marker document on the source (database `tandem_marker`) and waits until
/// it is on the target: everything written on the source before it has been applied.
async fn marker_round_trip(source: &Client, target: &Client, link: Option<&str>, limit: Duration) {
    // A new marker every 2 s until one arrives: a marker written while the reader opens
    // is only found once a later entry shows the gap (source/oplog.rs).
    let m: Collection<Document> = source.database("tandem_marker").collection("m");
    let t: Collection<Document> = target.database("tandem_marker").collection("m");
    let start = Instant::now();
    for k in 0u32.. {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let id = format!("m{nanos}-{k}");
        m.insert_one(doc! {"_id": &id}).await.unwrap();
        let round = Instant::now();
        while round.elapsed() < Duration::from_secs(2) {
            if t.find_one(doc! {"_id": &id}).await.unwrap().is_some() {
                if let Some(link) = link {
                    batch_landed(target, link, limit).await;
                }
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for a marker on the target ({k} written)"
        );
    }
}
