//! The client side of each transport: HTTP/1.1 (one keep-alive connection per worker), HTTP/2
//! (cleartext with prior knowledge for `http://`, TLS with ALPN `h2` for `https://`) and
//! HTTP/3 over QUIC, each sending one collect request at a time per [`Sender`]. This is the IO
//! boundary of the load generator.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::{BufMut, Bytes};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper::header::{self, HeaderValue};
use hyper::{Request, Uri};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// Which HTTP version to speak.
#[derive(Clone, Copy, PartialEq, Eq, Debug, clap::ValueEnum)]
pub enum Proto {
    /// HTTP/1.1 keep-alive, one connection per worker (TLS for `https://`).
    H1,
    /// HTTP/2: prior knowledge over TCP for `http://`, TLS with ALPN h2 for `https://`.
    H2,
    /// HTTP/3 over QUIC (`https://` only).
    H3,
}

impl Proto {
    /// `h1`, `h2` or `h3`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::H1 => "h1",
            Self::H2 => "h2",
            Self::H3 => "h3",
        }
    }
}

/// Why a connection or a request failed before an answer came.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The URL cannot be used.
    #[error("bad url: {0}")]
    Url(String),
    /// The TLS settings cannot be used (CA file unreadable, no certificate in it).
    #[error("tls setup: {0}")]
    TlsSetup(String),
    /// Could not resolve, connect, or complete the TLS/QUIC/HTTP handshake.
    #[error("connect: {0}")]
    Connect(String),
    /// The request failed on an established connection.
    #[error("request: {0}")]
    Request(String),
}

impl TransportError {
    /// A stable reason code for reports.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Url(_) | Self::TlsSetup(_) => "setup_error",
            Self::Connect(_) => "connect_error",
            Self::Request(_) => "transport_error",
        }
    }
}

/// Where the requests go.
#[derive(Debug, Clone)]
pub struct Target {
    /// `https` when true, else `http`.
    pub https: bool,
    /// The host name or address, as in the URL.
    pub host: String,
    /// `host:port`.
    pub authority: String,
    /// The full collect URL (`…/v1/collect?k=SITE`).
    pub collect: Uri,
    /// Its path and query, for HTTP/1.1's request line.
    pub path_and_query: String,
}

impl Target {
    /// The collect endpoint under `base` (`http://host:port` or `https://…`, any path prefix
    /// kept) for site `site`.
    pub fn parse(base: &str, site: &str) -> Result<Self, TransportError> {
        let uri: Uri = base
            .parse()
            .map_err(|e| TransportError::Url(format!("{base}: {e}")))?;
        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => {
                return Err(TransportError::Url(format!(
                    "{base}: use http:// or https://"
                )));
            }
        };
        let host = uri
            .host()
            .ok_or_else(|| TransportError::Url(format!("{base}: no host")))?
            .to_owned();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let authority = if host.contains(':') {
            format!("[{}]:{port}", host.trim_matches(['[', ']']))
        } else {
            format!("{host}:{port}")
        };
        let prefix = uri.path().trim_end_matches('/');
        let path_and_query = format!("{prefix}/v1/collect?k={site}");
        let scheme = if https { "https" } else { "http" };
        let collect = format!("{scheme}://{authority}{path_and_query}")
            .parse()
            .map_err(|e| TransportError::Url(format!("{base}: {e}")))?;
        Ok(Self {
            https,
            host: host.trim_matches(['[', ']']).to_owned(),
            authority,
            collect,
            path_and_query,
        })
    }

    /// The first address the authority resolves to.
    pub async fn resolve(&self) -> Result<SocketAddr, TransportError> {
        tokio::net::lookup_host(&self.authority)
            .await
            .map_err(|e| TransportError::Connect(format!("resolve {}: {e}", self.authority)))?
            .next()
            .ok_or_else(|| TransportError::Connect(format!("{} has no address", self.authority)))
    }
}

/// Which server certificates to trust over TLS and QUIC.
#[derive(Debug, Clone, Default)]
pub struct TlsOptions {
    /// A PEM file of certificates to trust (the gateway's self-signed certificate).
    pub ca: Option<PathBuf>,
    /// Accept any certificate. For tests on loopback only: it gives no protection at all.
    pub insecure: bool,
}

