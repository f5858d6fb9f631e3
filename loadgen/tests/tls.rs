//! The TLS transports of pulse-load against tiny in-process servers that answer with
//! `floor_answer`: HTTP/3 over QUIC (quinn + h3) and HTTP/2 over TLS with ALPN, each with a
//! self-signed certificate trusted through `--ca`, and once with `--insecure`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use pulse_load::{Proto, RunOptions, TlsOptions, floor_answer, run};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

struct Cert {
    der: CertificateDer<'static>,
    key: Vec<u8>,
    pem_file: tempfile::NamedTempFile,
}

fn cert() -> Cert {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let pem_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(pem_file.path(), ck.cert.pem()).unwrap();
    Cert {
        der: ck.cert.der().clone(),
        key: ck.signing_key.serialize_der(),
        pem_file,
    }
}

fn server_config(cert: &Cert, alpn: &[u8]) -> rustls::ServerConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.key.clone()));
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.der.clone()], key)
        .unwrap();
    config.alpn_protocols = vec![alpn.to_vec()];
    config
}

/// An HTTP/3 server answering every request with `floor_answer` of its body.
fn h3_server(cert: &Cert) -> SocketAddr {
    let crypto =
        quinn::crypto::rustls::QuicServerConfig::try_from(server_config(cert, b"h3")).unwrap();
    let config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    let endpoint = quinn::Endpoint::server(config, "127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = endpoint.local_addr().unwrap();
    tokio::spawn(async move {
        while let Some(incoming) = endpoint.accept().await {
            tokio::spawn(async move {
                let Ok(conn) = incoming.await else { return };
                let Ok(mut h3) = h3::server::builder()
                    .build::<_, Bytes>(h3_quinn::Connection::new(conn))
                    .await
                else {
                    return;
                };
                while let Ok(Some(resolver)) = h3.accept().await {
                    tokio::spawn(async move {
                        let Ok((_req, mut stream)) = resolver.resolve_request().await else {
                            return;
                        };
                        let mut body = Vec::new();
                        while let Ok(Some(mut chunk)) = stream.recv_data().await {
                            while chunk.has_remaining() {
                                let part = chunk.chunk();
                                body.extend_from_slice(part);
                                let n = part.len();
                                chunk.advance(n);
                            }
                        }
                        let (status, answer) = floor_answer(&body);
                        let resp = hyper::Response::builder().status(status).body(()).unwrap();
                        let _ = stream.send_response(resp).await;
                        let _ = stream.send_data(answer).await;
                        let _ = stream.finish().await;
                    });
                }
            });
        }
    });
    addr
}

/// An HTTP/2-over-TLS server (ALPN h2) answering with `floor_answer`.
async fn h2_tls_server(cert: &Cert) -> SocketAddr {
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_config(cert, b"h2")));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = hyper::service::service_fn(
                    |req: hyper::Request<hyper::body::Incoming>| async move {
                        let body = req.into_body().collect().await?.to_bytes();
                        let (status, answer) = floor_answer(&body);
                        let mut resp = hyper::Response::new(Full::new(answer));
                        *resp.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
                        Ok::<_, hyper::Error>(resp)
                    },
                );
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    addr
}

fn options(url: String, proto: Proto, tls: TlsOptions) -> RunOptions {
    RunOptions {
        url,
        site: "demo".into(),
        origin: None,
        proto,
        connections: 2,
        streams: 4,
        rate: None,
        duration: Duration::from_secs(30),
        warmup: Duration::ZERO,
        requests: Some(200),
        events_per_batch: 10,
        readers: 100,
        seed: 3,
        pool: None,
        timeout: Duration::from_secs(10),
        tls,
        progress: false,
    }
}

fn assert_clean(report: &pulse_load::Report, requests: u64) {
    assert_eq!(report.errors, 0, "{:?}", report.errors_by_reason);
    assert_eq!(report.requests, requests);
    assert_eq!(report.events, requests * 10);
    assert_eq!(report.events_accepted, report.events);
}

#[tokio::test]
async fn h3_with_a_trusted_self_signed_certificate_and_insecure() {
    let cert = cert();
    let addr = h3_server(&cert);
    let url = format!("https://localhost:{}", addr.port());
    let tls = TlsOptions {
        ca: Some(cert.pem_file.path().to_owned()),
        insecure: false,
    };
    let report = run(&options(url.clone(), Proto::H3, tls)).await.unwrap();
    assert_clean(&report, 200);
    assert_eq!(report.setup.proto, "h3");
    let insecure = TlsOptions {
        ca: None,
        insecure: true,
    };
    let mut open = options(url, Proto::H3, insecure);
    open.rate = Some(100.0);
    open.requests = None;
    open.duration = Duration::from_secs(1);
    let report = run(&open).await.unwrap();
    assert_eq!(report.errors, 0, "{:?}", report.errors_by_reason);
    assert!(report.requests > 0);
}

#[tokio::test]
async fn h2_over_tls_with_alpn() {
    let cert = cert();
    let addr = h2_tls_server(&cert).await;
    let tls = TlsOptions {
        ca: Some(cert.pem_file.path().to_owned()),
        insecure: false,
    };
    let url = format!("https://localhost:{}", addr.port());
    let report = run(&options(url, Proto::H2, tls)).await.unwrap();
    assert_clean(&report, 200);
}

#[tokio::test]
async fn an_untrusted_certificate_fails_to_connect() {
    let cert = cert();
    let other = self::cert();
    let addr = h2_tls_server(&cert).await;
    let tls = TlsOptions {
        ca: Some(other.pem_file.path().to_owned()),
        insecure: false,
    };
    let url = format!("https://localhost:{}", addr.port());
    let err = run(&options(url, Proto::H2, tls)).await.unwrap_err();
    assert!(err.to_string().contains("connect"), "{err}");
}
