//! Incremental sync: replicated commands in, batches out.
//!
//! A source `MULTI … EXEC` is one unit and always lands in one target transaction. The
//! batch's checkpoint is the offset after its last complete unit, so PING, SELECT and
//! REPLCONF advance it too and a quiet source ends with the target's checkpoint equal to
//! the source's `master_repl_offset`.

use bytes::Bytes;

use crate::redis::command::{CommandSpec, Flags, resolve};
use crate::redis::compat::{TargetCaps, Translated, Untranslatable};
use crate::redis::filter::{FilterConfig, FilterDecision, any_writes_tandem_key, command_name};
use crate::redis::replica::Command;

/// What to do with a command outside the supported list.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OnUnsupported {
    Fail,
    Skip,
}

/// What to do with FLUSHALL / FLUSHDB.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OnFlush {
    /// Apply within the replicated scope: FLUSHDB to the mapped db; FLUSHALL only when
    /// no db or key filter is set (otherwise it would delete target data tandem does
    /// not own), else stop.
    Apply,
    /// Never apply (counted and logged).
    Skip,
    /// Stop the link with an error.
    Fail,
}

#[derive(Debug, thiserror::Error)]
pub enum IncrError {
    #[error(
        "unsupported command {command} at source offset {offset} (use --on-unsupported skip to skip it)"
    )]
    Unsupported { command: String, offset: u64 },
    #[error("{command} at source offset {offset}: {reason}")]
    Rejected {
        command: String,
        offset: u64,
        reason: String,
    },
    /// The target lacks the command, and no exact equivalent exists there.
    #[error(
        "{} of key {:?} at source offset {offset}: the target ({}) {}",
        .inner.command, .inner.key, .inner.target, .inner.reason
    )]
    NoEquivalent { inner: Untranslatable, offset: u64 },
}

/// `writes` as the target can take them: commands it lacks translated (`redis/compat`),
/// the rest untouched (and still forwarded as received).
pub fn for_target(
    caps: &TargetCaps,
    writes: Vec<TargetWrite>,
) -> Result<Vec<TargetWrite>, IncrError> {
    if !writes
        .iter()
        .any(|w| w.spec.is_some_and(|s| caps.watches(s)))
    {
        return Ok(writes);
    }
    let mut out = Vec::with_capacity(writes.len());
    for w in writes {
        let Some(spec) = w.spec.filter(|s| caps.watches(s)) else {
            out.push(w);
            continue;
        };
        let offset = w.offset;
        match caps.translate(spec, w.argv) {
            Ok(Translated::Same(argv)) => out.push(TargetWrite {
                argv,
                raw: None,
                ..w
            }),
            Ok(Translated::Into(list)) => out.extend(list.into_iter().map(|argv| TargetWrite {
                db: w.db,
                spec: resolve(&argv),
                argv,
                offset,
                raw: None,
            })),
            Err(inner) => return Err(IncrError::NoEquivalent { inner, offset }),
        }
    }
    Ok(out)
}

/// A command of the full sync's rewrite (`offset`: the RDB's position) as the target can
/// take it.
pub fn rewritten_for_target(
    caps: &TargetCaps,
    argv: Vec<Bytes>,
    offset: u64,
) -> Result<Vec<Vec<Bytes>>, IncrError> {
    match resolve(&argv).filter(|s| caps.watches(s)) {
        None => Ok(vec![argv]),
        Some(spec) => match caps.translate(spec, argv) {
            Ok(Translated::Same(argv)) => Ok(vec![argv]),
            Ok(Translated::Into(list)) => Ok(list),
            Err(inner) => Err(IncrError::NoEquivalent { inner, offset }),
        },
    }
}

/// Per-link command policy.
#[derive(Clone, Debug)]
pub struct IncrPolicy {
    pub filter: FilterConfig,
    pub on_unsupported: OnUnsupported,
    pub on_flush: OnFlush,
    /// Two-way: drop units that write `__tandem:` keys (tandem's own batches echoed).
    pub drop_echoes: bool,
}

/// Collects the commands of one source unit.
#[derive(Default)]
pub struct UnitBuilder {
    in_multi: bool,
    cmds: Vec<Command>,
}

/// A complete unit, ready to be filtered and batched.
pub struct Unit {
    pub cmds: Vec<Command>,
    /// Offset after the unit's last byte.
    pub end: u64,
    /// Source db after the unit (for the checkpoint).
    pub db: u32,
}

