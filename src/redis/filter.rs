//! Which replicated commands reach the target: db and key filters, db mapping, and
//! origin detection for two-way sync (DESIGN.md §1, §3).

use std::collections::HashMap;

use bytes::Bytes;
use regex::bytes::Regex;

use crate::redis::command::{
    CommandSpec, Flags, KeyError, KeySpec, key_indexes, resolve, single_key_index, target_db,
};

/// Prefix of every key tandem itself writes (checkpoints, origin tags).
pub const TANDEM_PREFIX: &[u8] = b"__tandem:";

/// The user's filters. Empty include lists mean "everything".
#[derive(Debug, Clone, Default)]
pub struct FilterConfig {
    pub include_dbs: Vec<u32>,
    pub exclude_dbs: Vec<u32>,
    pub include_prefixes: Vec<Bytes>,
    pub exclude_prefixes: Vec<Bytes>,
    pub include_regex: Option<Regex>,
    pub exclude_regex: Option<Regex>,
    /// Source db → target db; unmapped dbs keep their number.
    pub db_map: HashMap<u32, u32>,
}

/// What to do with one command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FilterDecision {
    /// Apply the argv as received.
    Keep(Vec<Bytes>),
    /// Do not apply (filtered out, tandem's own key, or stream plumbing).
    Drop,
    /// Apply these instead: a SPLITTABLE command reduced to its allowed keys, or a
    /// db number rewritten through `db_map` (SWAPDB, MOVE, COPY … DB).
    Rewritten(Vec<Vec<Bytes>>),
    /// Cannot be applied exactly under these filters; the caller must stop, not skip.
    Error(FilterError),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    #[error("unsupported command {0}")]
    Unsupported(String),
    #[error(
        "{command}: {denied} of its {keys} keys are filtered out and it cannot be split; \
         applying part of it would diverge"
    )]
    MixedKeys {
        command: &'static str,
        keys: usize,
        denied: usize,
    },
    #[error("{command}: moves data between db {from} and db {to}, and only one is replicated")]
    MixedDbs {
        command: &'static str,
        from: u32,
        to: u32,
    },
    #[error("{command}: a db argument is not a db number")]
    BadDb { command: &'static str },
    #[error(transparent)]
    Key(#[from] KeyError),
}

/// `key` is tandem metadata (starts with `__tandem:`).
pub fn is_tandem_key(key: &[u8]) -> bool {
    key.starts_with(TANDEM_PREFIX)
}

/// `argv` writes a `__tandem:` key: in a two-way link, the transaction holding it is an
/// echo of tandem's own batch and is dropped whole; a bare such write too. Unknown or
/// malformed commands answer `false` (they are reported elsewhere).
pub fn writes_tandem_key(argv: &[Bytes]) -> bool {
    // Most commands have no argument that could be such a key: say so without looking
    // the command up (a two-way link asks this of every command it reads).
    if !argv.iter().skip(1).any(|a| is_tandem_key(a)) {
        return false;
    }
    let Some(spec) = resolve(argv) else {
        return false;
    };
    if !spec.has(Flags::WRITE) {
        return false;
    }
    if let Some(k) = single_key_index(spec, argv) {
        return is_tandem_key(&argv[k]);
    }
    key_indexes(spec, argv).is_ok_and(|keys| keys.iter().any(|&k| is_tandem_key(&argv[k])))
}

/// A source unit (the commands of one `MULTI … EXEC`, or one bare command) is an echo
/// of tandem's own batch: drop all of it, not only the checkpoint write.
pub fn unit_writes_tandem_key(unit: &[Vec<Bytes>]) -> bool {
    any_writes_tandem_key(unit.iter().map(|a| a.as_slice()))
}

/// `unit_writes_tandem_key` over borrowed argvs. tandem's own batches end with their
/// checkpoint write, so the last command is looked at first.
pub fn any_writes_tandem_key<'a>(unit: impl DoubleEndedIterator<Item = &'a [Bytes]>) -> bool {
    let mut rest = unit.rev();
    rest.next().is_some_and(writes_tandem_key) || rest.any(writes_tandem_key)
}

impl FilterConfig {
    /// The key passes the prefix and regex filters. `__tandem:` keys never do.
    ///
    /// Included when no include rule is set, or it matches an include prefix or the
    /// include regex; then excluded when it matches an exclude prefix or the exclude
    /// regex.
    pub fn key_allowed(&self, key: &[u8]) -> bool {
        if is_tandem_key(key) {
            return false;
        }
        let has_include = !self.include_prefixes.is_empty() || self.include_regex.is_some();
        let included = !has_include
            || self.include_prefixes.iter().any(|p| key.starts_with(p))
            || self.include_regex.as_ref().is_some_and(|r| r.is_match(key));
        included
            && !self.exclude_prefixes.iter().any(|p| key.starts_with(p))
            && !self.exclude_regex.as_ref().is_some_and(|r| r.is_match(key))
    }

