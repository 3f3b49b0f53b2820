//! `tandem mongo verify`: namespaces, collection options, indexes, counts and every
//! document compared byte for byte. Differences are checked again over several
//! rounds, so documents still in flight on a live link are not reported.

use std::collections::BTreeMap;
use std::time::Duration;

use bson::{Bson, Document, RawDocumentBuf, doc};

use super::apply::ddl::{clean_index, clean_options};
use super::endpoint::MongoEndpoint;
use super::error::Result;
use super::ns::{Namespace, NsFilter};

pub struct VerifyConfig {
    pub filter: NsFilter,
    pub rounds: u32,
    pub round_delay: Duration,
    pub batch: usize,
}

/// One difference, as a JSON line.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Diff {
    pub ns: String,
    pub kind: &'static str,
    pub detail: String,
}

pub async fn verify(
    source: &MongoEndpoint,
    target: &MongoEndpoint,
    cfg: &VerifyConfig,
) -> Result<Vec<Diff>> {
    let src = catalog(source, &cfg.filter, true).await?;
    let dst = catalog(target, &cfg.filter, false).await?;
    let mut diffs = Vec::new();
    let mut pending: Vec<(Namespace, Namespace, Bson)> = Vec::new();
    for (dns, (sns, kind, opts)) in &src {
        let Some((_, dkind, dopts)) = dst.get(dns) else {
            diffs.push(Diff {
                ns: dns.to_string(),
                kind: "missing-namespace",
                detail: format!("{kind} {sns} is not on the target"),
            });
            continue;
        };
        if kind != dkind || opts != dopts {
            diffs.push(Diff {
                ns: dns.to_string(),
                kind: "options",
                detail: format!("source {kind} {opts}, target {dkind} {dopts}"),
            });
        }
        if kind == "view" {
            continue;
        }
        diffs.extend(compare_indexes(source, target, sns, dns).await?);
        let (missing, extra) = compare_docs(source, target, sns, dns, cfg.batch).await?;
        pending.extend(
            missing
                .into_iter()
                .chain(extra)
                .map(|id| (sns.clone(), dns.clone(), id)),
        );
    }
    for dns in dst
        .keys()
        .filter(|n| !src.contains_key(*n) && cfg.filter.accepts(n))
    {
        diffs.push(Diff {
            ns: dns.to_string(),
            kind: "extra-namespace",
            detail: "on the target only".into(),
        });
    }
    // Later rounds look only at what differed, after giving a live link time.
    for _ in 1..cfg.rounds.max(1) {
        if pending.is_empty() {
            break;
        }
        tokio::time::sleep(cfg.round_delay).await;
        let mut still = Vec::new();
        for (sns, dns, id) in pending {
            if recheck(source, target, &sns, &dns, &id).await?.is_some() {
                still.push((sns, dns, id));
            }
        }
        pending = still;
    }
    for (sns, dns, id) in pending {
        if let Some(what) = recheck(source, target, &sns, &dns, &id).await? {
            diffs.push(Diff {
                ns: dns.to_string(),
                kind: what,
                detail: format!("_id {id}"),
            });
        }
    }
    Ok(diffs)
}

type Catalog = BTreeMap<Namespace, (Namespace, String, Document)>;

/// Replicated namespaces keyed by where they land on the target.
async fn catalog(ep: &MongoEndpoint, filter: &NsFilter, is_source: bool) -> Result<Catalog> {
    let mut out = BTreeMap::new();
    let dbs = ep
        .client
        .list_database_names()
        .await
        .map_err(|e| ep.err("listDatabases", &e))?;
    for db in dbs
        .iter()
        .filter(|d| !crate::mongo::ns::SYSTEM_DBS.contains(&d.as_str()))
    {
        for d in ep.collections(db, None).await? {
            let ns = Namespace::new(db, d.get_str("name").unwrap_or_default());
            if ns.coll.starts_with("system.") {
                continue;
            }
            let key = if is_source {
                if !filter.accepts(&ns) {
                    continue;
                }
                filter.map(&ns)
            } else {
                ns.clone()
            };
            let mut opts = clean_options(&d.get_document("options").cloned().unwrap_or_default());
            if is_source && let Ok(on) = opts.get_str("viewOn") {
                let on = filter.map(&Namespace::new(db, on)).coll;
                opts.insert("viewOn", on);
            }
            out.insert(
                key,
                (
                    ns,
                    d.get_str("type").unwrap_or("collection").to_string(),
                    opts,
                ),
            );
        }
    }
    Ok(out)
}

async fn indexes(ep: &MongoEndpoint, ns: &Namespace) -> Result<BTreeMap<String, Document>> {
    Ok(ep
        .indexes(ns)
        .await?
        .iter()
        .map(|d| {
            (
                d.get_str("name").unwrap_or_default().to_string(),
                clean_index(d),
            )
        })
        .collect())
}

