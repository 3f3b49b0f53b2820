//! The markdown report: one line per row with medians, the ratio tandem ÷ yardstick,
//! min–max of both sides and tandem's peak RSS; notes and non-numbers below.

use std::fmt::Write;

use super::{Outcome, Report, Row};

pub fn median(v: &[f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let m = s.len() / 2;
    Some(if s.len() % 2 == 1 {
        s[m]
    } else {
        (s[m - 1] + s[m]) / 2.0
    })
}

fn num(x: f64) -> String {
    let a = x.abs();
    if a >= 10_000.0 {
        format!("{:.0}", x)
    } else if a >= 100.0 {
        format!("{x:.1}")
    } else if a >= 1.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.3}")
    }
}

fn cell(o: &Outcome, unit: &str) -> String {
    match o {
        Outcome::Measured(v) => match median(v) {
            Some(m) => format!("{} {unit}", num(m)),
            None => "—".into(),
        },
        Outcome::NotAvailable(_) => "n/a".into(),
        Outcome::Failed(_) => "FAILED".into(),
    }
}

fn range(o: &Outcome) -> Option<String> {
    let Outcome::Measured(v) = o else { return None };
    let lo = v.iter().copied().reduce(f64::min)?;
    let hi = v.iter().copied().reduce(f64::max)?;
    Some(format!("{}–{}", num(lo), num(hi)))
}

fn ratio(r: &Row) -> String {
    match (&r.tandem, &r.baseline) {
        (Outcome::Measured(t), Outcome::Measured(b)) => match (median(t), median(b)) {
            (Some(t), Some(b)) if b > 0.0 => format!("{:.2}×", t / b),
            _ => "—".into(),
        },
        _ => "—".into(),
    }
}

fn rss(r: &Row) -> String {
    match r.tandem_rss.iter().max() {
        Some(&b) => format!("{:.1} MB", b as f64 / (1 << 20) as f64),
        None => "—".into(),
    }
}

pub fn markdown(rep: &Report) -> String {
    let mut out = String::new();
    let c = &rep.config;
    let _ = writeln!(
        out,
        "## tandem benchmark ({} mode, {} run{} per measurement)\n",
        if c.quick { "quick" } else { "full" },
        c.runs,
        if c.runs == 1 { "" } else { "s" }
    );
    let _ = writeln!(
        out,
        "| scenario | tandem median | yardstick median | ratio tandem÷yardstick | tandem min–max | yardstick min–max | tandem peak RSS |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|");
    for r in &rep.rows {
        let yard = match &r.baseline {
            Outcome::NotAvailable(_) if r.baseline_label == "native replica" => "—".to_string(),
            o => format!("{} ({})", cell(o, r.unit), r.baseline_label),
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} |",
            r.scenario,
            cell(&r.tandem, r.unit),
            yard,
            ratio(r),
            range(&r.tandem).unwrap_or_else(|| "—".into()),
            range(&r.baseline).unwrap_or_else(|| "—".into()),
            rss(r)
        );
    }
    let _ = writeln!(out, "\nNotes:\n");
    for r in &rep.rows {
        for (side, o) in [("tandem", &r.tandem), (r.baseline_label, &r.baseline)] {
            match o {
                Outcome::NotAvailable(why) if why != "in-process micro benchmark" => {
                    let _ = writeln!(out, "- {} — {side}: not available: {why}", r.scenario);
                }
                Outcome::Failed(why) => {
                    let _ = writeln!(out, "- {} — {side}: FAILED: {why}", r.scenario);
                }
                _ => {}
            }
        }
        for n in &r.notes {
            let _ = writeln!(out, "- {} — {n}", r.scenario);
        }
    }
    out
}
