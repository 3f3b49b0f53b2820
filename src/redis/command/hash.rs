//! Hash writes, with the field-TTL commands of Redis 7.4+ / 8 and Valkey 9.

use super::{CommandSpec, Family, Flags, K1};

const fn w(name: &'static str, arity: i16) -> CommandSpec {
    CommandSpec::new(name, Family::Hash, arity, Flags::WRITE, K1)
}

pub(super) static COMMANDS: &[CommandSpec] = &[
    w("HDEL", -3),
    w("HINCRBY", 4),
    w("HINCRBYFLOAT", 4),
    w("HMSET", -4),
    w("HSET", -4),
    w("HSETNX", 4),
    // Field TTLs: `key … FIELDS numfields field…`; only the hash is a key.
    w("HEXPIRE", -6),
    w("HEXPIREAT", -6),
    w("HPEXPIRE", -6),
    w("HPEXPIREAT", -6),
    w("HPERSIST", -5),
    w("HGETDEL", -5),
    w("HGETEX", -5),
    w("HSETEX", -6),
];
