//! The command table against DESIGN.md §5 and against a real server's own idea of
//! key positions (`COMMAND GETKEYS`), write flags and arities (`COMMAND`).

mod support;

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use proptest::prelude::*;
use support::*;
use tandem::redis::command::{Family, Flags, all, key_indexes, lookup, resolve};

/// DESIGN.md §5, the required list, verbatim.
const REQUIRED: &str = "APPEND, BITOP, BLPOP, BRPOP, BRPOPLPUSH, DECR, DECRBY, \
DEL, EVAL, EVALSHA, EXEC, EXPIRE, EXPIREAT, GEOADD, GETSET, HDEL, HINCRBY, HINCRBYFLOAT, \
HMSET, HSET, HSETNX, INCR, INCRBY, INCRBYFLOAT, LINSERT, LPOP, LPUSH, LPUSHX, LREM, LSET, \
LTRIM, MOVE, MSET, MSETNX, MULTI, PERSIST, PEXPIRE, PEXPIREAT, PFADD, PFMERGE, PSETEX, RENAME, \
RENAMENX, RPOP, RPOPLPUSH, RPUSH, RPUSHX, SADD, SDIFFSTORE, SELECT, SET, SETBIT, SETEX, SETNX, \
SETRANGE, SINTERSTORE, SMOVE, SPOP, SREM, SUNIONSTORE, UNLINK, ZADD, ZINCRBY, ZINTERSTORE, \
ZREM, ZREMRANGEBYLEX, ZUNIONSTORE, ZREMRANGEBYRANK, ZREMRANGEBYSCORE, SWAPDB";

/// DESIGN.md §5, "beyond it".
const BEYOND: &[&str] = &[
    "XADD",
    "XDEL",
    "XTRIM",
    "XGROUP CREATE",
    "XGROUP SETID",
    "XGROUP DESTROY",
    "XGROUP CREATECONSUMER",
    "XGROUP DELCONSUMER",
    "XSETID",
    "XACK",
    "XCLAIM",
    "XAUTOCLAIM",
    "LMOVE",
    "LMPOP",
    "ZMPOP",
    "COPY",
    "GETDEL",
    "GETEX",
    "ZDIFFSTORE",
    "ZRANGESTORE",
    "HEXPIRE",
    "HPEXPIREAT",
    "HPERSIST",
    "FUNCTION LOAD",
    "FUNCTION DELETE",
    "FUNCTION FLUSH",
    "FUNCTION RESTORE",
    "FLUSHDB",
    "FLUSHALL",
    "EXSET",
    "EXHSET",
    "EXZADD",
];

fn argv(args: &[&str]) -> Vec<Bytes> {
    args.iter()
        .map(|a| Bytes::copy_from_slice(a.as_bytes()))
        .collect()
}

#[test]
fn design_list_is_supported_and_write() {
    for name in REQUIRED
        .split(',')
        .map(str::trim)
        .chain(BEYOND.iter().copied())
    {
        let spec = lookup(name.as_bytes()).unwrap_or_else(|| panic!("{name} is missing"));
        assert!(
            spec.has(Flags::WRITE),
            "{name} is not WRITE: {:?}",
            spec.flags
        );
        assert!(
            lookup(name.to_lowercase().as_bytes()).is_some(),
            "{name} lower case"
        );
    }
    for name in ["PING", "REPLCONF", "PUBLISH", "SPUBLISH"] {
        let spec = lookup(name.as_bytes()).unwrap();
        assert!(
            spec.has(Flags::CONTROL) && !spec.has(Flags::WRITE),
            "{name}"
        );
    }
    for name in [
        "MIGRATE",
        "XREADGROUP",
        "GET",
        "FUNCTION STATS",
        "SCRIPT EXISTS",
        "KEYS",
    ] {
        assert!(
            lookup(name.as_bytes()).is_none(),
            "{name} must be unsupported"
        );
    }
    let flags = |n: &str| lookup(n.as_bytes()).unwrap().flags;
    assert!(flags("SWAPDB").contains(Flags::DB_SCOPE | Flags::NOT_ON_CLUSTER));
    assert!(flags("MOVE").contains(Flags::CROSS_DB | Flags::NOT_ON_CLUSTER));
    assert!(flags("COPY").contains(Flags::CROSS_DB));
    assert!(flags("FLUSHALL").contains(Flags::DB_SCOPE | Flags::KEYLESS));
    assert!(flags("FUNCTION LOAD").contains(Flags::KEYLESS));
    assert!(flags("EVALSHA").contains(Flags::SCRIPT));
    assert!(flags("MULTI").contains(Flags::TXN) && flags("EXEC").contains(Flags::TXN));
    assert!(flags("SELECT").contains(Flags::SELECT));
    for n in ["MSET", "MSETNX", "DEL", "UNLINK", "TOUCH"] {
        assert!(flags(n).contains(Flags::SPLITTABLE), "{n}");
    }
    assert!(!flags("RENAME").contains(Flags::SPLITTABLE));
    assert_eq!(lookup(b"EXHSET").unwrap().family, Family::Tair);
}

