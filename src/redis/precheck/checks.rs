//! The precheck items. Each reads what it needs from one side and says pass, warn or
//! fail; an unreachable side ends its own items early (nothing else can be known).

use std::time::Duration;

use super::{PrecheckConfig, Report, Use};
use crate::redis::cluster::{Topology, is_cluster};
use crate::redis::conn::{Conn, Frame, frame_text, info_field};
use crate::redis::slot::SLOTS;
use crate::redis::sync::target_rdb_from_info;
use crate::redis::url::Endpoint;

/// A side as precheck saw it.
struct Seen {
    conn: Conn,
    info: String,
    cluster: bool,
}

pub async fn run(cfg: &PrecheckConfig) -> Report {
    let mut r = Report::default();
    let timeout = Duration::from_secs(5);
    let (s, t) = tokio::join!(reach(&cfg.source, timeout), reach(&cfg.target, timeout));
    let mut seen = Vec::new();
    for (role, ep, side) in [("source", &cfg.source, s), ("target", &cfg.target, t)] {
        match side {
            Ok(side) => {
                r.pass(&format!("reach.{role}"), format!("{ep}: reachable, authenticated"));
                seen.push(side);
            }
            Err(e) => r.fail(
                &format!("reach.{role}"),
                e,
                &format!("check the URL, the password (or --{role}-password-file) and that the server listens"),
            ),
        }
    }
    let [mut src, mut dst] = match <[Seen; 2]>::try_from(seen) {
        Ok(both) => both,
        Err(_) => return r,
    };
    versions(&mut r, &src, &dst);
    permissions(&mut r, "source", &mut src, cfg.what, true).await;
    permissions(&mut r, "target", &mut dst, cfg.what, false).await;
    eviction(&mut r, &mut dst).await;
    if cfg.what == Use::TwoWay {
        eviction(&mut r, &mut src).await;
    }
    for (role, side) in [("source", &mut src), ("target", &mut dst)] {
        slots(&mut r, role, side).await;
    }
    databases(&mut r, cfg, &src, &dst);
    backlog(&mut r, &src);
    modules(&mut r, &mut src, &mut dst).await;
    field_ttls(&mut r, &src, &mut dst).await;
    r
}

async fn reach(ep: &Endpoint, timeout: Duration) -> Result<Seen, String> {
    let mut conn = Conn::connect(&ep.with_db(0), timeout)
        .await
        .map_err(|e| e.to_string())?;
    let info = conn
        .query(&[b"INFO", b"everything"])
        .await
        .map_err(|e| e.to_string())?;
    let info = frame_text(&info).unwrap_or_default();
    let cluster = is_cluster(&mut conn).await.map_err(|e| e.to_string())?;
    Ok(Seen {
        conn,
        info,
        cluster,
    })
}

fn version(info: &str) -> String {
    match info_field(info, "valkey_version") {
        Some(v) => format!("Valkey {v}"),
        None => format!(
            "Redis {}",
            info_field(info, "redis_version").unwrap_or("?".into())
        ),
    }
}

fn versions(r: &mut Report, src: &Seen, dst: &Seen) {
    let (s, t) = (
        target_rdb_from_info(&src.info),
        target_rdb_from_info(&dst.info),
    );
    let what = format!(
        "source {}, target {}",
        version(&src.info),
        version(&dst.info)
    );
    match (s, t) {
        (Some(s), Some(t)) if t.accepts(s.version) => r.pass(
            "versions",
            format!(
                "{what}: full sync uses RESTORE (target reads RDB {})",
                s.version
            ),
        ),
        (Some(s), Some(_)) => r.pass(
            "versions",
            format!(
                "{what}: full sync rewrites keys as commands (target cannot RESTORE RDB {})",
                s.version
            ),
        ),
        _ => r.warn(
            "versions",
            format!("{what}: unknown RDB version, keys will be rewritten as commands"),
            "none needed if the target is Redis-compatible",
        ),
    }
}

