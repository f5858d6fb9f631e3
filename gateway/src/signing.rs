//! Signed decisions: every decision the gateway gives can be checked by the publisher's own
//! server or edge worker, so that what the page was told is what the wall enforces.
//!
//! A signed decision is a JWT (compact JWS, `alg: EdDSA`, Ed25519, with a `kid`) whose claims
//! are the reader, the site, the decision's action and what it carries, the bundle and the rule,
//! `iat` and a short `exp`. Any JWT library verifies it with the public key the gateway serves as
//! a JWK set (`GET /v1/keys`). The key is read from a PKCS#8 file, generated on first start
//! under the data folder when none is configured.
//!
//! IO boundary: [`DecisionSigner::load_or_create`]; the rest is pure.

use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use pulse_protocol::Decision;
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair};
use serde_json::{Value, json};

/// How long a signed decision is good for, seconds (a page that waits longer asks again).
pub const DECISION_TTL_S: u64 = 300;

/// Signs decisions with one Ed25519 key.
pub struct DecisionSigner {
    pair: Ed25519KeyPair,
    kid: String,
    /// The JWT header, base64url, ready to use.
    header: String,
}

impl std::fmt::Debug for DecisionSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecisionSigner")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

/// Why the signing key could not be had.
#[derive(Debug, thiserror::Error)]
pub enum SigningError {
    /// Reading or writing the key file.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// The file is not an Ed25519 PKCS#8 key.
    #[error("{0}: not an Ed25519 private key in PKCS#8 (DER)")]
    NotAKey(String),
    /// The system's random source failed.
    #[error("could not generate a key")]
    Random,
}

impl DecisionSigner {
    /// A signer from a PKCS#8 (DER) Ed25519 key.
    pub fn from_pkcs8(der: &[u8]) -> Option<Self> {
        let pair = Ed25519KeyPair::from_pkcs8(der).ok()?;
        let digest = ring::digest::digest(&ring::digest::SHA256, pair.public_key().as_ref());
        let kid: String = digest.as_ref()[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let header =
            URL_SAFE_NO_PAD.encode(json!({"alg": "EdDSA", "typ": "JWT", "kid": kid}).to_string());
        Some(Self { pair, kid, header })
    }

    /// Reads the key at `path`, or generates one there (mode 0600) when the file does not exist.
    pub fn load_or_create(path: &Path) -> Result<Self, SigningError> {
        let io = |source| SigningError::Io {
            path: path.display().to_string(),
            source,
        };
        match std::fs::read(path) {
            Ok(der) => Self::from_pkcs8(&der)
                .ok_or_else(|| SigningError::NotAKey(path.display().to_string())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let doc = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
                    .map_err(|_| SigningError::Random)?;
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent).map_err(io)?;
                }
                write_private(path, doc.as_ref()).map_err(io)?;
                Self::from_pkcs8(doc.as_ref())
                    .ok_or_else(|| SigningError::NotAKey(path.display().to_string()))
            }
            Err(e) => Err(io(e)),
        }
    }

    /// The key's id.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public key as a JWK set (RFC 8037: `kty: OKP`, `crv: Ed25519`).
    pub fn jwks(&self) -> Value {
        json!({"keys": [{
            "kty": "OKP",
            "crv": "Ed25519",
            "alg": "EdDSA",
            "use": "sig",
            "kid": self.kid,
            "x": URL_SAFE_NO_PAD.encode(self.pair.public_key().as_ref()),
        }]})
    }

    /// The signed form of `decision` for `reader` on `site`, issued at `now_s`.
    pub fn sign(&self, site: &str, reader: &str, decision: &Decision, now_s: u64) -> String {
        let mut claims = json!({
            "sub": reader,
            "site": site,
            "iat": now_s,
            "exp": now_s + DECISION_TTL_S,
            "action": decision.action,
            "reason": decision.reason,
            "bundle": decision.version,
        });
        let optional = [
            ("rule", decision.rule.as_ref().map(|v| json!(v))),
            ("remaining", decision.remaining.map(|v| json!(v))),
            ("limit", decision.limit.map(|v| json!(v))),
            ("variant", decision.variant.as_ref().map(|v| json!(v))),
            ("offer", decision.offer.as_ref().map(|v| json!(v))),
            ("prompt", decision.prompt.as_ref().map(|v| json!(v))),
            ("fallback", decision.fallback.then_some(json!(true))),
        ];
        for (name, value) in optional {
            if let Some(v) = value {
                claims[name] = v;
            }
        }
        let signing = format!(
            "{}.{}",
            self.header,
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let sig = self.pair.sign(signing.as_bytes());
        format!("{signing}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
    }
}

#[cfg(unix)]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

#[cfg(not(unix))]
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    std::fs::write(path, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pulse_protocol::Action;
    use ring::signature::{ED25519, UnparsedPublicKey};

    #[test]
    fn a_signed_decision_verifies_with_the_served_key_and_says_what_was_decided() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys/decisions.pk8");
        let signer = DecisionSigner::load_or_create(&path).unwrap();
        let again = DecisionSigner::load_or_create(&path).unwrap();
        assert_eq!(signer.kid(), again.kid(), "the key is kept");

        let mut d = Decision::new(Action::Paywall, "rule", "b1");
        d.rule = Some("paywall-likely".into());
        d.variant = Some("premium".into());
        let token = signer.sign("demo", "reader-1", &d, 1_800_000_000);
        let jwks = signer.jwks();
        let x = URL_SAFE_NO_PAD
            .decode(jwks["keys"][0]["x"].as_str().unwrap())
            .unwrap();
        let (signed, sig) = token.rsplit_once('.').unwrap();
        UnparsedPublicKey::new(&ED25519, x)
            .verify(signed.as_bytes(), &URL_SAFE_NO_PAD.decode(sig).unwrap())
            .expect("verifies");
        let (header, claims) = signed.split_once('.').unwrap();
        let header: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).unwrap()).unwrap();
        assert_eq!(header["kid"], signer.kid());
        assert_eq!(header["alg"], "EdDSA");
        let claims: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(claims).unwrap()).unwrap();
        assert_eq!(claims["sub"], "reader-1");
        assert_eq!(claims["site"], "demo");
        assert_eq!(claims["action"], "paywall");
        assert_eq!(claims["variant"], "premium");
        assert_eq!(claims["rule"], "paywall-likely");
        assert_eq!(claims["exp"], 1_800_000_000 + DECISION_TTL_S);
        assert!(claims.get("offer").is_none());

        // A file that is not a key is refused, not replaced.
        std::fs::write(&path, b"junk").unwrap();
        assert!(matches!(
            DecisionSigner::load_or_create(&path),
            Err(SigningError::NotAKey(_))
        ));
    }
}
