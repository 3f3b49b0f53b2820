//! Checkpoint stores: where a link remembers how far the target is.
//!
//! The default store lives in the target itself and is written inside the same
//! MULTI/EXEC as the data (see `redis::sink`), so it can never disagree with what the
//! target holds. The stores here serve the other cases: a local file for sinks that
//! cannot hold metadata, and memory for tests.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::position::ReplPosition;

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// The new position is behind the stored one of the same replication id.
    #[error("checkpoint {id} would move backwards from {stored} to {new}")]
    Backwards {
        id: String,
        stored: Box<ReplPosition>,
        new: Box<ReplPosition>,
    },
    #[error("checkpoint file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("checkpoint file {path}: line {line}: {reason}")]
    Corrupt {
        path: PathBuf,
        line: usize,
        reason: String,
    },
}

/// A durable map from link id to the last position the target fully holds.
///
/// Contract: `save` returns `Ok` only once the position is durable (survives a crash of
/// tandem, and for the file store, of the machine). A position never moves backwards
/// within one replication id; a save with a different replication id replaces the old
/// one (a full resync started a new history). `load` returns the last saved position.
pub trait CheckpointStore: Send + Sync {
    fn load(&self, id: &str) -> Result<Option<ReplPosition>, CheckpointError>;
    fn save(&self, id: &str, pos: &ReplPosition) -> Result<(), CheckpointError>;
}

fn check_forward(
    id: &str,
    stored: Option<&ReplPosition>,
    new: &ReplPosition,
) -> Result<(), CheckpointError> {
    match stored {
        Some(old) if old.replid == new.replid && old.offset > new.offset => {
            Err(CheckpointError::Backwards {
                id: id.to_string(),
                stored: Box::new(old.clone()),
                new: Box::new(new.clone()),
            })
        }
        _ => Ok(()),
    }
}

/// In-memory store, for tests.
#[derive(Default)]
pub struct MemoryStore {
    map: Mutex<HashMap<String, ReplPosition>>,
}

impl CheckpointStore for MemoryStore {
    fn load(&self, id: &str) -> Result<Option<ReplPosition>, CheckpointError> {
        Ok(self.map.lock().unwrap().get(id).cloned())
    }
    fn save(&self, id: &str, pos: &ReplPosition) -> Result<(), CheckpointError> {
        let mut map = self.map.lock().unwrap();
        check_forward(id, map.get(id), pos)?;
        map.insert(id.to_string(), pos.clone());
        Ok(())
    }
}

/// One file of `<id> <replid>:<offset>` lines, replaced atomically (temp file, fsync,
/// rename, fsync of the directory) on every save.
pub struct FileStore {
    path: PathBuf,
    lock: Mutex<()>,
}

impl FileStore {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            lock: Mutex::new(()),
        }
    }

    fn io(&self, source: std::io::Error) -> CheckpointError {
        CheckpointError::Io {
            path: self.path.clone(),
            source,
        }
    }

    fn read_all(&self) -> Result<Vec<(String, ReplPosition)>, CheckpointError> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(self.io(e)),
        };
        let mut out = Vec::new();
        for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.is_empty()) {
            let corrupt = |reason: String| CheckpointError::Corrupt {
                path: self.path.clone(),
                line: i + 1,
                reason,
            };
            let (id, pos) = line
                .split_once(' ')
                .ok_or_else(|| corrupt("expected `<id> <position>`".into()))?;
            let pos = pos.parse().map_err(|e| corrupt(format!("{e}")))?;
            out.push((id.to_string(), pos));
        }
        Ok(out)
    }

    fn write_all(&self, entries: &[(String, ReplPosition)]) -> Result<(), CheckpointError> {
        let dir = self.path.parent().filter(|p| !p.as_os_str().is_empty());
        let dir = dir.unwrap_or(Path::new("."));
        let tmp = self.path.with_extension("tmp");
        let mut f = std::fs::File::create(&tmp).map_err(|e| self.io(e))?;
        for (id, pos) in entries {
            writeln!(f, "{id} {pos}").map_err(|e| self.io(e))?;
        }
        f.sync_all().map_err(|e| self.io(e))?;
        std::fs::rename(&tmp, &self.path).map_err(|e| self.io(e))?;
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| self.io(e))
    }
}

impl CheckpointStore for FileStore {
    fn load(&self, id: &str) -> Result<Option<ReplPosition>, CheckpointError> {
        let _g = self.lock.lock().unwrap();
        Ok(self
            .read_all()?
            .into_iter()
            .find(|(i, _)| i == id)
            .map(|(_, p)| p))
    }

    fn save(&self, id: &str, pos: &ReplPosition) -> Result<(), CheckpointError> {
        if id.is_empty() || id.contains(char::is_whitespace) {
            return Err(CheckpointError::Corrupt {
                path: self.path.clone(),
                line: 0,
                reason: format!("link id {id:?} must be non-empty without whitespace"),
            });
        }
        let _g = self.lock.lock().unwrap();
        let mut all = self.read_all()?;
        match all.iter_mut().find(|(i, _)| i == id) {
            Some((_, old)) => {
                check_forward(id, Some(old), pos)?;
                *old = pos.clone();
            }
            None => all.push((id.to_string(), pos.clone())),
        }
        self.write_all(&all)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    fn exercise(store: &dyn CheckpointStore) {
        assert_eq!(store.load("x").unwrap(), None);
        store.save("x", &ReplPosition::new(A, 100)).unwrap();
        store.save("y", &ReplPosition::new(A, 7)).unwrap();
        store.save("x", &ReplPosition::new(A, 150)).unwrap();
        let err = store.save("x", &ReplPosition::new(A, 149)).unwrap_err();
        assert!(matches!(err, CheckpointError::Backwards { .. }), "{err}");
        assert_eq!(store.load("x").unwrap(), Some(ReplPosition::new(A, 150)));
        // A new history replaces the old one, even at a lower offset.
        store.save("x", &ReplPosition::new(B, 3)).unwrap();
        assert_eq!(store.load("x").unwrap(), Some(ReplPosition::new(B, 3)));
        assert_eq!(store.load("y").unwrap(), Some(ReplPosition::new(A, 7)));
    }

    #[test]
    fn memory_store_contract() {
        exercise(&MemoryStore::default());
    }

    #[test]
    fn file_store_contract_and_reload() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ckpt");
        exercise(&FileStore::new(&path));
        let again = FileStore::new(&path);
        assert_eq!(again.load("x").unwrap(), Some(ReplPosition::new(B, 3)));
        std::fs::write(&path, "x nonsense\n").unwrap();
        let err = again.load("x").unwrap_err();
        assert!(err.to_string().contains("line 1"), "{err}");
    }
}
