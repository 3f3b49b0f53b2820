//! `--checkpoint-file PATH`: the link's checkpoint in a local file instead of
//! `__tandem.checkpoints` on the target, for a target that cannot run transactions (a
//! standalone mongod).
//!
//! Without a transaction the batch's writes and the checkpoint cannot land together, so
//! the order is: the file says which batch is in flight (`in_flight`, the end of it),
//! the batch's end states are written, then the file moves to the batch's end. A crash
//! anywhere in between leaves the file at the batch before, naming the batch that may
//! be half written: the restart replays it, with the copy window's semantics up to
//! `in_flight` (docs/MONGO.md, "--checkpoint-file"). At least once, converging exactly.
//!
//! Every save replaces the file atomically (a temp file in the same directory, fsync,
//! rename, fsync of the directory), and none moves it backwards: neither the position
//! nor the window a crash may have left.

use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use super::checkpoint::{Checkpoint, Phase};
use super::error::{MongoError, Result};
use crate::core::{MongoPosition, OpTime};

/// The first field of every file: what it is, and the version of its layout.
const FORMAT: &str = "tandem mongo checkpoint v1";

/// What the file holds.
#[derive(Clone, Debug, PartialEq)]
pub struct Saved {
    pub ckpt: Checkpoint,
    /// The end of a batch that may be partly written: a restart replays up to here with
    /// copy-window semantics. Cleared once the position passes it.
    pub in_flight: Option<OpTime>,
}

pub struct CheckpointFile {
    path: PathBuf,
    link: String,
    /// The file's content as last read or written; held across a write, so saves are
    /// ordered.
    state: Mutex<Option<Saved>>,
}

#[derive(Serialize, Deserialize)]
struct Ts {
    t: u32,
    i: u32,
}

impl From<OpTime> for Ts {
    fn from(o: OpTime) -> Ts {
        Ts {
            t: o.secs(),
            i: o.inc(),
        }
    }
}

impl From<&Ts> for OpTime {
    fn from(t: &Ts) -> OpTime {
        OpTime::new(t.t, t.i)
    }
}

#[derive(Serialize, Deserialize)]
struct OnDisk {
    format: String,
    link: String,
    history: String,
    /// `change-stream` or `oplog`.
    fetch: String,
    ts: Ts,
    /// The change stream's resume token, base64 (empty: "from `ts` on").
    #[serde(default)]
    token: Option<String>,
    phase: String,
    copy_end: Option<Ts>,
    in_flight: Option<Ts>,
}

impl CheckpointFile {
    /// Reads the file of link `link` (none yet is a new link). A file that is not a
    /// tandem checkpoint, or is another link's, is an error naming it.
    pub async fn open(path: &Path, link: &str) -> Result<CheckpointFile> {
        let f = CheckpointFile {
            path: path.to_path_buf(),
            link: link.to_string(),
            state: Mutex::new(None),
        };
        if path.file_name().is_none() {
            return Err(f.bad("is not a file name"));
        }
        let read = {
            let p = f.path.clone();
            tokio::task::spawn_blocking(move || std::fs::read(p)).await
        };
        let text = match read {
            Ok(Ok(t)) => t,
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => return Ok(f),
            Ok(Err(e)) => return Err(f.bad(format!("cannot be read: {e}"))),
            Err(e) => return Err(f.bad(format!("cannot be read: {e}"))),
        };
        let saved = parse(&text, link).map_err(|why| f.bad(why))?;
        *f.state.lock().await = Some(saved);
        Ok(f)
    }

    /// How errors name the file.
    pub fn name(&self) -> String {
        format!("--checkpoint-file {}", self.path.display())
    }

    fn bad(&self, why: impl Into<String>) -> MongoError {
        MongoError::fatal(self.name(), why)
    }

    pub async fn load(&self) -> Option<Saved> {
        self.state.lock().await.clone()
    }

    /// A whole checkpoint: the copy's start and end.
    pub async fn save(&self, c: &Checkpoint) -> Result<()> {
        let mut st = self.state.lock().await;
        let in_flight = st.as_ref().and_then(|s| s.in_flight);
        let next = Saved {
            ckpt: c.clone(),
            in_flight: in_flight.filter(|f| *f > c.pos.ts),
        };
        self.write(&mut st, next).await
    }

