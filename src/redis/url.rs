//! Endpoint URLs: `redis://[user:pass@]host:port[/db]`, `rediss://` for TLS.
//!
//! TLS settings ride on the URL's query, so source and target (and each side of a
//! two-way pair) carry their own: `rediss://host:port?cacert=ca.pem&cert=c.pem&key=k.pem`
//! (`sni=NAME` for another server name, `insecure=true` to skip verification). Without
//! `cacert` the system's trust store is used.
//!
//! The password is kept out of every `Display` and `Debug` so that no log line, error or
//! metric label can carry it.

use std::fmt;
use std::path::PathBuf;

#[derive(Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    pub user: Option<String>,
    pub password: Option<String>,
    pub db: u32,
    pub tls: bool,
    /// Only meaningful with `tls`.
    pub tls_opts: TlsOpts,
}

/// TLS settings from a `rediss://` URL's query.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsOpts {
    /// PEM file of the certificates that sign the server's; the system store otherwise.
    pub ca: Option<PathBuf>,
    /// PEM client certificate chain and key, for servers that check clients
    /// (`tls-auth-clients yes`, Redis's default).
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// Server name to send and verify instead of the URL's host.
    pub sni: Option<String>,
    /// Accept any server certificate (tests, throwaway setups).
    pub insecure: bool,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid endpoint URL {shown}: {reason}")]
pub struct BadUrl {
    /// The URL with any password replaced, safe to print.
    pub shown: String,
    pub reason: &'static str,
}

impl Endpoint {
    pub fn parse(url: &str) -> Result<Self, BadUrl> {
        let bad = |reason| BadUrl {
            shown: redact(url),
            reason,
        };
        let (tls, rest) = if let Some(r) = url.strip_prefix("redis://") {
            (false, r)
        } else if let Some(r) = url.strip_prefix("rediss://") {
            (true, r)
        } else {
            return Err(bad("expected redis:// or rediss://"));
        };
        let (rest, query) = match rest.split_once('?') {
            Some((r, q)) => (r, Some(q)),
            None => (rest, None),
        };
        let tls_opts = match query {
            Some(_) if !tls => return Err(bad("query options are TLS settings: use rediss://")),
            Some(q) => parse_tls_query(q).map_err(bad)?,
            None => TlsOpts::default(),
        };
        let (auth, hostpart) = match rest.rsplit_once('@') {
            Some((a, h)) => (Some(a), h),
            None => (None, rest),
        };
        let (user, password) = match auth {
            None => (None, None),
            Some(a) => match a.split_once(':') {
                Some((u, p)) => (
                    (!u.is_empty()).then(|| percent_decode(u)),
                    Some(percent_decode(p)),
                ),
                None => (Some(percent_decode(a)), None),
            },
        };
        let (hostport, db) = match hostpart.split_once('/') {
            Some((hp, "")) => (hp, 0),
            Some((hp, d)) => (hp, d.parse().map_err(|_| bad("db must be a number"))?),
            None => (hostpart, 0),
        };
        let (host, port) = if let Some(r) = hostport.strip_prefix('[') {
            let (h, p) = r.split_once(']').ok_or_else(|| bad("unclosed [ in host"))?;
            match p.strip_prefix(':') {
                Some(port) => (h, Some(port)),
                None if p.is_empty() => (h, None),
                None => return Err(bad("after ] only :port may follow")),
            }
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (hostport, None),
            }
        };
        if host.is_empty() {
            return Err(bad("missing host"));
        }
        // Such a host would reach the resolver and fail there with a vaguer message
        // (`redis://u@@::1]:6380` gave host `::1]`), or not be what `addr()` prints.
        if host
            .chars()
            .any(|c| matches!(c, '[' | ']' | '@') || c.is_whitespace() || c.is_control())
        {
            return Err(bad("the host has a character no host name or address has"));
        }
        let port = match port {
            Some(p) => p.parse().map_err(|_| bad("port must be 1-65535"))?,
            None => 6379,
        };
        if port == 0 {
            return Err(bad("port must be 1-65535"));
        }
        Ok(Self {
            host: host.to_string(),
            port,
            user,
            password,
            db,
            tls,
            tls_opts,
        })
    }

    /// `host:port` as a socket address string.
    pub fn addr(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// Same server, another logical database.
    pub fn with_db(&self, db: u32) -> Self {
        Self { db, ..self.clone() }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "rediss" } else { "redis" };
        write!(f, "{scheme}://")?;
        if let Some(u) = &self.user {
            write!(f, "{u}@")?;
        }
        write!(f, "{}", self.addr())?;
        if self.db != 0 {
            write!(f, "/{}", self.db)?;
        }
        Ok(())
    }
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Endpoint({self})")
    }
}

