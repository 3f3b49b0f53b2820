//! Scenarios 4 and 5: two-way against one-way throughput, and a cluster target against
//! a standalone one. Both need tandem features that may not be in the binary yet: the
//! harness asks the binary (`--help`) or simply tries, and reports "not available"
//! rather than a number when they are missing.

use std::time::{Duration, Instant};

use super::attach::{
    Attached, Kind, SOURCE_OPTS, count_tandem_keys, exact_user_keys, tandem_sync_missing,
    wait_streaming,
};
use super::client::{Client, info_field};
use super::scenarios::timed_full_sync;
use super::servers::{Redis, Tandem, cpu_secs, tandem_has, wait_until};
use super::{Config, Outcome, Res, Row, data};

pub(super) fn unavailable(mut row: Row, why: String) -> Row {
    row.tandem = Outcome::NotAvailable(why.clone());
    row.baseline = Outcome::NotAvailable(why);
    row
}

/// Waits until `key` on `port` holds `token`.
fn wait_marker(port: u16, key: &[u8], token: &str, limit: Duration, t: &mut Tandem) -> Res<()> {
    let mut c = Client::connect(port)?;
    wait_until("a marker to cross", limit, Duration::from_millis(2), || {
        t.check_alive()?;
        Ok(c.get(key)?.as_deref() == Some(token.as_bytes()))
    })
}

/// Writes `n` (the catch-up mix under `prefix`) then a marker, and returns the time from
/// the first write until the marker is on the other side, as writes/s.
fn timed_direction(
    from: u16,
    to: u16,
    n: u64,
    seed: u64,
    prefix: &str,
    limit: Duration,
    t: &mut Tandem,
) -> Res<f64> {
    let t0 = Instant::now();
    data::write_mix(from, n, seed, prefix)?;
    let key = format!("bench:end:{prefix}");
    Client::connect(from)?.ok(&[b"SET", key.as_bytes(), b"done"])?;
    wait_marker(to, key.as_bytes(), "done", limit, t)?;
    Ok(n as f64 / t0.elapsed().as_secs_f64())
}