    /// The source db is replicated.
    pub fn db_allowed(&self, db: u32) -> bool {
        (self.include_dbs.is_empty() || self.include_dbs.contains(&db))
            && !self.exclude_dbs.contains(&db)
    }

    /// The target db for source db `db`.
    pub fn map_db(&self, db: u32) -> u32 {
        self.db_map.get(&db).copied().unwrap_or(db)
    }

    /// Decide what to do with `argv`, a command run in source db `db`.
    ///
    /// - Unknown commands: `Error(Unsupported)`; CONTROL commands: `Drop`; MULTI, EXEC,
    ///   SELECT: `Keep` (the caller tracks units and dbs itself).
    /// - Keyless globals (FUNCTION, SCRIPT, FLUSHALL): `Keep`, whatever the db; what
    ///   FLUSHALL/FLUSHDB do to filtered-out keys on the target is the caller's
    ///   DB_SCOPE policy.
    /// - Commands in a db that is not replicated: `Drop`.
    /// - Keyed commands: all keys allowed → `Keep`; none → `Drop`; some → `Rewritten` to
    ///   the allowed keys if SPLITTABLE (MSETNX rewritten as MSET), else
    ///   `Error(MixedKeys)`: never a silent partial apply.
    pub fn apply(&self, db: u32, argv: Vec<Bytes>) -> FilterDecision {
        self.apply_resolved(resolve(&argv), db, argv)
    }

    /// [`FilterConfig::apply`] for a caller that already resolved the command's spec.
    pub fn apply_resolved(
        &self,
        spec: Option<&'static CommandSpec>,
        db: u32,
        argv: Vec<Bytes>,
    ) -> FilterDecision {
        let Some(spec) = spec else {
            return FilterDecision::Error(FilterError::Unsupported(command_name(&argv)));
        };
        // Most writes have one key: decide them without building the key list.
        if let Some(k) = single_key_index(spec, &argv)
            && !spec.has_any(
                Flags::CONTROL | Flags::TXN | Flags::SELECT | Flags::KEYLESS | Flags::CROSS_DB,
            )
        {
            let keep = self.db_allowed(db) && self.key_allowed(&argv[k]);
            return if keep {
                FilterDecision::Keep(argv)
            } else {
                FilterDecision::Drop
            };
        }
        if spec.has(Flags::CONTROL) {
            return FilterDecision::Drop;
        }
        if spec.has(Flags::TXN) || spec.has(Flags::SELECT) {
            return FilterDecision::Keep(argv);
        }
        let keys = match key_indexes(spec, &argv) {
            Ok(keys) => keys,
            Err(e) => return FilterDecision::Error(e.into()),
        };
        if spec.name == "SWAPDB" {
            return self.swapdb(spec, argv);
        }
        if spec.has(Flags::KEYLESS) && spec.name != "FLUSHDB" {
            return FilterDecision::Keep(argv);
        }
        if !self.db_allowed(db) {
            return FilterDecision::Drop;
        }
        let denied = keys
            .iter()
            .filter(|&&k| !self.key_allowed(&argv[k]))
            .count();
        if denied > 0 && denied == keys.len() {
            return FilterDecision::Drop;
        }
        if denied > 0 {
            return match (spec.has(Flags::SPLITTABLE), spec.keys) {
                (true, KeySpec::Range { step, .. }) => {
                    FilterDecision::Rewritten(vec![self.only_allowed(spec, &argv, &keys, step)])
                }
                _ => FilterDecision::Error(FilterError::MixedKeys {
                    command: spec.name,
                    keys: keys.len(),
                    denied,
                }),
            };
        }
        if spec.has(Flags::CROSS_DB) {
            return self.cross_db(spec, db, argv);
        }
        FilterDecision::Keep(argv)
    }

    fn only_allowed(
        &self,
        spec: &CommandSpec,
        argv: &[Bytes],
        keys: &[usize],
        step: usize,
    ) -> Vec<Bytes> {
        let name = if spec.name == "MSETNX" {
            Bytes::from_static(b"MSET")
        } else {
            argv[0].clone()
        };
        let mut out = vec![name];
        for &k in keys.iter().filter(|&&k| self.key_allowed(&argv[k])) {
            out.extend_from_slice(&argv[k..k + step]);
        }
        out
    }

