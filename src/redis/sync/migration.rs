//! Slots moving between the masters of a cluster *source* (resharding).
//!
//! `MIGRATE` moves a key from master X to master Y: Y's stream carries the
//! `RESTORE-ASKING` that created it there, X's stream the `DEL` that removed it from X.
//! tandem reads the two streams with two engines, so the target may get the `RESTORE`
//! first and the `DEL` second — and lose the key (tests/sync_cluster.rs
//! `source_slot_migration_loses_no_key` failed that way before this guard).
//!
//! The guard looks at every `DEL`/`UNLINK` of a cluster source's engine before it is
//! applied and asks the source where each key lives now: `EXISTS key` on X answers
//! normally when X still serves the key's slot (a user's DEL: applied), and `ASK`/`MOVED`
//! when the slot is migrating or gone; then the new owner is asked (`ASKING`, `EXISTS`).
//! A key that exists there is dropped from the DEL: its value lives on in the other
//! master's stream, which the other engine applies. A key that exists nowhere is
//! deleted. Either way the target ends as the source is.
//!
//! The cost is one round trip to the source per DEL/UNLINK unit of a cluster source.
//!
//! The DEL is not all: X's writes to the key *before* the migration still have to land
//! before Y's. When X's link lags, the target could get Y's `RESTORE` and Y's later
//! writes first, then X's older `SET`, and keep that (the DEL is dropped as above). So
//! the engines of a cluster source share a [`Moved`] barrier: Y's engine holds its
//! stream at a `RESTORE-ASKING` of a key until X's engine has *landed* (the target
//! confirmed) the unit whose DEL took that key away, i.e. everything X served of it.
//! Y cannot know which master X was, so it waits for the key, from any of them. A
//! `MIGRATE … COPY` leaves no DEL, and two masters migrating keys to each other at once
//! could each wait for the other: the wait gives up after [`BARRIER_WAIT`], logged and
//! counted, and the stream goes on as it did without the barrier.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::Notify;
use tracing::{info, warn};

use super::SyncError;
use super::incr::TargetWrite;
use crate::core::shutdown::Shutdown;
use crate::redis::cluster::nodes::{Redirect, redirect};
use crate::redis::conn::{Conn, ConnError, Frame, is_transient_server_error};
use crate::redis::url::Endpoint;

pub struct MigrationGuard {
    source: Endpoint,
    conns: HashMap<String, Conn>,
    moved: Arc<Moved>,
    /// Keys the last [`MigrationGuard::filter`] found served by another master: once the
    /// unit that deleted them landed, [`Moved::landed`].
    moved_out: Vec<Bytes>,
}

/// How long an importing master's engine waits for the old master's DEL of a key.
pub const BARRIER_WAIT: Duration = Duration::from_secs(30);

/// How long a landed DEL is remembered for an importing master's engine that has not
/// read its `RESTORE-ASKING` yet.
const REMEMBER: Duration = Duration::from_secs(600);

/// Keys moved away from a source master whose DEL that master's engine has landed on
/// the target, shared by the engines of one cluster source.
#[derive(Debug, Default)]
pub struct Moved {
    landed: Mutex<HashMap<Bytes, Instant>>,
    /// Keys an importing master's engine read a `RESTORE-ASKING` of and waits for:
    /// they did move, whatever the source answers about them meanwhile.
    awaited: Mutex<HashMap<Bytes, usize>>,
    notify: Notify,
}

impl Moved {
    /// The old master's engine landed the removal of `keys`.
    pub fn landed(&self, keys: Vec<Bytes>) {
        let now = Instant::now();
        let mut l = self.landed.lock().unwrap_or_else(|e| e.into_inner());
        l.retain(|_, at| now.duration_since(*at) < REMEMBER);
        l.extend(keys.into_iter().map(|k| (k, now)));
        drop(l);
        self.notify.notify_waiters();
    }

    /// Wait until the removal of `key` from its old master landed, at most `limit`.
    /// `false`: it did not within `limit`.
    pub async fn wait(&self, key: &Bytes, limit: Duration) -> bool {
        *self.awaited_map().entry(key.clone()).or_default() += 1;
        let landed = self.wait_landed(key, limit).await;
        let mut a = self.awaited_map();
        if let Some(n) = a.get_mut(key) {
            *n -= 1;
            if *n == 0 {
                a.remove(key);
            }
        }
        landed
    }

