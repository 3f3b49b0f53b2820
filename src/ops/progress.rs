//! The full-sync progress display: a bar per link on a terminal, or one plain log line
//! per link every few seconds when stderr is not one (a service's journal, a pipe).
//!
//! It only reads [`Status`]: the engines count keys and RDB bytes there already, so a
//! display costs them nothing. The totals are what the link learned before the
//! transfer: the RDB's size when the source announces it (disk-based transfers) and the
//! source's key count (`INFO keyspace`), which diskless transfers — the default since
//! Redis 7 — leave as the only one. A MongoDB copy counts documents, with no total.
//!
//! Bars and log lines share stderr: while bars are drawn, every log line goes through
//! [`LogWriter`], which lifts the bars, writes the line whole and draws them again.

use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::status::{LinkState, Progress, Status};
use crate::core::shutdown::Shutdown;

/// Set once, at start, when stderr is a terminal and logs are text.
static BARS: OnceLock<MultiProgress> = OnceLock::new();

/// Draw bars from now on (call before the first log line, from `main`).
pub fn use_bars() {
    let _ = BARS.set(MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
}

/// How often the display looks at the counters; bars redraw at this pace.
const TICK: Duration = Duration::from_millis(200);

/// A running display; [`Display::finish`] shows the last state and stops it.
pub struct Display {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

/// Starts the display for every link `status` lists now or later: a line per link in
/// full sync every `every` (`Duration::ZERO`: no display at all).
pub fn start(status: Arc<Status>, every: Duration, mut shutdown: Shutdown) -> Display {
    if every.is_zero() {
        return Display {
            stop: None,
            task: None,
        };
    }
    let (stop, mut stopped) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(async move {
        let mut links: HashMap<String, Tracked> = HashMap::new();
        let mut tick = tokio::time::interval(TICK);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = &mut stopped => break,
                _ = shutdown.wait() => break,
            }
            look(&status, &mut links, every, Instant::now());
        }
        look(&status, &mut links, every, Instant::now());
        for t in links.values_mut() {
            if let Some(bar) = t.bar.take() {
                bar.abandon();
            }
        }
    });
    Display {
        stop: Some(stop),
        task: Some(task),
    }
}

impl Display {
    /// One last look (a full sync that just ended shows as done), then stop.
    pub async fn finish(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(2), task).await;
        }
    }
}

/// What the display remembers of one link between looks.
struct Tracked {
    full_syncs: u64,
    /// `Some` while a full sync is shown: when it began and when its last line was.
    since: Option<(Instant, Instant)>,
    /// Whether the full sync shown has had a line yet.
    had_line: bool,
    bar: Option<ProgressBar>,
}

fn look(status: &Status, links: &mut HashMap<String, Tracked>, every: Duration, now: Instant) {
    for p in status.progress() {
        let t = links.entry(p.link.clone()).or_insert_with(|| Tracked {
            // A link first seen in full sync is shown from now.
            full_syncs: match p.state {
                LinkState::FullSync => p.full_syncs.saturating_sub(1),
                _ => p.full_syncs,
            },
            since: None,
            had_line: false,
            bar: None,
        });
        if p.full_syncs > t.full_syncs {
            t.full_syncs = p.full_syncs;
            if let Some(bar) = t.bar.take() {
                bar.abandon();
            }
            t.since = Some((now, now));
            t.had_line = false;
            t.bar = BARS.get().map(|mp| mp.add(new_bar(&p)));
        }
        let Some((began, last_line)) = t.since else {
            continue;
        };
        let done = p.state != LinkState::FullSync;
        if let Some(bar) = &t.bar {
            draw(bar, &p, done, now - began);
        } else if (!done && now - last_line >= every) || (done && !t.had_line) {
            // A full sync shorter than a look apart still gets its one line, at its end
            // (CI: a 0.3 s copy between two looks left none).
            // Totals as 0 when unknown, as fields must be always there or never.
            tracing::info!(
                link = %p.link,
                keys = p.keys,
                bytes = p.bytes,
                total_bytes = p.total_bytes.unwrap_or(0),
                expected_keys = p.expected_keys.unwrap_or(0),
                "full sync: {}",
                describe(&p, now - began)
            );
            t.since = Some((began, now));
            t.had_line = true;
        }
        if done {
            t.since = None;
            t.bar = None;
        }
    }
}

/// By keys of the source's count when known (what the target confirmed), else by RDB
/// bytes of the announced size (what the parser took), else a spinner.
const TEMPLATES: [&str; 3] = [
    "{prefix} [{bar:30}] {human_pos}/{human_len} keys, {per_sec} {msg}, {eta} left",
    "{prefix} [{bar:30}] {binary_bytes}/{binary_total_bytes} {msg}, {eta} left",
    "{prefix} {spinner} {human_pos} keys, {per_sec} {msg}",
];

/// What a bar counts, as in [`TEMPLATES`].
enum Measure {
    Keys(u64),
    Bytes(u64),
    Spinner,
}

fn measure(p: &Progress) -> Measure {
    match (p.expected_keys, p.total_bytes) {
        (Some(k), _) => Measure::Keys(k),
        (None, Some(b)) => Measure::Bytes(b),
        (None, None) => Measure::Spinner,
    }
}

fn new_bar(p: &Progress) -> ProgressBar {
    let (len, template) = match measure(p) {
        Measure::Keys(k) => (Some(k), TEMPLATES[0]),
        Measure::Bytes(b) => (Some(b), TEMPLATES[1]),
        Measure::Spinner => (None, TEMPLATES[2]),
    };
    let bar = match len {
        Some(n) => ProgressBar::new(n),
        None => ProgressBar::new_spinner(),
    };
    // Constants, each parsed by a test: an `Err` here cannot happen.
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix(format!("full sync {}", p.link));
    bar
}

