//! CPU time and peak memory of a process from /proc (no libc in the dependencies).

use std::time::Duration;

/// What /proc/<pid>/stat says about a process.
#[derive(Clone, Copy, Debug)]
pub struct Stat {
    /// utime + stime: a zombie still reports its final totals.
    pub cpu: Duration,
    /// State `Z`: exited, not yet reaped.
    pub exited: bool,
}

/// Clock ticks per second of the stat counters (`getconf CLK_TCK`; 100 on Linux).
pub fn ticks_per_sec() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .filter(|&t| t > 0)
        .unwrap_or(100)
}

/// `None` once the process is gone (reaped).
pub fn stat(pid: u32, hz: u64) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is parenthesised and may hold spaces: split after it.
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the name: f[0] is field 3 (state), so utime (14) and stime (15) are f[11], f[12].
    let ticks = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(Stat {
        cpu: Duration::from_micros(ticks * 1_000_000 / hz),
        exited: f.first() == Some(&"Z"),
    })
}

/// Peak resident set (VmHWM) in kB; `None` for a zombie, whose memory is released.
pub fn peak_rss_kb(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
