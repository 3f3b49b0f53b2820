//! A batch: commands already encoded as RESP, so that a batch resent after a lost
//! connection is byte-for-byte what was sent the first time.

use bytes::{Bytes, BytesMut};

use super::checkpoint::TargetCheckpoint;
use crate::redis::conn::encode_command;

/// Collects commands for one transaction. `SELECT` is emitted whenever the db changes,
/// and always before the first command, so a batch never depends on connection state.
pub struct BatchBuilder {
    buf: BytesMut,
    db: Option<u32>,
    /// For each queued command: the source command's name and offset (None for the
    /// SELECTs the builder adds), to name a failing command in errors.
    origin: Vec<Option<(Bytes, u64)>>,
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
        self.origin.push(Some((argv[0].clone(), offset)));
        self.data_commands += 1;
    }

    /// Queue a command already encoded as RESP (`raw`, forwarded as is); `name` is its
    /// first argument, for error messages.
    pub fn push_encoded(&mut self, db: u32, name: Bytes, raw: &[u8], offset: u64) {
        self.select(db);
        self.buf.extend_from_slice(raw);
        self.origin.push(Some((name, offset)));
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
        let argv = ckpt.hset_argv(ckpt_key);
        let args: Vec<&[u8]> = argv.iter().map(|a| a.as_ref()).collect();
        encode_command(&mut self.buf, &args);
        self.origin.push(None);
        encode_command(&mut self.buf, &[b"EXEC"]);
        Batch {
            payload: self.buf.freeze(),
            origin: self.origin,
            data_commands: self.data_commands,
            ckpt,
        }
    }
}

/// One transaction ready to send.
pub struct Batch {
    pub payload: Bytes,
    pub origin: Vec<Option<(Bytes, u64)>>,
    pub data_commands: usize,
    pub ckpt: TargetCheckpoint,
}

impl Batch {
    /// Replies the target sends: +OK for MULTI, one per queued command, EXEC's array.
    pub fn replies(&self) -> usize {
        self.origin.len() + 2
    }
}
