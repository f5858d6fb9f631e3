//! A simulated readership of a news site, for the load generator (`pulse-load`), the scorer's
//! benchmarks and tests: [`Traffic`] gives many readers' sessions as [`pulse_protocol::Batch`]es
//! (page views, clicks, custom events, engagement, identify) with realistic URLs, titles,
//! referrers and properties; [`sample_batch`] one fixed reader's batch. Pure and seeded: time is
//! an argument and the same seed gives the same traffic. Depends only on `protocol`.
//!
//! [`Readership`] is a readership with a known ground truth: readers with a hidden [`Profile`]
//! and a documented propensity to subscribe ([`Profile::propensity`]), their visits over a
//! period, and labels drawn from the propensity, for training and judging propensity models.
//!
//! [`ReaderSim`] is one such reader who responds to what the pages show them (walls, offers,
//! prompts), page by page: the next page's events depend on the previous decision. How they
//! respond is a documented model with every coefficient in [`Response`] (`response.rs`).

mod reader;
mod readership;
mod response;
mod traffic;

pub use reader::{Outcome, ReaderSim, Subscription, Via};
pub use readership::{Profile, Readership, ReadershipConfig};
pub use response::Response;
pub use traffic::{Traffic, TrafficConfig, sample_batch, sample_event};
