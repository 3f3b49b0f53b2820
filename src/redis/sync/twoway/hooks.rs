//! What one engine (one source stream) of a two-way pair does beyond a one-way sync:
//! drop echoes, learn from the reverse link's checkpoints how much of the other side its
//! stream holds, and run every write through the shared conflict detector.

use std::collections::HashMap;
use std::io::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::mpsc;
use tracing::warn;

use super::{Key, KeyBytes, Progress, space};
use crate::core::conflict::{Conflict, Detector, Seen, Side, Space, Verdict, Write};
use crate::redis::command::{Flags, key_indexes, single_key_index};
use crate::redis::filter::{TANDEM_PREFIX, any_writes_tandem_key};
use crate::redis::slot::key_slot;
use crate::redis::sync::incr::{TargetWrite, Unit};
use crate::redis::sync::migration::is_migrated_key;

pub struct Hooks {
    pub side: Side,
    /// This stream's offset space.
    pub space: Space,
    pub(super) detector: Arc<Detector<Key>>,
    /// `__tandem:ckpt:<id>:<reverse link>`: the reverse link's checkpoints written into
    /// this side start with it (then `:<shard>` for a cluster source, `:{tag}` for a
    /// slot of a cluster target).
    pub(super) reverse_prefix: Bytes,
    /// What every key of this stream holds of the other side's spaces.
    pub(super) seen: Seen,
    /// Per slot (this side a cluster), what that slot's checkpoints say beyond `seen`:
    /// a slot checkpoint vouches for its slot only, since slot batches land
    /// independently.
    pub(super) per_slot: HashMap<u16, Seen>,
    pub(super) progress: Arc<Progress>,
    pub(super) attached: Option<mpsc::UnboundedSender<()>>,
    pub(super) log: Option<Arc<Mutex<std::fs::File>>>,
    pub(super) warn_gate: WarnGate,
}

/// At most one conflict warning a second per link, naming how many went unlogged since
/// the last one. Keys contested on both sides make a conflict per write, and a line per
/// conflict on stderr was 40% of tandem's CPU in such a storm; every conflict is still
/// counted in `tandem_conflicts_total` and written to `--conflict-log`.
#[derive(Default)]
pub struct WarnGate {
    next_ms: AtomicU64,
    unlogged: AtomicU64,
}

impl WarnGate {
    /// `Some(conflicts not logged since the last line)` when a line is due.
    fn pass(&self, now_ms: u64) -> Option<u64> {
        if now_ms < self.next_ms.load(Ordering::Relaxed) {
            self.unlogged.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        self.next_ms.store(now_ms + 1000, Ordering::Relaxed);
        Some(self.unlogged.swap(0, Ordering::Relaxed))
    }
}

/// Reports how far an engine's stream is applied on the other side.
pub struct Applied {
    progress: Arc<Progress>,
    space: Space,
}

impl Applied {
    pub fn set(&self, offset: u64) {
        self.progress
            .update(self.space, |p| p.applied = p.applied.max(offset));
    }
}

impl Hooks {
    /// The link's stream position is established: the other link may start writing.
    pub fn attached(&mut self) {
        if let Some(tx) = self.attached.take() {
            let _ = tx.send(());
        }
    }

    pub fn applied_handle(&self) -> Applied {
        Applied {
            progress: self.progress.clone(),
            space: self.space,
        }
    }

    /// Everything up to `offset` of this stream is applied or dropped as an echo.
    pub fn settled(&self, offset: u64) {
        self.progress.update(self.space, |p| p.settled = offset);
    }

    /// Whether `unit` is tandem's own (an echo): then it is not applied, and if it holds
    /// reverse-link checkpoints, remember how far the other side is applied here.
    pub fn note_echo(&mut self, unit: &Unit) -> bool {
        if !any_writes_tandem_key(unit.cmds.iter().map(|c| c.argv.as_slice())) {
            return false;
        }
        for argv in unit.cmds.iter().map(|c| &c.argv) {
            self.note_checkpoint(argv);
        }
        crate::metrics::echo_dropped(false);
        true
    }

    /// An echo read whole by the stream reader: only its last write, `argv`, is at hand
    /// (tandem's batches end with their checkpoint).
    pub fn note_echo_checkpoint(&mut self, argv: &[Bytes]) {
        self.note_checkpoint(argv);
        crate::metrics::echo_dropped(true);
    }

