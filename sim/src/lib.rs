//! A simulated readership of a news site, for the load generator (`pulse-load`), the scorer's
//! benchmarks and tests: [`Traffic`] gives many readers' sessions as [`pulse_protocol::Batch`]es
//! (page views, clicks, custom events, engagement, identify) with realistic URLs, titles,
//! referrers and properties; [`sample_batch`] one fixed reader's batch. Pure and seeded: time is
//! an argument and the same seed gives the same traffic. Depends only on `protocol`.

mod traffic;

pub use traffic::{Traffic, TrafficConfig, sample_batch, sample_event};
