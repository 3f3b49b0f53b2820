//! Namespaces (`db.collection`), which of them a link replicates, and where each lands
//! on the target.

use std::fmt;

/// Databases that are never copied: the server's own, and tandem's.
pub const SYSTEM_DBS: &[&str] = &["admin", "local", "config", TANDEM_DB];
/// tandem's database on a target: checkpoints and copy progress.
pub const TANDEM_DB: &str = "__tandem";

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Namespace {
    pub db: String,
    pub coll: String,
}

impl Namespace {
    pub fn new(db: impl Into<String>, coll: impl Into<String>) -> Self {
        Namespace {
            db: db.into(),
            coll: coll.into(),
        }
    }

    /// `db.coll` (the collection name may itself hold dots).
    pub fn parse(s: &str) -> Option<Namespace> {
        let (db, coll) = s.split_once('.')?;
        (!db.is_empty() && !coll.is_empty()).then(|| Namespace::new(db, coll))
    }
}

impl fmt::Display for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.db, self.coll)
    }
}

/// `db.coll` where either part may hold `*` wildcards (`shop.*`, `*.orders`, `a*.b`).
/// A pattern without a dot names a whole database.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NsPattern {
    db: String,
    coll: String,
}

impl NsPattern {
    pub fn parse(s: &str) -> Result<NsPattern, String> {
        let (db, coll) = s.split_once('.').unwrap_or((s, "*"));
        if db.is_empty() || coll.is_empty() {
            return Err(format!(
                "namespace pattern {s:?}: expected db.collection (with * wildcards)"
            ));
        }
        Ok(NsPattern {
            db: db.into(),
            coll: coll.into(),
        })
    }

    pub fn matches(&self, ns: &Namespace) -> bool {
        glob(&self.db, &ns.db) && glob(&self.coll, &ns.coll)
    }

    pub fn matches_db(&self, db: &str) -> bool {
        glob(&self.db, db)
    }
}

