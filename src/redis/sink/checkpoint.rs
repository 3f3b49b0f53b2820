//! The checkpoint tandem keeps inside the target: a hash at `__tandem:ckpt:<id>` in
//! db 0, written in the same transaction as the data it describes.
//!
//! Fields: `replid`, `offset` (source stream bytes applied), `db` (source db selected at
//! that offset, needed to resume a stream that will not repeat its SELECT), `state`
//! (`full` while an RDB is being loaded, `incr` after), and `run`/`seq` (which batch of
//! which tandem run wrote it, to tell after a lost connection whether a batch landed).

use bytes::{Bytes, BytesMut};

use super::SinkError;
use crate::core::{ReplPosition, ShortId};
use crate::redis::conn::{Conn, Frame, decimal, frame_text, push_bulk};

pub const PREFIX: &str = "__tandem:ckpt:";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CkptState {
    /// A full sync is in progress: the position is the RDB's, not yet reached.
    Full,
    /// Everything up to the position is on the target.
    Incr,
}

impl CkptState {
    /// Its value in the checkpoint's `state` field.
    pub fn name(self) -> &'static str {
        match self {
            CkptState::Full => "full",
            CkptState::Incr => "incr",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetCheckpoint {
    pub pos: ReplPosition,
    pub db: u32,
    pub state: CkptState,
    /// Shared: one per batch, cloned without allocating.
    pub run: ShortId,
    pub seq: u64,
}

/// The `run` written in checkpoints: a value unlikely to repeat across tandem runs, so
/// that a sink recognises its own batches after a lost connection.
pub fn new_run_id() -> ShortId {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.write_u32(std::process::id());
    ShortId::from(format!("{:016x}", h.finish()))
}

pub fn key(id: &str) -> String {
    format!("{PREFIX}{id}")
}

impl TargetCheckpoint {
    /// Append the checkpoint's `HSET` to `buf` as RESP, the same command as
    /// [`TargetCheckpoint::hset_argv`] without allocating.
    pub fn encode_hset(&self, buf: &mut BytesMut, key: &[u8]) {
        self.stem().encode(buf, key, self.pos.offset, self.seq);
    }

    /// What this checkpoint shares with the next ones of the same stream and run.
    pub fn stem(&self) -> HsetStem {
        HsetStem::new(
            self.pos.replid.as_bytes(),
            self.db,
            self.state,
            self.run.as_bytes(),
        )
    }

    pub fn hset_argv(&self, key: &Bytes) -> Vec<Bytes> {
        let state = self.state.name();
        vec![
            Bytes::from_static(b"HSET"),
            key.clone(),
            Bytes::from_static(b"replid"),
            Bytes::copy_from_slice(self.pos.replid.as_bytes()),
            Bytes::from_static(b"db"),
            Bytes::from(self.db.to_string()),
            Bytes::from_static(b"state"),
            Bytes::from_static(state.as_bytes()),
            Bytes::from_static(b"run"),
            Bytes::copy_from_slice(self.run.as_bytes()),
            Bytes::from_static(b"offset"),
            Bytes::from(self.pos.offset.to_string()),
            Bytes::from_static(b"seq"),
            Bytes::from(self.seq.to_string()),
        ]
    }

    /// Read the checkpoint of `id` (selecting db 0 on `conn`).
    pub async fn load(conn: &mut Conn, id: &str) -> Result<Option<Self>, SinkError> {
        let k = key(id);
        conn.query(&[b"SELECT", b"0"]).await?;
        let reply = conn.query(&[b"HGETALL", k.as_bytes()]).await?;
        Self::from_hgetall(conn.endpoint(), k.as_bytes(), reply)
    }

    /// A checkpoint from the `HGETALL` reply of its hash (empty: none).
    pub fn from_hgetall(
        endpoint: &str,
        key: &[u8],
        reply: Frame,
    ) -> Result<Option<Self>, SinkError> {
        let bad = |detail: String| SinkError::BadCheckpoint {
            endpoint: endpoint.to_string(),
            key: String::from_utf8_lossy(key).into_owned(),
            detail,
        };
        let Frame::Array(items) = reply else {
            return Err(bad(format!("HGETALL answered {reply:?}")));
        };
        if items.is_empty() {
            return Ok(None);
        }
        let mut fields = std::collections::HashMap::new();
        for pair in items.chunks(2) {
            if let [f, v] = pair {
                fields.insert(
                    frame_text(f).unwrap_or_default(),
                    frame_text(v).unwrap_or_default(),
                );
            }
        }
        let get = |name: &str| {
            fields
                .get(name)
                .cloned()
                .ok_or_else(|| bad(format!("field {name} missing")))
        };
        let num = |name: &str| -> Result<u64, SinkError> {
            get(name)?
                .parse()
                .map_err(|_| bad(format!("field {name} is not a number")))
        };
        let state = match get("state")?.as_str() {
            "full" => CkptState::Full,
            "incr" => CkptState::Incr,
            other => return Err(bad(format!("unknown state {other:?}"))),
        };
        Ok(Some(TargetCheckpoint {
            pos: ReplPosition::new(get("replid")?, num("offset")?),
            db: num("db")? as u32,
            state,
            run: ShortId::from(get("run")?),
            seq: num("seq")?,
        }))
    }
}

/// The RESP of a checkpoint's fields that stay the same from one batch to the next
/// (replid, db, state, run), encoded once: a cluster target writes a checkpoint per slot
/// batch of a few commands, and encoding all six fields each time was 6% of tandem's CPU.
/// The field order is free: readers look fields up by name.
#[derive(Debug, Clone)]
pub struct HsetStem(Bytes);

impl HsetStem {
    pub fn new(replid: &[u8], db: u32, state: CkptState, run: &[u8]) -> Self {
        let mut db_text = [0u8; 20];
        let mut mid = BytesMut::new();
        for a in [
            &b"replid"[..],
            replid,
            b"db",
            decimal(u64::from(db), &mut db_text),
            b"state",
            state.name().as_bytes(),
            b"run",
            run,
        ] {
            push_bulk(&mut mid, a);
        }
        HsetStem(mid.freeze())
    }

    /// Append `HSET key <stem> offset <offset> seq <seq>`.
    pub fn encode(&self, buf: &mut BytesMut, key: &[u8], offset: u64, seq: u64) {
        let (mut o, mut s) = ([0u8; 20], [0u8; 20]);
        buf.reserve(self.0.len() + key.len() + 80);
        buf.extend_from_slice(b"*14\r\n$4\r\nHSET\r\n");
        push_bulk(buf, key);
        buf.extend_from_slice(&self.0);
        push_bulk(buf, b"offset");
        push_bulk(buf, decimal(offset, &mut o));
        push_bulk(buf, b"seq");
        push_bulk(buf, decimal(seq, &mut s));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redis::conn::encode_command;

    #[test]
    fn the_encoded_hset_is_the_hset_argv() {
        let c = TargetCheckpoint {
            pos: ReplPosition::new("8f3a", 18_446_744_073_709_551_615),
            db: 7,
            state: CkptState::Incr,
            run: "r1".into(),
            seq: 0,
        };
        let key = Bytes::from_static(b"__tandem:ckpt:x:{06S}");
        let mut ours = BytesMut::new();
        c.encode_hset(&mut ours, &key);
        let argv = c.hset_argv(&key);
        let args: Vec<&[u8]> = argv.iter().map(|a| a.as_ref()).collect();
        let mut want = BytesMut::new();
        encode_command(&mut want, &args);
        assert_eq!(ours, want);
    }
}