pub fn two_way(cfg: &Config) -> Vec<Row> {
    let n = cfg.sizes.twoway_writes;
    let mut ab = Row::new(
        format!("4. two-way A→B, {n} writes each way at once"),
        "writes/s",
        true,
    );
    let mut ba = Row::new(
        format!("4. two-way B→A, {n} writes each way at once"),
        "writes/s",
        true,
    );
    ab.baseline_label = "tandem one-way";
    ba.baseline_label = "tandem one-way";
    // Both directions loaded at once run twice the work of one-way (two writers, two
    // sources, two targets) on the same cores; this row loads one direction of a running
    // two-way pair, so what it compares is the cost of two-way itself (echo filtering,
    // conflict detection), not the machine shared by twice the work.
    let mut solo = Row::new(
        format!("4. two-way A→B, {n} writes, B idle"),
        "writes/s",
        true,
    );
    solo.baseline_label = "tandem one-way";
    // Both directions loaded, against the same load carried by two one-way syncs at once
    // (A→B and C→D, one writer each): the machine does the same client work in both
    // columns; two-way adds each side feeding tandem its stream (echoes included), and
    // tandem reading it and detecting conflicts.
    let mut both = Row::new(
        format!("4. two-way, {n} writes each way at once, per direction"),
        "writes/s",
        true,
    );
    both.baseline_label = "two one-way syncs loaded at once, per direction";
    // Two-way reads each side's replication stream, so each side feeds a replica (tandem)
    // with everything applied to it, echoes included; a one-way target does not. These
    // rows give one-way targets a native replica each (as a deployment with HA has):
    // what is left between the columns is tandem's own cost.
    let mut solo_r = Row::new(
        format!("4. two-way A→B, {n} writes, B idle (vs targets with a replica)"),
        "writes/s",
        true,
    );
    solo_r.baseline_label = "tandem one-way, target with a native replica";
    let mut both_r = Row::new(
        format!(
            "4. two-way, {n} writes each way at once, per direction (vs targets with a replica)"
        ),
        "writes/s",
        true,
    );
    both_r.baseline_label = "two one-way syncs loaded at once, targets with a native replica";
    let rows = |why: String, rows: [Row; 6]| -> Vec<Row> {
        rows.into_iter()
            .map(|r| unavailable(r, why.clone()))
            .collect()
    };
    if let Some(why) = tandem_sync_missing(&cfg.tandem_bin) {
        return rows(why, [ab, ba, solo, both, solo_r, both_r]);
    }
    if !tandem_has(&cfg.tandem_bin, &["redis", "twoway"]) {
        let why = "`tandem redis twoway` not yet available in this build".to_string();
        return rows(why, [ab, ba, solo, both, solo_r, both_r]);
    }
    let limit = cfg.sizes.wait_limit;
    for run in 0..cfg.runs {
        let seed = cfg.seed + run as u64;
        // A one-way sync from `a`; with `replicated`, its target has a native replica.
        let sync = |a: &Redis, id: String, replicated: bool| -> Res<(Attached, Option<Redis>)> {
            let target = Redis::start(SOURCE_OPTS)?;
            let replica = match replicated {
                true => Some(native_replica(&target, limit)?),
                false => None,
            };
            let att = super::attach::attach_to(Kind::Tandem, &cfg.tandem_bin, a, target, &id)?;
            Ok((att, replica))
        };
        let one = |replicated: bool| -> Res<(f64, Option<u64>)> {
            let a = Redis::start(SOURCE_OPTS)?;
            let (mut att, _replica) = sync(&a, format!("ow{run}"), replicated)?;
            wait_streaming(&mut att, &a, "ow", limit)?;
            let Attached { target, tandem, .. } = &mut att;
            let t = tandem.as_mut().ok_or("no tandem")?;
            let v = timed_direction(a.port, target.port, n, seed, "ab", limit, t)?;
            Ok((v, t.peak_rss()))
        };
        let pair = || -> Res<(Redis, Redis, Tandem)> {
            let a = Redis::start(SOURCE_OPTS)?;
            let b = Redis::start(SOURCE_OPTS)?;
            let args: Vec<String> = ["redis", "twoway", "--a", &a.url(), "--b", &b.url()]
                .iter()
                .map(|s| s.to_string())
                .collect();
            let mut t = Tandem::start(&cfg.tandem_bin, &args)?;
            // Both links stream before the clock starts.
            for (from, to, key) in [
                (a.port, b.port, "bench:ready:a"),
                (b.port, a.port, "bench:ready:b"),
            ] {
                Client::connect(from)?.ok(&[b"SET", key.as_bytes(), b"1"])?;
                wait_marker(to, key.as_bytes(), "1", limit, &mut t)?;
            }
            Ok((a, b, t))
        };
        // Two one-way syncs, each loaded by its own writer at once.
        let two_one_way = |replicated: bool| -> Res<(f64, f64)> {
            let a = Redis::start(SOURCE_OPTS)?;
            let c = Redis::start(SOURCE_OPTS)?;
            let (mut x, _rx) = sync(&a, format!("ox{run}"), replicated)?;
            wait_streaming(&mut x, &a, "ox", limit)?;
            let (mut y, _ry) = sync(&c, format!("oy{run}"), replicated)?;
            wait_streaming(&mut y, &c, "oy", limit)?;
            let (cp, dp) = (c.port, y.target.port);
            let writer = std::thread::spawn(move || -> Res<Instant> {
                let t0 = Instant::now();
                data::write_mix(cp, n, seed + 1000, "ba")?;
                Client::connect(cp)?.ok(&[b"SET", b"bench:end:ba", b"done"])?;
                Ok(t0)
            });
            let xt = x.tandem.as_mut().ok_or("no tandem")?;
            let ab = timed_direction(a.port, x.target.port, n, seed, "ab", limit, xt)?;
            let t0 = writer.join().map_err(|_| "writer panicked")??;
            let yt = y.tandem.as_mut().ok_or("no tandem")?;
            wait_marker(dp, b"bench:end:ba", "done", limit, yt)?;
            Ok((ab, n as f64 / t0.elapsed().as_secs_f64()))
        };
        let one_side = || -> Res<(f64, Option<u64>)> {
            let (a, b, mut t) = pair()?;
            let v = timed_direction(a.port, b.port, n, seed, "ab", limit, &mut t)?;
            Ok((v, t.peak_rss()))
        };
        let two = || -> Res<(f64, f64, Option<u64>)> {
            let (a, b, mut t) = pair()?;
            let (ap, bp) = (a.port, b.port);
            let writer = std::thread::spawn(move || -> Res<(f64, Instant)> {
                let t0 = Instant::now();
                data::write_mix(bp, n, seed + 1000, "ba")?;
                Client::connect(bp)?.ok(&[b"SET", b"bench:end:ba", b"done"])?;
                Ok((n as f64, t0))
            });
            let ab = timed_direction(ap, bp, n, seed, "ab", limit, &mut t)?;
            let (count, t0) = writer.join().map_err(|_| "writer panicked")??;
            wait_marker(ap, b"bench:end:ba", "done", limit, &mut t)?;
            let ba = count / t0.elapsed().as_secs_f64();
            let rss = t.peak_rss();
            if exact_user_keys(ap)? != exact_user_keys(bp)? {
                return Err("two-way: A and B key counts differ".into());
            }
            Ok((ab, ba, rss))
        };
        match one(true) {
            Ok((v, _)) => push(&mut solo_r.baseline, v),
            Err(e) => solo_r.baseline = Outcome::Failed(e.to_string()),
        }
        match two_one_way(true) {
            Ok((x, y)) => push(&mut both_r.baseline, (x + y) / 2.0),
            Err(e) => both_r.baseline = Outcome::Failed(e.to_string()),
        }
        match one(false) {
            Ok((v, rss)) => {
                push(&mut ab.baseline, v);
                push(&mut ba.baseline, v);
                push(&mut solo.baseline, v);
                // The RSS column is the two-way process's; one-way's goes in a note.
                if let Some(r) = rss {
                    ab.notes.push(format!(
                        "one-way run {run}: tandem peak RSS {:.1} MB",
                        r as f64 / (1 << 20) as f64
                    ));
                }
            }
            Err(e) => {
                ab.baseline = Outcome::Failed(e.to_string());
                ba.baseline = Outcome::Failed(e.to_string());
                solo.baseline = Outcome::Failed(e.to_string());
            }
        }
        match one_side() {
            Ok((v, rss)) => {
                push(&mut solo.tandem, v);
                push(&mut solo_r.tandem, v);
                solo.tandem_rss.extend(rss);
                solo_r.tandem_rss.extend(rss);
            }
            Err(e) => {
                solo.tandem = Outcome::Failed(e.to_string());
                solo_r.tandem = Outcome::Failed(e.to_string());
            }
        }
        match two_one_way(false) {
            Ok((x, y)) => push(&mut both.baseline, (x + y) / 2.0),
            Err(e) => both.baseline = Outcome::Failed(e.to_string()),
        }
        match two() {
            Ok((x, y, rss)) => {
                push(&mut ab.tandem, x);
                push(&mut ba.tandem, y);
                push(&mut both.tandem, (x + y) / 2.0);
                push(&mut both_r.tandem, (x + y) / 2.0);
                both.tandem_rss.extend(rss);
                both_r.tandem_rss.extend(rss);
                ab.tandem_rss.extend(rss);
                ba.tandem_rss.extend(rss);
            }
            Err(e) => {
                ab.tandem = Outcome::Failed(e.to_string());
                ba.tandem = Outcome::Failed(e.to_string());
                both.tandem = Outcome::Failed(e.to_string());
                both_r.tandem = Outcome::Failed(e.to_string());
            }
        }
    }
    vec![ab, ba, solo, both, solo_r, both_r]
}

