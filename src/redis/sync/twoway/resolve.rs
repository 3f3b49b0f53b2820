//! The resolver of `converge`: copies the winner's value of every due conflict to the
//! loser, then checks (once every stream is caught up and nobody wrote the key since)
//! that the two sides agree, copying again if not. Conflicts go in batches of distinct
//! keys ([`BATCH`]), their requests pipelined per side (`side_conn.rs`).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use tracing::warn;

use super::side_conn::{Dumped, SideConn, TIMEOUT};
use super::{Key, Progress, SideInfo};
use crate::core::conflict::{Detector, Policy, Side, Space};
use crate::core::shutdown::Shutdown;
use crate::redis::conn::{Conn, frame_text, info_field};
use crate::redis::sync::SyncError;

/// Conflicts per batch. A batch holds the winners' values at once (one DUMP each).
const BATCH: usize = 256;
/// Copied conflicts per check (read in batches).
const CHECK: usize = 4096;

pub(super) async fn resolve_loop(
    sides: [SideInfo; 2],
    id: String,
    detector: Arc<Detector<Key>>,
    progress: Arc<Progress>,
    mut shutdown: Shutdown,
) -> Result<(), SyncError> {
    if detector.policy() != Policy::Converge {
        shutdown.wait().await;
        return Ok(());
    }
    let mut r = Resolver {
        conns: None,
        todo: VecDeque::new(),
        verify: VecDeque::new(),
        checking: None,
        masters: HashMap::new(),
    };
    let mut pause = PAUSE;
    loop {
        tokio::select! {
            _ = shutdown.wait() => return Ok(()),
            _ = tokio::time::sleep(pause) => {}
        }
        r.todo.extend(
            detector
                .due(|s| progress.applied(s))
                .into_iter()
                .map(|c| Contested {
                    key: c.key,
                    winner: c.winner,
                }),
        );
        let res = r.round(&sides, &id, &detector, &progress).await;
        let checking = r.checking.as_ref().map_or(0, |c| c.items.len());
        crate::metrics::conflicts_unchecked(r.verify.len() + checking);
        match res {
            Ok(()) => pause = PAUSE,
            // A side lost (cut, restarted, unreachable): connect again later and go on
            // with every conflict not yet handled. Returning here used to end the
            // resolver for good while the links went on: no conflict converged again.
            Err(e) if retryable(&e) => {
                pause = (pause * 2).clamp(Duration::from_millis(100), Duration::from_secs(5));
                warn!(error = %e, "conflict resolver: a side is unavailable, retrying in {pause:?}");
                r.conns = None;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Between two rounds of the resolver.
const PAUSE: Duration = Duration::from_millis(20);

/// What waiting can fix: the network, a server restarting, a cluster giving no answer
/// for a while.
fn retryable(e: &SyncError) -> bool {
    match e {
        SyncError::Sink(crate::redis::sink::SinkError::Conn(c)) => c.is_retryable(),
        SyncError::Sink(crate::redis::sink::SinkError::GaveUp { .. }) => true,
        _ => false,
    }
}

/// A due conflict as the resolver keeps it: under a burst of contested keys it holds
/// hundreds of thousands until everything is caught up, and the writes (only logged at
/// detection) would triple each one.
struct Contested {
    key: Key,
    winner: Side,
}

struct Resolver {
    /// Both sides, connected when needed (dropped after an error).
    conns: Option<[SideConn; 2]>,
    /// Due conflicts whose winner is not copied yet.
    todo: VecDeque<Contested>,
    /// Copied conflicts to check.
    verify: VecDeque<Copied>,
    /// The check under way, if any.
    checking: Option<Check>,
    masters: HashMap<String, Conn>,
}

struct Copied {
    c: Contested,
    /// When the copy landed (or the check found the key written again).
    copied_at: u64,
    /// Copies after the first.
    tries: u32,
}

/// Copied conflicts checked without waiting for both sides to be quiet (under steady
/// writes they never are, and the queue grew without end): once every stream is
/// applied up to the master offsets read when the check began (`settle`), everything
/// written before it, the copies among them, is on both sides; both values are read;
/// once every stream is applied up to the offsets read after that (`confirm`), a key
/// that nobody wrote since its copy (as tandem observed) has its comparison stand.
struct Check {
    items: Vec<Copied>,
    phase: Phase,
}

enum Phase {
    Settle(HashMap<Space, u64>),
    Confirm(HashMap<Space, u64>, Vec<bool>),
}

impl Resolver {
    /// Copy every due winner, then move the check of what was copied one step on.
    /// On an error, the batch at hand and every later conflict stay queued.
    async fn round(
        &mut self,
        sides: &[SideInfo; 2],
        id: &str,
        detector: &Detector<Key>,
        progress: &Progress,
    ) -> Result<(), SyncError> {
        if self.conns.is_none() {
            self.conns = Some([
                SideConn::connect(&sides[0]).await?,
                SideConn::connect(&sides[1]).await?,
            ]);
        }
        let conns = self.conns.as_mut().expect("connected");
        while !self.todo.is_empty() {
            let batch = take_distinct(&mut self.todo, BATCH, |c| &c.key);
            let refs: Vec<&Contested> = batch.iter().collect();
            if let Err(e) = copy_winners(conns, &refs, id).await {
                put_back(&mut self.todo, batch);
                return Err(e);
            }
            let now = crate::core::wall_ms();
            self.verify.extend(batch.into_iter().map(|c| Copied {
                c,
                copied_at: now,
                tries: 0,
            }));
        }
        let check = match self.checking.take() {
            Some(check) => check,
            None if self.verify.is_empty() => return Ok(()),
            None => {
                let Some(at) = master_offsets(progress, &mut self.masters).await else {
                    return Ok(());
                };
                Check {
                    items: take_distinct(&mut self.verify, CHECK, |v| &v.c.key),
                    phase: Phase::Settle(at),
                }
            }
        };
        match check.phase {
            Phase::Settle(at) if !settled(progress, &at) => {
                self.checking = Some(Check {
                    phase: Phase::Settle(at),
                    ..check
                });
                Ok(())
            }
            Phase::Settle(_) => {
                let mut differ = Vec::with_capacity(check.items.len());
                for chunk in check.items.chunks(BATCH) {
                    match differing(conns, chunk).await {
                        Ok(d) => differ.extend(d),
                        Err(e) => {
                            put_back(&mut self.verify, check.items);
                            return Err(e);
                        }
                    }
                }
                match master_offsets(progress, &mut self.masters).await {
                    Some(at) => {
                        self.checking = Some(Check {
                            phase: Phase::Confirm(at, differ),
                            ..check
                        })
                    }
                    None => put_back(&mut self.verify, check.items),
                }
                Ok(())
            }
            Phase::Confirm(at, differ) if !settled(progress, &at) => {
                self.checking = Some(Check {
                    phase: Phase::Confirm(at, differ),
                    ..check
                });
                Ok(())
            }
            Phase::Confirm(_, differ) => self.confirm(check.items, differ, detector, id).await,
        }
    }

    /// The end of a check: a key written since its copy is checked again later; one
    /// whose sides differ is copied again (at most 5 times).
    async fn confirm(
        &mut self,
        items: Vec<Copied>,
        differ: Vec<bool>,
        detector: &Detector<Key>,
        id: &str,
    ) -> Result<(), SyncError> {
        let conns = self.conns.as_mut().expect("connected");
        let mut outcome = Vec::with_capacity(items.len());
        for (v, d) in items.into_iter().zip(differ) {
            let last = detector.last_writes(&v.c.key);
            // Written again since (as tandem observed it): its values were read while
            // that write may have been on its way. Judging them anyway lost convergence:
            // a copy's DUMP held a winner's write that its link had not yet replayed,
            // which then landed on the loser a second time (an INCR counted twice,
            // tests/twoway.rs, cluster sides, 3 runs in 10).
            let again = last.iter().flatten().any(|w| w.at_ms > v.copied_at);
            outcome.push((v, again, d));
        }
        let copy: Vec<&Contested> = outcome
            .iter()
            .filter(|(v, again, d)| !again && *d && v.tries < 5)
            .map(|(v, _, _)| &v.c)
            .collect();
        if let Err(e) = copy_winners(conns, &copy, id).await {
            put_back(
                &mut self.verify,
                outcome.into_iter().map(|(v, _, _)| v).collect(),
            );
            return Err(e);
        }
        let now = crate::core::wall_ms();
        for (v, again, d) in outcome {
            if again {
                self.verify.push_back(Copied {
                    copied_at: now,
                    ..v
                });
            } else if d && v.tries < 5 {
                self.verify.push_back(Copied {
                    copied_at: now,
                    tries: v.tries + 1,
                    ..v
                });
            } else if d {
                warn!(key = %String::from_utf8_lossy(&v.c.key.1), "conflict did not converge after 5 copies");
            }
        }
        Ok(())
    }
}

/// Up to `limit` items from the front of `q`, stopping before a key already taken: two
/// conflicts of one key in a batch would have both values read before either copy
/// lands, where one after the other the second reads the first's.
fn take_distinct<T>(q: &mut VecDeque<T>, limit: usize, key: impl Fn(&T) -> &Key) -> Vec<T> {
    let mut seen: HashSet<Key> = HashSet::new();
    let mut out = Vec::new();
    while out.len() < limit {
        match q.front() {
            Some(item) if seen.insert(key(item).clone()) => {
                out.push(q.pop_front().expect("at hand"));
            }
            _ => break,
        }
    }
    out
}

/// A batch that failed goes back to the front, in its order.
fn put_back<T>(q: &mut VecDeque<T>, batch: Vec<T>) {
    for item in batch.into_iter().rev() {
        q.push_front(item);
    }
}

/// Every stream's master offset now (each master of a cluster side), by space. `None`
/// when a master does not answer (failing over): not now.
async fn master_offsets(
    progress: &Progress,
    masters: &mut HashMap<String, Conn>,
) -> Option<HashMap<Space, u64>> {
    let mut out = HashMap::new();
    for (space, p) in progress.streams() {
        let Some(ep) = p.master else { continue };
        let name = ep.addr();
        if !masters.contains_key(&name) {
            let c = Conn::connect(&ep.with_db(0), TIMEOUT).await.ok()?;
            masters.insert(name.clone(), c);
        }
        let conn = masters.get_mut(&name).expect("just connected");
        let offset = match conn.query(&[b"INFO", b"replication"]).await {
            Ok(info) => frame_text(&info)
                .and_then(|t| info_field(&t, "master_repl_offset"))
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0),
            Err(_) => {
                masters.remove(&name);
                return None;
            }
        };
        out.insert(space, offset);
    }
    Some(out)
}

/// Whether every stream in `at` is handled up to its offset there.
fn settled(progress: &Progress, at: &HashMap<Space, u64>) -> bool {
    let now: HashMap<Space, u64> = progress
        .streams()
        .into_iter()
        .map(|(space, p)| (space, p.settled))
        .collect();
    at.iter()
        .all(|(space, want)| now.get(space).is_some_and(|s| s >= want))
}

/// For each conflict, whether the two sides hold different values (DUMP payload, and
/// whether a TTL is set).
async fn differing(conns: &mut [SideConn; 2], check: &[Copied]) -> Result<Vec<bool>, SyncError> {
    if check.is_empty() {
        return Ok(Vec::new());
    }
    let keys: Vec<&Key> = check.iter().map(|v| &v.c.key).collect();
    let a = conns[0].dump_many(&keys).await?;
    let b = conns[1].dump_many(&keys).await?;
    let shape = |d: &Dumped| d.as_ref().map(|(p, ttl)| (p.clone(), *ttl > 0));
    Ok(a.iter()
        .zip(&b)
        .map(|(x, y)| shape(x) != shape(y))
        .collect())
}

/// Copy each winner's whole value (or its absence) to the loser, each in one tagged
/// transaction: the loser's link sees a `__tandem:` write in it and drops the echo.
/// The keys are distinct ([`take_distinct`]).
async fn copy_winners(
    conns: &mut [SideConn; 2],
    batch: &[&Contested],
    id: &str,
) -> Result<(), SyncError> {
    for winner in [Side::A, Side::B] {
        let mine: Vec<&Contested> = batch
            .iter()
            .copied()
            .filter(|c| c.winner == winner)
            .collect();
        if mine.is_empty() {
            continue;
        }
        let keys: Vec<&Key> = mine.iter().map(|c| &c.key).collect();
        let values = conns[winner as usize].dump_many(&keys).await?;
        let items: Vec<(&Key, Dumped)> = keys.into_iter().zip(values).collect();
        let failed = conns[winner.other() as usize]
            .replace_many(&items, id, winner.name())
            .await?;
        for ((key, _), f) in items.iter().zip(failed) {
            match f {
                Some(f) => {
                    warn!(key = %String::from_utf8_lossy(&key.1), "conflict copy failed: {f}")
                }
                None => crate::metrics::conflict_resolved(),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redis::sync::twoway::key::KeyBytes;

    fn key(k: &str) -> Key {
        (0, KeyBytes::new(k.as_bytes()))
    }

    #[test]
    fn a_batch_stops_before_a_key_it_already_holds_and_goes_back_in_order() {
        let mut q: VecDeque<Key> = ["a", "b", "a", "c"].into_iter().map(key).collect();
        let batch = take_distinct(&mut q, BATCH, |k| k);
        assert_eq!(batch, vec![key("a"), key("b")]);
        assert_eq!(q, VecDeque::from(vec![key("a"), key("c")]));
        put_back(&mut q, batch);
        let all: Vec<Key> = ["a", "b", "a", "c"].into_iter().map(key).collect();
        assert_eq!(q, VecDeque::from(all));
        assert_eq!(take_distinct(&mut q, 1, |k| k), vec![key("a")]);
        let mut many: VecDeque<Key> = (0..BATCH + 10).map(|i| key(&i.to_string())).collect();
        assert_eq!(take_distinct(&mut many, BATCH, |k| k).len(), BATCH);
        assert_eq!(many.len(), 10);
    }
}
