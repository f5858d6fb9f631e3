//! Certificates and TLS settings for the TLS listener (HTTP/1.1 and HTTP/2 by ALPN) and the QUIC
//! listener (HTTP/3). The certificate comes from the PEM files named in `pulse.toml`; without
//! them a self-signed one is generated at start and written to `<data>/tls/` so that clients can
//! trust it. The crypto provider is `ring`; 0-RTT (early data) is off on both listeners.
//!
//! IO boundary: [`Certified::load_or_generate`] reads the PEM files or writes the generated ones;
//! the rest is pure.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine as _;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::settings::Settings;

/// ALPN protocols of the TLS listener, in order of preference.
pub(crate) const TCP_ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];
/// ALPN protocol of the QUIC listener.
pub(crate) const QUIC_ALPN: &[u8] = b"h3";

/// Why the certificate or the TLS settings could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or holds no usable item.
    #[error("{path}: {message}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// The generated certificate could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The self-signed certificate could not be generated.
    #[error("cannot generate a self-signed certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// rustls refused the certificate and key (e.g. they do not match).
    #[error("the certificate or key is not usable: {0}")]
    Rustls(#[from] rustls::Error),
    /// The TLS settings do not suit QUIC (no TLS 1.3 cipher suite for the initial keys).
    #[error("TLS settings unusable for QUIC: {0}")]
    Quic(String),
}

/// The certificate chain and key the listeners present, with what identifies it.
#[derive(Debug)]
pub struct Certified {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    /// Where the certificate is: the configured file, or `<data>/tls/cert.pem` when generated.
    pub cert_path: PathBuf,
    /// Whether it was generated at start (self-signed).
    pub self_signed: bool,
    /// SHA-256 of the leaf certificate (DER), as colon-separated upper-case hex.
    pub sha256: String,
    /// Base64 of the SHA-256 of the leaf's SubjectPublicKeyInfo: what Chromium's
    /// `--ignore-certificate-errors-spki-list` and HPKP-style pins take. Empty when the
    /// certificate could not be parsed that far.
    pub spki_sha256_base64: String,
}

impl Certified {
    /// Loads `tls_cert` / `tls_key`, or generates a self-signed certificate for localhost,
    /// 127.0.0.1, ::1 and the TLS listen address (when it names one) and writes `cert.pem`,
    /// `key.pem` (mode 0600) and `spki.sha256.base64` to `<data>/tls/`.
    pub fn load_or_generate(server: &Settings) -> Result<Self, TlsError> {
        match (&server.tls_cert, &server.tls_key) {
            (Some(cert), Some(key)) => Self::load(cert, key),
            _ => Self::generate(server),
        }
    }

    fn load(cert_path: &Path, key_path: &Path) -> Result<Self, TlsError> {
        let pem_error = |path: &Path, e: &dyn std::fmt::Display| TlsError::Pem {
            path: path.to_owned(),
            message: e.to_string(),
        };
        let chain = CertificateDer::pem_file_iter(cert_path)
            .map_err(|e| pem_error(cert_path, &e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| pem_error(cert_path, &e))?;
        if chain.is_empty() {
            return Err(pem_error(cert_path, &"no CERTIFICATE in the file"));
        }
        let key = PrivateKeyDer::from_pem_file(key_path).map_err(|e| pem_error(key_path, &e))?;
        Ok(Self::new(chain, key, cert_path.to_owned(), false))
    }

    fn generate(server: &Settings) -> Result<Self, TlsError> {
        let mut names = vec![
            "localhost".to_owned(),
            "127.0.0.1".to_owned(),
            "::1".to_owned(),
        ];
        if let Some(addr) = server.tls_listen {
            let ip = addr.ip();
            if !ip.is_unspecified() && !names.contains(&ip.to_string()) {
                names.push(ip.to_string());
            }
        }
        let generated = rcgen::generate_simple_self_signed(names)?;
        let dir = server.data.join("tls");
        std::fs::create_dir_all(&dir).map_err(|source| TlsError::Write {
            path: dir.clone(),
            source,
        })?;
        let cert_path = dir.join("cert.pem");
        write_file(&cert_path, generated.cert.pem().as_bytes(), 0o644)?;
        write_file(
            &dir.join("key.pem"),
            generated.signing_key.serialize_pem().as_bytes(),
            0o600,
        )?;
        let chain = vec![generated.cert.der().clone()];
        let key = PrivateKeyDer::from(PrivatePkcs8KeyDer::from(
            generated.signing_key.serialize_der(),
        ));
        let certified = Self::new(chain, key, cert_path, true);
        write_file(
            &dir.join("spki.sha256.base64"),
            format!("{}\n", certified.spki_sha256_base64).as_bytes(),
            0o644,
        )?;
        Ok(certified)
    }

    fn new(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        cert_path: PathBuf,
        self_signed: bool,
    ) -> Self {
        let leaf = chain.first().map(|c| c.as_ref()).unwrap_or_default();
        let sha256 = colon_hex(ring::digest::digest(&ring::digest::SHA256, leaf).as_ref());
        let spki_sha256_base64 = spki_of(leaf)
            .map(|spki| {
                let digest = ring::digest::digest(&ring::digest::SHA256, spki);
                base64::engine::general_purpose::STANDARD.encode(digest.as_ref())
            })
            .unwrap_or_default();
        Self {
            chain,
            key,
            cert_path,
            self_signed,
            sha256,
            spki_sha256_base64,
        }
    }

    /// rustls settings of the TLS listener: TLS 1.2 and 1.3, ALPN `h2` then `http/1.1`, no
    /// early data.
    pub(crate) fn tcp_config(&self) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(self.chain.clone(), self.key.clone_key())?;
        config.alpn_protocols = TCP_ALPN.iter().map(|p| p.to_vec()).collect();
        config.max_early_data_size = 0;
        Ok(Arc::new(config))
    }

