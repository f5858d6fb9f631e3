//! The erasure record: a reader erased on request (a data subject's right to erasure).

use serde::{Deserialize, Serialize};

/// A reader erased on request, as Kafka mode produces it to the events topic, keyed by the
/// reader like their events (so it follows them in their partition) and with the header
/// `pulse-schema: erasure.v1`. A consumer downstream deletes what it holds of the reader; the
/// gateways' restore from the topic forgets them.
///
/// On the wire: `{"v":1,"erased":"<reader key>","at":<ms>}`.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "schema", schemars(title = "Pulse erasure record"))]
pub struct ErasureRecord {
    /// The record's schema version (`erasure.v1`: 1).
    pub v: u32,
    /// The reader key erased: their user id, else their anonymous id.
    pub erased: String,
    /// When the erasure was made, ms since the epoch.
    pub at: u64,
}

impl ErasureRecord {
    /// The record for erasing `reader` at `at`.
    pub fn new(reader: &str, at: u64) -> Self {
        Self {
            v: crate::RecordSchema::Erasure.version(),
            erased: reader.to_owned(),
            at,
        }
    }
}
