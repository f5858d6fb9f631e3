//! The real listeners (`Listeners::bind` + `serve_all`) on loopback with TLS and QUIC, driven by
//! real clients: HTTP/1.1 and HTTP/2 (prior knowledge) in cleartext, HTTP/1.1 and HTTP/2 over
//! TLS (ALPN), and HTTP/3 (quinn + h3). The same request gets the same answer on every protocol;
//! the transport limits (head size and count, header, body and handshake timeouts, connection
//! caps) hold; timings are asserted only as generous upper bounds.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper::header::HeaderMap;
use hyper::{Method, Request, Uri};
use hyper_util::rt::{TokioExecutor, TokioIo};
use pulse_gateway::{Config, Gateway, Listeners, Protocol, SiteConfig, serve_all};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Slack on top of a configured limit before a test calls a timing wrong (busy CI machines).
const MARGIN: Duration = Duration::from_secs(3);

struct Gw {
    gateway: Arc<Gateway>,
    http: SocketAddr,
    /// The admin listener (token `admin-token`).
    admin: SocketAddr,
    https: SocketAddr,
    quic: SocketAddr,
    cert: CertificateDer<'static>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
    _dir: tempfile::TempDir,
}

impl Gw {
    async fn start(tune: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::default();
        config.server.listen = "127.0.0.1:0".parse().unwrap();
        config.server.admin_listen = "127.0.0.1:0".parse().unwrap();
        config.server.admin_token = Some("admin-token".into());
        config.server.tls_listen = Some("127.0.0.1:0".parse().unwrap());
        config.server.data = dir.path().join("data");
        config.limits.max_body_bytes = 4096;
        config.limits.max_decoded_bytes = 64 * 1024;
        // These tests check decisions, not the deadline: be generous on busy machines.
        config.limits.decision_deadline_ms = 2000.try_into().unwrap();
        config.sites = vec![SiteConfig::new("demo", &["https://news.example"])];
        tune(&mut config);
        let gateway = Arc::new(Gateway::open(config).unwrap());
        let listeners = Listeners::bind(gateway.config.listen_settings())
            .await
            .unwrap();
        let http = listeners.http_addr();
        let admin = listeners.admin_addr().unwrap();
        let https = listeners.https_addr().unwrap();
        let quic = listeners.quic_addr().unwrap();
        assert_eq!(
            https.port(),
            quic.port(),
            "TLS and QUIC share a port number"
        );
        let cert_path = listeners.certificate().unwrap().cert_path.clone();
        assert!(listeners.certificate().unwrap().self_signed);
        let cert = CertificateDer::from_pem_file(cert_path).unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve_all(Arc::clone(&gateway), listeners, async {
            let _ = stopped.await;
        }));
        Self {
            gateway,
            http,
            admin,
            https,
            quic,
            cert,
            stop: Some(stop),
            task,
            _dir: dir,
        }
    }

    /// Asks the gateway to shut down (like SIGTERM) without waiting for it.
    fn request_stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Stops the gateway, checks that it shut down cleanly, and hands back its folder.
    async fn stop(mut self) -> tempfile::TempDir {
        self.request_stop();
        tokio::time::timeout(Duration::from_secs(20), self.task)
            .await
            .expect("the gateway stops within the grace period")
            .unwrap()
            .unwrap();
        self._dir
    }

    fn roots(&self) -> rustls::RootCertStore {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.cert.clone()).unwrap();
        roots
    }

    async fn tls(&self, alpn: &[u8]) -> tokio_rustls::client::TlsStream<TcpStream> {
        let mut config = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(self.roots())
            .with_no_client_auth();
        config.alpn_protocols = vec![alpn.to_vec()];
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let tcp = TcpStream::connect(self.https).await.unwrap();
        let tls = connector
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap();
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(alpn), "ALPN");
        tls
    }

    async fn h3(&self) -> Result<H3Client, String> {
        let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
        let mut config = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_root_certificates(self.roots())
            .with_no_client_auth();
        config.alpn_protocols = vec![b"h3".to_vec()];
        let quic = quinn::crypto::rustls::QuicClientConfig::try_from(config).unwrap();
        endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(quic)));
        let conn = endpoint
            .connect(self.quic, "localhost")
            .map_err(|e| e.to_string())?
            .await
            .map_err(|e| e.to_string())?;
        let (mut driver, send) = h3::client::new(h3_quinn::Connection::new(conn.clone()))
            .await
            .map_err(|e| e.to_string())?;
        let driver = tokio::spawn(async move {
            let _ = std::future::poll_fn(|cx| driver.poll_close(cx)).await;
        });
        Ok(H3Client {
            send,
            conn,
            _endpoint: endpoint,
            driver,
        })
    }

    /// Sends one request over a fresh connection of `proto`.
    async fn send(&self, proto: Proto, req: Req) -> Answer {
        match proto {
            Proto::H1 => {
                let tcp = TcpStream::connect(self.http).await.unwrap();
                hyper_send(proto, tcp, req.http(proto, self.http)).await
            }
            Proto::H2c => {
                let tcp = TcpStream::connect(self.http).await.unwrap();
                hyper_send(proto, tcp, req.http(proto, self.http)).await
            }
            Proto::H1Tls => {
                let tls = self.tls(b"http/1.1").await;
                hyper_send(proto, tls, req.http(proto, self.https)).await
            }
            Proto::H2Tls => {
                let tls = self.tls(b"h2").await;
                hyper_send(proto, tls, req.http(proto, self.https)).await
            }
            Proto::H3 => {
                let mut client = self.h3().await.unwrap();
                let answer = client.send(req, self.quic).await;
                client.close().await;
                answer
            }
        }
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

struct H3Client {
    send: h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>,
    conn: quinn::Connection,
    _endpoint: quinn::Endpoint,
    driver: JoinHandle<()>,
}

impl H3Client {
    async fn send(&mut self, req: Req, addr: SocketAddr) -> Answer {
        self.try_send(req, addr).await.unwrap()
    }

    /// Sends a request; an error when the client itself refuses to send it.
    async fn try_send(&mut self, req: Req, addr: SocketAddr) -> Result<Answer, String> {
        let mut head = Request::builder().method(req.method.clone()).uri(format!(
            "https://localhost:{}{}",
            addr.port(),
            req.path
        ));
        for (name, value) in &req.headers {
            head = head.header(name, value);
        }
        let mut stream = self
            .send
            .send_request(head.body(()).unwrap())
            .await
            .map_err(|e| format!("{e:?}"))?;
        // A server may answer before the request is complete and stop the rest of it with
        // H3_NO_ERROR (RFC 9114 section 4.1): the gateway does so for a request it refuses on
        // its head. Sending the rest then fails; the answer is what counts.
        if !req.body.is_empty() {
            let _ = stream.send_data(req.body.clone()).await;
        }
        let _ = stream.finish().await;
        let resp = stream.recv_response().await.unwrap();
        let mut body = BytesMut::new();
        while let Some(mut chunk) = stream.recv_data().await.unwrap() {
            body.extend_from_slice(&chunk.copy_to_bytes(chunk.remaining()));
        }
        Ok(Answer {
            proto: Proto::H3,
            status: resp.status().as_u16(),
            headers: resp.headers().clone(),
            body: body.freeze(),
        })
    }

    async fn close(self) {
        self.conn.close(0u32.into(), b"done");
        drop(self.send);
        self.driver.abort();
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Proto {
    H1,
    H2c,
    H1Tls,
    H2Tls,
    H3,
}

const ALL: [Proto; 5] = [Proto::H1, Proto::H2c, Proto::H1Tls, Proto::H2Tls, Proto::H3];

#[derive(Clone, Debug)]
struct Req {
    method: Method,
    path: String,
    headers: Vec<(String, String)>,
    body: Bytes,
}

impl Req {
    fn get(path: &str) -> Self {
        Self {
            method: Method::GET,
            path: path.to_owned(),
            headers: vec![],
            body: Bytes::new(),
        }
    }

    fn post(path: &str, body: impl Into<Bytes>) -> Self {
        Self {
            method: Method::POST,
            path: path.to_owned(),
            headers: vec![("origin".into(), "https://news.example".into())],
            body: body.into(),
        }
    }

    fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// The request for hyper's client: origin-form with `Host` on HTTP/1.1, absolute on
    /// HTTP/2.
    fn http(&self, proto: Proto, addr: SocketAddr) -> Request<Full<Bytes>> {
        let scheme = if matches!(proto, Proto::H1 | Proto::H2c) {
            "http"
        } else {
            "https"
        };
        let authority = format!("localhost:{}", addr.port());
        let uri: Uri = if matches!(proto, Proto::H1 | Proto::H1Tls) {
            self.path.parse().unwrap()
        } else {
            format!("{scheme}://{authority}{}", self.path)
                .parse()
                .unwrap()
        };
        let mut req = Request::builder().method(self.method.clone()).uri(uri);
        if matches!(proto, Proto::H1 | Proto::H1Tls) {
            req = req.header("host", &authority);
        }
        for (name, value) in &self.headers {
            req = req.header(name, value);
        }
        req.body(Full::new(self.body.clone())).unwrap()
    }
}

async fn hyper_send<T>(proto: Proto, io: T, req: Request<Full<Bytes>>) -> Answer
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let io = TokioIo::new(io);
    let resp = if matches!(proto, Proto::H1 | Proto::H1Tls) {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
        tokio::spawn(conn);
        sender.send_request(req).await.unwrap()
    } else {
        let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .unwrap();
        tokio::spawn(conn);
        sender.send_request(req).await.unwrap()
    };
    let expected = if matches!(proto, Proto::H1 | Proto::H1Tls) {
        hyper::Version::HTTP_11
    } else {
        hyper::Version::HTTP_2
    };
    assert_eq!(resp.version(), expected, "{proto:?}");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    Answer {
        proto,
        status,
        headers,
        body,
    }
}

#[derive(Debug)]
struct Answer {
    proto: Proto,
    status: u16,
    headers: HeaderMap,
    body: Bytes,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    fn code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or("<none>")
            .to_owned()
    }
}

fn batch(reader: &str, first_id: u128) -> Vec<u8> {
    let now = pulse_gateway::now_ms();
    let event = |id: u128| {
        json!({"id": format!("{id:032x}"), "ts": now, "type": "page_view",
               "page": {"url": "https://news.example/articles/a.html", "title": "A"},
               "props": {"content_type": "article"}})
    };
    serde_json::to_vec(&json!({"v": 1, "site_key": "demo", "anonymous_id": reader,
        "session_id": "s-1", "seq": 0, "sent_at": now,
        "events": [event(first_id), event(first_id + 1)]}))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_request_gets_the_same_answer_on_every_protocol() {
    let gw = Gw::start(|_| {}).await;
    let alt_svc = format!("h3=\":{}\"; ma=86400", gw.quic.port());
    let mut answers = Vec::new();
    for (i, proto) in ALL.into_iter().enumerate() {
        // A reader of its own per protocol, so that the meter is in the same state for each.
        let body = batch(&format!("reader-{i}"), (i as u128) << 32);
        let zstd = zstd::encode_all(&body[..], 3).unwrap();
        let answer = gw.send(proto, Req::post("/v1/collect?k=demo", zstd)).await;
        assert_eq!(answer.status, 200, "{proto:?}: {:?}", answer.body);
        answers.push(answer);
    }
    // Each answer's decision is signed for its own reader; the rest is the same.
    let unsigned = |a: &Answer| {
        let mut v = a.json();
        assert!(v["signed"].is_string(), "{:?}: signed", a.proto);
        v.as_object_mut().map(|o| o.remove("signed"));
        v
    };
    let first = unsigned(&answers[0]);
    assert_eq!(first["accepted"], 2);
    assert_eq!(first["decision"]["action"], "meter");
    assert_eq!(first["decision"]["remaining"], 2);
    for answer in &answers {
        assert_eq!(unsigned(answer), first, "{:?}", answer.proto);
        assert_eq!(
            answer.headers["access-control-allow-origin"], "https://news.example",
            "{:?}",
            answer.proto
        );
        assert_eq!(answer.headers["content-type"], "application/json");
        if answer.proto == Proto::H3 {
            assert!(!answer.headers.contains_key("alt-svc"));
        } else {
            assert_eq!(
                answer.headers["alt-svc"],
                alt_svc.as_str(),
                "{:?}",
                answer.proto
            );
        }
    }
    assert_eq!(gw.gateway.log().unwrap().events_from(0).count(), 10);

    // Bad requests get the same status and the same error body everywhere.
    let cases = [
        (
            Req::post("/v1/collect?k=other", batch("r", 1)),
            401,
            "unknown_site_key",
        ),
        (
            Req::post("/v1/collect?k=demo", vec![b' '; 4097]),
            413,
            "body_too_large",
        ),
        (
            Req::post("/v1/collect?k=demo", &b"{\"v\":1,"[..]),
            400,
            "malformed_json",
        ),
        (Req::get("/nope"), 404, "not_found"),
    ];
    for (req, status, code) in cases {
        let mut seen = Vec::new();
        for proto in ALL {
            let answer = gw.send(proto, req.clone()).await;
            assert_eq!(
                (answer.status, answer.code().as_str()),
                (status, code),
                "{proto:?} {} {}",
                req.method,
                req.path
            );
            seen.push(answer.json());
        }
        assert!(seen.iter().all(|j| *j == seen[0]), "{seen:#?}");
    }
    let health = gw.send(Proto::H3, Req::get("/healthz")).await;
    assert_eq!(
        (health.status, health.json()),
        (200, json!({"status": "ok"}))
    );

    // Each protocol is counted under its own label (TLS and cleartext share one).
    let m = &gw.gateway.metrics;
    assert_eq!(m.requests_by(Protocol::Http1), 10);
    assert_eq!(m.requests_by(Protocol::Http2), 10);
    assert_eq!(m.requests_by(Protocol::Http3), 6);
    let rendered = m.text();
    assert!(
        rendered.contains(
            "pulse_gateway_requests_total{handler=\"collect\",protocol=\"http3\",status=\"200\"} 1\n"
        ) && rendered.contains(
            "pulse_gateway_requests_total{handler=\"probe\",protocol=\"http3\",status=\"200\"} 1\n"
        ),
        "{rendered}"
    );
    gw.stop().await;
}

/// A request with `extra` headers of `len` bytes each, plus the client's own.
fn with_headers(mut req: Req, extra: usize, len: usize) -> Req {
    for i in 0..extra {
        req = req.header(&format!("x-h{i}"), &"v".repeat(len));
    }
    req
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_count_and_size_limits_at_the_edges() {
    let max_headers = 20;
    let gw = Gw::start(|c| c.transport.max_headers = max_headers).await;
    // HTTP/1.1 counts every header including Host; HTTP/2 and HTTP/3 count the regular ones
    // (`:authority` is a pseudo-header).
    for proto in ALL {
        let own = usize::from(matches!(proto, Proto::H1 | Proto::H1Tls));
        for (extra, status) in [
            (max_headers - own - 1, 200),
            (max_headers - own, 200),
            (max_headers - own + 1, 431),
        ] {
            let answer = gw
                .send(proto, with_headers(Req::get("/healthz"), extra, 4))
                .await;
            assert_eq!(
                answer.status, status,
                "{proto:?} with {extra} extra headers"
            );
        }
    }
    // A head over max_header_bytes (16 KiB by default) is refused on every protocol.
    let big = with_headers(Req::get("/healthz"), 4, 5000);
    for proto in [Proto::H1, Proto::H2c, Proto::H1Tls, Proto::H2Tls] {
        let answer = gw.send(proto, big.clone()).await;
        assert_eq!(answer.status, 431, "{proto:?}");
    }
    // HTTP/3 advertises the limit in its SETTINGS: a client that has them refuses to send
    // (h3's client does when they arrived in time); otherwise the server answers 431.
    let mut client = gw.h3().await.unwrap();
    match client.try_send(big, gw.quic).await {
        Ok(answer) => assert_eq!(answer.status, 431),
        Err(e) => assert!(e.contains("HeaderTooBig") && e.contains("16384"), "{e}"),
    }
    client.close().await;
    gw.stop().await;
}

/// Reads until the peer closes or `limit` passes; returns what was read and whether it closed.
async fn read_until_closed<T: tokio::io::AsyncRead + Unpin>(
    io: &mut T,
    limit: Duration,
) -> (Vec<u8>, bool) {
    let mut got = Vec::new();
    let deadline = Instant::now() + limit;
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, io.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (got, true),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => return (got, false),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_closed_within_their_limits() {
    let limit = Duration::from_millis(300);
    let gw = Gw::start(|c| {
        c.limits.header_read_timeout_ms = 300.try_into().unwrap();
        c.limits.body_timeout_ms = 300.try_into().unwrap();
        c.transport.tls_handshake_timeout_ms = 300.try_into().unwrap();
    })
    .await;

    // Silent: no byte after connecting.
    let mut silent = TcpStream::connect(gw.http).await.unwrap();
    let (_, closed) = read_until_closed(&mut silent, limit + MARGIN).await;
    assert!(closed, "a silent connection is closed");

    // Half a request head, then nothing.
    let mut half = TcpStream::connect(gw.http).await.unwrap();
    half.write_all(b"POST /v1/collect?k=demo HTTP/1.1\r\nHost: x\r\nContent-")
        .await
        .unwrap();
    let (_, closed) = read_until_closed(&mut half, limit + MARGIN).await;
    assert!(closed, "a half head is not waited on");

    // A whole head and part of the body: 408, then closed.
    let mut slow_body = TcpStream::connect(gw.http).await.unwrap();
    slow_body
        .write_all(
            b"POST /v1/collect?k=demo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"v\":",
        )
        .await
        .unwrap();
    let (got, closed) = read_until_closed(&mut slow_body, limit + MARGIN).await;
    let got = String::from_utf8_lossy(&got);
    assert!(got.starts_with("HTTP/1.1 408"), "{got}");
    assert!(got.contains("request_timeout"), "{got}");
    assert!(closed, "closed after the 408");

    // Idle keep-alive after a request: closed as well.
    let mut idle = TcpStream::connect(gw.http).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let (got, closed) = read_until_closed(&mut idle, limit + MARGIN).await;
    assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200"));
    assert!(closed, "an idle HTTP/1.1 connection is closed");

    // An HTTP/2 connection without requests is closed too (GOAWAY, then EOF).
    let mut h2 = TcpStream::connect(gw.http).await.unwrap();
    h2.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap();
    let (_, closed) = read_until_closed(&mut h2, limit * 2 + MARGIN).await;
    assert!(closed, "an idle HTTP/2 connection is closed");

    // TLS: a client that never finishes its handshake.
    let mut tls = TcpStream::connect(gw.https).await.unwrap();
    tls.write_all(b"\x16\x03\x01\x00\xc8\x01").await.unwrap();
    let (_, closed) = read_until_closed(&mut tls, limit + MARGIN).await;
    assert!(closed, "an unfinished TLS handshake is not waited on");

    // HTTP/3: a body that stops half-way gets 408.
    let mut client = gw.h3().await.unwrap();
    let req = Request::post(format!(
        "https://localhost:{}/v1/collect?k=demo",
        gw.quic.port()
    ))
    .header("content-length", "100")
    .body(())
    .unwrap();
    let mut stream = client.send.send_request(req).await.unwrap();
    stream
        .send_data(Bytes::from_static(b"{\"v\":"))
        .await
        .unwrap();
    let resp = tokio::time::timeout(limit + MARGIN, stream.recv_response())
        .await
        .expect("an answer within the body timeout")
        .unwrap();
    assert_eq!(resp.status().as_u16(), 408);
    client.close().await;

    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_max_connections_the_next_waits_until_one_closes() {
    let gw = Gw::start(|c| {
        c.transport.max_connections = 2;
        c.transport.quic_max_connections = 1;
    })
    .await;
    // Two connections (one on each TCP listener) hold both slots without sending anything.
    let first = TcpStream::connect(gw.http).await.unwrap();
    let second = TcpStream::connect(gw.https).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut third = TcpStream::connect(gw.http).await.unwrap();
    third
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let (got, _) = read_until_closed(&mut third, Duration::from_millis(700)).await;
    assert!(
        got.is_empty(),
        "served past the cap: {:?}",
        String::from_utf8_lossy(&got)
    );
    drop(second);
    let (got, closed) = read_until_closed(&mut third, MARGIN).await;
    assert!(
        String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200"),
        "served once a slot frees: {:?}",
        String::from_utf8_lossy(&got)
    );
    assert!(closed);
    drop(first);

    // QUIC: one connection at most; the next is refused, and accepted once the first is gone.
    let mut one = gw.h3().await.unwrap();
    let answer = one.send(Req::get("/healthz"), gw.quic).await;
    assert_eq!(answer.status, 200);
    let refused = gw.h3().await;
    assert!(refused.is_err(), "a second QUIC connection is refused");
    one.close().await;
    let deadline = Instant::now() + MARGIN;
    let mut again = loop {
        match gw.h3().await {
            Ok(client) => break client,
            Err(e) => {
                assert!(Instant::now() < deadline, "never accepted again: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    assert_eq!(again.send(Req::get("/healthz"), gw.quic).await.status, 200);
    again.close().await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_listener_has_its_own_cap_and_drains_like_the_others() {
    let gw = Gw::start(|c| c.transport.admin_max_connections = 1).await;
    let metrics = b"GET /metrics HTTP/1.1\r\nHost: x\r\nAuthorization: bearer admin-token\r\n\
                    Connection: close\r\n\r\n";
    // One idle connection holds the admin listener's only slot.
    let first = TcpStream::connect(gw.admin).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut second = TcpStream::connect(gw.admin).await.unwrap();
    second.write_all(metrics).await.unwrap();
    let (got, _) = read_until_closed(&mut second, Duration::from_millis(700)).await;
    assert!(got.is_empty(), "served past the admin cap");
    // The public listeners are not held up by it.
    assert_eq!(gw.send(Proto::H1, Req::get("/healthz")).await.status, 200);
    drop(first);
    let (got, closed) = read_until_closed(&mut second, MARGIN).await;
    let got = String::from_utf8_lossy(&got);
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    assert!(got.contains("pulse_gateway_requests_total"), "{got}");
    assert!(closed);
    // An admin request in flight at shutdown finishes; the listener then closes.
    let mut slow = TcpStream::connect(gw.admin).await.unwrap();
    slow.write_all(
        b"PUT /admin/limits HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer admin-token\r\n\
                     Content-Length: 2\r\nConnection: close\r\n\r\n{",
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let admin = gw.admin;
    let mut gw = gw;
    gw.request_stop();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        TcpStream::connect(admin).await.is_err(),
        "no new admin connections once shutdown started"
    );
    slow.write_all(b"}").await.unwrap();
    let (got, _) = read_until_closed(&mut slow, MARGIN).await;
    let got = String::from_utf8_lossy(&got);
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    let _dir = gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_alone_without_http3_has_no_alt_svc() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    config.server.listen = "127.0.0.1:0".parse().unwrap();
    config.server.admin_listen = "127.0.0.1:0".parse().unwrap();
    config.server.tls_listen = Some("127.0.0.1:0".parse().unwrap());
    config.server.http3 = false;
    config.server.data = dir.path().join("data");
    let listeners = Listeners::bind(config.listen_settings()).await.unwrap();
    assert!(listeners.https_addr().is_some());
    assert!(listeners.quic_addr().is_none());
    let http = listeners.http_addr();
    let gateway = Arc::new(Gateway::open(config).unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(serve_all(gateway, listeners, async {
        let _ = stopped.await;
    }));
    let mut tcp = TcpStream::connect(http).await.unwrap();
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let (got, _) = read_until_closed(&mut tcp, MARGIN).await;
    let got = String::from_utf8_lossy(&got).to_ascii_lowercase();
    assert!(got.starts_with("http/1.1 200"), "{got}");
    assert!(!got.contains("alt-svc"), "{got}");
    let _ = stop.send(());
    task.await.unwrap().unwrap();
}

/// A request body fed through a channel, to send part of it, wait, then the rest.
struct ChannelBody(tokio::sync::mpsc::Receiver<Bytes>);

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        self.get_mut()
            .0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|c| Ok(hyper::body::Frame::data(c))))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_requests_finish_when_shutdown_starts_on_every_protocol() {
    let mut gw = Gw::start(|_| {}).await;
    let bodies: Vec<Vec<u8>> = (0..3u128)
        .map(|i| batch(&format!("drain-{i}"), (i + 1) << 40))
        .collect();
    let half = |b: &[u8]| b.len() / 2;

    // HTTP/1.1: the head and half the body.
    let (body, split) = (&bodies[0], half(&bodies[0]));
    let mut h1 = TcpStream::connect(gw.http).await.unwrap();
    let head = format!(
        "POST /v1/collect?k=demo HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    h1.write_all(head.as_bytes()).await.unwrap();
    h1.write_all(&body[..split]).await.unwrap();

    // HTTP/2 (prior knowledge): the same, through a body channel.
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let tcp = TcpStream::connect(gw.http).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = Request::post(format!(
        "http://localhost:{}/v1/collect?k=demo",
        gw.http.port()
    ))
    .header("content-length", bodies[1].len())
    .body(ChannelBody(rx))
    .unwrap();
    let h2 = tokio::spawn(async move {
        let resp = sender.send_request(req).await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.into_body().collect().await.unwrap().to_bytes())
    });
    tx.send(Bytes::copy_from_slice(&bodies[1][..half(&bodies[1])]))
        .await
        .unwrap();

    // HTTP/3: the same on a request stream.
    let mut client = gw.h3().await.unwrap();
    let req = Request::post(format!(
        "https://localhost:{}/v1/collect?k=demo",
        gw.quic.port()
    ))
    .header("content-length", bodies[2].len())
    .body(())
    .unwrap();
    let mut h3 = client.send.send_request(req).await.unwrap();
    h3.send_data(Bytes::copy_from_slice(&bodies[2][..half(&bodies[2])]))
        .await
        .unwrap();

    // Shutdown starts while all three wait for the rest of their bodies.
    tokio::time::sleep(Duration::from_millis(300)).await;
    gw.request_stop();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        TcpStream::connect(gw.http).await.is_err(),
        "no new connections once shutdown started"
    );

    h1.write_all(&body[split..]).await.unwrap();
    let (got, closed) = read_until_closed(&mut h1, MARGIN).await;
    let got = String::from_utf8_lossy(&got);
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    assert!(closed, "the connection closes after its last answer");

    tx.send(Bytes::copy_from_slice(&bodies[1][half(&bodies[1])..]))
        .await
        .unwrap();
    drop(tx);
    let (status, answer) = tokio::time::timeout(MARGIN, h2).await.unwrap().unwrap();
    assert_eq!(status, 200, "{answer:?}");

    h3.send_data(Bytes::copy_from_slice(&bodies[2][half(&bodies[2])..]))
        .await
        .unwrap();
    h3.finish().await.unwrap();
    let resp = tokio::time::timeout(MARGIN, h3.recv_response())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    client.close().await;

    let gateway = Arc::clone(&gw.gateway);
    let _dir = gw.stop().await;
    // Every acknowledged event is in the log after the shutdown.
    assert_eq!(gateway.log().unwrap().events_from(0).count(), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_caps_hold_the_next_request_until_one_finishes() {
    let gw = Gw::start(|c| {
        c.transport.h2_max_concurrent_streams = 1;
        c.transport.quic_max_streams = 1;
    })
    .await;
    let hold = Duration::from_millis(500);
    let body = batch("streams", 7 << 40);
    let split = body.len() / 2;

    // HTTP/2: one stream waits for the rest of its body; a second request waits for it.
    let tcp = TcpStream::connect(gw.http).await.unwrap();
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let uri = format!("http://localhost:{}", gw.http.port());
    let first = Request::post(format!("{uri}/v1/collect?k=demo"))
        .header("content-length", body.len())
        .body(http_body_util::Either::Left(ChannelBody(rx)))
        .unwrap();
    let mut first_sender = sender.clone();
    let first = tokio::spawn(async move { first_sender.send_request(first).await.unwrap() });
    tx.send(Bytes::copy_from_slice(&body[..split]))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let second = Request::get(format!("{uri}/healthz"))
        .body(http_body_util::Either::Right(Full::new(Bytes::new())))
        .unwrap();
    let mut second_sender = sender.clone();
    let second = tokio::spawn(async move { second_sender.send_request(second).await });
    tokio::time::sleep(hold).await;
    assert!(!second.is_finished(), "a second HTTP/2 stream past the cap");
    tx.send(Bytes::copy_from_slice(&body[split..]))
        .await
        .unwrap();
    drop(tx);
    assert_eq!(first.await.unwrap().status().as_u16(), 200);
    let second = tokio::time::timeout(MARGIN, second).await.unwrap().unwrap();
    assert_eq!(second.unwrap().status().as_u16(), 200);

    // HTTP/3: the same with request streams.
    let mut client = gw.h3().await.unwrap();
    let post = Request::post(format!(
        "https://localhost:{}/v1/collect?k=demo",
        gw.quic.port()
    ))
    .header("content-length", body.len())
    .body(())
    .unwrap();
    let mut first = client.send.send_request(post).await.unwrap();
    first
        .send_data(Bytes::copy_from_slice(&body[..split]))
        .await
        .unwrap();
    let mut other = client.send.clone();
    let quic = gw.quic;
    let second = tokio::spawn(async move {
        let get = Request::get(format!("https://localhost:{}/healthz", quic.port()))
            .body(())
            .unwrap();
        let mut stream = other.send_request(get).await.unwrap();
        stream.finish().await.unwrap();
        stream.recv_response().await.unwrap().status().as_u16()
    });
    tokio::time::sleep(hold).await;
    assert!(!second.is_finished(), "a second HTTP/3 stream past the cap");
    first
        .send_data(Bytes::copy_from_slice(&body[split..]))
        .await
        .unwrap();
    first.finish().await.unwrap();
    assert_eq!(first.recv_response().await.unwrap().status().as_u16(), 200);
    while first.recv_data().await.unwrap().is_some() {}
    let second = tokio::time::timeout(MARGIN, second).await.unwrap().unwrap();
    assert_eq!(second, 200);
    client.close().await;
    gw.stop().await;
}

/// Waits (at most 10 s) until `series` reaches `want` in the gateway's metrics; returns it.
async fn metric_reaches(gateway: &Gateway, series: &str, want: u64) -> u64 {
    let read = || {
        gateway
            .metrics
            .text()
            .lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or(0u64)
    };
    let until = Instant::now() + Duration::from_secs(10);
    while read() < want && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    read()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_stream_is_not_an_invalid_batch() {
    let gw = Gw::start(|_| {}).await;
    let body = batch("cancel", 9 << 40);
    // HTTP/2: half the body, then the client gives up (RST_STREAM CANCEL).
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let tcp = TcpStream::connect(gw.http).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = Request::post(format!(
        "http://localhost:{}/v1/collect?k=demo",
        gw.http.port()
    ))
    .header("content-length", body.len())
    .body(ChannelBody(rx))
    .unwrap();
    let pending = tokio::spawn(async move { sender.send_request(req).await });
    tx.send(Bytes::copy_from_slice(&body[..body.len() / 2]))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    pending.abort();
    drop(tx);
    // HTTP/1.1: the client closes the connection mid-body.
    let mut h1 = TcpStream::connect(gw.http).await.unwrap();
    let head = format!(
        "POST /v1/collect?k=demo HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    h1.write_all(head.as_bytes()).await.unwrap();
    h1.write_all(&body[..body.len() / 2]).await.unwrap();
    drop(h1);

    let h2 = metric_reaches(
        &gw.gateway,
        "pulse_gateway_requests_total{handler=\"collect\",protocol=\"http2\",status=\"499\"}",
        1,
    )
    .await;
    let h1 = metric_reaches(
        &gw.gateway,
        "pulse_gateway_requests_total{handler=\"collect\",protocol=\"http1\",status=\"499\"}",
        1,
    )
    .await;
    assert_eq!((h1, h2), (1, 1));
    assert_eq!(
        gw.gateway
            .metrics
            .error_count(pulse_protocol::ErrorCode::InvalidBatch),
        0
    );
    // Still serving.
    let answer = gw
        .send(Proto::H2c, Req::post("/v1/collect?k=demo", body))
        .await;
    assert_eq!(answer.status, 200);
    let _dir = gw.stop().await;
}
