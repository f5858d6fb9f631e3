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
use std::sync::Mutex;

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
    recent: Recent,
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
        Some(Self {
            pair,
            kid,
            header,
            recent: Recent::new(),
        })
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

    /// The signed form of `decision` for `reader` on `site`, issued at `now_s`, and whether
    /// the signature was reused: the same decision given to the same reader on the same site
    /// less than [`REUSE_S`] before carries the same token (its `iat` that earlier second, so
    /// at least four of its five minutes left), since an Ed25519 signature costs the gateway
    /// more than deciding does. Reuse never weakens a token: the claims are rebuilt from this
    /// decision and only the signature is remembered, so a stale or mistaken slot gives a
    /// token that fails verification, never one that says something that was not decided.
    pub fn sign(&self, site: &str, reader: &str, decision: &Decision, now_s: u64) -> Signed {
        let body = claims_body(site, reader, decision);
        let key = std::hash::BuildHasher::hash_one(&self.recent.hasher, &body) | 1;
        let slot = &self.recent.slots[(key as usize) & (SLOTS - 1)];
        let remembered = {
            let slot = slot
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            (slot.key == key && slot.iat <= now_s && now_s - slot.iat < REUSE_S)
                .then_some((slot.iat, slot.sig))
        };
        // The signing input is built once: signed when new, and the token's start either way.
        let mut token = self.signing_input(&body, remembered.map_or(now_s, |(iat, _)| iat));
        let (sig, reused) = match remembered {
            Some((_, sig)) => (sig, true),
            None => {
                let mut sig = [0u8; 64];
                sig.copy_from_slice(self.pair.sign(token.as_bytes()).as_ref());
                let mut slot = slot
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                *slot = Slot {
                    key,
                    iat: now_s,
                    sig,
                };
                (sig, false)
            }
        };
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(sig, &mut token);
        Signed { token, reused }
    }

    /// `header.claims` (base64url) of the claims `body` issued at `iat`.
    fn signing_input(&self, body: &str, iat: u64) -> String {
        use std::fmt::Write as _;
        let mut claims = String::with_capacity(body.len() + 40);
        claims.push_str(&body[..body.len() - 1]);
        let _ = write!(claims, ",\"iat\":{iat},\"exp\":{}}}", iat + DECISION_TTL_S);
        let mut out = String::with_capacity(self.header.len() + 1 + claims.len() * 4 / 3 + 90);
        out.push_str(&self.header);
        out.push('.');
        URL_SAFE_NO_PAD.encode_string(claims, &mut out);
        out
    }
}

/// A signed decision: the JWT, and whether its signature was one given before.
#[derive(Debug)]
pub struct Signed {
    /// The compact JWS.
    pub token: String,
    /// The signature of an identical decision given less than [`REUSE_S`] before.
    pub reused: bool,
}

/// How long a signature is reused for the same decision to the same reader, seconds.
pub const REUSE_S: u64 = 60;

/// Slots of remembered signatures (a power of two): 80 bytes each, 2.5 MiB in all, whatever
/// the traffic. A slot is overwritten by the next decision that hashes to it.
const SLOTS: usize = 1 << 15;

/// The signatures given lately, by a keyed hash of what they vouch for (without the time).
struct Recent {
    hasher: std::collections::hash_map::RandomState,
    slots: Box<[Mutex<Slot>]>,
}

impl Recent {
    fn new() -> Self {
        Self {
            hasher: std::collections::hash_map::RandomState::new(),
            slots: (0..SLOTS).map(|_| Mutex::new(Slot::EMPTY)).collect(),
        }
    }
}

#[derive(Clone, Copy)]
struct Slot {
    /// The hash of the claims without the time; 0 for none (a hash is odd).
    key: u64,
    iat: u64,
    sig: [u8; 64],
}

impl Slot {
    const EMPTY: Self = Self {
        key: 0,
        iat: 0,
        sig: [0; 64],
    };
}

