//! A recorded oplog: the BSON file `mongodump --oplog` writes (`oplog.bson`), a dump of
//! `local.oplog.rs` (concatenated BSON documents), or JSON lines of Extended JSON.
//! Read in order, one entry at a time, through the same entry parser as a live oplog.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use bson::Document;

use super::assemble::{Assembler, Ready};
use super::entry::{self, Entry, Header};
use super::merge::Feed;
use super::oplog::unit_of;
use crate::core::{MongoPosition, OpTime};
use crate::mongo::error::{MongoError, Result};
use crate::mongo::event::Unit;

/// The history name of positions read from a file.
pub const FILE_HISTORY: &str = "replay";

pub struct FileReader {
    path: PathBuf,
    input: Input,
    /// Byte offset (BSON) or line number (JSON) of the entry being read, for errors.
    at: u64,
    asm: Assembler,
    until: Option<OpTime>,
    done: bool,
}

enum Input {
    Bson(BufReader<std::fs::File>),
    Json(std::io::Lines<BufReader<std::fs::File>>),
}

impl FileReader {
    pub fn open(path: &Path, until: Option<OpTime>) -> Result<FileReader> {
        let ctx = || format!("oplog file {}", path.display());
        let f = std::fs::File::open(path).map_err(|e| MongoError::fatal(ctx(), e.to_string()))?;
        let mut r = BufReader::new(f);
        let first = r
            .fill_buf()
            .map_err(|e| MongoError::fatal(ctx(), e.to_string()))?;
        let json = first.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
        Ok(FileReader {
            path: path.to_path_buf(),
            input: if json {
                Input::Json(r.lines())
            } else {
                Input::Bson(r)
            },
            at: 0,
            asm: Assembler::default(),
            until,
            done: false,
        })
    }

    /// An error of the entry that began at `start` (a byte offset, or for JSON the
    /// number of lines before it).
    fn err_at(&self, start: u64, inner: MongoError) -> MongoError {
        let at = match self.input {
            Input::Bson(_) => format!("byte offset {start}"),
            Input::Json(_) => format!("line {}", start + 1),
        };
        MongoError {
            context: format!(
                "oplog file {} at {at}: {}",
                self.path.display(),
                inner.context
            ),
            ..inner
        }
    }

