//! Turning decoded value chunks into the Redis commands that recreate the key.
//!
//! Per key: an optional `DEL` (so a replay replaces), then per chunk SET/APPEND, RPUSH,
//! SADD, ZADD, HSET (+ HPEXPIREAT for field TTLs), streams as XADD with explicit IDs,
//! XSETID (last id, entries added, max deleted id), XGROUP CREATE … ENTRIESREAD,
//! XGROUP CREATECONSUMER and XCLAIM … TIME RETRYCOUNT FORCE JUSTID for each pending
//! entry; Tair values as EXSET / EXHSET / EXZADD; unknown module values as RESTORE; and
//! finally PEXPIREAT for the key's expiry.
//!
//! Known limits of command rewrite (RESTORE keeps them exactly): consumer seen/active
//! times become the replay time; a pending entry whose message was deleted cannot be
//! recreated by XCLAIM; LRU/LFU hints are not carried.

use std::collections::BTreeMap;
use std::io::Read;

use super::error::Result;
use super::parser::{RdbParser, dump_payload};
use super::types::*;

/// One command: its arguments, name first.
pub type Command = Vec<Vec<u8>>;

#[derive(Debug, Clone, Copy)]
pub struct CommandOptions {
    /// Start each key with `DEL key` so the replay replaces any existing value.
    pub replace: bool,
    /// RDB version put in RESTORE payloads of unknown module values (`None`: the file's).
    pub restore_version: Option<u16>,
}

impl Default for CommandOptions {
    fn default() -> Self {
        CommandOptions {
            replace: true,
            restore_version: None,
        }
    }
}

/// A double as Redis parses it back to the same bits: shortest round-trip digits,
/// `inf`/`-inf`, exponent form for very large or small magnitudes.
pub fn format_double(v: f64) -> String {
    if v.is_nan() {
        "nan".into()
    } else if v.is_infinite() {
        if v > 0.0 { "inf".into() } else { "-inf".into() }
    } else if v == 0.0 || (1e-5..1e17).contains(&v.abs()) {
        format!("{v}")
    } else {
        format!("{v:e}")
    }
}

fn id_arg(id: StreamId) -> Vec<u8> {
    id.to_string().into_bytes()
}

fn cmd(parts: &[&[u8]]) -> Command {
    parts.iter().map(|p| p.to_vec()).collect()
}

/// Commands for one key, built from its chunks.
pub struct KeyCommands {
    key: Vec<u8>,
    expire_at_ms: Option<i64>,
    opts: CommandOptions,
    started: bool,
    finished: bool,
}

impl KeyCommands {
    pub fn new(header: &KeyHeader, opts: CommandOptions) -> Self {
        KeyCommands {
            key: header.key.clone(),
            expire_at_ms: header.expire_at_ms,
            opts,
            started: false,
            finished: false,
        }
    }

    /// Pull the next chunk of the pending value from `parser` and return its commands;
    /// the last batch carries the expiry. `None` when the key is done.
    pub fn next_batch<R: Read>(
        &mut self,
        parser: &mut RdbParser<R>,
    ) -> Result<Option<Vec<Command>>> {
        if self.finished {
            return Ok(None);
        }
        let ver = self.opts.restore_version.unwrap_or(parser.version() as u16);
        match parser.next_chunk()? {
            Some(c) => Ok(Some(self.chunk_commands(&c, ver))),
            None => {
                self.finished = true;
                let out = self.finish();
                Ok((!out.is_empty()).then_some(out))
            }
        }
    }

