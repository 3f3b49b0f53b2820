//! `key_slot` against a real server's `CLUSTER KEYSLOT`, over tricky and random keys.

mod support;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use support::*;
use tandem::redis::slot::key_slot;

#[test]
fn key_slot_matches_cluster_keyslot() {
    let server = RedisServer::start_with(ServerOpts {
        cluster: true,
        ..Default::default()
    });
    let c = std::cell::RefCell::new(server.client());
    let check = |key: &[u8]| {
        let Frame::Integer(theirs) = c.borrow_mut().cmd_bytes(&[b"CLUSTER", b"KEYSLOT", key])
        else {
            panic!("CLUSTER KEYSLOT {key:?}");
        };
        assert_eq!(
            i64::from(key_slot(key)),
            theirs,
            "{:?}",
            String::from_utf8_lossy(key)
        );
    };
    for key in [
        &b"foo"[..],
        b"",
        b"{",
        b"}",
        b"{}",
        b"{}x",
        b"foo{}{bar}",
        b"foo{{bar}}zap",
        b"foo{bar}{zap}",
        b"{user1000}.following",
        b"a{b",
        b"a}b{c}",
        b"\xff\x00{\x01}",
    ] {
        check(key);
    }
    let keys = proptest::collection::vec(
        prop_oneof![Just(b'{'), Just(b'}'), Just(b'a'), any::<u8>()],
        0..12,
    );
    TestRunner::new(Config::with_cases(500))
        .run(&keys, |key| {
            check(&key);
            Ok(())
        })
        .unwrap();
}
