//! The benchmark harness: tandem against a native Redis replica on the same machine, in
//! the same run. Used by `cargo bench --bench harness` (bench/harness.rs) and, in quick
//! mode, by `tests/bench_quick.rs` so the harness never rots.
//!
//! Every scenario starts its own `redis-server` processes (loopback, free ports, own
//! temporary directories, killed on drop) and, for the tandem side, the `tandem` binary
//! given in `Config::tandem_bin`.
#![allow(dead_code)]

pub mod attach;
pub mod client;
pub mod cluster_incr;
pub mod data;
pub mod lag;
pub mod micro;
pub mod report;
pub mod scenarios;
pub mod servers;
pub mod topo;
pub mod verify;

use std::path::PathBuf;
use std::time::Duration;

pub type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// Data sizes; `full()` is the documented benchmark, `quick()` about a hundredth of it.
#[derive(Clone, Debug)]
pub struct Sizes {
    /// Keys of the mixed data set (scenario 1), streams included.
    pub full_keys: u64,
    pub streams: u64,
    pub stream_entries: u64,
    /// Pipelined writes of the catch-up scenario.
    pub catchup_writes: u64,
    /// Writes/s and length of the steady-lag phase.
    pub steady_rate: u64,
    pub steady: Duration,
    /// Members of the big sorted set and elements of the big list.
    pub big_n: u64,
    /// Keys for the cluster-vs-standalone comparison.
    pub cluster_keys: u64,
    /// Writes per direction for two-way vs one-way.
    pub twoway_writes: u64,
    /// Size of the RESP buffer parsed by the micro benchmark.
    pub micro_bytes: usize,
    /// Bound of every wait for a target to catch up.
    pub wait_limit: Duration,
}

impl Sizes {
    pub fn full() -> Sizes {
        Sizes {
            full_keys: 1_000_000,
            streams: 10,
            stream_entries: 1_000,
            catchup_writes: 2_000_000,
            steady_rate: 50_000,
            steady: Duration::from_secs(30),
            big_n: 2_000_000,
            cluster_keys: 250_000,
            twoway_writes: 500_000,
            micro_bytes: 200 << 20,
            wait_limit: Duration::from_secs(900),
        }
    }

    pub fn quick() -> Sizes {
        Sizes {
            full_keys: 10_000,
            streams: 2,
            stream_entries: 100,
            catchup_writes: 20_000,
            steady_rate: 50_000,
            steady: Duration::from_secs(2),
            big_n: 20_000,
            cluster_keys: 2_500,
            twoway_writes: 5_000,
            micro_bytes: 2 << 20,
            wait_limit: Duration::from_secs(60),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Config {
    pub quick: bool,
    pub runs: usize,
    /// Scenario names to run (`None`: all); see `SCENARIOS`.
    pub only: Option<Vec<String>>,
    pub tandem_bin: PathBuf,
    pub sizes: Sizes,
    pub seed: u64,
}

impl Config {
    pub fn new(quick: bool, tandem_bin: PathBuf) -> Config {
        Config {
            quick,
            runs: if quick { 1 } else { 3 },
            only: None,
            tandem_bin,
            sizes: if quick { Sizes::quick() } else { Sizes::full() },
            seed: 0x7A4D_E3B1,
        }
    }

    fn wants(&self, name: &str) -> bool {
        self.only
            .as_ref()
            .is_none_or(|o| o.iter().any(|n| n == name))
    }
}

pub const SCENARIOS: &[&str] = &[
    "full",
    "full-small",
    "catchup",
    "lag",
    "twoway",
    "cluster",
    "cluster-incr",
    "bigkeys",
    "micro",
];

/// What one side of a row measured.
#[derive(Clone, Debug)]
pub enum Outcome {
    /// One value per run.
    Measured(Vec<f64>),
    /// Not measurable with this build or setup (the text says why); never a number.
    NotAvailable(String),
    /// The measurement was attempted and went wrong.
    Failed(String),
}

/// One line of the report.
#[derive(Clone, Debug)]
pub struct Row {
    pub scenario: String,
    pub unit: &'static str,
    /// Whether a larger value is better (throughput) or worse (times, lag).
    pub higher_is_better: bool,
    pub tandem: Outcome,
    /// The yardstick: a native replica, or (two-way, cluster) tandem's own baseline.
    pub baseline: Outcome,
    pub baseline_label: &'static str,
    /// tandem's peak RSS (VmHWM) per run, bytes.
    pub tandem_rss: Vec<u64>,
    pub notes: Vec<String>,
}

impl Row {
    pub fn new(scenario: impl Into<String>, unit: &'static str, higher_is_better: bool) -> Row {
        Row {
            scenario: scenario.into(),
            unit,
            higher_is_better,
            tandem: Outcome::Measured(Vec::new()),
            baseline: Outcome::Measured(Vec::new()),
            baseline_label: "native replica",
            tandem_rss: Vec::new(),
            notes: Vec::new(),
        }
    }
}

pub struct Report {
    pub rows: Vec<Row>,
    pub config: Config,
}

/// Runs the selected scenarios; a failing or panicking scenario becomes a failed row
/// and the others still run (its servers are killed by their destructors on unwind).
pub fn run(cfg: &Config) -> Report {
    let mut rows = Vec::new();
    for &name in SCENARIOS {
        if !cfg.wants(name) {
            continue;
        }
        eprintln!("[bench] scenario {name} …");
        let started = std::time::Instant::now();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match name {
            "full" => scenarios::full_sync(cfg),
            "full-small" => scenarios::full_sync_small(cfg),
            "catchup" => scenarios::catch_up(cfg),
            "lag" => lag::steady_lag(cfg),
            "twoway" => topo::two_way(cfg),
            "cluster" => {
                let mut rows = topo::cluster(cfg);
                if !cfg.wants("cluster-incr") {
                    rows.extend(cluster_incr::cluster_incremental(cfg));
                }
                rows
            }
            "cluster-incr" => cluster_incr::cluster_incremental(cfg),
            "bigkeys" => scenarios::big_keys(cfg),
            "micro" => micro::resp_parse(cfg),
            _ => unreachable!(),
        }));
        let mut got = match result {
            Ok(r) => r,
            Err(p) => {
                let why = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "panic".into());
                let mut row = Row::new(name, "", false);
                row.tandem = Outcome::Failed(format!("panicked: {why}"));
                row.baseline = Outcome::Failed("panicked".into());
                vec![row]
            }
        };
        eprintln!("[bench] scenario {name} done in {:.1?}", started.elapsed());
        rows.append(&mut got);
    }
    Report {
        rows,
        config: cfg.clone(),
    }
}
