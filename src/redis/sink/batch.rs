//! A batch: commands already encoded as RESP, so that a batch resent after a lost
//! connection is byte-for-byte what was sent the first time.

use bytes::{Bytes, BytesMut};

use super::checkpoint::TargetCheckpoint;
use crate::redis::conn::encode_command;
use crate::redis::scan::{self, Scan};

/// Collects commands for one transaction. `SELECT` is emitted whenever the db changes,
/// and always before the first command, so a batch never depends on connection state.
pub struct BatchBuilder {
    buf: BytesMut,
    db: Option<u32>,
    /// For each queued command: the source offset (None for the SELECTs the builder
    /// adds), to name a failing command in errors.
    origin: Vec<Option<u64>>,
    data_commands: usize,
}

impl Default for BatchBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl BatchBuilder {
    pub fn new() -> Self {
        let mut buf = BytesMut::with_capacity(64 * 1024);
        encode_command(&mut buf, &[b"MULTI"]);
        Self {
            buf,
            db: None,
            origin: Vec::new(),
            data_commands: 0,
        }
    }

    /// Queue `argv` to run in target db `db`; `offset` is the source offset after it.
    pub fn push(&mut self, db: u32, argv: &[Bytes], offset: u64) {
        self.select(db);
        let args: Vec<&[u8]> = argv.iter().map(|a| a.as_ref()).collect();
        encode_command(&mut self.buf, &args);
        self.origin.push(Some(offset));
        self.data_commands += 1;
    }

    /// Queue a command already encoded as RESP (`raw`, forwarded as is).
    pub fn push_encoded(&mut self, db: u32, raw: &[u8], offset: u64) {
        self.select(db);
        self.buf.extend_from_slice(raw);
        self.origin.push(Some(offset));
        self.data_commands += 1;
    }

    fn select(&mut self, db: u32) {
        if self.db != Some(db) {
            encode_command(&mut self.buf, &[b"SELECT", db.to_string().as_bytes()]);
            self.origin.push(None);
            self.db = Some(db);
        }
    }

    /// Data commands queued so far.
    pub fn len(&self) -> usize {
        self.data_commands
    }

    pub fn is_empty(&self) -> bool {
        self.data_commands == 0
    }

    /// Encoded bytes so far.
    pub fn bytes(&self) -> usize {
        self.buf.len()
    }

    /// Close the transaction with the checkpoint write.
    pub fn finish(mut self, ckpt: TargetCheckpoint, ckpt_key: &Bytes) -> Batch {
        self.db = None;
        self.select(0);
        ckpt.encode_hset(&mut self.buf, ckpt_key);
        self.origin.push(None);
        encode_command(&mut self.buf, &[b"EXEC"]);
        Batch {
            payload: self.buf.freeze(),
            origin: self.origin,
            data_commands: self.data_commands,
            ckpt,
            plain: false,
        }
    }
}

/// One transaction ready to send.
pub struct Batch {
    pub payload: Bytes,
    /// Per command after `MULTI`: its source offset, or `None` for tandem's own (a
    /// SELECT, the checkpoint). Names are read back from `payload` when an error needs
    /// one, so a batch holds no reference per command.
    pub origin: Vec<Option<u64>>,
    pub data_commands: usize,
    pub ckpt: TargetCheckpoint,
    /// A pipeline of idempotent commands without `MULTI`/`EXEC` and without the
    /// checkpoint (a cluster target's full-sync RESTOREs, sent per master): one reply
    /// per command, and `ckpt` is only where the batch ends.
    pub plain: bool,
}

impl Batch {
    /// Replies the target sends: +OK for MULTI, one per queued command, EXEC's array
    /// (a plain batch: one per command).
    pub fn replies(&self) -> usize {
        if self.plain {
            self.origin.len()
        } else {
            self.origin.len() + 2
        }
    }

    /// The command at `i` (counted after `MULTI`, as replies are) and its source offset,
    /// for messages; `bookkeeping` names tandem's own commands.
    pub fn describe(&self, i: usize, bookkeeping: &str) -> (String, u64) {
        match self.origin.get(i) {
            Some(Some(off)) => (self.command_name(i + usize::from(!self.plain)), *off),
            Some(None) => (bookkeeping.into(), self.ckpt.pos.offset),
            None => ("EXEC".into(), self.ckpt.pos.offset),
        }
    }

    /// The upper-cased name of the `n`-th command of the payload (never its arguments,
    /// which may be secrets).
    fn command_name(&self, n: usize) -> String {
        let mut rest = &self.payload[..];
        let mut spans = Vec::new();
        for k in 0..=n {
            let Scan::Complete { used } = scan::command(rest, &mut spans) else {
                break;
            };
            if k == n {
                return spans
                    .first()
                    .map(|r| String::from_utf8_lossy(&rest[r.clone()]).to_ascii_uppercase())
                    .unwrap_or_default();
            }
            rest = &rest[used..];
        }
        "?".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::ReplPosition;
    use crate::redis::sink::CkptState;

    #[test]
    fn a_failing_command_is_named_from_the_payload() {
        let mut b = BatchBuilder::new();
        b.push(
            3,
            &[Bytes::from_static(b"set"), Bytes::from_static(b"k")],
            10,
        );
        b.push_encoded(3, b"*2\r\n$4\r\nincr\r\n$1\r\nn\r\n", 20);
        let ckpt = TargetCheckpoint {
            pos: ReplPosition::new("r", 20),
            db: 3,
            state: CkptState::Incr,
            run: "x".into(),
            seq: 1,
        };
        let batch = b.finish(ckpt, &Bytes::from_static(b"__tandem:ckpt:t"));
        // MULTI, then: SELECT 3, SET, INCR, SELECT 0, HSET, EXEC.
        assert_eq!(batch.replies(), 7);
        let d = |i| batch.describe(i, "(tandem)");
        assert_eq!(d(0), ("(tandem)".into(), 20));
        assert_eq!(d(1), ("SET".into(), 10));
        assert_eq!(d(2), ("INCR".into(), 20));
        assert_eq!(d(4), ("(tandem)".into(), 20));
        assert_eq!(d(5), ("EXEC".into(), 20));
    }
}
