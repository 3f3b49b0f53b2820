//! `tandem rdb inspect FILE --format summary|json|resp`.
//!
//! - `summary`: keys per db and type, encodings, value sizes, biggest keys.
//! - `json`: one line per key: `db`, `key`, `type`, `encoding`, `expire_at_ms`, `value`
//!   in the canonical form of the shared fixture manifests (text or `{"b64"}` bytes;
//!   sets sorted; zsets `[member, score]` in rank order with `"inf"`/`"-inf"`; hashes
//!   as objects; streams as `{entries, groups, length, last_generated_id}`), plus
//!   `field_expire_at_ms` for hash field TTLs, and Tair values as
//!   `{value, version, flags}` / `{len, fields}` / `{card, score_num, members}`.
//! - `resp`: the commands that recreate the dataset (SELECT, the key commands, expiries,
//!   FUNCTION LOAD), for `redis-cli --pipe`.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::path::Path;

use serde_json::{Map, Value, json};

use super::decode::{CommandOptions, KeyCommands, encode_resp, function_command};
use super::error::{RdbError, RdbErrorKind, Result};
use super::parser::RdbParser;
use super::types::rdb_type as t;
use super::types::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InspectFormat {
    Summary,
    Json,
    Resp,
}

impl std::str::FromStr for InspectFormat {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "summary" => Ok(InspectFormat::Summary),
            "json" => Ok(InspectFormat::Json),
            "resp" => Ok(InspectFormat::Resp),
            _ => Err(format!("unknown format {s:?} (summary, json, resp)")),
        }
    }
}

/// Parse the RDB file at `path` and write it to `out` in `format`.
pub fn inspect(path: &Path, format: InspectFormat, out: &mut dyn Write) -> Result<()> {
    let f = File::open(path).map_err(|e| RdbError::new(RdbErrorKind::Io(e), 0))?;
    let mut p = RdbParser::new(BufReader::with_capacity(1 << 16, f))?;
    match format {
        InspectFormat::Summary => summary(&mut p, out),
        InspectFormat::Json => json_lines(&mut p, out),
        InspectFormat::Resp => resp(&mut p, out),
    }
}

fn io_err(e: std::io::Error, at: u64) -> RdbError {
    RdbError::new(RdbErrorKind::Io(e), at)
}

/// Base64 (standard alphabet, padded) for non-UTF-8 bytes in JSON.
pub fn base64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::with_capacity(data.len().div_ceil(3) * 4);
    for c in data.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        s.push(A[(n >> 18) as usize & 63] as char);
        s.push(A[(n >> 12) as usize & 63] as char);
        s.push(if c.len() > 1 {
            A[(n >> 6) as usize & 63] as char
        } else {
            '='
        });
        s.push(if c.len() > 2 {
            A[n as usize & 63] as char
        } else {
            '='
        });
    }
    s
}

/// Text when valid UTF-8, else `{"b64": …}`.
pub fn bytes_json(b: &[u8]) -> Value {
    match std::str::from_utf8(b) {
        Ok(s) => Value::String(s.to_string()),
        Err(_) => json!({ "b64": base64(b) }),
    }
}

fn score_json(s: f64) -> Value {
    if s.is_infinite() {
        Value::String(if s > 0.0 { "inf" } else { "-inf" }.into())
    } else {
        serde_json::Number::from_f64(s)
            .map(Value::Number)
            .unwrap_or(Value::String("nan".into()))
    }
}

/// The family name `TYPE` would answer (module values: their type name).
pub fn type_name(rt: u8) -> &'static str {
    match rt {
        t::STRING => "string",
        t::LIST | t::LIST_ZIPLIST | t::LIST_QUICKLIST | t::LIST_QUICKLIST_2 => "list",
        t::SET | t::SET_INTSET | t::SET_LISTPACK => "set",
        t::ZSET | t::ZSET_2 | t::ZSET_ZIPLIST | t::ZSET_LISTPACK => "zset",
        t::STREAM_LISTPACKS | t::STREAM_LISTPACKS_2 | t::STREAM_LISTPACKS_3 => "stream",
        t::MODULE_2 | t::MODULE_PRE_GA => "module",
        _ => "hash",
    }
}

