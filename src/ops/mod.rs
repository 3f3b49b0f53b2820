//! What operators look at while tandem runs: the HTTP endpoint on `--metrics-addr`
//! (`/metrics`, `/status`), the status registry the engines report into, and the
//! full-sync progress display drawn from it.

pub mod http;
pub mod progress;
pub mod status;

pub use status::{LinkState, LinkStatus, Status};
