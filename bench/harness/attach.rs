//! A target being fed from a source, by a native replica (`REPLICAOF`) or by
//! `tandem redis sync`, with one notion of "caught up" for both.

use std::path::Path;
use std::time::Duration;

use super::Res;
use super::client::{Client, Frame, info_field};
use super::servers::{Redis, Tandem, tandem_has};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Native,
    Tandem,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Native => "native",
            Kind::Tandem => "tandem",
        }
    }
}

/// Source options shared by every scenario: diskless sync with no delay (the fastest
/// native full sync, and the same RDB transfer for tandem), and no output-buffer limit
/// for replicas (the catch-up scenario freezes the replica while the backlog builds).
pub const SOURCE_OPTS: &[&str] = &[
    "--repl-diskless-sync",
    "yes",
    "--repl-diskless-sync-delay",
    "0",
    "--client-output-buffer-limit",
    "replica 0 0 0",
];

/// Why the tandem side cannot run with this binary, if it cannot.
pub fn tandem_sync_missing(bin: &Path) -> Option<String> {
    if !bin.exists() {
        return Some(format!(
            "no tandem binary at {} (run `cargo build --release` first)",
            bin.display()
        ));
    }
    if !tandem_has(bin, &["redis", "sync"]) {
        return Some("`tandem redis sync` not yet available in this build".into());
    }
    None
}

pub struct Attached {
    pub kind: Kind,
    pub target: Redis,
    pub tandem: Option<Tandem>,
    pub ckpt_key: String,
}

/// Starts a fresh target and attaches it to `source`; the clock of a full sync starts
/// just before this call.
pub fn attach(kind: Kind, bin: &Path, source: &Redis, id: &str) -> Res<Attached> {
    let target = Redis::start(&[])?;
    attach_to(kind, bin, source, target, id)
}

pub fn attach_to(kind: Kind, bin: &Path, source: &Redis, target: Redis, id: &str) -> Res<Attached> {
    let tandem = match kind {
        Kind::Native => {
            let port = source.port.to_string();
            target
                .client()?
                .ok(&[b"REPLICAOF", b"127.0.0.1", port.as_bytes()])?;
            None
        }
        Kind::Tandem => {
            let args: Vec<String> = [
                "redis",
                "sync",
                "--source",
                &source.url(),
                "--target",
                &target.url(),
                "--id",
                id,
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            Some(Tandem::start(bin, &args)?)
        }
    };
    Ok(Attached {
        kind,
        target,
        tandem,
        ckpt_key: format!("__tandem:ckpt:{id}"),
    })
}

impl Attached {
    /// The source offset the target has applied, once it is streaming (not during a
    /// full sync): the replica's own `master_repl_offset`, or tandem's checkpoint.
    pub fn offset(&mut self) -> Res<Option<u64>> {
        if let Some(t) = self.tandem.as_mut() {
            t.check_alive()?;
        }
        let mut c = self.target.client()?;
        match self.kind {
            Kind::Native => {
                let info = c.info("replication")?;
                let up = info_field(&info, "master_link_status") == Some("up")
                    && info_field(&info, "master_sync_in_progress") == Some("0");
                Ok(up
                    .then(|| info_field(&info, "master_repl_offset")?.parse().ok())
                    .flatten())
            }
            Kind::Tandem => {
                let h = c.hgetall(&self.ckpt_key)?;
                let field = |n: &str| h.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str());
                if field("state") != Some("incr") {
                    return Ok(None);
                }
                Ok(field("offset").and_then(|o| o.parse().ok()))
            }
        }
    }

    /// Keys on the target that are not tandem's own (fast: DBSIZE minus the
    /// checkpoint key; `exact_user_keys` checks the whole reserved prefix).
    pub fn user_keys(&self) -> Res<Option<u64>> {
        let mut c = self.target.client()?;
        let Some(n) = c.dbsize()? else {
            return Ok(None);
        };
        let ckpt = match c.cmd(&[b"EXISTS", self.ckpt_key.as_bytes()])? {
            Frame::Integer(i) => i as u64,
            _ => 0,
        };
        Ok(Some(n - ckpt.min(n)))
    }

    /// Keys in every db of the target outside `__tandem:` (a SCAN: after the clock).
    pub fn exact_user_keys(&self) -> Res<u64> {
        exact_user_keys(self.target.port)
    }

    /// Caught up: streaming, offset at least the source's, same key count.
    pub fn caught_up(&mut self, source: &Redis, source_keys: u64) -> Res<bool> {
        let master = source_offset(source)?;
        let Some(off) = self.offset()? else {
            return Ok(false);
        };
        if off < master {
            return Ok(false);
        }
        Ok(self.user_keys()? == Some(source_keys))
    }

    pub fn wait_caught_up(&mut self, source: &Redis, source_keys: u64, limit: Duration) -> Res<()> {
        let what = format!("{} target to catch up", self.kind.name());
        super::servers::wait_until(&what, limit, Duration::from_millis(5), || {
            self.caught_up(source, source_keys)
        })
        .map_err(|e| self.with_log(e))
    }

    /// The pid that applies the stream (frozen by the catch-up scenario).
    pub fn applier_pid(&self) -> u32 {
        match &self.tandem {
            Some(t) => t.pid(),
            None => self.target.pid(),
        }
    }

    pub fn tandem_rss(&self) -> Option<u64> {
        self.tandem.as_ref().and_then(Tandem::peak_rss)
    }

    /// An error with the tail of the relevant log attached.
    pub fn with_log(
        &self,
        e: Box<dyn std::error::Error + Send + Sync>,
    ) -> Box<dyn std::error::Error + Send + Sync> {
        match &self.tandem {
            Some(t) => format!("{e}; tandem log: {}", t.log_tail()).into(),
            None => format!("{e}; replica log: {}", self.target.log_tail()).into(),
        }
    }
}

