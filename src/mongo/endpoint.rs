//! MongoDB endpoints: a standard connection string, shown everywhere as its host list
//! only, so a password can never reach a log line, an error or `/status`.

use mongodb::Client;
use mongodb::options::ClientOptions;

use super::error::{MongoError, Result};

#[derive(Clone)]
pub struct MongoEndpoint {
    /// `host:port[,host:port…]`, never the user or password.
    display: String,
    pub client: Client,
}

impl std::fmt::Debug for MongoEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MongoEndpoint({})", self.display)
    }
}

impl std::fmt::Display for MongoEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.display)
    }
}

impl MongoEndpoint {
    /// Parses `uri` (for the option named `flag`) and builds a client. Nothing is
    /// contacted yet; the first command finds out whether the server answers.
    pub async fn connect(flag: &str, uri: &str) -> Result<MongoEndpoint> {
        let secret = password_of(uri);
        let scrub = |s: String| match &secret {
            Some(p) if !p.is_empty() => s.replace(p.as_str(), "***"),
            _ => s,
        };
        if !(uri.starts_with("mongodb://") || uri.starts_with("mongodb+srv://")) {
            return Err(MongoError::fatal(
                flag,
                "expected a MongoDB connection string (mongodb://… or mongodb+srv://…)",
            ));
        }
        let opts = ClientOptions::parse(uri).await.map_err(|e| {
            MongoError::fatal(flag, scrub(format!("invalid connection string: {e}")))
        })?;
        Self::from_options(flag, opts).map_err(|mut e| {
            e.message = scrub(e.message);
            e
        })
    }

    /// A client of parsed options (a shard reached with its mongos's credentials).
    pub fn from_options(flag: &str, mut opts: ClientOptions) -> Result<MongoEndpoint> {
        let display = opts
            .hosts
            .iter()
            .map(|h| h.to_string())
            .collect::<Vec<_>>()
            .join(",");
        opts.app_name.get_or_insert_with(|| "tandem".into());
        opts.server_selection_timeout
            .get_or_insert(std::time::Duration::from_secs(10));
        opts.connect_timeout
            .get_or_insert(std::time::Duration::from_secs(10));
        let client = Client::with_options(opts)
            .map_err(|e| MongoError::fatal(flag, format!("cannot build a client: {e}")))?;
        Ok(MongoEndpoint { display, client })
    }

    /// `mongodb://host:port` for `display`, for contexts in error messages.
    pub fn name(&self) -> String {
        format!("mongodb://{}", self.display)
    }

    pub fn addr(&self) -> &str {
        &self.display
    }

    /// A driver error of an operation on this endpoint (`what` says which).
    pub fn err(&self, what: impl std::fmt::Display, e: &mongodb::error::Error) -> MongoError {
        MongoError::from_driver(format!("{}: {what}", self.name()), e)
    }

    /// The server's `hello` reply.
    pub async fn hello(&self) -> Result<bson::Document> {
        self.client
            .database("admin")
            .run_command(bson::doc! {"hello": 1})
            .await
            .map_err(|e| self.err("hello", &e))
    }

    /// `listCollections` of `db` as the server returns it (name, type, options, info).
    pub async fn collections(
        &self,
        db: &str,
        filter: Option<bson::Document>,
    ) -> Result<Vec<bson::Document>> {
        let what = format!("listCollections of {db}");
        let mut cmd = bson::doc! {"listCollections": 1};
        if let Some(f) = filter {
            cmd.insert("filter", f);
        }
        let mut out = Vec::new();
        let reply = self
            .client
            .database(db)
            .run_command(cmd)
            .await
            .map_err(|e| self.err(&what, &e))?;
        let cursor = reply
            .get_document("cursor")
            .map_err(|_| MongoError::fatal(self.name(), format!("{what}: no cursor")))?;
        let mut batch = cursor.get_array("firstBatch").cloned().unwrap_or_default();
        let mut id = cursor.get_i64("id").unwrap_or(0);
        for _ in 0..100_000 {
            out.extend(batch.drain(..).filter_map(|b| match b {
                bson::Bson::Document(d) => Some(d),
                _ => None,
            }));
            if id == 0 {
                break;
            }
            let more = self
                .client
                .database(db)
                .run_command(bson::doc! {"getMore": id, "collection": "$cmd.listCollections"})
                .await
                .map_err(|e| self.err(&what, &e))?;
            let c = more
                .get_document("cursor")
                .map_err(|_| MongoError::fatal(self.name(), format!("{what}: no cursor")))?;
            batch = c.get_array("nextBatch").cloned().unwrap_or_default();
            id = c.get_i64("id").unwrap_or(0);
        }
        Ok(out)
    }