/// A native replica of `of`, streaming before this returns.
fn native_replica(of: &Redis, limit: Duration) -> Res<Redis> {
    let r = Redis::start(&[])?;
    let port = of.port.to_string();
    r.client()?
        .ok(&[b"REPLICAOF", b"127.0.0.1", port.as_bytes()])?;
    let mut c = r.client()?;
    wait_until(
        "a native replica to stream",
        limit,
        Duration::from_millis(5),
        || {
            let info = c.info("replication")?;
            Ok(info_field(&info, "master_link_status") == Some("up"))
        },
    )?;
    Ok(r)
}

pub(super) fn push(o: &mut Outcome, v: f64) {
    if let Outcome::Measured(vals) = o {
        vals.push(v);
    }
}

/// Three masters with all slots assigned (`redis-cli --cluster create`), waited until
/// every node reports `cluster_state:ok`.
pub(super) fn start_cluster() -> Res<Vec<Redis>> {
    let opts = [
        "--cluster-enabled",
        "yes",
        "--cluster-config-file",
        "nodes.conf",
    ];
    let nodes = (0..3)
        .map(|_| Redis::start(&opts))
        .collect::<Res<Vec<_>>>()?;
    let addrs: Vec<String> = nodes
        .iter()
        .map(|n| format!("127.0.0.1:{}", n.port))
        .collect();
    let out = std::process::Command::new("redis-cli")
        .args(["--cluster", "create"])
        .args(&addrs)
        .args(["--cluster-replicas", "0", "--cluster-yes"])
        .output()?;
    if !out.status.success() {
        return Err(format!(
            "redis-cli --cluster create: {}",
            String::from_utf8_lossy(&out.stdout)
        )
        .into());
    }
    for n in &nodes {
        wait_until(
            "cluster_state:ok",
            Duration::from_secs(30),
            Duration::from_millis(20),
            || {
                let info = n.client()?.info("cluster")?;
                let mut c = n.client()?;
                let ci = match c.cmd(&[b"CLUSTER", b"INFO"])? {
                    super::client::Frame::BulkString(b) => String::from_utf8_lossy(&b).into_owned(),
                    _ => String::new(),
                };
                Ok(info_field(&info, "cluster_enabled") == Some("1")
                    && info_field(&ci, "cluster_state") == Some("ok"))
            },
        )?;
    }
    Ok(nodes)
}

