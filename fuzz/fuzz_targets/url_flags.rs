#![no_main]
//! Endpoint URLs and the command line. The input is `prefix 0x00 suffix 0x00 args`:
//! - `Endpoint::parse` on the raw text, then on `<scheme><prefix>:<SECRET>@<suffix>`
//!   (the scheme picked by the first byte, including none or a mangled one): the
//!   password must not appear in the error's `Display`, nor in an endpoint's
//!   `Display`/`Debug`, and an endpoint's `addr()` must re-parse to the same host/port (hosts
//!   without brackets).
//! - For one input in 32 (bits 3-5 of the first byte clear, a length divisible by 4),
//!   the CLI's clap parser (`tandem::cli::Cli`, one built `clap::Command` reused) on the
//!   args split on 0x01, `--source`/`--target` URLs carrying the secret added before
//!   them: never a panic, and the secret never in the error's `Display`.
//! (MongoDB URIs are parsed by the mongodb driver, not by tandem: not fuzzed here.)

use std::cell::RefCell;

use clap::{CommandFactory, FromArgMatches};
use libfuzzer_sys::fuzz_target;
use tandem::cli::Cli;
use tandem::redis::url::Endpoint;

const SECRET: &str = "Zq7SecretPw";
const SCHEMES: [&str; 6] = [
    "redis://",
    "rediss://",
    "",
    "redis:/",
    "http://",
    "REDIS://",
];

fn no_secret(what: &str, text: &str) {
    assert!(!text.contains(SECRET), "{what} shows the password: {text}");
}

thread_local! {
    static CMD: RefCell<clap::Command> = RefCell::new(Cli::command());
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, data)) = data.split_first() else {
        return;
    };
    let mut parts = data.splitn(3, |&b| b == 0);
    let text = |b: Option<&[u8]>| String::from_utf8_lossy(b.unwrap_or_default()).into_owned();
    let (prefix, suffix, args) = (text(parts.next()), text(parts.next()), text(parts.next()));

    // Raw text: no panic, and a parsed endpoint's address parses back.
    let raw = format!("{prefix}{suffix}");
    // (Hosts with brackets left over, `::1]`, are refused by `parse` since 2026-12-03,
    // so every endpoint it accepts must make the round trip.)
    if let Ok(ep) = Endpoint::parse(&raw) {
        let scheme = if ep.tls { "rediss://" } else { "redis://" };
        let again = Endpoint::parse(&format!("{scheme}{}", ep.addr()))
            .unwrap_or_else(|e| panic!("{raw:?} -> addr {:?} does not parse: {e}", ep.addr()));
        assert_eq!(
            (again.host, again.port),
            (ep.host.clone(), ep.port),
            "{raw:?}"
        );
    }
    if prefix.contains(SECRET) || suffix.contains(SECRET) || args.contains(SECRET) {
        return;
    }

    // A password in the URL never shows.
    let scheme = SCHEMES[pick as usize % SCHEMES.len()];
    let url = format!("{scheme}{prefix}:{SECRET}@{suffix}");
    match Endpoint::parse(&url) {
        Err(e) => no_secret("BadUrl", &e.to_string()),
        Ok(ep) => {
            if ep.password.as_deref().is_some_and(|p| p.contains(SECRET)) {
                no_secret("Endpoint Display", &ep.to_string());
                no_secret("Endpoint Debug", &format!("{ep:?}"));
            }
        }
    }

    // The command line: clap is ~50x slower than the URL parser, so one input in 32.
    if pick & 0x38 != 0 || data.len() % 4 != 0 {
        return;
    }
    let mut argv: Vec<String> = vec!["tandem".into()];
    argv.extend(
        args.split('\u{1}')
            .filter(|a| !a.is_empty() || pick & 0x40 != 0)
            .map(String::from),
    );
    if argv.len() > 24 {
        return;
    }
    if pick & 0x80 != 0 {
        let at = argv.len().min(1 + (pick as usize & 3));
        argv.insert(at, format!("--source={url}"));
        argv.insert(at, format!("redis://u:{SECRET}@h:1"));
        argv.insert(at, "--target".into());
    }
    let res = CMD.with_borrow_mut(|cmd| {
        cmd.try_get_matches_from_mut(&argv)
            .and_then(|m| Cli::from_arg_matches(&m).map(|_| ()))
    });
    if let Err(e) = res {
        no_secret("clap error", &e.to_string());
    }
});
