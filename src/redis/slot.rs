//! Redis Cluster hash slots, and splitting multi-key commands per slot where that is exact.

use bytes::Bytes;

use crate::redis::command::{CommandSpec, Flags, KeyError, KeySpec, key_indexes, single_key_index};

/// Number of hash slots in a Redis Cluster.
pub const SLOTS: u16 = 16384;

/// The cluster slot of `key`: CRC16-XMODEM of the key, or of its hash tag, mod 16384.
///
/// The hash tag is the content between the first `{` and the first `}` after it, when
/// that content is non-empty (Redis cluster spec); otherwise the whole key is hashed.
pub fn key_slot(key: &[u8]) -> u16 {
    crc16::State::<crc16::XMODEM>::calculate(hash_tag(key)) % SLOTS
}

fn hash_tag(key: &[u8]) -> &[u8] {
    let Some(open) = key.iter().position(|&b| b == b'{') else {
        return key;
    };
    let rest = &key[open + 1..];
    match rest.iter().position(|&b| b == b'}') {
        Some(close) if close > 0 => &rest[..close],
        _ => key,
    }
}

/// Why a command cannot be routed to one slot.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SplitError {
    /// Keys in several slots and no exact way to split: the caller must stop (or apply
    /// its documented alternative), never drop it.
    #[error("{command}: keys span {} slots {slots:?} and it cannot be split", slots.len())]
    CrossSlot {
        command: &'static str,
        slots: Vec<u16>,
    },
    /// Keyless commands have no slot; the caller sends them to every master.
    #[error("{command}: has no keys, hence no slot")]
    NoKeys { command: &'static str },
    #[error(transparent)]
    Key(#[from] KeyError),
}

/// The slot of every key of `argv` when they share one, `None` when they do not. The
/// common case (one key, or keys under one hash tag) costs no copy of `argv`.
pub fn one_slot(spec: &'static CommandSpec, argv: &[Bytes]) -> Result<Option<u16>, SplitError> {
    if let Some(k) = single_key_index(spec, argv) {
        return Ok(Some(key_slot(&argv[k])));
    }
    let keys = key_indexes(spec, argv)?;
    let Some(&first) = keys.first() else {
        return Err(SplitError::NoKeys { command: spec.name });
    };
    let slot = key_slot(&argv[first]);
    Ok(keys[1..]
        .iter()
        .all(|&k| key_slot(&argv[k]) == slot)
        .then_some(slot))
}

/// Route `argv` by slot: one `(slot, argv)` per slot its keys fall in.
///
/// - All keys in one slot: the original argv, unchanged, for any command.
/// - [`Flags::SPLITTABLE`] commands whose keys span slots: one command per slot, slots in
///   order of first appearance, keys (with their values for MSET/MSETNX) in their
///   original relative order. MSETNX pieces become MSET: Redis only propagates an
///   MSETNX that set every key, and a per-slot MSETNX on the target could set some
///   groups and not others.
/// - Any other command spanning slots: [`SplitError::CrossSlot`].
pub fn split_by_slot(
    spec: &'static CommandSpec,
    argv: &[Bytes],
) -> Result<Vec<(u16, Vec<Bytes>)>, SplitError> {
    let keys = key_indexes(spec, argv)?;
    let Some(&first) = keys.first() else {
        return Err(SplitError::NoKeys { command: spec.name });
    };
    let first_slot = key_slot(&argv[first]);
    if keys.iter().all(|&k| key_slot(&argv[k]) == first_slot) {
        return Ok(vec![(first_slot, argv.to_vec())]);
    }
    let (true, KeySpec::Range { step, .. }) = (spec.has(Flags::SPLITTABLE), spec.keys) else {
        let mut slots: Vec<u16> = Vec::new();
        for &k in &keys {
            let s = key_slot(&argv[k]);
            if !slots.contains(&s) {
                slots.push(s);
            }
        }
        return Err(SplitError::CrossSlot {
            command: spec.name,
            slots,
        });
    };
    let name = if spec.name == "MSETNX" {
        Bytes::from_static(b"MSET")
    } else {
        argv[0].clone()
    };
    let mut out: Vec<(u16, Vec<Bytes>)> = Vec::new();
    for &k in &keys {
        let slot = key_slot(&argv[k]);
        let group = match out.iter().position(|(s, _)| *s == slot) {
            Some(i) => &mut out[i].1,
            None => {
                out.push((slot, vec![name.clone()]));
                &mut out.last_mut().expect("just pushed").1
            }
        };
        group.extend_from_slice(&argv[k..k + step]);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redis::command::lookup;

    fn argv(args: &[&str]) -> Vec<Bytes> {
        args.iter()
            .map(|a| Bytes::copy_from_slice(a.as_bytes()))
            .collect()
    }

    #[test]
    fn known_slots() {
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"bar"), 5061);
        assert_eq!(key_slot(b""), 0);
        assert_eq!(key_slot(b"123456789"), 0x31C3 % SLOTS);
        assert_eq!(
            key_slot(b"{user1000}.following"),
            key_slot(b"{user1000}.followers")
        );
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        assert_eq!(
            key_slot(b"foo{}{bar}"),
            crc16::State::<crc16::XMODEM>::calculate(b"foo{}{bar}") % SLOTS
        );
        assert_eq!(key_slot(b"foo{{bar}}zap"), key_slot(b"{bar"));
        assert_eq!(key_slot(b"foo{bar}{zap}"), key_slot(b"bar"));
        assert_eq!(key_slot(b"{"), key_slot(b"{"));
    }

    #[test]
    fn split_mset_groups_pairs_in_order() {
        let spec = lookup(b"MSET").unwrap();
        let a = argv(&["MSET", "{a}1", "x", "{b}1", "y", "{a}2", "z"]);
        let parts = split_by_slot(spec, &a).unwrap();
        assert_eq!(
            parts,
            vec![
                (key_slot(b"a"), argv(&["MSET", "{a}1", "x", "{a}2", "z"])),
                (key_slot(b"b"), argv(&["MSET", "{b}1", "y"])),
            ]
        );
    }

    #[test]
    fn split_msetnx_becomes_mset_only_when_split() {
        let spec = lookup(b"msetnx").unwrap();
        let same = argv(&["msetnx", "{a}1", "x", "{a}2", "y"]);
        assert_eq!(
            split_by_slot(spec, &same).unwrap(),
            vec![(key_slot(b"a"), same.clone())]
        );
        let cross = argv(&["msetnx", "{a}1", "x", "{b}2", "y"]);
        let parts = split_by_slot(spec, &cross).unwrap();
        assert_eq!(parts[0].1, argv(&["MSET", "{a}1", "x"]));
        assert_eq!(parts[1].1, argv(&["MSET", "{b}2", "y"]));
    }

    #[test]
    fn split_del_and_refuse_cross_slot_rename() {
        let del = argv(&["DEL", "foo", "bar", "{foo}x"]);
        let parts = split_by_slot(lookup(b"DEL").unwrap(), &del).unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0], (12182, argv(&["DEL", "foo", "{foo}x"])));
        assert_eq!(parts[1], (5061, argv(&["DEL", "bar"])));

        let rename = argv(&["RENAME", "foo", "bar"]);
        let err = split_by_slot(lookup(b"RENAME").unwrap(), &rename).unwrap_err();
        assert_eq!(
            err,
            SplitError::CrossSlot {
                command: "RENAME",
                slots: vec![12182, 5061]
            }
        );
        assert!(err.to_string().contains("RENAME"));
        let same = argv(&["RENAME", "{foo}a", "{foo}b"]);
        assert_eq!(
            split_by_slot(lookup(b"RENAME").unwrap(), &same)
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn split_errors_without_keys_or_with_bad_argv() {
        let fl = argv(&["FLUSHALL"]);
        assert!(matches!(
            split_by_slot(lookup(b"FLUSHALL").unwrap(), &fl),
            Err(SplitError::NoKeys {
                command: "FLUSHALL"
            })
        ));
        let bad = argv(&["MSET", "a"]);
        assert!(matches!(
            split_by_slot(lookup(b"MSET").unwrap(), &bad),
            Err(SplitError::Key(_))
        ));
    }
}
