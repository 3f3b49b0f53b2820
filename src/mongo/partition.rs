//! `_id` ranges, for the copy and for verify: bounds chosen by `$bucketAuto`, read back
//! as index bounds (`min` / `max` on the `_id` index).
//!
//! Why not a query range: `{_id: {$gte: a, $lt: b}}` is type-bracketed. With `a` a
//! number and `b` a string it matches nothing, so a partition spanning two `_id` types
//! (which `$bucketAuto` makes, since it follows the BSON order across types) would be
//! read empty. Index bounds follow the same cross-type order as `$bucketAuto`.

use bson::{Bson, Document, doc};
use mongodb::Collection;
use mongodb::action::Find;
use mongodb::options::Hint;

use super::endpoint::MongoEndpoint;
use super::error::Result;
use super::ns::Namespace;

/// Bounds splitting `ns` into about `buckets` ranges of the source's `_id`s: the first
/// is `MinKey`, the last `MaxKey`, each range `[b[i], b[i+1])`.
pub async fn bounds(ep: &MongoEndpoint, ns: &Namespace, buckets: u64) -> Result<Vec<Bson>> {
    let mut bounds = vec![Bson::MinKey];
    if buckets > 1 {
        let c = ep.client.database(&ns.db).collection::<Document>(&ns.coll);
        let pipeline = vec![doc! {"$bucketAuto": {"groupBy": "$_id", "buckets": buckets as i32}}];
        let what = format!("partitioning {ns}");
        let mut cur = c.aggregate(pipeline).await.map_err(|e| ep.err(&what, &e))?;
        let mut mins = Vec::new();
        while cur.advance().await.map_err(|e| ep.err(&what, &e))? {
            let d: Document = cur.deserialize_current().map_err(|e| ep.err(&what, &e))?;
            if let Ok(id) = d.get_document("_id")
                && let Some(m) = id.get("min")
            {
                mins.push(m.clone());
            }
        }
        bounds.extend(mins.into_iter().skip(1));
    }
    bounds.push(Bson::MaxKey);
    Ok(bounds)
}

/// A `find` of the documents with `min <= _id < max` in BSON order (`MinKey` / `MaxKey`:
/// no bound on that side, so an `_id` of `MaxKey` itself is still read).
pub fn find_range<'a, T: Send + Sync>(
    c: &'a Collection<T>,
    filter: Document,
    min: &Bson,
    max: &Bson,
) -> Find<'a, T> {
    let mut f = c.find(filter);
    let lo = *min != Bson::MinKey;
    let hi = *max != Bson::MaxKey;
    if lo {
        f = f.min(doc! {"_id": min.clone()});
    }
    if hi {
        f = f.max(doc! {"_id": max.clone()});
    }
    if lo || hi {
        f = f.hint(Hint::Keys(doc! {"_id": 1}));
    }
    f
}
