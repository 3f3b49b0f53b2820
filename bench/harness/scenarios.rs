//! Scenarios 1, 2 and 6: full sync of the mixed data set, catch-up of a write backlog,
//! and full sync of two big keys — tandem against a native replica.

use std::time::{Duration, Instant};

use super::attach::{
    Attached, Kind, SOURCE_OPTS, attach, source_offset, tandem_sync_missing, wait_streaming,
};
use super::client::{Frame, info_field};
use super::servers::{Redis, cpu_secs, signal};
use super::{Config, Outcome, Res, Row, data};

/// Native first on even runs, tandem first on odd ones: whatever the machine does over
/// time (page cache, other engineers' builds) falls on both sides.
fn order(run: usize) -> [Kind; 2] {
    if run.is_multiple_of(2) {
        [Kind::Native, Kind::Tandem]
    } else {
        [Kind::Tandem, Kind::Native]
    }
}

/// Runs `measure` for both kinds, `cfg.runs` times, into `row` (times in seconds).
/// Stops a side at its first failure.
pub fn both(
    cfg: &Config,
    row: &mut Row,
    mut measure: impl FnMut(Kind, usize) -> Res<(f64, Option<u64>)>,
) {
    let missing = tandem_sync_missing(&cfg.tandem_bin);
    if let Some(why) = &missing {
        row.tandem = Outcome::NotAvailable(why.clone());
    }
    for run in 0..cfg.runs {
        for kind in order(run) {
            let side = match kind {
                Kind::Native => &mut row.baseline,
                Kind::Tandem => &mut row.tandem,
            };
            let Outcome::Measured(values) = side else {
                continue;
            };
            match measure(kind, run) {
                Ok((v, rss)) => {
                    eprintln!("[bench]   {} run {run}: {v:.3} {}", kind.name(), row.unit);
                    values.push(v);
                    if let Some(r) = rss {
                        row.tandem_rss.push(r);
                    }
                }
                Err(e) => *side = Outcome::Failed(e.to_string()),
            }
        }
    }
}

pub fn used_memory_mb(r: &Redis) -> Res<f64> {
    let info = r.client()?.info("memory")?;
    let b: f64 = info_field(&info, "used_memory")
        .and_then(|v| v.parse().ok())
        .ok_or("no used_memory")?;
    Ok(b / 1e6)
}

/// Time from attach to caught up (streaming, offset ≥ source's, same key count), then
/// the exact key count (SCAN of the reserved prefix, after the clock).
pub fn timed_full_sync(
    cfg: &Config,
    kind: Kind,
    source: &Redis,
    keys: u64,
    id: &str,
    verify: impl Fn(&Attached) -> Res<()>,
) -> Res<(f64, Option<u64>)> {
    let t0 = Instant::now();
    let mut a = attach(kind, &cfg.tandem_bin, source, id)?;
    a.wait_caught_up(source, keys, cfg.sizes.wait_limit)?;
    let secs = t0.elapsed().as_secs_f64();
    let rss = a.tandem_rss();
    let exact = a.exact_user_keys()?;
    if exact != keys {
        return Err(format!("{} target has {exact} keys, source {keys}", kind.name()).into());
    }
    verify(&a)?;
    Ok((secs, rss))
}

pub fn full_sync(cfg: &Config) -> Vec<Row> {
    let s = &cfg.sizes;
    let mut row = Row::new(
        format!("1. full sync, {} mixed keys", s.full_keys),
        "s",
        false,
    );
    let mut setup = || -> Res<(Redis, u64)> {
        let source = Redis::start(SOURCE_OPTS)?;
        let t = Instant::now();
        let payload = data::populate_mixed(
            source.port,
            s.full_keys,
            s.streams,
            s.stream_entries,
            cfg.seed,
        )?;
        let keys = source.client()?.dbsize()?.ok_or("source DBSIZE")?;
        row.notes.push(format!(
            "data: {keys} keys, {:.0} MB payload, source used_memory {:.0} MB (loaded in {:.1?})",
            payload as f64 / 1e6,
            used_memory_mb(&source)?,
            t.elapsed()
        ));
        Ok((source, keys))
    };
    let (source, keys) = match setup() {
        Ok(v) => v,
        Err(e) => return vec![failed(row, e)],
    };
    both(cfg, &mut row, |kind, run| {
        timed_full_sync(cfg, kind, &source, keys, &format!("full{run}"), |_| Ok(()))
    });
    let verified = super::verify::verify_row(cfg, &source, keys);
    vec![row, verified]
}

