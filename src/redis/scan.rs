//! Hot-path RESP scanners for the two shapes tandem reads millions of times.
//!
//! - [`command`]: a propagated command in the replication stream. A master writes every
//!   command as an array of bulk strings (`*N`, then `N` times `$len` + bytes), so that
//!   is the only shape it reads, finding the arguments' spans in one pass without a frame
//!   tree. redis-protocol's general decoder, which built one, was a third of tandem's CPU
//!   while catching up.
//! - [`clean_array`]: a target's `EXEC` reply when every command succeeded (status,
//!   integer and bulk replies only): it is skipped without being decoded.
//!
//! Anything else is left to redis-protocol's general decoder, which also words the
//! errors.

use std::ops::Range;

/// Outcome of [`command`].
#[derive(Debug, PartialEq, Eq)]
pub enum Scan {
    /// A whole command of `used` bytes; the argument spans were written to `spans`.
    Complete { used: usize },
    /// The buffer holds only the start of a command.
    Incomplete,
    /// The first byte is not `*`: not a multibulk command.
    NotMultibulk,
    /// Malformed at byte `at` of the buffer.
    Invalid { at: usize, why: &'static str },
}

/// Longest decimal length a header may carry (the protocol caps bulk strings at 512 MB
/// by default and at 2^63 by type; anything longer is garbage, not a slow sender).
const MAX_DIGITS: usize = 19;

/// Read one multibulk command at the start of `buf`, replacing `spans` with its
/// arguments' byte ranges (relative to `buf`).
pub fn command(buf: &[u8], spans: &mut Vec<Range<usize>>) -> Scan {
    spans.clear();
    match buf.first() {
        None => return Scan::Incomplete,
        Some(b'*') => {}
        Some(_) => return Scan::NotMultibulk,
    }
    let (count, mut pos) = match number(buf, 1) {
        Number::Value(n, next) => (n, next),
        Number::Incomplete => return Scan::Incomplete,
        Number::Invalid(at, why) => return Scan::Invalid { at, why },
    };
    // `count` comes off the wire: grow with the data, never reserve it up front.
    for _ in 0..count {
        match buf.get(pos) {
            None => return Scan::Incomplete,
            Some(b'$') => {}
            Some(_) => {
                return Scan::Invalid {
                    at: pos,
                    why: "expected a bulk string ('$') inside a command",
                };
            }
        }
        let (len, start) = match number(buf, pos + 1) {
            Number::Value(n, next) => (n, next),
            Number::Incomplete => return Scan::Incomplete,
            Number::Invalid(at, why) => return Scan::Invalid { at, why },
        };
        let Some(end) = usize::try_from(len).ok().and_then(|l| start.checked_add(l)) else {
            return Scan::Invalid {
                at: pos,
                why: "bulk string length out of range",
            };
        };
        match buf.get(end..end.saturating_add(2)) {
            Some(b"\r\n") => {}
            Some(t) if t.len() == 2 => {
                return Scan::Invalid {
                    at: end,
                    why: "bulk string not followed by CRLF",
                };
            }
            _ => return Scan::Incomplete,
        }
        spans.push(start..end);
        pos = end + 2;
    }
    Scan::Complete { used: pos }
}

/// Outcome of [`clean_array`].
#[derive(Debug, PartialEq, Eq)]
pub enum Clean {
    /// An array of `items` replies, none an error, `used` bytes long.
    Yes { items: usize, used: usize },
    /// The buffer holds only the start of the reply.
    Incomplete,
    /// Something to decode in full: an error, a nested array, a null array, or not an
    /// array at all.
    No,
}

/// Whether `buf` starts with an array of status, integer and bulk replies (an `EXEC`
/// whose commands all succeeded).
pub fn clean_array(buf: &[u8]) -> Clean {
    if buf.first() != Some(&b'*') {
        return if buf.is_empty() {
            Clean::Incomplete
        } else {
            Clean::No
        };
    }
    let (items, mut pos) = match number(buf, 1) {
        Number::Value(n, next) => (n, next),
        Number::Incomplete => return Clean::Incomplete,
        Number::Invalid(..) => return Clean::No,
    };
    for _ in 0..items {
        match buf.get(pos) {
            None => return Clean::Incomplete,
            // Status and integer lines are short ("+OK", ":12"): a plain search is enough.
            Some(&kind @ (b'+' | b':')) => match buf[pos..].iter().position(|&b| b == b'\r') {
                Some(n) => match buf.get(pos + n + 1) {
                    Some(b'\n') if kind == b':' && !is_integer(&buf[pos + 1..pos + n]) => {
                        return Clean::No;
                    }
                    Some(b'\n') => pos += n + 2,
                    Some(_) => return Clean::No,
                    None => return Clean::Incomplete,
                },
                None => return Clean::Incomplete,
            },
            Some(b'$') if buf.get(pos + 1) == Some(&b'-') => {
                if !buf[pos..].starts_with(b"$-1\r\n") {
                    return if buf.len() < pos + 5 {
                        Clean::Incomplete
                    } else {
                        Clean::No
                    };
                }
                pos += 5;
            }
            Some(b'$') => {
                let (len, start) = match number(buf, pos + 1) {
                    Number::Value(n, next) => (n, next),
                    Number::Incomplete => return Clean::Incomplete,
                    Number::Invalid(..) => return Clean::No,
                };
                let Some(end) = usize::try_from(len).ok().and_then(|l| start.checked_add(l)) else {
                    return Clean::No;
                };
                match buf.get(end..end.saturating_add(2)) {
                    Some(b"\r\n") => pos = end + 2,
                    Some(t) if t.len() == 2 => return Clean::No,
                    _ => return Clean::Incomplete,
                }
            }
            Some(_) => return Clean::No,
        }
    }
    match usize::try_from(items) {
        Ok(items) => Clean::Yes { items, used: pos },
        Err(_) => Clean::No,
    }
}

/// A RESP integer's text (a malformed one is left to the full decoder's error).
fn is_integer(text: &[u8]) -> bool {
    std::str::from_utf8(text).is_ok_and(|t| t.parse::<i64>().is_ok())
}

enum Number {
    /// The value and the index after its CRLF.
    Value(u64, usize),
    Incomplete,
    Invalid(usize, &'static str),
}

/// A non-negative decimal from `at` up to CRLF (nulls and negative counts have no place
/// in a command).
fn number(buf: &[u8], at: usize) -> Number {
    let mut value: u64 = 0;
    let mut i = at;
    loop {
        match buf.get(i) {
            None => return Number::Incomplete,
            Some(d @ b'0'..=b'9') => {
                if i - at == MAX_DIGITS {
                    return Number::Invalid(at, "length has too many digits");
                }
                value = value * 10 + u64::from(d - b'0');
            }
            Some(b'\r') if i > at => {
                return match buf.get(i + 1) {
                    None => Number::Incomplete,
                    Some(b'\n') => Number::Value(value, i + 2),
                    Some(_) => Number::Invalid(i + 1, "CR without LF after a length"),
                };
            }
            Some(_) => return Number::Invalid(i, "expected a non-negative decimal length"),
        }
        i += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use proptest::prelude::*;
    use redis_protocol::resp2::decode::decode_bytes_mut;
    use redis_protocol::resp2::types::BytesFrame;

    fn encode(args: &[Vec<u8>]) -> Vec<u8> {
        let mut out = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            out.extend_from_slice(a);
            out.extend_from_slice(b"\r\n");
        }
        out
    }

    fn args_of(buf: &[u8], spans: &[Range<usize>]) -> Vec<Vec<u8>> {
        spans.iter().map(|r| buf[r.clone()].to_vec()).collect()
    }

    #[test]
    fn reads_a_command_and_stops_at_its_end() {
        let mut buf = encode(&[b"SET".to_vec(), b"k".to_vec(), b"v\r\n".to_vec()]);
        let len = buf.len();
        buf.extend_from_slice(b"*1\r\n$4\r\nPING\r\n");
        let mut spans = Vec::new();
        assert_eq!(command(&buf, &mut spans), Scan::Complete { used: len });
        assert_eq!(
            args_of(&buf, &spans),
            [b"SET".to_vec(), b"k".to_vec(), b"v\r\n".to_vec()]
        );
    }

    #[test]
    fn names_the_byte_where_a_command_goes_wrong() {
        let mut spans = Vec::new();
        let cases: [(&[u8], usize); 6] = [
            (b"*1\r\n:5\r\n", 4),
            (b"*-1\r\n", 1),
            (b"*1\r\n$-1\r\n", 5),
            (b"*1\r\n$3\r\nabcd\r\n", 11),
            (b"*1\rx", 3),
            (b"*99999999999999999999\r\n", 1),
        ];
        for (input, at) in cases {
            match command(input, &mut spans) {
                Scan::Invalid { at: got, .. } => assert_eq!(got, at, "{input:?}"),
                other => panic!("{input:?}: {other:?}"),
            }
        }
        assert_eq!(command(b"+OK\r\n", &mut spans), Scan::NotMultibulk);
        assert_eq!(command(b"", &mut spans), Scan::Incomplete);
    }

    #[test]
    fn an_exec_reply_is_clean_only_without_errors() {
        let ok = b"*4\r\n+OK\r\n:12\r\n$3\r\nabc\r\n$-1\r\n";
        assert_eq!(
            clean_array(ok),
            Clean::Yes {
                items: 4,
                used: ok.len()
            }
        );
        for cut in 0..ok.len() {
            assert_eq!(clean_array(&ok[..cut]), Clean::Incomplete, "cut {cut}");
        }
        for dirty in [
            &b"*2\r\n+OK\r\n-OOM no memory\r\n"[..],
            b"*1\r\n*0\r\n",
            b"*-1\r\n",
            b"-EXECABORT\r\n",
            b"*1\r\n$-2\r\n",
        ] {
            assert_eq!(clean_array(dirty), Clean::No, "{dirty:?}");
        }
    }

    proptest! {
        /// Whatever the bytes, a reply called clean is an array redis-protocol decodes
        /// to the same length, holding no error.
        #[test]
        fn a_clean_reply_is_one_redis_protocol_reads_without_errors(
            raw in prop::collection::vec(
                prop_oneof![
                    Just(b'*'), Just(b'$'), Just(b'+'), Just(b':'), Just(b'-'), Just(b'\r'),
                    Just(b'\n'), Just(b'1'), Just(b'2'), Just(b'0'), any::<u8>()
                ],
                0..40,
            ),
        ) {
            if let Clean::Yes { items, used } = clean_array(&raw) {
                let mut b = BytesMut::from(&raw[..]);
                match decode_bytes_mut(&mut b) {
                    Ok(Some((BytesFrame::Array(got), n, _))) => {
                        prop_assert_eq!(n, used);
                        prop_assert_eq!(got.len(), items);
                        prop_assert!(!got.iter().any(|f| matches!(f, BytesFrame::Error(_))));
                    }
                    other => prop_assert!(false, "redis-protocol reads {:?}", other),
                }
            }
        }


        #[test]
        fn every_prefix_is_incomplete_and_the_whole_is_exact(
            args in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..40), 0..6),
        ) {
            let buf = encode(&args);
            let mut spans = Vec::new();
            for cut in 0..buf.len() {
                prop_assert_eq!(command(&buf[..cut], &mut spans), Scan::Incomplete);
            }
            prop_assert_eq!(command(&buf, &mut spans), Scan::Complete { used: buf.len() });
            prop_assert_eq!(args_of(&buf, &spans), args);
        }

