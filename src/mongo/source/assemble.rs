//! Multi-entry transactions put back together: `partialTxn` chains and prepared
//! transactions are held until their commit, then handed on as one unit.
//!
//! A chain may have begun before the first entry this reader saw (a restart from a
//! checkpoint taken while a large or prepared transaction was open). Its last entry
//! still names the entry before it (`prevOpTime`), so the reader asks for those
//! entries instead of guessing: [`Ready::Missing`].

use std::collections::HashMap;

use super::entry::{Entry, TxnKey};
use crate::core::OpTime;
use crate::mongo::event::{Op, Payload};

#[derive(Debug)]
pub enum Ready {
    Unit {
        payload: Payload,
        txn: bool,
    },
    /// Part of a transaction that has not committed yet.
    Held,
    /// A transaction committed whose first entries this reader never saw: read the
    /// entry at `before` and earlier through `prevOpTime`, then put them in front of
    /// `ops`.
    Missing {
        before: OpTime,
        ops: Vec<Op>,
    },
}

#[derive(Default)]
struct Open {
    ops: Vec<Op>,
    /// `prevOpTime` of the first entry seen: 0 when the chain's start was seen.
    first_prev: OpTime,
    started: bool,
}

#[derive(Default)]
pub struct Assembler {
    open: HashMap<TxnKey, Open>,
}

impl Assembler {
    pub fn push(&mut self, entry: Entry) -> Ready {
        match entry {
            Entry::Ops { ops, txn } => Ready::Unit {
                payload: Payload::Ops(ops),
                txn,
            },
            Entry::Ddl(d) => Ready::Unit {
                payload: Payload::Ddl(d),
                txn: false,
            },
            Entry::Noop => Ready::Unit {
                payload: Payload::Noop,
                txn: false,
            },
            Entry::Part { key, ops, prev, .. } => {
                let open = self.open.entry(key).or_default();
                if !open.started {
                    open.started = true;
                    open.first_prev = prev;
                }
                open.ops.extend(ops);
                Ready::Held
            }
            Entry::ChainEnd { key, ops, prev } => {
                let mut open = self.open.remove(&key).unwrap_or(Open {
                    first_prev: prev,
                    ..Open::default()
                });
                open.ops.extend(ops);
                self.finish(open)
            }
            Entry::Commit { key, prev, .. } => {
                let open = self.open.remove(&key).unwrap_or(Open {
                    first_prev: prev,
                    ..Open::default()
                });
                self.finish(open)
            }
            Entry::Abort { key } => {
                self.open.remove(&key);
                Ready::Unit {
                    payload: Payload::Noop,
                    txn: false,
                }
            }
        }
    }

    fn finish(&mut self, open: Open) -> Ready {
        if open.first_prev.0 != 0 {
            return Ready::Missing {
                before: open.first_prev,
                ops: open.ops,
            };
        }
        Ready::Unit {
            payload: Payload::Ops(open.ops),
            txn: true,
        }
    }

    /// Transactions started and not yet committed or aborted.
    pub fn open_transactions(&self) -> usize {
        self.open.len()
    }
}

/// Reads one earlier entry of a chain: its ops and the entry before it (0 at the
/// chain's start). Errors when the entry is not a part of a transaction.
pub fn chain_link(entry: Entry) -> Option<(Vec<Op>, OpTime)> {
    match entry {
        Entry::Part { ops, prev, .. } => Some((ops, prev)),
        _ => None,
    }
}
