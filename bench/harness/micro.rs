//! Scenario 7: RESP stream parse throughput, in process (no servers).
//!
//! A buffer of replication-stream-like commands (SET, INCR, RPUSH, HSET, with SELECT and
//! PING sprinkled in) is parsed twice: by `redis_protocol`'s `decode_bytes_mut` alone
//! (the decoder tandem uses), and by tandem's own `EventReader` fed through its on-disk
//! spool (the consumer path of the replica link: spool records → commands with offsets).

use std::time::Instant;

use bytes::{Bytes, BytesMut};
use redis_protocol::resp2::decode::decode_bytes_mut;
use tandem::redis::replica::spool::{Record, spool};
use tandem::redis::replica::{Event, EventReader};

use super::client::encode;
use super::data::{Pool, Rng};
use super::{Config, Outcome, Res, Row};

/// The stream buffer and its command count.
fn stream_bytes(size: usize, seed: u64) -> (Vec<u8>, u64) {
    let mut rng = Rng::new(seed);
    let pool = Pool::new(&mut rng);
    let mut out = Vec::with_capacity(size + 1024);
    let mut n = 0u64;
    while out.len() < size {
        let i = rng.below(100_000).to_string();
        match n % 100 {
            0 => encode(&mut out, &[b"SELECT", b"0"]),
            1 => encode(&mut out, &[b"PING"]),
            2..40 => encode(
                &mut out,
                &[
                    b"SET",
                    format!("k:{i}").as_bytes(),
                    pool.slice(&mut rng, 32),
                ],
            ),
            40..60 => encode(&mut out, &[b"INCR", format!("n:{i}").as_bytes()]),
            60..80 => encode(
                &mut out,
                &[
                    b"RPUSH",
                    format!("l:{i}").as_bytes(),
                    pool.slice(&mut rng, 16),
                ],
            ),
            _ => {
                let (f1, f2) = (pool.slice(&mut rng, 20), pool.slice(&mut rng, 20));
                encode(
                    &mut out,
                    &[b"HSET", format!("h:{i}").as_bytes(), b"a", f1, b"b", f2],
                );
            }
        }
        n += 1;
    }
    (out, n)
}

fn decode_all(buf: &[u8], expect: u64) -> Res<f64> {
    let mut b = BytesMut::from(buf);
    let t0 = Instant::now();
    let mut n = 0u64;
    while let Some((frame, _, _)) =
        decode_bytes_mut(&mut b).map_err(|e| format!("decode: {e:?}"))?
    {
        std::hint::black_box(frame);
        n += 1;
    }
    let secs = t0.elapsed().as_secs_f64();
    if n != expect || !b.is_empty() {
        return Err(format!("decoded {n} of {expect} commands").into());
    }
    Ok(buf.len() as f64 / 1e6 / secs)
}

/// Through the spool (64 KiB records, as the link writes them) and `EventReader`.
fn event_reader(buf: &[u8], expect: u64) -> Res<f64> {
    let dir = tempfile::Builder::new()
        .prefix("tandem-bench-spool-")
        .tempdir()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let data = Bytes::copy_from_slice(buf);
    rt.block_on(async move {
        let (mut w, r) = spool(dir.path(), 256 << 20)?;
        let mut events = EventReader::new(r, "bench".into(), 0);
        let t0 = Instant::now();
        let writer = tokio::spawn(async move {
            w.append(&Record::Continue {
                replid: "0".repeat(40),
                offset: 0,
            })
            .await?;
            let mut rest = data;
            while !rest.is_empty() {
                let chunk = rest.split_to(rest.len().min(64 << 10));
                w.append(&Record::Stream(chunk)).await?;
            }
            Ok::<_, std::io::Error>(())
        });
        let mut n = 0u64;
        while n < expect {
            match events.next().await? {
                Some(Event::Command(c)) => {
                    std::hint::black_box(&c);
                    n += 1;
                }
                Some(_) => {}
                None => break,
            }
        }
        let secs = t0.elapsed().as_secs_f64();
        writer.await??;
        if n != expect || events.offset() != buf.len() as u64 {
            return Err(
                format!("read {n} of {expect} commands, offset {}", events.offset()).into(),
            );
        }
        Ok(buf.len() as f64 / 1e6 / secs)
    })
}

pub fn resp_parse(cfg: &Config) -> Vec<Row> {
    let mb = cfg.sizes.micro_bytes as f64 / 1e6;
    let mut dec = Row::new(
        format!("7. RESP decode, {mb:.0} MB (decode_bytes_mut)"),
        "MB/s",
        true,
    );
    let mut evr = Row::new(
        format!("7. RESP stream via spool + EventReader, {mb:.0} MB"),
        "MB/s",
        true,
    );
    for r in [&mut dec, &mut evr] {
        r.baseline = Outcome::NotAvailable("in-process micro benchmark".into());
    }
    let (buf, n) = stream_bytes(cfg.sizes.micro_bytes, cfg.seed);
    for row in [&mut dec, &mut evr] {
        row.notes.push(format!(
            "{n} commands, {:.1} B/command",
            buf.len() as f64 / n as f64
        ));
    }
    for _ in 0..cfg.runs {
        for (row, f) in [
            (&mut dec, decode_all as fn(&[u8], u64) -> Res<f64>),
            (&mut evr, event_reader),
        ] {
            match (&mut row.tandem, f(&buf, n)) {
                (Outcome::Measured(v), Ok(x)) => v.push(x),
                (o @ Outcome::Measured(_), Err(e)) => *o = Outcome::Failed(e.to_string()),
                _ => {}
            }
        }
    }
    vec![dec, evr]
}