    /// The next entry, or `None` at the end of the file.
    fn entry(&mut self) -> Result<Option<Document>> {
        let (path, at) = (&self.path, self.at);
        let err = |json: bool, why: &dyn std::fmt::Display| file_err(path, json, at, why);
        match &mut self.input {
            Input::Bson(r) => {
                let mut len = [0u8; 4];
                match r.read_exact(&mut len) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
                    Err(e) => return Err(err(false, &e)),
                }
                let n = i32::from_le_bytes(len);
                if !(5..=64 << 20).contains(&n) {
                    return Err(err(
                        false,
                        &format!("document length {n} is not a BSON document's"),
                    ));
                }
                let mut buf = vec![0u8; n as usize];
                buf[..4].copy_from_slice(&len);
                let read = r.read_exact(&mut buf[4..]);
                read.map_err(|e| err(false, &format!("truncated document: {e}")))?;
                let doc = Document::from_reader(&mut buf.as_slice()).map_err(|e| err(false, &e))?;
                self.at += n as u64;
                Ok(Some(doc))
            }
            Input::Json(lines) => {
                let mut skipped = 0;
                loop {
                    let Some(line) = lines.next() else {
                        return Ok(None);
                    };
                    let jerr =
                        |why: &dyn std::fmt::Display| file_err(path, true, at + skipped, why);
                    let line = line.map_err(|e| jerr(&e))?;
                    if line.trim().is_empty() {
                        skipped += 1;
                        continue;
                    }
                    let v: serde_json::Value = serde_json::from_str(&line).map_err(|e| jerr(&e))?;
                    let b = bson::Bson::try_from(v)
                        .map_err(|e| jerr(&format!("not Extended JSON: {e}")))?;
                    self.at += skipped + 1;
                    return match b {
                        bson::Bson::Document(d) => Ok(Some(d)),
                        _ => Err(jerr(&"not a JSON object")),
                    };
                }
            }
        }
    }

    /// The next entry parsed, with where it began, or `None` at the end of the file
    /// (or past `--until`).
    fn read_entry(&mut self) -> Result<Option<(u64, Header, Document, Entry)>> {
        if self.done {
            return Ok(None);
        }
        let start = self.at;
        let Some(e) = self.entry()? else {
            self.done = true;
            return Ok(None);
        };
        let h = entry::header(&e).map_err(|x| self.err_at(start, x))?;
        if self.until.is_some_and(|u| h.ts > u) {
            self.done = true;
            return Ok(None);
        }
        let parsed = entry::parse(&e).map_err(|x| self.err_at(start, x))?;
        Ok(Some((start, h, e, parsed)))
    }

    fn missing(&self, start: u64, before: OpTime) -> MongoError {
        file_err(
            &self.path,
            matches!(self.input, Input::Json(_)),
            start,
            format!(
                "the transaction committed here began before the file (its entry {before} is not in it)"
            ),
        )
    }

    /// The next unit, or `None` at the end of the file (or past `--until`).
    pub fn next_unit(&mut self) -> Result<Option<Unit>> {
        while let Some((start, Header { ts, wall_ms }, e, parsed)) = self.read_entry()? {
            let (payload, txn) = match self.asm.push(parsed) {
                Ready::Held => continue,
                Ready::Unit { payload, txn } => (payload, txn),
                Ready::Missing { before, .. } => return Err(self.missing(start, before)),
            };
            return Ok(Some(unit_of(
                MongoPosition::oplog(FILE_HISTORY, ts),
                wall_ms,
                payload,
                txn,
                super::oplog::lsid_of(&e),
            )));
        }
        Ok(None)
    }

    /// The next entry as the merger of several files takes it (one file per shard):
    /// prepares, commits and aborts of prepared transactions named, the rest as units.
    /// `None` at the end of the file.
    pub fn next_feed(&mut self) -> Result<Option<Feed<Unit>>> {
        while let Some((start, Header { ts, wall_ms }, e, parsed)) = self.read_entry()? {
            let marker = match &parsed {
                Entry::Part {
                    key, prepare: true, ..
                } => Some(Feed::Prepared {
                    key: key.clone(),
                    at: ts,
                }),
                Entry::Abort { key } => Some(Feed::Aborted {
                    key: key.clone(),
                    at: ts,
                }),
                _ => None,
            };
            let commit = match &parsed {
                Entry::Commit { key, commit, .. } => Some((key.clone(), *commit)),
                _ => None,
            };
            let (payload, txn) = match self.asm.push(parsed) {
                Ready::Held | Ready::Unit { .. } if marker.is_some() => return Ok(marker),
                Ready::Held => continue,
                Ready::Unit { payload, txn } => (payload, txn),
                Ready::Missing { before, .. } => return Err(self.missing(start, before)),
            };
            let unit = unit_of(
                MongoPosition::oplog(FILE_HISTORY, ts),
                wall_ms,
                payload,
                txn,
                super::oplog::lsid_of(&e),
            );
            return match commit {
                None => Ok(Some(Feed::Unit { unit, at: ts })),
                Some((key, Some(commit))) => Ok(Some(Feed::Committed {
                    unit,
                    key,
                    commit,
                    at: ts,
                })),
                Some((_, None)) => Err(file_err(
                    &self.path,
                    matches!(self.input, Input::Json(_)),
                    start,
                    "commitTransaction without commitTimestamp: its parts on other shards cannot be found",
                )),
            };
        }
        Ok(None)
    }
}

fn file_err(path: &Path, json: bool, at: u64, why: impl std::fmt::Display) -> MongoError {
    let at = if json {
        format!("line {}", at + 1)
    } else {
        format!("byte offset {at}")
    };
    MongoError::fatal(
        format!("oplog file {} at {at}", path.display()),
        why.to_string(),
    )
}
