//! What the target server can take, and the source's commands it cannot, translated.
//!
//! A newer source propagates commands an older target lacks (Redis 8 sends `HSETEX` for
//! `HINCRBYFLOAT`, `PEXPIREAT … NX` for `EXPIRE … NX`; Redis 7 sends
//! `XGROUP SETID … ENTRIESREAD`; Valkey sends `SET … IFEQ`). At start the engine reads
//! the target's `COMMAND` list (names and arities) and its version ([`TargetCaps`]);
//! [`TargetCaps::translate`] then turns each such command into exact equivalents the
//! target has, or refuses it with a reason ([`Untranslatable`]) when none exists (a
//! hash field TTL on a server without field TTLs, a vector set on a server without the
//! type). Commands the target has are never looked at: for a target as new as the
//! source the list of watched commands is empty.
//!
//! Conditions the source evaluated (`FNX`, `NX`/`GT` of an expiry, `IFEQ`) are dropped:
//! a master propagates a conditional write only when it applied it, so on a target that
//! holds what the source holds the unconditional write does exactly the same.

mod translate;

use std::collections::HashMap;

use bytes::Bytes;

use crate::redis::command::{self, CommandSpec};
use crate::redis::conn::{Frame, frame_text, info_field};

pub use translate::Untranslatable;

/// The target's commands and version, as read at start.
#[derive(Debug, Clone, Default)]
pub struct TargetCaps {
    /// "Redis 7.0.15", "Valkey 9.1.2": for messages.
    label: String,
    valkey: Option<(u32, u32)>,
    /// `redis_version` (Valkey reports the Redis version it is compatible with).
    redis: (u32, u32),
    /// Lower-case command name → arity; empty when `COMMAND` could not be read.
    arity: HashMap<String, i64>,
    /// Addresses of the table entries whose commands may need translating for this
    /// target, sorted: a lookup per replicated command is a binary search of integers.
    watch: Vec<usize>,
}

/// What became of one command.
#[derive(Debug, PartialEq, Eq)]
pub enum Translated {
    /// The target takes it as it is.
    Same(Vec<Bytes>),
    /// Exact equivalents, in order (none: it changes nothing on this target).
    Into(Vec<Vec<Bytes>>),
}

/// Table entries are statics: one address each, the same wherever they are reached from.
fn address(spec: &CommandSpec) -> usize {
    spec as *const CommandSpec as usize
}

fn version_pair(v: &str) -> (u32, u32) {
    let mut it = v.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    (it.next().unwrap_or(0), it.next().unwrap_or(0))
}

impl TargetCaps {
    /// From the target's `INFO server` text and its `COMMAND` reply. An unreadable
    /// `COMMAND` (an error reply, a proxy) leaves the list empty: nothing is watched, and
    /// the target's own error names whatever it refuses.
    pub fn new(info: &str, command: &Frame) -> TargetCaps {
        let valkey_version = info_field(info, "valkey_version");
        let redis_version = info_field(info, "redis_version").unwrap_or_default();
        let label = match &valkey_version {
            Some(v) => format!("Valkey {v}"),
            None if redis_version.is_empty() => "an unknown server".to_string(),
            None => format!("Redis {redis_version}"),
        };
        let mut arity = HashMap::new();
        if let Frame::Array(entries) = command {
            for e in entries {
                let Frame::Array(parts) = e else { continue };
                let (Some(name), Some(Frame::Integer(n))) =
                    (parts.first().and_then(frame_text), parts.get(1))
                else {
                    continue;
                };
                arity.insert(name.to_ascii_lowercase(), *n);
            }
        }
        let mut caps = TargetCaps {
            label,
            valkey: valkey_version.as_deref().map(version_pair),
            redis: version_pair(&redis_version),
            arity,
            watch: Vec::new(),
        };
        if !caps.arity.is_empty() {
            caps.watch = command::all()
                .flat_map(|s| std::iter::once(s).chain(s.subcommands.iter()))
                .filter(|s| s.subcommands.is_empty() && caps.needs_watch(s))
                .map(address)
                .collect();
            caps.watch.sort_unstable();
        }
        caps
    }

    /// How the target is named in messages ("Redis 7.0.15").
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Whether the target has the command `name` (any case); `true` when unknown.
    pub fn has(&self, name: &str) -> bool {
        self.arity.is_empty() || self.arity.contains_key(&name.to_ascii_lowercase())
    }

    fn arity_of(&self, name: &str) -> Option<i64> {
        self.arity.get(&name.to_ascii_lowercase()).copied()
    }

    /// Hash field TTLs (Redis 7.4+, Valkey 9+).
    pub fn field_ttls(&self) -> bool {
        self.has("HPEXPIREAT")
    }

    /// `NX|XX|GT|LT` on the expiry commands (Redis 7.0+): a fixed arity of 3 says no.
    fn expire_flags(&self, name: &str) -> bool {
        self.arity_of(name).is_none_or(|a| a < 0)
    }

    /// Stream `ENTRIESREAD` / `ENTRIESADDED` / `MAXDELETEDID` (Redis 7.0+, every Valkey).
    fn stream_counters(&self) -> bool {
        self.valkey.is_some() || self.redis.0 >= 7
    }

    /// `KEEPREF|DELREF|ACKED` on stream trimming (Redis 8.2+, with XDELEX).
    fn stream_refs(&self) -> bool {
        self.has("XDELEX")
    }

    /// `SET … IFEQ` (Valkey 8.1+, Redis 8.4+).
    fn set_ifeq(&self) -> bool {
        match self.valkey {
            Some(v) => v >= (8, 1),
            None => self.redis >= (8, 4),
        }
    }

    /// `BITOP DIFF|DIFF1|ANDOR|ONE` (Redis 8.2+).
    fn bitop_diff(&self) -> bool {
        self.valkey.is_none() && self.redis >= (8, 2)
    }

    fn needs_watch(&self, s: &CommandSpec) -> bool {
        let container = s.name.split(' ').next().unwrap_or(s.name);
        if !self.has(container) {
            return true;
        }
        match s.name {
            "EXPIRE" | "PEXPIRE" | "EXPIREAT" | "PEXPIREAT" => !self.expire_flags(s.name),
            "XGROUP CREATE" | "XGROUP SETID" => !self.stream_counters(),
            "XSETID" => self.arity_of("XSETID").is_some_and(|a| a > 0),
            "XADD" | "XTRIM" => !self.stream_refs(),
            "SET" => !self.set_ifeq(),
            "BITOP" => !self.bitop_diff(),
            "HSETEX" | "HGETEX" => !self.field_ttls(),
            // TairZset propagates these without their timeout, which no server accepts.
            "EXBZPOPMIN" | "EXBZPOPMAX" => true,
            _ => false,
        }
    }

    /// Whether `spec`'s commands may need [`TargetCaps::translate`] on this target (a
    /// scan of a list that is empty when the target is as new as the source).
    pub fn watches(&self, spec: &CommandSpec) -> bool {
        !self.watch.is_empty() && self.watch.binary_search(&address(spec)).is_ok()
    }

    /// Whether any command may need translating (the target is older than some source).
    pub fn watches_any(&self) -> bool {
        !self.watch.is_empty()
    }

    /// `argv` (resolved to `spec`) as the target can take it.
    pub fn translate(
        &self,
        spec: &'static CommandSpec,
        argv: Vec<Bytes>,
    ) -> Result<Translated, Untranslatable> {
        translate::translate(self, spec, argv)
    }
}

#[cfg(test)]
mod tests;
