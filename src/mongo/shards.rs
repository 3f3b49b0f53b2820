//! A sharded source in oplog mode: one oplog reader per shard, each a link of its own
//! into the same target (its checkpoint `<id>@<shard>`, its transactions, its restarts),
//! after one copy read through `--source` (the mongos).
//!
//! Why per shard: a sharded cluster has no single oplog. Each shard's replica set logs
//! its own writes in its own history, so each shard's position is only comparable with
//! itself ([`MongoPosition`] refuses the rest) and each shard resumes on its own. Entries
//! a chunk migration writes (`fromMigrate`) are skipped by the entry parser: the
//! document was already replicated from the shard it came from.
//!
//! Ordering: per document, a shard's order is kept. Across shards there is no order to
//! keep (a document lives on one shard at a time; a transaction spanning shards is
//! applied as one target transaction per shard, as its shards logged it).

use std::collections::BTreeMap;

use bson::doc;
use mongodb::options::ClientOptions;

use super::checkpoint::{self, Checkpoint, Phase};
use super::endpoint::MongoEndpoint;
use super::error::{MongoError, Result};
use super::source;
use super::sync::{Mode, SyncConfig, incremental, run_copy};
use crate::core::MongoPosition;
use crate::core::shutdown::{Shutdown, TaskGroup};

/// The shards of a sharded source: as listed with `--source-shard [NAME=]URI`, or else
/// found through the mongos (`listShards`), reached with the mongos URI's credentials
/// and options.
pub async fn discover(source_uri: &str, source: &MongoEndpoint) -> Result<Vec<Shard>> {
    let reply = source
        .client
        .database("admin")
        .run_command(doc! {"listShards": 1})
        .await
        .map_err(|e| MongoError::from_driver(format!("{}: listShards", source.name()), &e))?;
    let mut out = Vec::new();
    for s in reply.get_array("shards").map_err(|_| {
        MongoError::fatal(source.name(), "listShards answered without a shards list")
    })? {
        let Some(d) = s.as_document() else { continue };
        let name = d.get_str("_id").unwrap_or_default().to_string();
        let host = d.get_str("host").unwrap_or_default();
        let ep = shard_endpoint(source_uri, &name, host).await?;
        out.push(Shard { name, ep });
    }
    if out.is_empty() {
        return Err(MongoError::fatal(
            source.name(),
            "listShards lists no shard",
        ));
    }
    Ok(out)
}

/// `rs0/h1:27018,h2:27018` (listShards' form) reached with the mongos URI's options.
async fn shard_endpoint(source_uri: &str, name: &str, host: &str) -> Result<MongoEndpoint> {
    let flag = format!("shard {name}");
    let (set, hosts) = host.split_once('/').unwrap_or(("", host));
    let mut opts = ClientOptions::parse(source_uri)
        .await
        .map_err(|e| MongoError::fatal(&flag, format!("invalid connection string: {e}")))?;
    opts.hosts = hosts
        .split(',')
        .map(|h| {
            mongodb::options::ServerAddress::parse(h)
                .map_err(|e| MongoError::fatal(&flag, format!("bad host {h:?}: {e}")))
        })
        .collect::<Result<_>>()?;
    opts.repl_set_name = (!set.is_empty()).then(|| set.to_string());
    opts.direct_connection = None;
    MongoEndpoint::from_options(&flag, opts)
}

/// `[NAME=]URI`: without a name, the shard is named by its replica set.
pub fn parse_flag(arg: &str) -> (Option<&str>, &str) {
    match arg.split_once('=') {
        Some((name, uri)) if uri.starts_with("mongodb") && !name.contains(['/', ':', '@']) => {
            (Some(name), uri)
        }
        _ => (None, arg),
    }
}

#[derive(Clone, Debug)]
pub struct Shard {
    pub name: String,
    pub ep: MongoEndpoint,
}

