//! Corrupt and truncated input: cutting any fixture anywhere and flipping random bytes
//! gives either a valid parse or an `RdbError` with an offset inside the input, never a
//! panic, and never a huge allocation (a counting global allocator checks the peak).

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use proptest::prelude::*;
use tandem::redis::rdb::*;

struct Counting;
static LIVE: AtomicUsize = AtomicUsize::new(0);
static BIGGEST: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size(), Ordering::Relaxed);
        BIGGEST.fetch_max(l.size(), Ordering::Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size(), Ordering::Relaxed);
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        BIGGEST.fetch_max(n, Ordering::Relaxed);
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static A: Counting = Counting;

fn fixtures() -> Vec<Vec<u8>> {
    let shared = PathBuf::from("/work/shared/fixtures");
    let project = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/rdb");
    let mut out = vec![];
    for p in [
        shared.join("rdb/redis-6.2.rdb"),
        shared.join("rdb/redis-7.2.rdb"),
        shared.join("rdb/redis-7.4.rdb"),
        shared.join("tair/tair-7.0.rdb"),
        project.join("redis-7.0.rdb"),
        project.join("redis-7.0-nocrc.rdb"),
    ] {
        if let Ok(d) = std::fs::read(&p) {
            out.push(d);
        }
    }
    assert!(out.len() >= 2);
    out
}

/// Parse everything (decoding every value, and also via read_raw), with the checksum
/// check off so corruption reaches the decoders instead of stopping at the trailer.
fn parse_all(data: &[u8], raw: bool) -> Result<(), RdbError> {
    let opts = ParseOptions {
        verify_checksum: false,
        ..Default::default()
    };
    let mut p = RdbParser::with_options(data, opts)?;
    let version = p.version();
    while let Some(ev) = p.next_event()? {
        if let Event::Key(k) = ev {
            if raw && let RawValue::Complete(r) = p.read_raw(1 << 12)? {
                let mut v = RdbParser::for_value(&r[..], version, opts)?;
                let mut kc = KeyCommands::new(&k, CommandOptions::default());
                while kc.next_batch(&mut v)?.is_some() {}
                continue;
            }
            let mut kc = KeyCommands::new(&k, CommandOptions::default());
            while kc.next_batch(&mut p)?.is_some() {}
        }
    }
    Ok(())
}

fn check(data: &[u8], raw: bool) {
    match parse_all(data, raw) {
        Ok(()) => {}
        Err(e) => {
            assert!(
                e.offset <= data.len() as u64,
                "offset {} past the end ({}): {e}",
                e.offset,
                data.len()
            );
            assert!(!e.to_string().is_empty());
        }
    }
    let big = BIGGEST.load(Ordering::Relaxed);
    assert!(big < 64 << 20, "an allocation of {big} bytes");
}

#[test]
fn every_fixture_parses_clean() {
    for f in fixtures() {
        parse_all(&f, false).unwrap();
        parse_all(&f, true).unwrap();
    }
}

#[test]
fn truncation_at_every_point_of_a_small_fixture() {
    let f = std::fs::read(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/rdb/redis-7.0-nocrc.rdb"),
    )
    .unwrap();
    for cut in 0..f.len() {
        let e = parse_all(&f[..cut], cut % 2 == 0).expect_err("truncated input must fail");
        assert!(e.offset <= cut as u64, "cut {cut}: {e}");
    }
}

#[test]
fn checksum_mismatch_is_reported() {
    let mut f = std::fs::read("/work/shared/fixtures/rdb/redis-7.2.rdb").unwrap();
    let n = f.len();
    f[n - 3] ^= 1;
    let mut p = RdbParser::new(&f[..]).unwrap();
    let e = loop {
        match p.next_event() {
            Ok(Some(_)) => {}
            Ok(None) => panic!("no error"),
            Err(e) => break e,
        }
    };
    assert!(
        matches!(e.kind, RdbErrorKind::ChecksumMismatch { .. }),
        "{e}"
    );
    assert_eq!(e.offset, n as u64 - 8);
}

#[test]
fn newer_version_is_a_clear_error() {
    let e = RdbParser::new(&b"REDIS0013\xff"[..]).err().unwrap();
    assert!(
        matches!(e.kind, RdbErrorKind::UnsupportedVersion { version: 13, .. }),
        "{e}"
    );
    let e = RdbParser::new(&b"VALKEY081\xff"[..]).err().unwrap();
    assert!(
        matches!(e.kind, RdbErrorKind::UnsupportedVersion { version: 81, .. }),
        "{e}"
    );
    assert!(RdbParser::new(&b"VALKEY080\xff\0\0\0\0\0\0\0\0"[..]).is_ok());
    let e = RdbParser::new(&b"MEMCACHED"[..]).err().unwrap();
    assert!(matches!(e.kind, RdbErrorKind::BadMagic));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn cut_and_flip_never_panics(
        which in 0usize..6,
        cut in 0.0f64..1.0,
        flips in proptest::collection::vec((0.0f64..1.0, any::<u8>()), 0..8),
        raw in any::<bool>(),
    ) {
        let all = fixtures();
        let mut f = all[which % all.len()].clone();
        for (pos, x) in flips {
            let i = ((f.len() as f64) * pos) as usize;
            if i < f.len() {
                f[i] ^= x.max(1);
            }
        }
        let n = ((f.len() as f64) * cut) as usize;
        check(&f[..n.max(1)], raw);
        check(&f, raw);
    }
}
