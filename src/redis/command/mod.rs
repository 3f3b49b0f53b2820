//! The command table: which replicated commands tandem applies, their key positions and
//! flags. One file per command family.
//!
//! # Contract
//!
//! Every entry has exactly one of [`Flags::WRITE`] (the sync engine applies it, possibly
//! with the special handling other flags ask for) or [`Flags::CONTROL`] (part of the
//! stream's plumbing, never applied). A command that [`resolve`] does not find is
//! *unsupported*: the caller stops the link naming it and its offset, or counts and skips
//! it under `--on-unsupported skip`. Container commands (`FUNCTION`, `SCRIPT`, `XGROUP`)
//! carry no flags of their own; only their listed subcommands are supported.
//!
//! Key positions follow `COMMAND GETKEYS` (indexes into the full argv, command name at 0),
//! which `tests/command_table.rs` checks against a real server.

use std::collections::HashMap;
use std::fmt;
use std::sync::LazyLock;

use bytes::Bytes;

mod bitmap;
mod geo;
mod hash;
mod hyperloglog;
mod keyspace;
mod list;
mod script;
mod server;
mod set;
mod stream;
mod string;
mod tair;
mod vector;
mod zset;

pub use keyspace::target_db;

/// Which data type or area a command belongs to (for metrics and error messages).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    String,
    List,
    Set,
    ZSet,
    Hash,
    Stream,
    Keyspace,
    Server,
    Script,
    Bitmap,
    HyperLogLog,
    Geo,
    Tair,
    Vector,
}

/// A set of command properties; combine with `|`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Flags(u32);

impl Flags {
    pub const NONE: Flags = Flags(0);
    /// Supported: the sync engine applies it (other flags say how).
    pub const WRITE: Flags = Flags(1);
    /// Stream plumbing (PING, REPLCONF, PUBLISH, SPUBLISH): never applied.
    pub const CONTROL: Flags = Flags(1 << 1);
    /// MULTI / EXEC: delimit a source unit, never forwarded as such.
    pub const TXN: Flags = Flags(1 << 2);
    /// SELECT: tracked by the link to know each command's db.
    pub const SELECT: Flags = Flags(1 << 3);
    /// FLUSHDB / FLUSHALL / SWAPDB: applied according to the user's policy.
    pub const DB_SCOPE: Flags = Flags(1 << 4);
    /// A write with no key that affects the whole server (functions, scripts, flushes):
    /// on a cluster target it goes to every master.
    pub const KEYLESS: Flags = Flags(1 << 5);
    /// EVAL*/FCALL*: keys come from the numkeys argument; verbatim scripts need the
    /// script on the target (EVALSHA → SCRIPT LOAD from the source).
    pub const SCRIPT: Flags = Flags(1 << 6);
    /// Keys can be split per slot (or filtered) with exactly the same effect: MSET, DEL,
    /// UNLINK, TOUCH, and MSETNX, which Redis propagates only when it succeeded, so its
    /// pieces are rewritten as MSET (see `slot::split_by_slot`).
    pub const SPLITTABLE: Flags = Flags(1 << 7);
    /// May write into another db than the selected one (MOVE, COPY … DB n).
    pub const CROSS_DB: Flags = Flags(1 << 8);
    /// Cannot be applied to a cluster target (SWAPDB, MOVE).
    pub const NOT_ON_CLUSTER: Flags = Flags(1 << 9);

    /// All bits of `other` are set in `self`.
    pub const fn contains(self, other: Flags) -> bool {
        self.0 & other.0 == other.0
    }

    /// Any bit of `other` is set in `self`.
    pub const fn intersects(self, other: Flags) -> bool {
        self.0 & other.0 != 0
    }

    pub const fn union(self, other: Flags) -> Flags {
        Flags(self.0 | other.0)
    }
}

impl std::ops::BitOr for Flags {
    type Output = Flags;
    fn bitor(self, rhs: Flags) -> Flags {
        self.union(rhs)
    }
}