pub fn source_offset(source: &Redis) -> Res<u64> {
    let info = source.client()?.info("replication")?;
    Ok(info_field(&info, "master_repl_offset")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0))
}

/// Keys of every db outside the reserved `__tandem:` prefix.
pub fn exact_user_keys(port: u16) -> Res<u64> {
    let mut c = Client::connect(port)?;
    let info = c.info("keyspace")?;
    let mut total = 0u64;
    for line in info.lines().filter(|l| l.starts_with("db")) {
        let (db, rest) = line.split_once(':').ok_or("bad keyspace line")?;
        let keys: u64 = rest
            .split(',')
            .find_map(|kv| kv.strip_prefix("keys="))
            .and_then(|v| v.parse().ok())
            .ok_or("no keys= in keyspace line")?;
        c.ok(&[b"SELECT", db.trim_start_matches("db").as_bytes()])?;
        total += keys - count_tandem_keys(&mut c)?;
    }
    Ok(total)
}

pub fn count_tandem_keys(c: &mut Client) -> Res<u64> {
    let mut cursor = b"0".to_vec();
    let mut n = 0;
    loop {
        let Frame::Array(parts) = c.ok(&[
            b"SCAN",
            &cursor,
            b"MATCH",
            b"__tandem:*",
            b"COUNT",
            b"10000",
        ])?
        else {
            return Err("SCAN: unexpected reply".into());
        };
        let (Some(Frame::BulkString(next)), Some(Frame::Array(keys))) =
            (parts.first(), parts.get(1))
        else {
            return Err("SCAN: unexpected reply".into());
        };
        n += keys.len() as u64;
        if next.as_slice() == b"0" {
            return Ok(n);
        }
        cursor = next.clone();
    }
}

/// Writes a fresh marker on the source and waits until the target shows it: the link
/// is streaming (used before the clock of incremental scenarios starts).
pub fn wait_streaming(a: &mut Attached, source: &Redis, token: &str, limit: Duration) -> Res<()> {
    source
        .client()?
        .ok(&[b"SET", b"bench:ready", token.as_bytes()])?;
    super::servers::wait_until(
        "target to show the ready marker",
        limit,
        Duration::from_millis(5),
        || {
            if let Some(t) = a.tandem.as_mut() {
                t.check_alive()?;
            }
            Ok(a.target.client()?.get(b"bench:ready")?.as_deref() == Some(token.as_bytes()))
        },
    )
    .map_err(|e| a.with_log(e))
}
