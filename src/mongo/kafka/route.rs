//! Which topic and partition a message goes to, and its key.
//!
//! Keyed by `_id` (default), every change of one document lands in one partition, in
//! source order. A DDL written in line goes to every partition of its topic, so each
//! partition's reader meets it between the changes before and after it; with
//! `--ddl-topic` it is one message there instead.

use bson::Bson;

use super::canal::id_key;
use crate::mongo::ns::{Namespace, NsPattern};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum PartitionBy {
    /// Key `_id` (canonical Extended JSON): one document's changes in one partition.
    Id,
    /// Key `db.coll`: one collection's changes in one partition.
    Ns,
    /// Everything to partition 0 (key `_id`, for compaction).
    None,
}

#[derive(Clone, Debug)]
pub struct Router {
    pub topic: String,
    /// `--topic-map NS:TOPIC`, first match wins.
    pub map: Vec<(NsPattern, String)>,
    pub ddl_topic: Option<String>,
    pub by: PartitionBy,
}

/// Where one message goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dest<'a> {
    pub topic: &'a str,
    pub partition: Option<i32>,
    pub key: Vec<u8>,
}

impl Router {
    /// Parses `NS:TOPIC` (Kafka topic names hold no `:`, namespaces may).
    pub fn parse_map(s: &str) -> Result<(NsPattern, String), String> {
        let (ns, topic) = s
            .rsplit_once(':')
            .filter(|(n, t)| !n.is_empty() && !t.is_empty())
            .ok_or_else(|| format!("--topic-map {s:?}: expected NS:TOPIC (db.coll or db.*)"))?;
        Ok((NsPattern::parse(ns)?, topic.to_string()))
    }

    /// Every topic tandem may write, for the start-up check.
    pub fn topics(&self) -> Vec<String> {
        let mut t: Vec<String> = std::iter::once(&self.topic)
            .chain(self.map.iter().map(|(_, t)| t))
            .chain(self.ddl_topic.iter())
            .cloned()
            .collect();
        t.sort();
        t.dedup();
        t
    }

    pub fn topic_of(&self, ns: &Namespace) -> &str {
        self.map
            .iter()
            .find(|(p, _)| p.matches(ns))
            .map_or(&self.topic, |(_, t)| t)
    }

    fn topic_of_db(&self, db: &str) -> &str {
        self.map
            .iter()
            .find(|(p, _)| p.matches_db(db))
            .map_or(&self.topic, |(_, t)| t)
    }

    pub fn doc(&self, ns: &Namespace, id: &Bson) -> Dest<'_> {
        let topic = self.topic_of(ns);
        match self.by {
            PartitionBy::Id => Dest {
                topic,
                partition: None,
                key: id_key(id),
            },
            PartitionBy::Ns => Dest {
                topic,
                partition: None,
                key: ns.to_string().into_bytes(),
            },
            PartitionBy::None => Dest {
                topic,
                partition: Some(0),
                key: id_key(id),
            },
        }
    }

    /// The copies of a DDL message: `ns` is the namespace it names (a database's for
    /// `dropDatabase`: `coll` empty); `partitions` counts a topic's partitions.
    pub fn ddl(&self, ns: &Namespace, partitions: impl Fn(&str) -> i32) -> Vec<Dest<'_>> {
        let key = if ns.coll.is_empty() {
            ns.db.clone().into_bytes()
        } else {
            ns.to_string().into_bytes()
        };
        if let Some(t) = &self.ddl_topic {
            return vec![Dest {
                topic: t,
                partition: None,
                key,
            }];
        }
        let topic = if ns.coll.is_empty() {
            self.topic_of_db(&ns.db)
        } else {
            self.topic_of(ns)
        };
        let n = if self.by == PartitionBy::None {
            1
        } else {
            partitions(topic).max(1)
        };
        (0..n)
            .map(|p| Dest {
                topic,
                partition: Some(p),
                key: key.clone(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router(by: PartitionBy, ddl: Option<&str>) -> Router {
        Router {
            topic: "all".into(),
            map: vec![Router::parse_map("shop.*:shop").unwrap()],
            ddl_topic: ddl.map(str::to_string),
            by,
        }
    }

    #[test]
    fn maps_namespaces_and_keys() {
        let r = router(PartitionBy::Id, None);
        let d = r.doc(&Namespace::new("shop", "o"), &Bson::Int32(7));
        assert_eq!(
            (d.topic, d.partition, d.key),
            ("shop", None, br#"{"$numberInt":"7"}"#.to_vec())
        );
        assert_eq!(r.doc(&Namespace::new("hr", "o"), &Bson::Null).topic, "all");
        let rn = router(PartitionBy::Ns, None);
        let n = rn.doc(&Namespace::new("hr", "p"), &Bson::Int32(1));
        assert_eq!(n.key, b"hr.p".to_vec());
        let rz = router(PartitionBy::None, None);
        let z = rz.doc(&Namespace::new("hr", "p"), &Bson::Int32(1));
        assert_eq!(z.partition, Some(0));
        assert_eq!(r.topics(), vec!["all".to_string(), "shop".to_string()]);
        assert!(Router::parse_map("nocolon").is_err());
        assert!(Router::parse_map(":t").is_err());
    }

    #[test]
    fn ddl_goes_to_every_partition_or_the_ddl_topic() {
        let r = router(PartitionBy::Id, None);
        let d = r.ddl(&Namespace::new("shop", "o"), |_| 3);
        assert_eq!(d.len(), 3);
        assert!(
            d.iter()
                .enumerate()
                .all(|(i, x)| x.partition == Some(i as i32))
        );
        let db = r.ddl(&Namespace::new("shop", ""), |_| 2);
        assert_eq!(
            (db.len(), db[0].topic, db[0].key.clone()),
            (2, "shop", b"shop".to_vec())
        );
        let rt = router(PartitionBy::Id, Some("ddl"));
        let t = rt.ddl(&Namespace::new("x", "y"), |_| 3);
        assert_eq!((t.len(), t[0].topic, t[0].partition), (1, "ddl", None));
        let r1 = router(PartitionBy::None, None);
        let one = r1.ddl(&Namespace::new("x", "y"), |_| 3);
        assert_eq!(one.len(), 1);
    }
}
