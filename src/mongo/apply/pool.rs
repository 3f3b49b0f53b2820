//! Parallel apply: `--workers` appliers, each with a checkpoint of its own
//! (`<id>/<k>`), fed by hashing each document's (namespace, `_id`).
//!
//! A batch is split by document, the parts are applied at the same time (one
//! transaction each), and every worker's checkpoint moves to the batch's end (a worker
//! with nothing to apply writes its checkpoint alone), so the slowest checkpoint is never
//! more than a batch behind. Order per document holds: a document always goes to the same
//! worker, and batches follow one another. A unit whose documents hash to more than one
//! worker (a source transaction) and every DDL is a barrier: the parts before it land
//! first, then it is applied alone, whole, by worker 0.
//!
//! After a crash the workers' checkpoints differ by at most a batch. tandem resumes from
//! the lowest and treats everything up to the highest like the copy window: every change
//! carries its result (a `$inc` is logged as the new value, a diff as the new fields), so
//! applying again a change a worker already applied leaves the document as it was, and
//! the end state is exact. What is not detected in that range is a conflict (an insert
//! of an existing document is taken as the replay it is).

use std::hash::{Hash, Hasher};

use super::Applier;
use super::fold::doc_key;
use crate::core::MongoPosition;
use crate::mongo::error::Result;
use crate::mongo::event::{Payload, Unit};

pub struct Pool {
    appliers: Vec<Applier>,
}

impl Pool {
    pub fn new(appliers: Vec<Applier>) -> Pool {
        assert!(!appliers.is_empty(), "a pool of no appliers");
        Pool { appliers }
    }

    /// The position every worker has applied (the lowest of theirs).
    pub fn last(&self) -> Option<MongoPosition> {
        let mut out: Option<MongoPosition> = None;
        for a in &self.appliers {
            let p = a.last()?;
            if out.as_ref().is_none_or(|o| p.ts < o.ts) {
                out = Some(p.clone());
            }
        }
        out
    }

    fn applied(&self, k: usize, pos: &MongoPosition) -> bool {
        holds(&self.appliers[k], pos)
    }

    /// Same contract as [`Applier::apply`], per worker: on `Ok` every unit is on the
    /// target and every worker's checkpoint is at the last unit's position.
    pub async fn apply(&mut self, units: Vec<Unit>) -> Result<()> {
        let n = self.appliers.len();
        if n == 1 {
            return self.appliers[0].apply(units).await;
        }
        let mut parts: Vec<Vec<Unit>> = (0..n).map(|_| Vec::new()).collect();
        let mut upto: Option<MongoPosition> = None;
        for u in units {
            let route = worker_of(&u, n);
            tracing::trace!("unit at {} to {route:?}", u.pos);
            match route {
                Route::Skip => upto = Some(u.pos.clone()),
                // After a failed batch the reader resumes at the lowest worker's position,
                // so a worker that got further sees again what it already committed
                // (with its checkpoint): it skips that, and only that.
                Route::To(k) if self.applied(k, &u.pos) => upto = Some(u.pos.clone()),
                Route::Barrier if self.applied(0, &u.pos) => upto = Some(u.pos.clone()),
                Route::To(k) => {
                    upto = Some(u.pos.clone());
                    parts[k].push(u);
                }
                Route::Barrier => {
                    if let Some(end) = upto.take() {
                        self.run_parts(
                            std::mem::replace(&mut parts, (0..n).map(|_| Vec::new()).collect()),
                            &end,
                        )
                        .await?;
                    }
                    self.appliers[0].apply(vec![u]).await?;
                }
            }
        }
        if let Some(end) = upto {
            self.run_parts(parts, &end).await?;
        }
        Ok(())
    }

