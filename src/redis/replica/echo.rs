//! Two-way links drop tandem's own transactions (echoes) whole. Every batch tandem
//! writes is `MULTI … HSET __tandem:… EXEC` (the checkpoint, or a conflict copy's tag,
//! is its last write), and an echo is as long as the batch that caused it: building
//! every one of its commands only to drop them was a fifth of tandem's CPU with one
//! side loaded. So a transaction is framed without being built, and when its last
//! write is such an `HSET` only that command is handed out.
//!
//! The rule is narrower than the engine's ("any write to a `__tandem:` key makes the
//! transaction an echo"): a transaction it does not take goes through the engine's
//! rule, so the outcome is the same; it is only cheaper.

use std::ops::Range;

use crate::redis::filter::TANDEM_PREFIX;
use crate::redis::scan::{self, Scan};

/// Where the scan of a transaction stopped for want of bytes, relative to the `MULTI`
/// at the start of the buffer (nothing is consumed until the transaction is decided).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TxScan {
    cursor: usize,
    /// The db after the SELECTs seen so far (`None`: unchanged).
    db: Option<u32>,
    /// The last command that is not a SELECT, as a range of the buffer.
    last: Option<Range<usize>>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Tx {
    /// An echo `used` bytes long (through `EXEC`): `ckpt` is its last write, `db` the
    /// db its SELECTs left selected (`None`: unchanged).
    Echo {
        used: usize,
        ckpt: Range<usize>,
        db: Option<u32>,
    },
    /// Not a transaction, or not one this rule takes: read it command by command.
    NotEcho,
    /// The transaction goes on past the buffer; resume from this state.
    Incomplete(TxScan),
}

/// `buf` starts with `MULTI` (an exact, cheap test, so that other commands pay one
/// comparison).
pub fn starts_multi(buf: &[u8]) -> bool {
    buf.len() >= 15 && &buf[..8] == b"*1\r\n$5\r\n" && buf[8..13].eq_ignore_ascii_case(b"MULTI")
}

/// Scan the transaction at the start of `buf` (which [`starts_multi`]) from `state`.
/// Anything malformed is left to the command-by-command reader, which names it.
pub fn scan(buf: &[u8], mut state: TxScan, spans: &mut Vec<Range<usize>>) -> Tx {
    if state.cursor == 0 {
        state.cursor = 15;
    }
    loop {
        let at = state.cursor;
        let used = match scan::command(&buf[at..], spans) {
            Scan::Complete { used } => used,
            Scan::Incomplete => return Tx::Incomplete(state),
            Scan::NotMultibulk | Scan::Invalid { .. } => return Tx::NotEcho,
        };
        let Some(name) = spans.first().map(|r| &buf[at + r.start..at + r.end]) else {
            return Tx::NotEcho;
        };
        state.cursor = at + used;
        if name.eq_ignore_ascii_case(b"EXEC") {
            let Some(last) = state.last else {
                return Tx::NotEcho;
            };
            return match is_tandem_hset(buf, &last, spans) {
                true => Tx::Echo {
                    used: state.cursor,
                    ckpt: last,
                    db: state.db,
                },
                false => Tx::NotEcho,
            };
        }
        if name.eq_ignore_ascii_case(b"SELECT") {
            let db = spans
                .get(1)
                .and_then(|r| std::str::from_utf8(&buf[at + r.start..at + r.end]).ok())
                .and_then(|d| d.parse().ok());
            match db {
                Some(db) => state.db = Some(db),
                None => return Tx::NotEcho,
            }
        } else if name.eq_ignore_ascii_case(b"MULTI") {
            return Tx::NotEcho;
        } else {
            state.last = Some(at..at + used);
        }
    }
}

fn is_tandem_hset(buf: &[u8], cmd: &Range<usize>, spans: &mut Vec<Range<usize>>) -> bool {
    let bytes = &buf[cmd.clone()];
    if !matches!(scan::command(bytes, spans), Scan::Complete { .. }) || spans.len() < 4 {
        return false;
    }
    let arg = |i: usize| &bytes[spans[i].clone()];
    arg(0).eq_ignore_ascii_case(b"HSET") && arg(1).starts_with(TANDEM_PREFIX)
}

