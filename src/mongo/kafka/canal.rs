//! The Canal JSON envelope, as the cloud service publishes MongoDB changes:
//!
//! ```text
//! {"data":[…],"database":"db","es":1700000000000,"id":7311…,"isDdl":false,"mysqlType":null,
//!  "old":[…],"pkNames":["_id"],"sql":null,"sqlType":null,"table":"coll","ts":1700000000123,
//!  "type":"UPDATE","gtid":null,"serverId":null}
//! ```
//!
//! The envelope is written by hand rather than through a `serde_json::Value` tree: it is
//! the hot path of every message, and its shape is fixed. Documents inside it go through
//! bson's Extended JSON conversion, which is where types are decided.

use bson::{Bson, Document, doc};

use crate::mongo::event::{Change, Ddl, Op};

/// How documents are written: relaxed Extended JSON (numbers as JSON numbers, dates as
/// ISO strings) or canonical (every type explicit, `{"$numberInt":"1"}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum JsonMode {
    Relaxed,
    Canonical,
}

/// The shape of each `data` / `old` element.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DataShape {
    /// `{"doc": "<document as Extended JSON text>"}`, as the cloud service publishes it.
    Doc,
    /// The document itself as a JSON object.
    Object,
}

#[derive(Clone, Copy, Debug)]
pub struct Encoder {
    pub json: JsonMode,
    pub shape: DataShape,
}

/// The times and id every message of one source unit shares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Meta {
    /// Canal's `id`: the unit's operation time as one number (0 for the full copy), so
    /// a re-run of the same unit writes the same id.
    pub id: u64,
    /// Source event time, ms since the epoch.
    pub es: u64,
    /// Emit time, ms since the epoch.
    pub ts: u64,
}

/// The `type` of a message, also the metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Insert,
    Update,
    Delete,
    Ddl,
}

impl Kind {
    pub fn canal(self) -> &'static str {
        match self {
            Kind::Insert => "INSERT",
            Kind::Update => "UPDATE",
            Kind::Delete => "DELETE",
            Kind::Ddl => "DDL",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Kind::Insert => "insert",
            Kind::Update => "update",
            Kind::Delete => "delete",
            Kind::Ddl => "ddl",
        }
    }
}

impl Encoder {
    /// Extended JSON of one value, by the chosen mode.
    pub fn ejson(&self, b: Bson) -> serde_json::Value {
        match self.json {
            JsonMode::Relaxed => b.into_relaxed_extjson(),
            JsonMode::Canonical => b.into_canonical_extjson(),
        }
    }

    /// A document operation. `post_image` replaces an update's delta with the whole
    /// document after it (`--update-format full-document`), when one was found. Taken by
    /// value: the documents move into the JSON conversion instead of being copied.
    pub fn op(&self, op: Op, meta: Meta, post_image: Option<Document>, out: &mut Vec<u8>) -> Kind {
        let id_only = |id: Bson| doc! {"_id": id};
        let (ns, kind, data, old) = match op {
            Op::Insert { ns, doc } => (ns, Kind::Insert, doc, None),
            Op::Replace { ns, id, doc } => (ns, Kind::Update, doc, Some(id_only(id))),
            Op::Update { ns, id, change } => {
                let data = post_image.unwrap_or_else(|| delta(&change));
                (ns, Kind::Update, data, Some(id_only(id)))
            }
            Op::Delete { ns, id } => (ns, Kind::Delete, id_only(id), None),
        };
        self.envelope(
            out,
            &ns.db,
            Some(&ns.coll),
            kind,
            meta,
            Some(Bson::Document(data)),
            old.map(Bson::Document),
            None,
        );
        kind
    }

    /// A catalog change: `sql` holds the command that would redo it, as Extended JSON
    /// text; `data` and `old` are null.
    pub fn ddl(&self, ddl: &Ddl, meta: Meta, out: &mut Vec<u8>) {
        let (db, table) = match ddl {
            Ddl::DropDatabase { db } => (db.as_str(), None),
            Ddl::Rename { from, .. } => (from.db.as_str(), Some(from.coll.as_str())),
            other => {
                let ns = other.namespaces()[0];
                (ns.db.as_str(), Some(ns.coll.as_str()))
            }
        };
        let sql = self.ejson(Bson::Document(command_of(ddl))).to_string();
        self.envelope(out, db, table, Kind::Ddl, meta, None, None, Some(&sql));
    }

