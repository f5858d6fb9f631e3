//! Trusted entitlements: a reader's subscriber status (and any other entitlement) and user id
//! come only from a token the publisher signed, never from what the page says.
//!
//! The token is a JWT (compact JWS) signed with a key of the site (`[[sites.NAME.token_keys]]`):
//! HS256 with a shared secret, or EdDSA (Ed25519) with the publisher's public key. Its claims:
//! `sub` (the user id it vouches for), `exp` (required), `nbf` (optional), `iss` and `aud` (checked
//! when the site names them), and `entitlements`, an object of at most [`MAX_ENTITLEMENTS`]
//! booleans, numbers or short strings that rules read as `entitled.NAME`.
//!
//! Pure: time is an argument.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::{hmac, signature};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The longest token read, in bytes.
pub const MAX_TOKEN_BYTES: usize = 4096;
/// Most entitlements one token grants.
pub const MAX_ENTITLEMENTS: usize = 32;
/// The longest string value of an entitlement.
const MAX_ENTITLEMENT_STR: usize = 128;
/// The longest user id a token vouches for (the protocol's bound).
const MAX_SUBJECT: usize = pulse_protocol::MAX_USER_ID_LEN;

/// A key that signs a site's tokens, as `pulse.toml` gives it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TokenKeySpec {
    /// The key's id (`kid` in the token's header); needed when a site has several keys.
    #[serde(default)]
    pub kid: Option<String>,
    /// `HS256` or `EdDSA`.
    pub alg: String,
    /// HS256: the shared secret (at least 32 bytes), or `env:NAME` to read it from the
    /// environment variable NAME.
    #[serde(default)]
    pub secret: Option<String>,
    /// EdDSA: the publisher's Ed25519 public key, 32 bytes in base64url (as a JWK's `x`).
    #[serde(default)]
    pub public_key: Option<String>,
}

/// The token settings of one site.
#[derive(Clone, Debug)]
pub struct TokenKeys {
    keys: Vec<Key>,
    issuer: Option<String>,
    audience: Option<String>,
    leeway_s: u64,
}

#[derive(Clone)]
enum Key {
    Hs256 {
        kid: Option<String>,
        key: hmac::Key,
    },
    EdDsa {
        kid: Option<String>,
        key: signature::UnparsedPublicKey<Vec<u8>>,
    },
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Hs256 { kid, .. } => write!(f, "HS256({kid:?})"),
            Self::EdDsa { kid, .. } => write!(f, "EdDSA({kid:?})"),
        }
    }
}

impl Key {
    fn kid(&self) -> Option<&str> {
        match self {
            Self::Hs256 { kid, .. } | Self::EdDsa { kid, .. } => kid.as_deref(),
        }
    }

    fn alg(&self) -> &'static str {
        match self {
            Self::Hs256 { .. } => "HS256",
            Self::EdDsa { .. } => "EdDSA",
        }
    }
}

/// Why a token did not vouch for anything. The page's answer and `/metrics` carry
/// [`TokenError::reason`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Longer than [`MAX_TOKEN_BYTES`].
    #[error("the token is longer than {MAX_TOKEN_BYTES} bytes")]
    TooLarge,
    /// Not three base64url parts of JSON.
    #[error("the token is not a JWT (three base64url parts of JSON)")]
    Malformed,
    /// An algorithm other than the key's (`none` included).
    #[error("the token's algorithm is not the site key's (HS256 or EdDSA)")]
    Algorithm,
    /// No key of the site has the token's `kid`.
    #[error("no key of this site has the token's kid")]
    UnknownKey,
    /// The signature does not verify.
    #[error("the token's signature does not verify")]
    Signature,
    /// Past `exp` (or no `exp`).
    #[error("the token has expired (or has no exp)")]
    Expired,
    /// Before `nbf`.
    #[error("the token is not valid yet (nbf)")]
    NotYetValid,
    /// `iss` or `aud` other than the site's.
    #[error("the token is for another issuer or audience")]
    Audience,
    /// `sub` or `entitlements` of the wrong shape or too large.
    #[error("the token's sub or entitlements are not of the expected shape")]
    Claims,
}

