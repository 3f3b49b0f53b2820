//! Streams (RDB types 15, 19, 21): a radix tree of listpacks keyed by master IDs,
//! then metadata, then consumer groups with their PEL and consumers.
//!
//! Each listpack node holds a master entry (`count deleted nfields field… 0`) and then
//! entries `flags ms-diff seq-diff [nfields] (field value…|value…) lp-count`, IDs being
//! deltas from the node key. Flag 1 = deleted, 2 = same fields as the master entry.

use std::collections::{HashMap, VecDeque};
use std::io::Read;

use super::error::{RdbError, Result};
use super::listpack::{self, LpVal};
use super::reader::Source;
use super::types::*;

const FLAG_DELETED: i64 = 1;
const FLAG_SAMEFIELDS: i64 = 2;

fn stream_version(t: u8) -> u8 {
    match t {
        rdb_type::STREAM_LISTPACKS => 1,
        rdb_type::STREAM_LISTPACKS_2 => 2,
        _ => 3,
    }
}

fn read_id<R: Read>(src: &mut Source<R>, what: &'static str) -> Result<StreamId> {
    Ok(StreamId {
        ms: src.len(what)?,
        seq: src.len(what)?,
    })
}

fn raw_id<R: Read>(src: &mut Source<R>, what: &'static str) -> Result<StreamId> {
    let b = src.take(16, what)?;
    Ok(StreamId {
        ms: u64::from_be_bytes(b[..8].try_into().unwrap_or([0; 8])),
        seq: u64::from_be_bytes(b[8..].try_into().unwrap_or([0; 8])),
    })
}

/// Decode one listpack node into its live entries.
fn decode_node(
    master: StreamId,
    lp: &[u8],
    out: &mut VecDeque<StreamEntry>,
) -> std::result::Result<(), String> {
    let vals =
        listpack::decode(lp).map_err(|(at, m)| format!("{m} (byte {at} of the listpack)"))?;
    let mut it = vals.into_iter();
    let int =
        |it: &mut std::vec::IntoIter<LpVal<'_>>, what: &str| -> std::result::Result<i64, String> {
            it.next()
                .and_then(|v| v.as_int())
                .ok_or_else(|| format!("missing or non-integer {what}"))
        };
    let count = int(&mut it, "entry count")?;
    let deleted = int(&mut it, "deleted count")?;
    let nmaster = int(&mut it, "master field count")?;
    if count < 0 || deleted < 0 || nmaster < 0 {
        return Err("negative count in master entry".into());
    }
    let mut master_fields = Vec::new();
    for _ in 0..nmaster {
        master_fields.push(it.next().ok_or("missing master field")?.to_bytes());
    }
    if int(&mut it, "master terminator")? != 0 {
        return Err("master entry not terminated by 0".into());
    }
    let total = count + deleted;
    let mut live = 0;
    for _ in 0..total {
        let flags = int(&mut it, "entry flags")?;
        let ms_diff = int(&mut it, "entry ms delta")?;
        let seq_diff = int(&mut it, "entry seq delta")?;
        let id = StreamId {
            ms: master.ms.wrapping_add(ms_diff as u64),
            seq: master.seq.wrapping_add(seq_diff as u64),
        };
        let mut fields = Vec::new();
        if flags & FLAG_SAMEFIELDS != 0 {
            for f in &master_fields {
                let v = it.next().ok_or("missing entry value")?.to_bytes();
                fields.push((f.clone(), v));
            }
        } else {
            let n = int(&mut it, "entry field count")?;
            if n < 0 {
                return Err("negative field count".into());
            }
            for _ in 0..n {
                let f = it.next().ok_or("missing entry field")?.to_bytes();
                let v = it.next().ok_or("missing entry value")?.to_bytes();
                fields.push((f, v));
            }
        }
        int(&mut it, "entry lp-count")?;
        if flags & FLAG_DELETED == 0 {
            live += 1;
            out.push_back(StreamEntry { id, fields });
        }
    }
    if live != count {
        return Err(format!(
            "master entry says {count} live entries, found {live}"
        ));
    }
    if it.next().is_some() {
        return Err("trailing elements after the last entry".into());
    }
    Ok(())
}

enum Phase {
    Start,
    Nodes(u64),
    Meta,
    Groups(Option<u64>),
    Done,
}

pub(crate) struct StreamDecoder {
    ver: u8,
    phase: Phase,
    queue: VecDeque<StreamEntry>,
}

impl StreamDecoder {
    pub(crate) fn new(t: u8) -> Self {
        StreamDecoder {
            ver: stream_version(t),
            phase: Phase::Start,
            queue: VecDeque::new(),
        }
    }