    /// If `argv` writes one of the reverse link's checkpoints, learn from it.
    fn note_checkpoint(&mut self, argv: &[Bytes]) {
        if argv.len() < 4
            || !argv[0].eq_ignore_ascii_case(b"HSET")
            || !argv[1].starts_with(&self.reverse_prefix)
        {
            return;
        }
        let Some((shard, scoped)) = parse_ckpt_suffix(&argv[1][self.reverse_prefix.len()..]) else {
            return;
        };
        let field = |name: &[u8]| {
            argv[2..]
                .chunks(2)
                .find(|p| p.len() == 2 && &p[0][..] == name)
                .map(|p| p[1].clone())
        };
        let incr = field(b"state").is_some_and(|s| &s[..] == b"incr");
        let off = field(b"offset").and_then(|o| std::str::from_utf8(&o).ok()?.parse::<u64>().ok());
        let (true, Some(off)) = (incr, off) else {
            return;
        };
        let other = space(self.side.other(), shard);
        if scoped {
            let slot = self.per_slot.entry(key_slot(&argv[1])).or_default();
            *slot = slot.with(other, off);
        } else {
            self.seen = self.seen.with(other, off);
            self.detector.note_seen(self.side, self.space, other, off);
        }
    }

    fn seen_for(&self, key: &[u8]) -> Seen {
        if self.per_slot.is_empty() {
            return self.seen.clone();
        }
        match self.per_slot.get(&key_slot(key)) {
            Some(s) => s.max(&self.seen),
            None => self.seen.clone(),
        }
    }

    /// Run each write's keys through the detector (observed at wall-clock `now`
    /// milliseconds); drop the writes it says to skip.
    pub fn judge(&self, writes: Vec<TargetWrite>, unit_end: u64, now: u64) -> Vec<TargetWrite> {
        let mut out = Vec::with_capacity(writes.len());
        for w in writes {
            // Neither applied nor judged (`migration::is_migrated_key`).
            if is_migrated_key(&w.argv) {
                continue;
            }
            let (db, argv) = (w.db, &w.argv);
            let (keys, name) = match w.spec {
                Some(spec) if spec.has(Flags::WRITE) => match single_key_index(spec, argv) {
                    Some(k) => (Keys::One(k), spec.name),
                    None => (
                        Keys::Many(key_indexes(spec, argv).unwrap_or_default()),
                        spec.name,
                    ),
                },
                _ => (Keys::Many(Vec::new()), ""),
            };
            let mut skip = false;
            for k in keys {
                if argv[k].starts_with(TANDEM_PREFIX) {
                    continue;
                }
                let w = Write {
                    space: self.space,
                    own: unit_end,
                    seen_other: self.seen_for(&argv[k]),
                    at_ms: now,
                    command: name,
                };
                // A copy: `argv[k]` is a slice of a whole stream read buffer, which a
                // remembered key would otherwise keep alive.
                let key = KeyBytes::new(&argv[k]);
                let (verdict, conflict) = self.detector.observe(self.side, (db, key), w);
                if let Some(c) = conflict {
                    self.report(&c);
                }
                skip |= verdict == Verdict::Skip;
            }
            if !skip {
                out.push(w);
            }
        }
        out
    }

    fn report(&self, c: &Conflict<Key>) {
        crate::metrics::conflict(self.detector.policy());
        if let Some(unlogged) = self.warn_gate.pass(crate::core::wall_ms()) {
            let key = String::from_utf8_lossy(&c.key.1);
            warn!(
                db = c.key.0, key = %key, winner = c.winner.name(),
                a = %c.writes[0].command, b = %c.writes[1].command,
                unlogged_since_last = unlogged,
                "conflict: key written on both sides"
            );
        }
        if let Some(log) = &self.log {
            let w = |w: &Write| {
                serde_json::json!({
                    "command": w.command, "at_ms": w.at_ms, "offset": w.own,
                    "stream": super::space_name(w.space),
                })
            };
            let line = serde_json::json!({
                "db": c.key.0,
                "key": crate::cli_support::arg_json(&c.key.1),
                "a": w(&c.writes[0]),
                "b": w(&c.writes[1]),
                "policy": format!("{:?}", self.detector.policy()).to_lowercase(),
                "winner": c.winner.name(),
            });
            let _ = writeln!(log.lock().unwrap(), "{line}");
        }
    }
}

/// What follows the reverse link's id in one of its checkpoint keys: nothing (a
/// standalone source into a standalone side), `:<shard>` (a cluster source's shard
/// link; on a cluster side, that link's floor), and/or `:{<tag>}` (a slot checkpoint of
/// a cluster side). Returns (shard, slot-scoped); `None` for another link's key.
pub(super) fn parse_ckpt_suffix(rest: &[u8]) -> Option<(Option<u16>, bool)> {
    let tagged = rest
        .ends_with(b"}")
        .then(|| rest.windows(2).rposition(|w| w == b":{"))
        .flatten();
    let (shard, scoped) = match tagged {
        Some(i) => (&rest[..i], true),
        None => (rest, false),
    };
    if shard.is_empty() {
        return Some((None, scoped));
    }
    let digits = shard.strip_prefix(b":")?;
    let n = std::str::from_utf8(digits).ok()?.parse::<u16>().ok()?;
    Some((Some(n), scoped))
}

/// A write's key positions: most writes have one, found without allocating.
enum Keys {
    One(usize),
    Many(Vec<usize>),
}

impl IntoIterator for Keys {
    type Item = usize;
    type IntoIter = std::iter::Chain<std::option::IntoIter<usize>, std::vec::IntoIter<usize>>;

