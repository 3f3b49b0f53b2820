//! What operators look at while tandem runs: the HTTP endpoint on `--metrics-addr`
//! (`/metrics`, `/status`) and the status registry the engines report into.

pub mod http;
pub mod status;

pub use status::{LinkState, LinkStatus, Status};