impl UnitBuilder {
    /// Feed one command; returns a unit when one is complete.
    pub fn push(&mut self, cmd: Command) -> Option<Unit> {
        if cmd.name_is("MULTI") {
            self.in_multi = true;
            self.cmds.clear();
            return None;
        }
        if cmd.name_is("EXEC") && self.in_multi {
            self.in_multi = false;
            let end = cmd.offset;
            let db = cmd.db;
            return Some(Unit {
                cmds: std::mem::take(&mut self.cmds),
                end,
                db,
            });
        }
        if self.in_multi {
            self.cmds.push(cmd);
            return None;
        }
        let (end, db) = (cmd.offset, cmd.db);
        Some(Unit {
            cmds: vec![cmd],
            end,
            db,
        })
    }

    /// Inside a transaction: the checkpoint cannot move until it completes.
    pub fn in_unit(&self) -> bool {
        self.in_multi
    }

    /// Forget a partial unit (the stream restarted).
    pub fn reset(&mut self) {
        self.in_multi = false;
        self.cmds.clear();
    }
}

/// One write for the target.
#[derive(Debug, Clone)]
pub struct TargetWrite {
    pub db: u32,
    pub argv: Vec<Bytes>,
    /// Source offset after the command (for messages).
    pub offset: u64,
    /// The command's RESP bytes as received, when it is forwarded unchanged.
    pub raw: Option<Bytes>,
    /// The command's table entry, resolved once here for every later stage.
    pub spec: Option<&'static CommandSpec>,
}

/// Counters of what the policy did, for logs and metrics.
#[derive(Debug, Default, Clone)]
pub struct IncrStats {
    pub applied: u64,
    pub skipped_unsupported: u64,
    pub skipped_flush: u64,
    pub dropped_echo_units: u64,
}