/// (argv, expected key indexes). Key names are distinct so GETKEYS can be compared.
fn examples() -> Vec<(Vec<&'static str>, Vec<usize>)> {
    vec![
        (vec!["SET", "k", "v", "EX", "10"], vec![1]),
        (vec!["MSET", "a", "1", "b", "2", "c", "3"], vec![1, 3, 5]),
        (vec!["MSETNX", "a", "1", "b", "2"], vec![1, 3]),
        (vec!["DEL", "a", "b", "c"], vec![1, 2, 3]),
        (vec!["UNLINK", "a"], vec![1]),
        (vec!["EVAL", "return 1", "0"], vec![]),
        (
            vec!["EVAL", "return 1", "3", "a", "b", "c", "arg"],
            vec![3, 4, 5],
        ),
        (
            vec!["EVALSHA", "0123456789abcdef", "1", "a", "arg"],
            vec![3],
        ),
        (vec!["FCALL", "f", "2", "a", "b"], vec![3, 4]),
        (
            vec!["ZUNIONSTORE", "d", "2", "a", "b", "WEIGHTS", "1", "2"],
            vec![1, 3, 4],
        ),
        (vec!["ZINTERSTORE", "d", "1", "a"], vec![1, 3]),
        (vec!["ZDIFFSTORE", "d", "2", "a", "b"], vec![1, 3, 4]),
        (
            vec!["LMPOP", "2", "a", "b", "LEFT", "COUNT", "2"],
            vec![2, 3],
        ),
        (vec!["BLMPOP", "0", "2", "a", "b", "RIGHT"], vec![3, 4]),
        (vec!["ZMPOP", "1", "a", "MIN"], vec![2]),
        (vec!["BZMPOP", "1.5", "1", "a", "MAX"], vec![3]),
        (vec!["BITOP", "AND", "d", "a", "b"], vec![2, 3, 4]),
        (
            vec!["SORT", "a", "BY", "w_*", "LIMIT", "0", "5", "STORE", "d"],
            vec![1, 8],
        ),
        (vec!["SORT", "a", "GET", "store", "ALPHA"], vec![1]),
        (vec!["GEOADD", "g", "13.36", "38.11", "Palermo"], vec![1]),
        (
            vec!["GEORADIUS", "g", "15", "37", "200", "km", "STORE", "d"],
            vec![1, 7],
        ),
        (
            vec!["GEORADIUSBYMEMBER", "g", "m", "100", "km", "STOREDIST", "d"],
            vec![1, 6],
        ),
        (
            vec![
                "GEOSEARCHSTORE",
                "d",
                "g",
                "FROMMEMBER",
                "m",
                "BYRADIUS",
                "1",
                "km",
            ],
            vec![1, 2],
        ),
        (
            vec!["XADD", "s", "MAXLEN", "~", "10", "*", "f", "v"],
            vec![1],
        ),
        (vec!["XTRIM", "s", "MAXLEN", "10"], vec![1]),
        (vec!["XGROUP", "CREATE", "s", "g", "$", "MKSTREAM"], vec![2]),
        (vec!["XGROUP", "SETID", "s", "g", "0"], vec![2]),
        (vec!["XCLAIM", "s", "g", "c", "0", "1-1"], vec![1]),
        (vec!["COPY", "a", "b", "DB", "2", "REPLACE"], vec![1, 2]),
        (
            vec!["RESTORE", "k", "0", "payload", "REPLACE", "ABSTTL"],
            vec![1],
        ),
        (vec!["RENAME", "a", "b"], vec![1, 2]),
        (vec!["SMOVE", "a", "b", "m"], vec![1, 2]),
        (vec!["LMOVE", "a", "b", "LEFT", "RIGHT"], vec![1, 2]),
        (vec!["BLPOP", "a", "b", "0"], vec![1, 2]),
        (vec!["BRPOPLPUSH", "a", "b", "0"], vec![1, 2]),
        (vec!["SINTERSTORE", "d", "a", "b"], vec![1, 2, 3]),
        (vec!["PFMERGE", "d", "a", "b"], vec![1, 2, 3]),
        (vec!["ZRANGESTORE", "d", "a", "0", "-1"], vec![1, 2]),
        (vec!["MOVE", "k", "1"], vec![1]),
        (vec!["PEXPIREAT", "k", "1700000000000"], vec![1]),
        (vec!["HSET", "h", "f", "v", "g", "w"], vec![1]),
        (vec!["SETBIT", "b", "7", "1"], vec![1]),
        (vec!["BITFIELD", "b", "SET", "u8", "0", "255"], vec![1]),
        (vec!["FUNCTION", "LOAD", "#!lua name=x\n"], vec![]),
        (vec!["FLUSHALL", "ASYNC"], vec![]),
        (vec!["SWAPDB", "0", "1"], vec![]),
        (vec!["SELECT", "3"], vec![]),
        // Not known to Redis 7.0: checked here only.
        (vec!["EXHSET", "h", "f", "v", "EX", "10"], vec![1]),
        (vec!["EXSET", "k", "v", "VER", "3"], vec![1]),
        (vec!["EXZADD", "z", "1#2", "m"], vec![1]),
        (vec!["HEXPIRE", "h", "10", "FIELDS", "1", "f"], vec![1]),
        (
            vec!["MSETEX", "2", "a", "1", "b", "2", "EX", "10"],
            vec![2, 4],
        ),
    ]
}

