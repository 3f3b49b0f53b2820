//! List writes, blocking variants included: old servers propagate some of them verbatim.

use super::{CommandSpec, Family, Flags, K1, KeySpec, range};

const fn w(name: &'static str, arity: i16, keys: KeySpec) -> CommandSpec {
    CommandSpec::new(name, Family::List, arity, Flags::WRITE, keys)
}

const fn numkeys(numkeys_at: usize) -> KeySpec {
    KeySpec::NumKeys {
        numkeys_at,
        first_key: numkeys_at + 1,
        dest: None,
    }
}

pub(super) static COMMANDS: &[CommandSpec] = &[
    w("BLMOVE", 6, range(1, 2, 1)),
    w("BLMPOP", -5, numkeys(2)),
    w("BLPOP", -3, range(1, -2, 1)),
    w("BRPOP", -3, range(1, -2, 1)),
    w("BRPOPLPUSH", 4, range(1, 2, 1)),
    w("LINSERT", 5, K1),
    w("LMOVE", 5, range(1, 2, 1)),
    w("LMPOP", -4, numkeys(1)),
    w("LPOP", -2, K1),
    w("LPUSH", -3, K1),
    w("LPUSHX", -3, K1),
    w("LREM", 4, K1),
    w("LSET", 4, K1),
    w("LTRIM", 4, K1),
    w("RPOP", -2, K1),
    w("RPOPLPUSH", 3, range(1, 2, 1)),
    w("RPUSH", -3, K1),
    w("RPUSHX", -3, K1),
];