/// `cmds` as a master would propagate them (tests of this file and of stream.rs).
#[cfg(test)]
pub(super) fn resp(cmds: &[&[&str]]) -> Vec<u8> {
    let mut out = bytes::BytesMut::new();
    for argv in cmds {
        let args: Vec<&[u8]> = argv.iter().map(|a| a.as_bytes()).collect();
        crate::redis::conn::encode_command(&mut out, &args);
    }
    out.to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(buf: &[u8]) -> Tx {
        assert!(starts_multi(buf));
        scan(buf, TxScan::default(), &mut Vec::new())
    }

    const HSET: &[&str] = &["HSET", "__tandem:ckpt:t:a2b", "offset", "9"];

    #[test]
    fn a_batch_is_an_echo_and_only_its_checkpoint_is_kept() {
        let buf = resp(&[
            &["MULTI"],
            &["SELECT", "3"],
            &["SET", "k", "v"],
            &["SELECT", "0"],
            HSET,
            &["EXEC"],
            &["SET", "after", "x"],
        ]);
        let Tx::Echo { used, ckpt, db } = run(&buf) else {
            panic!("not an echo")
        };
        let after = resp(&[&["SET", "after", "x"]]);
        assert_eq!(used, buf.len() - after.len());
        assert_eq!(&buf[ckpt], &resp(&[HSET])[..]);
        assert_eq!(db, Some(0));
    }

    #[test]
    fn user_transactions_are_not_taken() {
        let user = resp(&[&["MULTI"], &["SET", "k", "v"], &["EXEC"]]);
        assert_eq!(run(&user), Tx::NotEcho);
        // A tandem key written first, not last: the engine's rule decides.
        let early = resp(&[&["MULTI"], HSET, &["SET", "k", "v"], &["EXEC"]]);
        assert_eq!(run(&early), Tx::NotEcho);
        let empty = resp(&[&["MULTI"], &["EXEC"]]);
        assert_eq!(run(&empty), Tx::NotEcho);
        let other = resp(&[&["MULTI"], &["SET", "__tandem:x", "v"], &["EXEC"]]);
        assert_eq!(run(&other), Tx::NotEcho);
        assert!(!starts_multi(&resp(&[&["SET", "k", "v"]])));
    }

    #[test]
    fn a_transaction_split_anywhere_resumes_to_the_same_outcome() {
        let buf = resp(&[&["MULTI"], &["SET", "k", "v"], HSET, &["EXEC"]]);
        let whole = run(&buf);
        assert!(matches!(whole, Tx::Echo { .. }));
        for cut in 15..buf.len() {
            let mut spans = Vec::new();
            let Tx::Incomplete(state) = scan(&buf[..cut], TxScan::default(), &mut spans) else {
                panic!("cut at {cut} is not incomplete");
            };
            assert_eq!(scan(&buf, state, &mut spans), whole, "cut at {cut}");
        }
    }

    #[test]
    fn malformed_bytes_are_left_to_the_reader() {
        let mut buf = resp(&[&["MULTI"], &["SET", "k", "v"]]);
        buf.extend_from_slice(b"+OK\r\n");
        assert_eq!(run(&buf), Tx::NotEcho);
        let bad_db = resp(&[&["MULTI"], &["SELECT", "x"], HSET, &["EXEC"]]);
        assert_eq!(run(&bad_db), Tx::NotEcho);
    }

    use proptest::prelude::*;

    fn arg() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("__tandem:ckpt:t".to_string()),
            Just("k".to_string()),
            Just("7".to_string()),
            "[a-z_:]{0,12}",
        ]
    }

    fn command() -> impl Strategy<Value = Vec<String>> {
        let name = prop_oneof![
            Just("HSET"),
            Just("hset"),
            Just("SET"),
            Just("SELECT"),
            Just("EXEC"),
            Just("MULTI"),
        ];
        (name, proptest::collection::vec(arg(), 0..5)).prop_map(|(n, mut rest)| {
            rest.insert(0, n.to_string());
            rest
        })
    }

    proptest! {
        /// Against the rule written plainly over the parsed commands, and whatever
        /// the cut between what is at hand and what comes later.
        #[test]
        fn agrees_with_the_rule_and_resumes_anywhere(
            cmds in proptest::collection::vec(command(), 0..8),
            cut in any::<proptest::sample::Index>(),
        ) {
            let mut all: Vec<Vec<String>> = vec![vec!["MULTI".into()]];
            all.extend(cmds.iter().cloned());
            let refs: Vec<Vec<&str>> = all.iter().map(|c| c.iter().map(String::as_str).collect()).collect();
            let slices: Vec<&[&str]> = refs.iter().map(Vec::as_slice).collect();
            let buf = resp(&slices);
            // The rule: up to the first EXEC, no MULTI, every SELECT a number, and the
            // last other command an HSET of a `__tandem:` key with a field and value.
            let mut want = Tx::NotEcho;
            let (mut last, mut db, mut at) = (None, None, 15usize);
            let mut complete = false;
            for c in &cmds {
                let len = resp(&[&c.iter().map(String::as_str).collect::<Vec<_>>()]).len();
                let name = c[0].to_ascii_uppercase();
                if name == "EXEC" {
                    complete = true;
                    if let Some((r, c2)) = last.clone() {
                        let c2: &Vec<String> = c2;
                        if c2[0].eq_ignore_ascii_case("HSET") && c2.len() >= 4 && c2[1].starts_with("__tandem:") {
                            want = Tx::Echo { used: at + len, ckpt: r, db };
                        }
                    }
                    break;
                }
                if name == "MULTI" {
                    complete = true;
                    break;
                }
                if name == "SELECT" {
                    match c.get(1).and_then(|d| d.parse::<u32>().ok()) {
                        Some(d) => db = Some(d),
                        None => { complete = true; break; }
                    }
                } else {
                    last = Some((at..at + len, c));
                }
                at += len;
            }
            let got = scan(&buf, TxScan::default(), &mut Vec::new());
            if complete {
                prop_assert_eq!(&got, &want);
            } else {
                prop_assert!(matches!(got, Tx::Incomplete(_)));
            }
            let cut = 15 + cut.index(buf.len() - 14);
            let mut spans = Vec::new();
            let resumed = match scan(&buf[..cut], TxScan::default(), &mut spans) {
                Tx::Incomplete(state) => scan(&buf, state, &mut spans),
                decided => decided,
            };
            prop_assert_eq!(resumed, got);
        }

        #[test]
        fn arbitrary_bytes_after_multi_never_panic(tail in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut buf = b"*1\r\n$5\r\nMULTI\r\n".to_vec();
            buf.extend_from_slice(&tail);
            let _ = scan(&buf, TxScan::default(), &mut Vec::new());
        }
    }
}
