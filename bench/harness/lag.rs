//! Scenario 3: replication lag under a steady write rate.
//!
//! A writer thread sends `steady_rate` SETs/s to the source. Meanwhile a probe, on its
//! own connections, sets `bench:probe` to a fresh number on the source every 10 ms and
//! polls the target (every ~100 µs, one probe in flight) until the number shows:
//! that delay is one lag sample. The probe travels the replication stream behind the
//! writer's commands, so it sees the lag they cause.

use std::time::{Duration, Instant};

use super::attach::{Kind, SOURCE_OPTS, attach, wait_streaming};
use super::scenarios::both;
use super::servers::{Redis, wait_until};
use super::{Config, Outcome, Res, Row, data};

pub fn steady_lag(cfg: &Config) -> Vec<Row> {
    let s = &cfg.sizes;
    let label = format!("{} writes/s for {:?}", s.steady_rate, s.steady);
    let mut p50 = Row::new(format!("3. steady lag p50, {label}"), "ms", false);
    let mut p99 = Row::new(format!("3. steady lag p99, {label}"), "ms", false);
    let mut p99s: Vec<(Kind, f64)> = Vec::new();
    let mut notes = Vec::new();
    both(cfg, &mut p50, |kind, run| {
        let (lags, rate, rss) = measure(cfg, kind, run)?;
        notes.push(format!(
            "{} run {run}: {} probes, writer held {rate:.0} writes/s",
            kind.name(),
            lags.len()
        ));
        p99s.push((kind, percentile(&lags, 0.99)));
        Ok((percentile(&lags, 0.50), rss))
    });
    // p99 comes from the same runs as p50 (one measurement, two statistics).
    p99.tandem = side(&p50.tandem, &p99s, Kind::Tandem);
    p99.baseline = side(&p50.baseline, &p99s, Kind::Native);
    p99.tandem_rss = p50.tandem_rss.clone();
    p50.notes = notes;
    vec![p50, p99]
}

fn side(p50: &Outcome, p99s: &[(Kind, f64)], kind: Kind) -> Outcome {
    match p50 {
        Outcome::Measured(_) => Outcome::Measured(
            p99s.iter()
                .filter(|(k, _)| *k == kind)
                .map(|(_, v)| *v)
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Lag samples (ms), achieved write rate, tandem peak RSS.
fn measure(cfg: &Config, kind: Kind, run: usize) -> Res<(Vec<f64>, f64, Option<u64>)> {
    let s = &cfg.sizes;
    let source = Redis::start(SOURCE_OPTS)?;
    let mut a = attach(kind, &cfg.tandem_bin, &source, &format!("lag{run}"))?;
    wait_streaming(&mut a, &source, &format!("lag{run}"), s.wait_limit)?;
    let (port, rate, dur, seed) = (source.port, s.steady_rate, s.steady, cfg.seed + run as u64);
    let writer = std::thread::spawn(move || data::write_steady(port, rate, dur, seed));
    let mut src = source.client()?;
    let mut dst = a.target.client()?;
    let mut lags = Vec::new();
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < dur {
        n += 1;
        let v = n.to_string();
        let sent = Instant::now();
        src.ok(&[b"SET", b"bench:probe", v.as_bytes()])?;
        let limit = Duration::from_secs(30);
        wait_until(
            "a lag probe on the target",
            limit,
            Duration::from_micros(100),
            || Ok(dst.get(b"bench:probe")?.as_deref() == Some(v.as_bytes())),
        )
        .map_err(|e| a.with_log(e))?;
        lags.push(sent.elapsed().as_secs_f64() * 1e3);
        let next = sent + Duration::from_millis(10);
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    let sent = writer.join().map_err(|_| "writer panicked")??;
    let rate = sent as f64 / dur.as_secs_f64();
    if rate < 0.95 * s.steady_rate as f64 {
        return Err(format!("writer held only {rate:.0} writes/s of {}", s.steady_rate).into());
    }
    // The numbers only count if the target really got every write.
    let keys = source.client()?.dbsize()?.ok_or("source DBSIZE")?;
    a.wait_caught_up(&source, keys, s.wait_limit)?;
    let rss = a.tandem_rss();
    let exact = a.exact_user_keys()?;
    if exact != keys {
        return Err(format!("{} target has {exact} keys, source {keys}", kind.name()).into());
    }
    if lags.is_empty() {
        return Err("no lag samples".into());
    }
    Ok((lags, rate, rss))
}

/// Nearest-rank percentile.
pub fn percentile(values: &[f64], p: f64) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = ((p * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}