    pub(crate) fn next<R: Read>(
        &mut self,
        src: &mut Source<R>,
        max_elems: usize,
    ) -> Result<Option<ValueChunk>> {
        loop {
            match &mut self.phase {
                Phase::Start => self.phase = Phase::Nodes(src.count("stream listpack count")?),
                Phase::Nodes(left) => {
                    if !self.queue.is_empty() {
                        let n = self.queue.len().min(max_elems.max(1));
                        return Ok(Some(ValueChunk::StreamEntries(
                            self.queue.drain(..n).collect(),
                        )));
                    }
                    if *left == 0 {
                        self.phase = Phase::Meta;
                        continue;
                    }
                    *left -= 1;
                    let at = src.offset();
                    let key = src.string("stream node key")?;
                    if key.len() != 16 {
                        return Err(RdbError::corrupt(
                            at,
                            "stream node key",
                            format!("{} bytes, expected 16", key.len()),
                        ));
                    }
                    let master = StreamId {
                        ms: u64::from_be_bytes(key[..8].try_into().unwrap_or([0; 8])),
                        seq: u64::from_be_bytes(key[8..].try_into().unwrap_or([0; 8])),
                    };
                    let at = src.offset();
                    let lp = src.string("stream listpack")?;
                    decode_node(master, &lp, &mut self.queue)
                        .map_err(|d| RdbError::corrupt(at, "stream listpack", d))?;
                }
                Phase::Meta => {
                    let length = src.len("stream length")?;
                    let last_id = read_id(src, "stream last id")?;
                    let (first_id, max_deleted_id, entries_added) = if self.ver >= 2 {
                        (
                            Some(read_id(src, "stream first id")?),
                            Some(read_id(src, "stream max deleted id")?),
                            Some(src.len("stream entries added")?),
                        )
                    } else {
                        (None, None, None)
                    };
                    self.phase = Phase::Groups(None);
                    return Ok(Some(ValueChunk::StreamMeta(StreamMeta {
                        length,
                        last_id,
                        first_id,
                        max_deleted_id,
                        entries_added,
                    })));
                }
                Phase::Groups(None) => {
                    self.phase = Phase::Groups(Some(src.count("stream group count")?))
                }
                Phase::Groups(Some(0)) => {
                    self.phase = Phase::Done;
                    return Ok(None);
                }
                Phase::Groups(Some(left)) => {
                    *left -= 1;
                    return Ok(Some(ValueChunk::StreamGroup(read_group(src, self.ver)?)));
                }
                Phase::Done => return Ok(None),
            }
        }
    }
}

fn read_group<R: Read>(src: &mut Source<R>, ver: u8) -> Result<StreamGroup> {
    let name = src.string("consumer group name")?;
    let last_delivered_id = read_id(src, "consumer group last id")?;
    let entries_read = if ver >= 2 {
        Some(src.len("consumer group entries read")?)
    } else {
        None
    };
    let n = src.count("group PEL size")?;
    let mut pending = Vec::new();
    let mut index = HashMap::new();
    for _ in 0..n {
        let at = src.offset();
        let id = raw_id(src, "PEL entry id")?;
        let delivery_time_ms = src.u64_le("PEL delivery time")?;
        let delivery_count = src.len("PEL delivery count")?;
        if index.insert(id, pending.len()).is_some() {
            return Err(RdbError::corrupt(
                at,
                "group PEL",
                format!("duplicate id {id}"),
            ));
        }
        pending.push(PendingEntry {
            id,
            consumer: None,
            delivery_time_ms,
            delivery_count,
        });
    }
    let nc = src.count("consumer count")?;
    let mut consumers = Vec::new();
    for _ in 0..nc {
        let cname = src.string("consumer name")?;
        let seen_time_ms = src.u64_le("consumer seen time")?;
        let active_time_ms = if ver >= 3 {
            Some(src.u64_le("consumer active time")?)
        } else {
            None
        };
        let np = src.count("consumer PEL size")?;
        for _ in 0..np {
            let at = src.offset();
            let id = raw_id(src, "consumer PEL id")?;
            let Some(&i) = index.get(&id) else {
                return Err(RdbError::corrupt(
                    at,
                    "consumer PEL",
                    format!("{id} not in the group PEL"),
                ));
            };
            pending[i].consumer = Some(cname.clone());
        }
        consumers.push(Consumer {
            name: cname,
            seen_time_ms,
            active_time_ms,
            pending: np,
        });
    }
    Ok(StreamGroup {
        name,
        last_delivered_id,
        entries_read,
        pending,
        consumers,
    })
}

pub(crate) fn skip_stream<R: Read>(src: &mut Source<R>, t: u8) -> Result<()> {
    let ver = stream_version(t);
    let nodes = src.count("stream listpack count")?;
    for _ in 0..nodes {
        src.skip_string("stream node key")?;
        src.skip_string("stream listpack")?;
    }
    src.len("stream length")?;
    read_id(src, "stream last id")?;
    if ver >= 2 {
        read_id(src, "stream first id")?;
        read_id(src, "stream max deleted id")?;
        src.len("stream entries added")?;
    }
    let groups = src.count("stream group count")?;
    for _ in 0..groups {
        src.skip_string("consumer group name")?;
        read_id(src, "consumer group last id")?;
        if ver >= 2 {
            src.len("consumer group entries read")?;
        }
        let n = src.count("group PEL size")?;
        for _ in 0..n {
            src.skip(16 + 8, "PEL entry")?;
            src.len("PEL delivery count")?;
        }
        let nc = src.count("consumer count")?;
        for _ in 0..nc {
            src.skip_string("consumer name")?;
            src.skip(if ver >= 3 { 16 } else { 8 }, "consumer times")?;
            let np = src.count("consumer PEL size")?;
            src.skip(np.saturating_mul(16), "consumer PEL")?;
        }
    }
    Ok(())
}
