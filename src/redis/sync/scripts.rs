//! Scripts replicated verbatim (Redis ≤ 6.2 with `lua-replicate-commands no`, or modules
//! doing so): the source propagates `EVALSHA` once it believes its replicas know the
//! script. The target may not (it was flushed, restarted, or never saw the `EVAL`), and
//! would answer NOSCRIPT. tandem remembers every script body it sees (`EVAL`,
//! `SCRIPT LOAD`, the RDB's `lua` AUX fields) and sends `EVALSHA` of a known script as
//! `EVAL` with its body, which the target always accepts.

use std::collections::HashMap;

use bytes::{Bytes, BytesMut};

use crate::redis::conn::encode_command;
use crate::redis::replica::Command;

/// Scripts kept at most (bodies are small, and few distinct scripts exist in practice).
const MAX_SCRIPTS: usize = 10_000;

#[derive(Default)]
pub struct ScriptCache {
    /// Lower-case hex SHA1 → body.
    bodies: HashMap<[u8; 40], Bytes>,
}

impl ScriptCache {
    pub fn remember(&mut self, body: &Bytes) {
        if self.bodies.len() < MAX_SCRIPTS {
            self.bodies.insert(sha1_hex(body), body.clone());
        }
    }

    /// Learn from `cmd`, and rewrite an `EVALSHA` of a known script into `EVAL`.
    pub fn prepare(&mut self, cmd: &mut Command) {
        let name = &cmd.argv[0];
        if (name.eq_ignore_ascii_case(b"EVAL") || name.eq_ignore_ascii_case(b"EVAL_RO"))
            && cmd.argv.len() > 1
        {
            let body = cmd.argv[1].clone();
            self.remember(&body);
        } else if name.eq_ignore_ascii_case(b"SCRIPT")
            && cmd.argv.len() > 2
            && cmd.argv[1].eq_ignore_ascii_case(b"LOAD")
        {
            let body = cmd.argv[2].clone();
            self.remember(&body);
        } else if (name.eq_ignore_ascii_case(b"EVALSHA")
            || name.eq_ignore_ascii_case(b"EVALSHA_RO"))
            && cmd.argv.len() > 1
        {
            let Ok(mut sha) = <[u8; 40]>::try_from(&cmd.argv[1][..]) else {
                return;
            };
            sha.make_ascii_lowercase();
            if let Some(body) = self.bodies.get(&sha) {
                cmd.argv[0] = Bytes::from_static(b"EVAL");
                cmd.argv[1] = body.clone();
                let mut raw = BytesMut::new();
                let args: Vec<&[u8]> = cmd.argv.iter().map(|a| a.as_ref()).collect();
                encode_command(&mut raw, &args);
                cmd.raw = raw.freeze();
            }
        }
    }
}

fn sha1_hex(body: &[u8]) -> [u8; 40] {
    let hex = sha1_smol::Sha1::from(body).digest().to_string();
    let mut out = [0u8; 40];
    out.copy_from_slice(hex.as_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(args: &[&str]) -> Command {
        let argv: Vec<Bytes> = args.iter().map(|a| Bytes::from(a.to_string())).collect();
        let mut raw = BytesMut::new();
        let refs: Vec<&[u8]> = argv.iter().map(|a| a.as_ref()).collect();
        encode_command(&mut raw, &refs);
        Command {
            db: 0,
            argv,
            start: 0,
            offset: 0,
            raw: raw.freeze(),
        }
    }

    #[test]
    fn evalsha_of_a_seen_script_becomes_eval() {
        let mut c = ScriptCache::default();
        // SHA1 of "return 1", as Redis computes it.
        let sha = "e0e1f9fabfc9d4800c877a703b823ac0578ff8db";
        let mut unknown = cmd(&["EVALSHA", sha, "0"]);
        c.prepare(&mut unknown);
        assert_eq!(
            &unknown.argv[0][..],
            b"EVALSHA",
            "unknown scripts pass as they are"
        );
        c.prepare(&mut cmd(&["EVAL", "return 1", "0"]));
        let mut known = cmd(&["EVALSHA", &sha.to_uppercase(), "0"]);
        c.prepare(&mut known);
        assert_eq!(known.argv, cmd(&["EVAL", "return 1", "0"]).argv);
        assert_eq!(known.raw, cmd(&["EVAL", "return 1", "0"]).raw);
    }
}