    /// `listIndexes` of a collection (empty when it does not exist).
    pub async fn indexes(&self, ns: &crate::mongo::ns::Namespace) -> Result<Vec<bson::Document>> {
        let coll = self
            .client
            .database(&ns.db)
            .collection::<bson::Document>(&ns.coll);
        let mut out = Vec::new();
        let what = format!("listIndexes of {ns}");
        let mut cur = match coll.list_indexes().await {
            Ok(c) => c,
            Err(e) if crate::mongo::error::driver_code(&e) == Some(26) => return Ok(out),
            Err(e) => return Err(self.err(&what, &e)),
        };
        while cur.advance().await.map_err(|e| self.err(&what, &e))? {
            let d = bson::Document::try_from(cur.current())
                .map_err(|e| MongoError::fatal(self.name(), format!("{what}: {e}")))?;
            out.push(d);
        }
        Ok(out)
    }
}

/// The password in a connection string's user info, percent-encoded or not, to scrub
/// it from any message the driver builds.
fn password_of(uri: &str) -> Option<String> {
    let rest = uri.split_once("://")?.1;
    let auth = rest.split(['/', '?']).next()?;
    let (userinfo, _) = auth.rsplit_once('@')?;
    let (_, pass) = userinfo.split_once(':')?;
    Some(pass.to_string())
}

/// Retries of a transaction of tandem's own outside a link's batches (two-way's tagged
/// copy batches and resolutions): each attempt a new session and transaction (snapshot
/// reads, majority writes), again after a retryable error, up to 10 times.
///
/// ```ignore
/// let mut tx = ep.retrying("what it does");
/// loop {
///     let mut s = tx.begin().await?;
///     let r = async { /* writes in &mut s */ s.commit_transaction().await }.await;
///     if tx.ended(&mut s, r).await? { break; }
/// }
/// ```
pub struct Retrying<'a> {
    ep: &'a MongoEndpoint,
    what: &'a str,
    attempt: u64,
}

impl MongoEndpoint {
    pub fn retrying<'a>(&'a self, what: &'a str) -> Retrying<'a> {
        Retrying {
            ep: self,
            what,
            attempt: 0,
        }
    }
}

impl Retrying<'_> {
    /// A session with its transaction started.
    pub async fn begin(&mut self) -> Result<mongodb::ClientSession> {
        use mongodb::options::{ReadConcern, TransactionOptions, WriteConcern};
        self.attempt += 1;
        let mut s = self
            .ep
            .client
            .start_session()
            .await
            .map_err(|e| self.ep.err("starting a session", &e))?;
        let opts = TransactionOptions::builder()
            .read_concern(ReadConcern::snapshot())
            .write_concern(WriteConcern::majority())
            .build();
        s.start_transaction()
            .with_options(opts)
            .await
            .map_err(|e| self.ep.err("starting a transaction", &e))?;
        Ok(s)
    }

    /// An attempt's outcome: `true` committed, `false` to try again (aborted, after a
    /// pause), an error when it is fatal or the attempts are spent.
    pub async fn ended(
        &mut self,
        s: &mut mongodb::ClientSession,
        r: mongodb::error::Result<()>,
    ) -> Result<bool> {
        let Err(e) = r else {
            return Ok(true);
        };
        let _ = s.abort_transaction().await;
        let err = self.ep.err(self.what, &e);
        if !err.is_retryable() || self.attempt >= 10 {
            return Err(err);
        }
        tokio::time::sleep(std::time::Duration::from_millis(50 * self.attempt)).await;
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_password_to_scrub() {
        assert_eq!(
            password_of("mongodb://u:p%40ss@h1:1,h2:2/db?replicaSet=x").as_deref(),
            Some("p%40ss")
        );
        assert_eq!(password_of("mongodb://h:1/?x=y@z"), None);
        assert_eq!(password_of("mongodb://user@h:1"), None);
    }

    #[tokio::test]
    async fn display_and_errors_never_show_the_password() {
        let ep = MongoEndpoint::connect(
            "--source",
            "mongodb://al:s3cr3t@127.0.0.1:1,127.0.0.1:2/?replicaSet=rs",
        )
        .await
        .unwrap();
        assert_eq!(ep.to_string(), "127.0.0.1:1,127.0.0.1:2");
        let err = MongoEndpoint::connect("--source", "mongodb://al:s3cr3t@h:notaport")
            .await
            .unwrap_err();
        assert!(!err.to_string().contains("s3cr3t"), "{err}");
        assert!(err.to_string().starts_with("--source: "), "{err}");
        let err = MongoEndpoint::connect("--target", "redis://h:1")
            .await
            .unwrap_err();
        assert!(err.to_string().contains("mongodb://"), "{err}");
    }
}
