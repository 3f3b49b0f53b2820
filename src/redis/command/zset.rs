//! Sorted-set writes.

use super::{CommandSpec, Family, Flags, K1, KeySpec, range};

const fn w(name: &'static str, arity: i16, keys: KeySpec) -> CommandSpec {
    CommandSpec::new(name, Family::ZSet, arity, Flags::WRITE, keys)
}

/// `ZUNIONSTORE dest numkeys key…`: the destination comes first, as GETKEYS lists it.
pub(super) const STORE: KeySpec = KeySpec::NumKeys {
    numkeys_at: 2,
    first_key: 3,
    dest: Some(1),
};

const fn numkeys(numkeys_at: usize) -> KeySpec {
    KeySpec::NumKeys {
        numkeys_at,
        first_key: numkeys_at + 1,
        dest: None,
    }
}

pub(super) static COMMANDS: &[CommandSpec] = &[
    w("BZMPOP", -5, numkeys(2)),
    w("BZPOPMAX", -3, range(1, -2, 1)),
    w("BZPOPMIN", -3, range(1, -2, 1)),
    w("ZADD", -4, K1),
    w("ZDIFFSTORE", -4, STORE),
    w("ZINCRBY", 4, K1),
    w("ZINTERSTORE", -4, STORE),
    w("ZMPOP", -4, numkeys(1)),
    w("ZPOPMAX", -2, K1),
    w("ZPOPMIN", -2, K1),
    w("ZRANGESTORE", -5, range(1, 2, 1)),
    w("ZREM", -3, K1),
    w("ZREMRANGEBYLEX", 4, K1),
    w("ZREMRANGEBYRANK", 4, K1),
    w("ZREMRANGEBYSCORE", 4, K1),
    w("ZUNIONSTORE", -4, STORE),
];