    async fn run_parts(&mut self, parts: Vec<Vec<Unit>>, end: &MongoPosition) -> Result<()> {
        let runs = self.appliers.iter_mut().zip(parts).map(|(a, mut part)| {
            // Each worker's checkpoint moves to the end, with or without work (unless
            // it is there or beyond already).
            if !holds(a, end) && part.last().is_none_or(|u| u.pos != *end) {
                part.push(Unit {
                    pos: end.clone(),
                    wall_ms: 0,
                    txn: false,
                    touches_tandem: false,
                    lsid: None,
                    payload: Payload::Noop,
                });
            }
            a.apply(part)
        });
        futures_util::future::try_join_all(runs).await?;
        Ok(())
    }
}

/// Whether the worker's checkpoint is at `pos` or past it: it committed `pos` already.
fn holds(a: &Applier, pos: &MongoPosition) -> bool {
    a.last().is_some_and(|l| {
        matches!(
            pos.try_cmp(l),
            Ok(std::cmp::Ordering::Less | std::cmp::Ordering::Equal)
        )
    })
}

#[derive(Debug)]
enum Route {
    To(usize),
    Barrier,
    /// Nothing to apply: only the position moves (every worker's, at the batch end).
    Skip,
}

fn worker_of(u: &Unit, n: usize) -> Route {
    let ops = match &u.payload {
        Payload::Ops(ops) => ops,
        Payload::Ddl(_) => return Route::Barrier,
        Payload::Noop => return Route::Skip,
    };
    let mut worker = None;
    for op in ops {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        doc_key(op.ns(), op.id()).hash(&mut h);
        let k = (h.finish() % n as u64) as usize;
        match worker {
            None => worker = Some(k),
            Some(w) if w != k => return Route::Barrier,
            _ => {}
        }
    }
    worker.map_or(Route::Skip, Route::To)
}

#[cfg(test)]
mod tests {
    use bson::doc;

    use super::*;
    use crate::core::OpTime;
    use crate::mongo::apply::ApplyConfig;
    use crate::mongo::apply::fold::OnConflict;
    use crate::mongo::endpoint::MongoEndpoint;
    use crate::mongo::event::Op;
    use crate::mongo::ns::{Namespace, NsFilter};

    fn unit(ts: u64, id: i32) -> Unit {
        Unit {
            pos: MongoPosition::oplog("rs", OpTime(ts)),
            wall_ms: 0,
            txn: false,
            touches_tandem: false,
            lsid: None,
            payload: Payload::Ops(vec![Op::Insert {
                ns: Namespace::new("d", "c"),
                doc: doc! {"_id": id},
            }]),
        }
    }

    /// Workers at different positions, as after a batch that failed in one of them:
    /// what each already holds is skipped without a word to the target (here a port
    /// nobody listens on, so any write would fail), and what one lacks is sent.
    #[tokio::test]
    async fn a_worker_skips_what_it_committed_and_only_that() {
        let target = MongoEndpoint::connect(
            "--target",
            "mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=300&connectTimeoutMS=300",
        )
        .await
        .unwrap();
        let at = |ts| {
            let cfg = ApplyConfig {
                id: format!("w{ts}"),
                filter: NsFilter::new(&[], &[], &[]).unwrap(),
                on_conflict: OnConflict::Fail,
                copy_end: None,
                tag_ddl: false,
            };
            Applier::new(
                target.clone(),
                cfg,
                Some(MongoPosition::oplog("rs", OpTime(ts))),
                None,
            )
        };
        let mut pool = Pool::new(vec![at(10), at(20)]);
        let all: Vec<Unit> = (1..=10).map(|i| unit(i, i as i32)).collect();
        pool.apply(all).await.unwrap();
        assert_eq!(pool.last().unwrap().ts, OpTime(10));
        // Units 11..=20: worker 1 holds them, worker 0 does not.
        let mut sent_to_0 = false;
        let batch: Vec<Unit> = (11..=20)
            .map(|i| {
                let u = unit(i, i as i32);
                sent_to_0 |= matches!(worker_of(&u, 2), Route::To(0));
                u
            })
            .collect();
        assert!(sent_to_0, "the test needs a document of worker 0");
        assert!(pool.apply(batch).await.is_err());
    }
}
