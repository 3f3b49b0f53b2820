//! Commands of the replication stream that are not data writes: db selection, flushes,
//! transactions, functions and scripts, and the plumbing that is never applied.

use super::{CommandSpec, Family, Flags, K1, KeySpec};

const fn s(name: &'static str, arity: i16, flags: Flags) -> CommandSpec {
    CommandSpec::new(name, Family::Server, arity, flags, KeySpec::None)
}

const GLOBAL: Flags = Flags::WRITE.union(Flags::KEYLESS);
const FLUSH: Flags = GLOBAL.union(Flags::DB_SCOPE);

static FUNCTION: &[CommandSpec] = &[
    s("FUNCTION DELETE", 3, GLOBAL),
    s("FUNCTION FLUSH", -2, GLOBAL),
    s("FUNCTION LOAD", -3, GLOBAL),
    s("FUNCTION RESTORE", -3, GLOBAL),
];

// Redis 5/6 propagate SCRIPT LOAD and SCRIPT FLUSH so replicas can run EVALSHA.
static SCRIPT: &[CommandSpec] = &[s("SCRIPT FLUSH", -2, GLOBAL), s("SCRIPT LOAD", 3, GLOBAL)];

pub(super) static COMMANDS: &[CommandSpec] = &[
    s("EXEC", 1, Flags::WRITE.union(Flags::TXN)),
    s("FLUSHALL", -1, FLUSH),
    s("FLUSHDB", -1, FLUSH),
    CommandSpec::container("FUNCTION", Family::Server, FUNCTION),
    s("MULTI", 1, Flags::WRITE.union(Flags::TXN)),
    s("PING", -1, Flags::CONTROL),
    s("PUBLISH", 3, Flags::CONTROL),
    s("REPLCONF", -1, Flags::CONTROL),
    CommandSpec::container("SCRIPT", Family::Server, SCRIPT),
    s("SELECT", 2, Flags::WRITE.union(Flags::SELECT)),
    // The shard channel is a "key" for cluster routing only; SPUBLISH is never applied.
    CommandSpec::new("SPUBLISH", Family::Server, 3, Flags::CONTROL, K1),
    s(
        "SWAPDB",
        3,
        Flags::WRITE
            .union(Flags::DB_SCOPE)
            .union(Flags::NOT_ON_CLUSTER),
    ),
];
