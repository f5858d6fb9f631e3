//! `mock_kafka`: librdkafka's in-process mock cluster (3 brokers; `pulse.events`,
//! `pulse.deadletter` and `pulse.state`, 3 partitions each, `pulse.control` with one) in a
//! process of its own, so that a gateway started
//! with `[sink] kind = "kafka"` can reach it over TCP. `scripts/bench.sh` runs the Kafka-mode
//! tables against it. Prints `mock kafka at HOST:PORT,…` on stdout, then runs until killed.
//!
//! ```sh
//! cargo run --release -p pulse-gateway --example mock_kafka
//! ```

use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;

fn main() -> anyhow::Result<()> {
    let cluster: MockCluster<'static, DefaultProducerContext> = MockCluster::new(3)?;
    for topic in ["pulse.events", "pulse.deadletter", "pulse.state"] {
        cluster.create_topic(topic, 3, 3)?;
    }
    cluster.create_topic("pulse.control", 1, 3)?;
    println!("mock kafka at {}", cluster.bootstrap_servers());
    // The cluster lives on librdkafka's threads as long as `cluster` does.
    loop {
        std::thread::park();
    }
}
