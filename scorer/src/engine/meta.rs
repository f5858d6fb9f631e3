//! Metadata keys the engine keeps beside state.

/// The log position from which events are not yet in stored state (u64 LE).
pub(crate) const REPLAY_FROM: &str = "replay_from";
/// The latest event time applied by any reader (u64 LE).
pub(crate) const WATERMARK: &str = "watermark";
/// The feature set stored state belongs to (u64 LE).
pub(crate) const FEATURE_SET: &str = "feature_set";
/// The text of the active bundle.
pub(crate) const BUNDLE: &str = "bundle";
/// The number of partitions state is keyed by (u64 LE).
pub(crate) const PARTITIONS: &str = "partitions";
/// Where an outside log stands (opaque to the engine: Kafka offsets, in Kafka mode).
pub(crate) const SOURCE: &str = "source_positions";