/// ACL DRYRUN of what tandem sends, as the connected user (Redis 7+).
async fn permissions(r: &mut Report, role: &str, side: &mut Seen, what: Use, source: bool) {
    let name = format!("acl.{role}");
    let user = match side.conn.request(&[b"ACL", b"WHOAMI"]).await {
        Ok(Frame::BulkString(u)) | Ok(Frame::SimpleString(u)) => u,
        _ => {
            return r.warn(
                &name,
                "cannot read the ACL user (ACL WHOAMI)".into(),
                "make sure the user may run the commands listed in docs/OPERATIONS.md",
            );
        }
    };
    let mut needed: Vec<&str> = Vec::new();
    if source || what == Use::TwoWay {
        needed.extend(["PSYNC ? -1", "REPLCONF ACK 0"]);
    }
    if !source || what == Use::TwoWay {
        needed.extend([
            "MULTI",
            "EXEC",
            "SET k v",
            "RESTORE k 0 x REPLACE",
            "HSET __tandem:ckpt:x f v",
            "SCRIPT LOAD x",
            "FUNCTION LOAD x",
        ]);
    }
    if what == Use::TwoWay {
        needed.push("DUMP k");
    }
    let mut denied = Vec::new();
    for cmd in needed {
        let mut q: Vec<&[u8]> = vec![b"ACL", b"DRYRUN", &user];
        q.extend(cmd.split(' ').map(str::as_bytes));
        match side.conn.request(&q).await {
            Ok(Frame::SimpleString(_)) => {}
            Ok(Frame::BulkString(_)) => {
                denied.push(cmd.split(' ').next().unwrap_or(cmd).to_string())
            }
            Ok(Frame::Error(e))
                if e.contains("unknown subcommand") || e.contains("Unknown subcommand") =>
            {
                return r.warn(
                    &name,
                    "the server has no ACL DRYRUN (before Redis 7): permissions not checked".into(),
                    "grant the user the commands listed in docs/OPERATIONS.md",
                );
            }
            Ok(_) => {}
            Err(e) => {
                return r.warn(
                    &name,
                    format!("ACL DRYRUN: {e}"),
                    "grant the user the commands listed in docs/OPERATIONS.md",
                );
            }
        }
    }
    let who = String::from_utf8_lossy(&user);
    if denied.is_empty() {
        r.pass(&name, format!("user {who:?} may run what tandem sends"));
    } else {
        r.fail(
            &name,
            format!(
                "user {who:?} may not run {} (the server would answer NOPERM)",
                denied.join(", ")
            ),
            "ACL SETUSER … +<command> for each (see docs/OPERATIONS.md)",
        );
    }
}

async fn eviction(r: &mut Report, side: &mut Seen) {
    let policy = match side
        .conn
        .request(&[b"CONFIG", b"GET", b"maxmemory-policy"])
        .await
    {
        Ok(Frame::Array(v)) => v.get(1).and_then(frame_text),
        _ => None,
    };
    let ep = side.conn.endpoint().to_string();
    match policy.as_deref() {
        Some("noeviction") => r.pass("maxmemory-policy", format!("{ep}: noeviction")),
        Some(p) => r.warn(
            "maxmemory-policy",
            format!("{ep}: {p}: when memory runs out the server silently evicts replicated keys"),
            "CONFIG SET maxmemory-policy noeviction (or size maxmemory for the whole dataset)",
        ),
        None => r.warn(
            "maxmemory-policy",
            format!("{ep}: cannot read it (CONFIG GET refused)"),
            "make sure it is noeviction",
        ),
    }
}

async fn slots(r: &mut Report, role: &str, side: &mut Seen) {
    if !side.cluster {
        return;
    }
    let name = format!("slots.{role}");
    match Topology::load(&mut side.conn).await {
        Ok(t) => {
            let covered: u32 = t
                .shards
                .iter()
                .flat_map(|s| &s.slots)
                .map(|&(lo, hi)| u32::from(hi.min(SLOTS - 1)) - u32::from(lo) + 1)
                .sum();
            if covered >= u32::from(SLOTS) {
                r.pass(
                    &name,
                    format!("all {SLOTS} slots served by {} masters", t.shards.len()),
                );
            } else {
                r.fail(
                    &name,
                    format!("only {covered} of {SLOTS} slots are served"),
                    "assign every slot (redis-cli --cluster fix)",
                );
            }
        }
        Err(e) => r.fail(
            &name,
            e.to_string(),
            "make sure the cluster is healthy (CLUSTER INFO)",
        ),
    }
}

fn databases(r: &mut Report, cfg: &PrecheckConfig, src: &Seen, dst: &Seen) {
    let f = &cfg.filter;
    let high: Vec<u32> = crate::redis::conn::info_keyspace(&src.info)
        .into_iter()
        .map(|(db, _)| db)
        .filter(|&db| f.db_allowed(db) && f.map_db(db) > 0)
        .collect();
    if dst.cluster && !high.is_empty() {
        r.fail(
            "databases",
            format!("the source has keys in db {high:?}, a cluster target has only db 0"),
            "--db-map N:0 or --exclude-db N for each",
        );
    } else {
        r.pass(
            "databases",
            "every source db has a place on the target".into(),
        );
    }
    let held: u64 = crate::redis::conn::info_keyspace(&dst.info)
        .iter()
        .map(|(_, k)| *k)
        .sum();
    if held > 0 {
        r.warn("target-keys", format!("the target already holds {held} keys: a full sync replaces those the source has, and keeps the others"), "empty the target first if it should be an exact copy");
    } else {
        r.pass("target-keys", "the target is empty".into());
    }
}

