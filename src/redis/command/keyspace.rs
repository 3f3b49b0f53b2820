//! Type-independent key writes: deletion, expiry, renames, moves and copies.

use super::{CommandSpec, Family, Flags, K1, KeyError, KeySpec, range};
use bytes::Bytes;

const fn w(name: &'static str, arity: i16, keys: KeySpec) -> CommandSpec {
    CommandSpec::new(name, Family::Keyspace, arity, Flags::WRITE, keys)
}

const fn f(name: &'static str, arity: i16, flags: Flags, keys: KeySpec) -> CommandSpec {
    CommandSpec::new(
        name,
        Family::Keyspace,
        arity,
        Flags::WRITE.union(flags),
        keys,
    )
}

const ALL: KeySpec = range(1, -1, 1);

pub(super) static COMMANDS: &[CommandSpec] = &[
    f("COPY", -3, Flags::CROSS_DB, range(1, 2, 1)),
    f("DEL", -2, Flags::SPLITTABLE, ALL),
    w("DELEX", -2, K1),
    w("DELIFEQ", 3, K1),
    w("EXPIRE", -3, K1),
    w("EXPIREAT", -3, K1),
    f("MOVE", 3, Flags::CROSS_DB.union(Flags::NOT_ON_CLUSTER), K1),
    w("PERSIST", 2, K1),
    w("PEXPIRE", -3, K1),
    w("PEXPIREAT", -3, K1),
    w("RENAME", 3, range(1, 2, 1)),
    w("RENAMENX", 3, range(1, 2, 1)),
    w("RESTORE", -4, K1),
    // Sent by MIGRATE to a cluster node and propagated by it as received.
    w("RESTORE-ASKING", -4, K1),
    // Read-only for COMMAND INFO; applying it only refreshes LRU/LFU on the target.
    // Propagated only with STORE (a plain SORT is a read).
    w("SORT", -2, KeySpec::Custom(sort_keys)),
    f("TOUCH", -2, Flags::SPLITTABLE, ALL),
    f("UNLINK", -2, Flags::SPLITTABLE, ALL),
];

/// The sorted key, then the STORE destination. Mirrors Redis's `sortGetKeys`: LIMIT
/// skips two arguments and GET/BY one, so a pattern spelled "store" is not a STORE;
/// the last STORE wins.
fn sort_keys(_command: &'static str, argv: &[Bytes]) -> Result<Vec<usize>, KeyError> {
    let mut store = None;
    let mut i = 2;
    while i < argv.len() {
        let arg = &argv[i];
        if arg.eq_ignore_ascii_case(b"LIMIT") {
            i += 2;
        } else if arg.eq_ignore_ascii_case(b"GET") || arg.eq_ignore_ascii_case(b"BY") {
            i += 1;
        } else if arg.eq_ignore_ascii_case(b"STORE") && i + 1 < argv.len() {
            store = Some(i + 1);
        }
        i += 1;
    }
    let mut keys = Vec::with_capacity(2);
    keys.push(1);
    keys.extend(store);
    Ok(keys)
}

/// The destination db of a CROSS_DB command (`MOVE key db`, `COPY src dst DB db`), and
/// the index of the argument that holds it; `Ok(None)` when it stays in the current db.
pub fn target_db(spec: &CommandSpec, argv: &[Bytes]) -> Result<Option<(usize, u32)>, KeyError> {
    let at = match spec.name {
        "MOVE" => Some(2),
        "COPY" => (3..argv.len().saturating_sub(1))
            .rev()
            .find(|&i| argv[i].eq_ignore_ascii_case(b"DB"))
            .map(|i| i + 1),
        _ => None,
    };
    let Some(at) = at else { return Ok(None) };
    let db = argv
        .get(at)
        .and_then(|a| std::str::from_utf8(a).ok())
        .and_then(|s| s.parse::<u32>().ok())
        .ok_or_else(|| {
            super::key_error(
                spec.name,
                super::KeyErrorReason::WrongArity {
                    argc: argv.len(),
                    arity: spec.arity,
                },
            )
        })?;
    Ok(Some((at, db)))
}