#[test]
fn key_indexes_of_examples() {
    for (args, want) in examples() {
        let a = argv(&args);
        let spec = resolve(&a).unwrap_or_else(|| panic!("{args:?} unsupported"));
        assert_eq!(key_indexes(spec, &a).unwrap(), want, "{args:?}");
    }
}

#[test]
fn unsupported_and_malformed() {
    assert!(resolve(&argv(&["MIGRATE", "h", "6379", "k", "0", "1000"])).is_none());
    assert!(
        resolve(&argv(&[
            "XREADGROUP",
            "GROUP",
            "g",
            "c",
            "STREAMS",
            "s",
            ">"
        ]))
        .is_none()
    );
    let bad: &[&[&str]] = &[
        &["EVAL", "s", "4", "a", "b"],
        &["EVAL", "s"],
        &["EVAL", "s", "1x"],
        &["ZUNIONSTORE", "d", "-1", "a"],
        &["LMPOP", "0x10", "a", "LEFT"],
        &["MSET", "a", "1", "b"],
        &["MSETEX", "3", "a", "1", "b", "2"],
        &["BLPOP", "0"],
        &["RENAME", "a"],
        &["XGROUP", "CREATE", "s"],
    ];
    for args in bad {
        let a = argv(args);
        let spec = resolve(&a).unwrap();
        let err = key_indexes(spec, &a).unwrap_err();
        assert!(err.to_string().starts_with(spec.name), "{err}");
    }
}

fn frame_strings(f: &Frame) -> Vec<String> {
    match f {
        Frame::Array(items) => items.iter().map(frame_to_string).collect(),
        other => panic!("expected an array, got {other:?}"),
    }
}