fn backlog(r: &mut Report, src: &Seen) {
    let num = |f: &str| info_field(&src.info, f).and_then(|v| v.parse::<f64>().ok());
    let (Some(size), Some(kbps)) = (num("repl_backlog_size"), num("instantaneous_input_kbps"))
    else {
        return r.warn(
            "backlog",
            "cannot read repl_backlog_size or the input rate".into(),
            "size the backlog for a minute of writes",
        );
    };
    let rate = kbps * 1024.0;
    if rate < 1.0 {
        return r.pass(
            "backlog",
            format!("{} bytes of backlog, the source is idle", size as u64),
        );
    }
    let secs = size / rate;
    if secs < 60.0 {
        r.warn("backlog", format!("{} bytes of backlog hold {secs:.0} s of writes: a link cut longer than that forces a full resync", size as u64), "CONFIG SET repl-backlog-size to a minute of writes or more");
    } else {
        r.pass(
            "backlog",
            format!("the backlog holds {secs:.0} s of writes"),
        );
    }
}

/// Modules Redis 8 loads by itself (vector sets).
const BUILTIN_MODULES: [&str; 1] = ["vectorset"];

/// Hashes with field TTLs (`subexpiry=` in `INFO keyspace`, Redis 7.4+ and Valkey 9+)
/// cannot be written to a target without field TTLs.
async fn field_ttls(r: &mut Report, src: &Seen, dst: &mut Seen) {
    let hashes: u64 = src
        .info
        .lines()
        .filter(|l| l.starts_with("db"))
        .filter_map(|l| l.split(',').find_map(|f| f.strip_prefix("subexpiry=")))
        .filter_map(|n| n.trim().parse::<u64>().ok())
        .sum();
    let has = match dst
        .conn
        .request(&[b"COMMAND", b"INFO", b"HPEXPIREAT"])
        .await
    {
        Ok(Frame::Array(v)) => v.first().is_some_and(|e| matches!(e, Frame::Array(_))),
        _ => return,
    };
    let target = version(&dst.info);
    match (hashes, has) {
        (_, true) => r.pass("field_ttls", format!("{target} has hash field TTLs")),
        // A field TTL set later stops the sync naming its command and key.
        (0, false) => r.pass(
            "field_ttls",
            format!("no source hash has field TTLs ({target} has none)"),
        ),
        (n, false) => r.fail(
            "field_ttls",
            format!("the source has {n} hashes with field TTLs; {target} has no hash field TTLs"),
            "use a target with field TTLs (Redis 7.4+, Valkey 9+), or remove the field TTLs (HPERSIST)",
        ),
    }
}

fn module_names(f: Frame) -> Vec<String> {
    let Frame::Array(mods) = f else {
        return Vec::new();
    };
    mods.into_iter()
        .filter_map(|m| match m {
            Frame::Array(kv) => kv
                .chunks(2)
                .find(|p| frame_text(&p[0]).as_deref() == Some("name"))
                .and_then(|p| frame_text(p.get(1)?)),
            _ => None,
        })
        .collect()
}

async fn modules(r: &mut Report, src: &mut Seen, dst: &mut Seen) {
    let (Ok(s), Ok(t)) = (
        src.conn.request(&[b"MODULE", b"LIST"]).await,
        dst.conn.request(&[b"MODULE", b"LIST"]).await,
    ) else {
        return r.warn(
            "modules",
            "cannot list modules (MODULE LIST)".into(),
            "load the source's modules on the target",
        );
    };
    let have = module_names(t);
    // Valkey 9 lists its built-in scripting engine (`lua`) as a module: it holds no
    // key values, and every target runs Lua scripts itself.
    let (builtin, missing): (Vec<String>, Vec<String>) = module_names(s)
        .into_iter()
        .filter(|m| !have.contains(m) && m != "lua")
        .partition(|m| BUILTIN_MODULES.contains(&m.as_str()));
    if !builtin.is_empty() {
        // Loaded on every Redis 8 whether used or not: only a key of its type (which
        // stops the sync naming the key) needs it on the target.
        r.warn(
            "modules.builtin",
            format!("the target lacks the source's built-in modules {builtin:?}: a key of their types stops the sync"),
            "keep such keys off the source, or use a target that has them (Redis 8+)",
        );
    }
    if missing.is_empty() {
        r.pass(
            "modules",
            "the target has every module the source has".into(),
        );
    } else {
        r.fail(
            "modules",
            format!("the target lacks modules {missing:?}: their values cannot be written"),
            "load them on the target (loadmodule)",
        );
    }
}