    /// Commands for one chunk (for callers pulling chunks themselves). `rdb_version`
    /// goes into RESTORE payloads of unknown module values.
    pub fn chunk_commands(&mut self, chunk: &ValueChunk, rdb_version: u16) -> Vec<Command> {
        let k = &self.key[..];
        let mut out = Vec::new();
        if !self.started {
            self.started = true;
            if self.opts.replace {
                out.push(cmd(&[b"DEL", k]));
            }
        }
        let multi = |name: &[u8], items: &mut dyn Iterator<Item = Vec<u8>>| -> Command {
            let mut c = vec![name.to_vec(), k.to_vec()];
            c.extend(items);
            c
        };
        match chunk {
            ValueChunk::String(v) => out.push(cmd(&[b"SET", k, v])),
            ValueChunk::StringAppend(v) => out.push(cmd(&[b"APPEND", k, v])),
            ValueChunk::List(v) if !v.is_empty() => {
                out.push(multi(b"RPUSH", &mut v.iter().map(|x| x.to_vec())))
            }
            ValueChunk::Set(v) if !v.is_empty() => {
                out.push(multi(b"SADD", &mut v.iter().map(|x| x.to_vec())))
            }
            ValueChunk::Zset { members, scores } if !members.is_empty() => out.push(multi(
                b"ZADD",
                &mut members
                    .iter()
                    .zip(scores)
                    .flat_map(|(m, s)| [format_double(*s).into_bytes(), m.to_vec()]),
            )),
            ValueChunk::Hash {
                fields,
                values,
                expire_at_ms,
            } if !fields.is_empty() => {
                out.push(multi(
                    b"HSET",
                    &mut fields
                        .iter()
                        .zip(values.iter())
                        .flat_map(|(f, v)| [f.to_vec(), v.to_vec()]),
                ));
                let mut by_time: BTreeMap<i64, Vec<Vec<u8>>> = BTreeMap::new();
                for (f, ttl) in fields.iter().zip(expire_at_ms) {
                    if let Some(t) = ttl {
                        by_time.entry(*t).or_default().push(f.to_vec());
                    }
                }
                for (t, fields) in by_time {
                    let mut c = cmd(&[b"HPEXPIREAT", k, t.to_string().as_bytes(), b"FIELDS"]);
                    c.push(fields.len().to_string().into_bytes());
                    c.extend(fields);
                    out.push(c);
                }
            }
            ValueChunk::StreamEntries(v) => {
                for e in v.iter().filter(|e| !e.fields.is_empty()) {
                    let mut c = cmd(&[b"XADD", k, &id_arg(e.id)]);
                    for (f, val) in &e.fields {
                        c.push(f.clone());
                        c.push(val.clone());
                    }
                    out.push(c);
                }
            }
            ValueChunk::StreamMeta(m) => {
                if m.length == 0 {
                    // XADD cannot create an empty stream: add a placeholder and delete it;
                    // XSETID then restores the counters.
                    out.push(cmd(&[b"XADD", k, b"0-1", b"_", b"_"]));
                    out.push(cmd(&[b"XDEL", k, b"0-1"]));
                }
                let mut c = cmd(&[b"XSETID", k, &id_arg(m.last_id)]);
                if let (Some(added), Some(maxdel)) = (m.entries_added, m.max_deleted_id) {
                    c.push(b"ENTRIESADDED".to_vec());
                    c.push(added.to_string().into_bytes());
                    c.push(b"MAXDELETEDID".to_vec());
                    c.push(id_arg(maxdel));
                }
                out.push(c);
            }
            ValueChunk::StreamGroup(g) => {
                let mut c = cmd(&[
                    b"XGROUP",
                    b"CREATE",
                    k,
                    &g.name,
                    &id_arg(g.last_delivered_id),
                ]);
                if let Some(er) = g.entries_read {
                    c.push(b"ENTRIESREAD".to_vec());
                    // -1 (unknown) is stored as u64::MAX.
                    c.push((er as i64).to_string().into_bytes());
                }
                out.push(c);
                for cons in &g.consumers {
                    out.push(cmd(&[b"XGROUP", b"CREATECONSUMER", k, &g.name, &cons.name]));
                }
                for p in &g.pending {
                    let Some(owner) = &p.consumer else { continue };
                    out.push(cmd(&[
                        b"XCLAIM",
                        k,
                        &g.name,
                        owner,
                        b"0",
                        &id_arg(p.id),
                        b"TIME",
                        p.delivery_time_ms.to_string().as_bytes(),
                        b"RETRYCOUNT",
                        p.delivery_count.to_string().as_bytes(),
                        b"FORCE",
                        b"JUSTID",
                    ]));
                }
            }
            ValueChunk::TairString {
                value,
                version,
                flags,
            } => {
                let mut c = cmd(&[b"EXSET", k, value]);
                if *version > 0 {
                    c.push(b"ABS".to_vec());
                    c.push(version.to_string().into_bytes());
                }
                if *flags != 0 {
                    c.push(b"FLAGS".to_vec());
                    c.push(flags.to_string().into_bytes());
                }
                out.push(c);
            }
            ValueChunk::TairHash(v) => {
                for f in v {
                    let mut c = cmd(&[b"EXHSET", k, &f.field, &f.value]);
                    if f.expire_at_ms != 0 {
                        c.push(b"PXAT".to_vec());
                        c.push(f.expire_at_ms.to_string().into_bytes());
                    }
                    if f.version > 0 {
                        c.push(b"ABS".to_vec());
                        c.push(f.version.to_string().into_bytes());
                    }
                    out.push(c);
                }
            }
            ValueChunk::TairZset(v) if !v.is_empty() => out.push(multi(
                b"EXZADD",
                &mut v.iter().flat_map(|(m, s)| {
                    let score: Vec<String> = s.iter().map(|d| format_double(*d)).collect();
                    [score.join("#").into_bytes(), m.clone()]
                }),
            )),
            ValueChunk::ModuleRaw { raw, .. } => {
                out.push(cmd(&[
                    b"RESTORE",
                    k,
                    b"0",
                    &dump_payload(raw, rdb_version),
                    b"REPLACE",
                ]));
            }
            _ => {}
        }
        out
    }

    /// The closing commands (the key's expiry).
    pub fn finish(&mut self) -> Vec<Command> {
        match self.expire_at_ms {
            Some(t) if self.started => {
                vec![cmd(&[b"PEXPIREAT", &self.key, t.to_string().as_bytes()])]
            }
            _ => vec![],
        }
    }
}

/// `FUNCTION LOAD REPLACE <code>` for a function library event.
pub fn function_command(code: &[u8]) -> Command {
    cmd(&[b"FUNCTION", b"LOAD", b"REPLACE", code])
}

/// RESP encoding of a command (array of bulk strings).
pub fn encode_resp(c: &Command, out: &mut Vec<u8>) {
    // The same encoder as every other RESP tandem writes (redis-protocol's).
    let mut buf = bytes::BytesMut::new();
    let args: Vec<&[u8]> = c.iter().map(|a| a.as_slice()).collect();
    crate::redis::conn::encode_command(&mut buf, &args);
    out.extend_from_slice(&buf);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_round_trip() {
        for v in [
            0.0,
            -0.0,
            1.0,
            2.5,
            -3.25,
            0.1,
            1e-300,
            1e300,
            3479099956230698.0,
            1.0 / 3.0,
            f64::MAX,
            f64::MIN_POSITIVE,
            5e-324,
        ] {
            let s = format_double(v);
            assert_eq!(
                s.parse::<f64>().unwrap().to_bits(),
                v.to_bits(),
                "{v} -> {s}"
            );
        }
        assert_eq!(format_double(f64::INFINITY), "inf");
        assert_eq!(format_double(f64::NEG_INFINITY), "-inf");
        assert_eq!(format_double(2.5), "2.5");
        assert_eq!(format_double(3.0), "3");
    }
}