    fn swapdb(&self, spec: &'static CommandSpec, argv: Vec<Bytes>) -> FilterDecision {
        // Arity was checked: exactly two db arguments.
        let (Some(a), Some(b)) = (parse_db(&argv[1]), parse_db(&argv[2])) else {
            return FilterDecision::Error(FilterError::BadDb { command: spec.name });
        };
        match (self.db_allowed(a), self.db_allowed(b)) {
            (false, false) => FilterDecision::Drop,
            (true, true) => self.remap(argv, &[(1, a), (2, b)]),
            _ => FilterDecision::Error(FilterError::MixedDbs {
                command: spec.name,
                from: a,
                to: b,
            }),
        }
    }

    fn cross_db(&self, spec: &'static CommandSpec, db: u32, argv: Vec<Bytes>) -> FilterDecision {
        match target_db(spec, &argv) {
            Err(_) => FilterDecision::Error(FilterError::BadDb { command: spec.name }),
            Ok(None) => FilterDecision::Keep(argv),
            Ok(Some((_, to))) if !self.db_allowed(to) => {
                FilterDecision::Error(FilterError::MixedDbs {
                    command: spec.name,
                    from: db,
                    to,
                })
            }
            Ok(Some((at, to))) => self.remap(argv, &[(at, to)]),
        }
    }

    /// Rewrite db-number arguments through `db_map`; `Keep` when nothing changes.
    fn remap(&self, mut argv: Vec<Bytes>, dbs: &[(usize, u32)]) -> FilterDecision {
        if dbs.iter().all(|&(_, db)| self.map_db(db) == db) {
            return FilterDecision::Keep(argv);
        }
        for &(at, db) in dbs {
            argv[at] = Bytes::from(self.map_db(db).to_string());
        }
        FilterDecision::Rewritten(vec![argv])
    }
}

fn parse_db(arg: &[u8]) -> Option<u32> {
    std::str::from_utf8(arg).ok()?.parse().ok()
}

