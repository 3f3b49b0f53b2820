//! Deterministic data sets and write loads, sent by the harness itself with pipelined
//! writes (so the same bytes land on the source in every run and on every machine).

use std::time::{Duration, Instant};

use super::Res;
use super::client::Client;

/// Commands per pipeline round trip: large enough to keep the server busy, small enough
/// that replies never pile up.
const PIPELINE: usize = 1000;

/// SplitMix64: tiny, fast, and fixed forever (a data set must not change with a crate
/// version).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Random alphanumeric bytes, sliced at random offsets for values: generating each value
/// byte by byte would make the loader, not the server, the bottleneck.
pub struct Pool {
    bytes: Vec<u8>,
}

impl Pool {
    pub fn new(rng: &mut Rng) -> Pool {
        const ALNUM: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
        let bytes = (0..1 << 20)
            .map(|_| ALNUM[rng.below(62) as usize])
            .collect();
        Pool { bytes }
    }

    pub fn slice(&self, rng: &mut Rng, len: usize) -> &[u8] {
        let start = rng.below((self.bytes.len() - len) as u64) as usize;
        &self.bytes[start..start + len]
    }
}

fn maybe_flush(c: &mut Client) -> Res<()> {
    if c.queued() >= PIPELINE || c.queued_bytes() >= 4 << 20 {
        c.flush()?;
    }
    Ok(())
}

/// Queue the write `args` (name, key, payload…); returns its payload bytes.
fn queue_write(c: &mut Client, args: &[Vec<u8>]) -> Res<u64> {
    let refs: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
    c.queue(&refs);
    maybe_flush(c)?;
    Ok(args[2..].iter().map(|a| a.len() as u64).sum())
}

/// `n` keys of mixed types into db 0, ~300 bytes of payload per key on average:
/// 50% strings (100–500 B), 15% hashes (8 fields), 15% lists (10 elements), 10% sets
/// (10 members), 10% sorted sets (10 members), and `streams` streams of
/// `stream_entries` entries each (counted in `n`). Returns the payload bytes written.
pub fn populate_mixed(port: u16, n: u64, streams: u64, stream_entries: u64, seed: u64) -> Res<u64> {
    let mut c = Client::connect(port)?;
    let mut rng = Rng::new(seed);
    let pool = Pool::new(&mut rng);
    let mut payload = 0u64;
    for s in 0..streams.min(n) {
        let key = format!("stream:{s}");
        for e in 0..stream_entries {
            let id = format!("{}-1", e + 1);
            let v = pool.slice(&mut rng, 40);
            c.queue(&[b"XADD", key.as_bytes(), id.as_bytes(), b"f", v]);
            payload += 40;
            maybe_flush(&mut c)?;
        }
    }
    let mut args: Vec<Vec<u8>> = Vec::with_capacity(32);
    for i in streams.min(n)..n {
        args.clear();
        let kind = rng.below(100);
        match kind {
            0..50 => {
                let len = 100 + rng.below(401) as usize;
                args.push(b"SET".to_vec());
                args.push(format!("str:{i}").into_bytes());
                args.push(pool.slice(&mut rng, len).to_vec());
            }
            50..65 => {
                args.push(b"HSET".to_vec());
                args.push(format!("hash:{i}").into_bytes());
                for f in 0..8 {
                    args.push(format!("field{f}").into_bytes());
                    args.push(pool.slice(&mut rng, 30).to_vec());
                }
            }
            65..80 => {
                args.push(b"RPUSH".to_vec());
                args.push(format!("list:{i}").into_bytes());
                for _ in 0..10 {
                    args.push(pool.slice(&mut rng, 30).to_vec());
                }
            }
            80..90 => {
                args.push(b"SADD".to_vec());
                args.push(format!("set:{i}").into_bytes());
                for _ in 0..10 {
                    args.push(pool.slice(&mut rng, 30).to_vec());
                }
            }
            _ => {
                args.push(b"ZADD".to_vec());
                args.push(format!("zset:{i}").into_bytes());
                for _ in 0..10 {
                    args.push(rng.below(1_000_000).to_string().into_bytes());
                    args.push(pool.slice(&mut rng, 24).to_vec());
                }
            }
        }
        payload += queue_write(&mut c, &args)?;
    }
    c.flush()?;
    Ok(payload)
}