    /// quinn settings of the QUIC listener: TLS 1.3, ALPN `h3`, no 0-RTT.
    pub(crate) fn quic_config(&self) -> Result<quinn::crypto::rustls::QuicServerConfig, TlsError> {
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_no_client_auth()
            .with_single_cert(self.chain.clone(), self.key.clone_key())?;
        config.alpn_protocols = vec![QUIC_ALPN.to_vec()];
        // QUIC allows 0 or u32::MAX here; 0 means 0-RTT data is never accepted.
        config.max_early_data_size = 0;
        quinn::crypto::rustls::QuicServerConfig::try_from(config)
            .map_err(|e| TlsError::Quic(e.to_string()))
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), TlsError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let err = |source| TlsError::Write {
        path: path.to_owned(),
        source,
    };
    // Replace any previous file: `mode` applies only to files that are created.
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(err(e)),
        _ => {}
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(err)?;
    file.write_all(bytes).map_err(err)?;
    file.sync_all().map_err(err)
}

fn colon_hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 3);
    for (i, b) in bytes.iter().enumerate() {
        if i > 0 {
            out.push(':');
        }
        let _ = write!(out, "{b:02X}");
    }
    out
}

/// One DER element (tag, length, contents) read from the start of a byte slice.
struct Der<'a> {
    tag: u8,
    /// The whole element: tag, length and contents.
    whole: &'a [u8],
    contents: &'a [u8],
    /// What follows the element.
    rest: &'a [u8],
}

impl<'a> Der<'a> {
    fn read(input: &'a [u8]) -> Option<Self> {
        let (&tag, after_tag) = input.split_first()?;
        let (&first, after_len) = after_tag.split_first()?;
        let (len, body) = if first < 0x80 {
            (usize::from(first), after_len)
        } else {
            let n = usize::from(first & 0x7f);
            if n == 0 || n > 4 || after_len.len() < n {
                return None;
            }
            let len = after_len[..n]
                .iter()
                .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
            (len, &after_len[n..])
        };
        if body.len() < len {
            return None;
        }
        let header = input.len() - body.len();
        Some(Self {
            tag,
            whole: &input[..header + len],
            contents: &body[..len],
            rest: &body[len..],
        })
    }
}

/// The DER SubjectPublicKeyInfo of an X.509 certificate (RFC 5280 §4.1): the seventh field of
/// `tbsCertificate`, counting the optional `[0] version`.
fn spki_of(cert: &[u8]) -> Option<&[u8]> {
    const SEQUENCE: u8 = 0x30;
    const VERSION: u8 = 0xa0;
    let certificate = Der::read(cert).filter(|d| d.tag == SEQUENCE)?;
    let tbs = Der::read(certificate.contents).filter(|d| d.tag == SEQUENCE)?;
    let mut rest = tbs.contents;
    if rest.first() == Some(&VERSION) {
        rest = Der::read(rest)?.rest;
    }
    // serialNumber, signature, issuer, validity, subject.
    for _ in 0..5 {
        rest = Der::read(rest)?.rest;
    }
    let spki = Der::read(rest).filter(|d| d.tag == SEQUENCE)?;
    Some(spki.whole)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::PublicKeyData as _;

    fn server(dir: &Path) -> Settings {
        Settings {
            data: dir.to_owned(),
            tls_listen: Some("127.0.0.2:0".parse().unwrap()),
            ..Settings::default()
        }
    }

    #[test]
    fn the_spki_is_found_in_a_generated_certificate() {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        assert_eq!(
            spki_of(cert.der()).unwrap(),
            key.subject_public_key_info().as_slice()
        );
        assert_eq!(spki_of(b"\x30\x03\x02\x01"), None, "truncated");
        assert_eq!(spki_of(b""), None);
    }

    #[test]
    fn a_self_signed_certificate_is_written_and_loads_again() {
        let dir = tempfile::tempdir().unwrap();
        let generated = Certified::load_or_generate(&server(dir.path())).unwrap();
        assert!(generated.self_signed);
        assert_eq!(generated.cert_path, dir.path().join("tls/cert.pem"));
        assert_eq!(generated.sha256.len(), 32 * 3 - 1);
        assert_eq!(generated.spki_sha256_base64.len(), 44);
        let written = std::fs::read_to_string(dir.path().join("tls/spki.sha256.base64")).unwrap();
        assert_eq!(written.trim(), generated.spki_sha256_base64);
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(dir.path().join("tls/key.pem"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);

        let mut config = server(dir.path());
        config.tls_cert = Some(dir.path().join("tls/cert.pem"));
        config.tls_key = Some(dir.path().join("tls/key.pem"));
        let loaded = Certified::load_or_generate(&config).unwrap();
        assert!(!loaded.self_signed);
        assert_eq!(loaded.sha256, generated.sha256);
        assert_eq!(loaded.spki_sha256_base64, generated.spki_sha256_base64);

        let tcp = loaded.tcp_config().unwrap();
        assert_eq!(
            tcp.alpn_protocols,
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        );
        assert_eq!(tcp.max_early_data_size, 0, "no 0-RTT on TLS");
        loaded.quic_config().unwrap();
    }

    #[test]
    fn bad_pem_files_are_reported_with_their_path() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("cert.pem");
        std::fs::write(&cert, "not pem").unwrap();
        let mut config = server(dir.path());
        config.tls_cert = Some(cert.clone());
        config.tls_key = Some(cert.clone());
        let err = Certified::load_or_generate(&config)
            .unwrap_err()
            .to_string();
        assert!(err.contains("cert.pem"), "{err}");
    }
}