/// The serialized encoding, named after Redis' object encodings.
pub fn encoding_name(rt: u8) -> &'static str {
    match rt {
        t::STRING => "string",
        t::LIST => "linkedlist",
        t::SET | t::HASH => "hashtable",
        t::ZSET | t::ZSET_2 => "skiplist",
        t::HASH_ZIPMAP => "zipmap",
        t::LIST_ZIPLIST | t::ZSET_ZIPLIST | t::HASH_ZIPLIST => "ziplist",
        t::SET_INTSET => "intset",
        t::LIST_QUICKLIST => "quicklist",
        t::LIST_QUICKLIST_2 => "quicklist2",
        t::HASH_LISTPACK | t::ZSET_LISTPACK | t::SET_LISTPACK => "listpack",
        t::STREAM_LISTPACKS | t::STREAM_LISTPACKS_2 | t::STREAM_LISTPACKS_3 => "stream",
        t::MODULE_2 | t::MODULE_PRE_GA => "module",
        t::HASH_METADATA_PRE_GA | t::HASH_METADATA => "hashtable-ex",
        _ => "listpackex",
    }
}

/// Accumulates a key's chunks into its canonical JSON value.
#[derive(Default)]
pub struct CanonicalBuilder {
    string: Option<Vec<u8>>,
    list: Vec<Value>,
    set: Vec<Vec<u8>>,
    zset: Vec<(Vec<u8>, f64)>,
    hash: Map<String, Value>,
    hash_ttl: Map<String, Value>,
    entries: Vec<Value>,
    meta: Option<StreamMeta>,
    groups: Vec<Value>,
    module: Option<(String, Value)>,
    tair_hash: Vec<TairHashField>,
    tair_zset: Vec<(Vec<u8>, Vec<f64>)>,
    family: &'static str,
}

impl CanonicalBuilder {
    pub fn new(rdb_type: u8) -> Self {
        CanonicalBuilder {
            family: type_name(rdb_type),
            ..Default::default()
        }
    }

    pub fn add(&mut self, c: ValueChunk) {
        match c {
            ValueChunk::String(v) => self.string = Some(v),
            ValueChunk::StringAppend(v) => {
                self.string.get_or_insert_default().extend_from_slice(&v)
            }
            ValueChunk::List(v) => self.list.extend(v.iter().map(bytes_json)),
            ValueChunk::Set(v) => self.set.extend(v.iter().map(<[u8]>::to_vec)),
            ValueChunk::Zset { members, scores } => self
                .zset
                .extend(members.iter().map(<[u8]>::to_vec).zip(scores)),
            ValueChunk::Hash {
                fields,
                values,
                expire_at_ms,
            } => {
                for ((f, v), ttl) in fields.iter().zip(values.iter()).zip(expire_at_ms) {
                    let name = String::from_utf8_lossy(f).into_owned();
                    if let Some(t) = ttl {
                        self.hash_ttl.insert(name.clone(), json!(t));
                    }
                    self.hash.insert(name, bytes_json(v));
                }
            }
            ValueChunk::StreamEntries(v) => {
                for e in v {
                    let mut m = Map::new();
                    for (f, val) in &e.fields {
                        m.insert(String::from_utf8_lossy(f).into_owned(), bytes_json(val));
                    }
                    self.entries.push(json!([e.id.to_string(), m]));
                }
            }
            ValueChunk::StreamMeta(m) => self.meta = Some(m),
            ValueChunk::StreamGroup(g) => {
                let consumers: Vec<Value> = g
                    .consumers
                    .iter()
                    .map(|c| json!({"name": bytes_json(&c.name), "pending": c.pending}))
                    .collect();
                let pending: Vec<Value> = g
                    .pending
                    .iter()
                    .map(|p| json!([p.id.to_string(), p.consumer.as_deref().map(bytes_json)]))
                    .collect();
                self.groups.push(json!({
                    "name": bytes_json(&g.name),
                    "last_delivered_id": g.last_delivered_id.to_string(),
                    "consumers": consumers,
                    "pending": pending,
                }));
            }
            ValueChunk::TairString {
                value,
                version,
                flags,
            } => {
                self.module = Some((
                    "exstrtype".into(),
                    json!({"value": bytes_json(&value), "version": version, "flags": flags}),
                ))
            }
            ValueChunk::TairHash(v) => {
                self.module.get_or_insert(("tairhash-".into(), Value::Null));
                self.tair_hash.extend(v)
            }
            ValueChunk::TairZset(v) => {
                self.module.get_or_insert(("tairzset_".into(), Value::Null));
                self.tair_zset.extend(v)
            }
            ValueChunk::ModuleRaw { module_name, raw } => {
                self.module = Some((module_name, json!({"raw": bytes_json(&raw)})))
            }
        }
    }

