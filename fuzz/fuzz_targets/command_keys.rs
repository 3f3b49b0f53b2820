#![no_main]
//! Any argv (the input split on spaces; an odd first byte swaps argv[0] for a table
//! command's name so the fuzzer reaches every key spec) through command resolution, key
//! extraction, slot routing and the translation for older targets. Checks, beyond "no
//! panic": every key index is inside argv and past the name; `single_key_index` agrees
//! with `key_indexes`; `one_slot` agrees with the keys' slots; the `split_by_slot` parts
//! cover exactly the keys (each key once, in its own slot's part, in order); a
//! translated command names no key the original did not.

use std::collections::HashMap;
use std::sync::OnceLock;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use tandem::redis::command::{CommandSpec, KeySpec, all, key_indexes, resolve, single_key_index};
use tandem::redis::compat::TargetCaps;
use tandem::redis::conn::Frame;
use tandem::redis::slot::{SplitError, key_slot, one_slot, split_by_slot};
use tandem::redis::sync::incr::rewritten_for_target;

fn names() -> &'static [&'static CommandSpec] {
    static N: OnceLock<Vec<&'static CommandSpec>> = OnceLock::new();
    N.get_or_init(|| all().collect())
}

/// Targets that need translating: Redis 6.2 and 7.0 (as in src/redis/compat/tests.rs).
fn targets() -> &'static [TargetCaps] {
    static T: OnceLock<Vec<TargetCaps>> = OnceLock::new();
    T.get_or_init(|| {
        let r62: &[(&str, i64)] = &[
            ("set", -3),
            ("hset", -4),
            ("pexpireat", 3),
            ("xsetid", 3),
            ("xgroup", -2),
            ("xadd", -5),
            ("xtrim", -2),
            ("xack", -4),
            ("xdel", -3),
            ("bitop", -4),
        ];
        let newer: &[(&str, i64)] = &[("pexpireat", -3), ("xsetid", -3), ("function", -2)];
        let entry = |(n, a): &(&str, i64)| {
            Frame::Array(vec![
                Frame::BulkString(Bytes::from(n.to_string())),
                Frame::Integer(*a),
            ])
        };
        let r70: Vec<(&str, i64)> = r62
            .iter()
            .filter(|(n, _)| !newer.iter().any(|(m, _)| m == n))
            .chain(newer)
            .copied()
            .collect();
        vec![
            TargetCaps::new(
                "redis_version:6.2.14\r\n",
                &Frame::Array(r62.iter().map(entry).collect()),
            ),
            TargetCaps::new(
                "redis_version:7.0.15\r\n",
                &Frame::Array(r70.iter().map(entry).collect()),
            ),
        ]
    })
}

fn keys_of(argv: &[Bytes]) -> Option<Vec<Bytes>> {
    let spec = resolve(argv)?;
    key_indexes(spec, argv)
        .ok()
        .map(|k| k.into_iter().map(|i| argv[i].clone()).collect())
}

fn check(spec: &'static CommandSpec, argv: &[Bytes]) {
    let keys = key_indexes(spec, argv);
    if let Ok(keys) = &keys {
        assert!(
            keys.iter().all(|&k| k >= 1 && k < argv.len()),
            "{} {keys:?}",
            spec.name
        );
    }
    if let Some(k) = single_key_index(spec, argv) {
        assert!(k >= 1 && k < argv.len());
        assert_eq!(keys.as_deref().ok(), Some(&[k][..]), "{}", spec.name);
    }
    match (one_slot(spec, argv), &keys) {
        (Ok(Some(slot)), Ok(keys)) => assert!(keys.iter().all(|&k| key_slot(&argv[k]) == slot)),
        (Ok(Some(_)), Err(_)) => {} // the single-key shortcut: already checked above
        (Ok(None), Ok(keys)) => {
            assert!(keys.len() > 1);
            assert!(
                keys.iter()
                    .any(|&k| key_slot(&argv[k]) != key_slot(&argv[keys[0]]))
            );
        }
        (Err(SplitError::NoKeys { .. }), Ok(keys)) => assert!(keys.is_empty()),
        (Err(SplitError::Key(_)), Err(_)) => {}
        (r, k) => panic!("{}: one_slot {r:?} but key_indexes {k:?}", spec.name),
    }
    match split_by_slot(spec, argv) {
        Ok(parts) => {
            let keys = keys.as_ref().expect("split without keys");
            if parts.len() == 1 {
                assert_eq!(parts[0].1, argv);
                assert!(keys.iter().all(|&k| key_slot(&argv[k]) == parts[0].0));
                return;
            }
            let KeySpec::Range { step, .. } = spec.keys else {
                panic!("{} split", spec.name)
            };
            // Every part: name, then whole key groups, all in the part's slot.
            let mut seen: Vec<Bytes> = Vec::new();
            let mut slots = Vec::new();
            for (slot, part) in &parts {
                assert!(!slots.contains(slot), "slot {slot} twice");
                slots.push(*slot);
                assert_eq!((part.len() - 1) % step, 0);
                for group in part[1..].chunks(step) {
                    assert_eq!(key_slot(&group[0]), *slot);
                    seen.push(group[0].clone());
                }
            }
            // Exactly the keys, each once, in their original relative order per slot.
            let mut want: Vec<Bytes> = Vec::new();
            for s in &slots {
                want.extend(
                    keys.iter()
                        .filter(|&&k| key_slot(&argv[k]) == *s)
                        .map(|&k| argv[k].clone()),
                );
            }
            assert_eq!(seen, want);
            assert_eq!(seen.len(), keys.len());
        }
        Err(SplitError::CrossSlot { slots, .. }) => {
            let keys = keys.as_ref().expect("cross-slot without keys");
            assert!(slots.len() > 1);
            let mut want = Vec::new();
            for &k in keys {
                let s = key_slot(&argv[k]);
                if !want.contains(&s) {
                    want.push(s);
                }
            }
            assert_eq!(slots, want);
        }
        Err(SplitError::NoKeys { .. }) => assert!(keys.as_ref().is_ok_and(|k| k.is_empty())),
        Err(SplitError::Key(_)) => assert!(keys.is_err()),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut argv: Vec<Bytes> = rest
        .split(|&b| b == b' ')
        .map(Bytes::copy_from_slice)
        .collect();
    if argv.len() > 64 {
        return;
    }
    if mode & 1 == 1 {
        let n = names();
        let spec = n[(mode as usize >> 1) % n.len()];
        argv.insert(0, Bytes::from_static(spec.name.as_bytes()));
    }
    let Some(spec) = resolve(&argv) else { return };
    check(spec, &argv);
    let original: HashMap<Bytes, ()> = keys_of(&argv)
        .unwrap_or_default()
        .into_iter()
        .map(|k| (k, ()))
        .collect();
    for caps in targets() {
        if let Ok(list) = rewritten_for_target(caps, argv.clone(), 0) {
            for out in list {
                assert!(!out.is_empty());
                if let Some(spec) = resolve(&out) {
                    check(spec, &out);
                }
                if let Some(keys) = keys_of(&out) {
                    for k in keys {
                        assert!(
                            original.contains_key(&k),
                            "translation added key {k:?} to {argv:?}"
                        );
                    }
                }
            }
        }
    }
});