/// `*` matches any run of characters, everything else itself.
fn glob(pat: &str, s: &str) -> bool {
    let (p, s) = (pat.as_bytes(), s.as_bytes());
    let (mut pi, mut si, mut star, mut mark) = (0, 0, None, 0);
    while si < s.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some(pi);
            mark = si;
            pi += 1;
        } else if pi < p.len() && p[pi] == s[si] {
            pi += 1;
            si += 1;
        } else if let Some(st) = star {
            pi = st + 1;
            mark += 1;
            si = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// One `--ns-map FROM:TO`: a collection to a collection, or a database to a database
/// (`shop.*:shop2.*`, or `shop:shop2`).
#[derive(Clone, Debug, PartialEq, Eq)]
enum NsMap {
    Coll(Namespace, Namespace),
    Db(String, String),
}

/// Which namespaces a link replicates and where they land.
#[derive(Clone, Debug, Default)]
pub struct NsFilter {
    include: Vec<NsPattern>,
    exclude: Vec<NsPattern>,
    maps: Vec<NsMap>,
}

impl NsFilter {
    pub fn new(
        include: &[String],
        exclude: &[String],
        maps: &[String],
    ) -> Result<NsFilter, String> {
        let pats = |v: &[String]| {
            v.iter()
                .map(|s| NsPattern::parse(s))
                .collect::<Result<Vec<_>, _>>()
        };
        let mut out = NsFilter {
            include: pats(include)?,
            exclude: pats(exclude)?,
            maps: Vec::new(),
        };
        for m in maps {
            let bad = || format!("--ns-map {m:?}: expected FROM:TO (db.coll:db.coll or db.*:db.*)");
            let (from, to) = m.split_once(':').ok_or_else(bad)?;
            let db_of = |s: &str| {
                s.strip_suffix(".*")
                    .map(str::to_string)
                    .or_else(|| (!s.contains('.')).then(|| s.to_string()))
            };
            let map = match (db_of(from), db_of(to)) {
                (Some(a), Some(b))
                    if !a.is_empty() && !b.is_empty() && !a.contains('*') && !b.contains('*') =>
                {
                    NsMap::Db(a, b)
                }
                (None, None) => {
                    let a = Namespace::parse(from).ok_or_else(bad)?;
                    let b = Namespace::parse(to).ok_or_else(bad)?;
                    if from.contains('*') || to.contains('*') {
                        return Err(bad());
                    }
                    NsMap::Coll(a, b)
                }
                _ => return Err(bad()),
            };
            if SYSTEM_DBS.contains(&map_target_db(&map)) {
                return Err(format!(
                    "--ns-map {m:?}: cannot write into a system database"
                ));
            }
            out.maps.push(map);
        }
        Ok(out)
    }

    /// Whether the link replicates `ns`. System databases and `system.*` collections
    /// never are.
    pub fn accepts(&self, ns: &Namespace) -> bool {
        if !self.accepts_db(&ns.db) || ns.coll.starts_with("system.") {
            return false;
        }
        (self.include.is_empty() || self.include.iter().any(|p| p.matches(ns)))
            && !self.exclude.iter().any(|p| p.matches(ns))
    }

    /// Whether any collection of `db` may be replicated (for database-wide DDL).
    pub fn accepts_db(&self, db: &str) -> bool {
        !SYSTEM_DBS.contains(&db)
            && (self.include.is_empty() || self.include.iter().any(|p| p.matches_db(db)))
    }

    /// Whether the whole database is replicated (a `dropDatabase` may be applied as is).
    pub fn accepts_whole_db(&self, db: &str) -> bool {
        self.accepts_db(db)
            && self
                .include
                .iter()
                .all(|p| p.matches_db(db) && p.coll == "*")
            && !self.exclude.iter().any(|p| p.matches_db(db))
    }

    /// Where `ns` lands on the target.
    pub fn map(&self, ns: &Namespace) -> Namespace {
        for m in &self.maps {
            match m {
                NsMap::Coll(a, b) if a == ns => return b.clone(),
                NsMap::Db(a, b) if *a == ns.db => return Namespace::new(b, &ns.coll),
                _ => {}
            }
        }
        ns.clone()
    }

    pub fn map_db(&self, db: &str) -> String {
        for m in &self.maps {
            if let NsMap::Db(a, b) = m
                && a == db
            {
                return b.clone();
            }
        }
        db.to_string()
    }
}

fn map_target_db(m: &NsMap) -> &str {
    match m {
        NsMap::Coll(_, b) => &b.db,
        NsMap::Db(_, b) => b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ns(s: &str) -> Namespace {
        Namespace::parse(s).unwrap()
    }

    #[test]
    fn patterns_and_system_namespaces() {
        let f = NsFilter::new(
            &["shop.*".into(), "*.audit".into()],
            &["shop.tmp*".into()],
            &[],
        )
        .unwrap();
        assert!(f.accepts(&ns("shop.orders")));
        assert!(f.accepts(&ns("hr.audit")));
        assert!(!f.accepts(&ns("hr.people")));
        assert!(!f.accepts(&ns("shop.tmp1")));
        assert!(!f.accepts(&ns("shop.system.views")));
        let all = NsFilter::default();
        for s in [
            "admin.x",
            "local.oplog.rs",
            "config.system.sessions",
            "__tandem.checkpoints",
        ] {
            assert!(!all.accepts(&ns(s)), "{s}");
        }
        assert!(all.accepts(&ns("a.b.c")));
        assert_eq!(ns("a.b.c").coll, "b.c");
        assert!(glob("a*b*c", "axxbyyc") && !glob("a*b", "ab c") && glob("*", ""));
    }

    #[test]
    fn maps_collections_and_databases() {
        let f = NsFilter::new(
            &[],
            &[],
            &[
                "shop.orders:sales.orders2".into(),
                "hr.*:hr2.*".into(),
                "x:y".into(),
            ],
        )
        .unwrap();
        assert_eq!(f.map(&ns("shop.orders")), ns("sales.orders2"));
        assert_eq!(f.map(&ns("shop.items")), ns("shop.items"));
        assert_eq!(f.map(&ns("hr.people")), ns("hr2.people"));
        assert_eq!(f.map(&ns("x.z")), ns("y.z"));
        assert_eq!(f.map_db("hr"), "hr2");
        for bad in ["a.b", "a.*:b.c", "a.b:admin.c", "a*:b*"] {
            assert!(NsFilter::new(&[], &[], &[bad.into()]).is_err(), "{bad}");
        }
    }
}
