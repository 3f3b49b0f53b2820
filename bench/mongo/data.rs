//! The benchmark's data: N documents of about 200 bytes, and deterministic streams of
//! changes to them.

use mongodb::Namespace;
use mongodb::bson::{DateTime, Document, RawDocumentBuf, doc};
use mongodb::options::{
    DeleteOneModel, InsertOneModel, ReplaceOneModel, UpdateOneModel, WriteModel,
};

pub const DB: &str = "bench";
pub const DOCS: &str = "docs";
/// Marker documents go to their own collection, created before the copy.
pub const MARKERS: &str = "markers";

const TAGS: [&str; 5] = ["red", "green", "blue", "amber", "violet"];

pub fn docs_ns() -> Namespace {
    Namespace::new(DB, DOCS)
}

/// Document `id` at revision `rev`: an int `_id`, strings, numbers, a date, a small
/// sub-document and arrays — about 200 bytes of BSON.
pub fn document(id: i64, rev: i32) -> Document {
    doc! {
        "_id": id,
        "name": format!("user-{id:08}"),
        "email": format!("u{id:08}@ex.io"),
        "rev": rev,
        "n": (id % 1000) as i32,
        "score": (id % 10_000) as f64 * 0.37,
        "created": DateTime::from_millis(1_700_000_000_000 + id * 1000),
        "tags": [TAGS[(id % 5) as usize], TAGS[((id / 5) % 5) as usize]],
        "addr": {
            "city": format!("city-{:03}", id % 997),
            "geo": [(id % 180) as f64 - 90.0, (id % 360) as f64 - 180.0],
        },
    }
}

/// Documents 0..n as raw BSON, serialized before any timing starts.
pub fn documents(n: u64) -> Vec<RawDocumentBuf> {
    (0..n as i64)
        .map(|i| {
            RawDocumentBuf::from_document(&document(i, 0)).expect("a built document serializes")
        })
        .collect()
}

/// One change to the `docs` collection.
#[derive(Clone, Debug)]
pub enum Change {
    /// `$inc` a counter and `$set` a string.
    Update {
        id: i64,
        seq: u64,
    },
    Replace {
        id: i64,
        doc: Document,
    },
    Insert(Document),
    Delete(i64),
}

/// The changes' shape: secantus writes `$`-operator updates to its oplog in a
/// non-mongod format, so oplog-mode runs replace whole documents instead.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Mix {
    /// 50% `$inc`/`$set` updates, 25% inserts, 25% deletes.
    Updates,
    /// 50% replacements, 25% inserts, 25% deletes.
    Replaces,
}

/// Which documents exist: `[next_delete, n)` of the loaded ones (deletes go upwards
/// from 0), plus the inserted ones from `n` on. Updates hit loaded documents that are
/// still there, picked by a fixed-seed generator, so every run writes the same changes.
pub struct Plan {
    n: i64,
    next_insert: i64,
    next_delete: i64,
    seq: u64,
    rng: u64,
}

impl Plan {
    pub fn new(n: u64) -> Plan {
        Plan {
            n: n as i64,
            next_insert: n as i64,
            next_delete: 0,
            seq: 0,
            rng: 0x9E37_79B9_7F4A_7C15,
        }
    }

    /// How many deletes `count` more changes can hold before the loaded documents run
    /// out (a quarter of the changes delete one).
    pub fn room(&self, count: u64) -> bool {
        self.next_delete + (count as i64 + 3) / 4 < self.n
    }

    pub fn changes(&mut self, count: u64, mix: Mix) -> Vec<Change> {
        (0..count).map(|_| self.next(mix)).collect()
    }

    fn next(&mut self, mix: Mix) -> Change {
        self.seq += 1;
        match self.seq % 4 {
            0 => {
                let id = self.next_insert;
                self.next_insert += 1;
                Change::Insert(document(id, 0))
            }
            1 => {
                let id = self.next_delete;
                self.next_delete += 1;
                Change::Delete(id)
            }
            _ => {
                let id = self.live_loaded();
                match mix {
                    Mix::Updates => Change::Update { id, seq: self.seq },
                    Mix::Replaces => Change::Replace {
                        id,
                        doc: document(id, self.seq as i32),
                    },
                }
            }
        }
    }

    /// A loaded document not deleted yet (splitmix64).
    fn live_loaded(&mut self) -> i64 {
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        let live = (self.n - self.next_delete) as u64;
        self.next_delete + (z % live) as i64
    }
}

/// The change as a `bulkWrite` model on `docs`.
pub fn model(c: &Change) -> WriteModel {
    let ns = docs_ns();
    match c {
        Change::Update { id, seq } => UpdateOneModel::builder()
            .namespace(ns)
            .filter(doc! {"_id": id})
            .update(doc! {"$inc": {"n": 1}, "$set": {"name": format!("renamed-{seq}")}})
            .build()
            .into(),
        Change::Replace { id, doc } => ReplaceOneModel::builder()
            .namespace(ns)
            .filter(doc! {"_id": id})
            .replacement(doc.clone())
            .build()
            .into(),
        Change::Insert(d) => InsertOneModel::builder()
            .namespace(ns)
            .document(d.clone())
            .build()
            .into(),
        Change::Delete(id) => DeleteOneModel::builder()
            .namespace(ns)
            .filter(doc! {"_id": id})
            .build()
            .into(),
    }
}
