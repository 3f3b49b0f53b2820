//! Passwords that need not sit in a process list: from a file (`--source-password-file`
//! …) or an environment variable (`TANDEM_SOURCE_PASSWORD` …), as well as in the URL.
//!
//! Precedence: the file (asked for explicitly), then the URL's own password, then the
//! environment variable.

use std::path::Path;

use crate::redis::url::Endpoint;

/// The endpoint of `flag` (`--source`), with its password from `file` or `env`.
pub fn endpoint(
    url: &str,
    flag: &str,
    file: Option<&Path>,
    env: &str,
) -> Result<Endpoint, Box<dyn std::error::Error + Send + Sync>> {
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
