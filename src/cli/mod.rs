//! Command-line interface: `tandem redis …`, `tandem rdb …`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "tandem",
    version,
    about = "Replication for Redis-compatible servers"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Top,
}

#[derive(Subcommand)]
enum Top {
    /// Redis, Valkey and Tair sources and targets.
    #[command(subcommand)]
    Redis(RedisCmd),
}

#[derive(Subcommand)]
enum RedisCmd {}

pub fn main() -> ExitCode {
    let _cli = Cli::parse();
    ExitCode::SUCCESS
}