/// Scenario 1c: full sync of `full_keys` small keys (`data::populate_small`), with the
/// CPU seconds of the target and of tandem per run in the notes: where a per-key cost
/// sits shows there, not in the wall time.
pub fn full_sync_small(cfg: &Config) -> Vec<Row> {
    let n = cfg.sizes.full_keys;
    let mut row = Row::new(format!("1c. full sync, {n} small keys"), "s", false);
    let source = match Redis::start(SOURCE_OPTS).and_then(|source| {
        let t = Instant::now();
        let payload = data::populate_small(source.port, n, cfg.seed)?;
        row.notes.push(format!(
            "data: {n} keys, {:.0} MB payload, source used_memory {:.0} MB (loaded in {:.1?})",
            payload as f64 / 1e6,
            used_memory_mb(&source)?,
            t.elapsed()
        ));
        Ok(source)
    }) {
        Ok(s) => s,
        Err(e) => return vec![failed(row, e)],
    };
    let mut cpu = Vec::new();
    both(cfg, &mut row, |kind, run| {
        let t0 = Instant::now();
        let source_cpu = cpu_secs(source.pid()).unwrap_or(0.0);
        let mut a = attach(kind, &cfg.tandem_bin, &source, &format!("small{run}"))?;
        a.wait_caught_up(&source, n, cfg.sizes.wait_limit)?;
        let secs = t0.elapsed().as_secs_f64();
        let target_cpu = cpu_secs(a.target.pid()).unwrap_or(0.0);
        let tandem_cpu = a.tandem.as_ref().and_then(|t| cpu_secs(t.pid()));
        let source_cpu = cpu_secs(source.pid()).unwrap_or(0.0) - source_cpu;
        cpu.push(format!(
            "run {run} {}: {secs:.2} s, CPU target {target_cpu:.2} s, source {source_cpu:.2} s{}",
            kind.name(),
            tandem_cpu.map_or(String::new(), |c| format!(", tandem {c:.2} s"))
        ));
        let rss = a.tandem_rss();
        let exact = a.exact_user_keys()?;
        if exact != n {
            return Err(format!("{} target has {exact} keys, source {n}", kind.name()).into());
        }
        Ok((secs, rss))
    });
    row.notes.extend(cpu);
    vec![row]
}

fn failed(mut row: Row, e: Box<dyn std::error::Error + Send + Sync>) -> Row {
    row.tandem = Outcome::Failed(format!("setup: {e}"));
    row.baseline = Outcome::Failed(format!("setup: {e}"));
    row
}

pub fn big_keys(cfg: &Config) -> Vec<Row> {
    let n = cfg.sizes.big_n;
    let mut row = Row::new(
        format!("6. full sync, {n}-member zset + {n}-element list"),
        "s",
        false,
    );
    let setup = || -> Res<Redis> {
        let source = Redis::start(SOURCE_OPTS)?;
        data::populate_big(source.port, n, cfg.seed)?;
        Ok(source)
    };
    let source = match setup() {
        Ok(v) => v,
        Err(e) => return vec![failed(row, e)],
    };
    if let Ok(mb) = used_memory_mb(&source) {
        row.notes.push(format!("source used_memory {mb:.0} MB"));
    }
    both(cfg, &mut row, |kind, run| {
        timed_full_sync(cfg, kind, &source, 2, &format!("big{run}"), |a| {
            check_big(a, n)
        })
    });
    vec![row]
}

/// Key counts match trivially here (2 keys): compare the cardinalities too.
fn check_big(a: &Attached, n: u64) -> Res<()> {
    let mut c = a.target.client()?;
    for (cmd, key) in [(&b"ZCARD"[..], &b"big:zset"[..]), (b"LLEN", b"big:list")] {
        let got = c.ok(&[cmd, key])?;
        if got != Frame::Integer(n as i64) {
            return Err(format!(
                "{} target: {} of {} is {got:?}, not {n}",
                a.kind.name(),
                String::from_utf8_lossy(cmd),
                String::from_utf8_lossy(key)
            )
            .into());
        }
    }
    Ok(())
}

/// Catch-up of a backlog: once the target streams, its applier (the replica process, or
/// tandem) is frozen with SIGSTOP, the writes go to the source (which buffers them for
/// the frozen replica), then SIGCONT starts the clock; it stops when the target's
/// offset reaches the source's offset at the end of the writes and key counts match.
pub fn catch_up(cfg: &Config) -> Vec<Row> {
    let n = cfg.sizes.catchup_writes;
    let mut row = Row::new(format!("2. catch-up of {n} pipelined writes"), "s", false);
    row.notes.push(
        "method: target streaming, applier SIGSTOPped, writes sent, SIGCONT → offset == source's"
            .into(),
    );
    both(cfg, &mut row, |kind, run| {
        let source = Redis::start(SOURCE_OPTS)?;
        let mut a = attach(kind, &cfg.tandem_bin, &source, &format!("cu{run}"))?;
        wait_streaming(&mut a, &source, &format!("cu{run}"), cfg.sizes.wait_limit)?;
        let pid = a.applier_pid();
        signal(pid, "STOP")?;
        let writes = data::write_mix(source.port, n, cfg.seed + run as u64, "cu");
        let t0 = Instant::now();
        signal(pid, "CONT")?;
        writes?;
        let keys = source.client()?.dbsize()?.ok_or("source DBSIZE")?;
        let master = source_offset(&source)?;
        super::servers::wait_until(
            "target offset to reach the source's",
            cfg.sizes.wait_limit,
            Duration::from_millis(2),
            || Ok(a.offset()?.is_some_and(|o| o >= master)),
        )
        .map_err(|e| a.with_log(e))?;
        let secs = t0.elapsed().as_secs_f64();
        let rss = a.tandem_rss();
        let exact = a.exact_user_keys()?;
        if exact != keys {
            return Err(format!("{} target has {exact} keys, source {keys}", kind.name()).into());
        }
        Ok((secs, rss))
    });
    vec![row]
}