fn draw(bar: &ProgressBar, p: &Progress, done: bool, elapsed: Duration) {
    match measure(p) {
        Measure::Bytes(_) => {
            bar.set_position(p.bytes);
            bar.set_message(format!("{} keys", p.keys));
        }
        Measure::Keys(_) | Measure::Spinner => {
            bar.set_position(p.keys);
            bar.set_message(bytes(p.bytes));
        }
    }
    if done && !matches!(p.state, LinkState::Incremental | LinkState::Stopped) {
        // Lost the source or failed: a retry starts a new bar.
        bar.abandon_with_message("interrupted");
    } else if done {
        bar.finish_with_message(format!(
            "done: {} keys, {} in {:.1} s",
            p.keys,
            bytes(p.bytes),
            elapsed.as_secs_f64()
        ));
    }
}

/// The plain line: how far, how fast, how long still (when a total is known).
fn describe(p: &Progress, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64().max(1e-3);
    let mut out = match p.total_bytes {
        Some(total) => format!("{} of {}", bytes(p.bytes), bytes(total)),
        None => bytes(p.bytes),
    };
    match p.expected_keys {
        Some(k) => out.push_str(&format!(", {} of about {} keys", p.keys, k)),
        None => out.push_str(&format!(", {} keys", p.keys)),
    }
    out.push_str(&format!(", {:.0} keys/s", p.keys as f64 / secs));
    // Keys are what the target confirmed; bytes only what the parser took, which runs
    // ahead of the target by its queue of writes.
    let fraction = match (p.expected_keys, p.total_bytes) {
        (Some(k), _) => Some(p.keys as f64 / k as f64),
        (None, Some(total)) => Some(p.bytes as f64 / total as f64),
        (None, None) => None,
    };
    if let Some(f) = fraction.filter(|f| *f > 0.0) {
        let f = f.min(1.0);
        out.push_str(&format!(
            ", {:.0}%, about {:.0} s left",
            f * 100.0,
            secs * (1.0 - f) / f
        ));
    }
    out
}

fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// The log writer: a line at a time, lifting the bars around it while they are drawn.
pub struct LogWriter;

/// One log event's bytes, written whole when the event is done.
pub struct LogLine(Vec<u8>);

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = LogLine;

    fn make_writer(&'a self) -> LogLine {
        LogLine(Vec::with_capacity(256))
    }
}

impl Write for LogLine {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LogLine {
    fn drop(&mut self) {
        let out = |b: &[u8]| {
            // stderr gone: nowhere left to say so.
            let _ = std::io::stderr().lock().write_all(b);
        };
        match BARS.get() {
            Some(mp) => mp.suspend(|| out(&self.0)),
            None => out(&self.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(keys: u64, bytes: u64, total: Option<u64>, expected: Option<u64>) -> Progress {
        Progress {
            link: "default".into(),
            state: LinkState::FullSync,
            full_syncs: 1,
            keys,
            bytes,
            total_bytes: total,
            expected_keys: expected,
        }
    }

    #[test]
    fn lines_say_how_far_how_fast_and_how_long() {
        let s = Duration::from_secs(2);
        // The parser ahead of the target: the keys tell how far.
        assert_eq!(
            describe(&p(1000, 3 << 20, Some(4 << 20), Some(4000)), s),
            "3.0 MiB of 4.0 MiB, 1000 of about 4000 keys, 500 keys/s, 25%, about 6 s left"
        );
        // Diskless: no size up front.
        assert_eq!(
            describe(&p(3000, 512, None, Some(4000)), s),
            "512 B, 3000 of about 4000 keys, 1500 keys/s, 75%, about 1 s left"
        );
        // No key count (INFO refused): the bytes.
        assert_eq!(
            describe(&p(10, 1 << 20, Some(4 << 20), None), s),
            "1.0 MiB of 4.0 MiB, 10 keys, 5 keys/s, 25%, about 6 s left"
        );
        assert_eq!(
            describe(&p(10, 2048, None, None), s),
            "2.0 KiB, 10 keys, 5 keys/s"
        );
        // Keys that expired before the fork: never past 100%.
        assert_eq!(
            describe(&p(5000, 0, None, Some(4000)), s),
            "0 B, 5000 of about 4000 keys, 2500 keys/s, 100%, about 0 s left"
        );
    }

    #[test]
    fn every_bar_template_parses() {
        for t in TEMPLATES {
            assert!(ProgressStyle::with_template(t).is_ok(), "{t}");
        }
        for (t, k) in [(Some(10), None), (None, Some(10)), (None, None)] {
            let bar = new_bar(&p(0, 0, t, k));
            let mut end = p(5, 5, t, k);
            end.state = LinkState::Incremental;
            draw(&bar, &end, true, Duration::from_secs(1));
            assert!(bar.is_finished());
        }
    }

    #[test]
    fn follows_a_full_sync_from_start_to_end() {
        let st = Status::new("sync", "x");
        let l = st.link_addrs("default", "s".into(), "t".into());
        let mut links = HashMap::new();
        let t0 = Instant::now();
        look(&st, &mut links, Duration::from_secs(5), t0);
        assert!(links["default"].since.is_none());
        l.full_sync_started();
        look(&st, &mut links, Duration::from_secs(5), t0);
        assert!(links["default"].since.is_some());
        l.set_state(LinkState::Incremental);
        look(&st, &mut links, Duration::from_secs(5), t0 + TICK);
        assert!(links["default"].since.is_none());
    }
}