fn parse_tls_query(q: &str) -> Result<TlsOpts, &'static str> {
    let mut o = TlsOpts::default();
    for pair in q.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = percent_decode(v);
        let path = |v: String| (!v.is_empty()).then(|| PathBuf::from(v));
        match k {
            "cacert" => o.ca = path(v),
            "cert" => o.cert = path(v),
            "key" => o.key = path(v),
            "sni" => o.sni = (!v.is_empty()).then_some(v),
            "insecure" => {
                o.insecure = match v.as_str() {
                    "" | "true" | "1" | "yes" => true,
                    "false" | "0" | "no" => false,
                    _ => return Err("insecure must be true or false"),
                }
            }
            _ => return Err("unknown option (known: cacert, cert, key, sni, insecure)"),
        }
    }
    if o.cert.is_some() != o.key.is_some() {
        return Err("cert and key go together");
    }
    Ok(o)
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2]))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Replace the password part of a URL-looking string, for error messages about input
/// that did not even parse. The credentials are what precedes the last `@`, after the
/// scheme if the string starts with one (`name://`): a URL with a mistyped scheme
/// (`redis:/`), none, or a `://` further on still has its password masked.
pub fn redact(url: &str) -> String {
    match url.rsplit_once('@') {
        Some((auth, host)) => {
            let is_scheme = |s: &str| {
                s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
            };
            let (scheme, auth) = match auth.find("://") {
                Some(i) if is_scheme(&auth[..i]) => auth.split_at(i + 3),
                _ => ("", auth),
            };
            let user = auth.split_once(':').map(|(u, _)| u).unwrap_or(auth);
            let masked = if auth.contains(':') { ":***" } else { "" };
            format!("{scheme}{user}{masked}@{host}")
        }
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_common_forms() {
        let e = Endpoint::parse("redis://127.0.0.1:7000").unwrap();
        assert_eq!(
            (e.host.as_str(), e.port, e.db, e.tls),
            ("127.0.0.1", 7000, 0, false)
        );
        let e = Endpoint::parse("rediss://bob:s%40cret@[::1]:6380/3").unwrap();
        assert_eq!(e.host, "::1");
        assert_eq!(e.user.as_deref(), Some("bob"));
        assert_eq!(e.password.as_deref(), Some("s@cret"));
        assert_eq!((e.port, e.db, e.tls), (6380, 3, true));
        let e = Endpoint::parse("redis://:pw@localhost").unwrap();
        assert_eq!(
            (e.user, e.password.as_deref(), e.port),
            (None, Some("pw"), 6379)
        );
    }

    #[test]
    fn tls_options_ride_on_the_query() {
        let e = Endpoint::parse("rediss://h:1/2?cacert=/a%20b/ca.pem&cert=c.pem&key=k.pem&sni=x")
            .unwrap();
        assert_eq!(e.db, 2);
        assert_eq!(
            e.tls_opts,
            TlsOpts {
                ca: Some("/a b/ca.pem".into()),
                cert: Some("c.pem".into()),
                key: Some("k.pem".into()),
                sni: Some("x".into()),
                insecure: false,
            }
        );
        assert!(
            Endpoint::parse("rediss://h?insecure")
                .unwrap()
                .tls_opts
                .insecure
        );
        let err = |u| Endpoint::parse(u).unwrap_err().reason;
        assert_eq!(
            err("redis://h?cacert=x"),
            "query options are TLS settings: use rediss://"
        );
        assert_eq!(err("rediss://h?cert=c"), "cert and key go together");
        assert!(err("rediss://h?ca=x").starts_with("unknown option"));
        assert_eq!(
            err("rediss://h?insecure=maybe"),
            "insecure must be true or false"
        );
    }

    #[test]
    fn never_shows_the_password() {
        let e = Endpoint::parse("redis://bob:hunter2@h:1/2").unwrap();
        assert_eq!(e.to_string(), "redis://bob@h:1/2");
        assert!(!format!("{e:?}").contains("hunter2"));
        let err = Endpoint::parse("redis://bob:hunter2@h:99999").unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
        let err = Endpoint::parse("http://bob:hunter2@h").unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }

    /// Found by the `url_flags` fuzz target (fuzz/regressions/url_flags-scheme-typo): a
    /// URL without `://` before its `@` was shown whole, password included.
    #[test]
    fn a_host_no_resolver_could_take_is_refused_here() {
        for url in [
            "redis://u@@::1]:6380",
            "redis://[::1]x:6380",
            "redis://[[::1]]:6380",
            "redis://ho st:6380",
            "redis://:pw@h]",
        ] {
            let e = Endpoint::parse(url).expect_err(url);
            assert!(!e.shown.contains("pw"), "{}", e.shown);
            assert!(
                e.reason.contains("host") || e.reason.contains("after ]"),
                "{url}: {}",
                e.reason
            );
        }
        let e = Endpoint::parse("redis://[::1]").unwrap();
        assert_eq!((e.host.as_str(), e.port), ("::1", 6379));
        assert_eq!(e.addr(), "[::1]:6379");
    }

    #[test]
    fn a_mistyped_or_missing_scheme_does_not_show_the_password() {
        for url in [
            "redis:/u:Zq7SecretPw@h",
            "u:Zq7SecretPw@h:6379",
            "redis:u:Zq7SecretPw@h",
            "redis:/u:Zq7SecretPw@h?x=redis://y",
            "u:Zq7SecretPw@redis://h",
            "redis:/redis:Zq7SecretPw@s://user:p@[::1]u",
        ] {
            let err = Endpoint::parse(url).unwrap_err();
            assert!(!err.to_string().contains("Zq7SecretPw"), "{err}");
        }
        // The fuzz inputs, rebuilt as the target builds its URL:
        // `<scheme picked by byte 0><prefix>:<secret>@<suffix>`, prefix and suffix split
        // on NUL.
        let schemes = [
            "redis://",
            "rediss://",
            "",
            "redis:/",
            "http://",
            "REDIS://",
        ];
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/regressions");
        for name in [
            "url_flags-scheme-typo",
            "url_flags-scheme-after-at",
            "url_flags-at-before-scheme",
        ] {
            let input = std::fs::read(format!("{dir}/{name}")).unwrap();
            let mut parts = input[1..].splitn(3, |&b| b == 0);
            let mut text =
                || String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
            let (prefix, suffix) = (text(), text());
            let scheme = schemes[input[0] as usize % schemes.len()];
            let url = format!("{scheme}{prefix}:Zq7SecretPw@{suffix}");
            let err = Endpoint::parse(&url).unwrap_err();
            assert!(!err.to_string().contains("Zq7SecretPw"), "{name}: {err}");
        }
    }
}
