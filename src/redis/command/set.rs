//! Set writes.

use super::{CommandSpec, Family, Flags, K1, KeySpec, range};

const fn w(name: &'static str, arity: i16, keys: KeySpec) -> CommandSpec {
    CommandSpec::new(name, Family::Set, arity, Flags::WRITE, keys)
}

pub(super) static COMMANDS: &[CommandSpec] = &[
    w("SADD", -3, K1),
    w("SDIFFSTORE", -3, range(1, -1, 1)),
    w("SINTERSTORE", -3, range(1, -1, 1)),
    w("SMOVE", 4, range(1, 2, 1)),
    w("SPOP", -2, K1),
    w("SREM", -3, K1),
    w("SUNIONSTORE", -3, range(1, -1, 1)),
];
