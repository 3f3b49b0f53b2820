//! Lag in seconds: how long the oldest write received from a source has been waiting
//! to be applied (0 when everything received is applied).
//!
//! Offsets say how far behind in bytes; operators alert on time. The receiving side
//! marks "bytes up to offset `o` had arrived by time `t`", the applying side drops the
//! marks it has passed, and the age of the first mark left is the lag. Marks closer
//! than [`MARK_EVERY`] are merged (the lag reads at most that much high), and their
//! number is capped so a long stall cannot grow memory without bound.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const MARK_EVERY: Duration = Duration::from_millis(10);
const MAX_MARKS: usize = 4096;

#[derive(Debug, Default)]
pub struct LagClock {
    marks: Mutex<VecDeque<(u64, Instant)>>,
}

impl LagClock {
    /// Bytes up to `offset` have been received (now).
    pub fn received(&self, offset: u64) {
        self.received_at(offset, Instant::now());
    }

    fn received_at(&self, offset: u64, now: Instant) {
        let mut m = self.marks.lock().unwrap();
        let full = m.len() >= MAX_MARKS;
        match m.back_mut() {
            // Another history (a full resync restarted the offsets): start over.
            Some(&mut (last, _)) if offset < last => m.clear(),
            // Merge into the newest mark, which keeps its older time.
            Some((last, at)) if full || now.duration_since(*at) < MARK_EVERY => {
                *last = offset;
                return;
            }
            _ => {}
        }
        m.push_back((offset, now));
    }

    /// Everything up to `offset` is applied.
    pub fn applied(&self, offset: u64) {
        let mut m = self.marks.lock().unwrap();
        while m.front().is_some_and(|&(o, _)| o <= offset) {
            m.pop_front();
        }
    }

    /// The lag now.
    pub fn lag(&self) -> Duration {
        self.lag_at(Instant::now())
    }

    fn lag_at(&self, now: Instant) -> Duration {
        let m = self.marks.lock().unwrap();
        m.front()
            .map(|&(_, at)| now.saturating_duration_since(at))
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_is_the_age_of_the_oldest_unapplied_bytes() {
        let c = LagClock::default();
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        assert_eq!(c.lag_at(ms(0)), Duration::ZERO);
        c.received_at(100, ms(0));
        c.received_at(150, ms(5)); // merged into the first mark
        c.received_at(200, ms(20));
        c.received_at(300, ms(40));
        assert_eq!(c.lag_at(ms(100)), Duration::from_millis(100));
        c.applied(150);
        assert_eq!(c.lag_at(ms(100)), Duration::from_millis(80));
        c.applied(250); // inside the mark received at 40 ms: still waiting
        assert_eq!(c.lag_at(ms(100)), Duration::from_millis(60));
        c.applied(300);
        assert_eq!(c.lag_at(ms(100)), Duration::ZERO);
        // A new history (lower offsets) forgets the old marks.
        c.received_at(500, ms(100));
        c.received_at(10, ms(200));
        c.applied(10);
        assert_eq!(c.lag_at(ms(300)), Duration::ZERO);
    }

    #[test]
    fn marks_are_capped() {
        let c = LagClock::default();
        let t0 = Instant::now();
        for i in 0..(MAX_MARKS as u64 * 3) {
            c.received_at(i + 1, t0 + Duration::from_millis(20 * i));
        }
        assert_eq!(c.marks.lock().unwrap().len(), MAX_MARKS);
        c.applied(MAX_MARKS as u64 * 3);
        assert_eq!(c.lag_at(t0), Duration::ZERO);
    }
}
