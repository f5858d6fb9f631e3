//! Series read when `/metrics` is scraped (the scorer's engine, the process, queue depths and
//! store sizes), written by the Prometheus client's encoder like the registered ones.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

type Labels = Vec<(&'static str, String)>;

#[derive(Debug)]
struct Series {
    name: &'static str,
    help: &'static str,
    kind: MetricType,
    samples: Vec<(Labels, f64)>,
}

/// Values taken at one scrape. Counter names are given without `_total` (the encoder adds it).
#[derive(Debug, Default)]
pub struct Snapshot {
    series: Vec<Series>,
}

impl Snapshot {
    /// A counter without labels.
    pub fn counter(&mut self, name: &'static str, help: &'static str, value: f64) {
        self.labelled(name, help, MetricType::Counter, vec![(Vec::new(), value)]);
    }

    /// A gauge without labels.
    pub fn gauge(&mut self, name: &'static str, help: &'static str, value: f64) {
        self.labelled(name, help, MetricType::Gauge, vec![(Vec::new(), value)]);
    }

    /// A family of samples, one per label set.
    pub fn labelled(
        &mut self,
        name: &'static str,
        help: &'static str,
        kind: MetricType,
        samples: Vec<(Labels, f64)>,
    ) {
        self.series.push(Series {
            name,
            help,
            kind,
            samples,
        });
    }
}

impl Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        for s in &self.series {
            let mut family = encoder.encode_descriptor(s.name, s.help, None, s.kind)?;
            match s.samples.as_slice() {
                [(labels, value)] if labels.is_empty() => sample(s.kind, *value, family)?,
                samples => {
                    for (labels, value) in samples {
                        sample(s.kind, *value, family.encode_family(labels)?)?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// One sample; whole numbers are written as integers, like the registered series.
fn sample(kind: MetricType, value: f64, to: MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
    let whole = value.fract() == 0.0 && value.abs() < 9.0e15;
    match (kind, whole) {
        (MetricType::Counter, true) => ConstCounter::new(value as u64).encode(to),
        (MetricType::Counter, false) => ConstCounter::new(value).encode(to),
        (_, true) => ConstGauge::new(value as i64).encode(to),
        (_, false) => ConstGauge::new(value).encode(to),
    }
}

/// A label value from outside (a bundle's or a rule's name) escaped as the exposition formats
/// require: the client library writes label values as they are.
pub(crate) fn escaped(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}
