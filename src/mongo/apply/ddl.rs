//! Catalog changes on the target. Each runs alone, between the batches before and
//! after it, and is followed by a checkpoint; a crash between the two re-applies it,
//! so every command here tolerates finding its work done (the errors mongod's own
//! oplog application ignores on re-apply).

use bson::{Bson, Document, doc};

use crate::mongo::checkpoint::DDL_TAGS;
use crate::mongo::endpoint::MongoEndpoint;
use crate::mongo::error::{MongoError, Result, driver_code};
use crate::mongo::event::Ddl;
use crate::mongo::ns::TANDEM_DB;

const NAMESPACE_NOT_FOUND: i32 = 26;
const INDEX_NOT_FOUND: i32 = 27;
const NAMESPACE_EXISTS: i32 = 48;

pub async fn apply(target: &MongoEndpoint, ddl: &Ddl) -> Result<()> {
    let (db, cmd, ignore): (&str, Document, &[i32]) = match ddl {
        Ddl::Create { ns, options } => {
            let mut c = doc! {"create": &ns.coll};
            c.extend(clean_options(options));
            (&ns.db, c, &[NAMESPACE_EXISTS])
        }
        Ddl::Drop { ns } => (&ns.db, doc! {"drop": &ns.coll}, &[NAMESPACE_NOT_FOUND]),
        Ddl::DropDatabase { db } => (db, doc! {"dropDatabase": 1}, &[]),
        Ddl::Rename {
            from,
            to,
            drop_target,
        } => (
            "admin",
            doc! {"renameCollection": from.to_string(), "to": to.to_string(), "dropTarget": *drop_target},
            &[NAMESPACE_NOT_FOUND],
        ),
        Ddl::CreateIndexes { ns, specs } => {
            let specs: Vec<Bson> = specs
                .iter()
                .map(|s| Bson::Document(clean_index(s)))
                .collect();
            (
                &ns.db,
                doc! {"createIndexes": &ns.coll, "indexes": specs},
                &[],
            )
        }
        Ddl::DropIndexes { ns, names } => {
            for name in names {
                run(
                    target,
                    &ns.db,
                    doc! {"dropIndexes": &ns.coll, "index": name},
                    &[NAMESPACE_NOT_FOUND, INDEX_NOT_FOUND],
                    ddl,
                )
                .await?;
            }
            return Ok(());
        }
        Ddl::CollMod { ns, changes } => {
            let mut c = doc! {"collMod": &ns.coll};
            c.extend(changes.clone());
            (&ns.db, c, &[NAMESPACE_NOT_FOUND])
        }
        Ddl::ConvertToCapped { ns, size } => (
            &ns.db,
            doc! {"convertToCapped": &ns.coll, "size": *size},
            &[NAMESPACE_NOT_FOUND],
        ),
    };
    run(target, db, cmd, ignore, ddl).await
}

/// Two-way: says in `__tandem.ddl` which DDL link `link` applies next, so the target's
/// own link drops that DDL when its stream shows it (`twoway::judge`). Written before
/// the DDL: in the stream the announcement comes first.
pub async fn announce(target: &MongoEndpoint, link: &str, ddl: &Ddl) -> Result<()> {
    target
        .client
        .database(TANDEM_DB)
        .collection::<Document>(DDL_TAGS)
        .replace_one(
            doc! {"_id": link},
            doc! {"_id": link, "key": ddl.echo_key()},
        )
        .upsert(true)
        .await
        .map(|_| ())
        .map_err(|e| {
            target.err(
                format!("announcing {} in {TANDEM_DB}.{DDL_TAGS}", ddl.kind()),
                &e,
            )
        })
}

async fn run(
    target: &MongoEndpoint,
    db: &str,
    cmd: Document,
    ignore: &[i32],
    ddl: &Ddl,
) -> Result<()> {
    match target.client.database(db).run_command(cmd).await {
        Ok(_) => Ok(()),
        Err(e) if driver_code(&e).is_some_and(|c| ignore.contains(&c)) => Ok(()),
        Err(e) => {
            let what = ddl
                .namespaces()
                .first()
                .map(|n| n.to_string())
                .unwrap_or_else(|| db.to_string());
            Err(MongoError::from_driver(
                format!("{}: {} of {what}", target.name(), ddl.kind()),
                &e,
            ))
        }
    }
}

/// Collection options as `create` takes them (listCollections adds read-only fields).
pub fn clean_options(o: &Document) -> Document {
    o.iter()
        .filter(|(k, _)| !matches!(k.as_str(), "uuid" | "idIndex" | "create"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// An index spec as `createIndexes` takes it: without the old `ns` field.
pub fn clean_index(s: &Document) -> Document {
    s.iter()
        .filter(|(k, _)| !matches!(k.as_str(), "ns"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}