    /// Whether an importing master's engine waits for the removal of `key`: it read
    /// the key's `RESTORE-ASKING`, so the key moved to its master.
    pub fn awaited(&self, key: &Bytes) -> bool {
        self.awaited_map().contains_key(key)
    }

    fn awaited_map(&self) -> std::sync::MutexGuard<'_, HashMap<Bytes, usize>> {
        self.awaited.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn wait_landed(&self, key: &Bytes, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            // Registered before the check, so a `landed` in between is not missed.
            let notified = self.notify.notified();
            if self
                .landed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(key)
                .is_some()
            {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return false;
            }
        }
    }
}

const TIMEOUT: Duration = Duration::from_secs(10);

fn is_delete(argv: &[Bytes]) -> bool {
    argv.len() >= 2
        && (argv[0].eq_ignore_ascii_case(b"DEL") || argv[0].eq_ignore_ascii_case(b"UNLINK"))
}

impl MigrationGuard {
    pub fn new(source: Endpoint, moved: Arc<Moved>) -> Self {
        Self {
            source,
            conns: HashMap::new(),
            moved,
            moved_out: Vec::new(),
        }
    }

    /// Hold the stream at a `RESTORE-ASKING` (a key migrated here) until the old
    /// master's engine landed the key's removal: what it served of the key lands first.
    /// `false`: `shutdown` came first (the writes are not applied; the stream stops
    /// before them, and its checkpoint does not cover them).
    pub async fn before_restores(&self, writes: &[TargetWrite], shutdown: &mut Shutdown) -> bool {
        for w in writes {
            let Some(key) = w.argv.get(1).filter(|_| is_migrated_key(&w.argv)) else {
                continue;
            };
            if self.moved.wait(key, Duration::ZERO).await {
                continue;
            }
            info!(
                key = %String::from_utf8_lossy(key),
                "a key migrated to this master: waiting until its old master's writes landed"
            );
            crate::metrics::migration_barrier_wait();
            // Another shard failing stops this one: a wait of 30 s per key held the
            // whole process (one stopped importing master waited 300 × 30 s).
            let landed = tokio::select! {
                biased;
                _ = shutdown.wait() => return false,
                l = self.moved.wait(key, BARRIER_WAIT) => l,
            };
            if !landed {
                crate::metrics::migration_barrier_gave_up();
                warn!(
                    key = %String::from_utf8_lossy(key),
                    "no DEL of a migrated key from its old master within {BARRIER_WAIT:?} \
                     (MIGRATE COPY, or masters migrating to each other): going on"
                );
            }
        }
        true
    }

    /// Keys the last `filter` found moved to another master (taken).
    pub fn take_moved_out(&mut self) -> Vec<Bytes> {
        std::mem::take(&mut self.moved_out)
    }

    /// The unit whose DELs `take_moved_out` returned has landed.
    pub fn landed(&self, keys: Vec<Bytes>) {
        self.moved.landed(keys);
    }

    /// `writes` with the keys that moved to another source master taken out of their
    /// DEL/UNLINK (and a DEL left with no key dropped).
    pub async fn filter(
        &mut self,
        writes: Vec<TargetWrite>,
    ) -> Result<Vec<TargetWrite>, SyncError> {
        if !writes.iter().any(|w| is_delete(&w.argv)) {
            return Ok(writes);
        }
        let mut out = Vec::with_capacity(writes.len());
        for mut w in writes {
            if !is_delete(&w.argv) {
                out.push(w);
                continue;
            }
            let mut keep = vec![w.argv[0].clone()];
            for key in &w.argv[1..] {
                match self.lives_elsewhere(key).await? {
                    Where::Here => keep.push(key.clone()),
                    Where::Gone => {
                        keep.push(key.clone());
                        self.moved_out.push(key.clone());
                    }
                    Where::There => self.moved_out.push(key.clone()),
                }
            }
            if keep.len() == w.argv.len() {
                out.push(w);
            } else if keep.len() > 1 {
                w.argv = keep;
                w.raw = None;
                out.push(w);
            }
        }
        Ok(out)
    }