impl fmt::Debug for Flags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const NAMES: [&str; 10] = [
            "WRITE",
            "CONTROL",
            "TXN",
            "SELECT",
            "DB_SCOPE",
            "KEYLESS",
            "SCRIPT",
            "SPLITTABLE",
            "CROSS_DB",
            "NOT_ON_CLUSTER",
        ];
        let set: Vec<&str> = (0..NAMES.len())
            .filter(|i| self.0 & (1 << i) != 0)
            .map(|i| NAMES[i])
            .collect();
        write!(f, "Flags({})", set.join("|"))
    }
}

/// Where a command's keys are in its argv (index 0 is the command name).
#[derive(Clone, Copy)]
pub enum KeySpec {
    /// No keys.
    None,
    /// Keys at `first`, `first + step`, … up to `last`; a negative `last` counts from
    /// the end (-1 is the last argument). With `last < 0` and `step > 1` (MSET), the
    /// arguments from `first` must come in whole groups of `step`.
    Range {
        first: usize,
        last: isize,
        step: usize,
    },
    /// `numkeys` at `numkeys_at`, then that many keys from `first_key`; `dest`, when
    /// set, is one more key listed first (ZUNIONSTORE dest numkeys key…).
    NumKeys {
        numkeys_at: usize,
        first_key: usize,
        dest: Option<usize>,
    },
    /// Anything else (SORT … STORE, GEORADIUS … STORE, MSETEX). The function gets the
    /// command's name for its errors; the arity has already been checked.
    Custom(fn(&'static str, &[Bytes]) -> Result<Vec<usize>, KeyError>),
}

impl fmt::Debug for KeySpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeySpec::None => write!(f, "None"),
            KeySpec::Range { first, last, step } => write!(f, "Range({first}, {last}, {step})"),
            KeySpec::NumKeys {
                numkeys_at,
                first_key,
                dest,
            } => write!(
                f,
                "NumKeys(at {numkeys_at}, first {first_key}, dest {dest:?})"
            ),
            KeySpec::Custom(_) => write!(f, "Custom"),
        }
    }
}

/// One command (or subcommand) tandem knows.
#[derive(Debug)]
pub struct CommandSpec {
    /// Upper case; subcommands are `"CONTAINER SUB"` (e.g. `"FUNCTION LOAD"`).
    pub name: &'static str,
    pub family: Family,
    /// Redis convention: `n > 0` exactly n arguments, `n < 0` at least -n (name included).
    pub arity: i16,
    pub flags: Flags,
    pub keys: KeySpec,
    /// Non-empty only for containers; then `flags` is empty and [`resolve`] picks one.
    pub subcommands: &'static [CommandSpec],
}

impl CommandSpec {
    pub const fn new(
        name: &'static str,
        family: Family,
        arity: i16,
        flags: Flags,
        keys: KeySpec,
    ) -> CommandSpec {
        CommandSpec {
            name,
            family,
            arity,
            flags,
            keys,
            subcommands: &[],
        }
    }

    pub const fn container(
        name: &'static str,
        family: Family,
        subcommands: &'static [CommandSpec],
    ) -> CommandSpec {
        CommandSpec {
            name,
            family,
            arity: -2,
            flags: Flags::NONE,
            keys: KeySpec::None,
            subcommands,
        }
    }

    /// Every flag in `flags` is set.
    pub fn has(&self, flags: Flags) -> bool {
        self.flags.contains(flags)
    }

    pub fn has_any(&self, flags: Flags) -> bool {
        self.flags.intersects(flags)
    }
}

/// Keys at `first..=last` with `step` (shorthand for the tables).
pub(crate) const fn range(first: usize, last: isize, step: usize) -> KeySpec {
    KeySpec::Range { first, last, step }
}

/// The single key at 1, the common case.
pub(crate) const K1: KeySpec = range(1, 1, 1);