    fn into_iter(self) -> Self::IntoIter {
        match self {
            Keys::One(k) => Some(k).into_iter().chain(Vec::new()),
            Keys::Many(v) => None.into_iter().chain(v),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::conflict::Policy;
    use crate::core::wall_ms as now_ms;
    use crate::redis::cluster::tags::tag;
    use crate::redis::replica::stream::Command;

    fn b(s: &str) -> Bytes {
        Bytes::from(s.to_string())
    }

    fn unit(cmds: &[&[&str]]) -> Unit {
        let cmds = cmds
            .iter()
            .map(|argv| Command {
                db: 0,
                argv: argv.iter().map(|a| b(a)).collect(),
                start: 0,
                offset: 0,
                raw: Bytes::new(),
            })
            .collect();
        Unit {
            cmds,
            end: 0,
            db: 0,
        }
    }

    fn set(key: &str) -> Vec<TargetWrite> {
        vec![TargetWrite {
            db: 0,
            argv: vec![b("SET"), b(key), b("v")],
            offset: 0,
            raw: None,
            spec: crate::redis::command::lookup(b"SET"),
        }]
    }

    /// A's shard at slot 0 of a cluster, B standalone; B wrote k1, k2 and k3 at its
    /// offsets 100, 100 and 150.
    fn cluster_shard_hooks() -> Hooks {
        let detector = Arc::new(Detector::new(
            Policy::Overwrite,
            Side::A,
            std::time::Duration::from_secs(60),
        ));
        for (k, own) in [("k1", 100), ("k2", 100), ("k3", 150)] {
            let w = Write {
                space: space(Side::B, None),
                own,
                seen_other: Seen::default(),
                at_ms: crate::core::wall_ms(),
                command: "SET",
            };
            detector.observe(Side::B, (0, KeyBytes::new(k.as_bytes())), w);
        }
        Hooks {
            side: Side::A,
            space: space(Side::A, Some(0)),
            detector,
            reverse_prefix: b("__tandem:ckpt:t:b2a"),
            seen: Seen::default(),
            per_slot: HashMap::new(),
            progress: Arc::new(Progress::default()),
            attached: None,
            log: None,
            warn_gate: WarnGate::default(),
        }
    }

    #[test]
    fn a_slot_checkpoint_vouches_for_its_slot_and_a_floor_for_all() {
        let mut h = cluster_shard_hooks();
        assert_ne!(key_slot(b"k1"), key_slot(b"k2"));
        assert_ne!(key_slot(b"k1"), key_slot(b"k3"));
        let k1_ckpt = format!("__tandem:ckpt:t:b2a:{{{}}}", tag(key_slot(b"k1")));
        let ckpt = |key: &str, off: &str| {
            unit(&[
                &["MULTI"],
                &["SET", "x", "1"],
                &[
                    "HSET", key, "replid", "r", "offset", off, "db", "0", "state", "incr",
                ],
                &["EXEC"],
            ])
        };
        assert!(h.note_echo(&ckpt(&k1_ckpt, "150")));
        h.judge(set("k1"), 10, now_ms());
        h.judge(set("k2"), 11, now_ms());
        assert_eq!(
            h.detector.detected(),
            1,
            "only k2: k1's slot held B up to 150"
        );
        // The floor (every slot) at 200: k3, written by B at 150, is held everywhere.
        assert!(h.note_echo(&unit(&[&[
            "HSET",
            "__tandem:ckpt:t:b2a",
            "offset",
            "200",
            "state",
            "incr"
        ]])));
        h.judge(set("k3"), 12, now_ms());
        assert_eq!(h.detector.detected(), 1);
        // Another link's checkpoint teaches nothing.
        let other = format!("__tandem:ckpt:t:b2ax:{{{}}}", tag(key_slot(b"k1")));
        assert!(h.note_echo(&ckpt(&other, "999")));
        assert_eq!(h.seen, Seen::default().with(space(Side::B, None), 200));
    }

    #[test]
    fn checkpoint_suffixes() {
        assert_eq!(parse_ckpt_suffix(b""), Some((None, false)));
        assert_eq!(parse_ckpt_suffix(b":{a1}"), Some((None, true)));
        assert_eq!(parse_ckpt_suffix(b":5461"), Some((Some(5461), false)));
        assert_eq!(parse_ckpt_suffix(b":5461:{x}"), Some((Some(5461), true)));
        assert_eq!(parse_ckpt_suffix(b"x"), None, "another link: <id>:b2ax");
        assert_eq!(parse_ckpt_suffix(b":zz"), None);
    }
}