    /// Whether `key` is now served by another master of the source, and exists there.
    /// A source in flux answers for a while with a refusal that goes away by itself
    /// (`CLUSTERDOWN` while a master is failing, `TRYAGAIN`, `LOADING`), a lost
    /// connection, or a redirect from the node it redirected to (the slot moved on
    /// between the two questions): each is asked again from the start, for at most
    /// [`SETTLE`]. A CI run lost its shard to one `CLUSTERDOWN` here.
    async fn lives_elsewhere(&mut self, key: &Bytes) -> Result<Where, SyncError> {
        let started = Instant::now();
        let mut pause = Duration::from_millis(20);
        loop {
            // The importing engine waits for this DEL: the key moved, whatever the
            // source says (CI: two masters redirecting to each other for 30 s while the
            // importing engine's barrier waited for this very DEL).
            if self.moved.awaited(key) {
                return Ok(Where::There);
            }
            let (addr, why) = match self.ask_where(key).await {
                Ok(w) => return Ok(w),
                Err(Ask::Fatal(e)) => return Err(e),
                Err(Ask::Again { addr, why }) => (addr, why),
            };
            if started.elapsed() >= SETTLE {
                return Err(self.err(&addr, format!("still {why} after {SETTLE:?}")));
            }
            warn!(node = %addr, "checking where a deleted key lives: {why}; asking again in {pause:?}");
            crate::metrics::migration_check_retry();
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(1));
        }
    }

    async fn ask_where(&mut self, key: &Bytes) -> Result<Where, Ask> {
        let home = self.source.addr();
        let reply = self.request(&home, &[b"EXISTS", key], false).await?;
        let Frame::Error(e) = reply else {
            return Ok(Where::Here);
        };
        let addr = match redirect(&e) {
            Some(Redirect::Ask(a)) | Some(Redirect::Moved(a)) => a,
            None if is_transient_server_error(&e) => return Err(Ask::again(&home, e.to_string())),
            None => return Err(Ask::Fatal(self.err(&home, format!("EXISTS answered {e}")))),
        };
        match self.request(&addr, &[b"EXISTS", key], true).await? {
            Frame::Integer(n) if n > 0 => Ok(Where::There),
            Frame::Integer(_) => Ok(Where::Gone),
            Frame::Error(e) if is_transient_server_error(&e) || redirect(&e).is_some() => {
                Err(Ask::again(&addr, e.to_string()))
            }
            other => Err(Ask::Fatal(
                self.err(&addr, format!("EXISTS answered {other:?}")),
            )),
        }
    }

    async fn request(&mut self, addr: &str, argv: &[&[u8]], asking: bool) -> Result<Frame, Ask> {
        let conn = match self.conns.get_mut(addr) {
            Some(c) => c,
            None => {
                let (host, port) = addr
                    .rsplit_once(':')
                    .and_then(|(h, p)| Some((h, p.parse::<u16>().ok()?)))
                    .ok_or_else(|| Ask::Fatal(self.err(addr, "unreadable node address".into())))?;
                let mut ep = self.source.with_db(0);
                ep.host = host.trim_matches(['[', ']']).to_string();
                ep.port = port;
                let c = Conn::connect(&ep, TIMEOUT)
                    .await
                    .map_err(|e| Ask::from_conn(addr, e))?;
                self.conns.entry(addr.to_string()).or_insert(c)
            }
        };
        if asking {
            conn.queue(&[b"ASKING"]);
        }
        conn.queue(argv);
        let sent = conn.flush().await;
        let reply = match sent {
            Ok(()) if asking => match conn.read_frame().await {
                Ok(_) => conn.read_frame().await,
                Err(e) => Err(e),
            },
            Ok(()) => conn.read_frame().await,
            Err(e) => Err(e),
        };
        reply.map_err(|e| {
            self.conns.remove(addr);
            Ask::from_conn(addr, e)
        })
    }

    fn err(&self, addr: &str, detail: String) -> SyncError {
        SyncError::Setup {
            endpoint: addr.to_string(),
            detail: format!("checking where a deleted key lives (source resharding): {detail}"),
        }
    }
}