impl IncrPolicy {
    /// Turn a unit into target writes `(target db, argv)`.
    pub fn writes(&self, unit: Unit, stats: &mut IncrStats) -> Result<Vec<TargetWrite>, IncrError> {
        if self.drop_echoes && any_writes_tandem_key(unit.cmds.iter().map(|c| c.argv.as_slice())) {
            stats.dropped_echo_units += 1;
            crate::metrics::echo_dropped(false);
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        for cmd in unit.cmds {
            let offset = cmd.offset;
            let db = cmd.db;
            let spec = resolve(&cmd.argv);
            if spec.is_some_and(|s| s.has(Flags::SELECT) || s.has(Flags::TXN)) {
                continue;
            }
            if spec.is_some_and(|s| s.has(Flags::DB_SCOPE) && s.name != "SWAPDB") {
                if let Some((db, argv)) = self.flush(&cmd, stats)? {
                    out.push(TargetWrite {
                        db,
                        argv,
                        offset,
                        raw: None,
                        spec,
                    });
                }
                continue;
            }
            let raw = cmd.raw;
            let tdb = self.filter.map_db(db);
            match self.filter.apply_resolved(spec, db, cmd.argv) {
                FilterDecision::Keep(argv) => out.push(TargetWrite {
                    db: tdb,
                    argv,
                    offset,
                    raw: Some(raw),
                    spec,
                }),
                FilterDecision::Drop => {}
                FilterDecision::Rewritten(list) => {
                    for argv in list {
                        out.push(TargetWrite {
                            db: tdb,
                            spec: resolve(&argv),
                            argv,
                            offset,
                            raw: None,
                        });
                    }
                }
                FilterDecision::Error(crate::redis::filter::FilterError::Unsupported(name)) => {
                    match self.on_unsupported {
                        OnUnsupported::Fail => {
                            return Err(IncrError::Unsupported {
                                command: name,
                                offset,
                            });
                        }
                        OnUnsupported::Skip => {
                            stats.skipped_unsupported += 1;
                            crate::metrics::unsupported_skipped(&name);
                            tracing::warn!(command = %name, offset, "skipped unsupported command");
                        }
                    }
                }
                FilterDecision::Error(e) => {
                    return Err(IncrError::Rejected {
                        command: e.to_string().split(':').next().unwrap_or("").to_string(),
                        offset,
                        reason: e.to_string(),
                    });
                }
            }
        }
        stats.applied += out.len() as u64;
        Ok(out)
    }

    fn flush(
        &self,
        cmd: &Command,
        stats: &mut IncrStats,
    ) -> Result<Option<(u32, Vec<Bytes>)>, IncrError> {
        let name = command_name(&cmd.argv);
        let reject = |reason: &str| IncrError::Rejected {
            command: name.clone(),
            offset: cmd.offset,
            reason: reason.to_string(),
        };
        match self.on_flush {
            OnFlush::Fail => Err(reject(
                "FLUSHALL/FLUSHDB stop the link under --on-flush fail",
            )),
            OnFlush::Skip => {
                stats.skipped_flush += 1;
                tracing::warn!(command = %name, offset = cmd.offset, "skipped by --on-flush skip");
                Ok(None)
            }
            OnFlush::Apply => {
                let f = &self.filter;
                let key_filtered = !f.include_prefixes.is_empty()
                    || !f.exclude_prefixes.is_empty()
                    || f.include_regex.is_some()
                    || f.exclude_regex.is_some();
                if key_filtered {
                    return Err(reject(
                        "would delete target keys outside the key filters; \
                         choose --on-flush skip or fail",
                    ));
                }
                if cmd.name_is("FLUSHDB") {
                    if !f.db_allowed(cmd.db) {
                        return Ok(None);
                    }
                    return Ok(Some((f.map_db(cmd.db), cmd.argv.clone())));
                }
                let db_scoped =
                    !f.include_dbs.is_empty() || !f.exclude_dbs.is_empty() || !f.db_map.is_empty();
                if db_scoped {
                    return Err(reject(
                        "FLUSHALL with db filters or --db-map would delete target dbs \
                         tandem does not own; choose --on-flush skip or fail",
                    ));
                }
                Ok(Some((0, cmd.argv.clone())))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(args: &[&str], offset: u64) -> Command {
        Command {
            db: 0,
            argv: args.iter().map(|a| Bytes::from(a.to_string())).collect(),
            start: offset - 1,
            offset,
            raw: Bytes::new(),
        }
    }

    fn policy(on_unsupported: OnUnsupported) -> IncrPolicy {
        IncrPolicy {
            filter: FilterConfig::default(),
            on_unsupported,
            on_flush: OnFlush::Apply,
            drop_echoes: false,
        }
    }

    fn unit(cmds: Vec<Command>) -> Unit {
        let end = cmds.last().unwrap().offset;
        Unit { cmds, end, db: 0 }
    }

    #[test]
    fn an_unsupported_command_names_itself_and_its_offset() {
        let mut stats = IncrStats::default();
        let u = unit(vec![
            cmd(&["SET", "a", "1"], 10),
            cmd(&["FROBNICATE", "x"], 42),
        ]);
        let err = policy(OnUnsupported::Fail)
            .writes(u, &mut stats)
            .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("FROBNICATE") && msg.contains("42"), "{msg}");
        let u = unit(vec![
            cmd(&["SET", "a", "1"], 10),
            cmd(&["FROBNICATE", "x"], 42),
        ]);
        let w = policy(OnUnsupported::Skip).writes(u, &mut stats).unwrap();
        assert_eq!(w.len(), 1);
        assert_eq!(stats.skipped_unsupported, 1);
    }

    #[test]
    fn control_commands_are_never_applied() {
        let mut stats = IncrStats::default();
        for c in [
            &["PING"][..],
            &["REPLCONF", "GETACK", "*"],
            &["PUBLISH", "ch", "m"],
        ] {
            let w = policy(OnUnsupported::Fail).writes(unit(vec![cmd(c, 5)]), &mut stats);
            assert!(w.unwrap().is_empty(), "{c:?}");
        }
    }

    #[test]
    fn flushes_stay_inside_the_replicated_scope() {
        let mut stats = IncrStats::default();
        let mut p = policy(OnUnsupported::Fail);
        let w = p
            .writes(unit(vec![cmd(&["FLUSHALL"], 5)]), &mut stats)
            .unwrap();
        assert_eq!(w.len(), 1, "no filters: FLUSHALL applies");
        p.filter.include_prefixes = vec![Bytes::from("app:")];
        let e = p
            .writes(unit(vec![cmd(&["FLUSHDB"], 6)]), &mut stats)
            .unwrap_err();
        assert!(e.to_string().contains("outside the key filters"), "{e}");
        p.filter.include_prefixes.clear();
        p.filter.include_dbs = vec![0];
        let e = p
            .writes(unit(vec![cmd(&["FLUSHALL"], 7)]), &mut stats)
            .unwrap_err();
        assert!(e.to_string().contains("--on-flush"), "{e}");
        let w = p
            .writes(unit(vec![cmd(&["FLUSHDB"], 8)]), &mut stats)
            .unwrap();
        assert_eq!(w.len(), 1, "FLUSHDB of a replicated db applies");
        p.on_flush = OnFlush::Skip;
        let w = p
            .writes(unit(vec![cmd(&["FLUSHALL"], 9)]), &mut stats)
            .unwrap();
        assert!(w.is_empty());
        assert_eq!(stats.skipped_flush, 1);
    }
}
