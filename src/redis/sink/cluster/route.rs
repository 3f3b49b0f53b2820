//! Routing a unit's writes to hash slots, and what a cluster target refuses.

use bytes::Bytes;

use super::{ClusterSink, Part, UnitWrite};
use crate::redis::command::{Flags, resolve, target_db};
use crate::redis::sink::{CkptState, SinkError};
use crate::redis::slot::{SplitError, one_slot, split_by_slot};

impl ClusterSink {
    pub(super) fn refused(&self, command: &str, offset: u64, message: String) -> SinkError {
        SinkError::Refused {
            endpoint: self.cfg.target.to_string(),
            command: command.to_string(),
            offset,
            message,
        }
    }

    fn not_db0(&self, command: &str, offset: u64, db: u32) -> SinkError {
        self.refused(
            command,
            offset,
            format!(
                "writes to db {db}, but a cluster has only db 0: map the source db to 0 with \
                 --db-map {db}:0"
            ),
        )
    }

    /// Route the buffered unit's writes to slots; keyless writes apart.
    #[allow(clippy::type_complexity)]
    /// `writes` is drained and `parts` filled (both keep their capacity for the next
    /// unit).
    pub(super) fn route(
        &self,
        writes: &mut Vec<UnitWrite>,
        parts: &mut Vec<Part>,
        state: CkptState,
    ) -> Result<Vec<(Vec<Bytes>, u64)>, SinkError> {
        let mut keyless = Vec::new();
        let name = |a: &[Bytes]| String::from_utf8_lossy(&a[0]).to_ascii_uppercase();
        let one_command = writes.windows(2).all(|w| w[0].offset == w[1].offset);
        let mut splittable = true;
        for UnitWrite {
            db,
            argv,
            offset: off,
            raw,
            slot,
        } in writes.drain(..)
        {
            if let Some(slot) = slot {
                if db != 0 {
                    return Err(self.not_db0(&name(&argv), off, db));
                }
                parts.push(Part {
                    slot,
                    keyed: true,
                    argv,
                    raw,
                    offset: off,
                });
                continue;
            }
            let Some(spec) = resolve(&argv) else {
                return Err(self.refused(&name(&argv), off, "unknown command".into()));
            };
            splittable &= spec.has(Flags::SPLITTABLE);
            if db != 0 {
                return Err(self.not_db0(spec.name, off, db));
            }
            if spec.has(Flags::NOT_ON_CLUSTER) {
                return Err(self.refused(
                    spec.name,
                    off,
                    "cannot be applied to a cluster target (it has only db 0)".into(),
                ));
            }
            if spec.has(Flags::CROSS_DB)
                && target_db(spec, &argv)
                    .ok()
                    .flatten()
                    .is_some_and(|(_, d)| d != 0)
            {
                return Err(self.refused(
                    spec.name,
                    off,
                    "writes to another db, and a cluster target has only db 0".into(),
                ));
            }
            if spec.has(Flags::KEYLESS) {
                keyless.push((argv, off));
                continue;
            }
            let split = match one_slot(spec, &argv) {
                Ok(Some(slot)) => {
                    parts.push(Part {
                        slot,
                        keyed: false,
                        argv,
                        raw,
                        offset: off,
                    });
                    continue;
                }
                Ok(None) => split_by_slot(spec, &argv),
                Err(e) => Err(e),
            };
            match split {
                Ok(p) => parts.extend(p.into_iter().map(|(slot, argv)| Part {
                    slot,
                    keyed: false,
                    argv,
                    raw: None,
                    offset: off,
                })),
                Err(SplitError::CrossSlot { command, slots }) => {
                    return Err(self.refused(
                        command,
                        off,
                        format!(
                            "keys in slots {slots:?}: a cluster target cannot apply it in one \
                         transaction and it cannot be split exactly"
                        ),
                    ));
                }
                Err(e) => return Err(self.refused(spec.name, off, e.to_string())),
            }
        }
        if state == CkptState::Incr {
            if !keyless.is_empty() && !parts.is_empty() {
                let off = keyless[0].1;
                return Err(self.refused(
                    "MULTI",
                    off,
                    "a transaction mixing keyless commands (FLUSHALL, FUNCTION, SCRIPT) with \
                     key writes cannot be applied atomically on a cluster target"
                        .into(),
                ));
            }
            let first = parts.first().map(|p| p.slot);
            let spans = parts.iter().any(|p| Some(p.slot) != first);
            if spans && !(one_command && splittable) {
                let mut slots: Vec<u16> = parts.iter().map(|p| p.slot).collect();
                slots.sort_unstable();
                slots.dedup();
                let off = parts.last().map(|p| p.offset).unwrap_or_default();
                return Err(self.refused(
                    "MULTI",
                    off,
                    format!(
                        "a source transaction (or script) writing keys in slots {slots:?}: a \
                     cluster target cannot apply it atomically"
                    ),
                ));
            }
        }
        Ok(keyless)
    }
}