    #[allow(clippy::too_many_arguments)]
    fn envelope(
        &self,
        out: &mut Vec<u8>,
        db: &str,
        table: Option<&str>,
        kind: Kind,
        meta: Meta,
        data: Option<Bson>,
        old: Option<Bson>,
        sql: Option<&str>,
    ) {
        out.extend_from_slice(b"{\"data\":");
        self.rows(out, data);
        out.extend_from_slice(b",\"database\":");
        json_str(out, db);
        out.extend_from_slice(format!(",\"es\":{},\"id\":{}", meta.es, meta.id).as_bytes());
        out.extend_from_slice(if kind == Kind::Ddl {
            b",\"isDdl\":true,\"mysqlType\":null,\"old\":"
        } else {
            b",\"isDdl\":false,\"mysqlType\":null,\"old\":"
        });
        self.rows(out, old);
        out.extend_from_slice(if kind == Kind::Ddl {
            b",\"pkNames\":null,\"sql\":"
        } else {
            b",\"pkNames\":[\"_id\"],\"sql\":"
        });
        match sql {
            Some(s) => json_str(out, s),
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"sqlType\":null,\"table\":");
        match table {
            Some(t) => json_str(out, t),
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(format!(",\"ts\":{},\"type\":\"", meta.ts).as_bytes());
        out.extend_from_slice(kind.canal().as_bytes());
        out.extend_from_slice(b"\",\"gtid\":null,\"serverId\":null}");
    }

    /// `null`, or a one-element array in the chosen shape.
    fn rows(&self, out: &mut Vec<u8>, row: Option<Bson>) {
        let Some(row) = row else {
            out.extend_from_slice(b"null");
            return;
        };
        let v = self.ejson(row);
        out.push(b'[');
        match self.shape {
            DataShape::Object => write_json(out, &v),
            DataShape::Doc => {
                out.extend_from_slice(b"{\"doc\":");
                json_str(out, &v.to_string());
                out.push(b'}');
            }
        }
        out.push(b']');
    }
}

/// An update's changed fields as MongoDB update operators: `$set` of new values by
/// dotted path, `$unset` of removed paths, and `$push` with `$each: []` and `$slice`
/// for arrays the change truncated (the one operator that expresses a resize). An
/// oplog `$v:2` diff is described the way mongod's change stream describes it.
pub fn delta(change: &Change) -> Document {
    let desc = match change {
        Change::Modifiers(m) => return m.clone(),
        Change::Description(d) => d.clone(),
        Change::Diff(o) => match crate::mongo::apply::diff_to_description(o) {
            Ok(d) => d,
            // A diff mongod would not write: passed on as it is rather than dropped.
            Err(_) => return doc! {"$diff": o.clone()},
        },
    };
    let mut out = Document::new();
    if let Ok(arrs) = desc.get_array("truncatedArrays")
        && !arrs.is_empty()
    {
        let mut push = Document::new();
        for a in arrs {
            if let Bson::Document(a) = a
                && let Ok(f) = a.get_str("field")
            {
                let size = a.get("newSize").cloned().unwrap_or(Bson::Int32(0));
                push.insert(f, doc! {"$each": [], "$slice": size});
            }
        }
        out.insert("$push", push);
    }
    if let Ok(set) = desc.get_document("updatedFields")
        && !set.is_empty()
    {
        out.insert("$set", set.clone());
    }
    if let Ok(gone) = desc.get_array("removedFields")
        && !gone.is_empty()
    {
        let mut unset = Document::new();
        for p in gone {
            if let Bson::String(p) = p {
                unset.insert(p, "");
            }
        }
        out.insert("$unset", unset);
    }
    out
}

/// The MongoDB command that would redo a DDL.
fn command_of(ddl: &Ddl) -> Document {
    match ddl {
        Ddl::Create { ns, options } => {
            let mut d = doc! {"create": &ns.coll};
            d.extend(options.clone());
            d
        }
        Ddl::Drop { ns } => doc! {"drop": &ns.coll},
        Ddl::DropDatabase { .. } => doc! {"dropDatabase": 1},
        Ddl::Rename {
            from,
            to,
            drop_target,
        } => doc! {
            "renameCollection": from.to_string(),
            "to": to.to_string(),
            "dropTarget": drop_target,
        },
        Ddl::CreateIndexes { ns, specs } => {
            doc! {"createIndexes": &ns.coll, "indexes": specs.clone()}
        }
        Ddl::DropIndexes { ns, names } => doc! {"dropIndexes": &ns.coll, "index": names.clone()},
        Ddl::CollMod { ns, changes } => {
            let mut d = doc! {"collMod": &ns.coll};
            d.extend(changes.clone());
            d
        }
        Ddl::ConvertToCapped { ns, size } => doc! {"convertToCapped": &ns.coll, "size": size},
    }
}

fn json_str(out: &mut Vec<u8>, s: &str) {
    // Serializing a str into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

fn write_json(out: &mut Vec<u8>, v: &serde_json::Value) {
    let _ = serde_json::to_writer(&mut *out, v);
}

/// The message key of a document: its `_id` as canonical Extended JSON, so equal ids of
/// one type always hash alike and ids of different types (1 and "1") never collide.
pub fn id_key(id: &Bson) -> Vec<u8> {
    serde_json::to_vec(&id.clone().into_canonical_extjson()).unwrap_or_default()
}

#[cfg(test)]
mod tests;