impl TlsOptions {
    /// A rustls client configuration (ring provider) offering `alpn`; TLS 1.3 only when
    /// `tls13_only` (QUIC requires it).
    pub fn client_config(
        &self,
        alpn: &[&[u8]],
        tls13_only: bool,
    ) -> Result<rustls::ClientConfig, TransportError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let versions: &[&rustls::SupportedProtocolVersion] = if tls13_only {
            &[&rustls::version::TLS13]
        } else {
            rustls::DEFAULT_VERSIONS
        };
        let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(versions)
            .map_err(|e| TransportError::TlsSetup(e.to_string()))?;
        let mut config = if self.insecure {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider)))
                .with_no_client_auth()
        } else {
            let mut roots = rustls::RootCertStore::empty();
            if let Some(path) = &self.ca {
                let certs = CertificateDer::pem_file_iter(path)
                    .map_err(|e| TransportError::TlsSetup(format!("{}: {e}", path.display())))?;
                for cert in certs {
                    let cert = cert.map_err(|e| {
                        TransportError::TlsSetup(format!("{}: {e}", path.display()))
                    })?;
                    roots.add(cert).map_err(|e| {
                        TransportError::TlsSetup(format!("{}: {e}", path.display()))
                    })?;
                }
            }
            if roots.is_empty() {
                return Err(TransportError::TlsSetup(
                    "https needs --ca FILE (the server's certificate) or --insecure".into(),
                ));
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        };
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(config)
    }
}

/// Accepts every server certificate (signatures are still checked, so the handshake is sound;
/// who the server is, is not). Test use only, behind `--insecure`.
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Opens connections of one protocol to one target.
#[derive(Clone)]
pub struct Connector {
    proto: Proto,
    target: Target,
    addr: SocketAddr,
    origin: Option<HeaderValue>,
    tls: Option<tokio_rustls::TlsConnector>,
    quic: Option<quinn::Endpoint>,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector")
            .field("proto", &self.proto)
            .field("target", &self.target)
            .field("addr", &self.addr)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl Connector {
    /// Resolves the target and prepares TLS or QUIC as the URL and protocol need.
    pub async fn new(
        proto: Proto,
        target: Target,
        origin: Option<&str>,
        tls: &TlsOptions,
    ) -> Result<Self, TransportError> {
        let addr = target.resolve().await?;
        let origin = origin
            .map(|o| {
                HeaderValue::from_str(o).map_err(|e| TransportError::Url(format!("origin: {e}")))
            })
            .transpose()?;
        let (tls_connector, quic) = match (proto, target.https) {
            (Proto::H3, false) => {
                return Err(TransportError::Url("h3 needs an https:// URL".into()));
            }
            (Proto::H3, true) => {
                let config = tls.client_config(&[b"h3"], true)?;
                let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(config)
                    .map_err(|e| TransportError::TlsSetup(e.to_string()))?;
                let bind: SocketAddr = if addr.is_ipv6() {
                    "[::]:0"
                        .parse()
                        .unwrap_or_else(|_| unreachable!("a constant address"))
                } else {
                    "0.0.0.0:0"
                        .parse()
                        .unwrap_or_else(|_| unreachable!("a constant address"))
                };
                let mut endpoint = quinn::Endpoint::client(bind)
                    .map_err(|e| TransportError::Connect(format!("udp socket: {e}")))?;
                endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
                (None, Some(endpoint))
            }
            (_, true) => {
                let alpn: &[u8] = if proto == Proto::H2 {
                    b"h2"
                } else {
                    b"http/1.1"
                };
                let config = tls.client_config(&[alpn], false)?;
                (
                    Some(tokio_rustls::TlsConnector::from(Arc::new(config))),
                    None,
                )
            }
            (_, false) => (None, None),
        };
        Ok(Self {
            proto,
            target,
            addr,
            origin,
            tls: tls_connector,
            quic,
        })
    }

    /// The target.
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// Opens one connection and returns its request sender (cloneable for h2 and h3).
    pub async fn connect(&self) -> Result<Sender, TransportError> {
        let connect_err = |e: &dyn std::fmt::Display| TransportError::Connect(e.to_string());
        if let Some(endpoint) = &self.quic {
            let conn = endpoint
                .connect(self.addr, &self.target.host)
                .map_err(|e| connect_err(&e))?
                .await
                .map_err(|e| connect_err(&e))?;
            let (mut driver, send) = h3::client::new(h3_quinn::Connection::new(conn))
                .await
                .map_err(|e| connect_err(&e))?;
            tokio::spawn(async move {
                let _closed = driver.wait_idle().await;
            });
            return Ok(Sender::H3(send));
        }
        let tcp = TcpStream::connect(self.addr)
            .await
            .map_err(|e| connect_err(&e))?;
        let _ = tcp.set_nodelay(true);
        match &self.tls {
            Some(tls) => {
                let name =
                    ServerName::try_from(self.target.host.clone()).map_err(|e| connect_err(&e))?;
                let stream = tls.connect(name, tcp).await.map_err(|e| connect_err(&e))?;
                self.handshake(stream).await
            }
            None => self.handshake(tcp).await,
        }
    }

    async fn handshake<I>(&self, io: I) -> Result<Sender, TransportError>
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let io = TokioIo::new(io);
        let connect_err = |e: hyper::Error| TransportError::Connect(e.to_string());
        if self.proto == Proto::H2 {
            let (send, conn) = http2::Builder::new(TokioExecutor::new())
                .handshake(io)
                .await
                .map_err(connect_err)?;
            tokio::spawn(conn);
            Ok(Sender::H2(send))
        } else {
            let (send, conn) = http1::handshake(io).await.map_err(connect_err)?;
            tokio::spawn(conn);
            Ok(Sender::H1(send))
        }
    }

