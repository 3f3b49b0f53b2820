#![no_main]
//! The checkpoint hash reader, `TargetCheckpoint::from_hgetall` (standalone sinks and
//! `cluster::ckpt` both use it), on any HGETALL reply: a fuzzed list of replies (fields
//! and values of any bytes, integers, nulls, errors, nested arrays, odd lengths) and
//! fuzzed non-array replies. Never a panic. And the round trip: the fields of a valid
//! checkpoint (built from the input) as `hset_argv` writes them read back equal.

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use redis_protocol::resp2::decode::decode_bytes_mut;
use tandem::core::ReplPosition;
use tandem::redis::conn::Frame;
use tandem::redis::sink::checkpoint::{CkptState, TargetCheckpoint};

const NAMES: [&str; 6] = ["replid", "offset", "db", "state", "run", "seq"];

fn u64_of(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    let n = b.len().min(8);
    a[..n].copy_from_slice(&b[..n]);
    u64::from_le_bytes(a)
}

fuzz_target!(|data: &[u8]| {
    // Items separated by 0xff; each item's first byte picks its kind.
    let mut items = Vec::new();
    for part in data.split(|&b| b == 0xff) {
        let (kind, body) = part.split_first().map_or((0, &[][..]), |(k, b)| (*k, b));
        let text = || Bytes::copy_from_slice(body);
        items.push(match kind % 8 {
            0 => Frame::BulkString(Bytes::from_static(NAMES[body.len() % 6].as_bytes())),
            1 | 2 => Frame::BulkString(text()),
            3 => Frame::SimpleString(text()),
            4 => Frame::Integer(u64_of(body) as i64),
            5 => Frame::Null,
            6 => Frame::Error(String::from_utf8_lossy(body).into_owned().into()),
            _ => Frame::Array(vec![Frame::BulkString(text())]),
        });
    }
    let key = b"__tandem:ckpt:fuzz";
    let _ = TargetCheckpoint::from_hgetall("fuzz:6379", key, Frame::Array(items.clone()));
    if let Some(f) = items.pop() {
        let _ = TargetCheckpoint::from_hgetall("fuzz:6379", key, f);
    }

    // Round trip of a valid checkpoint.
    let (a, b) = data.split_at(data.len() / 2);
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let c = TargetCheckpoint {
        pos: ReplPosition::new(text(a), u64_of(b)),
        db: u64_of(a) as u32,
        state: if data.len() % 2 == 0 {
            CkptState::Full
        } else {
            CkptState::Incr
        },
        run: text(b).into(),
        seq: u64_of(b.get(8..).unwrap_or_default()),
    };
    let argv = c.hset_argv(&Bytes::from_static(key));
    assert_eq!(&argv[0][..], b"HSET");
    let reply = Frame::Array(argv[2..].iter().cloned().map(Frame::BulkString).collect());
    let back = TargetCheckpoint::from_hgetall("fuzz:6379", key, reply);
    assert_eq!(
        back.ok().flatten().as_ref(),
        Some(&c),
        "round trip of {c:?}"
    );
    // The same through the bytes the sinks send (`encode_hset`) and the reply decoder.
    let mut wire = BytesMut::new();
    c.encode_hset(&mut wire, key);
    let Ok(Some((Frame::Array(mut args), n, _))) = decode_bytes_mut(&mut wire) else {
        panic!("encode_hset wrote an unreadable command for {c:?}");
    };
    assert!(n > 0 && wire.is_empty());
    let reply = Frame::Array(args.split_off(2));
    let back = TargetCheckpoint::from_hgetall("fuzz:6379", key, reply);
    assert_eq!(
        back.ok().flatten().as_ref(),
        Some(&c),
        "wire round trip of {c:?}"
    );
});
