use bytes::Bytes;

use super::{TargetCaps, Translated};
use crate::redis::command::resolve;
use crate::redis::conn::Frame;

/// Arities as the servers report them; only what the rules look at differs by version.
const REDIS62: &[(&str, i64)] = &[
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

fn caps(info: &str, extra: &[(&str, i64)], base: &[(&str, i64)]) -> TargetCaps {
    let entry = |(n, a): &(&str, i64)| {
        Frame::Array(vec![
            Frame::BulkString(Bytes::from(n.to_string())),
            Frame::Integer(*a),
        ])
    };
    let list = base.iter().chain(extra).map(entry).collect();
    TargetCaps::new(info, &Frame::Array(list))
}

fn redis62() -> TargetCaps {
    caps("redis_version:6.2.14\r\n", &[], REDIS62)
}

fn redis70() -> TargetCaps {
    let newer = [("pexpireat", -3), ("xsetid", -3), ("function", -2)];
    let mut base: Vec<(&str, i64)> = REDIS62.to_vec();
    base.retain(|(n, _)| !newer.iter().any(|(m, _)| m == n));
    caps("redis_version:7.0.15\r\n", &newer, &base)
}

fn argv(s: &str) -> Vec<Bytes> {
    s.split(' ').map(|a| Bytes::from(a.to_string())).collect()
}

fn tr(c: &TargetCaps, cmd: &str) -> Result<Vec<String>, String> {
    let a = argv(cmd);
    let spec = resolve(&a).expect("in the table");
    assert!(c.watches(spec), "{cmd} is watched for {}", c.label());
    let show = |v: Vec<Bytes>| {
        v.iter()
            .map(|x| String::from_utf8_lossy(x).into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    };
    match c.translate(spec, a) {
        Ok(Translated::Same(v)) => Ok(vec![show(v)]),
        Ok(Translated::Into(list)) => Ok(list.into_iter().map(show).collect()),
        Err(e) => Err(e.to_string()),
    }
}

#[test]
fn redis8_hash_writes_become_hset_on_a_server_without_field_ttls() {
    let c = redis70();
    assert_eq!(
        tr(&c, "HSETEX h KEEPTTL FIELDS 1 x 1.5").unwrap(),
        ["HSET h x 1.5"]
    );
    assert_eq!(
        tr(&c, "HSETEX h FNX FIELDS 2 a 1 b 2").unwrap(),
        ["HSET h a 1 b 2"]
    );
    assert_eq!(tr(&c, "HGETDEL h FIELDS 2 a b").unwrap(), ["HDEL h a b"]);
    assert!(tr(&c, "HPERSIST h FIELDS 1 a").unwrap().is_empty());
    for cmd in [
        "HSETEX h PXAT 1796244181982 FIELDS 1 d 4",
        "HPEXPIREAT h 1796244181981 FIELDS 1 a",
    ] {
        let e = tr(&c, cmd).unwrap_err();
        assert!(
            e.contains("of key \"h\"") && e.contains("Redis 7.0.15") && e.contains("field TTLs"),
            "{e}"
        );
    }
    let e = tr(&c, "HSETEX h FIELDS 3 a 1").unwrap_err();
    assert!(e.contains("malformed"), "{e}");
}

#[test]
fn redis82_stream_deletions_become_xack_and_xdel_when_references_stay() {
    let c = redis70();
    assert_eq!(
        tr(&c, "XACKDEL x g KEEPREF IDS 2 3-1 4-1").unwrap(),
        ["XACK x g 3-1 4-1", "XDEL x 3-1 4-1"]
    );
    assert_eq!(tr(&c, "XDELEX x IDS 1 4-1").unwrap(), ["XDEL x 4-1"]);
    let e = tr(&c, "XDELEX x DELREF IDS 1 4-1").unwrap_err();
    assert!(e.contains("DELREF") && e.contains("of key \"x\""), "{e}");
    assert_eq!(
        tr(&c, "XADD x KEEPREF MAXLEN = 5 4-1 f v").unwrap(),
        ["XADD x MAXLEN = 5 4-1 f v"]
    );
    // Not trimming: ACKED changes nothing; a field named like an option stays.
    assert_eq!(
        tr(&c, "XADD x ACKED 5-1 ACKED v").unwrap(),
        ["XADD x 5-1 ACKED v"]
    );
    assert!(tr(&c, "XADD x DELREF MINID = 3-0 6-1 f v").is_err());
    assert_eq!(
        tr(&c, "XTRIM x MAXLEN 1 KEEPREF").unwrap(),
        ["XTRIM x MAXLEN 1"]
    );
    assert!(
        tr(&c, "BITOP DIFF d a b")
            .unwrap_err()
            .contains("BITOP DIFF")
    );
    assert_eq!(tr(&c, "BITOP AND d a b").unwrap(), ["BITOP AND d a b"]);
    let e = tr(&c, "VADD vs VALUES 1 1 e").unwrap_err();
    assert!(
        e.contains("has no VADD command") && e.contains("of key \"vs\""),
        "{e}"
    );
    assert_eq!(tr(&c, "SET s w IFEQ v").unwrap(), ["SET s w"]);
    assert_eq!(
        tr(&c, "SET s w PXAT 100 IFEQ v").unwrap(),
        ["SET s w PXAT 100"]
    );
}

#[test]
fn redis7_options_are_dropped_for_redis62() {
    let c = redis62();
    assert_eq!(
        tr(&c, "PEXPIREAT s 1796244181981 NX").unwrap(),
        ["PEXPIREAT s 1796244181981"]
    );
    assert_eq!(
        tr(&c, "XGROUP SETID x g 2-1 ENTRIESREAD 2").unwrap(),
        ["XGROUP SETID x g 2-1"]
    );
    assert_eq!(
        tr(&c, "XGROUP CREATE x g 0 MKSTREAM ENTRIESREAD 0").unwrap(),
        ["XGROUP CREATE x g 0 MKSTREAM"]
    );
    assert_eq!(
        tr(&c, "XSETID x 5-0 ENTRIESADDED 3 MAXDELETEDID 2-0").unwrap(),
        ["XSETID x 5-0"]
    );
    let e = tr(&c, "FUNCTION LOAD x").unwrap_err();
    assert!(
        e.contains("has no FUNCTION command") && e.contains("6.2.14"),
        "{e}"
    );
    // Redis 7.0 has all of these: nothing is watched for them.
    let c = redis70();
    for cmd in [
        "PEXPIREAT s 1 NX",
        "XGROUP SETID x g 0 ENTRIESREAD 1",
        "XSETID x 1-1",
    ] {
        assert!(!c.watches(resolve(&argv(cmd)).unwrap()), "{cmd}");
    }
}

#[test]
fn nothing_is_watched_when_the_target_is_unknown() {
    let c = TargetCaps::new("redis_version:7.0.15\r\n", &Frame::Error("NOPERM".into()));
    assert!(!c.watches(resolve(&argv("HSETEX h FIELDS 1 a 1")).unwrap()));
    assert!(c.has("VADD"));
}

#[test]
fn tair_blocking_pops_propagated_without_timeout_become_plain_pops() {
    let tair = [("exzpopmin", -2), ("exzpopmax", -2), ("exbzpopmin", -1)];
    let c = caps("redis_version:7.0.15\r\n", &tair, REDIS62);
    assert_eq!(tr(&c, "EXBZPOPMIN z").unwrap(), ["EXZPOPMIN z"]);
    assert_eq!(tr(&c, "EXBZPOPMAX z").unwrap(), ["EXZPOPMAX z"]);
    let e = tr(&redis70(), "EXBZPOPMIN z").unwrap_err();
    assert!(e.contains("has no EXZPOPMIN command"), "{e}");
}