    /// Sends one collect request with `body` on `sender` and returns the status and the body
    /// of the answer.
    pub async fn post(
        &self,
        sender: &mut Sender,
        body: Bytes,
    ) -> Result<(u16, Bytes), TransportError> {
        let request_err = |e: &dyn std::fmt::Display| TransportError::Request(e.to_string());
        let len = body.len();
        let mut builder = Request::post(match sender {
            Sender::H1(_) => {
                Uri::try_from(self.target.path_and_query.as_str()).map_err(|e| request_err(&e))?
            }
            _ => self.target.collect.clone(),
        })
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CONTENT_LENGTH, len);
        if matches!(sender, Sender::H1(_)) {
            builder = builder.header(header::HOST, self.target.authority.as_str());
        }
        if let Some(origin) = &self.origin {
            builder = builder.header(header::ORIGIN, origin.clone());
        }
        match sender {
            Sender::H1(send) => {
                let req = builder.body(Full::new(body)).map_err(|e| request_err(&e))?;
                send.ready().await.map_err(|e| request_err(&e))?;
                let resp = send.send_request(req).await.map_err(|e| request_err(&e))?;
                read_answer(resp).await
            }
            Sender::H2(send) => {
                let req = builder.body(Full::new(body)).map_err(|e| request_err(&e))?;
                send.ready().await.map_err(|e| request_err(&e))?;
                let resp = send.send_request(req).await.map_err(|e| request_err(&e))?;
                read_answer(resp).await
            }
            Sender::H3(send) => {
                let req = builder.body(()).map_err(|e| request_err(&e))?;
                let mut stream = send.send_request(req).await.map_err(|e| request_err(&e))?;
                stream.send_data(body).await.map_err(|e| request_err(&e))?;
                stream.finish().await.map_err(|e| request_err(&e))?;
                let resp = stream.recv_response().await.map_err(|e| request_err(&e))?;
                let mut out = Vec::new();
                while let Some(chunk) = stream.recv_data().await.map_err(|e| request_err(&e))? {
                    out.put(chunk);
                }
                Ok((resp.status().as_u16(), Bytes::from(out)))
            }
        }
    }
}

/// A connection's request sender.
pub enum Sender {
    /// HTTP/1.1: one request at a time.
    H1(http1::SendRequest<Full<Bytes>>),
    /// HTTP/2: clones share the connection, one stream each at a time.
    H2(http2::SendRequest<Full<Bytes>>),
    /// HTTP/3: clones share the QUIC connection.
    H3(h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>),
}

impl std::fmt::Debug for Sender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::H1(_) => "Sender::H1",
            Self::H2(_) => "Sender::H2",
            Self::H3(_) => "Sender::H3",
        })
    }
}

impl Sender {
    /// Another handle on the same connection, for protocols that multiplex (h2, h3).
    pub fn share(&self) -> Option<Self> {
        match self {
            Self::H1(_) => None,
            Self::H2(s) => Some(Self::H2(s.clone())),
            Self::H3(s) => Some(Self::H3(s.clone())),
        }
    }
}

/// The status and whole body of an HTTP/1.1 or HTTP/2 answer.
async fn read_answer(
    resp: hyper::Response<hyper::body::Incoming>,
) -> Result<(u16, Bytes), TransportError> {
    let status = resp.status().as_u16();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| TransportError::Request(e.to_string()))?;
    Ok((status, bytes.to_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        let t = Target::parse("http://127.0.0.1:8080/", "demo").unwrap();
        assert!(!t.https);
        assert_eq!(t.authority, "127.0.0.1:8080");
        assert_eq!(t.path_and_query, "/v1/collect?k=demo");
        assert_eq!(
            t.collect.to_string(),
            "http://127.0.0.1:8080/v1/collect?k=demo"
        );
        let t = Target::parse("https://localhost/pulse", "news").unwrap();
        assert_eq!(t.authority, "localhost:443");
        assert_eq!(t.path_and_query, "/pulse/v1/collect?k=news");
        assert!(Target::parse("ftp://x", "demo").is_err());
        assert!(Target::parse("not a url", "demo").is_err());
    }

    #[test]
    fn https_needs_a_ca_or_insecure() {
        let none = TlsOptions::default();
        assert!(matches!(
            none.client_config(&[b"h2"], false),
            Err(TransportError::TlsSetup(_))
        ));
        let insecure = TlsOptions {
            insecure: true,
            ..TlsOptions::default()
        };
        let config = insecure.client_config(&[b"h3"], true).unwrap();
        assert_eq!(config.alpn_protocols, vec![b"h3".to_vec()]);
    }
}