#[test]
fn key_indexes_match_command_getkeys() {
    let server = RedisServer::start();
    let mut c = server.client();
    let mut checked = 0;
    for (args, _) in examples() {
        let a = argv(&args);
        let spec = resolve(&a).unwrap();
        let ours: Vec<String> = key_indexes(spec, &a)
            .unwrap()
            .iter()
            .map(|&i| args[i].to_string())
            .collect();
        let mut cmd = vec!["COMMAND", "GETKEYS"];
        cmd.extend(&args);
        match c.cmd(&cmd) {
            Frame::Error(e) if e.contains("Invalid command") => {
                assert!(
                    spec.family == Family::Tair || server_lacks(spec.name),
                    "server does not know {args:?}"
                );
            }
            // Redis answers an error, not an empty list, for keyless argv.
            Frame::Error(e)
                if e.contains("no key arguments") || e.contains("Invalid arguments") =>
            {
                assert!(
                    ours.is_empty(),
                    "{args:?}: server says keyless ({e}), we say {ours:?}"
                );
                checked += 1;
            }
            reply => {
                assert_eq!(ours, frame_strings(&reply), "{args:?}");
                checked += 1;
            }
        }
    }
    assert!(
        checked > 40,
        "only {checked} examples checked against the server"
    );
}

/// Commands newer than the Redis 7.0 used in CI.
fn server_lacks(name: &str) -> bool {
    matches!(name, "HEXPIRE" | "MSETEX")
}

/// Server-side write commands tandem deliberately does not apply.
const NOT_APPLIED: &[(&str, &str)] = &[
    (
        "migrate",
        "propagated as DEL on the source; RESTORE reaches the target itself",
    ),
    (
        "xreadgroup",
        "propagated as XCLAIM / XGROUP SETID, never verbatim",
    ),
    ("pfdebug", "debugging aid, never propagated"),
];

/// Commands tandem applies that the server does not flag `write`.
const APPLIED_NOT_WRITE: &[(&str, &str)] = &[
    ("pfcount", "refreshing the cached cardinality is propagated"),
    ("touch", "harmless, keeps access times in step"),
    ("eval", "verbatim scripts from older servers"),
    ("evalsha", "verbatim scripts from older servers"),
    ("eval_ro", "harmless if ever seen"),
    ("evalsha_ro", "harmless if ever seen"),
    ("fcall", "verbatim function calls"),
    ("fcall_ro", "harmless if ever seen"),
    (
        "script|load",
        "Redis 5/6 propagate it for EVALSHA on replicas",
    ),
    ("script|flush", "Redis 5/6 propagate it"),
    ("select", "tracked, flagged WRITE|SELECT"),
    ("multi", "unit delimiter, flagged WRITE|TXN"),
    ("exec", "unit delimiter, flagged WRITE|TXN"),
];

/// Where our minimum arity is deliberately looser or different than 7.0's.
const ARITY_DIFFERENCES: &[&str] = &[];

struct ServerCommand {
    arity: i64,
    write: bool,
}

fn server_commands(server: &RedisServer) -> BTreeMap<String, ServerCommand> {
    fn walk(f: &Frame, out: &mut BTreeMap<String, ServerCommand>) {
        let Frame::Array(fields) = f else {
            panic!("{f:?}")
        };
        let name = frame_to_string(&fields[0]).to_lowercase();
        let Frame::Integer(arity) = fields[1] else {
            panic!("{f:?}")
        };
        let write = frame_strings(&fields[2]).iter().any(|s| s == "write");
        out.insert(name, ServerCommand { arity, write });
        if let Some(Frame::Array(subs)) = fields.get(9) {
            for s in subs {
                walk(s, out);
            }
        }
    }
    let Frame::Array(cmds) = server.cmd(&["COMMAND"]) else {
        panic!("COMMAND")
    };
    let mut out = BTreeMap::new();
    for c in &cmds {
        walk(c, &mut out);
    }
    out
}

fn our_name(server_name: &str) -> String {
    server_name.replace('|', " ").to_uppercase()
}

