//! Passwords that need not sit in a process list: from a file (`--source-password-file`
//! …) or an environment variable (`TANDEM_SOURCE_PASSWORD` …), as well as in the URL.
//!
//! Precedence: the file (asked for explicitly), then the URL's own password, then the
//! environment variable.

use std::path::{Path, PathBuf};

use clap::Args;

use crate::redis::url::Endpoint;

/// `--source` and `--target` with their password files (sync, verify, precheck).
#[derive(Args)]
pub struct SourceTarget {
    /// Source URL: redis://[user:pass@]host:port[/db] (rediss:// for TLS; a cluster is
    /// detected)
    #[arg(long)]
    source: String,
    /// Target URL: redis://[user:pass@]host:port[/db] (a cluster is detected)
    #[arg(long)]
    target: String,
    /// File whose first line is the source password (or set TANDEM_SOURCE_PASSWORD):
    /// either keeps it out of the process list.
    #[arg(long)]
    source_password_file: Option<PathBuf>,
    /// File whose first line is the target password (or set TANDEM_TARGET_PASSWORD):
    /// either keeps it out of the process list.
    #[arg(long)]
    target_password_file: Option<PathBuf>,
}

type Fallible<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

impl SourceTarget {
    pub fn source(&self) -> Fallible<Endpoint> {
        let file = self.source_password_file.as_deref();
        endpoint(&self.source, "source", file, "TANDEM_SOURCE_PASSWORD")
    }

    pub fn target(&self) -> Fallible<Endpoint> {
        let file = self.target_password_file.as_deref();
        endpoint(&self.target, "target", file, "TANDEM_TARGET_PASSWORD")
    }
}

/// The endpoint of `flag` (`--source`), with its password from `file` or `env`.
pub fn endpoint(url: &str, flag: &str, file: Option<&Path>, env: &str) -> Fallible<Endpoint> {
    let mut ep = Endpoint::parse(url).map_err(|e| format!("--{flag}: {e}"))?;
    if let Some(path) = file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("--{flag}-password-file {}: {e}", path.display()))?;
        let pass = text.lines().next().unwrap_or("").to_string();
        if pass.is_empty() {
            return Err(format!(
                "--{flag}-password-file {}: empty first line",
                path.display()
            )
            .into());
        }
        ep.password = Some(pass);
    } else if ep.password.is_none()
        && let Ok(pass) = std::env::var(env)
        && !pass.is_empty()
    {
        ep.password = Some(pass);
    }
    Ok(ep)
}

#[cfg(test)]
mod tests {
    use super::endpoint;

    #[test]
    fn a_file_wins_then_the_url_then_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pw");
        std::fs::write(&f, "from-file\nignored\n").unwrap();
        let ep = endpoint(
            "redis://:in-url@h:1",
            "source",
            Some(&f),
            "TANDEM_TEST_PW_UNSET",
        )
        .unwrap();
        assert_eq!(ep.password.as_deref(), Some("from-file"));
        let ep = endpoint("redis://:in-url@h:1", "source", None, "PATH").unwrap();
        assert_eq!(ep.password.as_deref(), Some("in-url"));
        let ep = endpoint("redis://h:1", "source", None, "TANDEM_TEST_PW_UNSET").unwrap();
        assert_eq!(ep.password, None);
        let missing = dir.path().join("nope");
        let err = endpoint("redis://h:1", "target", Some(&missing), "X").unwrap_err();
        assert!(
            err.to_string().starts_with("--target-password-file "),
            "{err}"
        );
        std::fs::write(&f, "\n").unwrap();
        let err = endpoint("redis://h:1", "a", Some(&f), "X").unwrap_err();
        assert!(err.to_string().ends_with("empty first line"), "{err}");
    }
}