async fn compare_indexes(
    source: &MongoEndpoint,
    target: &MongoEndpoint,
    sns: &Namespace,
    dns: &Namespace,
) -> Result<Vec<Diff>> {
    let (a, b) = (indexes(source, sns).await?, indexes(target, dns).await?);
    let mut out = Vec::new();
    for (name, spec) in &a {
        match b.get(name) {
            None => out.push(Diff {
                ns: dns.to_string(),
                kind: "missing-index",
                detail: format!("{name}: {spec}"),
            }),
            Some(t) if t != spec => out.push(Diff {
                ns: dns.to_string(),
                kind: "index",
                detail: format!("{name}: source {spec}, target {t}"),
            }),
            _ => {}
        }
    }
    for name in b.keys().filter(|n| !a.contains_key(*n)) {
        out.push(Diff {
            ns: dns.to_string(),
            kind: "extra-index",
            detail: name.clone(),
        });
    }
    Ok(out)
}

/// Every source document looked up on the target (differing or missing `_id`s), then
/// every target `_id` looked up on the source (extra ones).
async fn compare_docs(
    source: &MongoEndpoint,
    target: &MongoEndpoint,
    sns: &Namespace,
    dns: &Namespace,
    batch: usize,
) -> Result<(Vec<Bson>, Vec<Bson>)> {
    let (s, t) = (raw_coll(source, sns), raw_coll(target, dns));
    let mut differ = Vec::new();
    let mut cur = s
        .find(doc! {})
        .batch_size(batch as u32)
        .await
        .map_err(|e| source.err(format!("reading {sns}"), &e))?;
    let mut chunk: Vec<RawDocumentBuf> = Vec::with_capacity(batch);
    loop {
        let more = cur
            .advance()
            .await
            .map_err(|e| source.err(format!("reading {sns}"), &e))?;
        if more {
            chunk.push(cur.current().to_raw_document_buf());
        }
        if chunk.len() >= batch || (!more && !chunk.is_empty()) {
            let ids: Vec<Bson> = chunk.iter().filter_map(|d| raw_id(d)).collect();
            let found = lookup(target, &t, dns, &ids).await?;
            for d in chunk.drain(..) {
                let id = raw_id(&d).unwrap_or(Bson::Null);
                match found.get(&key(&id)) {
                    Some(other) if other.as_bytes() == d.as_bytes() => {}
                    _ => differ.push(id),
                }
            }
        }
        if !more {
            break;
        }
    }
    let mut extra = Vec::new();
    let mut cur = t
        .find(doc! {})
        .projection(doc! {"_id": 1})
        .batch_size(batch as u32)
        .await
        .map_err(|e| target.err(format!("reading {dns}"), &e))?;
    let mut ids = Vec::new();
    loop {
        let more = cur
            .advance()
            .await
            .map_err(|e| target.err(format!("reading {dns}"), &e))?;
        if more && let Some(id) = raw_id(cur.current()) {
            ids.push(id);
        }
        if ids.len() >= batch || (!more && !ids.is_empty()) {
            let found = lookup(source, &s, sns, &ids).await?;
            extra.extend(ids.drain(..).filter(|id| !found.contains_key(&key(id))));
        }
        if !more {
            break;
        }
    }
    Ok((differ, extra))
}

fn raw_coll(ep: &MongoEndpoint, ns: &Namespace) -> mongodb::Collection<RawDocumentBuf> {
    ep.client.database(&ns.db).collection(&ns.coll)
}

/// A raw document's `_id`, decoded.
fn raw_id(d: &bson::RawDocument) -> Option<Bson> {
    d.get("_id")
        .ok()
        .flatten()
        .and_then(|v| v.to_raw_bson().try_into().ok())
}

fn key(id: &Bson) -> Vec<u8> {
    bson::to_vec(&doc! {"_id": id.clone()}).unwrap_or_default()
}

async fn lookup(
    ep: &MongoEndpoint,
    c: &mongodb::Collection<RawDocumentBuf>,
    ns: &Namespace,
    ids: &[Bson],
) -> Result<BTreeMap<Vec<u8>, RawDocumentBuf>> {
    let mut out = BTreeMap::new();
    let mut cur = c
        .find(doc! {"_id": {"$in": ids.to_vec()}})
        .await
        .map_err(|e| ep.err(format!("reading {ns}"), &e))?;
    while cur
        .advance()
        .await
        .map_err(|e| ep.err(format!("reading {ns}"), &e))?
    {
        let d = cur.current().to_raw_document_buf();
        let id = raw_id(&d).unwrap_or(Bson::Null);
        out.insert(key(&id), d);
    }
    Ok(out)
}

/// What is different about one document now, if anything.
async fn recheck(
    source: &MongoEndpoint,
    target: &MongoEndpoint,
    sns: &Namespace,
    dns: &Namespace,
    id: &Bson,
) -> Result<Option<&'static str>> {
    let (s, t) = (raw_coll(source, sns), raw_coll(target, dns));
    let a = s
        .find_one(doc! {"_id": id.clone()})
        .await
        .map_err(|e| source.err(format!("reading {sns}"), &e))?;
    let b = t
        .find_one(doc! {"_id": id.clone()})
        .await
        .map_err(|e| target.err(format!("reading {dns}"), &e))?;
    Ok(match (a, b) {
        (Some(a), Some(b)) if a.as_bytes() == b.as_bytes() => None,
        (Some(_), Some(_)) => Some("document-differs"),
        (Some(_), None) => Some("missing-document"),
        (None, Some(_)) => Some("extra-document"),
        (None, None) => None,
    })
}
