//! String writes. Arity and key positions as Redis 7 / 8 declare them.

use super::{CommandSpec, Family, Flags, K1, KeyError, KeyErrorReason, KeySpec, range};
use bytes::Bytes;

const fn w(name: &'static str, arity: i16, keys: KeySpec) -> CommandSpec {
    CommandSpec::new(name, Family::String, arity, Flags::WRITE, keys)
}

const SPLIT: Flags = Flags::WRITE.union(Flags::SPLITTABLE);

pub(super) static COMMANDS: &[CommandSpec] = &[
    w("APPEND", 3, K1),
    w("DECR", 2, K1),
    w("DECRBY", 3, K1),
    w("GETDEL", 2, K1),
    w("GETEX", -2, K1),
    w("GETSET", 3, K1),
    w("INCR", 2, K1),
    w("INCRBY", 3, K1),
    w("INCRBYFLOAT", 3, K1),
    CommandSpec::new("MSET", Family::String, -3, SPLIT, range(1, -1, 2)),
    CommandSpec::new("MSETNX", Family::String, -3, SPLIT, range(1, -1, 2)),
    // Redis 8.4: conditions and expiry apply to the whole group, so never split.
    w("MSETEX", -4, KeySpec::Custom(msetex_keys)),
    w("PSETEX", 4, K1),
    w("SET", -3, K1),
    w("SETEX", 4, K1),
    w("SETNX", 3, K1),
    w("SETRANGE", 4, K1),
];

/// `MSETEX numkeys key value [key value …] [options]`.
fn msetex_keys(command: &'static str, argv: &[Bytes]) -> Result<Vec<usize>, KeyError> {
    let numkeys = super::parse_numkeys(command, argv, 1)?;
    let available = argv.len().saturating_sub(2) / 2;
    if numkeys < 1 || numkeys as u64 > available as u64 {
        return Err(super::key_error(
            command,
            KeyErrorReason::NumKeysOutOfRange { numkeys, available },
        ));
    }
    Ok((0..numkeys as usize).map(|i| 2 + 2 * i).collect())
}
