//! Pulse's load generator and floor server.
//!
//! `pulse-load` sends realistic reader traffic ([`pulse_sim::Traffic`], encoded by
//! [`pulse_tracker::encode_batch`] exactly as the tracker does) to a collect endpoint over
//! HTTP/1.1, HTTP/2 or HTTP/3, closed loop or open loop, checks every answer and reports
//! throughput, bytes per event, latency percentiles and errors by reason. `pulse-load bytes`
//! compares encodings. `pulse-floor` is the least a collect server must do per request, the
//! baseline the gateway is measured against.
//!
//! IO lives in [`transport`](Connector) (client sockets), [`run`] (timers) and [`serve_floor`];
//! answer checking, reports and the floor's per-request work are pure.

mod bodies;
mod check;
mod floor;
mod report;
mod run;
mod transport;
mod wire;

pub use bodies::{Body, BodyPool};
pub use check::{BAD_ANSWER, Failure, check_answer};
pub use floor::{Floor, floor_answer, serve_floor};
pub use report::{Latency, Report, Setup, Tally};
pub use run::{RunError, RunOptions, run};
pub use transport::{Connector, Proto, Sender, Target, TlsOptions, TransportError};
pub use wire::{BytesRow, BytesTable, bytes_table};

/// Milliseconds since the Unix epoch on this machine's clock.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