/// Names the unnamed shards by their replica sets; two shards may not share a name
/// (their checkpoints would be one).
pub async fn name_shards(listed: Vec<(Option<String>, MongoEndpoint)>) -> Result<Vec<Shard>> {
    let mut out: Vec<Shard> = Vec::new();
    for (name, ep) in listed {
        let name = match name {
            Some(n) => n,
            None => source::probe(&ep).await?.history,
        };
        if out.iter().any(|s| s.name == name) {
            return Err(MongoError::fatal(
                format!("--source-shard {}", ep.name()),
                format!(
                    "a second shard named {name:?}: name them (--source-shard NAME=URI), \
                     the name keys each shard's checkpoint"
                ),
            ));
        }
        out.push(Shard { name, ep });
    }
    Ok(out)
}

fn shard_id(id: &str, shard: &str) -> String {
    format!("{id}@{shard}")
}

/// The whole sharded link: per-shard checkpoints taken before the copy, the copy
/// through `--source`, then every shard's changes at once. The first shard to fail
/// ends the run (the others stop after their batch in flight).
pub async fn run(cfg: &SyncConfig, shards: &[Shard], shutdown: Shutdown) -> Result<()> {
    let mut ckpts: BTreeMap<String, Checkpoint> = BTreeMap::new();
    let mut histories = Vec::new();
    for s in shards {
        let id = shard_id(&cfg.id, &s.name);
        let info = source::probe(&s.ep).await?;
        if info.sharded {
            return Err(MongoError::fatal(
                format!("shard {}", s.name),
                "is a mongos: --source-shard takes each shard's replica set",
            ));
        }
        super::apply::end_previous_sessions(&cfg.target, &id).await?;
        let c = match checkpoint::load(&cfg.target, &id).await? {
            Some(c) if c.pos.history != info.history => {
                return Err(MongoError::fatal(
                    format!("checkpoint {id:?} on {}", cfg.target.name()),
                    format!(
                        "belongs to history {:?}, shard {} is {:?}",
                        c.pos.history, s.name, info.history
                    ),
                ));
            }
            Some(c) => c,
            None => {
                // A shard seen for the first time starts now; with a copy still to
                // run (or none yet), its changes from here converge with it.
                let copying = cfg.mode != Mode::Incr
                    && (ckpts.values().all(|c| c.phase == Phase::Copy) || ckpts.is_empty());
                let c = Checkpoint {
                    pos: MongoPosition::oplog(
                        &info.history,
                        source::oplog::newest_entry(&s.ep).await?,
                    ),
                    phase: if copying { Phase::Copy } else { Phase::Incr },
                    copy_end: None,
                };
                checkpoint::save(&cfg.target, &id, &c).await?;
                c
            }
        };
        histories.push(format!("{}={}", s.name, info.history));
        ckpts.insert(s.name.clone(), c);
    }
    cfg.status.set_replid(&histories.join(","));
    if ckpts.values().any(|c| c.phase == Phase::Copy) {
        if !run_copy(cfg, &shutdown).await? {
            return Ok(());
        }
        for s in shards {
            let c = ckpts.get_mut(&s.name).expect("loaded above");
            if c.phase == Phase::Copy {
                c.phase = Phase::Incr;
                c.copy_end = Some(source::probe(&s.ep).await?.last_write);
                checkpoint::save(&cfg.target, &shard_id(&cfg.id, &s.name), c).await?;
            }
        }
    }
    if cfg.mode == Mode::Full {
        return Ok(());
    }
    // One shard's failure stops the others after their batch in flight, as Ctrl-C does.
    let mut runs = TaskGroup::new(&shutdown);
    for s in shards {
        let shard_cfg = SyncConfig {
            source: s.ep.clone(),
            id: shard_id(&cfg.id, &s.name),
            shards: Vec::new(),
            ..cfg.clone()
        };
        let c = ckpts.remove(&s.name).expect("loaded above");
        let (stop, name) = (runs.shutdown(), s.name.clone());
        runs.spawn(async move {
            incremental(&shard_cfg, c, None, stop)
                .await
                .map_err(|mut e| {
                    e.context = format!("shard {name}: {}", e.context);
                    e
                })
        });
    }
    runs.join().await
}
