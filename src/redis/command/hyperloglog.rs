//! HyperLogLog writes.

use super::{CommandSpec, Family, Flags, K1, KeySpec, range};

const fn w(name: &'static str, arity: i16, keys: KeySpec) -> CommandSpec {
    CommandSpec::new(name, Family::HyperLogLog, arity, Flags::WRITE, keys)
}

pub(super) static COMMANDS: &[CommandSpec] = &[
    w("PFADD", -2, K1),
    // Read-only for COMMAND INFO, but a single-key PFCOUNT that refreshes the cached
    // cardinality marks the key dirty, and Redis then propagates it.
    w("PFCOUNT", -2, range(1, -1, 1)),
    w("PFMERGE", -2, range(1, -1, 1)),
];
