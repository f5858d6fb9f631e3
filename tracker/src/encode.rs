//! The request body: a batch as JSON, compressed into one zstd frame.
//!
//! Pure and native-usable (the load generator reuses it). The encoder is the pure-Rust `ruzstd`
//! at its fastest level: it needs no C compiler for wasm32 and keeps `pulse_bg.wasm` small; the
//! gateway recognises the frame by its magic bytes `28 B5 2F FD`.

use ruzstd::encoding::{CompressionLevel, compress_to_vec};

use pulse_protocol::Batch;
pub use pulse_protocol::ZSTD_MAGIC;

/// The batch as compact JSON.
pub fn batch_json(batch: &Batch) -> Vec<u8> {
    // A batch (strings, integers and JSON values) always serializes.
    serde_json::to_vec(batch).unwrap_or_default()
}

/// The request body for a batch: its JSON, compressed as one zstd frame.
pub fn encode_batch(batch: &Batch) -> Vec<u8> {
    let json = batch_json(batch);
    compress_to_vec(json.as_slice(), CompressionLevel::Fastest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pulse_sim::sample_batch;
    use std::io::Read;

    fn decode(body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        ruzstd::decoding::StreamingDecoder::new(body)
            .expect("frame header")
            .read_to_end(&mut out)
            .expect("frame body");
        out
    }

    #[test]
    fn round_trip_through_zstd() {
        for n in [1, 10, 50] {
            let batch = sample_batch(n);
            let body = encode_batch(&batch);
            assert_eq!(body[..4], ZSTD_MAGIC);
            let json = decode(&body);
            let back: Batch = serde_json::from_slice(&json).unwrap();
            assert_eq!(back, batch);
            // And the server's parser accepts every event.
            let parsed = pulse_protocol::parse_batch(&json, batch.header.sent_at).unwrap();
            assert_eq!(parsed.accepted.len(), n);
            assert!(
                body.len() < json.len(),
                "{n} events: {} >= {}",
                body.len(),
                json.len()
            );
        }
    }

    /// Prints the compression ratio on realistic batches: `cargo test -p pulse-tracker
    /// compression_ratio -- --nocapture`.
    #[test]
    fn compression_ratio() {
        for n in [1, 10, 50] {
            let batch = sample_batch(n);
            let json = batch_json(&batch).len();
            let zstd = encode_batch(&batch).len();
            println!(
                "{n:>2} events: json {json} B, zstd {zstd} B, ratio {:.2}",
                json as f64 / zstd as f64
            );
        }
    }
}