/// A two-way side's slot holds tandem's per-slot keys (the reverse link's checkpoints,
/// `{slot tag}`ged), so a migration's DEL names them beside the users' keys. As is,
/// that DEL counts as an echo (it writes a `__tandem:` key) and is dropped whole, and
/// the importing master's engine would never learn that the users' keys left. A bare
/// DEL/UNLINK (tandem writes none: its own are inside `MULTI`) loses its tandem keys
/// here; what is left is a DEL of users' keys like any other.
pub fn strip_tandem_keys(unit: &mut super::incr::Unit) {
    let [cmd] = &mut unit.cmds[..] else {
        return;
    };
    let tandem = |k: &Bytes| crate::redis::filter::is_tandem_key(k);
    if !is_delete(&cmd.argv) || !cmd.argv[1..].iter().any(tandem) {
        return;
    }
    let keep: Vec<Bytes> = std::iter::once(cmd.argv[0].clone())
        .chain(cmd.argv[1..].iter().filter(|k| !tandem(k)).cloned())
        .collect();
    if keep.len() == 1 {
        return;
    }
    let mut raw = bytes::BytesMut::new();
    let argv: Vec<&[u8]> = keep.iter().map(|a| &a[..]).collect();
    crate::redis::conn::encode_command(&mut raw, &argv);
    cmd.raw = raw.freeze();
    cmd.argv = keep;
}

/// `RESTORE-ASKING`: a key arriving on this master by `MIGRATE`, i.e. the cluster moving
/// it between its masters (resharding). Nobody wrote it: its value is already on the
/// other side (applied from the old master's stream, or written there), so in two-way it
/// is neither applied nor judged (`twoway/hooks.rs`); on a cluster source it passes the
/// barrier first ([`MigrationGuard::before_restores`]). Applying it put back, over the other side's own newer
/// writes, the value the key had when it moved; judging it made every key the other side
/// was writing in the moving slot a conflict, and `converge` then copied a stale value
/// across (tests/twoway_cluster_ops.rs, slot migration). The old master's `DEL` of it
/// is handled by the resharding guard (`sync/migration.rs`).
pub fn is_migrated_key(argv: &[Bytes]) -> bool {
    argv.first()
        .is_some_and(|c| c.eq_ignore_ascii_case(b"RESTORE-ASKING"))
}

/// Where a key deleted by this master's stream lives now.
enum Where {
    /// This master still serves its slot: a user's DEL.
    Here,
    /// Another master serves it and has it: the DEL of a migration.
    There,
    /// Another master serves its slot and does not have it (deleted there since).
    Gone,
}

/// How long the source may stay in flux before a DEL's check fails the shard.
const SETTLE: Duration = Duration::from_secs(60);

/// Why a question to the source got no answer.
enum Ask {
    /// Ask again (see [`MigrationGuard::lives_elsewhere`]).
    Again {
        addr: String,
        why: String,
    },
    Fatal(SyncError),
}

impl Ask {
    fn again(addr: &str, why: impl Into<String>) -> Ask {
        Ask::Again {
            addr: addr.to_string(),
            why: why.into(),
        }
    }

    fn from_conn(addr: &str, e: ConnError) -> Ask {
        if e.is_retryable() {
            Ask::again(addr, e.to_string())
        } else {
            Ask::Fatal(SyncError::Sink(e.into()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_wait_ends_at_the_landing_of_its_key_whenever_it_came() {
        let m = Arc::new(Moved::default());
        let k = Bytes::from_static(b"k");
        // Landed before anyone waits: found at once, and only once.
        m.landed(vec![k.clone()]);
        assert!(m.wait(&k, Duration::ZERO).await);
        assert!(!m.wait(&k, Duration::from_millis(10)).await);
        // Landed while waiting (another key first).
        let waiter = tokio::spawn({
            let (m, k) = (m.clone(), k.clone());
            async move { m.wait(&k, Duration::from_secs(30)).await }
        });
        tokio::task::yield_now().await;
        m.landed(vec![Bytes::from_static(b"other")]);
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        // Awaited while waited for, by that key only.
        assert!(m.awaited(&k));
        assert!(!m.awaited(&Bytes::from_static(b"other")));
        m.landed(vec![k.clone()]);
        assert!(waiter.await.unwrap());
        assert!(!m.awaited(&k));
        assert!(m.wait(&Bytes::from_static(b"other"), Duration::ZERO).await);
    }
}
