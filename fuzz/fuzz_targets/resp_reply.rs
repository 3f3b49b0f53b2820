#![no_main]
//! Any bytes as a server's replies, read the way `Conn::read_frame` reads them
//! (`redis_protocol::resp2::decode::decode_bytes_mut` on the receive buffer, one frame
//! after another until it is incomplete or unreadable), with `frame_text` on each frame.
//! Checks: never a panic; each frame consumes 1..=len bytes; a frame cut short (the
//! first byte picks where) is "incomplete", never another frame or an error; and what
//! `scan::clean_array` (the sinks' EXEC fast path) accepts is an array of that many
//! non-error replies, that many bytes long, for the decoder too.

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use redis_protocol::resp2::decode::decode_bytes_mut;
use tandem::redis::conn::{Frame, frame_text};
use tandem::redis::scan::{Clean, clean_array};

fuzz_target!(|data: &[u8]| {
    let Some((&cut, data)) = data.split_first() else {
        return;
    };
    if let Clean::Yes { items, used } = clean_array(data) {
        let mut b = BytesMut::from(data);
        match decode_bytes_mut(&mut b) {
            Ok(Some((Frame::Array(got), n, _))) => {
                assert_eq!(n, used);
                assert_eq!(got.len(), items);
                assert!(!got.iter().any(|f| matches!(f, Frame::Error(_))));
            }
            other => panic!("clean_array accepted what the decoder reads as {other:?}"),
        }
    }
    let mut buf = BytesMut::from(data);
    let mut first = true;
    loop {
        let before = buf.len();
        let snapshot = buf.clone();
        match decode_bytes_mut(&mut buf) {
            Ok(Some((frame, n, _))) => {
                assert!(n >= 1 && n <= before, "frame of {n} bytes from {before}");
                assert_eq!(buf.len(), before - n);
                let _ = frame_text(&frame);
                if first && n > 1 {
                    let at = (cut as usize) % n;
                    let mut short = BytesMut::from(&snapshot[..at]);
                    match decode_bytes_mut(&mut short) {
                        Ok(None) => {}
                        other => panic!("the first {at} of a {n}-byte frame read as {other:?}"),
                    }
                }
                first = false;
            }
            Ok(None) | Err(_) => break,
        }
    }
});