    /// (type name, canonical value, field TTLs if any).
    pub fn finish(mut self) -> (String, Value, Option<Value>) {
        let ttl =
            (!self.hash_ttl.is_empty()).then(|| Value::Object(std::mem::take(&mut self.hash_ttl)));
        let v = match self.family {
            "string" => bytes_json(self.string.as_deref().unwrap_or_default()),
            "list" => Value::Array(self.list),
            "set" => {
                self.set.sort();
                Value::Array(self.set.iter().map(|x| bytes_json(x)).collect())
            }
            "zset" => {
                self.zset
                    .sort_by(|a, b| a.1.total_cmp(&b.1).then_with(|| a.0.cmp(&b.0)));
                Value::Array(
                    self.zset
                        .iter()
                        .map(|(m, s)| json!([bytes_json(m), score_json(*s)]))
                        .collect(),
                )
            }
            "hash" => Value::Object(self.hash),
            "stream" => {
                let m = self.meta.unwrap_or(StreamMeta {
                    length: 0,
                    last_id: StreamId::default(),
                    first_id: None,
                    max_deleted_id: None,
                    entries_added: None,
                });
                json!({
                    "entries": self.entries,
                    "groups": self.groups,
                    "length": m.length,
                    "last_generated_id": m.last_id.to_string(),
                })
            }
            _ => {
                let (name, v) = self.module.unwrap_or(("module".into(), Value::Null));
                let v = match name.as_str() {
                    "tairhash-" => {
                        self.tair_hash.sort_by(|a, b| a.field.cmp(&b.field));
                        let fields: Vec<Value> = self
                            .tair_hash
                            .iter()
                            .map(|f| {
                                json!({"field": bytes_json(&f.field), "value": bytes_json(&f.value),
                                       "version": f.version, "expire_at_ms": f.expire_at_ms})
                            })
                            .collect();
                        json!({"len": fields.len(), "fields": fields})
                    }
                    "tairzset_" => {
                        self.tair_zset.sort_by(|a, b| {
                            let o =
                                a.1.iter()
                                    .zip(&b.1)
                                    .map(|(x, y)| x.total_cmp(y))
                                    .find(|o| o.is_ne());
                            o.unwrap_or(std::cmp::Ordering::Equal)
                                .then_with(|| a.0.cmp(&b.0))
                        });
                        let dims = self.tair_zset.first().map(|m| m.1.len()).unwrap_or(0);
                        let members: Vec<Value> = self
                            .tair_zset
                            .iter()
                            .map(|(m, s)| {
                                let text: Vec<String> = s.iter().map(|d| super::decode::format_double(*d)).collect();
                                json!({"member": bytes_json(m), "score": text.join("#"),
                                       "scores_f64": s.iter().map(|d| score_json(*d)).collect::<Vec<_>>()})
                            })
                            .collect();
                        json!({"card": members.len(), "score_num": dims, "members": members})
                    }
                    _ => v,
                };
                return (name, v, ttl);
            }
        };
        (self.family.to_string(), v, ttl)
    }
}

fn json_lines<R: Read>(p: &mut RdbParser<R>, out: &mut dyn Write) -> Result<()> {
    while let Some(ev) = p.next_event()? {
        let Event::Key(k) = ev else { continue };
        let mut b = CanonicalBuilder::new(k.rdb_type);
        while let Some(c) = p.next_chunk()? {
            b.add(c);
        }
        let (ty, value, ttl) = b.finish();
        let mut line = json!({
            "db": k.db,
            "key": bytes_json(&k.key),
            "type": ty,
            "encoding": encoding_name(k.rdb_type),
            "expire_at_ms": k.expire_at_ms,
            "value": value,
        });
        if let (Some(ttl), Some(o)) = (ttl, line.as_object_mut()) {
            o.insert("field_expire_at_ms".into(), ttl);
        }
        writeln!(out, "{line}").map_err(|e| io_err(e, p.offset()))?;
    }
    Ok(())
}

