//! Kafka over TLS with SASL (`security.protocol=SASL_SSL`), as managed clusters want it: the
//! producer built exactly as the sink builds it ([`client_config`], the operator's
//! `properties` passed through) against a TLS server on loopback that plays the broker's part
//! up to the first request. librdkafka's mock cluster speaks no TLS, hence this stand-in. Its
//! certificate comes from a CA made here; with that CA the handshake completes and a Kafka
//! request frame arrives over TLS, with another CA the client refuses the certificate.

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseProducer, Producer, ProducerContext};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::AsyncReadExt;

use super::client_config;
use crate::config::KafkaConfig;

const PASSWORD: &str = "pulse-test-password-never-logged";

/// A certificate authority made for one test.
struct Authority {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    pem: String,
}

fn authority(name: &str) -> Authority {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    Authority {
        pem: cert.pem(),
        issuer: rcgen::Issuer::new(params, key),
    }
}

/// What the stand-in broker saw on one connection.
#[derive(Debug)]
#[allow(dead_code)] // the texts are read through Debug, in failure messages
enum Seen {
    /// The TLS handshake failed.
    Handshake(String),
    /// The handshake completed and a request frame arrived: its API key and size.
    Request { api_key: i16, size: usize },
    /// The handshake completed, then no whole frame came.
    NoFrame(String),
}

/// A TLS server on loopback with a certificate for `localhost` and 127.0.0.1 issued by `ca`;
/// reports every connection on the channel.
fn broker(ca: &Authority) -> (SocketAddr, mpsc::Receiver<Seen>, tokio::runtime::Runtime) {
    let key = rcgen::KeyPair::generate().unwrap();
    let params =
        rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap();
    let cert = params.signed_by(&key, &ca.issuer).unwrap();
    let chain = vec![CertificateDer::from(cert.der().to_vec())];
    let key = PrivateKeyDer::from(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let tls = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    rt.spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                let seen = match acceptor.accept(tcp).await {
                    Err(e) => Seen::Handshake(e.to_string()),
                    Ok(mut tls) => match first_frame(&mut tls).await {
                        Ok((api_key, size)) => Seen::Request { api_key, size },
                        Err(e) => Seen::NoFrame(e.to_string()),
                    },
                };
                let _ = tx.send(seen);
            });
        }
    });
    (addr, rx, rt)
}

/// Reads one Kafka request frame (`int32` size, then `int16` API key, `int16` version, ...).
async fn first_frame<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> io::Result<(i16, usize)> {
    let size = usize::try_from(s.read_i32().await?)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "negative size"))?;
    if !(8..=1 << 20).contains(&size) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "implausible size",
        ));
    }
    let mut body = vec![0; size];
    s.read_exact(&mut body).await?;
    Ok((i16::from_be_bytes([body[0], body[1]]), size))
}

/// Records what librdkafka says: logs and client errors (clones share the record).
#[derive(Clone, Default)]
struct Said(Arc<Mutex<Vec<String>>>);

impl Said {
    fn all(&self) -> Vec<String> {
        self.0.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

impl ClientContext for Said {
    fn log(&self, _: RDKafkaLogLevel, facility: &str, message: &str) {
        if let Ok(mut v) = self.0.lock() {
            v.push(format!("log {facility}: {message}"));
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if let Ok(mut v) = self.0.lock() {
            v.push(format!("error {error}: {reason}"));
        }
    }
}

impl ProducerContext for Said {
    type DeliveryOpaque = ();
    fn delivery(&self, _: &rdkafka::message::DeliveryResult<'_>, (): ()) {}
}

/// `[sink.kafka]` for a managed cluster: SASL_SSL with PLAIN, the CA in `ca`.
fn managed(addr: SocketAddr, ca: &Path) -> KafkaConfig {
    let mut config = KafkaConfig {
        brokers: format!("localhost:{}", addr.port()),
        ..KafkaConfig::default()
    };
    for (key, value) in [
        ("security.protocol", "SASL_SSL"),
        ("ssl.ca.location", &ca.display().to_string()),
        ("sasl.mechanisms", "PLAIN"),
        ("sasl.username", "pulse"),
        ("sasl.password", PASSWORD),
        // The stand-in listens on IPv4 only.
        ("broker.address.family", "v4"),
    ] {
        config.properties.insert(key.to_owned(), value.to_owned());
    }
    config
}

/// The sink's producer settings for `config`, with a context that records what it says.
fn producer(config: &KafkaConfig) -> (BaseProducer<Said>, Said) {
    let mut client: ClientConfig = client_config(config).unwrap();
    // Everything librdkafka logs, to check that the password is in none of it.
    client.set_log_level(RDKafkaLogLevel::Debug);
    client.set("debug", "security,broker");
    let said = Said::default();
    let producer = client
        .create_with_context(said.clone())
        .expect("librdkafka built with TLS and SASL");
    (producer, said)
}

/// Serves the producer's callbacks until `done` or `limit`.
fn poll_until(
    producer: &BaseProducer<Said>,
    limit: Duration,
    mut done: impl FnMut() -> bool,
) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        producer.poll(Duration::from_millis(50));
        if done() {
            return true;
        }
    }
    false
}

#[test]
fn sasl_ssl_with_the_clusters_ca_completes_the_handshake_and_sends_kafka_requests() {
    let ca = authority("pulse test CA");
    let (addr, seen, _rt) = broker(&ca);
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca.pem).unwrap();
    let config = managed(addr, &ca_file);
    assert!(
        !format!("{config:?}").contains(PASSWORD),
        "the configuration's Debug hides the password"
    );

    let (producer, said) = producer(&config);
    let mut first = None;
    poll_until(&producer, Duration::from_secs(20), || {
        first = seen.try_recv().ok();
        first.is_some()
    });
    match first {
        // ApiVersions (18) comes first; SaslHandshake (17) when version requests are off.
        Some(Seen::Request { api_key, size }) => {
            assert!(
                matches!(api_key, 18 | 17),
                "API key {api_key} ({size} bytes)"
            );
        }
        other => panic!("{other:?}; librdkafka said {:#?}", said.all()),
    }
    producer.purge(rdkafka::producer::PurgeConfig::default().queue().inflight());
    drop(producer);
    let said = said.all();
    assert!(!said.is_empty(), "debug logs were recorded");
    assert!(
        said.iter().all(|line| !line.contains(PASSWORD)),
        "the password is never logged"
    );
}

#[test]
fn sasl_ssl_refuses_a_broker_certificate_from_another_ca() {
    let theirs = authority("the broker's CA");
    let ours = authority("another CA");
    let (addr, seen, _rt) = broker(&theirs);
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ours.pem).unwrap();

    let (producer, said) = producer(&managed(addr, &ca_file));
    let refused = |said: &Said| {
        said.all()
            .into_iter()
            .find(|line| line.starts_with("error") && line.contains("certificate verify failed"))
    };
    let mut server = None;
    let found = poll_until(&producer, Duration::from_secs(20), || {
        if server.is_none() {
            server = seen.try_recv().ok();
        }
        server.is_some() && refused(&said).is_some()
    });
    assert!(
        found,
        "server saw {server:?}; librdkafka said {:#?}",
        said.all()
    );
    assert!(
        matches!(server, Some(Seen::Handshake(_))),
        "the server's handshake fails too: {server:?}"
    );
    drop(producer);
    assert!(said.all().iter().all(|line| !line.contains(PASSWORD)));
}