/// The claims without `iat` and `exp`, as a JSON object; written directly (no map built).
fn claims_body(site: &str, reader: &str, decision: &Decision) -> String {
    fn field(out: &mut String, name: &str, value: &impl serde::Serialize) {
        out.push(if out.is_empty() { '{' } else { ',' });
        out.push('"');
        out.push_str(name);
        out.push_str("\":");
        // Strings, numbers and the action's name: serializing them cannot fail.
        out.push_str(&serde_json::to_string(value).unwrap_or_else(|_| "null".into()));
    }
    let mut out = String::with_capacity(256);
    field(&mut out, "sub", &reader);
    field(&mut out, "site", &site);
    field(&mut out, "action", &decision.action);
    field(&mut out, "reason", &decision.reason);
    field(&mut out, "bundle", &decision.version);
    if let Some(v) = &decision.rule {
        field(&mut out, "rule", v);
    }
    if let Some(v) = decision.remaining {
        field(&mut out, "remaining", &v);
    }
    if let Some(v) = decision.limit {
        field(&mut out, "limit", &v);
    }
    if let Some(v) = &decision.variant {
        field(&mut out, "variant", v);
    }
    if let Some(v) = &decision.offer {
        field(&mut out, "offer", v);
    }
    if let Some(v) = &decision.prompt {
        field(&mut out, "prompt", v);
    }
    if decision.fallback {
        field(&mut out, "fallback", &true);
    }
    out.push('}');
    out
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
        let token = signer.sign("demo", "reader-1", &d, 1_800_000_000).token;
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

    /// The claims of `token` once its signature is checked against `signer`'s served key.
    fn verified(signer: &DecisionSigner, token: &str) -> Value {
        let x = URL_SAFE_NO_PAD
            .decode(signer.jwks()["keys"][0]["x"].as_str().unwrap())
            .unwrap();
        let (signed, sig) = token.rsplit_once('.').unwrap();
        UnparsedPublicKey::new(&ED25519, x)
            .verify(signed.as_bytes(), &URL_SAFE_NO_PAD.decode(sig).unwrap())
            .expect("verifies");
        let claims = signed.split_once('.').unwrap().1;
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(claims).unwrap()).unwrap()
    }

    #[test]
    fn the_same_decision_to_the_same_reader_within_a_minute_reuses_its_signature() {
        let dir = tempfile::tempdir().unwrap();
        let signer = DecisionSigner::load_or_create(&dir.path().join("k.pk8")).unwrap();
        let t0 = 1_800_000_000;
        let mut d = Decision::new(Action::Meter, "meter", "b1");
        d.remaining = Some(2);
        d.reason = "a \"quoted\" reason \u{e9}".into();

        let first = signer.sign("demo", "r1", &d, t0);
        assert!(!first.reused);
        let claims = verified(&signer, &first.token);
        assert_eq!(claims["reason"], "a \"quoted\" reason \u{e9}");
        assert_eq!(claims["remaining"], 2);
        assert_eq!(claims["iat"], t0);
        assert_eq!(claims["exp"], t0 + DECISION_TTL_S);

        // The same again 59 s later: the same token, issued at the first second.
        let again = signer.sign("demo", "r1", &d, t0 + REUSE_S - 1);
        assert!(again.reused);
        assert_eq!(again.token, first.token);

        // Anything that differs is signed afresh, and says what was decided this time.
        let other_reader = signer.sign("demo", "r2", &d, t0 + 1);
        assert!(!other_reader.reused);
        assert_eq!(verified(&signer, &other_reader.token)["sub"], "r2");
        let other_site = signer.sign("news", "r1", &d, t0 + 1);
        assert!(!other_site.reused);
        assert_eq!(verified(&signer, &other_site.token)["site"], "news");
        let mut fewer = d.clone();
        fewer.remaining = Some(1);
        let changed = signer.sign("demo", "r1", &fewer, t0 + 2);
        assert!(!changed.reused);
        let claims = verified(&signer, &changed.token);
        assert_eq!(
            (claims["remaining"].clone(), claims["iat"].clone()),
            (json!(1), json!(t0 + 2))
        );

        // A minute on, or a clock that went back: a new signature and a new `iat`.
        let later = signer.sign("demo", "r2", &d, t0 + 1 + REUSE_S);
        assert!(!later.reused);
        assert_eq!(verified(&signer, &later.token)["iat"], t0 + 1 + REUSE_S);
        let earlier = signer.sign("demo", "r2", &d, t0);
        assert!(!earlier.reused);
        assert_eq!(verified(&signer, &earlier.token)["iat"], t0);
    }

    #[test]
    fn a_slot_taken_by_another_decision_gives_a_fresh_signature_never_a_wrong_one() {
        let dir = tempfile::tempdir().unwrap();
        let signer = DecisionSigner::load_or_create(&dir.path().join("k.pk8")).unwrap();
        let t0 = 1_800_000_000;
        let d = Decision::new(Action::Allow, "rule", "b1");
        let first = signer.sign("demo", "r1", &d, t0).token;
        let body = claims_body("demo", "r1", &d);
        let key = std::hash::BuildHasher::hash_one(&signer.recent.hasher, &body) | 1;
        let slot = &signer.recent.slots[(key as usize) & (SLOTS - 1)];

        // Another decision hashed to the same slot since: signed afresh.
        slot.lock().unwrap().key = key ^ 2;
        let fresh = signer.sign("demo", "r1", &d, t0 + 1);
        assert!(!fresh.reused);
        assert_eq!(verified(&signer, &fresh.token)["iat"], t0 + 1);

        // Even a slot whose hash matched a different decision (a collision) cannot vouch for
        // this one: the claims are this decision's, so the old signature fails to verify.
        let other = Decision::new(Action::Paywall, "rule", "b1");
        let signed_other = signer.sign("demo", "r1", &other, t0 + 1);
        let mut forged = *slot.lock().unwrap();
        forged.sig = {
            let sig = signed_other.token.rsplit_once('.').unwrap().1;
            URL_SAFE_NO_PAD.decode(sig).unwrap().try_into().unwrap()
        };
        forged.key = key;
        *slot.lock().unwrap() = forged;
        let token = signer.sign("demo", "r1", &d, t0 + 2).token;
        let (signed, sig) = token.rsplit_once('.').unwrap();
        let x = URL_SAFE_NO_PAD
            .decode(signer.jwks()["keys"][0]["x"].as_str().unwrap())
            .unwrap();
        assert!(
            UnparsedPublicKey::new(&ED25519, x)
                .verify(signed.as_bytes(), &URL_SAFE_NO_PAD.decode(sig).unwrap())
                .is_err()
        );
        assert_ne!(token, first);
    }
}
