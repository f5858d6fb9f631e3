//! The request body of a batch.
//!
//! Pure and native-usable (the load generator and the fuzz corpus reuse it).

use crate::Batch;

/// The request body for a batch, as the tracker sends it.
pub fn encode(batch: &Batch) -> Vec<u8> {
    batch.to_json().into_bytes()
}

/// A protocol batch as the tracker's compact JSON.
#[cfg(not(target_arch = "wasm32"))]
pub fn batch_json(batch: &pulse_protocol::Batch) -> Vec<u8> {
    Batch::from(batch).to_json().into_bytes()
}

/// The request body the tracker sends for a protocol batch.
#[cfg(not(target_arch = "wasm32"))]
pub fn encode_batch(batch: &pulse_protocol::Batch) -> Vec<u8> {
    encode(&Batch::from(batch))
}

#[cfg(test)]
mod tests {
    use super::*;
    use pulse_sim::sample_batch;

    #[test]
    fn the_gateway_reads_every_event() {
        for n in [1, 10, 50] {
            let batch = sample_batch(n);
            let body = encode_batch(&batch);
            let parsed = pulse_protocol::parse_batch(&body, batch.header.sent_at).unwrap();
            assert_eq!(parsed.accepted.len(), n);
        }
    }
}