/// Why key positions could not be computed from an argv.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{command}: {reason}")]
pub struct KeyError {
    pub command: &'static str,
    pub reason: KeyErrorReason,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyErrorReason {
    WrongArity {
        argc: usize,
        arity: i16,
    },
    NumKeysNotInteger {
        at: usize,
    },
    NumKeysOutOfRange {
        numkeys: i64,
        available: usize,
    },
    /// Key/value arguments do not come in whole groups (MSET k v k).
    Unpaired {
        argc: usize,
    },
}

impl fmt::Display for KeyErrorReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyErrorReason::WrongArity { argc, arity } => {
                write!(f, "wrong number of arguments ({argc}, arity {arity})")
            }
            KeyErrorReason::NumKeysNotInteger { at } => {
                write!(f, "numkeys at argument {at} is not an integer")
            }
            KeyErrorReason::NumKeysOutOfRange { numkeys, available } => write!(
                f,
                "numkeys {numkeys} out of range ({available} arguments available)"
            ),
            KeyErrorReason::Unpaired { argc } => {
                write!(f, "{argc} arguments do not form whole key/value groups")
            }
        }
    }
}

pub(crate) fn key_error(command: &'static str, reason: KeyErrorReason) -> KeyError {
    KeyError { command, reason }
}

/// Parse a numkeys argument (a small non-negative decimal integer) without allocating.
pub(crate) fn parse_numkeys(
    command: &'static str,
    argv: &[Bytes],
    at: usize,
) -> Result<i64, KeyError> {
    let bad = || key_error(command, KeyErrorReason::NumKeysNotInteger { at });
    let arg = argv.get(at).ok_or_else(bad)?;
    std::str::from_utf8(arg)
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
        .ok_or_else(bad)
}

fn families() -> impl Iterator<Item = &'static CommandSpec> {
    [
        string::COMMANDS,
        list::COMMANDS,
        set::COMMANDS,
        zset::COMMANDS,
        hash::COMMANDS,
        stream::COMMANDS,
        keyspace::COMMANDS,
        server::COMMANDS,
        script::COMMANDS,
        bitmap::COMMANDS,
        hyperloglog::COMMANDS,
        geo::COMMANDS,
        tair::COMMANDS,
        vector::COMMANDS,
    ]
    .into_iter()
    .flatten()
}

/// FNV-1a: command names are short and trusted-shape; SipHash showed in profiles of the
/// replication hot path.
#[derive(Default, Clone, Copy)]
struct Fnv(u64);

impl std::hash::Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 {
            0xcbf29ce484222325
        } else {
            self.0
        };
        for &b in bytes {
            h ^= b as u64;
            h = h.wrapping_mul(0x100000001b3);
        }
        self.0 = h;
    }
}

type FnvBuild = std::hash::BuildHasherDefault<Fnv>;

static TABLE: LazyLock<HashMap<&'static [u8], &'static CommandSpec, FnvBuild>> =
    LazyLock::new(|| {
        let mut map = HashMap::default();
        for spec in families() {
            let prev = map.insert(spec.name.as_bytes(), spec);
            assert!(
                prev.is_none(),
                "{} is in the command table twice",
                spec.name
            );
        }
        map
    });

/// Every top-level entry of the table (containers included, subcommands not).
pub fn all() -> impl Iterator<Item = &'static CommandSpec> {
    families()
}

/// Longest name in the table is well under this; longer input cannot match.
const MAX_NAME: usize = 32;

fn upper(name: &[u8], buf: &mut [u8; MAX_NAME]) -> Option<usize> {
    if name.len() > MAX_NAME {
        return None;
    }
    for (d, s) in buf.iter_mut().zip(name) {
        *d = s.to_ascii_uppercase();
    }
    Some(name.len())
}

