//! The benchmark harness in quick mode (sizes ÷ ~100, one run), so it never rots: every
//! scenario available with this build must produce finite positive numbers, and the
//! scenarios themselves fail when a target does not end with exactly the source's keys.
//! Full-size numbers come from `cargo bench --bench harness` (docs/BENCHMARKS.md).

#[path = "../bench/harness/mod.rs"]
mod harness;

use std::path::PathBuf;

use harness::Outcome;

#[test]
fn quick_benchmark_measures_every_available_scenario() {
    let cfg = harness::Config::new(true, PathBuf::from(env!("CARGO_BIN_EXE_tandem")));
    let started = std::time::Instant::now();
    let report = harness::run(&cfg);
    let md = harness::report::markdown(&report);
    println!("{md}");
    let mut measured = 0;
    for row in &report.rows {
        for (side, o) in [("tandem", &row.tandem), (row.baseline_label, &row.baseline)] {
            match o {
                Outcome::Measured(v) => {
                    assert_eq!(v.len(), cfg.runs, "{}: {side}: {v:?}", row.scenario);
                    assert!(
                        v.iter().all(|x| x.is_finite() && *x > 0.0),
                        "{}: {side}: {v:?}",
                        row.scenario
                    );
                    measured += 1;
                }
                Outcome::Failed(why) => panic!("{}: {side} failed: {why}\n{md}", row.scenario),
                Outcome::NotAvailable(_) => {}
            }
        }
        if matches!(row.tandem, Outcome::Measured(_)) && row.unit != "MB/s" {
            assert!(
                !row.tandem_rss.is_empty(),
                "{}: no tandem RSS",
                row.scenario
            );
        }
    }
    // The native side needs nothing from tandem: it must always be there.
    let native_ok = |prefix: &str| {
        report.rows.iter().any(|r| {
            r.scenario.starts_with(prefix)
                && matches!(&r.baseline, Outcome::Measured(v) if !v.is_empty())
        })
    };
    for p in ["1.", "2.", "3.", "6."] {
        assert!(native_ok(p), "scenario {p} has no native measurement\n{md}");
    }
    assert!(measured >= 8, "only {measured} measurements\n{md}");
    eprintln!("quick benchmark took {:.1?}", started.elapsed());
}