pub fn cluster(cfg: &Config) -> Vec<Row> {
    let s = &cfg.sizes;
    let mut row = Row::new(
        format!(
            "5. full sync {} mixed keys: cluster (3 masters) target",
            s.cluster_keys
        ),
        "keys/s",
        true,
    );
    row.baseline_label = "tandem → standalone";
    if let Some(why) = tandem_sync_missing(&cfg.tandem_bin) {
        return vec![unavailable(row, why)];
    }
    let setup = || -> Res<(Redis, u64)> {
        let source = Redis::start(SOURCE_OPTS)?;
        data::populate_mixed(
            source.port,
            s.cluster_keys,
            s.streams,
            s.stream_entries / 10,
            cfg.seed,
        )?;
        let keys = source.client()?.dbsize()?.ok_or("source DBSIZE")?;
        Ok((source, keys))
    };
    let (source, keys) = match setup() {
        Ok(v) => v,
        Err(e) => return vec![unavailable(row, format!("setup failed: {e}"))],
    };
    for run in 0..cfg.runs {
        match timed_full_sync(
            cfg,
            Kind::Tandem,
            &source,
            keys,
            &format!("cs{run}"),
            |_| Ok(()),
        ) {
            Ok((secs, _)) => push(&mut row.baseline, keys as f64 / secs),
            Err(e) => row.baseline = Outcome::Failed(e.to_string()),
        }
        let to_cluster = || -> Res<(f64, Option<u64>, (f64, f64))> {
            let nodes = start_cluster()?;
            let t0 = Instant::now();
            let args: Vec<String> = [
                "redis",
                "sync",
                "--source",
                &source.url(),
                "--target",
                &nodes[0].url(),
                "--id",
                &format!("cl{run}"),
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            let mut t = Tandem::start(&cfg.tandem_bin, &args)?;
            // Done when the nodes together hold every key (tandem's own keys aside).
            // No progress for a while means tandem does not write to clusters (yet).
            // The clock stops at the DBSIZE poll, not after the SCAN that counts
            // tandem's keys (the standalone yardstick, too, is timed by DBSIZE and
            // SCANs after the clock): tandem's keys only grow, so DBSIZE then minus
            // tandem's keys counted later is at most the user keys of that moment.
            let (mut last, mut since) = (0, Instant::now());
            let mut done_at = None;
            let stall = if cfg.quick {
                Duration::from_secs(10)
            } else {
                Duration::from_secs(60)
            };
            wait_until(
                "cluster target to hold every key",
                s.wait_limit,
                Duration::from_millis(5),
                || {
                    t.check_alive()?;
                    let polled = t0.elapsed();
                    let mut total = 0;
                    for n in &nodes {
                        total += n.client()?.dbsize()?.unwrap_or(0);
                    }
                    if total != last {
                        (last, since) = (total, Instant::now());
                    } else if since.elapsed() > stall {
                        return Err(format!("no progress for {stall:?} at {total} keys").into());
                    }
                    if total < keys {
                        return Ok(false);
                    }
                    let mut ours = 0;
                    for n in &nodes {
                        ours += count_tandem_keys(&mut n.client()?)?;
                    }
                    if total - ours.min(total) < keys {
                        return Ok(false);
                    }
                    done_at = Some(polled);
                    Ok(true)
                },
            )
            .map_err(|e| format!("{e}; tandem log: {}", t.log_tail()))?;
            let mut user = 0;
            for n in &nodes {
                user += exact_user_keys(n.port)?;
            }
            if user != keys {
                return Err(format!("cluster holds {user} keys, source {keys}").into());
            }
            let secs = done_at.ok_or("no end time")?.as_secs_f64();
            let rate = keys as f64 / secs;
            // Where the time goes: tandem against the masters (cluster start included,
            // a few hundredths of a second).
            let cpu = (
                cpu_secs(t.pid()).unwrap_or_default(),
                nodes.iter().filter_map(|n| cpu_secs(n.pid())).sum(),
            );
            Ok((rate, t.peak_rss(), cpu))
        };
        match to_cluster() {
            Ok((v, rss, (cpu_t, cpu_m))) => {
                row.notes.push(format!(
                    "run {run} cluster: CPU s tandem {cpu_t:.2}, 3 masters {cpu_m:.2}"
                ));
                push(&mut row.tandem, v);
                row.tandem_rss.extend(rss);
            }
            // The cluster sink comes after the standalone one: a failure here most
            // likely means it is not there yet; the reason is shown, no number is.
            Err(e) => {
                row.tandem = Outcome::NotAvailable(format!("cluster target not available: {e}"));
                break;
            }
        }
    }
    vec![row]
}
