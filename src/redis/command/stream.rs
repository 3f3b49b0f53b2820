//! Stream writes. XREADGROUP is absent on purpose: Redis propagates its effect as XCLAIM
//! (and XGROUP SETID), never the read itself.

use super::{CommandSpec, Family, Flags, K1, KeySpec, range};

const fn w(name: &'static str, arity: i16, keys: KeySpec) -> CommandSpec {
    CommandSpec::new(name, Family::Stream, arity, Flags::WRITE, keys)
}

/// `XGROUP <sub> key …`: the stream is the argument after the subcommand.
const K2: KeySpec = range(2, 2, 1);

static XGROUP: &[CommandSpec] = &[
    w("XGROUP CREATE", -5, K2),
    w("XGROUP CREATECONSUMER", 5, K2),
    w("XGROUP DELCONSUMER", 5, K2),
    w("XGROUP DESTROY", 4, K2),
    w("XGROUP SETID", -5, K2),
];

pub(super) static COMMANDS: &[CommandSpec] = &[
    w("XACK", -4, K1),
    w("XACKDEL", -6, K1),
    w("XADD", -5, K1),
    w("XAUTOCLAIM", -6, K1),
    w("XCLAIM", -6, K1),
    w("XDEL", -3, K1),
    w("XDELEX", -5, K1),
    CommandSpec::container("XGROUP", Family::Stream, XGROUP),
    w("XSETID", -3, K1),
    w("XTRIM", -4, K1),
];