/// `NAME` or `NAME SUB` of an argv, for error messages (lossy, bounded).
pub fn command_name(argv: &[Bytes]) -> String {
    let word = |b: &Bytes| String::from_utf8_lossy(&b[..b.len().min(64)]).to_ascii_uppercase();
    match argv {
        [] => "<empty>".to_string(),
        [name] => word(name),
        [name, sub, ..]
            if crate::redis::command::lookup(name).is_some_and(|s| !s.subcommands.is_empty()) =>
        {
            format!("{} {}", word(name), word(sub))
        }
        [name, ..] => word(name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(args: &[&str]) -> Vec<Bytes> {
        args.iter()
            .map(|a| Bytes::copy_from_slice(a.as_bytes()))
            .collect()
    }

    fn prefixes(p: &[&str]) -> Vec<Bytes> {
        p.iter()
            .map(|s| Bytes::copy_from_slice(s.as_bytes()))
            .collect()
    }

    #[test]
    fn keys_and_dbs() {
        let f = FilterConfig {
            include_prefixes: prefixes(&["user:", "session:"]),
            exclude_prefixes: prefixes(&["user:tmp:"]),
            exclude_regex: Some(Regex::new(r":cache$").unwrap()),
            include_dbs: vec![0, 1],
            exclude_dbs: vec![1],
            ..Default::default()
        };
        assert!(f.key_allowed(b"user:1"));
        assert!(!f.key_allowed(b"user:tmp:1"));
        assert!(!f.key_allowed(b"user:1:cache"));
        assert!(!f.key_allowed(b"other"));
        assert!(f.db_allowed(0) && !f.db_allowed(1) && !f.db_allowed(2));
        let all = FilterConfig::default();
        assert!(all.key_allowed(b"anything") && all.key_allowed(b"\xff\x00"));
        assert!(!all.key_allowed(b"__tandem:ckpt:x"));
        let re = FilterConfig {
            include_regex: Some(Regex::new(r"^a\d").unwrap()),
            ..Default::default()
        };
        assert!(re.key_allowed(b"a1") && !re.key_allowed(b"b1"));
    }

    #[test]
    fn apply_keeps_drops_rewrites_and_refuses() {
        let f = FilterConfig {
            exclude_prefixes: prefixes(&["x"]),
            exclude_dbs: vec![3],
            ..Default::default()
        };
        let set = argv(&["SET", "a", "1"]);
        assert_eq!(f.apply(0, set.clone()), FilterDecision::Keep(set.clone()));
        assert_eq!(f.apply(3, set), FilterDecision::Drop);
        assert_eq!(f.apply(0, argv(&["SET", "x1", "1"])), FilterDecision::Drop);
        assert_eq!(
            f.apply(0, argv(&["SET", "__tandem:c", "1"])),
            FilterDecision::Drop
        );
        assert_eq!(
            f.apply(0, argv(&["MSETNX", "a", "1", "x", "2", "b", "3"])),
            FilterDecision::Rewritten(vec![argv(&["MSET", "a", "1", "b", "3"])])
        );
        assert_eq!(
            f.apply(0, argv(&["del", "x", "a"])),
            FilterDecision::Rewritten(vec![argv(&["del", "a"])])
        );
        let err = f.apply(0, argv(&["RENAME", "a", "x"]));
        let FilterDecision::Error(e) = err else {
            panic!("{err:?}")
        };
        assert_eq!(
            e,
            FilterError::MixedKeys {
                command: "RENAME",
                keys: 2,
                denied: 1
            }
        );
        assert!(matches!(
            f.apply(0, argv(&["EVAL", "s", "2", "a", "x"])),
            FilterDecision::Error(FilterError::MixedKeys {
                command: "EVAL",
                ..
            })
        ));
        assert_eq!(
            f.apply(0, argv(&["EVAL", "s", "0"])),
            FilterDecision::Keep(argv(&["EVAL", "s", "0"]))
        );
        assert_eq!(f.apply(0, argv(&["PING"])), FilterDecision::Drop);
        assert_eq!(
            f.apply(3, argv(&["MULTI"])),
            FilterDecision::Keep(argv(&["MULTI"]))
        );
        assert_eq!(f.apply(3, argv(&["FLUSHDB"])), FilterDecision::Drop);
        let fl = argv(&["FUNCTION", "LOAD", "code"]);
        assert_eq!(f.apply(3, fl.clone()), FilterDecision::Keep(fl));
        assert!(matches!(
            f.apply(0, argv(&["MIGRATE", "h", "1", "k", "0", "1"])),
            FilterDecision::Error(FilterError::Unsupported(n)) if n == "MIGRATE"
        ));
        assert!(matches!(
            f.apply(0, argv(&["SET", "a"])),
            FilterDecision::Error(FilterError::Key(_))
        ));
    }

    #[test]
    fn dbs_move_copy_swapdb() {
        let f = FilterConfig {
            exclude_dbs: vec![5],
            db_map: HashMap::from([(1, 7)]),
            ..Default::default()
        };
        assert_eq!(f.map_db(1), 7);
        assert_eq!(f.map_db(2), 2);
        assert_eq!(
            f.apply(0, argv(&["MOVE", "k", "1"])),
            FilterDecision::Rewritten(vec![argv(&["MOVE", "k", "7"])])
        );
        assert!(matches!(
            f.apply(0, argv(&["MOVE", "k", "5"])),
            FilterDecision::Error(FilterError::MixedDbs { from: 0, to: 5, .. })
        ));
        assert_eq!(
            f.apply(0, argv(&["COPY", "a", "b", "DB", "1", "REPLACE"])),
            FilterDecision::Rewritten(vec![argv(&["COPY", "a", "b", "DB", "7", "REPLACE"])])
        );
        let copy = argv(&["COPY", "a", "b"]);
        assert_eq!(f.apply(0, copy.clone()), FilterDecision::Keep(copy));
        assert_eq!(
            f.apply(0, argv(&["SWAPDB", "0", "1"])),
            FilterDecision::Rewritten(vec![argv(&["SWAPDB", "0", "7"])])
        );
        assert!(matches!(
            f.apply(0, argv(&["SWAPDB", "0", "5"])),
            FilterDecision::Error(FilterError::MixedDbs { .. })
        ));
    }

    #[test]
    fn origin_detection() {
        assert!(is_tandem_key(b"__tandem:ckpt:a"));
        assert!(!is_tandem_key(b"__tandem"));
        assert!(writes_tandem_key(&argv(&["SET", "__tandem:ckpt:a", "r:1"])));
        assert!(writes_tandem_key(&argv(&[
            "mset",
            "a",
            "1",
            "__tandem:x",
            "2"
        ])));
        assert!(!writes_tandem_key(&argv(&["SET", "a", "__tandem:x"])));
        assert!(!writes_tandem_key(&argv(&["PUBLISH", "__tandem:x", "m"])));
        assert!(!writes_tandem_key(&argv(&["NOPE", "__tandem:x"])));
        assert!(!writes_tandem_key(&argv(&["SET"])));
        let echo = [
            argv(&["MULTI"]),
            argv(&["INCR", "n"]),
            argv(&["SET", "__tandem:ckpt:b", "r:9"]),
            argv(&["EXEC"]),
        ];
        assert!(unit_writes_tandem_key(&echo));
        assert!(!unit_writes_tandem_key(&echo[..2]));
    }

    #[test]
    fn names_for_errors() {
        assert_eq!(
            command_name(&argv(&["function", "stats"])),
            "FUNCTION STATS"
        );
        assert_eq!(command_name(&argv(&["migrate", "h"])), "MIGRATE");
        assert_eq!(command_name(&[]), "<empty>");
    }
}
