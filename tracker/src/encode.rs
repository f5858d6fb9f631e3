//! The request body of a batch: its compact record (`pulse_protocol::compact`), DEFLATE-
//! compressed, about half of what gzip'd JSON costs per event. Pure and native-usable (the load
//! generator and the fuzz corpus reuse it).

use alloc::vec::Vec;

use pulse_protocol::compact::{encode_body, encode_record};

use crate::Batch;

/// The request body for a batch, as the tracker sends it (no dictionary yet).
pub fn encode(batch: &Batch) -> Vec<u8> {
    encode_body(&encode_record(batch), None)
}

/// A protocol batch as compact JSON (what a compact body decodes to).
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
    use pulse_protocol::compact::decode_body;
    use pulse_sim::sample_batch;

    #[test]
    fn the_gateway_reads_every_event() {
        for n in [1, 10, 50] {
            let batch = sample_batch(n);
            let body = encode_batch(&batch);
            let json = decode_body(&body, 1 << 20, pulse_protocol::compact::no_dictionary).unwrap();
            assert_eq!(json.as_bytes(), batch_json(&batch));
            let parsed = pulse_protocol::parse_batch(json.as_bytes(), batch.header.sent_at);
            assert_eq!(parsed.unwrap().accepted.len(), n);
        }
    }
}
