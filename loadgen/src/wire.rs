//! Bytes on the wire per event for each way a batch could be encoded: plain JSON, gzip, the
//! compact body as the tracker sends it before it holds its site's dictionary
//! (`pulse_protocol::compact`), the compact body against the dictionary the gateway would train
//! on other readers' traffic, zstd level 3, and zstd level 3 with a dictionary trained on the
//! same traffic. Pure apart from the CPU it takes.

use std::io::Write;

use pulse_protocol::WireBatch;
use pulse_protocol::compact::{dictionary_hash, encode_body, encode_record, train_dictionary};
use pulse_sim::{Traffic, TrafficConfig};
use pulse_tracker::{batch_json, encode_batch};
use serde::Serialize;

/// Bytes per event of one batch size, averaged over many batches.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct BytesRow {
    /// Events per batch.
    pub events_per_batch: usize,
    /// Plain compact JSON.
    pub json: f64,
    /// gzip (flate2, default level 6).
    pub gzip: f64,
    /// The compact body without a dictionary (`encode_batch`: what a first page sends).
    pub tracker: f64,
    /// The compact body against a dictionary of other readers' records.
    pub compact_dict: f64,
    /// zstd level 3 (the C library).
    pub zstd_3: f64,
    /// zstd level 3 with the trained dictionary.
    pub zstd_3_dict: f64,
}

/// The whole table and the dictionary it used.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct BytesTable {
    /// One row per batch size.
    pub rows: Vec<BytesRow>,
    /// Size of the trained zstd dictionary, bytes (a client would have to ship it).
    pub dictionary_bytes: usize,
    /// Size of the compact body's dictionary, bytes.
    pub compact_dictionary_bytes: usize,
    /// Batches measured per row.
    pub batches: usize,
    /// Batches the dictionary was trained on.
    pub trained_on: usize,
    /// Share of each event type over all measured events (`page_view`, `click`, …).
    pub mix: std::collections::BTreeMap<String, f64>,
    /// Share of batches that carry a `user_id` (logged-in readers).
    pub logged_in_batches: f64,
}

/// Measures `batches` batches of each size in `sizes` (from 1,000 readers), with a dictionary of
/// at most `dict_size` bytes trained on `train` batches of other readers (sizes 1, 10 and 50 in
/// turn).
pub fn bytes_table(
    sizes: &[usize],
    batches: usize,
    dict_size: usize,
    train: usize,
) -> std::io::Result<BytesTable> {
    // The dictionaries come from the six hours before the measured batches, which are sent a
    // second apart: times in records repeat only as much as real clocks make them.
    let now = 1_800_000_000_000;
    let trained_at =
        |i: usize| now - 6 * 3_600_000 + (i as u64 * 6 * 3_600_000) / train.max(1) as u64;
    let mut others = Traffic::new(&TrafficConfig {
        readers: 1_000,
        seed: 7,
        ..TrafficConfig::default()
    });
    let samples: Vec<Vec<u8>> = (0..train)
        .map(|i| batch_json(&others.next_batch([1, 10, 50][i % 3], trained_at(i))))
        .collect();
    let dict = zstd::dict::from_samples(&samples, dict_size)?;
    // The compact body's dictionary, trained on the same batches of other readers as the
    // gateway trains a site's (`[dictionary] min_readers`, default 5).
    let mut others = Traffic::new(&TrafficConfig {
        readers: 1_000,
        seed: 7,
        ..TrafficConfig::default()
    });
    let samples: Vec<WireBatch> = (0..train)
        .map(|i| WireBatch::from(&others.next_batch([1, 10, 50][i % 3], trained_at(i))))
        .collect();
    let compact_dict = train_dictionary(&samples, dict_size.min(32 * 1024), 5);
    let compact_dict = compact_dict.as_slice();
    let mut with_dict = zstd::bulk::Compressor::with_dictionary(3, &dict)?;
    let mut plain3 = zstd::bulk::Compressor::new(3)?;
    let mut rows = Vec::with_capacity(sizes.len());
    let mut kinds: std::collections::BTreeMap<String, usize> = Default::default();
    let (mut all_events, mut all_batches, mut logged_in) = (0usize, 0usize, 0usize);
    for &n in sizes {
        let mut traffic = Traffic::new(&TrafficConfig {
            readers: 1_000,
            seed: 42,
            ..TrafficConfig::default()
        });
        let (mut json, mut gzip, mut tracker, mut z3, mut zd, mut events) = (0, 0, 0, 0, 0, 0);
        let mut cd = 0;
        for b in 0..batches {
            let batch = traffic.next_batch(n, now + b as u64 * 1_000);
            let text = batch_json(&batch);
            events += batch.events.len();
            all_batches += 1;
            logged_in += usize::from(batch.header.user_id.is_some());
            for e in &batch.events {
                *kinds.entry(e.kind.as_str().to_owned()).or_default() += 1;
                all_events += 1;
            }
            json += text.len();
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            gz.write_all(&text)?;
            gzip += gz.finish()?.len();
            tracker += encode_batch(&batch).len();
            let named = Some((dictionary_hash(compact_dict), compact_dict));
            cd += encode_body(&encode_record(&WireBatch::from(&batch)), named).len();
            z3 += plain3.compress(&text)?.len();
            zd += with_dict.compress(&text)?.len();
        }
        let per = |b: usize| b as f64 / events.max(1) as f64;
        rows.push(BytesRow {
            events_per_batch: n,
            json: per(json),
            gzip: per(gzip),
            tracker: per(tracker),
            compact_dict: per(cd),
            zstd_3: per(z3),
            zstd_3_dict: per(zd),
        });
    }
    Ok(BytesTable {
        rows,
        dictionary_bytes: dict.len(),
        compact_dictionary_bytes: compact_dict.len(),
        batches,
        trained_on: train,
        mix: kinds
            .into_iter()
            .map(|(k, v)| (k, v as f64 / all_events.max(1) as f64))
            .collect(),
        logged_in_batches: logged_in as f64 / all_batches.max(1) as f64,
    })
}

impl BytesTable {
    /// A Markdown table.
    pub fn markdown(&self) -> String {
        let mut out = String::from(
            "| events/batch | JSON | gzip -6 | compact, no dictionary (a first page) | compact + the site's dictionary (as the tracker sends) | zstd -3 | zstd -3 + dictionary |\n\
             |---:|---:|---:|---:|---:|---:|---:|\n",
        );
        for r in &self.rows {
            out.push_str(&format!(
                "| {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} |\n",
                r.events_per_batch,
                r.json,
                r.gzip,
                r.tracker,
                r.compact_dict,
                r.zstd_3,
                r.zstd_3_dict
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compression_helps_and_grows_with_the_batch() {
        let table = bytes_table(&[1, 10], 20, 4096, 300).unwrap();
        assert_eq!(table.rows.len(), 2);
        for r in &table.rows {
            assert!(
                r.gzip < r.json && r.tracker < r.gzip && r.zstd_3 < r.json,
                "{r:?}"
            );
            assert!(r.zstd_3_dict < r.zstd_3, "{r:?}");
            assert!(r.compact_dict < r.tracker, "{r:?}");
        }
        assert!(table.rows[1].zstd_3 < table.rows[0].zstd_3);
        assert!(table.dictionary_bytes <= 4096);
        assert!(table.markdown().contains("| 10 |"));
        assert!(table.mix["page_view"] > 0.2, "{:?}", table.mix);
        assert!((table.mix.values().sum::<f64>() - 1.0).abs() < 1e-9);
    }
}
