//! Full sync: the source's RDB, parsed on a blocking thread, turned into target writes.
//!
//! Each key becomes `RESTORE key ttl payload REPLACE ABSTTL` when the target accepts the
//! source's RDB version, and rewritten commands (DEL first, expiry last, in bounded
//! chunks) otherwise or when its serialized value exceeds `big_key_bytes`. Both give the
//! same data. Expired keys and `__tandem:` keys are skipped; functions are loaded.

use std::io::Read;

use bytes::Bytes;
use tokio::sync::mpsc;

use super::restore::{GroupBuilder, Write};
use crate::redis::filter::{FilterConfig, is_tandem_key};
use crate::redis::rdb::{self, CommandOptions, Event as RdbEvent, KeyCommands, RdbParser};

/// How the loader writes keys.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// The target's RDB version, when known: RESTORE is used if it accepts the source's.
    pub target_rdb: Option<TargetRdb>,
    /// Values serialized larger than this are rewritten in chunks.
    pub big_key_bytes: usize,
    /// Force command rewrite for every key.
    pub rewrite_only: bool,
}

/// A target's RDB format: its version and whether it is Valkey (which refuses the
/// "foreign" versions 12–79 that Redis 7.4+ uses).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TargetRdb {
    pub version: u32,
    pub valkey: bool,
}

impl TargetRdb {
    pub fn accepts(&self, source_version: u32) -> bool {
        source_version <= self.version && !(self.valkey && (12..80).contains(&source_version))
    }
}

/// One message from the loader: writes, and how many keys they complete (a big key's
/// chunks may span groups; it counts in the group holding its last write).
pub struct Group {
    pub writes: Vec<Write>,
    pub keys: u64,
}

#[derive(Debug, Default, Clone)]
pub struct LoadStats {
    pub keys: u64,
    pub restored: u64,
    pub rewritten: u64,
    pub skipped_expired: u64,
    pub skipped_filtered: u64,
    pub functions: u64,
    pub rdb_version: u32,
}

/// Writes grouped per message, to keep channel overhead off the per-key path.
const GROUP_WRITES: usize = 256;

/// Parse the RDB from `input` and send the writes to `out`. Runs on a blocking thread.
pub fn load(
    input: impl Read,
    filter: &FilterConfig,
    opts: &LoadOptions,
    out: mpsc::Sender<Group>,
) -> Result<LoadStats, LoadError> {
    let mut p = RdbParser::new(std::io::BufReader::with_capacity(256 * 1024, input))?;
    let version = p.version();
    let accepted = opts.target_rdb.is_some_and(|t| t.accepts(version));
    let restore = !opts.rewrite_only && accepted;
    let now_ms = crate::core::wall_ms() as i64;
    let mut stats = LoadStats {
        rdb_version: version,
        ..Default::default()
    };
    let mut group = GroupBuilder::default();
    // Keys whose last write is in `group`.
    let mut keys = 0u64;
    // One allocation for every value read whole.
    let mut raw = Vec::new();
    let send = |group: &mut GroupBuilder, keys: &mut u64| -> Result<(), LoadError> {
        if group.is_empty() && *keys == 0 {
            return Ok(());
        }
        let writes = group.take();
        let keys = std::mem::take(keys);
        out.blocking_send(Group { writes, keys })
            .map_err(|_| LoadError::Cancelled)
    };
    while let Some(ev) = p.next_event()? {
        match ev {
            RdbEvent::Key(k) => {
                stats.keys += 1;
                let db = k.db as u32;
                if is_tandem_key(&k.key) || !filter.db_allowed(db) || !filter.key_allowed(&k.key) {
                    stats.skipped_filtered += 1;
                    continue;
                }
                if k.expire_at_ms.is_some_and(|t| t <= now_ms) {
                    stats.skipped_expired += 1;
                    continue;
                }
                let tdb = filter.map_db(db);
                if restore && p.read_raw_in(opts.big_key_bytes, &mut raw)? {
                    group.restore(tdb, &k.key, k.expire_at_ms, &raw, version as u16);
                    stats.restored += 1;
                    keys += 1;
                    if group.len() >= GROUP_WRITES {
                        send(&mut group, &mut keys)?;
                    }
                    continue;
                }
                // Rewrite: chunk by chunk, so a huge key never sits in memory.
                stats.rewritten += 1;
                let mut cmds = KeyCommands::new(&k, CommandOptions::default());
                while let Some(batch) = cmds.next_batch(&mut p)? {
                    for c in batch {
                        // A module value with no command form travels as RESTORE, which
                        // this target cannot read: stop rather than lose the key.
                        if c.first().is_some_and(|n| n == b"RESTORE") && !accepted {
                            return Err(LoadError::Unrestorable {
                                key: String::from_utf8_lossy(&k.key[..k.key.len().min(200)])
                                    .into_owned(),
                                module: c.get(3).map_or("?".into(), |p| payload_module(p)),
                                version,
                            });
                        }
                        group.argv(tdb, c.into_iter().map(Bytes::from).collect());
                    }
                    if group.len() >= GROUP_WRITES {
                        send(&mut group, &mut keys)?;
                    }
                }
                keys += 1;
            }
            RdbEvent::Function { code } => {
                stats.functions += 1;
                let c = rdb::decode::function_command(&code);
                group.argv(0, c.into_iter().map(Bytes::from).collect());
            }
            // Redis 5/6 keep their script cache in the RDB: load it, so that EVALSHA
            // replicated verbatim later finds the script on the target.
            RdbEvent::Aux { key, value } if key == b"lua" => {
                let argv = vec![
                    Bytes::from_static(b"SCRIPT"),
                    Bytes::from_static(b"LOAD"),
                    Bytes::from(value),
                ];
                group.argv(0, argv);
            }
            RdbEvent::End { .. } => break,
            _ => {}
        }
    }
    send(&mut group, &mut keys)?;
    Ok(stats)
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("RDB: {0}")]
    Rdb(#[from] rdb::RdbError),
    #[error("full sync cancelled")]
    Cancelled,
    #[error(
        "key {key:?}: a value of module type {module} has no command form, and the target \
         cannot RESTORE RDB {version} (use a target with the module that reads RDB {version})"
    )]
    Unrestorable {
        key: String,
        module: String,
        version: u32,
    },
}

/// The module type named in a DUMP payload of a module value (type byte, then the
/// module id as a 64-bit length).
fn payload_module(payload: &[u8]) -> String {
    match payload.get(1..10) {
        Some([0x81, id @ ..]) if matches!(payload[0], 6 | 7) => {
            let id: [u8; 8] = id.try_into().expect("8 bytes");
            rdb::module_name(u64::from_be_bytes(id)).0
        }
        _ => "?".into(),
    }
}