fn find_sub(parent: &'static CommandSpec, sub: &[u8]) -> Option<&'static CommandSpec> {
    let prefix = parent.name.len() + 1;
    parent
        .subcommands
        .iter()
        .find(|s| s.name.as_bytes()[prefix..].eq_ignore_ascii_case(sub))
}

/// The table entry for a command name, case-insensitively, without allocating.
///
/// `name` is one word (`b"set"`, giving containers such as `FUNCTION` themselves) or
/// `"CONTAINER SUB"` (`b"function load"`). For an argv from the stream use [`resolve`].
pub fn lookup(name: &[u8]) -> Option<&'static CommandSpec> {
    if let Some(space) = name.iter().position(|&b| b == b' ') {
        let parent = lookup(&name[..space])?;
        return find_sub(parent, &name[space + 1..]);
    }
    let mut buf = [0u8; MAX_NAME];
    let n = upper(name, &mut buf)?;
    TABLE.get(&buf[..n]).copied()
}

/// The entry that governs `argv`: its command, or for a container its subcommand.
/// `None` means unsupported (unknown command, unknown subcommand, or a bare container).
pub fn resolve(argv: &[Bytes]) -> Option<&'static CommandSpec> {
    let spec = lookup(argv.first()?)?;
    if spec.subcommands.is_empty() {
        Some(spec)
    } else {
        find_sub(spec, argv.get(1)?)
    }
}

/// Indexes into `argv` of the keys `spec` says it has, in `COMMAND GETKEYS` order.
///
/// Checks the arity and every count it relies on, so a malformed argv from the stream
/// is a [`KeyError`] naming the command and the reason, never a panic or an index past
/// the end. The only allocation is the returned `Vec`.
/// Whether `argc` arguments (the name included) fit the command's arity.
pub fn arity_ok(spec: &CommandSpec, argc: usize) -> bool {
    if spec.arity >= 0 {
        argc == spec.arity as usize
    } else {
        argc >= spec.arity.unsigned_abs() as usize
    }
}

/// The position of the only key of a one-key command (most writes), without the
/// allocation of [`key_indexes`]; `None` for any other shape or a wrong arity.
pub fn single_key_index(spec: &CommandSpec, argv: &[Bytes]) -> Option<usize> {
    match spec.keys {
        KeySpec::Range { first, last, .. }
            if last >= 0 && last as usize == first && first < argv.len() =>
        {
            arity_ok(spec, argv.len()).then_some(first)
        }
        _ => None,
    }
}

pub fn key_indexes(spec: &'static CommandSpec, argv: &[Bytes]) -> Result<Vec<usize>, KeyError> {
    let argc = argv.len();
    if !arity_ok(spec, argc) {
        return Err(key_error(
            spec.name,
            KeyErrorReason::WrongArity {
                argc,
                arity: spec.arity,
            },
        ));
    }
    match spec.keys {
        KeySpec::None => Ok(Vec::new()),
        KeySpec::Range { first, last, step } => range_keys(spec, argc, first, last, step),
        KeySpec::NumKeys {
            numkeys_at,
            first_key,
            dest,
        } => {
            let numkeys = parse_numkeys(spec.name, argv, numkeys_at)?;
            let available = argc.saturating_sub(first_key);
            if numkeys < 0 || numkeys as u64 > available as u64 {
                return Err(key_error(
                    spec.name,
                    KeyErrorReason::NumKeysOutOfRange { numkeys, available },
                ));
            }
            let mut keys = Vec::with_capacity(numkeys as usize + dest.is_some() as usize);
            keys.extend(dest);
            keys.extend(first_key..first_key + numkeys as usize);
            Ok(keys)
        }
        KeySpec::Custom(f) => f(spec.name, argv),
    }
}