fn resp<R: Read>(p: &mut RdbParser<R>, out: &mut dyn Write) -> Result<()> {
    let mut cur_db: Option<u64> = None;
    let mut buf = Vec::with_capacity(1 << 16);
    while let Some(ev) = p.next_event()? {
        match ev {
            Event::Function { code } => encode_resp(&function_command(&code), &mut buf),
            Event::Key(k) => {
                if cur_db != Some(k.db) {
                    cur_db = Some(k.db);
                    encode_resp(
                        &vec![b"SELECT".to_vec(), k.db.to_string().into_bytes()],
                        &mut buf,
                    );
                }
                let mut kc = KeyCommands::new(&k, CommandOptions::default());
                while let Some(batch) = kc.next_batch(p)? {
                    for c in &batch {
                        encode_resp(c, &mut buf);
                    }
                    if buf.len() > 1 << 16 {
                        out.write_all(&buf).map_err(|e| io_err(e, p.offset()))?;
                        buf.clear();
                    }
                }
            }
            _ => {}
        }
    }
    out.write_all(&buf).map_err(|e| io_err(e, p.offset()))
}

fn summary<R: Read>(p: &mut RdbParser<R>, out: &mut dyn Write) -> Result<()> {
    let mut per_db: BTreeMap<u64, BTreeMap<&'static str, (u64, u64)>> = BTreeMap::new();
    let mut encodings: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut biggest: Vec<(u64, u64, Vec<u8>, &'static str)> = Vec::new();
    let mut aux = Vec::new();
    let (mut functions, mut expiring, mut module_aux) = (0u64, 0u64, 0u64);
    let mut checksum = None;
    let mut pending: Option<KeyHeader> = None;
    let mut account =
        |k: KeyHeader, end: u64, biggest: &mut Vec<(u64, u64, Vec<u8>, &'static str)>| {
            let size = end - k.offset;
            let e = per_db
                .entry(k.db)
                .or_default()
                .entry(type_name(k.rdb_type))
                .or_default();
            e.0 += 1;
            e.1 += size;
            *encodings.entry(encoding_name(k.rdb_type)).or_default() += 1;
            biggest.push((size, k.db, k.key, type_name(k.rdb_type)));
            if biggest.len() > 64 {
                biggest.sort_by_key(|b| std::cmp::Reverse(b.0));
                biggest.truncate(10);
            }
        };
    loop {
        let ev = p.next_event()?;
        if let Some(k) = pending.take() {
            // The value was skipped by next_event; its end is where the next event began.
            let end = match &ev {
                Some(Event::Key(n)) => n.offset,
                _ => p.offset(),
            };
            account(k, end, &mut biggest);
        }
        let Some(ev) = ev else { break };
        match ev {
            Event::Aux { key, value } => aux.push((key, value)),
            Event::Function { .. } => functions += 1,
            Event::ModuleAux { .. } => module_aux += 1,
            Event::End { checksum: c } => checksum = c,
            Event::Key(k) => {
                if k.expire_at_ms.is_some() {
                    expiring += 1;
                }
                p.skip_value()?;
                let end = p.offset();
                account(k, end, &mut biggest);
            }
            _ => {}
        }
    }
    biggest.sort_by_key(|b| std::cmp::Reverse(b.0));
    biggest.truncate(10);
    let mut s = String::new();
    use std::fmt::Write as _;
    let _ = writeln!(s, "RDB version {} ({:?})", p.version(), p.magic());
    for (k, v) in &aux {
        let _ = writeln!(
            s,
            "aux {} = {}",
            String::from_utf8_lossy(k),
            String::from_utf8_lossy(v)
        );
    }
    let total: u64 = per_db.values().flat_map(|m| m.values()).map(|x| x.0).sum();
    let _ = writeln!(
        s,
        "keys: {total} ({expiring} with expiry); functions: {functions}; module aux: {module_aux}"
    );
    for (db, types) in &per_db {
        let n: u64 = types.values().map(|x| x.0).sum();
        let _ = writeln!(s, "db {db}: {n} keys");
        for (ty, (count, bytes)) in types {
            let _ = writeln!(s, "  {ty:<10} {count:>10} keys {bytes:>14} bytes");
        }
    }
    let _ = writeln!(s, "encodings:");
    for (e, n) in &encodings {
        let _ = writeln!(s, "  {e:<14} {n:>10}");
    }
    let _ = writeln!(s, "biggest keys (serialized bytes):");
    for (size, db, key, ty) in &biggest {
        let _ = writeln!(
            s,
            "  {size:>12}  db {db}  {ty:<8} {}",
            String::from_utf8_lossy(key)
        );
    }
    let _ = writeln!(
        s,
        "checksum: {}",
        checksum
            .map(|c| format!("{c:#018x} (verified)"))
            .unwrap_or_else(|| "none".into())
    );
    out.write_all(s.as_bytes())
        .map_err(|e| io_err(e, p.offset()))
}
