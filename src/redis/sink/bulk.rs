//! The target's `proto-max-bulk-len`, checked before a write is sent.
//!
//! A server reading a bulk longer than its limit answers `-ERR Protocol error: invalid
//! bulk length` and closes the connection while tandem is still sending the value, so
//! the reply is mostly lost to the reset: seen from the sink it is a lost connection,
//! retried for `give_up_after` (300 s) on every resend. Checked here, it is one error
//! naming the command, the key and the offset, before anything is sent.

use bytes::Bytes;

use super::SinkError;
use crate::redis::conn::{Conn, ConnError, Frame, frame_text};
use crate::redis::scan::{self, Scan};

/// Longest argument the target takes; `None` when it would not say (`CONFIG GET`
/// refused or unknown), and nothing is checked.
#[derive(Debug, Clone, Copy, Default)]
pub struct BulkLimit(Option<u64>);

impl BulkLimit {
    pub fn new(limit: Option<u64>) -> Self {
        Self(limit)
    }

    /// Ask the target. Only a broken connection is an error.
    pub async fn probe(conn: &mut Conn) -> Result<Self, ConnError> {
        let reply = conn
            .request(&[b"CONFIG", b"GET", b"proto-max-bulk-len"])
            .await?;
        Ok(Self(parse(&reply)))
    }

    pub fn get(self) -> Option<u64> {
        self.0
    }

    /// `argv`, to be sent as one command.
    pub fn check_argv(self, endpoint: &str, argv: &[Bytes], offset: u64) -> Result<(), SinkError> {
        let Some(limit) = self.0 else { return Ok(()) };
        match argv.iter().map(|a| a.len() as u64).max() {
            Some(len) if len > limit => Err(too_long(endpoint, argv, offset, len, limit)),
            _ => Ok(()),
        }
    }

    /// `raw`: one command, RESP-encoded. A command no longer than the limit cannot hold
    /// a longer argument, so the scan is only for the rare big one.
    pub fn check_raw(self, endpoint: &str, raw: &Bytes, offset: u64) -> Result<(), SinkError> {
        let Some(limit) = self.0 else { return Ok(()) };
        if raw.len() as u64 <= limit {
            return Ok(());
        }
        let mut spans = Vec::new();
        let Scan::Complete { .. } = scan::command(raw, &mut spans) else {
            return Ok(());
        };
        let argv: Vec<Bytes> = spans.into_iter().map(|r| raw.slice(r)).collect();
        self.check_argv(endpoint, &argv, offset)
    }
}

pub(crate) fn parse(reply: &Frame) -> Option<u64> {
    let Frame::Array(items) = reply else {
        return None;
    };
    frame_text(items.get(1)?)?.trim().parse().ok()
}

fn too_long(endpoint: &str, argv: &[Bytes], offset: u64, len: u64, limit: u64) -> SinkError {
    let command = crate::redis::conn::command_name(&[argv.first().map_or(&b""[..], |a| &a[..])]);
    // The key, never another argument (a value, a script): the command table says which.
    let key = crate::redis::command::resolve(argv)
        .and_then(|spec| crate::redis::command::key_indexes(spec, argv).ok())
        .and_then(|idx| idx.first().copied())
        .and_then(|i| argv.get(i))
        .map(|k| {
            let shown: String = String::from_utf8_lossy(k).chars().take(100).collect();
            format!(" of key {shown:?}")
        })
        .unwrap_or_default();
    SinkError::TooLong {
        endpoint: endpoint.to_string(),
        command,
        key,
        offset,
        len,
        limit,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redis::conn::encode_command;

    #[test]
    fn only_an_argument_above_the_limit_is_refused_naming_the_key() {
        let limit = BulkLimit::new(Some(10));
        let value = Bytes::from(vec![b'x'; 11]);
        let argv = vec![Bytes::from("SET"), Bytes::from("k1"), value.clone()];
        let e = limit.check_argv("ep", &argv, 7).unwrap_err().to_string();
        assert!(
            e.contains("SET of key \"k1\" at source offset 7") && e.contains("11 bytes"),
            "{e}"
        );
        let mut raw = bytes::BytesMut::new();
        encode_command(&mut raw, &[b"SET", b"k1", &value]);
        assert!(limit.check_raw("ep", &raw.freeze(), 7).is_err());
        let fits = vec![
            Bytes::from("SET"),
            Bytes::from("k1"),
            Bytes::from("0123456789"),
        ];
        assert!(limit.check_argv("ep", &fits, 7).is_ok());
        assert!(BulkLimit::default().check_argv("ep", &argv, 7).is_ok());
        // A script is no key.
        let argv = vec![Bytes::from("EVAL"), value, Bytes::from("0")];
        let e = limit.check_argv("ep", &argv, 7).unwrap_err().to_string();
        assert!(e.contains("EVAL at source offset 7"), "{e}");
    }

    #[test]
    fn the_config_get_reply_is_read() {
        let reply = Frame::Array(vec![
            Frame::BulkString("proto-max-bulk-len".into()),
            Frame::BulkString("1048576".into()),
        ]);
        assert_eq!(parse(&reply), Some(1 << 20));
        assert_eq!(parse(&Frame::Error("NOPERM".into())), None);
        assert_eq!(parse(&Frame::Array(vec![])), None);
    }
}