        /// On any bytes, a command this parser accepts is the one redis-protocol decodes,
        /// and a multibulk command of bulk strings redis-protocol decodes is accepted.
        #[test]
        fn agrees_with_redis_protocol_on_arbitrary_bytes(
            raw in prop_oneof![
                prop::collection::vec(
                    prop_oneof![
                        Just(b'*'), Just(b'$'), Just(b'\r'), Just(b'\n'), Just(b'1'),
                        Just(b'2'), Just(b'0'), Just(b'-'), Just(b':'), any::<u8>()
                    ],
                    0..48,
                ),
                // Valid commands with one byte changed and junk after them.
                (
                    prop::collection::vec(prop::collection::vec(any::<u8>(), 0..12), 0..4),
                    any::<prop::sample::Index>(),
                    any::<u8>(),
                    prop::collection::vec(any::<u8>(), 0..4),
                )
                    .prop_map(|(args, at, byte, tail)| {
                        let mut b = encode(&args);
                        let i = at.index(b.len());
                        b[i] = byte;
                        b.extend_from_slice(&tail);
                        b
                    }),
            ],
        ) {
            let mut spans = Vec::new();
            let ours = command(&raw, &mut spans);
            let mut b = BytesMut::from(&raw[..]);
            let theirs = decode_bytes_mut(&mut b);
            match (&ours, theirs) {
                (Scan::Complete { used }, Ok(Some((BytesFrame::Array(items), n, _)))) => {
                    prop_assert_eq!(*used, n);
                    let want: Vec<Vec<u8>> = items
                        .iter()
                        .map(|f| match f {
                            BytesFrame::BulkString(b) => b.to_vec(),
                            other => panic!("{other:?}"),
                        })
                        .collect();
                    prop_assert_eq!(args_of(&raw, &spans), want);
                }
                (Scan::Complete { .. }, other) => {
                    prop_assert!(false, "accepted what redis-protocol reads as {:?}", other);
                }
                (_, Ok(Some((BytesFrame::Array(items), _, _))))
                    if raw.first() == Some(&b'*')
                        && items.iter().all(|f| matches!(f, BytesFrame::BulkString(_))) =>
                {
                    // redis-protocol skips the two bytes after a bulk string unchecked;
                    // this parser insists on CRLF there. Nothing else may differ.
                    if let Scan::Invalid { why, .. } = ours {
                        prop_assert_eq!(why, "bulk string not followed by CRLF");
                        return Ok(());
                    }
                    prop_assert!(false, "rejected a command redis-protocol reads: {:?}", ours);
                }
                _ => {}
            }
        }
    }
}