impl TokenError {
    /// The machine-readable reason.
    pub fn reason(self) -> &'static str {
        match self {
            Self::TooLarge => "token_too_large",
            Self::Malformed => "token_malformed",
            Self::Algorithm => "token_algorithm",
            Self::UnknownKey => "token_unknown_key",
            Self::Signature => "token_signature",
            Self::Expired => "token_expired",
            Self::NotYetValid => "token_not_yet_valid",
            Self::Audience => "token_audience",
            Self::Claims => "token_claims",
        }
    }

    /// Every reason, for `/metrics`.
    pub const ALL: [Self; 9] = [
        Self::TooLarge,
        Self::Malformed,
        Self::Algorithm,
        Self::UnknownKey,
        Self::Signature,
        Self::Expired,
        Self::NotYetValid,
        Self::Audience,
        Self::Claims,
    ];
}

/// What a valid token vouches for.
#[derive(Clone, Debug, PartialEq)]
pub struct Vouched {
    /// The user id (`sub`), when the token names one.
    pub user: Option<String>,
    /// The entitlements, for `entitled.NAME` in rules.
    pub entitled: Vec<(String, Value)>,
    /// When the token expires, seconds since the epoch.
    pub expires: u64,
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
}

impl TokenKeys {
    /// The keys of a site from its settings; every problem is listed.
    pub fn new(
        specs: &[TokenKeySpec],
        issuer: Option<String>,
        audience: Option<String>,
        leeway_s: u64,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, Vec<String>> {
        let mut problems = Vec::new();
        let mut keys = Vec::new();
        for (i, spec) in specs.iter().enumerate() {
            let at = format!("token_keys[{i}]");
            match (spec.alg.as_str(), &spec.secret, &spec.public_key) {
                ("HS256", Some(secret), None) => {
                    let secret = match secret.strip_prefix("env:") {
                        Some(name) => match env(name) {
                            Some(s) => s,
                            None => {
                                problems.push(format!("{at}.secret: ${name} is not set"));
                                continue;
                            }
                        },
                        None => secret.clone(),
                    };
                    if secret.len() < 32 {
                        problems.push(format!(
                            "{at}.secret: at least 32 bytes (HS256 is only as strong as its secret)"
                        ));
                        continue;
                    }
                    keys.push(Key::Hs256 {
                        kid: spec.kid.clone(),
                        key: hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes()),
                    });
                }
                ("EdDSA", None, Some(public)) => match URL_SAFE_NO_PAD.decode(public.trim()) {
                    Ok(bytes) if bytes.len() == 32 => keys.push(Key::EdDsa {
                        kid: spec.kid.clone(),
                        key: signature::UnparsedPublicKey::new(&signature::ED25519, bytes),
                    }),
                    _ => problems.push(format!(
                        "{at}.public_key: an Ed25519 public key is 32 bytes in base64url"
                    )),
                },
                ("HS256", _, _) => problems.push(format!("{at}: HS256 takes `secret` only")),
                ("EdDSA", _, _) => problems.push(format!("{at}: EdDSA takes `public_key` only")),
                (other, _, _) => {
                    problems.push(format!("{at}.alg: {other:?} (HS256 or EdDSA)"));
                }
            }
        }
        if keys.len() > 1 && keys.iter().any(|k| k.kid().is_none()) {
            problems.push("token_keys: with several keys, each needs a kid".into());
        }
        if problems.is_empty() {
            Ok(Self {
                keys,
                issuer,
                audience,
                leeway_s,
            })
        } else {
            Err(problems)
        }
    }

