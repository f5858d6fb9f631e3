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

/// The keys a state changelog copies (`StoreMirror`): what a store restored from it needs
/// beside the states. The bundle's text stays out (it can be larger than a Kafka message, and
/// every gateway has its bundle); so do the embedded log's replay point and the number of
/// partitions (each gateway's own).
pub const MIRRORED: [&str; 3] = [FEATURE_SET, WATERMARK, SOURCE];