fn range_keys(
    spec: &'static CommandSpec,
    argc: usize,
    first: usize,
    last: isize,
    step: usize,
) -> Result<Vec<usize>, KeyError> {
    let command = spec.name;
    let arity = spec.arity;
    let wrong = || key_error(command, KeyErrorReason::WrongArity { argc, arity });
    let last = if last < 0 {
        let from_end = last.unsigned_abs();
        if step > 1 && !argc.saturating_sub(first).is_multiple_of(step) {
            return Err(key_error(command, KeyErrorReason::Unpaired { argc }));
        }
        argc.checked_sub(from_end).ok_or_else(wrong)?
    } else {
        last as usize
    };
    if last >= argc || last < first {
        return Err(wrong());
    }
    Ok((first..=last).step_by(step.max(1)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(args: &[&str]) -> Vec<Bytes> {
        args.iter()
            .map(|a| Bytes::copy_from_slice(a.as_bytes()))
            .collect()
    }

    fn keys(args: &[&str]) -> Result<Vec<usize>, KeyError> {
        let a = argv(args);
        key_indexes(resolve(&a).expect("known command"), &a)
    }

    #[test]
    fn every_entry_is_write_xor_control_and_containers_are_neither() {
        for spec in all() {
            if spec.subcommands.is_empty() {
                assert!(
                    spec.has(Flags::WRITE) != spec.has(Flags::CONTROL),
                    "{} {:?}",
                    spec.name,
                    spec.flags
                );
            } else {
                assert_eq!(spec.flags, Flags::NONE, "{}", spec.name);
                for sub in spec.subcommands {
                    assert!(sub.name.starts_with(spec.name), "{}", sub.name);
                    assert!(
                        sub.has(Flags::WRITE) != sub.has(Flags::CONTROL),
                        "{}",
                        sub.name
                    );
                }
            }
            assert!(spec.name.len() <= MAX_NAME);
            assert_eq!(spec.name, spec.name.to_ascii_uppercase());
        }
        assert!(TABLE.len() > 100);
    }

    #[test]
    fn lookup_is_case_insensitive_and_knows_subcommands() {
        assert_eq!(lookup(b"sEt").unwrap().name, "SET");
        assert_eq!(lookup(b"function load").unwrap().name, "FUNCTION LOAD");
        assert!(lookup(b"FUNCTION STATS").is_none());
        assert!(lookup(b"MIGRATE").is_none());
        assert!(lookup(&[b'A'; 100]).is_none());
        assert!(lookup(b"").is_none());
        assert_eq!(
            resolve(&argv(&["xgroup", "create", "s", "g", "$"]))
                .unwrap()
                .name,
            "XGROUP CREATE"
        );
        assert!(resolve(&argv(&["FUNCTION"])).is_none());
        assert!(resolve(&[]).is_none());
    }

    #[test]
    fn key_positions() {
        assert_eq!(keys(&["SET", "k", "v"]).unwrap(), [1]);
        assert_eq!(keys(&["MSET", "a", "1", "b", "2"]).unwrap(), [1, 3]);
        assert_eq!(keys(&["BLPOP", "a", "b", "0"]).unwrap(), [1, 2]);
        assert_eq!(keys(&["EVAL", "s", "0"]).unwrap(), Vec::<usize>::new());
        assert_eq!(keys(&["EVAL", "s", "2", "a", "b", "x"]).unwrap(), [3, 4]);
        assert_eq!(
            keys(&["ZUNIONSTORE", "d", "2", "a", "b"]).unwrap(),
            [1, 3, 4]
        );
        assert_eq!(keys(&["XGROUP", "CREATE", "s", "g", "$"]).unwrap(), [2]);
        assert_eq!(keys(&["FLUSHALL"]).unwrap(), Vec::<usize>::new());
    }

    #[test]
    fn malformed_argv_is_an_error() {
        let e = keys(&["MSET", "a", "1", "b"]).unwrap_err();
        assert_eq!(e.reason, KeyErrorReason::Unpaired { argc: 4 });
        assert!(keys(&["SET", "k"]).is_err());
        assert!(keys(&["EVAL", "s", "3", "a"]).is_err());
        assert!(keys(&["EVAL", "s", "-1"]).is_err());
        assert!(keys(&["EVAL", "s", "x"]).is_err());
        assert!(keys(&["ZUNIONSTORE", "d", "99999999999999999999", "a"]).is_err());
        let msg = keys(&["LMPOP", "5", "a", "LEFT"]).unwrap_err().to_string();
        assert!(msg.starts_with("LMPOP: numkeys 5"), "{msg}");
    }
}