/// `n` small keys, a fifth each of strings (16 B), hashes, lists, sets and sorted sets
/// of 10 elements of 8 B: the per-key cost of a full sync, where payload bytes are few.
/// Returns the payload bytes written.
pub fn populate_small(port: u16, n: u64, seed: u64) -> Res<u64> {
    let mut c = Client::connect(port)?;
    let mut rng = Rng::new(seed);
    let pool = Pool::new(&mut rng);
    let mut payload = 0u64;
    let mut args: Vec<Vec<u8>> = Vec::with_capacity(32);
    for i in 0..n {
        args.clear();
        let (cmd, prefix, scored) = match i % 5 {
            0 => (&b"SET"[..], "s", false),
            1 => (&b"HSET"[..], "h", false),
            2 => (&b"RPUSH"[..], "l", false),
            3 => (&b"SADD"[..], "t", false),
            _ => (&b"ZADD"[..], "z", true),
        };
        args.push(cmd.to_vec());
        args.push(format!("{prefix}:{i}").into_bytes());
        if i % 5 == 0 {
            args.push(pool.slice(&mut rng, 16).to_vec());
        } else {
            for e in 0..10u64 {
                if i % 5 == 1 {
                    args.push(format!("f{e}").into_bytes());
                }
                if scored {
                    args.push(rng.below(1_000_000).to_string().into_bytes());
                }
                args.push(pool.slice(&mut rng, 8).to_vec());
            }
        }
        payload += queue_write(&mut c, &args)?;
    }
    c.flush()?;
    Ok(payload)
}

/// One sorted set of `n` members and one list of `n` elements (the big-key case:
/// a replicator that holds a whole key in memory shows it here).
pub fn populate_big(port: u16, n: u64, seed: u64) -> Res<()> {
    let mut c = Client::connect(port)?;
    let mut rng = Rng::new(seed);
    let pool = Pool::new(&mut rng);
    let mut i = 0;
    while i < n {
        let end = (i + 500).min(n);
        let mut z: Vec<Vec<u8>> = vec![b"ZADD".to_vec(), b"big:zset".to_vec()];
        let mut l: Vec<Vec<u8>> = vec![b"RPUSH".to_vec(), b"big:list".to_vec()];
        for j in i..end {
            z.push(rng.below(1 << 40).to_string().into_bytes());
            // The index keeps members unique, so the set really has `n` members.
            let mut m = format!("m{j}:").into_bytes();
            m.extend_from_slice(pool.slice(&mut rng, 12));
            z.push(m);
            l.push(pool.slice(&mut rng, 16).to_vec());
        }
        c.queue(&z.iter().map(Vec::as_slice).collect::<Vec<_>>());
        c.queue(&l.iter().map(Vec::as_slice).collect::<Vec<_>>());
        maybe_flush(&mut c)?;
        i = end;
    }
    c.flush()?;
    Ok(())
}

/// The catch-up load: `n` pipelined writes, a third each SET (100k keys, 16 B values),
/// INCR (10k counters) and RPUSH (1k lists, 8 B elements).
pub fn write_mix(port: u16, n: u64, seed: u64, prefix: &str) -> Res<()> {
    let mut c = Client::connect(port)?;
    let mut rng = Rng::new(seed);
    let pool = Pool::new(&mut rng);
    for i in 0..n {
        match i % 3 {
            0 => {
                let k = format!("{prefix}:s:{}", rng.below(100_000));
                c.queue(&[b"SET", k.as_bytes(), pool.slice(&mut rng, 16)]);
            }
            1 => {
                let k = format!("{prefix}:n:{}", rng.below(10_000));
                c.queue(&[b"INCR", k.as_bytes()]);
            }
            _ => {
                let k = format!("{prefix}:l:{}", rng.below(1_000));
                c.queue(&[b"RPUSH", k.as_bytes(), pool.slice(&mut rng, 8)]);
            }
        }
        maybe_flush(&mut c)?;
    }
    c.flush()?;
    Ok(())
}

/// Rate-limited SETs (100k keys, 32 B values) at `rate`/s for `dur`: the commands due
/// so far are sent each millisecond. Returns the writes actually sent (the caller checks
/// the rate was held, or the lag figures would describe a lighter load).
pub fn write_steady(port: u16, rate: u64, dur: Duration, seed: u64) -> Res<u64> {
    let mut c = Client::connect(port)?;
    let mut rng = Rng::new(seed);
    let pool = Pool::new(&mut rng);
    let start = Instant::now();
    let mut sent = 0u64;
    loop {
        let el = start.elapsed();
        if el >= dur {
            break;
        }
        let due = (rate as u128 * el.as_micros() / 1_000_000) as u64;
        while sent < due {
            let k = format!("st:{}", rng.below(100_000));
            c.queue(&[b"SET", k.as_bytes(), pool.slice(&mut rng, 32)]);
            sent += 1;
            maybe_flush(&mut c)?;
        }
        c.flush()?;
        std::thread::sleep(Duration::from_millis(1));
    }
    c.flush()?;
    Ok(sent)
}
