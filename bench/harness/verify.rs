//! Row 1b: `tandem redis verify` of the full-sync data set, against the time tandem's
//! own full sync of the same data took in the same run (the yardstick issue 18 names:
//! checking a copy should cost no more than making it).

use std::process::Command;
use std::time::{Duration, Instant};

use super::attach::{Kind, attach, tandem_sync_missing};
use super::servers::{Redis, peak_rss};
use super::{Config, Outcome, Res, Row};

pub fn verify_row(cfg: &Config, source: &Redis, keys: u64) -> Row {
    let mut row = Row::new(
        format!("1b. verify, {} mixed keys", cfg.sizes.full_keys),
        "s",
        false,
    );
    row.baseline_label = "tandem's full sync";
    row.notes
        .push("method: one full sync (timed), then verify of the quiet pair, exit 0".into());
    if let Some(why) = tandem_sync_missing(&cfg.tandem_bin) {
        row.tandem = Outcome::NotAvailable(why.clone());
        row.baseline = Outcome::NotAvailable(why);
        return row;
    }
    if let Err(e) = measure(cfg, source, keys, &mut row) {
        let failed = Outcome::Failed(e.to_string());
        if matches!(&row.baseline, Outcome::Measured(v) if v.is_empty()) {
            row.baseline = failed.clone();
        }
        row.tandem = failed;
    }
    row
}

fn measure(cfg: &Config, source: &Redis, keys: u64, row: &mut Row) -> Res<()> {
    let t0 = Instant::now();
    let mut a = attach(Kind::Tandem, &cfg.tandem_bin, source, "verify")?;
    a.wait_caught_up(source, keys, cfg.sizes.wait_limit)?;
    push(&mut row.baseline, t0.elapsed().as_secs_f64());
    let url = |r: &Redis| format!("redis://127.0.0.1:{}", r.port);
    for run in 0..cfg.runs {
        let dir = tempfile::tempdir()?;
        let (out, err) = (dir.path().join("out"), dir.path().join("err"));
        let t = Instant::now();
        let mut child = Command::new(&cfg.tandem_bin)
            .args(["redis", "verify", "--source", &url(source), "--target"])
            .arg(url(&a.target))
            .env("TANDEM_LOG", "warn")
            .stdout(std::fs::File::create(&out)?)
            .stderr(std::fs::File::create(&err)?)
            .spawn()?;
        // VmHWM is gone with the process: the last look before it exits is the peak.
        let mut rss = None;
        let status = loop {
            if let Some(s) = child.try_wait()? {
                break s;
            }
            rss = peak_rss(child.id()).or(rss);
            std::thread::sleep(Duration::from_millis(5));
        };
        let secs = t.elapsed().as_secs_f64();
        if !status.success() {
            return Err(format!(
                "verify exited {:?}: {}{}",
                status.code(),
                std::fs::read_to_string(&out).unwrap_or_default(),
                std::fs::read_to_string(&err).unwrap_or_default()
            )
            .into());
        }
        eprintln!("[bench]   verify run {run}: {secs:.3} s");
        push(&mut row.tandem, secs);
        row.tandem_rss.extend(rss);
    }
    Ok(())
}

fn push(o: &mut Outcome, v: f64) {
    if let Outcome::Measured(values) = o {
        values.push(v);
    }
}