#[test]
fn write_flags_and_arity_match_command_info() {
    let server = RedisServer::start();
    let cmds = server_commands(&server);
    assert!(cmds.len() > 200, "COMMAND returned {} entries", cmds.len());
    let mut problems = Vec::new();
    for (name, info) in &cmds {
        let ours = lookup(our_name(name).as_bytes());
        let applied = ours.is_some_and(|s| s.has(Flags::WRITE));
        let excused = NOT_APPLIED
            .iter()
            .chain(APPLIED_NOT_WRITE)
            .any(|(n, _)| n == name);
        if info.write != applied && !excused {
            problems.push(format!(
                "{name}: server write={}, ours {:?}",
                info.write,
                ours.map(|s| s.flags)
            ));
        }
        if let Some(spec) = ours.filter(|s| s.subcommands.is_empty())
            && i64::from(spec.arity) != info.arity
            && !ARITY_DIFFERENCES.contains(&name.as_str())
        {
            problems.push(format!(
                "{name}: arity {} here, {} on the server",
                spec.arity, info.arity
            ));
        }
    }
    for (name, _) in NOT_APPLIED.iter().chain(APPLIED_NOT_WRITE) {
        assert!(cmds.contains_key(*name), "stale exception {name}");
    }
    // Everything we know that is not Tair, not CONTROL and not newer than 7.0 exists there.
    let newer: BTreeSet<&str> = [
        "HEXPIRE",
        "HEXPIREAT",
        "HPEXPIRE",
        "HPEXPIREAT",
        "HPERSIST",
        "HGETDEL",
        "HGETEX",
        "HSETEX",
        "XACKDEL",
        "XDELEX",
        "MSETEX",
        "DELEX",
        "DELIFEQ",
        // Redis 8's vector sets.
        "VADD",
        "VREM",
        "VSETATTR",
    ]
    .into();
    for spec in all().flat_map(|s| std::iter::once(s).chain(s.subcommands)) {
        let server_name = spec.name.to_lowercase().replace(' ', "|");
        if spec.family != Family::Tair
            && !newer.contains(spec.name)
            && !cmds.contains_key(&server_name)
        {
            problems.push(format!("{} is not a Redis 7.0 command", spec.name));
        }
    }
    assert!(
        problems.is_empty(),
        "differences from COMMAND:\n{}",
        problems.join("\n")
    );
}

fn arb_arg() -> impl Strategy<Value = Bytes> {
    prop_oneof![
        Just(Bytes::from_static(b"0")),
        Just(Bytes::from_static(b"1")),
        Just(Bytes::from_static(b"3")),
        Just(Bytes::from_static(b"-1")),
        Just(Bytes::from_static(b"18446744073709551617")),
        Just(Bytes::from_static(b"STORE")),
        Just(Bytes::from_static(b"DB")),
        Just(Bytes::from_static(b"STOREDIST")),
        Just(Bytes::from_static(b"LIMIT")),
        proptest::collection::vec(any::<u8>(), 0..8).prop_map(Bytes::from),
    ]
}

fn every_spec() -> Vec<&'static tandem::redis::command::CommandSpec> {
    all()
        .flat_map(|s| std::iter::once(s).chain(s.subcommands))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Any argv for any spec: an error or in-bounds key indexes, never a panic.
    #[test]
    fn key_indexes_never_panic(
        which in 0usize..1000,
        args in proptest::collection::vec(arb_arg(), 0..10),
    ) {
        let specs = every_spec();
        let spec = specs[which % specs.len()];
        let mut a: Vec<Bytes> = spec.name.split(' ').map(|w| Bytes::copy_from_slice(w.as_bytes())).collect();
        a.extend(args);
        if let Ok(keys) = key_indexes(spec, &a) {
            prop_assert!(keys.iter().all(|&k| k > 0 && k < a.len()));
        }
        let _ = tandem::redis::slot::split_by_slot(spec, &a);
        let _ = tandem::redis::filter::FilterConfig::default().apply(0, a.clone());
        let _ = tandem::redis::filter::writes_tandem_key(&a);
        let _ = resolve(&a);
    }
}
