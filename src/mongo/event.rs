//! What source readers hand to the applier, whatever they read (change events, oplog
//! entries, a recorded oplog file): units of document operations or DDL, each with the
//! source position just after it.

use bson::{Bson, Document};

use super::ns::Namespace;
use crate::core::MongoPosition;

/// How an update describes its change.
#[derive(Clone, Debug, PartialEq)]
pub enum Change {
    /// The `o` of a mongod `$v:2` oplog entry: `{$v: 2, diff: {…}}`, applied exactly.
    Diff(Document),
    /// A change event's `updateDescription`.
    Description(Document),
    /// A pre-5.0 `$v:1` entry: `$set` / `$unset` modifiers.
    Modifiers(Document),
}

#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    Insert {
        ns: Namespace,
        doc: Document,
    },
    Replace {
        ns: Namespace,
        id: Bson,
        doc: Document,
    },
    Update {
        ns: Namespace,
        id: Bson,
        change: Change,
    },
    Delete {
        ns: Namespace,
        id: Bson,
    },
}

impl Op {
    pub fn ns(&self) -> &Namespace {
        match self {
            Op::Insert { ns, .. }
            | Op::Replace { ns, .. }
            | Op::Update { ns, .. }
            | Op::Delete { ns, .. } => ns,
        }
    }

    pub fn ns_mut(&mut self) -> &mut Namespace {
        match self {
            Op::Insert { ns, .. }
            | Op::Replace { ns, .. }
            | Op::Update { ns, .. }
            | Op::Delete { ns, .. } => ns,
        }
    }

    /// The document's `_id` (`Null` for an insert of a document without one: the
    /// applier refuses it).
    pub fn id(&self) -> &Bson {
        match self {
            Op::Insert { doc, .. } => doc.get("_id").unwrap_or(&Bson::Null),
            Op::Replace { id, .. } | Op::Update { id, .. } | Op::Delete { id, .. } => id,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Op::Insert { .. } => "insert",
            Op::Replace { .. } => "replace",
            Op::Update { .. } => "update",
            Op::Delete { .. } => "delete",
        }
    }
}

/// Catalog changes. Each is applied alone, between the units before and after it.
#[derive(Clone, Debug, PartialEq)]
pub enum Ddl {
    /// A collection or view with its options as `create` takes them.
    Create {
        ns: Namespace,
        options: Document,
    },
    Drop {
        ns: Namespace,
    },
    DropDatabase {
        db: String,
    },
    Rename {
        from: Namespace,
        to: Namespace,
        drop_target: bool,
    },
    /// Index specs as `createIndexes` takes them (`key`, `name`, options).
    CreateIndexes {
        ns: Namespace,
        specs: Vec<Document>,
    },
    DropIndexes {
        ns: Namespace,
        names: Vec<String>,
    },
    /// A `collMod` command's fields other than the collection name.
    CollMod {
        ns: Namespace,
        changes: Document,
    },
    ConvertToCapped {
        ns: Namespace,
        size: f64,
    },
}

impl Ddl {
    pub fn kind(&self) -> &'static str {
        match self {
            Ddl::Create { .. } => "create",
            Ddl::Drop { .. } => "drop",
            Ddl::DropDatabase { .. } => "dropDatabase",
            Ddl::Rename { .. } => "rename",
            Ddl::CreateIndexes { .. } => "createIndexes",
            Ddl::DropIndexes { .. } => "dropIndexes",
            Ddl::CollMod { .. } => "collMod",
            Ddl::ConvertToCapped { .. } => "convertToCapped",
        }
    }

    /// What tells this DDL from another on the same side: kind, namespaces and names
    /// (of indexes, of changed options), never server-filled details such as an index
    /// spec's version, which two servers may write differently for one command.
    pub fn echo_key(&self) -> String {
        let names: Vec<String> = match self {
            Ddl::Create { ns, .. } | Ddl::Drop { ns } | Ddl::ConvertToCapped { ns, .. } => {
                vec![ns.to_string()]
            }
            Ddl::DropDatabase { db } => vec![db.clone()],
            Ddl::Rename { from, to, .. } => vec![from.to_string(), to.to_string()],
            Ddl::CreateIndexes { ns, specs } => std::iter::once(ns.to_string())
                .chain(
                    specs
                        .iter()
                        .map(|s| s.get_str("name").unwrap_or("?").to_string()),
                )
                .collect(),
            Ddl::DropIndexes { ns, names } => std::iter::once(ns.to_string())
                .chain(names.iter().cloned())
                .collect(),
            Ddl::CollMod { ns, changes } => {
                let mut keys: Vec<String> = changes.keys().cloned().collect();
                keys.sort();
                std::iter::once(ns.to_string()).chain(keys).collect()
            }
        };
        format!("{} {}", self.kind(), names.join(" "))
    }

    /// The namespaces it touches (for filtering and mapping).
    pub fn namespaces(&self) -> Vec<&Namespace> {
        match self {
            Ddl::Create { ns, .. }
            | Ddl::Drop { ns }
            | Ddl::CreateIndexes { ns, .. }
            | Ddl::DropIndexes { ns, .. }
            | Ddl::CollMod { ns, .. }
            | Ddl::ConvertToCapped { ns, .. } => vec![ns],
            Ddl::Rename { from, to, .. } => vec![from, to],
            Ddl::DropDatabase { .. } => vec![],
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Payload {
    /// Document writes applied atomically: one plain write, or a whole source
    /// transaction (never split).
    Ops(Vec<Op>),
    Ddl(Ddl),
    /// Nothing to apply; the position still advances.
    Noop,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Unit {
    /// The source position just after this unit.
    pub pos: MongoPosition,
    /// The source's wall clock of the unit, ms since the epoch (0 when unknown).
    pub wall_ms: u64,
    /// A source transaction (or an atomic `applyOps`).
    pub txn: bool,
    /// The unit wrote tandem's own database on the source (two-way: an echo).
    pub touches_tandem: bool,
    /// The `id` of the logical session that wrote it (a transaction's, a retryable
    /// write's), when the source says: two-way knows tandem's own sessions by it.
    pub lsid: Option<Vec<u8>>,
    pub payload: Payload,
}

impl Unit {
    pub fn ops(&self) -> usize {
        match &self.payload {
            Payload::Ops(o) => o.len(),
            _ => 0,
        }
    }
}