    /// Before a batch's writes: the batch ending at `end` is in flight.
    pub async fn begin(&self, end: &MongoPosition) -> Result<()> {
        let mut st = self.state.lock().await;
        let Some(cur) = st.clone() else {
            return Err(self.bad("no checkpoint to apply a batch after"));
        };
        let in_flight = Some(cur.in_flight.map_or(end.ts, |f| f.max(end.ts)));
        if cur.in_flight == in_flight {
            return Ok(());
        }
        self.write(&mut st, Saved { in_flight, ..cur }).await
    }

    /// After a batch's writes (or a DDL): the position is `pos`.
    pub async fn commit(&self, pos: &MongoPosition) -> Result<()> {
        let mut st = self.state.lock().await;
        let Some(cur) = st.clone() else {
            return Err(self.bad("no checkpoint to move"));
        };
        let next = Saved {
            ckpt: Checkpoint {
                pos: pos.clone(),
                ..cur.ckpt
            },
            in_flight: cur.in_flight.filter(|f| *f > pos.ts),
        };
        self.write(&mut st, next).await
    }

    /// `--on-history-lost resync`: the link starts over.
    pub async fn remove(&self) -> Result<()> {
        let mut st = self.state.lock().await;
        let path = self.path.clone();
        let done = tokio::task::spawn_blocking(move || {
            match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
            sync_dir(&path)
        })
        .await;
        match done {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(self.bad(format!("cannot be removed: {e}"))),
            Err(e) => return Err(self.bad(format!("cannot be removed: {e}"))),
        }
        *st = None;
        Ok(())
    }

    async fn write(&self, st: &mut Option<Saved>, next: Saved) -> Result<()> {
        if let Some(cur) = st.as_ref() {
            match next.ckpt.pos.try_cmp(&cur.ckpt.pos) {
                Ok(std::cmp::Ordering::Less) => {
                    return Err(self.bad(format!(
                        "would move backwards from {} to {}",
                        cur.ckpt.pos, next.ckpt.pos
                    )));
                }
                Ok(_) => {}
                Err(_) => {
                    return Err(self.bad(format!(
                        "holds {}, of another history or fetch mode than {}",
                        cur.ckpt.pos, next.ckpt.pos
                    )));
                }
            }
        }
        let text = render(&next, &self.link);
        let path = self.path.clone();
        match tokio::task::spawn_blocking(move || write_atomic(&path, text.as_bytes())).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(self.bad(format!("cannot be written: {e}"))),
            Err(e) => return Err(self.bad(format!("cannot be written: {e}"))),
        }
        *st = Some(next);
        Ok(())
    }
}

fn render(s: &Saved, link: &str) -> String {
    let p = &s.ckpt.pos;
    let d = OnDisk {
        format: FORMAT.to_string(),
        link: link.to_string(),
        history: p.history.clone(),
        fetch: if p.token.is_some() {
            "change-stream"
        } else {
            "oplog"
        }
        .to_string(),
        ts: p.ts.into(),
        token: p.token.as_ref().map(|t| B64.encode(t)),
        phase: match s.ckpt.phase {
            Phase::Copy => "copy",
            Phase::Incr => "incr",
        }
        .to_string(),
        copy_end: s.ckpt.copy_end.map(Ts::from),
        in_flight: s.in_flight.map(Ts::from),
    };
    let mut text = serde_json::to_string_pretty(&d).unwrap_or_default();
    text.push('\n');
    text
}

