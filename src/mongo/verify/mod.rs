//! `tandem mongo verify`: namespaces, collection options, indexes, counts and every
//! document compared byte for byte (`docs.rs`: by `_id` range partitions, hashes
//! first where the servers can). Differences are checked again over several
//! rounds, so documents still in flight on a live link are not reported.

mod docs;

use std::collections::BTreeMap;
use std::time::Duration;

use bson::{Bson, Document, RawDocumentBuf, doc};

use docs::DocsConfig;

use super::apply::ddl::{clean_index, clean_options};
use super::endpoint::MongoEndpoint;
use super::error::Result;
use super::ns::{Namespace, NsFilter};

pub struct VerifyConfig {
    pub filter: NsFilter,
    pub rounds: u32,
    pub round_delay: Duration,
    pub batch: usize,
    /// About this many documents per compared partition.
    pub partition_docs: u64,
    /// Partitions compared at once.
    pub parallel: usize,
    /// Compare partitions by hash first where both servers can.
    pub hash: bool,
}

/// What a verification found, and how much it read to find it.
#[derive(Debug, Default)]
pub struct Report {
    pub diffs: Vec<Diff>,
    pub partitions: u64,
    /// Partitions found equal by their hash, their documents not read.
    pub hashed_equal: u64,
    /// Source documents read and compared.
    pub read: u64,
    /// Both servers hashed partitions.
    pub hashed: bool,
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
) -> Result<Report> {
    let src = catalog(source, &cfg.filter, true).await?;
    let dst = catalog(target, &cfg.filter, false).await?;
    let hashed = cfg.hash && docs::can_hash(source).await && docs::can_hash(target).await;
    let mut report = Report {
        hashed,
        ..Report::default()
    };
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
        let dcfg = DocsConfig {
            // A time-series collection is one range: its documents have no `_id` index.
            partition_docs: if kind == "timeseries" {
                u64::MAX
            } else {
                cfg.partition_docs
            },
            parallel: cfg.parallel,
            hash: hashed,
            batch: cfg.batch,
        };
        let got = docs::compare(source, target, sns, dns, dcfg).await?;
        report.partitions += got.partitions;
        report.hashed_equal += got.hashed_equal;
        report.read += got.read;
        pending.extend(
            got.differ
                .into_iter()
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
    report.diffs = diffs;
    Ok(report)
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
fn raw_coll(ep: &MongoEndpoint, ns: &Namespace) -> mongodb::Collection<RawDocumentBuf> {
    ep.client.database(&ns.db).collection(&ns.coll)
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