    /// Whether the site has keys (and so trusts only tokens).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Checks a token at `now_s` (seconds since the epoch).
    pub fn verify(&self, token: &str, now_s: u64) -> Result<Vouched, TokenError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::TooLarge);
        }
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };
        let decode = |part: &str| {
            URL_SAFE_NO_PAD
                .decode(part)
                .map_err(|_| TokenError::Malformed)
        };
        let header: Header =
            serde_json::from_slice(&decode(h)?).map_err(|_| TokenError::Malformed)?;
        let sig = decode(s)?;
        let key = match &header.kid {
            Some(kid) => self
                .keys
                .iter()
                .find(|k| k.kid() == Some(kid.as_str()))
                .ok_or(TokenError::UnknownKey)?,
            None if self.keys.len() == 1 => &self.keys[0],
            None => return Err(TokenError::UnknownKey),
        };
        // The algorithm is the key's: a token cannot choose `none`, or HS256 with a public key.
        if header.alg != key.alg() {
            return Err(TokenError::Algorithm);
        }
        let signed = &token.as_bytes()[..h.len() + 1 + p.len()];
        let ok = match key {
            Key::Hs256 { key, .. } => hmac::verify(key, signed, &sig).is_ok(),
            Key::EdDsa { key, .. } => key.verify(signed, &sig).is_ok(),
        };
        if !ok {
            return Err(TokenError::Signature);
        }
        let claims: serde_json::Map<String, Value> =
            serde_json::from_slice(&decode(p)?).map_err(|_| TokenError::Malformed)?;
        self.claims(&claims, now_s)
    }

    fn claims(
        &self,
        claims: &serde_json::Map<String, Value>,
        now_s: u64,
    ) -> Result<Vouched, TokenError> {
        let time = |name: &str| claims.get(name).and_then(Value::as_f64);
        let exp = time("exp").ok_or(TokenError::Expired)?;
        if !(exp >= 0.0 && exp + self.leeway_s as f64 > now_s as f64) {
            return Err(TokenError::Expired);
        }
        if let Some(nbf) = time("nbf")
            && nbf > (now_s + self.leeway_s) as f64
        {
            return Err(TokenError::NotYetValid);
        }
        if let Some(iss) = &self.issuer
            && claims.get("iss").and_then(Value::as_str) != Some(iss.as_str())
        {
            return Err(TokenError::Audience);
        }
        if let Some(aud) = &self.audience {
            let ok = match claims.get("aud") {
                Some(Value::String(a)) => a == aud,
                Some(Value::Array(list)) => list.iter().any(|a| a.as_str() == Some(aud.as_str())),
                _ => false,
            };
            if !ok {
                return Err(TokenError::Audience);
            }
        }
        let user = match claims.get("sub") {
            None => None,
            Some(Value::String(s))
                if !s.is_empty() && s.len() <= MAX_SUBJECT && !s.chars().any(char::is_control) =>
            {
                Some(s.clone())
            }
            Some(_) => return Err(TokenError::Claims),
        };
        let mut entitled = Vec::new();
        match claims.get("entitlements") {
            None => {}
            Some(Value::Object(map)) if map.len() <= MAX_ENTITLEMENTS => {
                for (name, value) in map {
                    let name_ok = !name.is_empty()
                        && name.len() <= 64
                        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
                    let value_ok = match value {
                        Value::Bool(_) => true,
                        Value::Number(n) => n.as_f64().is_some_and(f64::is_finite),
                        Value::String(s) => s.len() <= MAX_ENTITLEMENT_STR,
                        _ => false,
                    };
                    if !(name_ok && value_ok) {
                        return Err(TokenError::Claims);
                    }
                    entitled.push((name.clone(), value.clone()));
                }
            }
            Some(_) => return Err(TokenError::Claims),
        }
        Ok(Vouched {
            user,
            entitled,
            expires: exp as u64,
        })
    }
}

/// Signs claims as a JWT with HS256 (tests and the README's example publisher).
pub fn sign_hs256(secret: &[u8], kid: Option<&str>, claims: &Value) -> String {
    let header = match kid {
        Some(kid) => serde_json::json!({"alg": "HS256", "typ": "JWT", "kid": kid}),
        None => serde_json::json!({"alg": "HS256", "typ": "JWT"}),
    };
    let signing = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let tag = hmac::sign(&key, signing.as_bytes());
    format!("{signing}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
}

#[cfg(test)]
mod tests;