/// The file's content, or what is wrong with it.
fn parse(bytes: &[u8], link: &str) -> std::result::Result<Saved, String> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err("is empty: not a tandem checkpoint".into());
    }
    let d: OnDisk = serde_json::from_slice(bytes)
        .map_err(|e| format!("is not a tandem checkpoint (corrupt JSON: {e})"))?;
    if d.format != FORMAT {
        return Err(format!(
            "is not a tandem checkpoint: format {:?}, expected {FORMAT:?}",
            d.format
        ));
    }
    if d.link != link {
        return Err(format!(
            "belongs to link {:?}, not {link:?}: use --id {:?} or another file",
            d.link, d.link
        ));
    }
    if d.history.is_empty() {
        return Err("is corrupt: empty history".into());
    }
    let token = match (d.fetch.as_str(), &d.token) {
        ("change-stream", Some(t)) => Some(
            B64.decode(t)
                .map_err(|e| format!("is corrupt: token is not base64 ({e})"))?,
        ),
        ("change-stream", None) => return Err("is corrupt: change-stream without a token".into()),
        ("oplog", None) => None,
        ("oplog", Some(_)) => return Err("is corrupt: an oplog position with a token".into()),
        (other, _) => return Err(format!("is corrupt: unknown fetch {other:?}")),
    };
    let phase = match d.phase.as_str() {
        "copy" => Phase::Copy,
        "incr" => Phase::Incr,
        other => return Err(format!("is corrupt: unknown phase {other:?}")),
    };
    Ok(Saved {
        ckpt: Checkpoint {
            pos: MongoPosition {
                history: d.history,
                ts: (&d.ts).into(),
                token,
            },
            phase,
            copy_end: d.copy_end.as_ref().map(OpTime::from),
        },
        in_flight: d.in_flight.as_ref().map(OpTime::from),
    })
}

/// Replaces `path` with `bytes` so that a crash leaves the old file or the new one.
fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    sync_dir(path)
}

fn sync_dir(path: &Path) -> std::io::Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
    std::fs::File::open(dir.unwrap_or(Path::new(".")))?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ckpt(ts: u32, phase: Phase) -> Checkpoint {
        Checkpoint {
            pos: MongoPosition::stream("rs0", OpTime::new(ts, 1), vec![0, 255, 7]),
            phase,
            copy_end: Some(OpTime::new(3, 0)),
        }
    }

    fn at(ts: u32) -> MongoPosition {
        MongoPosition::stream("rs0", OpTime::new(ts, 1), vec![ts as u8])
    }

    #[tokio::test]
    async fn round_trips_and_never_moves_backwards() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ck.json");
        let f = CheckpointFile::open(&path, "l").await.unwrap();
        assert_eq!(f.load().await, None);
        f.save(&ckpt(2, Phase::Copy)).await.unwrap();
        f.begin(&at(9)).await.unwrap();
        // A smaller batch after a restart keeps the larger window.
        f.begin(&at(5)).await.unwrap();
        f.commit(&at(5)).await.unwrap();
        let again = CheckpointFile::open(&path, "l").await.unwrap();
        let s = again.load().await.unwrap();
        assert_eq!(s.ckpt.pos, at(5));
        assert_eq!(s.ckpt.copy_end, Some(OpTime::new(3, 0)));
        assert_eq!(s.in_flight, Some(OpTime::new(9, 1)));
        let e = again.commit(&at(4)).await.unwrap_err();
        assert!(e.to_string().contains("backwards"), "{e}");
        again.commit(&at(9)).await.unwrap();
        let s = CheckpointFile::open(&path, "l").await.unwrap().load().await;
        assert_eq!(s.unwrap().in_flight, None);
        let e = again
            .commit(&MongoPosition::oplog("rs0", OpTime::new(10, 1)))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("another history"), "{e}");
    }

    #[tokio::test]
    async fn refuses_what_is_not_this_links_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ck.json");
        let f = CheckpointFile::open(&path, "a").await.unwrap();
        f.save(&ckpt(2, Phase::Incr)).await.unwrap();
        let e = CheckpointFile::open(&path, "b").await.err().unwrap();
        let text = e.to_string();
        assert!(text.contains(&path.display().to_string()), "{text}");
        assert!(text.contains("belongs to link \"a\""), "{text}");
        let good = std::fs::read_to_string(&path).unwrap();
        for (content, want) in [
            ("", "is empty"),
            ("{\"format\": ", "corrupt JSON"),
            ("[1, 2]", "corrupt JSON"),
            (&good.replace("\"incr\"", "\"done\"")[..], "unknown phase"),
            (&good.replace("change-stream", "tail")[..], "unknown fetch"),
            (&good.replace(FORMAT, "other")[..], "format"),
        ] {
            std::fs::write(&path, content).unwrap();
            let e = CheckpointFile::open(&path, "a").await.err().unwrap();
            assert!(e.to_string().contains(want), "{content:?}: {e}");
            assert!(!e.is_retryable());
        }
    }
}
