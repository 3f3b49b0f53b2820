//! `tandem redis precheck`, and the brief one `redis sync` and `redis twoway` run first.

use clap::{Args, ValueEnum};

use super::secret;
use crate::redis::filter::FilterConfig;
use crate::redis::precheck::{self, PrecheckConfig, Use};
use crate::redis::url::Endpoint;

#[derive(Args)]
pub struct PrecheckArgs {
    #[command(flatten)]
    ends: secret::SourceTarget,
    /// Check for two-way use (both sides are sources and targets).
    #[arg(long)]
    twoway: bool,
    /// text: one line per item; json: one object with every item, for automation.
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Text,
    Json,
}

/// Exit code 0 when nothing fails (warnings allowed), 1 otherwise.
pub async fn run(args: PrecheckArgs) -> Result<i32, Box<dyn std::error::Error + Send + Sync>> {
    let cfg = PrecheckConfig {
        source: args.ends.source()?,
        target: args.ends.target()?,
        what: if args.twoway { Use::TwoWay } else { Use::Sync },
        filter: Default::default(),
    };
    let report = precheck::run(&cfg).await;
    match args.format {
        Format::Text => print!("{}", report.text()),
        Format::Json => println!("{}", report.json()),
    }
    Ok(if report.failed().next().is_some() {
        1
    } else {
        0
    })
}

/// Before `sync`/`twoway` start: stop on a failing item, log the warnings. An
/// unreachable side is left to the engine, which retries and words its own error.
pub async fn before_start(
    source: &Endpoint,
    target: &Endpoint,
    what: Use,
    filter: &FilterConfig,
) -> Result<(), String> {
    let cfg = PrecheckConfig {
        source: source.clone(),
        target: target.clone(),
        what,
        filter: filter.clone(),
    };
    let report = precheck::run(&cfg).await;
    let mut failed = Vec::new();
    for i in &report.items {
        match i.verdict {
            precheck::Verdict::Warn => {
                tracing::warn!(item = %i.name, fix = %i.fix, "precheck: {}", i.reason)
            }
            precheck::Verdict::Fail if !i.name.starts_with("reach.") => {
                failed.push(format!("{}: {} (fix: {})", i.name, i.reason, i.fix))
            }
            _ => {}
        }
    }
    match failed.is_empty() {
        true => Ok(()),
        false => Err(format!(
            "precheck failed (--skip-precheck to go on anyway): {}",
            failed.join("; ")
        )),
    }
}
